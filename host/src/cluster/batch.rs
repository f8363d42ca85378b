//! Atomic batches to one JetStream stream (ADR-50): every message of a
//! batch is stored, or none is. The first message may carry the sequence
//! its writer expects its subject to be at
//! (`Nats-Expected-Last-Subject-Sequence`): a writer that lost ownership —
//! paused, partitioned, or simply behind — has its whole batch refused
//! ([`BatchError::Fenced`]) and must read the stream again before it writes.
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
    /// The first message's subject was not at the expected sequence: another
    /// writer committed since.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A message id of the batch was stored before.
    #[error("a message id in the batch was stored before: {0}")]
    Duplicate(String),
    #[error("a batch holds 1 to {MAX_BATCH} messages, not {0}")]
    Size(usize),
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

/// Store `entries` as one atomic batch. With `expect`, the first entry's
/// subject must be at that last sequence (0: it holds no message yet).
pub async fn commit(
    client: &async_nats::Client,
    entries: Vec<Entry>,
    expect: Option<u64>,
) -> Result<Committed, BatchError> {
    let count = entries.len();
    if count == 0 || count > MAX_BATCH {
        return Err(BatchError::Size(count));
    }
    let batch = format!("{:032x}", rand::random::<u128>());
    for (i, entry) in entries.into_iter().enumerate() {
        let mut headers = HeaderMap::new();
        for (name, value) in &entry.headers {
            headers.append(name.as_str(), value.as_str());
        }
        headers.insert(NATS_BATCH_ID, batch.as_str());
        headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if let Some(id) = &entry.id {
            headers.insert(NATS_MESSAGE_ID, id.as_str());
        }
        if i == 0 {
            if let Some(seq) = expect {
                headers.insert(
                    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    seq.to_string().as_str(),
                );
            }
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
