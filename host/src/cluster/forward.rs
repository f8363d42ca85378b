//! Requests one host hands another (docs/cluster.md, "Any host answers"):
//! NATS request-reply on a subject per host. What the bytes mean is the
//! API's business; here they are only carried.
//!
//! A streamed answer (an event stream) is asked for on a second subject
//! per host, naming an inbox of the asking host: the answer's first piece
//! is the reply, the others are published to that inbox, numbered, and a
//! last message, naming how many there were, ends them. Every few seconds
//! the answering host checks (a request to the inbox) that the asking host
//! still listens, and stops when nobody does; the asking host gives up
//! after a silence, and at a gap in the numbers (NATS drops messages for a
//! subscriber that falls too far behind).

use super::ClusterError;
use crate::broker::shared::{Answerer, StreamAnswerer};
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use std::time::Duration;

/// `host`'s name hex-encoded, so that any name is one subject token.
fn token(host: &str) -> String {
    host.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The subject `host` answers on.
fn subject(host: &str) -> String {
    format!("switchyard.host.{}", token(host))
}

/// The subject `host` streams answers on.
fn stream_subject(host: &str) -> String {
    format!("switchyard.stream.{}", token(host))
}

/// Names the inbox a streamed answer's pieces go to.
const STREAM_TO: &str = "Switchyard-Stream-To";
/// Numbers a streamed answer's pieces after the first, from 1.
const PIECE: &str = "Switchyard-Piece";
/// Ends a streamed answer, with the number of pieces sent after the first.
const END: &str = "Switchyard-End";
/// How often the answering host checks that the asking host listens.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long the asking host waits for a piece or a check before it gives
/// the answer up (three checks missed).
const SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No host answers on that subject: it is gone.
    #[error("host {0:?} is not reachable")]
    Gone(String),
    /// A streamed answer stopped before its end.
    #[error("host {0:?} {1}")]
    Broken(String, &'static str),
    #[error(transparent)]
    Failed(#[from] ClusterError),
}

/// Hand `request` to `host` and wait up to `timeout` for its answer.
pub async fn ask(
    client: &async_nats::Client,
    host: &str,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, AskError> {
    let request = async_nats::Request::new()
        .payload(request.into())
        .timeout(Some(timeout));
    match client.send_request(subject(host), request).await {
        Ok(message) => Ok(message.payload.to_vec()),
        Err(e) => Err(unanswered(host, e)),
    }
}

/// Why `host` gave no answer to a request.
fn unanswered(host: &str, e: async_nats::RequestError) -> AskError {
    match e.kind() {
        async_nats::RequestErrorKind::NoResponders => AskError::Gone(host.to_string()),
        _ => ClusterError::new("asking another host", e).into(),
    }
}

/// Answer requests sent to `host` with `answerer`, each in a task of its
/// own, until the connection closes.
pub async fn answer(
    client: &async_nats::Client,
    host: &str,
    answerer: Answerer,
) -> Result<(), ClusterError> {
    let mut requests = client
        .subscribe(subject(host))
        .await
        .map_err(|e| ClusterError::new("answering other hosts", e))?;
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let (client, answerer) = (client.clone(), answerer.clone());
            tokio::spawn(async move {
                let answer = answerer(request.payload.to_vec()).await;
                if let Err(e) = client.publish(reply, answer.into()).await {
                    tracing::warn!(error = %e, "an answer to another host was not sent");
                }
            });
        }
    });
    Ok(())
}

/// Hand `request` to `host` for a streamed answer: its first piece within
/// `timeout`, then the others as they come.
pub async fn ask_stream(
    client: &async_nats::Client,
    host: &str,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<BoxStream<'static, Result<Vec<u8>, AskError>>, AskError> {
    let inbox = client.new_inbox();
    let pieces = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ClusterError::new("asking another host", e))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(STREAM_TO, inbox.as_str());
    let request = async_nats::Request::new()
        .payload(request.into())
        .headers(headers)
        .timeout(Some(timeout));
    let head = match client.send_request(stream_subject(host), request).await {
        Ok(message) => message.payload.to_vec(),
        Err(e) => return Err(unanswered(host, e)),
    };
    let listening = Listening {
        client: client.clone(),
        host: host.to_string(),
        pieces,
        next: 1,
    };
    let rest = futures_util::stream::unfold(Some(listening), |listening| async move {
        let mut listening = listening?;
        match listening.next().await {
            Some(Ok(piece)) => Some((Ok(piece), Some(listening))),
            Some(Err(e)) => Some((Err(e), None)),
            None => None,
        }
    });
    Ok(futures_util::stream::once(async { Ok(head) })
        .chain(rest)
        .boxed())
}

/// The asking end of a streamed answer.
struct Listening {
    client: async_nats::Client,
    host: String,
    pieces: async_nats::Subscriber,
    /// The number of the piece expected next.
    next: u64,
}

impl Listening {
    /// The next piece; `None` at the answer's end.
    async fn next(&mut self) -> Option<Result<Vec<u8>, AskError>> {
        let broken = |why| Some(Err(AskError::Broken(self.host.clone(), why)));
        loop {
            let message = match tokio::time::timeout(SILENCE_LIMIT, self.pieces.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return broken("could not be heard: the connection closed"),
                Err(_) => return broken("fell silent"),
            };
            if let Some(check) = message.reply {
                // The answering host checks that this one still listens.
                let _ = self.client.publish(check, bytes::Bytes::new()).await;
                continue;
            }
            let number = |name| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .and_then(|n| n.as_str().parse::<u64>().ok())
            };
            return match (number(PIECE), number(END)) {
                (Some(n), _) if n == self.next => {
                    self.next += 1;
                    Some(Ok(message.payload.to_vec()))
                }
                (None, Some(sent)) if sent + 1 == self.next => None,
                _ => broken("sent pieces that were lost on the way"),
            };
        }
    }
}

/// Stream answers to requests sent to `host` with `answerer`, each in a
/// task of its own, until the connection closes.
pub async fn answer_streams(
    client: &async_nats::Client,
    host: &str,
    answerer: StreamAnswerer,
) -> Result<(), ClusterError> {
    let mut requests = client
        .subscribe(stream_subject(host))
        .await
        .map_err(|e| ClusterError::new("streaming answers to other hosts", e))?;
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let to = request
                .headers
                .as_ref()
                .and_then(|h| h.get(STREAM_TO))
                .map(|inbox| inbox.to_string());
            let (Some(reply), Some(to)) = (request.reply, to) else {
                continue;
            };
            let pieces = answerer(request.payload.to_vec());
            tokio::spawn(stream_answer(client.clone(), reply, to, pieces));
        }
    });
    Ok(())
}

/// Send `pieces`: the first as the reply, the others to `to` until they
/// end or nobody listens there.
async fn stream_answer(
    client: async_nats::Client,
    reply: async_nats::Subject,
    to: String,
    mut pieces: BoxStream<'static, Vec<u8>>,
) {
    let Some(head) = pieces.next().await else {
        return;
    };
    if client.publish(reply, head.into()).await.is_err() {
        return;
    }
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.reset();
    let mut number = 0u64;
    loop {
        tokio::select! {
            piece = pieces.next() => {
                let Some(piece) = piece else { break };
                number += 1;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(PIECE, number.to_string().as_str());
                if client
                    .publish_with_headers(to.clone(), headers, piece.into())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            _ = check.tick() => {
                let listens = async_nats::Request::new().timeout(Some(CHECK_EVERY));
                if client.send_request(to.clone(), listens).await.is_err() {
                    tracing::debug!(inbox = %to, "a streamed answer ends: nobody listens");
                    return;
                }
            }
        }
    }
    let mut end = async_nats::HeaderMap::new();
    end.insert(END, number.to_string().as_str());
    let _ = client
        .publish_with_headers(to, end, bytes::Bytes::new())
        .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_host_name_is_one_subject_token() {
        for host in ["a", "db-1.example.com-8080", "x y*>"] {
            let subject = super::subject(host);
            let token = subject.strip_prefix("switchyard.host.").expect("prefix");
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{subject}");
        }
        assert_ne!(super::subject("a.b"), super::subject("a~b"));
    }
}
