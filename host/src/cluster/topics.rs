//! The broker's shared log on JetStream ([`crate::broker::shared::SharedLog`]):
//! topics' settings in the KV bucket [`META_BUCKET`] (key `topic.<name>`),
//! their partitions as streams ([`super::log`]).
//!
//! Settings change only by compare-and-set, so hosts creating, updating
//! and deleting one topic at once agree on the outcome:
//! - **create**: the partition streams first, then the settings by
//!   create; a host that loses the race finds the winner's settings (the
//!   same partition count: it is told the topic exists; another: 409).
//! - **delete**: the settings are first marked `deleting` (by revision),
//!   then the streams are deleted, then the settings. A topic marked
//!   `deleting` does not exist for readers and publishers; a host that
//!   died midway leaves the mark, and the next create of that name
//!   finishes the deletion first, so a topic created again never finds an
//!   earlier one's messages.

use super::log::{PartitionState, Record, TopicLog};
use super::ClusterError;
use crate::broker::shared::{
    SharedAppended, SharedEntry, SharedLog, SharedMessage, SharedPartition,
};
use crate::broker::{BrokerError, TopicSpec};
use async_nats::jetstream::{self, kv};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The bucket of topics' (and later subscriptions' and plugins') settings.
pub const META_BUCKET: &str = "switchyard_meta";

/// How often an update that lost a compare-and-set race is tried again
/// before the caller is told to retry.
const RACES: usize = 16;

/// A topic's entry in [`META_BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TopicRecord {
    spec: TopicSpec,
    /// Being deleted: gone for everyone; its streams may still exist.
    deleting: bool,
}

/// Topics on a JetStream cluster.
#[derive(Clone)]
pub struct Topics {
    client: async_nats::Client,
    log: TopicLog,
    meta: kv::Store,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").finish_non_exhaustive()
    }
}

impl Topics {
    /// Topics on the cluster `client` is connected to, each partition and
    /// the settings bucket with `replicas` copies (made if missing).
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, ClusterError> {
        let js = jetstream::new(client.clone());
        let meta = js
            .create_key_value(kv::Config {
                bucket: META_BUCKET.to_string(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::new("opening the settings bucket", e))?;
        Ok(Self {
            log: TopicLog::new(client.clone(), replicas),
            client,
            meta,
        })
    }

    /// The topic's record and its revision, unless absent or deleted.
    async fn record(&self, name: &str) -> Result<Option<(TopicRecord, u64)>, BrokerError> {
        let entry = self
            .meta
            .entry(key(name))
            .await
            .map_err(|e| failed("reading a topic's settings", e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let record = rmp_serde::from_slice(&entry.value).map_err(|e| {
                    BrokerError::Store(format!("the settings of topic {name:?} are corrupt: {e}"))
                })?;
                Ok(Some((record, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    async fn create(&self, name: &str, spec: &TopicSpec) -> Result<bool, BrokerError> {
        self.log
            .create_topic(name, spec.partitions, window(spec))
            .await
            .map_err(|e| failed("creating a topic's partitions", e))?;
        let record = TopicRecord {
            spec: spec.clone(),
            deleting: false,
        };
        match self.meta.create(key(name), encode(&record)).await {
            Ok(_) => {
                tracing::info!(topic = name, ?spec, "topic created in the cluster");
                Ok(true)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(failed("storing a topic's settings", e)),
        }
    }

    /// Finish deleting a topic marked `deleting` at `revision`.
    async fn finish_delete(
        &self,
        name: &str,
        record: &TopicRecord,
        revision: u64,
    ) -> Result<(), BrokerError> {
        self.log
            .delete_topic(name, record.spec.partitions)
            .await
            .map_err(|e| failed("deleting a topic's partitions", e))?;
        // By revision: a create that finished the deletion first and made
        // the topic again must not lose it.
        if let Err(e) = self
            .meta
            .delete_expect_revision(key(name), Some(revision))
            .await
        {
            let now = self
                .meta
                .entry(key(name))
                .await
                .map_err(|e| failed("reading a topic's settings", e))?;
            // Changed since: whoever changed it owns the name now.
            if now.is_some_and(|entry| entry.revision == revision) {
                return Err(failed("removing a topic's settings", e));
            }
        }
        Ok(())
    }
}

impl SharedLog for Topics {
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, TopicSpec)>, BrokerError>> {
        Box::pin(async move {
            let keys: Vec<String> = match self.meta.keys().await {
                Ok(keys) => keys
                    .try_collect()
                    .await
                    .map_err(|e| failed("listing topics", e))?,
                Err(e) => return Err(failed("listing topics", e)),
            };
            let mut topics = Vec::new();
            for name in keys.iter().filter_map(|k| k.strip_prefix("topic.")) {
                if let Some((record, _)) = self.record(name).await? {
                    if !record.deleting {
                        topics.push((name.to_string(), record.spec));
                    }
                }
            }
            Ok(topics)
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<TopicSpec>, BrokerError>> {
        Box::pin(async move {
            Ok(self
                .record(name)
                .await?
                .filter(|(r, _)| !r.deleting)
                .map(|(r, _)| r.spec))
        })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        spec: &'a TopicSpec,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            for _ in 0..RACES {
                let Some((record, revision)) = self.record(name).await? else {
                    if self.create(name, spec).await? {
                        return Ok(true);
                    }
                    // Created meanwhile by another host: compare with it.
                    continue;
                };
                if record.deleting {
                    self.finish_delete(name, &record, revision).await?;
                    continue;
                }
                if record.spec.partitions != spec.partitions {
                    return Err(BrokerError::Conflict(format!(
                        "topic {name:?} has {} partitions; the partition count cannot change \
                         (retention_ms and dedup_window_ms can)",
                        record.spec.partitions
                    )));
                }
                if record.spec == *spec {
                    return Ok(false);
                }
                if record.spec.dedup_window_ms != spec.dedup_window_ms {
                    self.log
                        .set_dedup_window(name, spec.partitions, window(spec))
                        .await
                        .map_err(|e| failed("changing a topic's dedup window", e))?;
                }
                let updated = TopicRecord {
                    spec: spec.clone(),
                    deleting: false,
                };
                match self
                    .meta
                    .update(key(name), encode(&updated), revision)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(topic = name, ?spec, "topic settings changed");
                        return Ok(false);
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed("storing a topic's settings", e)),
                }
            }
            Err(busy(name))
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            for _ in 0..RACES {
                let Some((mut record, revision)) = self.record(name).await? else {
                    break;
                };
                if record.deleting {
                    // Another delete is under way (or died midway): finish it.
                    return self.finish_delete(name, &record, revision).await;
                }
                record.deleting = true;
                match self.meta.update(key(name), encode(&record), revision).await {
                    Ok(marked) => {
                        self.finish_delete(name, &record, marked).await?;
                        tracing::info!(topic = name, "topic deleted from the cluster");
                        return Ok(());
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed("marking a topic deleted", e)),
                }
            }
            Err(BrokerError::NotFound(format!(
                "topic {name:?} does not exist"
            )))
        })
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        messages: Vec<SharedMessage>,
    ) -> BoxFuture<'a, Result<Vec<SharedAppended>, BrokerError>> {
        Box::pin(async move {
            let records: Vec<Record> = messages
                .into_iter()
                .map(|m| Record {
                    id: m.id,
                    dedup: m.dedup,
                    key: m.key,
                    headers: m.headers,
                    payload: m.payload.into(),
                    deliver_at_ms: m.deliver_at_ms,
                })
                .collect();
            for record in &records {
                TopicLog::check(record).map_err(BrokerError::Invalid)?;
            }
            match self.log.append(topic, partition, records).await {
                Ok(appended) => Ok(appended
                    .into_iter()
                    .map(|a| SharedAppended {
                        offset: a.offset,
                        duplicate: a.duplicate,
                    })
                    .collect()),
                Err(e) => Err(self.explain(topic, partition, e).await),
            }
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SharedEntry>, BrokerError>> {
        Box::pin(async move {
            let stored = match self.log.read(topic, partition, from, limit).await {
                Ok(stored) => stored,
                Err(e) => return Err(self.explain(topic, partition, e).await),
            };
            Ok(stored
                .into_iter()
                .map(|s| SharedEntry {
                    offset: s.offset,
                    timestamp_ms: s.timestamp_ms,
                    message: SharedMessage {
                        id: s.record.id,
                        dedup: s.record.dedup,
                        key: s.record.key,
                        headers: s.record.headers,
                        payload: s.record.payload.to_vec(),
                        deliver_at_ms: s.record.deliver_at_ms,
                    },
                })
                .collect())
        })
    }

    fn reachable(&self) -> Result<(), String> {
        self.connected()
    }

    fn appends<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<futures_util::stream::BoxStream<'static, ()>, BrokerError>> {
        Box::pin(async move {
            // Core NATS sees every publish to the partitions' subjects.
            let subscriber = self
                .client
                .subscribe(super::log::all_subjects(topic))
                .await
                .map_err(|e| failed("watching a topic", e))?;
            Ok(futures_util::StreamExt::boxed(
                futures_util::StreamExt::map(subscriber, |_| ()),
            ))
        })
    }

    fn partition<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<SharedPartition, BrokerError>> {
        Box::pin(async move {
            match self.log.state(topic, partition).await {
                Ok(PartitionState { first, next, bytes }) => {
                    Ok(SharedPartition { first, next, bytes })
                }
                Err(e) => Err(self.explain(topic, partition, e).await),
            }
        })
    }
}

impl Topics {
    /// Connected to a node of the cluster (the client reconnects by itself).
    fn connected(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("cluster mode: not connected to NATS ({state})")),
        }
    }

    /// A failure on a partition: [`BrokerError::NotFound`] if its stream is
    /// gone (the topic was deleted), else the failure.
    async fn explain(&self, topic: &str, partition: u32, error: ClusterError) -> BrokerError {
        match self.log.exists(topic, partition).await {
            Ok(false) => BrokerError::NotFound(format!("topic {topic:?} does not exist")),
            _ => failed("the cluster", error),
        }
    }
}

fn key(name: &str) -> String {
    format!("topic.{name}")
}

fn encode(record: &TopicRecord) -> bytes::Bytes {
    rmp_serde::to_vec_named(record)
        .expect("topic settings serialize")
        .into()
}

/// The partition streams' duplicate window: the topic's (0 is JetStream's
/// default of 2 minutes; ids are then not sent, so nothing is deduplicated).
fn window(spec: &TopicSpec) -> Duration {
    Duration::from_millis(spec.dedup_window_ms)
}

/// A cluster failure, told to callers as unavailability (503): JetStream
/// was unreachable, had no leader or refused; nothing is known to be lost.
fn failed(what: &'static str, error: impl ToString) -> BrokerError {
    BrokerError::Unavailable(ClusterError::new(what, error).to_string())
}

fn busy(name: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "topic {name:?} is being changed by other hosts; try again"
    ))
}
