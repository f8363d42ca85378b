//! The newest durable messages of each partition, kept in memory so that a
//! runner following the head takes them from there instead of reading them
//! back from the store (a hand-off to the blocking pool, a RocksDB iterator
//! and a decode per message, for every subscription).
//!
//! Each partition keeps a contiguous run of offsets, at most
//! [`PER_PARTITION`] messages and [`PER_PARTITION_BYTES`] of them, and all
//! partitions of the host together at most [`HOST_BYTES`]: past that, new
//! messages are simply not kept and readers go to the store. A reader asks
//! for a range; anything the run does not hold from its first offset on is
//! a miss. Only topics someone follows keep messages.

use crate::store::StoredMessage;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Most messages kept per partition.
const PER_PARTITION: usize = 256;
/// Most bytes (payload, key, id and headers) kept per partition.
const PER_PARTITION_BYTES: usize = 1 << 20;
/// Most bytes kept by every partition of the host together.
const HOST_BYTES: usize = 64 << 20;

/// Bytes kept host-wide.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// One partition's newest messages: offsets `start..start + messages.len()`.
#[derive(Default)]
pub(crate) struct Recent(Mutex<Run>);

#[derive(Default)]
struct Run {
    start: u64,
    messages: VecDeque<(Arc<StoredMessage>, usize)>,
    bytes: usize,
}

fn size(message: &StoredMessage) -> usize {
    message.payload.len()
        + message.id.len()
        + message.key.as_ref().map_or(0, String::len)
        + message
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
}

impl Recent {
    /// Messages at offsets `first..` became durable. A run that does not
    /// continue at `first` (an earlier batch settled later) starts again.
    pub(crate) fn extend(&self, first: u64, messages: &[Arc<StoredMessage>]) {
        let mut run = self.0.lock().expect("recent messages lock");
        let end = run.start + run.messages.len() as u64;
        if !run.messages.is_empty() && first + (messages.len() as u64) <= run.start {
            // An earlier batch settled after a later one: keep the newer.
            return;
        }
        if first != end {
            run.clear();
            run.start = first;
        }
        for message in messages {
            let bytes = size(message);
            // Make room in this partition first, then in the host's budget.
            while !run.messages.is_empty()
                && (run.messages.len() >= PER_PARTITION || run.bytes + bytes > PER_PARTITION_BYTES)
            {
                run.pop_front();
            }
            let kept = KEPT.fetch_add(bytes, Ordering::Relaxed);
            if bytes > PER_PARTITION_BYTES || kept + bytes > HOST_BYTES {
                // Not kept: the run cannot go on past a gap.
                KEPT.fetch_sub(bytes, Ordering::Relaxed);
                run.clear();
                run.start = u64::MAX;
                return;
            }
            run.bytes += bytes;
            run.messages.push_back((message.clone(), bytes));
        }
    }

    /// Keep nothing (until the next batch starts a run).
    pub(crate) fn clear(&self) {
        self.0.lock().expect("recent messages lock").clear();
    }

    /// Up to `limit` messages from offset `from` on, if the run holds
    /// `from`; else nothing (read the store).
    pub(crate) fn read(&self, from: u64, limit: usize) -> Vec<(u64, Arc<StoredMessage>)> {
        let run = self.0.lock().expect("recent messages lock");
        let Some(skip) = from
            .checked_sub(run.start)
            .and_then(|s| usize::try_from(s).ok())
        else {
            return Vec::new();
        };
        run.messages
            .iter()
            .skip(skip)
            .take(limit)
            .enumerate()
            .map(|(i, (m, _))| (from + i as u64, m.clone()))
            .collect()
    }
}

impl Run {
    fn pop_front(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
            KEPT.fetch_sub(bytes, Ordering::Relaxed);
            self.start += 1;
        }
    }

    fn clear(&mut self) {
        KEPT.fetch_sub(self.bytes, Ordering::Relaxed);
        self.messages.clear();
        self.bytes = 0;
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u64, payload: usize) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            id: format!("m{n}"),
            key: None,
            payload: vec![0; payload],
            headers: Vec::new(),
            timestamp_ms: 0,
            deliver_at_ms: None,
        })
    }

    fn ids(read: &[(u64, Arc<StoredMessage>)]) -> Vec<(u64, String)> {
        read.iter().map(|(o, m)| (*o, m.id.clone())).collect()
    }

    #[test]
    fn a_run_serves_what_it_holds_and_misses_the_rest() {
        let recent = Recent::default();
        assert!(recent.read(0, 10).is_empty(), "empty");
        let batch: Vec<_> = (0..5).map(|n| message(n, 10)).collect();
        recent.extend(0, &batch);
        assert_eq!(
            ids(&recent.read(2, 2)),
            vec![(2, "m2".into()), (3, "m3".into())]
        );
        assert_eq!(ids(&recent.read(3, 10)).len(), 2, "up to the end");
        assert!(recent.read(5, 10).is_empty(), "past the end");
        // A later batch continues the run.
        recent.extend(5, &[message(5, 10)]);
        assert_eq!(ids(&recent.read(5, 1)), vec![(5, "m5".into())]);
        // A batch that does not continue it starts it again: older offsets
        // are misses, never wrong messages.
        recent.extend(9, &[message(9, 10)]);
        assert!(recent.read(5, 10).is_empty());
        assert!(recent.read(8, 10).is_empty());
        assert_eq!(ids(&recent.read(9, 10)), vec![(9, "m9".into())]);
        // An earlier batch that settles after it leaves the newer run.
        recent.extend(7, &[message(7, 10), message(8, 10)]);
        assert!(recent.read(7, 10).is_empty());
        assert_eq!(ids(&recent.read(9, 10)), vec![(9, "m9".into())]);
    }

    #[test]
    fn a_run_keeps_only_the_newest_within_its_bounds() {
        let recent = Recent::default();
        let batch: Vec<_> = (0..PER_PARTITION as u64 + 10)
            .map(|n| message(n, 1))
            .collect();
        recent.extend(0, &batch);
        assert!(recent.read(9, 1).is_empty(), "the oldest went");
        assert_eq!(recent.read(10, usize::MAX).len(), PER_PARTITION);
        // Large messages: bounded by bytes.
        let big = PER_PARTITION_BYTES / 4;
        let start = PER_PARTITION as u64 + 10;
        let batch: Vec<_> = (start..start + 8).map(|n| message(n, big)).collect();
        recent.extend(start, &batch);
        // Three of a quarter of the bound each, with their ids, fit; four
        // do not.
        assert!(recent.read(start + 4, 10).is_empty(), "older ones went");
        assert_eq!(
            ids(&recent.read(start + 5, 10)),
            (start + 5..start + 8)
                .map(|n| (n, format!("m{n}")))
                .collect::<Vec<_>>()
        );
        // One message over the bound is not kept, and breaks the run.
        recent.extend(start + 8, &[message(start + 8, PER_PARTITION_BYTES + 1)]);
        assert!(recent.read(start + 7, 10).is_empty());
        assert!(recent.read(start + 8, 10).is_empty());
        recent.extend(start + 9, &[message(start + 9, 1)]);
        assert_eq!(recent.read(start + 9, 10).len(), 1);
        recent.clear();
        assert!(recent.read(start + 9, 10).is_empty(), "cleared");
        recent.extend(start + 10, &[message(start + 10, 1)]);
        assert_eq!(recent.read(start + 10, 10).len(), 1, "a new run");
    }
}
