//! The delivery engine of one subscription.
//!
//! A single task owns all of the subscription's delivery state: it reads
//! durable messages into ordering *lanes*, hands runnable lane heads to the
//! worker threads (at most `concurrency` at a time), and turns each outcome into
//! progress, a retry timer or a dead letter, persisted through the store.
//!
//! Lanes: under `key` ordering one lane per key (unkeyed messages each get
//! their own); under `partition` one per partition; under `none` one per
//! message. A lane runs one message at a time, in offset order; a message
//! waiting for a retry holds its lane, and only its lane.
//!
//! Progress per partition is a watermark (every offset below it is finished)
//! plus done markers for finished offsets above it. After a restart, reading
//! resumes at the watermark, skipping marked offsets; retry timers resume with
//! their attempt counts and due times; anything in flight at a crash is
//! delivered again (at-least-once).
//!
//! The runner is also the single commit point of its plugin's effects: an
//! acked attempt's publications and kv writes join the batch that records
//! the ack (see [`crate::broker::kv`]); under exactly-once its publications
//! get ids derived from the source message.

mod batch;
mod lanes;
mod lease;
mod outcome;

pub(crate) use lease::LeaseDesk;
pub use lease::{Lease, Settle, Settled, MAX_LEASE_BATCH, MAX_WAIT};
pub(crate) use outcome::Traced;

use crate::broker::kv::{KvState, SubscriptionEnv};
use crate::broker::log::{Log, Topic};
use crate::broker::plugins::Registry;
use crate::broker::progress::Source;
use crate::broker::spec::{DeliveryGuarantee, Mode, Ordering, SubscriptionSpec};
use crate::broker::subscriptions::Shared;
use crate::broker::worker::{Crew, Job, JobDone, Wake, WorkerSettings};
use crate::broker::BrokerError;
use crate::runtime::Delivery;
use crate::store::{
    AttemptRecord, Counters, Durability, Op, Redrive, RetryState, Store, StoredMessage,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Most messages a subscription holds in memory (queued in lanes or in flight).
/// Bounds memory per subscription; a backlog beyond it stays on disk.
const WINDOW: usize = 8192;
/// Messages read from one partition per refill.
const READ_CHUNK: usize = 512;
/// How far below [`WINDOW`] the lanes fall before a runner reads more: reads
/// are few and large, and the lanes keep thousands of messages to deliver
/// while one is under way.
const READ_SLACK: usize = WINDOW / 4;
/// Most messages handed to one plugin thread at once (in one chunk of jobs,
/// or one lane's run). A chunk runs sequentially, so it is sized from the
/// plugin's recent call times to take about [`CHUNK_BUDGET_US`]: a slow
/// plugin gets one message per chunk, a fast one up to this many.
const MAX_CHUNK: usize = 64;
/// Most chunks' results a runner completes before it commits, reads and
/// looks at its timers again.
const MAX_RESULTS_TAKEN: usize = 64;
/// About how long one chunk should keep a worker thread busy.
const CHUNK_BUDGET_US: f64 = 500.0;
/// How long lanes wait before looking again for a plugin that is unavailable.
const PLUGIN_RECHECK_MS: u64 = 1000;
/// How long a message handed back because the host had no room for an
/// instance waits before it is tried again.
const HOST_BUSY_RETRY_MS: u64 = 50;
/// At most one log line per this many milliseconds says a subscription is
/// waiting for room in the host.
const HOST_BUSY_LOG_MS: u64 = 10_000;
/// What the ledger names as the "plugin" of a pull subscription's attempts.
const PULL_LABEL: &str = "pull";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum LaneKey {
    /// Topic (index in the runner's topics) and key.
    Key(usize, String),
    Partition(usize),
    Solo(usize, u64),
}

struct Pending {
    source: usize,
    offset: u64,
    message: Arc<StoredMessage>,
    attempts: u32,
    history: Vec<AttemptRecord>,
    due_ms: u64,
    /// A retry state for this message exists in the store.
    persisted_retry: bool,
    /// A dead letter sent back: its progress lives in a redrive record, not
    /// in the partition's watermark (its offset is already finished).
    redriven: bool,
}

/// Messages read from a partition, at their offsets.
type Rows = Vec<(u64, Arc<StoredMessage>)>;

/// Messages read from a store, made shareable as the lanes hold them.
fn shared_rows(rows: Vec<(u64, StoredMessage)>) -> Rows {
    rows.into_iter().map(|(o, m)| (o, Arc::new(m))).collect()
}

/// A redriven message and its original position (topic, partition, offset).
pub(crate) type Redriven = (String, u32, u64, Redrive);

/// Requests to a running subscription.
pub(crate) enum Control {
    /// Dead letters sent back into the subscription.
    Redrive(Vec<Redriven>),
    /// A topic created after the subscription started matches its pattern.
    Topic(Arc<Topic>),
}

pub(crate) struct Runner {
    shared: Arc<Shared>,
    spec: SubscriptionSpec,
    store: Store,
    log: Arc<Log>,
    kv: Arc<KvState>,
    /// What the next commit writes.
    batch: batch::Batch,
    /// Attempts in flight by their `kv_start` (a multiset).
    kv_starts: BTreeMap<u64, usize>,
    /// Backoff jitter: seeded under a manual clock, so runs repeat exactly.
    rng: rand::rngs::StdRng,
    /// Jobs dispatched so far (each job's `seq`).
    dispatched: u64,
    /// Finished attempts, when recording them (the harness).
    pub(crate) trace: Option<Vec<Traced>>,
    plugins: Arc<Registry>,
    sources: Vec<Source>,
    /// Lanes, runnable lanes and timers.
    lanes: lanes::Lanes,
    /// Totals, as persisted with each progress batch.
    counters: Counters,
    /// Retry states loaded at start, consumed as their messages are read.
    restored: HashMap<(usize, u64), RetryState>,
    /// Jobs (lane runs) dispatched and not finished.
    in_flight: usize,
    /// Messages in those jobs.
    in_flight_messages: usize,
    /// Recent plugin call time (an exponential moving average), for sizing
    /// chunks.
    call_us: f64,
    /// When a wait for room in the host was last logged.
    host_busy_logged_ms: Option<u64>,
    /// Where a push subscription's jobs run: its share of the host's plugin
    /// threads.
    crew: Option<Crew<LaneKey>>,
    /// A pull subscription's lease desk, which takes the jobs instead of
    /// plugin threads.
    desk: Option<Arc<LeaseDesk>>,
    /// Cores available, for spreading jobs over plugin threads.
    cores: usize,
    results: mpsc::UnboundedReceiver<Vec<JobDone<LaneKey>>>,
    control: mpsc::UnboundedReceiver<Control>,
    /// Cluster mode: topics are read from the shared log, and every change
    /// is written through the subscription's journal.
    clustered: Option<Clustered>,
    /// Topics consumed, in the order they were added (sources refer to them
    /// by index).
    topics: Vec<Arc<Topic>>,
    notify: Arc<Notify>,
    /// Log reads under way (see [`Runner::plan_reads`]).
    reading: Option<Reading>,
}

/// Log reads under way: per source, `(source, head, rows)`.
type Reading = std::pin::Pin<
    Box<dyn std::future::Future<Output = Vec<(usize, u64, Result<Rows, BrokerError>)>> + Send>,
>;

/// What a runner in cluster mode reads from and writes through.
#[derive(Clone)]
pub(crate) struct Clustered {
    pub(crate) log: Arc<crate::broker::shared::Shared>,
    pub(crate) sink: crate::broker::journaled::JournalSink,
}

impl Runner {
    /// Restore the subscription's state from its stored `progress` and set
    /// up its crew.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        shared: Arc<Shared>,
        store: Store,
        log: Arc<Log>,
        plugins: Arc<Registry>,
        topics: Vec<Arc<Topic>>,
        control: mpsc::UnboundedReceiver<Control>,
        progress: crate::store::Progress,
        clustered: Option<Clustered>,
    ) -> Result<Self, super::BrokerError> {
        let spec = shared.spec.clone();
        let mut sources: Vec<Source> = Vec::new();
        for (index, topic) in topics.iter().enumerate() {
            shared.track_topic(topic);
            for partition in 0..topic.partitions() {
                sources.push(Source::new(topic.clone(), partition, index));
            }
        }
        // Watermarks first: done markers below them are stale.
        for (t, p, mark, done) in &progress.watermarks {
            if let Some(i) = sources_index(&sources, t, *p) {
                sources[i].restore(*mark, done);
            }
        }
        for (t, p, offset) in &progress.done {
            if let Some(i) = sources_index(&sources, t, *p) {
                sources[i].restore_done(*offset);
            }
        }
        let mut restored = HashMap::new();
        for (t, p, offset, state) in progress.retries {
            if let Some(i) = sources_index(&sources, &t, p) {
                restored.insert((i, offset), state);
            }
        }
        let counters = progress.counters;
        shared
            .delivered
            .store(counters.delivered, AtomicOrdering::Relaxed);
        shared.publish_counters(&counters);

        let kv = Arc::new(KvState::new(store.clone(), &shared.name));
        let egress = plugins.runtime().egress(
            &shared.name,
            spec.egress_rules()?,
            shared.egress.clone(),
            spec.concurrency as usize,
        );
        let env = Arc::new(SubscriptionEnv {
            log: log.clone(),
            shared: clustered
                .as_ref()
                .map(|c| (c.log.clone(), tokio::runtime::Handle::current())),
            kv: kv.clone(),
            config: spec.config.clone(),
            egress,
            conduct: Default::default(),
        });
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let desk = (spec.mode == Mode::Pull).then(|| {
            let desk = LeaseDesk::new(
                &shared.name,
                spec.lease(),
                log.clock().clone(),
                results_tx.clone(),
            );
            let _ = shared.desk.set(desk.clone());
            desk
        });
        let crew = desk.is_none().then(|| {
            Crew::new(
                plugins.workers(),
                spec.concurrency,
                WorkerSettings {
                    timeout: Duration::from_millis(spec.timeout_ms),
                    isolation: spec.isolation,
                    recycle_after: spec.recycle_after,
                    subscription: shared.name.clone(),
                    clock: log.clock().clone(),
                },
                env,
                results_tx,
            )
        });
        let rng = if log.clock().is_manual() {
            rand::SeedableRng::seed_from_u64(0)
        } else {
            rand::SeedableRng::from_os_rng()
        };
        let notify = Arc::new(Notify::new());
        for topic in &topics {
            topic.watch(notify.clone());
        }
        let mut runner = Self {
            shared,
            spec,
            store,
            log,
            kv,
            batch: batch::Batch::new(counters),
            kv_starts: BTreeMap::new(),
            rng,
            dispatched: 0,
            trace: None,
            plugins,
            sources,
            lanes: lanes::Lanes::default(),
            restored,
            counters,
            in_flight: 0,
            in_flight_messages: 0,
            call_us: CHUNK_BUDGET_US,
            host_busy_logged_ms: None,
            crew,
            desk,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            results: results_rx,
            control,
            topics,
            notify,
            reading: None,
            clustered,
        };
        for redriven in progress.redrives {
            runner.enqueue_redriven(redriven);
        }
        // Stats from the stored progress before the subscription is listed:
        // a backlog shows as lag from the first read on, never as a zero.
        runner.publish_stats();
        Ok(runner)
    }

    /// Deliver until `stop` turns true, then let in-flight attempts finish and
    /// commit their outcomes.
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut paused: watch::Receiver<bool>,
    ) {
        let mut stopping = *stop.borrow();
        loop {
            if stopping {
                // Leases out and jobs not leased yet come back uncounted
                // (closing again does nothing).
                if let Some(desk) = &self.desk {
                    desk.close();
                }
            }
            if stopping && self.in_flight == 0 {
                break;
            }
            if self.halted() {
                break;
            }
            let is_paused = *paused.borrow_and_update();
            if is_paused {
                if let Some(desk) = &self.desk {
                    // Not leased yet: back to the lanes until resumed.
                    desk.recall();
                }
            }
            let mut dispatching = false;
            if !stopping && self.reading.is_none() {
                // Read on while the plugins run: the lanes hold enough for a
                // while, and a read of thousands of messages takes
                // milliseconds.
                self.reading = self.plan_reads(READ_SLACK);
            }
            if !stopping {
                // Filtered messages finish without a delivery: persist that too.
                self.flush();
                let now = self.now_ms();
                self.lanes.fire_timers(now);
                // Below the disk's reserve, start nothing new: an attempt's
                // publications would need space. In-flight ones commit.
                let disk_low = self.log.space().low();
                self.shared
                    .waiting_for_disk
                    .store(disk_low, AtomicOrdering::Relaxed);
                dispatching = !is_paused && !disk_low;
                if dispatching {
                    self.dispatch(self.chunk()).await;
                }
            }
            self.publish_stats();
            let next_timer = match self.shared.waiting_for_disk.load(AtomicOrdering::Relaxed) {
                // Look at the disk again soon.
                true => Some(self.now_ms() + super::space::SAMPLE_EVERY.as_millis() as u64),
                false => self.lanes.next_due(),
            };
            let clock = self.log.clock().clone();
            let sleep = async {
                match next_timer {
                    Some(due) => {
                        let wait = due.saturating_sub(clock.now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            self.wake_crew();
            tokio::select! {
                done = self.results.recv() => {
                    let Some(done) = done else { break };
                    // Complete what has come back, handing out the lanes
                    // that frees as it goes: the plugin threads run on while
                    // the rest is completed, instead of waiting for all of it.
                    let mut next = Some(done);
                    let mut taken = 0;
                    while let Some(done) = next.take() {
                        done.into_iter().for_each(|d| self.complete(d));
                        if self.halted() {
                            break;
                        }
                        if dispatching {
                            self.dispatch(self.chunk()).await;
                        }
                        taken += 1;
                        if taken < MAX_RESULTS_TAKEN {
                            next = self.results.try_recv().ok();
                        }
                    }
                    if !self.halted() {
                        self.flush();
                    }
                }
                rows = async { self.reading.as_mut().expect("a read under way").await }, if self.reading.is_some() => {
                    self.reading = None;
                    self.take_reads(rows);
                }
                _ = self.notify.notified(), if !stopping => {}
                _ = sleep, if !stopping => {}
                changed = stop.changed(), if !stopping => {
                    stopping = changed.is_err() || *stop.borrow();
                }
                _ = paused.changed(), if !stopping => {}
                Some(control) = self.control.recv(), if !stopping => match control {
                    Control::Redrive(batch) => batch.into_iter().for_each(|r| self.enqueue_redriven(r)),
                    Control::Topic(topic) => self.add_topic(topic),
                },
            }
        }
        // Nothing is in flight: let the crew's idle instances go, and make
        // the last outcomes durable.
        self.crew = None;
        if self.halted() {
            // Writing more progress now would cover the batch that failed.
            match self.clustered {
                Some(_) => {
                    tracing::warn!(subscription = %self.shared.name, "subscription halted after a failed commit; it starts again from its journal at the next beat if it is still placed on this host")
                }
                None => {
                    tracing::error!(subscription = %self.shared.name, "subscription halted after a failed write; restart the host to resume it")
                }
            }
        } else {
            let last = self
                .batch
                .take_last(&self.shared.name, &mut self.sources, self.counters);
            if let Some(write) = last.map(|taken| self.write(taken)) {
                write.await;
            }
        }
        for topic in &self.topics {
            topic.unwatch(&self.notify);
        }
    }

    /// Start consuming a topic created after the subscription started (from
    /// its beginning). Ignored if already consumed.
    fn add_topic(&mut self, topic: Arc<Topic>) {
        if self.topics.iter().any(|t| t.name == topic.name) {
            return;
        }
        let index = self.topics.len();
        self.shared.track_topic(&topic);
        for partition in 0..topic.partitions() {
            self.sources
                .push(Source::new(topic.clone(), partition, index));
        }
        topic.watch(self.notify.clone());
        tracing::info!(subscription = %self.shared.name, topic = %topic.name, "consuming a new matching topic");
        self.topics.push(topic);
    }

    fn lane_key(&self, source: usize, offset: u64, message: &StoredMessage) -> LaneKey {
        match (self.spec.ordering, &message.key) {
            (Ordering::Key, Some(key)) => {
                LaneKey::Key(self.sources[source].topic_index, key.clone())
            }
            (Ordering::Partition, _) => LaneKey::Partition(source),
            _ => LaneKey::Solo(source, offset),
        }
    }

    /// Read durable messages into lanes, up to the window, and wait for
    /// what must come from the store.
    async fn fill(&mut self) {
        if let Some(reading) = self.plan_reads(0) {
            let rows = reading.await;
            self.take_reads(rows);
        }
    }

    /// Read durable messages into lanes, up to the window, unless it lacks
    /// no more than `slack`: those among their partition's newest at once,
    /// from memory; the rest are read from the store by the returned future
    /// (on the blocking pool, or from the shared log in cluster mode), whose
    /// rows go to [`Runner::take_reads`]. No other read may be planned while
    /// one is under way: sources move on when their rows are taken.
    fn plan_reads(&mut self, slack: usize) -> Option<Reading> {
        // Plan the reads: how much of each partition fits in the window.
        let mut budget = WINDOW.saturating_sub(self.lanes.held());
        if budget == 0 || budget < slack {
            return None;
        }
        let mut reads = Vec::new();
        // Messages that are among their partition's newest come from memory.
        let mut kept = Vec::new();
        for (i, source) in self.sources.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            source.skip_to(source.topic.first(source.partition));
            let head = source.topic.head(source.partition);
            if source.read_to >= head {
                continue;
            }
            let limit = READ_CHUNK.min(budget).min((head - source.read_to) as usize);
            budget -= limit;
            let recent = source.topic.recent(source.partition, source.read_to, limit);
            if recent.len() == limit {
                kept.push((i, head, Ok(recent)));
                continue;
            }
            let topic = source.topic.name.clone();
            reads.push((i, head, topic, source.partition, source.read_to, limit));
        }
        self.take_reads(kept);
        if reads.is_empty() {
            return None;
        }
        if let Some(clustered) = &self.clustered {
            let log = clustered.log.clone();
            return Some(Box::pin(futures_util::future::join_all(
                reads
                    .into_iter()
                    .map(move |(i, head, topic, partition, from, limit)| {
                        let log = log.clone();
                        async move {
                            let read = log.read_stored(&topic, partition, from, limit).await;
                            // Nothing from a copy behind: read from here again.
                            let reached = match &read {
                                Ok(rows) if rows.is_empty() => from,
                                _ => head,
                            };
                            (i, reached, read.map(shared_rows))
                        }
                    }),
            )));
        }
        // Read on the blocking pool: the delivery runtime's threads run
        // every subscription's runner.
        let store = self.store.clone();
        let name = self.shared.name.clone();
        Some(Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || {
                reads
                    .into_iter()
                    .map(|(i, head, topic, partition, from, limit)| {
                        let rows = store.read_log_shared(&topic, partition, from, limit);
                        (i, head, rows.map_err(BrokerError::from))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            read.unwrap_or_else(|e| {
                tracing::error!(error = %e, subscription = %name, "reading the log failed");
                Vec::new()
            })
        }))
    }

    /// Enqueue what was read, per source: `(source, head, rows)`.
    fn take_reads(&mut self, results: Vec<(usize, u64, Result<Rows, BrokerError>)>) {
        for (i, head, rows) in results {
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, subscription = %self.shared.name, "reading the log failed");
                    return;
                }
            };
            let mut last = None;
            for (offset, message) in rows {
                last = Some(offset);
                if self.sources[i].is_done(offset) {
                    continue;
                }
                self.enqueue(i, offset, message);
            }
            let source = &mut self.sources[i];
            source.read_to = last.map_or(head, |o| o + 1);
        }
    }

    fn enqueue(&mut self, source: usize, offset: u64, message: Arc<StoredMessage>) {
        let restored = self.restored.remove(&(source, offset));
        if let Some(filter) = &self.spec.filter {
            if !filter.matches(&message.headers) {
                // Skipped: finished without a delivery.
                let src = &mut self.sources[source];
                if restored.is_some() {
                    self.batch.push(Op::ClearRetry {
                        subscription: self.shared.name.clone(),
                        topic: src.topic.name.clone(),
                        partition: src.partition,
                        offset,
                    });
                }
                src.finish(offset);
                self.shared.filtered.fetch_add(1, AtomicOrdering::Relaxed);
                return;
            }
        }
        let key = self.lane_key(source, offset, &message);
        // A delayed message waits (holding its lane) until its delivery time.
        let due_ms = restored
            .as_ref()
            .map_or(0, |r| r.due_ms)
            .max(message.deliver_at_ms.unwrap_or(0));
        let pending = Pending {
            source,
            offset,
            message,
            attempts: restored.as_ref().map_or(0, |r| r.attempts),
            due_ms,
            persisted_retry: restored.is_some(),
            redriven: false,
            history: restored.map(|r| r.history).unwrap_or_default(),
        };
        self.push(key, pending);
    }

    /// Queue a dead letter sent back into this subscription, in its lane.
    fn enqueue_redriven(&mut self, (topic, partition, offset, redrive): Redriven) {
        let Some(source) = sources_index(&self.sources, &topic, partition) else {
            tracing::warn!(subscription = %self.shared.name, topic = %topic, partition, "redriven message of an unknown partition");
            return;
        };
        let message = Arc::new(redrive.message);
        let key = self.lane_key(source, offset, &message);
        let pending = Pending {
            source,
            offset,
            message,
            attempts: redrive.attempts,
            due_ms: redrive.due_ms,
            persisted_retry: false,
            redriven: true,
            history: redrive.history,
        };
        self.push(key, pending);
    }

    fn push(&mut self, key: LaneKey, pending: Pending) {
        let now = self.now_ms();
        self.lanes.push(key, pending, now);
    }

    /// How many messages one chunk of jobs, or one lane's run, may hold.
    fn chunk(&self) -> usize {
        if self.desk.is_some() {
            // A lease is one message.
            return 1;
        }
        ((CHUNK_BUDGET_US / self.call_us.max(1.0)) as usize).clamp(1, MAX_CHUNK)
    }

    /// Hand runnable lanes to the crew: up to `concurrency` jobs when calls
    /// are slow, up to `concurrency × chunk` messages when they are fast. The
    /// crew runs at most `concurrency` chunks at once, so at most that many
    /// attempts run at once either way.
    async fn dispatch(&mut self, chunk: usize) {
        let limit = self.spec.concurrency as usize * chunk;
        if !self.lanes.has_ready() || self.in_flight_messages >= limit {
            return;
        }
        if self.halted() {
            return;
        }
        // Resolved once per round: a new plugin version applies from the next
        // message on, never in the middle of one.
        let resolved = match self.desk {
            Some(_) => Ok((None, PULL_LABEL.to_string())),
            None => self
                .plugins
                .resolve(&self.spec.plugin)
                .map(|(plugin, label)| (Some(plugin), label)),
        };
        let (plugin, label) = match resolved {
            Ok(found) => found,
            Err(e) => {
                // The plugin is gone: hold the runnable lanes and look again later.
                tracing::warn!(error = %e, subscription = %self.shared.name, "plugin unavailable");
                let later = self.now_ms() + PLUGIN_RECHECK_MS;
                self.lanes.defer_ready(later);
                return;
            }
        };
        // Under at-most-once each message's progress is committed before it
        // runs, so a lane's later messages never ride along.
        let runs = self.spec.delivery != DeliveryGuarantee::AtMostOnce;
        let now = self.now_ms();
        let kv_start = self.kv.seq();
        let mut batch = Vec::new();
        let mut messages = 0;
        while self.in_flight_messages + messages < limit {
            let Some((key, queue)) = self.lanes.pop_ready() else {
                break;
            };
            let head = queue.front_mut().expect("a runnable lane has a head");
            head.attempts += 1;
            let delivery = delivery_of(&self.sources, head, head.attempts);
            let room = (limit - self.in_flight_messages - messages).min(chunk) - 1;
            let tail: Vec<Delivery> = if runs {
                queue
                    .iter()
                    .skip(1)
                    .take(room)
                    .take_while(|p| p.due_ms <= now)
                    .map(|p| delivery_of(&self.sources, p, p.attempts + 1))
                    .collect()
            } else {
                Vec::new()
            };
            messages += 1 + tail.len();
            *self.kv_starts.entry(kv_start).or_default() += 1;
            self.dispatched += 1;
            batch.push(Job {
                seq: self.dispatched,
                lane: key,
                delivery,
                tail,
                plugin: plugin.clone(),
                label: label.clone(),
                kv_start,
            });
        }
        if batch.is_empty() {
            return;
        }
        if self.spec.delivery == DeliveryGuarantee::AtMostOnce {
            // Chunks queued earlier run while this commit is written.
            self.wake_crew();
            // Commit progress before any plugin runs: a crash now loses these
            // messages instead of delivering them twice.
            let mut ops = Vec::new();
            for job in &batch {
                let Some(head) = self.lanes.head(&job.lane) else {
                    continue;
                };
                let source = &mut self.sources[head.source];
                if head.redriven {
                    ops.push(Op::ClearRedrive {
                        subscription: self.shared.name.clone(),
                        topic: source.topic.name.clone(),
                        partition: source.partition,
                        offset: head.offset,
                    });
                } else {
                    source.finish(head.offset);
                }
            }
            for source in &mut self.sources {
                source.persist(&self.shared.name, &mut ops);
            }
            let written = match &self.clustered {
                Some(c) => c.sink.commit(ops, BTreeMap::new()).await,
                None => self
                    .store
                    .submit(ops, Durability::Buffered)
                    .await
                    .map_err(BrokerError::from),
            };
            if let Err(e) = written {
                // Not committed: running the plugin could deliver these twice.
                self.shared.halted.store(true, AtomicOrdering::Release);
                tracing::error!(error = %e, subscription = %self.shared.name, "committing progress failed; halting the subscription");
                return;
            }
        }
        self.in_flight += batch.len();
        self.in_flight_messages += messages;
        self.counters.delivered += batch.len() as u64;
        self.shared
            .delivered
            .fetch_add(batch.len() as u64, AtomicOrdering::Relaxed);
        if let Some(desk) = &self.desk {
            desk.offer(batch);
            return;
        }
        // Spread the round over about one chunk per core, at most `chunk`
        // messages each: few wake-ups under load, full parallelism when light.
        let size = messages.div_ceil(self.cores).clamp(1, chunk);
        let crew = self.crew.as_ref().expect("a push subscription has a crew");
        let mut out = Vec::new();
        let mut filled = 0;
        for job in batch {
            filled += 1 + job.tail.len();
            out.push(job);
            if filled >= size {
                filled = 0;
                crew.send(std::mem::take(&mut out), Wake::Later);
            }
        }
        if !out.is_empty() {
            crew.send(out, Wake::Later);
        }
    }

    /// Get plugin threads to the chunks dispatched since the runner last
    /// waited. Chunks are queued without waking a thread (one woken at once
    /// would take the runner's core while it completes and dispatches
    /// more); threads that finish a chunk take the next without sleeping.
    fn wake_crew(&self) {
        if let Some(crew) = &self.crew {
            crew.wake();
        }
    }

    /// Deliver everything runnable at the clock's current time, round by
    /// round, until nothing is (retries due later wait for the clock): the
    /// harness's way to run the engine. Each round's attempts run on the
    /// worker threads at once and are completed in dispatch order, and each
    /// round's changes are written before the next starts, so a run on a
    /// manual clock repeats exactly.
    pub(crate) async fn settle(&mut self) {
        loop {
            if self.halted() {
                return;
            }
            self.fill().await;
            let now = self.now_ms();
            self.lanes.fire_timers(now);
            if self.lanes.has_ready() {
                // One message per job: rounds do not depend on call times.
                self.dispatch(1).await;
                self.wake_crew();
            }
            if self.in_flight == 0 {
                if let Some(write) = self.commit() {
                    write.await;
                }
                self.fill().await;
                let now = self.now_ms();
                self.lanes.fire_timers(now);
                if !self.lanes.has_ready() {
                    return;
                }
                continue;
            }
            let mut round: Vec<JobDone<LaneKey>> = Vec::with_capacity(self.in_flight);
            let mut finished = 0;
            while finished < self.in_flight {
                match self.results.recv().await {
                    Some(done) => {
                        finished += done.iter().filter(|d| d.last).count();
                        round.extend(done);
                    }
                    None => return,
                }
            }
            round.sort_by_key(|d| d.seq);
            round.into_iter().for_each(|d| self.complete(d));
            if let Some(write) = self.commit() {
                write.await;
            }
        }
    }

    /// When the next retry or delayed message is due, if any is waiting.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.lanes.next_due()
    }

    fn now_ms(&self) -> u64 {
        self.log.clock().now_ms()
    }

    /// A commit failed: nothing more may run or be committed (a later
    /// commit would record progress past what the failed one lost).
    fn halted(&self) -> bool {
        self.shared.halted.load(AtomicOrdering::Acquire)
    }

    /// Queue the collected changes as one batch, not waited for: the writer
    /// applies batches in order, and losing the tail of progress in a crash
    /// only means delivering those messages again (with their effects, which
    /// are in the same batches).
    fn flush(&mut self) {
        if let Some(write) = self.commit() {
            tokio::spawn(write);
        }
    }

    /// Queue the collected changes — progress, kv writes and (exactly-once)
    /// publications — as one atomic batch. The returned future resolves once
    /// it is written; then the counters recording it are reported (once
    /// `acked` or `dead_lettered` shows a message, its progress and dead
    /// letter are readable) and its kv writes are read from the store.
    fn commit(&mut self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let taken = self
            .batch
            .take(&self.shared.name, &mut self.sources, self.counters)?;
        Some(self.write(taken))
    }

    /// Write a taken batch (see [`Runner::commit`]).
    fn write(&self, taken: batch::Taken) -> impl std::future::Future<Output = ()> + Send + 'static {
        let batch::Taken {
            ops,
            outputs,
            spans,
            kv_commit,
        } = taken;
        let write: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), BrokerError>> + Send>,
        > = if let Some(c) = &self.clustered {
            Box::pin(c.sink.commit(ops, outputs))
        } else if outputs.is_empty() {
            let write = self.store.submit(ops, Durability::Buffered);
            Box::pin(async move { Ok(write.await?) })
        } else {
            // Publications are synced before they become visible, as a
            // producer's publish is.
            Box::pin(self.log.commit(outputs, ops, Durability::Synced))
        };
        self.kv.prune(self.kv_starts.keys().next().copied());
        let (shared, counters, kv) = (self.shared.clone(), self.counters, self.kv.clone());
        async move {
            let written = write.await;
            for mut span in spans {
                if let Err(e) = &written {
                    span.fail(e.to_string());
                }
                span.end();
            }
            match written {
                Ok(()) => {
                    shared.publish_counters(&counters);
                    if let Some(seq) = kv_commit {
                        kv.written(seq);
                    }
                }
                Err(e) => {
                    // Later batches would record progress past this one's
                    // messages, whose effects are lost: stop delivering. A
                    // restart resumes from what is on disk.
                    shared.halted.store(true, AtomicOrdering::Release);
                    tracing::error!(error = %e, subscription = %shared.name, "committing progress failed; halting the subscription")
                }
            }
        }
    }

    fn publish_stats(&self) {
        self.shared.publish_watermarks(&self.sources);
        self.shared.publish_lag(&self.sources);
        self.shared
            .in_flight
            .store(self.in_flight as u64, AtomicOrdering::Relaxed);
    }
}

impl Drop for Runner {
    /// However the runner ends (stopped, halted, or never run), its lease
    /// desk stops handing out messages and its expiry task ends.
    fn drop(&mut self) {
        if let Some(desk) = &self.desk {
            desk.close();
        }
    }
}

/// What the plugin is given for a pending message's attempt `attempt`.
fn delivery_of(sources: &[Source], pending: &Pending, attempt: u32) -> Delivery {
    let source = &sources[pending.source];
    Delivery {
        message: pending.message.clone(),
        topic: source.name.clone(),
        partition: source.partition,
        offset: pending.offset,
        attempt,
    }
}

impl crate::runtime::Letter for StoredMessage {
    fn id(&self) -> &str {
        &self.id
    }

    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }
}

fn sources_index(sources: &[Source], topic: &str, partition: u32) -> Option<usize> {
    sources
        .iter()
        .position(|s| s.topic.name == topic && s.partition == partition)
}
