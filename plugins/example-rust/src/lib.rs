//! The example plugin, in Rust. The same behaviour is written in C, Python
//! and JavaScript (`plugins/example-*`), and one test checks all four
//! (`guest-sdk/harness/tests/languages.rs`):
//!
//! 1. Logs `handled <id> attempt <n>` at info level.
//! 2. Header `action: dead` → dead letter, reason `dead on request`;
//!    `action: retry` → retry (reason `try again`) until attempt 3;
//!    `action: call` → POST the payload to config `url` (outbound HTTP): a
//!    2xx answer's body replaces the payload below, another status → retry
//!    `status <n>`, no answer → retry `request failed: <kind>`.
//! 3. Adds one to the kv counter `count/<key>` (`count/-` without a key).
//! 4. Publishes to `<topic>.out`, same key, payload prefixed with the
//!    subscription's `prefix` config value, headers plus `lang: rust`;
//!    retries with the error text if the publish fails. Then acks.

use switchyard_sdk::http::{Error, ErrorKind, Request};
use switchyard_sdk::{kv, Message, Outcome, Plugin};

/// The error kind's name, as the other languages' examples spell it.
fn kind(e: &Error) -> &'static str {
    match e.kind() {
        ErrorKind::Denied => "denied",
        ErrorKind::Prohibited => "prohibited",
        ErrorKind::InvalidUrl => "invalid-url",
        ErrorKind::Timeout => "timeout",
        ErrorKind::BodyTooLarge => "body-too-large",
        ErrorKind::Dns => "dns",
        ErrorKind::Connection => "connection",
        ErrorKind::Tls => "tls",
        _ => "other",
    }
}

struct Example;

impl Plugin for Example {
    fn handle(msg: Message) -> Outcome {
        switchyard_sdk::info!("handled {} attempt {}", msg.id, msg.attempt);
        match msg.header("action") {
            Some("dead") => return Outcome::dead_letter("dead on request"),
            Some("retry") if msg.attempt < 3 => return Outcome::retry("try again"),
            _ => {}
        }
        let mut body = msg.payload.clone();
        if msg.header("action") == Some("call") {
            let url = switchyard_sdk::config("url").unwrap_or_default();
            match Request::post(&url).body(msg.payload.clone()).send() {
                Ok(r) if r.is_success() => body = r.body,
                Ok(r) => return Outcome::retry(format!("status {}", r.status)),
                Err(e) => return Outcome::retry(format!("request failed: {}", kind(&e))),
            }
        }
        let counter = format!("count/{}", msg.key.as_deref().unwrap_or("-"));
        kv::set_u64(&counter, kv::get_u64(&counter) + 1);
        let mut payload = switchyard_sdk::config("prefix")
            .unwrap_or_default()
            .into_bytes();
        payload.extend_from_slice(&body);
        let mut headers: Vec<(&str, &str)> = msg
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        headers.push(("lang", "rust"));
        let to = format!("{}.out", msg.topic);
        match switchyard_sdk::publish(&to, msg.key.as_deref(), &payload, &headers) {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::retry(error),
        }
    }
}

switchyard_sdk::export_plugin!(Example);
