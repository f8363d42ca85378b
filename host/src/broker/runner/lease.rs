//! The lease desk of a pull subscription: where its runner's jobs wait for
//! consumers outside the host, who lease them over HTTP and settle them.
//!
//! The runner dispatches to the desk exactly as it dispatches to worker
//! threads — lanes, ordering, `concurrency`, retries, dead letters and the
//! ledger are the same engine — and a settle or an expired lease comes back
//! to it as the job's result. A lease id is opaque and unforgeable: the job's
//! dispatch number and attempt, MAC'd with a key drawn when the runner
//! started, so a made-up id, one from before a restart, or one of an earlier
//! attempt of the message is refused (`unknown`) per item.

use super::LaneKey;
use crate::broker::worker::{Job, JobDone};
use crate::broker::Clock;
use crate::runtime::{Delivery, Outcome};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc::UnboundedSender, Notify};

/// Most messages one lease call hands out.
pub const MAX_LEASE_BATCH: usize = 1000;
/// Longest a lease call waits for a message: 20 s, as SQS's long poll.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Settled or expired leases remembered, so a repeated settle gets the same
/// answer instead of `unknown`.
const REMEMBERED: usize = 65_536;
/// Bytes of MAC in a lease id.
const MAC_BYTES: usize = 16;

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Lease {
    pub lease_id: String,
    /// When the lease ends unless settled or extended (ms since the Unix epoch).
    pub expires_ms: u64,
    pub message: Delivery,
}

/// What a consumer says of one leased message.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    Ack,
    Retry {
        reason: String,
        delay_ms: Option<u64>,
    },
    DeadLetter(String),
    Extend(Duration),
}

/// What became of one settle item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    Retried,
    DeadLettered,
    Extended,
    /// The lease ran out before this settle; the message was retried.
    Expired,
    /// Not a lease of this subscription, or one already settled differently.
    Unknown,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Acked => "acked",
            Settled::Retried => "retried",
            Settled::DeadLettered => "dead_lettered",
            Settled::Extended => "extended",
            Settled::Expired => "expired",
            Settled::Unknown => "unknown",
        }
    }
}

struct Leased {
    job: Job<LaneKey>,
    expires_ms: u64,
    started_ms: u64,
}

#[derive(Default)]
struct Inner {
    ready: VecDeque<Job<LaneKey>>,
    leased: HashMap<u64, Leased>,
    /// (expires_ms, seq) of every lease.
    expiry: BTreeSet<(u64, u64)>,
    /// How recent leases ended, by seq (bounded by [`REMEMBERED`]).
    ended: HashMap<u64, Settled>,
    ended_order: VecDeque<u64>,
}

impl Inner {
    fn remember(&mut self, seq: u64, how: Settled) {
        if self.ended.insert(seq, how).is_none() {
            self.ended_order.push_back(seq);
            if self.ended_order.len() > REMEMBERED {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }
}

pub(crate) struct LeaseDesk {
    subscription: String,
    key: [u8; 32],
    default_lease: Duration,
    clock: Clock,
    inner: Mutex<Inner>,
    /// Wakes lease calls waiting for a message.
    arrived: Notify,
    /// Wakes the expiry task when a lease is added or extended.
    changed: Notify,
    closed: AtomicBool,
    results: UnboundedSender<Vec<JobDone<LaneKey>>>,
}

impl LeaseDesk {
    pub(crate) fn new(
        subscription: &str,
        default_lease: Duration,
        clock: Clock,
        results: UnboundedSender<Vec<JobDone<LaneKey>>>,
    ) -> Arc<Self> {
        let desk = Arc::new(Self {
            subscription: subscription.to_string(),
            key: rand::random(),
            default_lease,
            clock,
            inner: Mutex::new(Inner::default()),
            arrived: Notify::new(),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
            results,
        });
        tokio::spawn(expire(desk.clone()));
        desk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lease desk lock")
    }

    /// Jobs the runner dispatched: ready to lease.
    pub(crate) fn offer(&self, jobs: Vec<Job<LaneKey>>) {
        self.lock().ready.extend(jobs);
        self.arrived.notify_waiters();
    }

    /// Lease up to `max` messages for `lease` (the subscription's default if
    /// `None`), waiting up to `wait` for the first.
    pub(crate) async fn lease(
        &self,
        max: usize,
        lease: Option<Duration>,
        wait: Duration,
    ) -> Vec<Lease> {
        let max = max.clamp(1, MAX_LEASE_BATCH);
        let lease = lease.unwrap_or(self.default_lease);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let leases = self.take(max, lease);
            if !leases.is_empty() || self.closed.load(Ordering::Acquire) {
                return leases;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn take(&self, max: usize, lease: Duration) -> Vec<Lease> {
        let now = self.clock.now_ms();
        let expires_ms = now + lease.as_millis() as u64;
        let mut inner = self.lock();
        let n = inner.ready.len().min(max);
        let mut out = Vec::with_capacity(n);
        for job in inner.ready.drain(..n).collect::<Vec<_>>() {
            let lease_id = self.lease_id(job.seq, job.delivery.attempt);
            out.push(Lease {
                lease_id,
                expires_ms,
                message: job.delivery.clone(),
            });
            inner.expiry.insert((expires_ms, job.seq));
            inner.leased.insert(
                job.seq,
                Leased {
                    job,
                    expires_ms,
                    started_ms: now,
                },
            );
        }
        drop(inner);
        if !out.is_empty() {
            self.changed.notify_one();
        }
        out
    }

    /// Settle leases; one answer per item, in order.
    pub(crate) fn settle(&self, items: Vec<(String, Settle)>) -> Vec<Settled> {
        let now = self.clock.now_ms();
        let mut done = Vec::new();
        let mut answers = Vec::with_capacity(items.len());
        let mut inner = self.lock();
        for (lease_id, what) in items {
            let Some(seq) = self.verify(&lease_id) else {
                answers.push(Settled::Unknown);
                continue;
            };
            let Some(leased) = inner.leased.get_mut(&seq) else {
                let ended = inner.ended.get(&seq).copied();
                let same = |s: Settled| {
                    matches!(
                        (&what, s),
                        (Settle::Ack, Settled::Acked)
                            | (Settle::Retry { .. }, Settled::Retried)
                            | (Settle::DeadLetter(_), Settled::DeadLettered)
                    )
                };
                answers.push(match ended {
                    Some(Settled::Expired) => Settled::Expired,
                    Some(s) if same(s) => s,
                    _ => Settled::Unknown,
                });
                continue;
            };
            if let Settle::Extend(by) = what {
                let old = (leased.expires_ms, seq);
                leased.expires_ms = now + by.as_millis() as u64;
                let new = (leased.expires_ms, seq);
                inner.expiry.remove(&old);
                inner.expiry.insert(new);
                answers.push(Settled::Extended);
                continue;
            }
            let leased = inner.leased.remove(&seq).expect("found above");
            inner.expiry.remove(&(leased.expires_ms, seq));
            let (outcome, answer) = match what {
                Settle::Ack => (Outcome::Ack, Settled::Acked),
                Settle::Retry { reason, delay_ms } => {
                    (Outcome::Retry { reason, delay_ms }, Settled::Retried)
                }
                Settle::DeadLetter(reason) => (Outcome::DeadLetter(reason), Settled::DeadLettered),
                Settle::Extend(_) => unreachable!("handled above"),
            };
            inner.remember(seq, answer);
            done.push(finished(leased, outcome, now));
            answers.push(answer);
        }
        drop(inner);
        self.changed.notify_one();
        self.send(done);
        answers
    }

    /// Hand leases back unused (a lease response that could not be
    /// written): the messages are queued again, no attempt counted.
    pub(crate) fn release(&self, lease_ids: &[String]) {
        let mut inner = self.lock();
        let mut done = Vec::new();
        for id in lease_ids {
            let Some(seq) = self.verify(id) else { continue };
            if let Some(leased) = inner.leased.remove(&seq) {
                inner.expiry.remove(&(leased.expires_ms, seq));
                done.push(JobDone::released(leased.job, leased.started_ms));
            }
        }
        drop(inner);
        self.send(done);
    }

    /// Hand back every job not yet leased (pause).
    pub(crate) fn recall(&self) {
        let jobs: Vec<_> = self.lock().ready.drain(..).collect();
        let now = self.clock.now_ms();
        self.send(
            jobs.into_iter()
                .map(|j| JobDone::released(j, now))
                .collect(),
        );
    }

    /// Stop: every job, leased or not, goes back uncounted, and waiting lease
    /// calls return empty.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut inner = self.lock();
        let now = self.clock.now_ms();
        let mut done: Vec<_> = inner
            .ready
            .drain(..)
            .map(|j| JobDone::released(j, now))
            .collect();
        for (_, leased) in inner.leased.drain() {
            done.push(JobDone::released(leased.job, leased.started_ms));
        }
        inner.expiry.clear();
        drop(inner);
        self.arrived.notify_waiters();
        self.changed.notify_one();
        self.send(done);
    }

    /// Expire every lease due by now; returns the next expiry, if any.
    fn expire_due(&self) -> Option<u64> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let mut done = Vec::new();
        while let Some(&(due, seq)) = inner.expiry.first() {
            if due > now {
                break;
            }
            inner.expiry.pop_first();
            if let Some(leased) = inner.leased.remove(&seq) {
                inner.remember(seq, Settled::Expired);
                let held = now.saturating_sub(leased.started_ms);
                let outcome = Outcome::Retry {
                    reason: format!("lease expired after {held} ms"),
                    delay_ms: None,
                };
                done.push(finished(leased, outcome, now));
            }
        }
        let next = inner.expiry.first().map(|(due, _)| *due);
        drop(inner);
        self.send(done);
        next
    }

    fn send(&self, done: Vec<JobDone<LaneKey>>) {
        if !done.is_empty() {
            // The runner is gone only when the subscription stopped.
            let _ = self.results.send(done);
        }
    }

    fn mac(&self, seq: u64, attempt: u32) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(self.subscription.as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(&attempt.to_be_bytes());
        mac
    }

    fn lease_id(&self, seq: u64, attempt: u32) -> String {
        let mut raw = Vec::with_capacity(12 + MAC_BYTES);
        raw.extend_from_slice(&seq.to_be_bytes());
        raw.extend_from_slice(&attempt.to_be_bytes());
        raw.extend_from_slice(&self.mac(seq, attempt).finalize().into_bytes()[..MAC_BYTES]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The dispatch number of a genuine lease id of this desk.
    fn verify(&self, lease_id: &str) -> Option<u64> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(lease_id)
            .ok()?;
        if raw.len() != 12 + MAC_BYTES {
            return None;
        }
        let seq = u64::from_be_bytes(raw[..8].try_into().ok()?);
        let attempt = u32::from_be_bytes(raw[8..12].try_into().ok()?);
        self.mac(seq, attempt)
            .verify_truncated_left(&raw[12..])
            .ok()?;
        Some(seq)
    }
}

fn finished(leased: Leased, outcome: Outcome, now: u64) -> JobDone<LaneKey> {
    let mut done = JobDone::finished(leased.job, leased.started_ms, outcome, None);
    done.invocation.duration = Duration::from_millis(now.saturating_sub(leased.started_ms));
    done
}

/// Expire leases as they fall due, until the desk is closed.
async fn expire(desk: Arc<LeaseDesk>) {
    while !desk.closed.load(Ordering::Acquire) {
        let changed = desk.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match desk.expire_due() {
            Some(due) => {
                let wait = Duration::from_millis(due.saturating_sub(desk.clock.now_ms()));
                let _ = tokio::time::timeout(wait, changed).await;
            }
            None => changed.await,
        }
    }
}
