//! Progress of one subscription on one partition: a watermark (every offset
//! below it is finished) plus the finished offsets above it, kept as ranges,
//! and the store change that persists them.
//!
//! Changes are written per flush, not per message: one record per changed
//! partition holding the watermark and the finished ranges above it. Its size
//! follows the gaps between finished offsets, which are messages still held
//! in memory (bounded by the runner's window), not the number finished: a
//! message retried for an hour while millions after it finish costs one range.

use super::log::Topic;
use crate::store::Op;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) struct Source {
    pub(crate) topic: Arc<Topic>,
    /// The topic's name, shared by the deliveries of its messages.
    pub(crate) name: Arc<str>,
    pub(crate) partition: u32,
    /// Index of the topic among the subscription's topics.
    pub(crate) topic_index: usize,
    /// Next offset to read from the log.
    pub(crate) read_to: u64,
    /// Every offset below is finished.
    watermark: u64,
    /// Finished offsets above the watermark: start → end (exclusive). Ranges
    /// never touch each other or the watermark.
    done_above: BTreeMap<u64, u64>,
    /// Offsets in `done_above`.
    done_count: u64,
    /// Changed since the last persist.
    dirty: bool,
    /// Done markers an earlier host kept, one key per offset: removed by the
    /// first persist, whose record covers them.
    legacy_done: Vec<u64>,
}

impl Source {
    pub(crate) fn new(topic: Arc<Topic>, partition: u32, topic_index: usize) -> Self {
        Self {
            name: topic.name.as_str().into(),
            topic,
            partition,
            topic_index,
            read_to: 0,
            watermark: 0,
            done_above: BTreeMap::new(),
            done_count: 0,
            dirty: false,
            legacy_done: Vec::new(),
        }
    }

    /// Resume from a persisted record (before [`Source::restore_done`]).
    pub(crate) fn restore(&mut self, watermark: u64, done: &[(u64, u64)]) {
        self.watermark = watermark;
        self.read_to = watermark;
        for &(from, to) in done {
            let from = from.max(watermark);
            if to > from {
                self.done_above.insert(from, to);
                self.done_count += to - from;
            }
        }
        self.absorb();
        self.dirty = false;
    }

    /// Resume a done marker an earlier host persisted.
    pub(crate) fn restore_done(&mut self, offset: u64) {
        self.legacy_done.push(offset);
        if offset >= self.watermark {
            self.finish(offset);
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
            self.dirty = true;
            let below: Vec<(u64, u64)> = self
                .done_above
                .range(..first)
                .map(|(&from, &to)| (from, to))
                .collect();
            for (from, to) in below {
                self.done_above.remove(&from);
                self.done_count -= to - from;
                if to > first {
                    self.done_above.insert(first, to);
                    self.done_count += to - first;
                }
            }
            self.absorb();
        }
    }

    pub(crate) fn is_done(&self, offset: u64) -> bool {
        offset < self.watermark
            || self
                .done_above
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, &to)| offset < to)
    }

    /// Mark `offset` finished; advance the watermark over contiguous finished offsets.
    pub(crate) fn finish(&mut self, offset: u64) {
        if self.is_done(offset) {
            return;
        }
        self.dirty = true;
        if offset == self.watermark {
            self.watermark += 1;
            self.absorb();
        } else {
            self.insert(offset);
        }
    }

    /// Add an offset above the watermark, merging it with its neighbours.
    fn insert(&mut self, offset: u64) {
        let before = self
            .done_above
            .range(..offset)
            .next_back()
            .filter(|(_, &to)| to == offset)
            .map(|(&from, _)| from);
        let after = self.done_above.remove(&(offset + 1));
        let from = before.unwrap_or(offset);
        let to = after.unwrap_or(offset + 1);
        self.done_above.insert(from, to);
        self.done_count += 1;
    }

    /// Move the watermark over a finished range that starts at it.
    fn absorb(&mut self) {
        if let Some(to) = self.done_above.remove(&self.watermark) {
            self.done_count -= to - self.watermark;
            self.watermark = to;
        }
    }

    /// Durable messages not yet finished.
    #[cfg(test)]
    pub(crate) fn lag(&self) -> u64 {
        self.lag_at(self.topic.head(self.partition))
    }

    /// Messages below `head` not yet finished.
    pub(crate) fn lag_at(&self, head: u64) -> u64 {
        head.saturating_sub(self.watermark)
            .saturating_sub(self.done_count)
    }

    /// Append the store change that persists progress since the last call.
    pub(crate) fn persist(&mut self, subscription: &str, ops: &mut Vec<Op>) {
        if !self.dirty && self.legacy_done.is_empty() {
            return;
        }
        ops.push(Op::SetProgress {
            subscription: subscription.to_string(),
            topic: self.topic.name.clone(),
            partition: self.partition,
            watermark: self.watermark,
            done: self.done_above.iter().map(|(&f, &t)| (f, t)).collect(),
            clear_done: std::mem::take(&mut self.legacy_done),
        });
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DoneRanges;

    fn source(head: u64) -> Source {
        Source::new(Arc::new(Topic::with_head("t", 1, head)), 0, 0)
    }

    /// The record `persist` writes now: (watermark, ranges, legacy markers cleared).
    fn record(source: &mut Source) -> Option<(u64, DoneRanges, Vec<u64>)> {
        let mut ops = Vec::new();
        source.persist("s", &mut ops);
        assert!(ops.len() <= 1, "one record per partition");
        ops.pop().map(|op| match op {
            Op::SetProgress {
                watermark,
                done,
                clear_done,
                ..
            } => (watermark, done, clear_done),
            other => panic!("unexpected op {other:?}"),
        })
    }

    #[test]
    fn finished_offsets_merge_into_ranges_and_the_watermark_absorbs_them() {
        let mut s = source(100);
        for offset in [5, 3, 4, 9, 7, 8] {
            s.finish(offset);
        }
        assert_eq!(s.watermark(), 0);
        assert_eq!(record(&mut s), Some((0, vec![(3, 6), (7, 10)], vec![])));
        assert_eq!(record(&mut s), None, "nothing changed since");
        assert!(s.is_done(4) && s.is_done(9) && !s.is_done(6) && !s.is_done(10));
        assert_eq!(s.lag(), 100 - 6);
        for offset in [0, 1, 2] {
            s.finish(offset);
        }
        assert_eq!(s.watermark(), 6, "0..3 and the range 3..6 are passed");
        s.finish(6);
        assert_eq!(s.watermark(), 10);
        s.finish(4);
        assert_eq!(s.lag(), 90, "finishing again counts once");
        assert_eq!(record(&mut s), Some((10, vec![], vec![])));
    }

    #[test]
    fn a_held_message_costs_one_range_however_many_finish_after_it() {
        let mut s = source(1_000_001);
        for offset in 1..=1_000_000 {
            s.finish(offset);
        }
        assert_eq!(record(&mut s), Some((0, vec![(1, 1_000_001)], vec![])));
        assert_eq!(s.lag(), 1);
    }

    #[test]
    fn skipped_offsets_count_as_finished_and_split_ranges() {
        let mut s = source(50);
        for offset in [2, 3, 10, 11, 12, 20] {
            s.finish(offset);
        }
        s.skip_to(11);
        assert_eq!(s.watermark(), 13, "11 and 12 were finished");
        assert_eq!(record(&mut s), Some((13, vec![(20, 21)], vec![])));
        assert_eq!(s.lag(), 50 - 14);
    }

    #[test]
    fn restores_ranges_and_clears_an_earlier_hosts_markers_once() {
        let mut s = source(40);
        s.restore(4, &[(6, 8), (9, 10)]);
        s.restore_done(20);
        s.restore_done(2);
        assert!(s.is_done(7) && s.is_done(20) && !s.is_done(8));
        assert_eq!(
            record(&mut s),
            Some((4, vec![(6, 8), (9, 10), (20, 21)], vec![20, 2]))
        );
        assert_eq!(record(&mut s), None, "the markers are gone");
        s.finish(4);
        s.finish(5);
        s.finish(8);
        assert_eq!(s.watermark(), 10);
        assert_eq!(record(&mut s), Some((10, vec![(20, 21)], vec![])));
    }
}
