//! Retention: a message is deleted once every subscription of its topic has
//! finished with it and it is older than the topic's `retention_ms`.
//!
//! A background task trims each partition's oldest messages (one range
//! delete), then flushes and compacts that range so the disk space is
//! reclaimed, keeping the data directory bounded under steady load. Its
//! once-a-second tick also samples the subscriptions' acknowledgement rates,
//! and every fifth measures the topics' sizes.

use super::log::{Log, Topic};
use super::subscriptions::Subscriptions;
use crate::store::{Durability, Op};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often partitions are checked: 1 s keeps the backlog of finished
/// messages small at a cost of one log read per partition.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Every how many sweeps the topics' sizes are measured (5 s).
const MEASURE_EVERY: u64 = 5;
/// Most messages examined per partition per sweep; bounds one sweep's work.
const SWEEP_CHUNK: usize = 20_000;

/// Sweep until `stop` turns true.
pub(crate) async fn run(
    log: Arc<Log>,
    subscriptions: Arc<Subscriptions>,
    mut stop: watch::Receiver<bool>,
) {
    for tick in 0u64.. {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.changed() => return,
        }
        subscriptions.sample_rates();
        if tick % MEASURE_EVERY == 0 {
            let measured = log.clone();
            let _ = tokio::task::spawn_blocking(move || measured.measure()).await;
        }
        for topic in log.all() {
            for partition in 0..topic.partitions() {
                if let Err(e) = sweep(&log, &subscriptions, &topic, partition).await {
                    tracing::error!(error = %e, topic = %topic.name, partition, "retention sweep failed");
                }
            }
        }
    }
}

async fn sweep(
    log: &Arc<Log>,
    subscriptions: &Subscriptions,
    topic: &Arc<Topic>,
    partition: u32,
) -> Result<(), super::BrokerError> {
    let first = topic.first(partition);
    let limit = subscriptions
        .min_watermark(&topic.name, partition)
        .unwrap_or_else(|| topic.head(partition));
    if first >= limit {
        return Ok(());
    }
    let cutoff = log
        .clock()
        .now_ms()
        .saturating_sub(topic.spec().retention_ms);
    let store = log.store().clone();
    let name = topic.name.clone();
    // Ids and timestamps only (a sweep holds no payloads), read on the
    // blocking pool.
    let rows = tokio::task::spawn_blocking(move || {
        // Timestamps grow along a partition: if the oldest message is too
        // young, so is everything after it.
        let oldest = store.read_log_heads(&name, partition, first, 1)?;
        if oldest.first().is_none_or(|(_, m)| m.timestamp_ms > cutoff) {
            return Ok(Vec::new());
        }
        let count = ((limit - first) as usize).min(SWEEP_CHUNK);
        store.read_log_heads(&name, partition, first, count)
    })
    .await
    .map_err(|e| super::BrokerError::Store(e.to_string()))??;
    let store = log.store().clone();
    let mut cut = first;
    for (offset, message) in &rows {
        if *offset >= limit || message.timestamp_ms > cutoff {
            break;
        }
        cut = offset + 1;
    }
    if cut == first {
        return Ok(());
    }
    // The subscriptions' ledger entries of these messages go with them.
    let mut ops = vec![Op::TrimLog {
        topic: topic.name.clone(),
        partition,
        below: cut,
    }];
    for subscription in subscriptions.names_for(&topic.name) {
        for (offset, message) in rows.iter().take((cut - first) as usize) {
            ops.push(Op::DeleteLedger {
                subscription: subscription.clone(),
                id: message.id.clone(),
                topic: topic.name.clone(),
                partition,
                offset: *offset,
                entry: true,
            });
        }
    }
    let Some(write) = topic.submit_unless_deleted(&store, ops, Durability::Buffered) else {
        return Ok(());
    };
    write.await?;
    topic.set_first(partition, cut);
    let name = topic.name.clone();
    tokio::task::spawn_blocking(move || store.reclaim_log(&name, partition, cut))
        .await
        .map_err(|e| super::BrokerError::Store(e.to_string()))??;
    tracing::debug!(topic = %topic.name, partition, below = cut, "retention trimmed the log");
    Ok(())
}
