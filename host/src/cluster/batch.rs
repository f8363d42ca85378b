//! Atomic batches to one JetStream stream (ADR-50): every message of a
//! batch is stored, or none is. A message may carry the sequence its
//! writer expects its subject to be at (`Nats-Expected-Last-Subject-Sequence`):
//! on the first message that fences the batch — a writer that lost
//! ownership (paused, partitioned, or simply behind) has its whole batch
//! refused ([`BatchError::Fenced`]) and must read the stream again before
//! it writes; on a later one it checks a version read (a kv key).
//!
//! The header protocol: the first message is a request (the server answers
//! with nothing, or an error), the middle ones are plain publishes, and
//! the last carries `Nats-Batch-Commit: 1` and is answered with the
//! batch's publish acknowledgement. Order on one connection is kept.

use async_nats::header::{
    HeaderMap, NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID, NATS_BATCH_SEQUENCE,
    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID,
};
use bytes::Bytes;
use serde::Deserialize;
use std::str::FromStr as _;

/// Most messages in one batch (the server's default limit).
pub const MAX_BATCH: usize = 1000;

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct Entry {
    pub subject: String,
    /// Deduplication id (`Nats-Msg-Id`): a batch holding an id the stream
    /// stored within its dedup window is refused whole.
    pub id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// The sequence the subject's last message must have (0: none yet), or
    /// the batch is refused whole. Not on a subject an earlier message of
    /// the same batch writes.
    pub expect: Option<u64>,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub stream: String,
    /// The sequence of the batch's last message; the others precede it.
    pub last_sequence: u64,
    pub count: u64,
}

/// Why a batch was not stored. In every case none of it was.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A subject was not at its expected sequence: on the first message,
    /// another writer committed since.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A message id of the batch was stored before.
    #[error("a message id in the batch was stored before: {0}")]
    Duplicate(String),
    #[error("a batch holds 1 to {MAX_BATCH} messages, not {0}")]
    Size(usize),
    /// A header NATS cannot carry (a name with spaces, `:` or non-ASCII, a
    /// value with a line break) or one of JetStream's own (`Nats-…`), which
    /// would change how the batch is stored.
    #[error("header {0:?} cannot be stored: {1}")]
    Header(String, &'static str),
    /// Any other refusal, with JetStream's error code.
    #[error("JetStream refused the batch ({code}): {description}")]
    Refused { code: u64, description: String },
    /// No answer (no responders, a timeout, a lost connection): whether the
    /// batch was stored is unknown until the stream is read.
    #[error("no answer from JetStream: {0}")]
    Unanswered(String),
}

/// JetStream's error codes this module tells apart.
const WRONG_LAST_SEQUENCE: u64 = 10071;
const DUPLICATE_IN_BATCH: u64 = 10201;

#[derive(Deserialize)]
struct Ack {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// The NATS headers of an entry's own headers, refused before anything is
/// sent if NATS cannot carry one or it is JetStream's.
pub(crate) fn headers_of(entry: &Entry) -> Result<HeaderMap, BatchError> {
    let mut map = HeaderMap::new();
    for (name, value) in &entry.headers {
        if name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
        {
            return Err(BatchError::Header(
                name.clone(),
                "names starting Nats- are JetStream's",
            ));
        }
        let header = async_nats::HeaderName::from_str(name)
            .map_err(|_| BatchError::Header(name.clone(), "not a valid header name"))?;
        let value = async_nats::HeaderValue::from_str(value)
            .map_err(|_| BatchError::Header(name.clone(), "its value holds a line break"))?;
        map.append(header, value);
    }
    Ok(map)
}

/// Store `entries` as one atomic batch, if every subject with an expected
/// sequence is at it.
pub async fn commit(
    client: &async_nats::Client,
    entries: Vec<Entry>,
) -> Result<Committed, BatchError> {
    let count = entries.len();
    if count == 0 || count > MAX_BATCH {
        return Err(BatchError::Size(count));
    }
    let batch = format!("{:032x}", rand::random::<u128>());
    for (i, entry) in entries.into_iter().enumerate() {
        let mut headers = headers_of(&entry)?;
        headers.insert(NATS_BATCH_ID, batch.as_str());
        headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if let Some(id) = &entry.id {
            headers.insert(NATS_MESSAGE_ID, id.as_str());
        }
        if let Some(seq) = entry.expect {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                seq.to_string().as_str(),
            );
        }
        let last = i + 1 == count;
        if last {
            headers.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
        }
        if i == 0 || last {
            let answer = client
                .request_with_headers(entry.subject, headers, entry.payload)
                .await
                .map_err(|e| BatchError::Unanswered(e.to_string()))?;
            if answer.payload.is_empty() && !last {
                continue;
            }
            let ack: Ack = serde_json::from_slice(&answer.payload).map_err(|e| {
                BatchError::Unanswered(format!("an answer that is not a publish ack: {e}"))
            })?;
            if let Some(error) = ack.error {
                return Err(match error.err_code {
                    WRONG_LAST_SEQUENCE => BatchError::Fenced(error.description),
                    DUPLICATE_IN_BATCH => BatchError::Duplicate(error.description),
                    code => BatchError::Refused {
                        code,
                        description: error.description,
                    },
                });
            }
            if last {
                return Ok(Committed {
                    stream: ack.stream,
                    last_sequence: ack.seq,
                    count: ack.count.max(1),
                });
            }
        } else {
            client
                .publish_with_headers(entry.subject, headers, entry.payload)
                .await
                .map_err(|e| BatchError::Unanswered(e.to_string()))?;
        }
    }
    unreachable!("the last entry returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(name: &str, value: &str) -> Entry {
        Entry {
            subject: "s".into(),
            id: None,
            headers: vec![(name.into(), value.into())],
            payload: Bytes::new(),
            expect: None,
        }
    }

    /// JetStream's own headers would change how a batch is stored (a
    /// `Nats-Batch-Commit` in the middle commits a prefix), and NATS cannot
    /// carry some names and values: all are refused before anything is
    /// sent, never a panic.
    #[test]
    fn headers_jetstream_owns_or_nats_cannot_carry_are_refused() {
        for (name, value) in [
            ("Nats-Batch-Commit", "1"),
            ("nats-msg-id", "x"),
            ("NATS-Expected-Last-Sequence", "3"),
            ("two words", "v"),
            ("colon:", "v"),
            ("é", "v"),
            ("ok", "line\r\nbreak"),
        ] {
            let refused = headers_of(&with_header(name, value));
            assert!(
                matches!(refused, Err(BatchError::Header(..))),
                "{name}: {refused:?}"
            );
        }
        let map =
            headers_of(&with_header("traceparent", "00-ab-cd-01")).expect("an ordinary header");
        assert_eq!(
            map.get("traceparent").map(|v| v.as_str()),
            Some("00-ab-cd-01")
        );
    }
}
