//! Requests one host hands another (docs/cluster.md, "Any host answers"):
//! NATS request-reply on a subject per host. What the bytes mean is the
//! API's business; here they are only carried.

use super::ClusterError;
use crate::broker::shared::Answerer;
use futures_util::StreamExt as _;
use std::time::Duration;

/// The subject `host` answers on: its name hex-encoded, so that any name
/// is one token.
fn subject(host: &str) -> String {
    let hex: String = host.bytes().map(|b| format!("{b:02x}")).collect();
    format!("switchyard.host.{hex}")
}

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No host answers on that subject: it is gone.
    #[error("host {0:?} is not reachable")]
    Gone(String),
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
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            Err(AskError::Gone(host.to_string()))
        }
        Err(e) => Err(ClusterError::new("asking another host", e).into()),
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
