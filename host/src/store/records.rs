//! Values the store persists (MessagePack via rmp-serde). Field names are
//! written out, so fields may be added with `#[serde(default)]`.

use serde::{Deserialize, Serialize};

/// A message in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: String,
    pub key: Option<String>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub timestamp_ms: u64,
    /// Not delivered before this time (ms since the Unix epoch): a delayed publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at_ms: Option<u64>,
}

/// One delivery attempt, as kept in a message's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first delivery.
    pub attempt: u32,
    pub started_ms: u64,
    pub duration_us: u64,
    /// `ack`, `retry`, `dead-letter`, `trap`, `timeout`, `memory-limit`.
    pub outcome: String,
    pub error: Option<String>,
    /// The plugin version that ran (`name@version`).
    #[serde(default)]
    pub plugin: Option<String>,
    /// What the plugin logged (and wrote to stdout/stderr) during the
    /// attempt, as `level: text` lines, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// The outbound HTTP requests the plugin made during the attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRecord>,
}

/// One outbound HTTP request of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRecord {
    pub method: String,
    /// `scheme://host:port`.
    pub target: String,
    /// The response status, if a response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The `wasi:http` error code and why, if the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the request to the response headers (or the failure).
    pub duration_us: u64,
    /// Response body bytes the plugin read.
    pub response_bytes: u64,
}

/// A message waiting for its next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, ms since the Unix epoch.
    pub due_ms: u64,
    pub history: Vec<AttemptRecord>,
}

/// A message a subscription gave up on, with its whole history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub message: StoredMessage,
    pub reason: String,
    pub dead_at_ms: u64,
    pub history: Vec<AttemptRecord>,
}

/// Running totals of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Attempts started.
    pub delivered: u64,
    pub acked: u64,
    /// Failed attempts that were scheduled for another try.
    pub retried: u64,
    pub dead_lettered: u64,
}

/// A dead letter sent back into its subscription: delivered again (attempts
/// counted afresh) without touching the topic or other subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redrive {
    pub message: StoredMessage,
    /// Attempts since the redrive.
    pub attempts: u32,
    /// When the next attempt is due (0: at once).
    pub due_ms: u64,
    pub history: Vec<AttemptRecord>,
}

/// A subscription's record of one message: where it is, what became of it,
/// and every attempt so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// `retrying`, `acked`, `dead-lettered` or `failed` (at-most-once).
    pub state: String,
    pub attempts: Vec<AttemptRecord>,
}
