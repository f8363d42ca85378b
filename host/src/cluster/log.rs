//! Topic partitions as JetStream streams (docs/cluster.md, "Mapping"):
//! partition `p` of topic `t` is the stream `T_<t>_<p>` with the one
//! subject `t.<t>.<p>` (the topic's dots written as `~`, which names cannot
//! hold), R3
//! on file storage, its duplicate window the topic's dedup window. A
//! message's offset is its sequence less one; a producer's id is its
//! `Nats-Msg-Id`, so a retried publish is stored once (C4).

use super::batch::{self, BatchError, Entry};
use super::ClusterError;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use std::time::Duration;

/// The header that carries a message's id (producer-given or assigned).
const ID: &str = "Switchyard-Id";
/// The header that carries a message's key.
const KEY: &str = "Switchyard-Key";

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The producer's id: deduplicated within the topic's window.
    pub producer_id: Option<String>,
    /// The id the message is known by (the producer's, or one assigned).
    pub id: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
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

/// A name as one subject token or in a stream name: its dots as `~`, which
/// names cannot hold, so that `a.b` and `a` never share a subject prefix.
pub(crate) fn token(name: &str) -> String {
    name.replace('.', "~")
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

    /// Make a topic's partition streams (those that exist are kept).
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        dedup_window: Duration,
    ) -> Result<(), ClusterError> {
        for p in 0..partitions {
            self.js
                .get_or_create_stream(stream::Config {
                    duplicate_window: dedup_window,
                    ..super::stream_config(stream_name(topic, p), subject(topic, p), self.replicas)
                })
                .await
                .map_err(|e| ClusterError::new("creating a partition stream", e))?;
        }
        Ok(())
    }

    /// Append `records` to a partition: one atomic batch when none of them
    /// was stored before; with a producer id seen before, one by one, each
    /// stored or found (a retried publish then completes what an earlier
    /// attempt began).
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Vec<Appended>, ClusterError> {
        let subject = subject(topic, partition);
        if records.len() > 1 && records.len() <= batch::MAX_BATCH {
            let entries = records.iter().map(|r| entry(&subject, r)).collect();
            match batch::commit(&self.client, entries).await {
                Ok(done) => {
                    let first = done.last_sequence + 1 - records.len() as u64;
                    return Ok((0..records.len() as u64)
                        .map(|i| Appended {
                            offset: first + i - 1,
                            duplicate: false,
                        })
                        .collect());
                }
                Err(BatchError::Duplicate(_)) => {}
                Err(e) => return Err(ClusterError::new("appending", e)),
            }
        }
        let mut appended = Vec::with_capacity(records.len());
        for record in &records {
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
        let (stream, last) = self.partition(topic, partition).await?;
        let mut out = Vec::new();
        let mut sequence = from + 1;
        while sequence <= last && out.len() < limit {
            match stream.get_raw_message(sequence).await {
                Ok(message) => out.push(stored(message)),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(ClusterError::new("reading a partition", e)),
            }
            sequence += 1;
        }
        Ok(out)
    }

    /// The offset the partition's next message gets.
    pub async fn next_offset(&self, topic: &str, partition: u32) -> Result<u64, ClusterError> {
        Ok(self.partition(topic, partition).await?.1)
    }

    /// A partition's stream and its last sequence.
    async fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(stream::Stream, u64), ClusterError> {
        let mut stream = self
            .js
            .get_stream(stream_name(topic, partition))
            .await
            .map_err(|e| ClusterError::new("opening a partition", e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| ClusterError::new("reading a partition's state", e))?
            .state
            .last_sequence;
        Ok((stream, last))
    }
}

fn entry(subject: &str, record: &Record) -> Entry {
    let mut headers = record.headers.clone();
    headers.push((ID.to_string(), record.id.clone()));
    if let Some(key) = &record.key {
        headers.push((KEY.to_string(), key.clone()));
    }
    Entry {
        subject: subject.to_string(),
        id: record.producer_id.clone(),
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
            !name.starts_with("Nats-") && name != ID && name != KEY
        })
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_string()))
        })
        .collect();
    headers.sort();
    Stored {
        offset: message.sequence - 1,
        timestamp_ms: (message.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
        record: Record {
            producer_id: header(NATS_MESSAGE_ID.as_ref()),
            id: header(ID).unwrap_or_default(),
            key: header(KEY),
            headers,
            payload: message.payload,
        },
    }
}
