//! The changes a runner collects between commits, written as one atomic
//! batch: progress, retry and redrive records, ledger entries, dead letters,
//! kv writes, publications and the counters.

use crate::broker::log::NewMessage;
use crate::broker::progress::Source;
use crate::store::{Counters, Op};
use crate::telemetry::Span;
use std::collections::BTreeMap;

pub(super) struct Batch {
    /// Store changes, in the order they were made.
    ops: Vec<Op>,
    /// Acked attempts' publications, by topic.
    outputs: BTreeMap<String, Vec<NewMessage>>,
    /// Commit spans of the attempts whose results the batch records (only
    /// while traces are exported).
    spans: Vec<Span>,
    /// The last kv commit in the batch.
    kv_commit: Option<u64>,
    /// The totals last taken for writing.
    counted: Counters,
    /// The most publications to one topic in the last batch taken: room
    /// made at once for the next (a busy forwarder's batches are alike).
    outputs_per_topic: usize,
}

/// One batch, taken for writing.
pub(super) struct Taken {
    pub(super) ops: Vec<Op>,
    pub(super) outputs: BTreeMap<String, Vec<NewMessage>>,
    pub(super) spans: Vec<Span>,
    pub(super) kv_commit: Option<u64>,
}

impl Batch {
    /// An empty batch; `counters` are the totals already stored.
    pub(super) fn new(counters: Counters) -> Self {
        Self {
            ops: Vec::new(),
            outputs: BTreeMap::new(),
            spans: Vec::new(),
            kv_commit: None,
            counted: counters,
            outputs_per_topic: 0,
        }
    }

    pub(super) fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// The store changes so far, for a writer that appends its own (kv).
    pub(super) fn ops_mut(&mut self) -> &mut Vec<Op> {
        &mut self.ops
    }

    pub(super) fn publish(&mut self, topic: String, message: NewMessage) {
        let room = self.outputs_per_topic;
        self.outputs
            .entry(topic)
            .or_insert_with(|| Vec::with_capacity(room))
            .push(message);
    }

    pub(super) fn span(&mut self, span: Span) {
        self.spans.push(span);
    }

    /// The batch carries the kv commit numbered `seq` (the latest so far).
    pub(super) fn kv_committed(&mut self, seq: u64) {
        self.kv_commit = Some(seq);
    }

    /// Take what was collected, with each source's progress coalesced into
    /// one record and the counters when anything changed (they can change
    /// alone: an at-most-once ack's progress was written at dispatch).
    /// `None` if there is nothing to write.
    pub(super) fn take(
        &mut self,
        subscription: &str,
        sources: &mut [Source],
        counters: Counters,
    ) -> Option<Taken> {
        self.collect(subscription, sources, counters, false)
    }

    /// Take the last batch of a stopping runner: as [`Batch::take`], with
    /// the counters written in any case.
    pub(super) fn take_last(
        &mut self,
        subscription: &str,
        sources: &mut [Source],
        counters: Counters,
    ) -> Option<Taken> {
        self.collect(subscription, sources, counters, true)
    }

    fn collect(
        &mut self,
        subscription: &str,
        sources: &mut [Source],
        counters: Counters,
        with_counters: bool,
    ) -> Option<Taken> {
        let mut ops = std::mem::take(&mut self.ops);
        for source in sources {
            source.persist(subscription, &mut ops);
        }
        if with_counters || !ops.is_empty() || counters != self.counted {
            ops.push(Op::PutCounters {
                subscription: subscription.to_string(),
                counters,
            });
            self.counted = counters;
        }
        let outputs = std::mem::take(&mut self.outputs);
        self.outputs_per_topic = outputs.values().map(Vec::len).max().unwrap_or(0);
        if ops.is_empty() && outputs.is_empty() {
            return None;
        }
        Some(Taken {
            ops,
            outputs,
            spans: std::mem::take(&mut self.spans),
            kv_commit: self.kv_commit.take(),
        })
    }
}
