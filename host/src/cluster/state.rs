//! A subscription's state as one JetStream stream, `S_<sub>` (docs/cluster.md,
//! "The commit"): per partition a checkpoint subject, the attempts'
//! effects, the plugin's kv (a subject per key, its last message the value,
//! its sequence the version) and dead letters. A commit is one atomic batch
//! whose first message is the partition's checkpoint, fenced by the
//! sequence its writer expects; each kv write is checked against the
//! version its attempt read. JetStream gives both refusals the same code,
//! so a refused commit reads the checkpoint again to tell them apart.

use super::batch::{self, BatchError, Entry};
use super::log::token;
use super::ClusterError;
use async_nats::jetstream::{self, stream};
use base64::Engine as _;
use bytes::Bytes;

/// The header that marks a kv key deleted.
const DELETED: &str = "Switchyard-Kv-Deleted";

/// A checkpoint as stored: its sequence (0: none yet) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: u64,
    pub value: Bytes,
}

/// A kv key's value (`None`: absent or deleted) and version (0: never
/// written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvValue {
    pub value: Option<Bytes>,
    pub version: u64,
}

/// A kv write of an attempt: the new value (`None` deletes) and the version
/// the attempt read.
#[derive(Debug, Clone)]
pub struct KvWrite {
    pub key: String,
    pub value: Option<Bytes>,
    pub read_version: u64,
}

/// What a commit writes after the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// One record per settled attempt (publications, ledger, counters).
    pub effects: Vec<Bytes>,
    pub kv: Vec<KvWrite>,
    /// Dead letters by message id.
    pub dead: Vec<(String, Bytes)>,
}

/// Why a commit was refused. Nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer committed the partition's checkpoint since: this one
    /// must drop its state and read again.
    #[error("fenced: the checkpoint is at {0}")]
    Fenced(u64),
    /// A key changed since the attempt read it: the attempt runs again.
    #[error("a kv key changed since it was read")]
    KvConflict,
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One subscription's state stream.
#[derive(Clone)]
pub struct SubscriptionState {
    client: async_nats::Client,
    stream: stream::Stream,
    prefix: String,
}

impl SubscriptionState {
    /// The state stream of `subscription`, made if missing.
    pub async fn open(
        client: async_nats::Client,
        subscription: &str,
        replicas: usize,
    ) -> Result<Self, ClusterError> {
        let prefix = format!("s.{}", token(subscription));
        let stream = jetstream::new(client.clone())
            .get_or_create_stream(super::stream_config(
                format!("S_{}", token(subscription)),
                format!("{prefix}.>"),
                replicas,
            ))
            .await
            .map_err(|e| ClusterError::new("opening a subscription's state", e))?;
        Ok(Self {
            client,
            stream,
            prefix,
        })
    }

    fn checkpoint_subject(&self, topic: &str, partition: u32) -> String {
        format!("{}.ckpt.{}.{partition}", self.prefix, token(topic))
    }

    fn kv_subject(&self, key: &str) -> String {
        format!("{}.kv.{}", self.prefix, encoded(key))
    }

    /// The last message of `subject`, if any.
    async fn last(
        &self,
        subject: String,
    ) -> Result<Option<jetstream::message::StreamMessage>, ClusterError> {
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(ClusterError::new("reading the subscription's state", e)),
        }
    }

    /// A partition's checkpoint.
    pub async fn checkpoint(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Checkpoint, ClusterError> {
        Ok(
            match self.last(self.checkpoint_subject(topic, partition)).await? {
                Some(m) => Checkpoint {
                    sequence: m.sequence,
                    value: m.payload,
                },
                None => Checkpoint {
                    sequence: 0,
                    value: Bytes::new(),
                },
            },
        )
    }

    /// A kv key's value and version.
    pub async fn kv_get(&self, key: &str) -> Result<KvValue, ClusterError> {
        Ok(match self.last(self.kv_subject(key)).await? {
            Some(m) => KvValue {
                value: m.headers.get(DELETED).is_none().then_some(m.payload),
                version: m.sequence,
            },
            None => KvValue {
                value: None,
                version: 0,
            },
        })
    }

    /// Commit a partition's new checkpoint with `changes`, as one atomic
    /// batch, if its checkpoint is still at `expected` and every kv key
    /// still at the version read. Returns the new checkpoint's sequence.
    pub async fn commit(
        &self,
        topic: &str,
        partition: u32,
        expected: u64,
        checkpoint: Bytes,
        changes: Changes,
    ) -> Result<u64, CommitError> {
        let plain = |subject: String, payload: Bytes| Entry {
            subject,
            id: None,
            headers: Vec::new(),
            payload,
            expect: None,
        };
        let mut first = plain(self.checkpoint_subject(topic, partition), checkpoint);
        first.expect = Some(expected);
        let mut entries = vec![first];
        let effects = format!("{}.fx.{}.{partition}", self.prefix, token(topic));
        entries.extend(
            changes
                .effects
                .into_iter()
                .map(|e| plain(effects.clone(), e)),
        );
        for write in changes.kv {
            let deleted = write.value.is_none();
            let mut entry = plain(self.kv_subject(&write.key), write.value.unwrap_or_default());
            if deleted {
                entry.headers.push((DELETED.to_string(), "1".to_string()));
            }
            entry.expect = Some(write.read_version);
            entries.push(entry);
        }
        for (id, letter) in changes.dead {
            let subject = format!("{}.dead.{}", self.prefix, encoded(&id));
            entries.push(plain(subject, letter));
        }
        let count = entries.len() as u64;
        match batch::commit(&self.client, entries).await {
            Ok(done) => Ok(done.last_sequence + 1 - count),
            Err(BatchError::Fenced(_)) => {
                let now = self.checkpoint(topic, partition).await?;
                if now.sequence == expected {
                    Err(CommitError::KvConflict)
                } else {
                    Err(CommitError::Fenced(now.sequence))
                }
            }
            Err(e) => Err(CommitError::Cluster(ClusterError::new("committing", e))),
        }
    }
}

/// Any text (a kv key, a message id) as one subject token.
fn encoded(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
