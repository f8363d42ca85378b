//! Retention in cluster mode (docs/cluster.md, C12): a message is trimmed
//! once every subscription of its topic has committed it as finished and
//! it is older than the topic's `retention_ms`, as in the embedded mode.
//!
//! Every 5 beats (10 s), each host stores the committed watermarks of the
//! subscriptions it runs (read from its store, which holds only what their
//! journals hold: never ahead of what a host taking over would replay).
//! Every 15 beats (30 s), the host placement picks for retention trims
//! each partition below the lowest watermark of the subscriptions
//! consuming it — a subscription whose watermarks are not stored yet, or
//! are of an earlier incarnation, holds its topics whole — and below the
//! first message younger than the retention (found by bisection:
//! timestamps grow along a partition).

use super::shared::{ListedSubscription, SharedBackend, SharedLog, Watermarks};
use super::spec::topic_matches;
use super::BrokerError;
use std::collections::HashMap;

/// Trim every topic's partitions as far as retention and the watermarks
/// of `subscriptions` (every one there is) allow; `now_ms` is the time.
pub(crate) async fn sweep(
    backend: &SharedBackend,
    subscriptions: &[ListedSubscription],
    now_ms: u64,
) -> Result<(), BrokerError> {
    let log = &*backend.log;
    let marks: HashMap<String, Watermarks> = backend
        .subscriptions
        .watermarks()
        .await?
        .into_iter()
        .collect();
    for (topic, spec) in log.list().await? {
        let consumers: Vec<_> = subscriptions
            .iter()
            .filter(|(_, record, _)| topic_matches(&record.spec.topic, &topic))
            .collect();
        let cutoff = now_ms.saturating_sub(spec.retention_ms);
        for partition in 0..spec.partitions {
            let stored = log.partition(&topic, partition).await?;
            let mut limit = stored.next;
            for (name, record, _) in &consumers {
                let finished = marks
                    .get(name)
                    .filter(|m| m.incarnation == record.incarnation)
                    .and_then(|m| m.topics.get(&topic))
                    .and_then(|w| w.get(partition as usize))
                    .copied()
                    .unwrap_or(0);
                limit = limit.min(finished);
            }
            let cut = first_younger(log, &topic, partition, stored.first, limit, cutoff).await?;
            if cut > stored.first {
                log.trim(&topic, partition, cut).await?;
                tracing::debug!(topic, partition, below = cut, "messages trimmed");
            }
        }
    }
    Ok(())
}

/// The first offset in `from..limit` of a message stored after `cutoff`
/// (`limit` if none is).
async fn first_younger(
    log: &dyn SharedLog,
    topic: &str,
    partition: u32,
    from: u64,
    limit: u64,
    cutoff: u64,
) -> Result<u64, BrokerError> {
    if from >= limit {
        return Ok(from);
    }
    // Timestamps grow along a partition: if the oldest message is too
    // young, so is everything after it (the usual case: one read).
    match log.read(topic, partition, from, 1).await?.first() {
        Some(oldest) if oldest.offset < limit && oldest.timestamp_ms <= cutoff => {}
        _ => return Ok(from),
    }
    let (mut low, mut high) = (from, limit);
    while low < high {
        let middle = low + (high - low) / 2;
        match log.read(topic, partition, middle, 1).await?.first() {
            Some(entry) if entry.offset < high && entry.timestamp_ms <= cutoff => {
                low = entry.offset + 1;
            }
            _ => high = middle,
        }
    }
    Ok(low)
}
