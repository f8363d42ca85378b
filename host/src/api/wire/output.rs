//! Response bodies that carry messages: publish results, partition reads and
//! dead letters. Payloads render per format (see [`payload_fields`]).

use super::{Headers, PayloadOut};
use crate::api::body::Format;
use crate::broker::{AttemptRecord, DeadLetter, HttpRecord, LedgerEntry, LogEntry, Published};
use base64::Engine as _;
use serde::Serialize;

/// Where a published message landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublishedOut {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    /// True if the id was already published within the dedup window; the
    /// position is then the original one.
    pub duplicate: bool,
}

impl From<Published> for PublishedOut {
    fn from(p: Published) -> Self {
        Self {
            id: p.id,
            partition: p.partition,
            offset: p.offset,
            duplicate: p.duplicate,
        }
    }
}

/// Split a payload into the `payload` / `payload_base64` pair: binary in
/// MessagePack; in JSON text if it is valid UTF-8, else base64.
pub(super) fn payload_fields(
    payload: Vec<u8>,
    format: Format,
) -> (Option<PayloadOut>, Option<String>) {
    match format {
        Format::MessagePack => (Some(PayloadOut::Binary(payload)), None),
        Format::Json => match String::from_utf8(payload) {
            Ok(text) => (Some(PayloadOut::Text(text)), None),
            Err(e) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(e.into_bytes());
                (None, Some(encoded))
            }
        },
    }
}

/// One message read from a partition.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MessageOut {
    id: String,
    partition: u32,
    offset: u64,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<PayloadOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    headers: Headers,
    timestamp_ms: u64,
}

impl MessageOut {
    pub fn of(e: LogEntry, format: Format) -> Self {
        let (payload, payload_base64) = payload_fields(e.payload, format);
        MessageOut {
            id: e.id,
            partition: e.partition,
            offset: e.offset,
            key: e.key,
            payload,
            payload_base64,
            headers: Headers(e.headers),
            timestamp_ms: e.timestamp_ms,
        }
    }
}

/// `GET .../partitions/{p}/messages`: the messages and the offset to ask for next.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MessagesOut {
    messages: Vec<MessageOut>,
    /// The offset after the last message returned (`from` if none).
    next: u64,
}

impl MessagesOut {
    pub fn new(entries: Vec<LogEntry>, from: u64, format: Format) -> Self {
        let next = entries.last().map_or(from, |e| e.offset + 1);
        let messages = entries
            .into_iter()
            .map(|e| MessageOut::of(e, format))
            .collect();
        Self { messages, next }
    }
}

/// One delivery attempt of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptOut {
    attempt: u32,
    started_ms: u64,
    duration_us: u64,
    /// `ack`, `retry`, `dead-letter`, `trap`, `timeout` or `memory-limit`.
    outcome: String,
    error: Option<String>,
    /// The plugin version that ran (`name@version`).
    plugin: Option<String>,
    /// What the plugin logged during the attempt (`level: text`, bounded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<String>,
    /// The outbound HTTP requests of the attempt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    http: Vec<HttpOut>,
}

/// One outbound HTTP request of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
struct HttpOut {
    method: String,
    /// `scheme://host:port`.
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// The `wasi:http` error code and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    duration_us: u64,
    response_bytes: u64,
}

impl From<HttpRecord> for HttpOut {
    fn from(h: HttpRecord) -> Self {
        Self {
            method: h.method,
            target: h.target,
            status: h.status,
            error: h.error,
            duration_us: h.duration_us,
            response_bytes: h.response_bytes,
        }
    }
}

impl From<AttemptRecord> for AttemptOut {
    fn from(a: AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            started_ms: a.started_ms,
            duration_us: a.duration_us,
            outcome: a.outcome,
            error: a.error,
            plugin: a.plugin,
            logs: a.logs,
            http: a.http.into_iter().map(HttpOut::from).collect(),
        }
    }
}

/// `GET /v1/subscriptions/{name}/messages/{id}`: one message's delivery record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LedgerOut {
    id: String,
    topic: String,
    partition: u32,
    offset: u64,
    /// `retrying`, `acked`, `dead-lettered` or `failed`.
    state: String,
    attempts: Vec<AttemptOut>,
}

impl LedgerOut {
    pub fn new(id: String, entry: LedgerEntry) -> Self {
        Self {
            id,
            topic: entry.topic,
            partition: entry.partition,
            offset: entry.offset,
            state: entry.state,
            attempts: entry.attempts.into_iter().map(AttemptOut::from).collect(),
        }
    }
}

/// A message a subscription gave up on, with its history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadLetterOut {
    topic: String,
    partition: u32,
    offset: u64,
    id: String,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<PayloadOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    headers: Headers,
    timestamp_ms: u64,
    reason: String,
    dead_at_ms: u64,
    attempts: Vec<AttemptOut>,
}

/// `GET /v1/subscriptions/{name}/dead-letters`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadLettersOut {
    dead_letters: Vec<DeadLetterOut>,
}

impl DeadLetterOut {
    pub fn new(d: DeadLetter, format: Format) -> Self {
        let (payload, payload_base64) = payload_fields(d.message.payload, format);
        DeadLetterOut {
            topic: d.topic,
            partition: d.partition,
            offset: d.offset,
            id: d.message.id,
            key: d.message.key,
            payload,
            payload_base64,
            headers: Headers(d.message.headers),
            timestamp_ms: d.message.timestamp_ms,
            reason: d.reason,
            dead_at_ms: d.dead_at_ms,
            attempts: d.history.into_iter().map(AttemptOut::from).collect(),
        }
    }
}

impl DeadLettersOut {
    pub fn new(letters: Vec<DeadLetter>, format: Format) -> Self {
        let dead_letters = letters
            .into_iter()
            .map(|d| DeadLetterOut::new(d, format))
            .collect();
        Self { dead_letters }
    }
}

/// One entry of a subscription's kv state; the value renders like a payload.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct KvEntryOut {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<PayloadOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// `GET /v1/subscriptions/{name}/kv`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct KvOut {
    entries: Vec<KvEntryOut>,
    /// The last key listed when the page is full (pass as `after`), else null.
    next: Option<String>,
}

impl KvOut {
    pub fn new(entries: Vec<(String, Vec<u8>)>, limit: usize, format: Format) -> Self {
        let next = (entries.len() >= limit)
            .then(|| entries.last().map(|(k, _)| k.clone()))
            .flatten();
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                let (value, value_base64) = payload_fields(value, format);
                KvEntryOut {
                    key,
                    value,
                    value_base64,
                }
            })
            .collect();
        Self { entries, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::StoredMessage;
    use serde_json::{json, Value};

    fn entry(offset: u64, payload: &[u8]) -> LogEntry {
        LogEntry {
            id: format!("m{offset}"),
            partition: 2,
            offset,
            key: Some("k".into()),
            payload: payload.to_vec(),
            headers: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
            timestamp_ms: 1000,
        }
    }

    fn check(value: impl Serialize, expected: Value) {
        assert_eq!(serde_json::to_value(value).expect("encodes"), expected);
    }

    #[test]
    fn read_messages_render_text_or_base64() {
        let out = MessagesOut::new(vec![entry(5, b"hi"), entry(6, &[0xff, 0])], 5, Format::Json);
        check(
            out,
            json!({"messages": [
                {"id": "m5", "partition": 2, "offset": 5, "key": "k", "payload": "hi",
                 "headers": {"z": "1", "a": "2"}, "timestamp_ms": 1000},
                {"id": "m6", "partition": 2, "offset": 6, "key": "k", "payload_base64": "/wA=",
                 "headers": {"z": "1", "a": "2"}, "timestamp_ms": 1000},
            ], "next": 7}),
        );
        check(
            MessagesOut::new(vec![], 9, Format::Json),
            json!({"messages": [], "next": 9}),
        );
    }

    #[test]
    fn header_order_survives_rendering() {
        let out = MessagesOut::new(vec![entry(0, b"")], 0, Format::Json);
        let text = serde_json::to_string(&out).expect("encodes");
        assert!(text.contains(r#""headers":{"z":"1","a":"2"}"#), "{text}");
    }

    #[test]
    fn message_pack_reads_carry_binary_payloads() {
        let out = MessagesOut::new(vec![entry(0, b"hi")], 0, Format::MessagePack);
        let bytes = rmp_serde::to_vec_named(&out).expect("encodes");
        // The payload is a MessagePack bin (0xc4, len 2), not a str.
        assert!(bytes.windows(4).any(|w| w == [0xc4, 2, b'h', b'i']));
        assert!(!bytes.windows(14).any(|w| w == b"payload_base64"));
    }

    #[test]
    fn dead_letters_flatten_the_message_and_name_attempts() {
        let letter = DeadLetter {
            topic: "orders".into(),
            partition: 0,
            offset: 3,
            message: StoredMessage {
                id: "m3".into(),
                key: None,
                payload: b"p".to_vec(),
                headers: vec![],
                timestamp_ms: 10,
                deliver_at_ms: None,
            },
            reason: "boom".into(),
            dead_at_ms: 20,
            history: vec![AttemptRecord {
                attempt: 1,
                started_ms: 11,
                duration_us: 7,
                outcome: "trap".into(),
                error: Some("boom".into()),
                plugin: Some("p@2".into()),
                logs: vec!["warn: low on coffee".into()],
                http: Vec::new(),
            }],
        };
        check(
            DeadLettersOut::new(vec![letter], Format::Json),
            json!({"dead_letters": [{
                "topic": "orders", "partition": 0, "offset": 3, "id": "m3", "key": null,
                "payload": "p", "headers": {}, "timestamp_ms": 10, "reason": "boom",
                "dead_at_ms": 20,
                "attempts": [{"attempt": 1, "started_ms": 11, "duration_us": 7,
                              "outcome": "trap", "error": "boom", "plugin": "p@2",
                              "logs": ["warn: low on coffee"]}],
            }]}),
        );
    }

    #[test]
    fn published_positions_keep_their_shape() {
        let p = Published {
            id: "a".into(),
            partition: 1,
            offset: 2,
            duplicate: true,
        };
        check(
            PublishedOut::from(p),
            json!({"id": "a", "partition": 1, "offset": 2, "duplicate": true}),
        );
    }
}
