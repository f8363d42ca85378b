//! Progress of one subscription on one partition: a watermark (every offset
//! below it is finished) plus the finished offsets above it, and the coalesced
//! store changes that persist them.
//!
//! Changes are written per flush, not per message: one watermark put per
//! partition, a done marker only for an offset still above the watermark at
//! flush time, and a point delete for each marker the watermark has passed.

use super::log::Topic;
use crate::store::Op;
use std::collections::BTreeSet;
use std::sync::Arc;

pub(crate) struct Source {
    pub(crate) topic: Arc<Topic>,
    pub(crate) partition: u32,
    /// Index of the topic among the subscription's topics.
    pub(crate) topic_index: usize,
    /// Next offset to read from the log.
    pub(crate) read_to: u64,
    /// Every offset below is finished.
    watermark: u64,
    /// Finished offsets at or above the watermark.
    done_above: BTreeSet<u64>,
    /// The watermark as last persisted.
    persisted_mark: u64,
    /// Done markers in the store (all at or above `persisted_mark`).
    persisted_done: BTreeSet<u64>,
    /// Offsets finished since the last flush.
    fresh_done: Vec<u64>,
}

impl Source {
    pub(crate) fn new(topic: Arc<Topic>, partition: u32, topic_index: usize) -> Self {
        Self {
            topic,
            partition,
            topic_index,
            read_to: 0,
            watermark: 0,
            done_above: BTreeSet::new(),
            persisted_mark: 0,
            persisted_done: BTreeSet::new(),
            fresh_done: Vec::new(),
        }
    }

    /// Resume from a persisted watermark (before [`Source::restore_done`]).
    pub(crate) fn restore_watermark(&mut self, watermark: u64) {
        self.watermark = watermark;
        self.persisted_mark = watermark;
        self.read_to = watermark;
    }

    /// Resume a persisted done marker.
    pub(crate) fn restore_done(&mut self, offset: u64) {
        if offset >= self.watermark {
            self.done_above.insert(offset);
            self.persisted_done.insert(offset);
        }
    }

    /// The watermark: every offset below it is finished.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Messages below `first` are gone (deleted by retention, so every
    /// subscription had finished them, or older than this subscription):
    /// count them as finished and read on from `first`.
    pub(crate) fn skip_to(&mut self, first: u64) {
        self.read_to = self.read_to.max(first);
        if self.watermark < first {
            self.watermark = first;
            self.done_above = self.done_above.split_off(&first);
            while self.done_above.remove(&self.watermark) {
                self.watermark += 1;
            }
        }
    }

    pub(crate) fn is_done(&self, offset: u64) -> bool {
        offset < self.watermark || self.done_above.contains(&offset)
    }

    /// Mark `offset` finished; advance the watermark over contiguous finished offsets.
    pub(crate) fn finish(&mut self, offset: u64) {
        if offset == self.watermark {
            self.watermark += 1;
            while self.done_above.remove(&self.watermark) {
                self.watermark += 1;
            }
        } else if offset > self.watermark {
            self.done_above.insert(offset);
            self.fresh_done.push(offset);
        }
    }

    /// Durable messages not yet finished.
    pub(crate) fn lag(&self) -> u64 {
        self.topic
            .head(self.partition)
            .saturating_sub(self.watermark)
            .saturating_sub(self.done_above.len() as u64)
    }

    /// Append the store changes that persist progress since the last call.
    pub(crate) fn persist(&mut self, subscription: &str, ops: &mut Vec<Op>) {
        if self.watermark != self.persisted_mark {
            let passed: Vec<u64> = self
                .persisted_done
                .range(..self.watermark)
                .copied()
                .collect();
            for offset in &passed {
                self.persisted_done.remove(offset);
            }
            ops.push(Op::SetWatermark {
                subscription: subscription.to_string(),
                topic: self.topic.name.clone(),
                partition: self.partition,
                offset: self.watermark,
                clear_done: passed,
            });
            self.persisted_mark = self.watermark;
        }
        for offset in std::mem::take(&mut self.fresh_done) {
            if offset >= self.watermark && self.persisted_done.insert(offset) {
                ops.push(Op::MarkDone {
                    subscription: subscription.to_string(),
                    topic: self.topic.name.clone(),
                    partition: self.partition,
                    offset,
                });
            }
        }
    }
}
