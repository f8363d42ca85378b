//! The broker's shared log on JetStream ([`crate::broker::shared::SharedLog`]):
//! topics' settings in the settings bucket ([`super::records`], key
//! `topic.<name>`), their partitions as streams ([`super::log`]).
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
use super::records::{failed, Records};
use super::ClusterError;
use crate::broker::shared::{
    SharedAppended, SharedEntry, SharedLog, SharedMessage, SharedPartition,
};
use crate::broker::{BrokerError, TopicSpec};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often an update that lost a compare-and-set race is tried again
/// before the caller is told to retry.
const RACES: usize = 16;

/// A topic's entry in the settings bucket.
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
    records: Records,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").finish_non_exhaustive()
    }
}

impl Topics {
    /// Topics on the cluster `client` is connected to, their settings in
    /// `records`, each partition with `replicas` copies.
    pub(crate) fn new(client: async_nats::Client, records: Records, replicas: usize) -> Self {
        Self {
            log: TopicLog::new(client.clone(), replicas),
            client,
            records,
        }
    }

    /// The topic's record and its revision, unless absent or deleted.
    async fn record(&self, name: &str) -> Result<Option<(TopicRecord, u64)>, BrokerError> {
        self.records.get(&key(name)).await
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
        let created = self.records.put(&key(name), &record, 0).await?.is_some();
        if created {
            tracing::info!(topic = name, ?spec, "topic created in the cluster");
        }
        Ok(created)
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
        // the topic again must not lose it (a refusal says another host
        // changed it since, and owns the name now).
        self.records.delete(&key(name), revision).await?;
        Ok(())
    }
}

impl SharedLog for Topics {
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, TopicSpec)>, BrokerError>> {
        Box::pin(async move {
            let all: Vec<(String, TopicRecord, u64)> = self.records.all(TOPICS).await?;
            Ok(all
                .into_iter()
                .filter(|(_, record, _)| !record.deleting)
                .map(|(name, record, _)| (name, record.spec))
                .collect())
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
                if self
                    .records
                    .put(&key(name), &updated, revision)
                    .await?
                    .is_some()
                {
                    tracing::info!(topic = name, ?spec, "topic settings changed");
                    return Ok(false);
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
                if let Some(marked) = self.records.put(&key(name), &record, revision).await? {
                    self.finish_delete(name, &record, marked).await?;
                    tracing::info!(topic = name, "topic deleted from the cluster");
                    return Ok(());
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
            match self.log.read(topic, partition, from, limit).await {
                Ok(stored) => Ok(entries(stored)),
                Err(e) => Err(self.explain(topic, partition, e).await),
            }
        })
    }

    fn scan<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SharedEntry>, BrokerError>> {
        Box::pin(async move {
            match self.log.scan(topic, partition, from, limit).await {
                Ok(stored) => Ok(entries(stored)),
                Err(e) => Err(self.explain(topic, partition, e).await),
            }
        })
    }

    fn trim<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        before: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            match self.log.trim(topic, partition, before).await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.explain(topic, partition, e).await),
            }
        })
    }

    fn reachable(&self) -> Result<(), String> {
        self.connected()
    }

    fn appends<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<futures_util::stream::BoxStream<'static, Option<u32>>, BrokerError>>
    {
        Box::pin(async move {
            // Core NATS sees every publish to the partitions' subjects,
            // which end in the partition.
            let subscriber = self
                .client
                .subscribe(super::log::all_subjects(topic))
                .await
                .map_err(|e| failed("watching a topic", e))?;
            Ok(futures_util::StreamExt::boxed(
                futures_util::StreamExt::map(subscriber, |message| {
                    message.subject.rsplit('.').next()?.parse().ok()
                }),
            ))
        })
    }

    fn head<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            match self.log.head(topic, partition).await {
                Ok(Some(head)) => Ok(head),
                // No message to read it from: the stream's state has it.
                Ok(None) => Ok(self.partition(topic, partition).await?.next),
                Err(e) => Err(self.explain(topic, partition, e).await),
            }
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

/// Where topics' records are kept, by name.
const TOPICS: &str = "topic.";

fn key(name: &str) -> String {
    format!("{TOPICS}{name}")
}

/// The partition streams' duplicate window: the topic's (0 is JetStream's
/// default of 2 minutes; ids are then not sent, so nothing is deduplicated).
fn window(spec: &TopicSpec) -> Duration {
    Duration::from_millis(spec.dedup_window_ms)
}

fn busy(name: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "topic {name:?} is being changed by other hosts; try again"
    ))
}

/// Stored messages as the broker reads them.
fn entries(stored: Vec<super::log::Stored>) -> Vec<SharedEntry> {
    stored
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
        .collect()
}
