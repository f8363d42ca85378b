//! Requests about a subscription that runs on another host (cluster mode,
//! docs/cluster.md, "Any host answers"): this host hands the request whole
//! to the host running the subscription and relays its answer, so a client
//! behind a load balancer may ask any host. Reading a subscription's state
//! (stats, kv, dead letters, a message's record), changing it (pause,
//! resume, purge, redrive) and pulling from it (lease, settle) are all
//! answered by the one host that holds that state.
//!
//! The request is answered there as if a client had sent it, auth included
//! (the hosts of one cluster share their tokens); it carries a header that
//! keeps it from being handed on again. A subscription's event stream is
//! relayed piece by piece as the host running it streams it. Answers
//! larger than what the hosts can hand each other are refused.

use super::body::{self, Reply};
use super::error::ApiError;
use super::router::Route;
use super::server::State;
use super::{ApiBody, Ctx};
use crate::broker::shared::{Answerer, StreamAnswerer};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Marks a request handed over by another host: it is answered where it
/// arrives, never handed on.
const HANDED_OVER: &str = "x-switchyard-handed-over";
/// Names the host that answered a request handed to it.
const ANSWERED_BY: &str = "x-switchyard-answered-by";
/// Room kept for the method, path and headers in a handed-over message.
const ENVELOPE: usize = 64 << 10;
/// How long a host waits for the answer to a handed-over request: a
/// subscription's info is wanted at once (else it is answered here,
/// without stats), a lease may wait for messages, the rest (a redrive of
/// many letters) may take a while.
const INFO_WAIT: Duration = Duration::from_secs(2);
const LEASE_WAIT: Duration = Duration::from_secs(30);
const CHANGE_WAIT: Duration = Duration::from_secs(15);

/// A request as handed to another host.
#[derive(Serialize, Deserialize)]
struct Handed {
    method: String,
    uri: String,
    headers: Vec<(String, serde_bytes::ByteBuf)>,
    body: serde_bytes::ByteBuf,
}

/// Its answer.
#[derive(Serialize, Deserialize)]
struct Answer {
    status: u16,
    headers: Vec<(String, serde_bytes::ByteBuf)>,
    body: serde_bytes::ByteBuf,
}

/// On a request another host handed over: the most bytes its answer may
/// have, for handlers that must not hand out what would not get back
/// (leases).
#[derive(Debug, Clone, Copy)]
pub struct AnswerLimit(pub usize);

/// The answer to a handed-over request that would not fit.
pub fn too_large(size: usize, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "answer_too_large",
        format!(
            "the answer ({size} bytes) is larger than hosts can hand each other ({limit} bytes): ask for less, or ask the host running the subscription"
        ),
    )
}

/// What becomes of a request: answered by another host, or to be
/// answered here.
pub enum Handled {
    Answered(Reply),
    Here(Request<ApiBody>),
}

/// The subscription whose state `route` reads or changes, if the request
/// is answered by the host running it.
fn subscription_of<'a>(route: Route<'a>, method: &Method) -> Option<&'a str> {
    match route {
        Route::Subscription(name) if method == Method::GET => Some(name),
        Route::DeadLetters(name)
        | Route::DeadLetter(name, _)
        | Route::Redrive(name)
        | Route::Ledger(name, _)
        | Route::Kv(name)
        | Route::Pause(name)
        | Route::Resume(name)
        | Route::Lease(name)
        | Route::Settle(name) => Some(name),
        _ => None,
    }
}

/// The subscription whose event stream `route` asks for, if it does: the
/// host running it streams the answer.
fn streamed_of<'a>(route: Route<'a>, method: &Method) -> Option<&'a str> {
    match route {
        Route::Events(name) if method == Method::GET => Some(name),
        _ => None,
    }
}

/// Hand `req` to the host running its subscription if that is another
/// host; else give it back to be answered here.
pub async fn elsewhere(
    ctx: &Ctx,
    route: Route<'_>,
    req: Request<ApiBody>,
) -> Result<Handled, ApiError> {
    let streamed = streamed_of(route, req.method());
    let Some(name) = subscription_of(route, req.method()).or(streamed) else {
        return Ok(Handled::Here(req));
    };
    if !ctx.broker.clustered() || req.headers().contains_key(HANDED_OVER) {
        return Ok(Handled::Here(req));
    }
    let Some(host) = ctx.broker.runs_elsewhere(name).await? else {
        return Ok(Handled::Here(req));
    };
    let limit = ctx.broker.host_message_limit().saturating_sub(ENVELOPE);
    let (parts, incoming) = req.into_parts();
    let bytes = body::read(
        incoming,
        &parts.headers,
        limit,
        "the request body",
        body::body_timeout(&parts),
    )
    .await?;
    let handed = Handed {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: pairs(parts.headers.iter()),
        body: serde_bytes::ByteBuf::from(bytes.to_vec()),
    };
    if streamed.is_some() {
        return relay_stream(ctx, &host, handed)
            .await
            .map(Handled::Answered);
    }
    let wait = match route {
        Route::Subscription(_) => INFO_WAIT,
        Route::Lease(_) => LEASE_WAIT,
        _ => CHANGE_WAIT,
    };
    let mut answer = match hand(ctx, &host, handed, wait).await {
        Ok(answer) => answer,
        // Its settings, known here; stats only where it runs.
        Err(_) if wait == INFO_WAIT => {
            return Ok(Handled::Here(Request::from_parts(
                parts,
                request_body(bytes),
            )));
        }
        Err(e) => {
            return Err(ApiError::unavailable(format!(
                "subscription {name:?} runs on host {host:?}, which did not answer ({e}); try again"
            )))
        }
    };
    let body = body::full(std::mem::take(&mut answer.body).into_vec());
    relayed(&host, answer, body).map(Handled::Answered)
}

/// `answer` from `host` as this host's reply, with `body`.
fn relayed(host: &str, answer: Answer, body: body::ReplyBody) -> Result<Reply, ApiError> {
    let mut reply = Response::builder().status(answer.status);
    for (name, value) in answer.headers {
        reply = reply.header(name, value.into_vec());
    }
    reply
        .header(ANSWERED_BY, host)
        .body(body)
        .map_err(|e| ApiError::internal(format!("host {host:?} answered with a bad header: {e}")))
}

/// `handed`, marked as handed over, as hosts hand it each other.
fn encode(mut handed: Handed) -> Result<Vec<u8>, String> {
    handed
        .headers
        .push((HANDED_OVER.to_string(), serde_bytes::ByteBuf::from("1")));
    rmp_serde::to_vec_named(&handed).map_err(|e| e.to_string())
}

fn decode_answer(host: &str, answer: &[u8]) -> Result<Answer, String> {
    rmp_serde::from_slice(answer)
        .map_err(|e| format!("host {host:?} answered with what does not decode: {e}"))
}

/// Hand `handed` to `host` and wait up to `wait` for its answer; `Err`
/// says why there is none.
async fn hand(ctx: &Ctx, host: &str, handed: Handed, wait: Duration) -> Result<Answer, String> {
    let answer = ctx
        .broker
        .ask_host(host, encode(handed)?, wait)
        .await
        .map_err(|e| e.to_string())?;
    decode_answer(host, &answer)
}

/// Hand an event stream's request to `host` and relay the stream it
/// answers, piece by piece, as fast as the client takes it. If the stream
/// breaks off (the host stopped, or the client fell so far behind that
/// pieces were lost), it ends with `event: lagged`, as a client falling
/// behind a stream served here does; the client reconnects.
async fn relay_stream(ctx: &Ctx, host: &str, handed: Handed) -> Result<Reply, ApiError> {
    let unanswered = |e: String| {
        ApiError::unavailable(format!(
            "the subscription runs on host {host:?}, which did not answer ({e}); try again"
        ))
    };
    let request = encode(handed).map_err(unanswered)?;
    let mut pieces = ctx
        .broker
        .ask_host_stream(host, request, INFO_WAIT)
        .await
        .map_err(|e| unanswered(e.to_string()))?;
    let head = match pieces.next().await {
        Some(Ok(head)) => decode_answer(host, &head).map_err(unanswered)?,
        Some(Err(e)) => return Err(unanswered(e.to_string())),
        None => return Err(unanswered("an empty answer".to_string())),
    };
    let mut closing = ctx.closing.clone();
    let frames = pieces
        .scan(false, |broken, piece| {
            let piece = match piece {
                _ if *broken => None,
                Ok(bytes) => Some(bytes::Bytes::from(bytes)),
                Err(e) => {
                    *broken = true;
                    Some(super::streams::broken_off(&e.to_string()))
                }
            };
            std::future::ready(piece)
        })
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        })
        .map(|bytes| Ok(Frame::data(bytes)));
    relayed(host, head, StreamBody::new(frames).boxed_unsync())
}

/// Headers as a handed-over message carries them.
fn pairs<'a>(
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Vec<(String, serde_bytes::ByteBuf)> {
    headers
        .map(|(k, v)| (k.to_string(), serde_bytes::ByteBuf::from(v.as_bytes())))
        .collect()
}

/// A whole request body, as handlers read one.
fn request_body(bytes: impl Into<bytes::Bytes>) -> ApiBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Most subscriptions whose info is asked of other hosts at once, and the
/// longest a list waits for all of them.
const INFO_ASKS: usize = 32;
const LIST_WAIT: Duration = Duration::from_secs(5);

/// `subscriptions` as JSON, each running on another host replaced by that
/// host's answer for it (its stats), asked with `headers` (the caller's
/// token); those whose host does not answer in time stay as they are.
pub async fn infos_from_runners(
    ctx: &Ctx,
    headers: &hyper::HeaderMap,
    subscriptions: Vec<crate::broker::SubscriptionInfo>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    use futures_util::StreamExt as _;
    let deadline = tokio::time::Instant::now() + LIST_WAIT;
    let json = |info: &crate::broker::SubscriptionInfo| {
        serde_json::to_value(info)
            .map_err(|e| ApiError::internal(format!("encoding a subscription: {e}")))
    };
    let asks = subscriptions.into_iter().map(|info| async move {
        if info.state != "elsewhere" {
            return json(&info);
        }
        let asked = tokio::time::timeout_at(deadline, info_from_runner(ctx, headers, &info.name));
        if let Ok(Some(answer)) = asked.await {
            return Ok(answer);
        }
        // No host answered for it: its lag estimated here, unless the log
        // cannot be read either (then as it is, without stats).
        match ctx.broker.get_subscription(&info.name).await {
            Ok(estimated) => json(&estimated),
            Err(_) => json(&info),
        }
    });
    futures_util::stream::iter(asks)
        .buffered(INFO_ASKS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A subscription's info as the host running it answers (JSON), if one
/// does within [`INFO_WAIT`].
async fn info_from_runner(
    ctx: &Ctx,
    headers: &hyper::HeaderMap,
    name: &str,
) -> Option<serde_json::Value> {
    let host = ctx.broker.runs_elsewhere(name).await.ok()??;
    let accept = HeaderValue::from_static("application/json");
    let token = headers
        .get_all(hyper::header::AUTHORIZATION)
        .iter()
        .map(|v| (&hyper::header::AUTHORIZATION, v));
    let handed = Handed {
        method: "GET".to_string(),
        uri: format!("/v1/subscriptions/{name}"),
        headers: pairs(token.chain([(&hyper::header::ACCEPT, &accept)])),
        body: serde_bytes::ByteBuf::new(),
    };
    let answer = hand(ctx, &host, handed, INFO_WAIT).await.ok()?;
    if answer.status != 200 {
        return None;
    }
    serde_json::from_slice(&answer.body).ok()
}

/// What answers the requests other hosts hand this one.
pub fn answerer(state: Arc<State>) -> Answerer {
    Arc::new(move |request| {
        let state = state.clone();
        Box::pin(async move { answer(&state, request).await })
    })
}

/// What streams the answers to event streams other hosts hand this one.
pub fn stream_answerer(state: Arc<State>) -> StreamAnswerer {
    Arc::new(move |request| {
        let state = state.clone();
        futures_util::stream::once(async move { stream_answer(&state, request).await })
            .flatten()
            .boxed()
    })
}

/// A handed-over event stream's answer: its head (status and headers),
/// then its body's pieces as the handler produces them.
async fn stream_answer(
    state: &State,
    request: Vec<u8>,
) -> futures_util::stream::BoxStream<'static, Vec<u8>> {
    let reply = match handed_request(&request, true) {
        Ok(req) => super::router::handle(state, req).await,
        Err(e) => e.into_response(),
    };
    let (parts, body) = reply.into_parts();
    let head = Answer {
        status: parts.status.as_u16(),
        headers: pairs(parts.headers.iter()),
        body: serde_bytes::ByteBuf::new(),
    };
    let head = rmp_serde::to_vec_named(&head).unwrap_or_default();
    let pieces = http_body_util::BodyStream::new(body).filter_map(|frame| {
        let data = match frame {
            Ok(frame) => frame.into_data().ok().map(|b| b.to_vec()),
            Err(never) => match never {},
        };
        std::future::ready(data)
    });
    futures_util::stream::once(std::future::ready(head))
        .chain(pieces)
        .boxed()
}

async fn answer(state: &State, request: Vec<u8>) -> Vec<u8> {
    let limit = match state.opened() {
        Some(broker) => broker.host_message_limit().saturating_sub(ENVELOPE),
        None => usize::MAX,
    };
    let reply = match handed_request(&request, false) {
        Ok(mut req) => {
            req.extensions_mut().insert(AnswerLimit(limit));
            super::router::handle(state, req).await
        }
        Err(e) => e.into_response(),
    };
    let (mut parts, mut body) = whole(reply).await;
    if body.len() > limit {
        (parts, body) = whole(too_large(body.len(), limit).into_response()).await;
    }
    let answer = Answer {
        status: parts.status.as_u16(),
        headers: pairs(parts.headers.iter()),
        body: serde_bytes::ByteBuf::from(body.to_vec()),
    };
    rmp_serde::to_vec_named(&answer).unwrap_or_default()
}

/// A reply with its whole body read.
async fn whole(reply: Reply) -> (hyper::http::response::Parts, bytes::Bytes) {
    let (parts, body) = reply.into_parts();
    match body.collect().await {
        Ok(collected) => (parts, collected.to_bytes()),
        Err(never) => match never {},
    }
}

/// A handed-over request, if it decodes and is one hosts hand each other
/// (an event stream's if `streamed`, else one answered whole).
fn handed_request(request: &[u8], streamed: bool) -> Result<Request<ApiBody>, ApiError> {
    let handed: Handed = rmp_serde::from_slice(request)
        .map_err(|e| ApiError::malformed(format!("a handed-over request does not decode: {e}")))?;
    let mut req = Request::builder()
        .method(handed.method.as_str())
        .uri(handed.uri.as_str());
    for (name, value) in &handed.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ApiError::malformed(format!("a handed-over header: {e}")))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|e| ApiError::malformed(format!("a handed-over header: {e}")))?;
        req = req.header(name, value);
    }
    let req = req
        .body(request_body(handed.body.into_vec()))
        .map_err(|e| ApiError::malformed(format!("a handed-over request: {e}")))?;
    let handed_over = req.headers().contains_key(HANDED_OVER);
    let route = Route::parse(req.uri().path());
    let about = match streamed {
        true => route.and_then(|r| streamed_of(r, req.method())),
        false => route.and_then(|r| subscription_of(r, req.method())),
    };
    match about {
        Some(_) if handed_over => Ok(req),
        _ => Err(ApiError::invalid(
            "only requests about a subscription are handed between hosts",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_subscriptions_state_is_answered_by_the_host_running_it() {
        let get = Method::GET;
        assert_eq!(subscription_of(Route::Subscription("s"), &get), Some("s"));
        assert_eq!(
            subscription_of(Route::Subscription("s"), &Method::PUT),
            None,
            "settings are changed by any host"
        );
        assert_eq!(subscription_of(Route::Kv("s"), &get), Some("s"));
        assert_eq!(subscription_of(Route::Lease("s"), &Method::POST), Some("s"));
        assert_eq!(subscription_of(Route::Events("s"), &get), None, "a stream");
        assert_eq!(streamed_of(Route::Events("s"), &get), Some("s"));
        assert_eq!(streamed_of(Route::Kv("s"), &get), None);
        assert_eq!(subscription_of(Route::Topics, &get), None);
    }

    #[test]
    fn handed_requests_round_trip_and_others_are_refused() {
        let handed = Handed {
            method: "POST".to_string(),
            uri: "/v1/subscriptions/s/pause".to_string(),
            headers: vec![
                (HANDED_OVER.to_string(), serde_bytes::ByteBuf::from("1")),
                (
                    "authorization".to_string(),
                    serde_bytes::ByteBuf::from("Bearer t"),
                ),
            ],
            body: serde_bytes::ByteBuf::from(b"{}".to_vec()),
        };
        let bytes = rmp_serde::to_vec_named(&handed).unwrap();
        let req = handed_request(&bytes, false).expect("decodes");
        assert!(
            handed_request(&bytes, true).is_err(),
            "only event streams are streamed"
        );
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/v1/subscriptions/s/pause");
        assert_eq!(req.headers()["authorization"], "Bearer t");

        let topics = Handed {
            uri: "/v1/topics/t".to_string(),
            method: "DELETE".to_string(),
            ..handed
        };
        let refused = handed_request(&rmp_serde::to_vec_named(&topics).unwrap(), false);
        assert_eq!(
            refused.err().map(|e| e.status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert!(handed_request(b"junk", false).is_err());
        let events = Handed {
            uri: "/v1/subscriptions/s/events".to_string(),
            method: "GET".to_string(),
            ..topics
        };
        let bytes = rmp_serde::to_vec_named(&events).unwrap();
        assert!(handed_request(&bytes, true).is_ok());
        assert!(handed_request(&bytes, false).is_err());
    }
}
