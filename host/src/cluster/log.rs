//! Topic partitions as JetStream streams (docs/cluster.md, "Mapping"):
//! partition `p` of topic `t` is the stream `T_<t>_<p>` with the one
//! subject `t.<t>.<p>` (the topic's dots written as `~`, which names cannot
//! hold), R3
//! on file storage, its duplicate window the topic's dedup window. A
//! message's offset is its sequence less one; a producer's id is its
//! `Nats-Msg-Id`, so a retried publish is stored once (C4).

use super::batch::{self, BatchError, Entry};
use super::ClusterError;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID, NATS_SEQUENCE};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use std::time::Duration;

/// The header that carries a producer-given message id.
const ID: &str = "Switchyard-Id";
/// The header that carries a message's key.
const KEY: &str = "Switchyard-Key";
/// The header that carries a delayed message's due time (ms since the epoch).
const DELIVER_AT: &str = "Switchyard-Deliver-At";
/// How long a batch read waits for each message of its answer.
const SCAN_WAIT: Duration = Duration::from_secs(5);

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The producer's id, if it gave one.
    pub id: Option<String>,
    /// Deduplicate by `id` (as `Nats-Msg-Id`) within the topic's window.
    pub dedup: bool,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// Deliver no sooner than this (ms since the epoch).
    pub deliver_at_ms: Option<u64>,
}

/// A partition's stored range and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    /// The oldest offset still stored (the next one when empty).
    pub first: u64,
    /// The offset the next message gets.
    pub next: u64,
    pub bytes: u64,
}

/// A stored message, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub offset: u64,
    pub record: Record,
    pub timestamp_ms: u64,
}

/// Where an appended message is: its offset, and whether an earlier publish
/// with its producer id had stored it (then the offset is that one's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    pub duplicate: bool,
}

/// The stream of a topic's partition.
pub fn stream_name(topic: &str, partition: u32) -> String {
    format!("T_{}_{partition}", token(topic))
}

fn subject(topic: &str, partition: u32) -> String {
    format!("t.{}.{partition}", token(topic))
}

/// The subjects of every partition of a topic.
pub(crate) fn all_subjects(topic: &str) -> String {
    format!("t.{}.*", token(topic))
}

/// A name as one subject token or in a stream name: its dots as `~`, which
/// names cannot hold, so that `a.b` and `a` never share a subject prefix
/// (and the name is the token with its `~` as dots again).
pub(crate) fn token(name: &str) -> String {
    name.replace('.', "~")
}

/// The name a [`token`] stands for.
pub(crate) fn untoken(token: &str) -> String {
    token.replace('~', ".")
}

/// The topics' partitions on a JetStream cluster.
#[derive(Clone)]
pub struct TopicLog {
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
}

impl TopicLog {
    pub fn new(client: async_nats::Client, replicas: usize) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            replicas,
        }
    }

    /// Make a topic's partition streams (those that exist are kept), each
    /// with `dedup_window` as its duplicate window (0: JetStream's default;
    /// ids are then not sent).
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        dedup_window: Duration,
    ) -> Result<(), ClusterError> {
        for p in 0..partitions {
            let config = stream::Config {
                duplicate_window: dedup_window,
                ..super::stream_config(stream_name(topic, p), subject(topic, p), self.replicas)
            };
            super::get_or_create_stream(&self.js, config)
                .await
                .map_err(|e| ClusterError::new("creating a partition stream", e))?;
        }
        Ok(())
    }

    /// Set the duplicate window of a topic's partition streams.
    pub async fn set_dedup_window(
        &self,
        topic: &str,
        partitions: u32,
        dedup_window: Duration,
    ) -> Result<(), ClusterError> {
        for p in 0..partitions {
            let mut stream = self
                .js
                .get_stream(stream_name(topic, p))
                .await
                .map_err(|e| ClusterError::new("opening a partition stream", e))?;
            let mut config = stream
                .info()
                .await
                .map_err(|e| ClusterError::new("reading a partition's settings", e))?
                .config
                .clone();
            config.duplicate_window = dedup_window;
            self.js
                .update_stream(config)
                .await
                .map_err(|e| ClusterError::new("changing a partition's settings", e))?;
        }
        Ok(())
    }

    /// Delete a topic's partition streams with their messages (those
    /// already gone are skipped).
    pub async fn delete_topic(&self, topic: &str, partitions: u32) -> Result<(), ClusterError> {
        for p in 0..partitions {
            if let Err(e) = self.js.delete_stream(stream_name(topic, p)).await {
                if !self.exists(topic, p).await? {
                    continue;
                }
                return Err(ClusterError::new("deleting a partition stream", e));
            }
        }
        Ok(())
    }

    /// Does the partition's stream exist? (Asked after a failure, to tell
    /// a deleted topic from a fault.)
    pub async fn exists(&self, topic: &str, partition: u32) -> Result<bool, ClusterError> {
        match self.js.get_stream(stream_name(topic, partition)).await {
            Ok(_) => Ok(true),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(false)
                }
                _ => Err(ClusterError::new("opening a partition stream", e)),
            },
        }
    }

    /// Can `record` be stored? Headers NATS cannot carry, and JetStream's
    /// own, are refused with the reason.
    pub fn check(record: &Record) -> Result<(), String> {
        if let Some((name, _)) = record.headers.iter().find(|(name, _)| {
            [ID, KEY, DELIVER_AT]
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        }) {
            return Err(format!(
                "header {name:?} cannot be stored: Switchyard keeps the message's own fields there"
            ));
        }
        batch::headers_of(&entry("t", record))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Append `records` to a partition, in atomic batches of up to
    /// [`batch::MAX_BATCH`]; a batch holding a producer id stored before
    /// is appended one by one instead, each stored or found (a retried
    /// publish then completes what an earlier attempt began).
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Vec<Appended>, ClusterError> {
        let subject = subject(topic, partition);
        let mut appended = Vec::with_capacity(records.len());
        for chunk in records.chunks(batch::MAX_BATCH) {
            if chunk.len() > 1 {
                let entries = chunk.iter().map(|r| entry(&subject, r)).collect();
                match batch::commit(&self.client, entries).await {
                    Ok(done) => {
                        let first = done.last_sequence + 1 - chunk.len() as u64;
                        appended.extend((0..chunk.len() as u64).map(|i| Appended {
                            offset: first + i - 1,
                            duplicate: false,
                        }));
                        continue;
                    }
                    Err(BatchError::Duplicate(_)) => {}
                    Err(e) => return Err(ClusterError::new("appending", e)),
                }
            }
            for record in chunk {
                let e = entry(&subject, record);
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), headers(&e)?, e.payload)
                    .await
                    .map_err(|e| ClusterError::new("appending", e))?
                    .await
                    .map_err(|e| ClusterError::new("appending", e))?;
                appended.push(Appended {
                    offset: ack.sequence - 1,
                    duplicate: ack.duplicate,
                });
            }
        }
        Ok(appended)
    }

    /// Up to `limit` messages of a partition from offset `from`, in order
    /// (offsets retention removed are skipped).
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, ClusterError> {
        let (stream, state) = self.partition(topic, partition).await?;
        let mut out = Vec::new();
        let mut sequence = from.max(state.first) + 1;
        while sequence <= state.next && out.len() < limit {
            match stream.get_raw_message(sequence).await {
                Ok(message) => out.push(stored(message)),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(ClusterError::new("reading a partition", e)),
            }
            sequence += 1;
        }
        Ok(out)
    }

    /// Up to `limit` messages of a partition from offset `from`, in order,
    /// in one request answered by any replica (a batch direct get): one
    /// behind the stream's leader may answer fewer than are stored, never
    /// with a gap. For readers that read again for the rest (runners).
    pub async fn scan(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, ClusterError> {
        use futures_util::StreamExt as _;
        let failed =
            |e: &dyn std::fmt::Display| ClusterError::new("reading a partition", e.to_string());
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(&e))?;
        let request = serde_json::json!({ "seq": from + 1, "batch": limit });
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", stream_name(topic, partition)),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(|e| failed(&e))?;
        let mut out = Vec::new();
        while out.len() < limit {
            let answer = match tokio::time::timeout(SCAN_WAIT, answers.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Err(failed(&"the connection closed")),
                Err(_) => return Err(failed(&"no answer in time")),
            };
            match answer.status {
                // The end of the batch (204), or nothing at `from` (404).
                Some(status) if status.as_u16() >= 204 => break,
                _ => {}
            }
            let message =
                jetstream::message::StreamMessage::try_from(answer).map_err(|e| failed(&e))?;
            out.push(stored(message));
        }
        Ok(out)
    }

    /// The offset a partition's next message gets, as one replica knows it
    /// (one behind the leader tells less): a direct get of its last
    /// message, answered by any replica without the JetStream API. `None`
    /// if it holds no message (empty, or trimmed whole).
    pub async fn head(&self, topic: &str, partition: u32) -> Result<Option<u64>, ClusterError> {
        let failed = |e: &dyn std::fmt::Display| {
            ClusterError::new("reading a partition's head", e.to_string())
        };
        let request = serde_json::json!({ "last_by_subj": subject(topic, partition) });
        let answer = self
            .client
            .request(
                format!("$JS.API.DIRECT.GET.{}", stream_name(topic, partition)),
                request.to_string().into(),
            )
            .await
            .map_err(|e| failed(&e))?;
        match answer.status.map(|s| s.as_u16()) {
            Some(404) => return Ok(None),
            Some(status) if status >= 300 => {
                return Err(failed(&format!("answered {status}")));
            }
            _ => {}
        }
        answer
            .headers
            .as_ref()
            .and_then(|h| h.get(NATS_SEQUENCE))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| failed(&"an answer without its sequence"))
    }

    /// Drop a partition's messages below offset `before` (retention).
    pub async fn trim(&self, topic: &str, partition: u32, before: u64) -> Result<(), ClusterError> {
        let (stream, _) = self.partition(topic, partition).await?;
        stream
            .purge()
            .sequence(before + 1)
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::new("trimming a partition", e))
    }

    /// The offset the partition's next message gets.
    pub async fn next_offset(&self, topic: &str, partition: u32) -> Result<u64, ClusterError> {
        Ok(self.state(topic, partition).await?.next)
    }

    /// A partition's stored range and size.
    pub async fn state(&self, topic: &str, partition: u32) -> Result<PartitionState, ClusterError> {
        Ok(self.partition(topic, partition).await?.1)
    }

    /// A partition's stream and its state.
    async fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(stream::Stream, PartitionState), ClusterError> {
        // Opening the stream reads its info: its state is as fresh as a
        // second request's would be.
        let stream = self
            .js
            .get_stream(stream_name(topic, partition))
            .await
            .map_err(|e| ClusterError::new("opening a partition", e))?;
        let state = stream.cached_info().state.clone();
        let next = state.last_sequence;
        Ok((
            stream,
            PartitionState {
                // An empty stream's first sequence is one past its last.
                first: state.first_sequence.saturating_sub(1).min(next),
                next,
                bytes: state.bytes,
            },
        ))
    }
}

fn entry(subject: &str, record: &Record) -> Entry {
    let mut headers = record.headers.clone();
    if let Some(id) = &record.id {
        headers.push((ID.to_string(), id.clone()));
    }
    if let Some(key) = &record.key {
        headers.push((KEY.to_string(), key.clone()));
    }
    if let Some(at) = record.deliver_at_ms {
        headers.push((DELIVER_AT.to_string(), at.to_string()));
    }
    Entry {
        subject: subject.to_string(),
        id: record.id.clone().filter(|_| record.dedup),
        headers,
        payload: record.payload.clone(),
        expect: None,
    }
}

fn headers(entry: &Entry) -> Result<HeaderMap, ClusterError> {
    let mut map = batch::headers_of(entry).map_err(|e| ClusterError::new("appending", e))?;
    if let Some(id) = &entry.id {
        map.insert(NATS_MESSAGE_ID, id.as_str());
    }
    Ok(map)
}

fn stored(message: jetstream::message::StreamMessage) -> Stored {
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
    let mut headers: Vec<(String, String)> = message
        .headers
        .iter()
        .filter(|(name, _)| {
            let name: &str = name.as_ref();
            !name.starts_with("Nats-") && ![ID, KEY, DELIVER_AT].contains(&name)
        })
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_string()))
        })
        .collect();
    // NATS keeps no order between header names: by name, each name's values
    // in the order given.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    Stored {
        offset: message.sequence - 1,
        timestamp_ms: super::epoch_ms(message.time.unix_timestamp_nanos()),
        record: Record {
            dedup: message.headers.get(NATS_MESSAGE_ID).is_some(),
            id: header(ID),
            key: header(KEY),
            headers,
            payload: message.payload,
            deliver_at_ms: header(DELIVER_AT).and_then(|at| at.parse().ok()),
        },
    }
}
