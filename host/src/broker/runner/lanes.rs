//! The runner's scheduler: ordering lanes of pending messages, the lanes
//! whose head may run now, and timers for the heads due later (retries,
//! delayed messages, a plugin looked for again).
//!
//! A lane is *busy* from the moment its head is scheduled until that head is
//! finished (acked, dead-lettered, dropped): while busy it is in `ready`, in
//! `timers` or with a worker, never in two of them.

use super::{LaneKey, Pending};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

#[derive(Default)]
struct Lane {
    queue: VecDeque<Pending>,
    /// The head is runnable, waiting for its timer or in flight.
    busy: bool,
}

#[derive(Default)]
pub(super) struct Lanes {
    lanes: HashMap<LaneKey, Lane>,
    ready: VecDeque<LaneKey>,
    timers: BinaryHeap<Reverse<(u64, LaneKey)>>,
    /// Messages held: queued in lanes or in flight.
    held: usize,
}

impl Lanes {
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Queue a message at the back of its lane. A lane that was idle gets
    /// its head scheduled at the message's due time.
    pub(super) fn push(&mut self, key: LaneKey, pending: Pending, now: u64) {
        self.held += 1;
        let lane = self.lanes.entry(key.clone()).or_default();
        lane.queue.push_back(pending);
        if lane.queue.len() == 1 && !lane.busy {
            lane.busy = true;
            let due = lane.queue[0].due_ms;
            self.schedule(key, due, now);
        }
    }

    /// Make a busy lane's head runnable now or at `due`.
    pub(super) fn schedule(&mut self, key: LaneKey, due: u64, now: u64) {
        if due <= now {
            self.ready.push_back(key);
        } else {
            self.timers.push(Reverse((due, key)));
        }
    }

    /// Make every lane whose timer is due at `now` runnable.
    pub(super) fn fire_timers(&mut self, now: u64) {
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Reverse((_, key)) = self.timers.pop().expect("peeked");
            self.ready.push_back(key);
        }
    }

    /// When the earliest timer is due, if any is set.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((due, _))| *due)
    }

    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next runnable lane, with its head and the messages behind it.
    pub(super) fn pop_ready(&mut self) -> Option<(LaneKey, &mut VecDeque<Pending>)> {
        loop {
            let key = self.ready.pop_front()?;
            if self.lanes.get(&key).is_some_and(|l| !l.queue.is_empty()) {
                let lane = self.lanes.get_mut(&key).expect("checked above");
                return Some((key, &mut lane.queue));
            }
        }
    }

    /// Hold every runnable lane until `until`.
    pub(super) fn defer_ready(&mut self, until: u64) {
        for key in self.ready.drain(..) {
            self.timers.push(Reverse((until, key)));
        }
    }

    /// A lane's head.
    pub(super) fn head(&self, key: &LaneKey) -> Option<&Pending> {
        self.lanes.get(key).and_then(|l| l.queue.front())
    }

    pub(super) fn head_mut(&mut self, key: &LaneKey) -> Option<&mut Pending> {
        self.lanes.get_mut(key).and_then(|l| l.queue.front_mut())
    }

    /// Run a lane's head again now (it never ran, or must run again).
    pub(super) fn retry_now(&mut self, key: LaneKey) {
        self.ready.push_back(key);
    }

    /// Take a lane's finished head. Returns it and the next head's due time;
    /// a lane left empty is gone.
    pub(super) fn finish_head(&mut self, key: &LaneKey) -> Option<(Pending, Option<u64>)> {
        let lane = self.lanes.get_mut(key)?;
        let head = lane.queue.pop_front()?;
        self.held -= 1;
        let next_due = lane.queue.front().map(|p| p.due_ms);
        if next_due.is_none() {
            self.lanes.remove(key);
        }
        Some((head, next_due))
    }
}
