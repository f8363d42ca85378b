//! Webhook delivery with retries and dead letters, with no plugin code to
//! write: each message is sent as an HTTP request to the URL in config `url`.
//!
//! Config:
//! * `url` (required): where to send, `http(s)://host[:port]/path`. The
//!   subscription's `egress.allow` must name it.
//! * `method`: default `POST`.
//!
//! The request body is the message payload; `content-type` is the message's
//! `content-type` header, else `application/octet-stream`; the message's
//! metadata goes in `x-switchyard-*` headers (id, topic, partition, offset,
//! key, attempt, timestamp-ms). The host adds `idempotency-key:
//! {subscription}/{message id}`, the same on every attempt, so the receiver
//! can drop repeats.
//!
//! The answer decides the message's fate:
//! * 2xx: ack.
//! * 408, 429, 5xx, or a transport failure (timeout, refused or dropped
//!   connection, DNS, TLS): retry, after `Retry-After` seconds when the
//!   response gives them, else after the subscription's backoff.
//! * Any other status (3xx, 4xx): dead-letter, with the status and the first
//!   256 bytes of the body.
//! * A request the host refuses (the URL is not in `egress.allow`, or resolves
//!   to a non-public address), a bad URL or no `url`: dead-letter, naming why.

use switchyard_sdk::http::{ErrorKind, Request, Response};
use switchyard_sdk::{config, Message, Outcome, Plugin};

/// How much of a refusing response's body goes into the dead letter's reason.
const BODY_IN_REASON: usize = 256;
/// Longest `Retry-After` honoured: one day.
const MAX_RETRY_AFTER_S: u64 = 86_400;

struct Webhook;

impl Plugin for Webhook {
    fn handle(msg: Message) -> Outcome {
        let Some(url) = config("url") else {
            return Outcome::dead_letter("config `url` is not set");
        };
        let method = config("method").unwrap_or_else(|| "POST".to_string());
        let content_type = msg
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_string();
        let mut request = Request::new(&method, &url)
            .header("content-type", &content_type)
            .header("x-switchyard-id", &msg.id)
            .header("x-switchyard-topic", &msg.topic)
            .header("x-switchyard-partition", &msg.partition.to_string())
            .header("x-switchyard-offset", &msg.offset.to_string())
            .header("x-switchyard-attempt", &msg.attempt.to_string())
            .header("x-switchyard-timestamp-ms", &msg.timestamp_ms.to_string());
        if let Some(key) = &msg.key {
            request = request.header("x-switchyard-key", key);
        }
        match request.body(msg.payload).send() {
            Ok(response) => judge(&response),
            Err(e) => match e.kind() {
                ErrorKind::Denied | ErrorKind::Prohibited | ErrorKind::InvalidUrl => {
                    Outcome::dead_letter(format!("{method} {url} refused by the host: {e}"))
                }
                _ => Outcome::retry(format!("{method} {url} failed: {e}")),
            },
        }
    }
}

/// What a response means for the message.
fn judge(response: &Response) -> Outcome {
    let status = response.status;
    match status {
        200..=299 => Outcome::Ack,
        408 | 429 | 500..=599 => {
            let reason = format!("status {status}");
            match retry_after(response) {
                Some(seconds) => Outcome::retry_after(reason, seconds * 1000),
                None => Outcome::retry(reason),
            }
        }
        _ => {
            let shown = &response.body[..response.body.len().min(BODY_IN_REASON)];
            Outcome::dead_letter(format!(
                "status {status}: {}",
                String::from_utf8_lossy(shown)
            ))
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form falls back to the backoff).
fn retry_after(response: &Response) -> Option<u64> {
    let seconds: u64 = response.header("retry-after")?.trim().parse().ok()?;
    Some(seconds.min(MAX_RETRY_AFTER_S))
}

switchyard_sdk::export_plugin!(Webhook);
