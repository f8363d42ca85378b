//! Subscriptions: their settings, their runners, and their statistics.

use super::log::Log;
use super::log::Topic;
use super::plugins::Registry;
use super::progress::Source;
use super::runner::{Control, Runner};
use super::spec::{is_pattern, topic_matches};
use super::spec::{validate_resource_name, Start, SubscriptionSpec};
use super::BrokerError;
use crate::histogram::{self, Histogram, HistogramSnapshot, Tally};
use crate::store::{DeadLetter, Durability, LedgerEntry, Op, Redrive, Store};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::RwLock;
use tokio::sync::watch;

const META_SUBSCRIPTION: &str = "subscription";
/// Most dead letters purged in one write.
const PURGE_PAGE: usize = 10_000;
/// Most dead letters (and about most bytes of them) redriven in one write.
const REDRIVE_PAGE: usize = 1_000;
const REDRIVE_PAGE_BYTES: usize = 64 << 20;
/// Samples of `acked` kept for the rate: about five seconds' worth.
const RATE_SAMPLES: usize = 6;

/// Present (with value `true`) for a paused subscription.
const META_PAUSED: &str = "paused";

/// Counters and gauges of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriptionStats {
    /// Attempts started.
    pub delivered: u64,
    /// Messages acknowledged by the plugin.
    pub acked: u64,
    /// Failed attempts scheduled to be tried again.
    pub retried: u64,
    /// Messages moved to the dead letters.
    pub dead_lettered: u64,
    /// Messages skipped by the subscription's filter, since the host started.
    pub filtered: u64,
    /// At-most-once deliveries that failed (not retried), since the host started.
    pub failed: u64,
    /// Acked attempts run again, uncounted, because a kv key they read was
    /// changed by another attempt meanwhile, since the host started.
    pub kv_conflicts: u64,
    /// Attempts handed back unrun, and not counted, because the host had no
    /// room for a plugin instance, since the host started.
    pub host_busy: u64,
    /// Durable messages not yet finished (acked or dead-lettered).
    pub lag: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Messages acknowledged per second over the last few seconds.
    pub acked_per_sec: f64,
    /// Outbound HTTP requests of its plugin, since the host started.
    #[serde(skip)]
    pub egress: crate::runtime::egress::EgressSnapshot,
    /// Attempts by outcome, and their durations, since the host started.
    #[serde(skip)]
    pub attempts: AttemptSnapshot,
}

/// Outcome kinds of completed attempts, as `/metrics` labels them.
const ATTEMPT_OUTCOMES: [&str; 7] = [
    "ack",
    "retry",
    "dead-letter",
    "trap",
    "timeout",
    "memory-limit",
    "kv-conflict",
];

/// A subscription's completed attempts by outcome, and how long they ran.
#[derive(Debug)]
pub(crate) struct AttemptStats {
    outcomes: Tally,
    duration: Histogram,
}

/// A reading of a subscription's attempt counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptSnapshot {
    /// Attempts per outcome kind (only those seen).
    pub outcomes: Vec<(&'static str, u64)>,
    /// Seconds each attempt's plugin call took.
    pub duration: HistogramSnapshot,
}

impl Default for AttemptStats {
    fn default() -> Self {
        Self {
            outcomes: Tally::new(&ATTEMPT_OUTCOMES),
            duration: Histogram::new(histogram::SECONDS),
        }
    }
}

impl AttemptStats {
    /// Count one completed attempt of kind `outcome` (one of [`ATTEMPT_OUTCOMES`]).
    pub(crate) fn observe(&self, outcome: &str, duration: std::time::Duration) {
        self.outcomes.add(outcome);
        self.duration.observe_duration(duration);
    }

    fn snapshot(&self) -> AttemptSnapshot {
        AttemptSnapshot {
            outcomes: self.outcomes.snapshot(),
            duration: self.duration.snapshot(),
        }
    }
}

/// A subscription as reported by the API.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriptionInfo {
    pub name: String,
    #[serde(flatten)]
    pub spec: SubscriptionSpec,
    /// `running`, `paused`, `waiting_for_disk` (free disk space is below
    /// the reserve: no new attempts start until it is back), `halted` (a
    /// progress write failed; it delivers again once the host restarts),
    /// or, in cluster mode, `elsewhere` (no host running it answered in
    /// time: `lag` is estimated, never less than the true lag, and the
    /// other stats are 0).
    pub state: &'static str,
    /// Cluster mode: the host running it, when the host answering is that
    /// one (`GET /v1/host` names each host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub stats: SubscriptionStats,
}

/// Most ledger entries of trimmed messages deleted in one write.
const LEDGER_TRIM_CHUNK: usize = 5_000;

/// The runtime subscription runners run on: threads of their own, apart
/// from the API's. A runner completing a large round of results, or reading
/// its backlog, then never holds up the answer to a publish: the operating
/// system preempts it, where a task on the API's threads would wait its turn.
fn delivery_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .thread_name("switchyard-delivery")
            .enable_all()
            .build()
            .expect("starting the delivery runtime")
    })
}

/// State a runner shares with the rest of the broker.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) spec: SubscriptionSpec,
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) kv_conflicts: AtomicU64,
    pub(crate) host_busy: AtomicU64,
    /// A write of this subscription's progress failed: it stopped delivering
    /// (later progress would cover the lost batch) until the host restarts.
    pub(crate) halted: std::sync::atomic::AtomicBool,
    /// The disk is below its free-space reserve: the runner starts no new
    /// attempts until space is back.
    pub(crate) waiting_for_disk: std::sync::atomic::AtomicBool,
    pub(crate) filtered: AtomicU64,
    /// Unfinished messages as the runner last counted them, with the head
    /// of each partition it counted to: a reader adds what was appended
    /// since, so a message counts from the moment it is durable, not from
    /// when the runner next looks ([`Shared::lag_now`]).
    lag: std::sync::Mutex<Counted>,
    pub(crate) in_flight: AtomicU64,
    /// Outbound HTTP requests of the plugin.
    pub(crate) egress: Arc<crate::runtime::EgressStats>,
    /// Completed attempts by outcome, and their durations.
    pub(crate) attempts: AttemptStats,
    /// Completed attempts, for `GET .../events` watchers.
    pub(crate) events: tokio::sync::broadcast::Sender<super::DeliveryEvent>,
    /// A pull subscription's lease desk, once its runner started.
    pub(crate) desk: std::sync::OnceLock<Arc<super::runner::LeaseDesk>>,
    /// Per consumed topic and partition: the runner's current watermark.
    watermarks: RwLock<HashMap<String, Vec<AtomicU64>>>,
    /// `acked` sampled about once a second, for `acked_per_sec`.
    acked_samples: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
}

/// A runner's last count of its unfinished messages, and the head of each
/// partition it counted to.
#[derive(Default)]
struct Counted {
    lag: u64,
    heads: Vec<(Arc<Topic>, u32, u64)>,
}

impl Shared {
    pub(crate) fn new(name: &str, spec: SubscriptionSpec) -> Self {
        Self {
            watermarks: RwLock::new(HashMap::new()),
            acked_samples: std::sync::Mutex::new(std::collections::VecDeque::new()),
            name: name.to_string(),
            spec,
            delivered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            kv_conflicts: AtomicU64::new(0),
            host_busy: AtomicU64::new(0),
            halted: std::sync::atomic::AtomicBool::new(false),
            waiting_for_disk: std::sync::atomic::AtomicBool::new(false),
            filtered: AtomicU64::new(0),
            lag: std::sync::Mutex::new(Counted::default()),
            in_flight: AtomicU64::new(0),
            egress: Arc::default(),
            attempts: AttemptStats::default(),
            desk: std::sync::OnceLock::new(),
            events: tokio::sync::broadcast::Sender::new(super::EVENT_BUFFER),
        }
    }

    /// Record the runner's count of unfinished messages of `sources`, at
    /// their partitions' heads now.
    pub(crate) fn publish_lag(&self, sources: &[Source]) {
        let mut guard = self.lag.lock().expect("lag lock");
        let counted = &mut *guard;
        counted.lag = 0;
        counted.heads.truncate(sources.len());
        for (i, source) in sources.iter().enumerate() {
            let head = source.topic.head(source.partition);
            counted.lag += source.lag_at(head);
            match counted.heads.get_mut(i) {
                // The same partition as last time (sources rarely change):
                // no reference counting on the runner's every turn.
                Some(slot) if Arc::ptr_eq(&slot.0, &source.topic) && slot.1 == source.partition => {
                    slot.2 = head
                }
                Some(slot) => *slot = (source.topic.clone(), source.partition, head),
                None => counted
                    .heads
                    .push((source.topic.clone(), source.partition, head)),
            }
        }
    }

    /// Unfinished messages: the runner's last count, plus every message
    /// appended to its partitions since.
    pub(crate) fn lag_now(&self) -> u64 {
        let counted = self.lag.lock().expect("lag lock");
        let appended: u64 = counted
            .heads
            .iter()
            .map(|(topic, partition, head)| topic.head(*partition).saturating_sub(*head))
            .sum();
        counted.lag + appended
    }

    /// Report totals whose progress is written (monotonic: a late report of
    /// an earlier batch never lowers them).
    pub(crate) fn publish_counters(&self, c: &crate::store::Counters) {
        self.acked.fetch_max(c.acked, Ordering::Relaxed);
        self.retried.fetch_max(c.retried, Ordering::Relaxed);
        self.dead_lettered
            .fetch_max(c.dead_lettered, Ordering::Relaxed);
    }

    /// Start reporting watermarks for a topic (all 0 until the runner reports).
    pub(crate) fn track_topic(&self, topic: &Topic) {
        let mut marks = self.watermarks.write().expect("watermarks lock");
        marks
            .entry(topic.name.clone())
            .or_insert_with(|| (0..topic.partitions()).map(|_| AtomicU64::new(0)).collect());
    }

    /// Report the runner's watermarks.
    pub(crate) fn publish_watermarks(&self, sources: &[Source]) {
        let marks = self.watermarks.read().expect("watermarks lock");
        for source in sources {
            if let Some(slot) = marks
                .get(&source.topic.name)
                .and_then(|v| v.get(source.partition as usize))
            {
                slot.store(source.watermark(), Ordering::Relaxed);
            }
        }
    }

    /// This subscription's watermark of a topic's partition (0 if the runner
    /// has not reported it yet, which holds retention back).
    fn watermark(&self, topic: &str, partition: u32) -> u64 {
        let marks = self.watermarks.read().expect("watermarks lock");
        marks
            .get(topic)
            .and_then(|v| v.get(partition as usize))
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn consumes(&self, topic: &str) -> bool {
        topic_matches(&self.spec.topic, topic)
    }

    /// Record `acked` now; the last [`RATE_SAMPLES`] make the rate.
    fn sample_acked(&self) {
        let mut samples = self.acked_samples.lock().expect("rate samples lock");
        samples.push_back((
            std::time::Instant::now(),
            self.acked.load(Ordering::Relaxed),
        ));
        while samples.len() > RATE_SAMPLES {
            samples.pop_front();
        }
    }

    /// Acknowledgements per second between the oldest and newest samples.
    fn acked_per_sec(&self) -> f64 {
        let samples = self.acked_samples.lock().expect("rate samples lock");
        match (samples.front(), samples.back()) {
            (Some((t0, a0)), Some((t1, a1))) if t1 > t0 => {
                a1.saturating_sub(*a0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    fn info(&self, paused: bool) -> SubscriptionInfo {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SubscriptionInfo {
            name: self.name.clone(),
            spec: self.spec.clone(),
            state: if self.halted.load(Ordering::Relaxed) {
                "halted"
            } else if paused {
                "paused"
            } else if self.waiting_for_disk.load(Ordering::Relaxed) {
                "waiting_for_disk"
            } else {
                "running"
            },
            host: None,
            stats: SubscriptionStats {
                delivered: get(&self.delivered),
                acked: get(&self.acked),
                retried: get(&self.retried),
                dead_lettered: get(&self.dead_lettered),
                failed: get(&self.failed),
                kv_conflicts: get(&self.kv_conflicts),
                host_busy: get(&self.host_busy),
                filtered: get(&self.filtered),
                lag: self.lag_now(),
                in_flight: get(&self.in_flight),
                acked_per_sec: (self.acked_per_sec() * 10.0).round() / 10.0,
                egress: self.egress.snapshot(),
                attempts: self.attempts.snapshot(),
            },
        }
    }
}

struct Running {
    shared: Arc<Shared>,
    /// Cluster mode: the incarnation of the subscription it runs.
    incarnation: Option<u64>,
    /// Cluster mode: where changes to its state are written.
    sink: Option<super::journaled::JournalSink>,
    stop: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Subscriptions {
    store: Store,
    log: Arc<Log>,
    plugins: Arc<Registry>,
    running: std::sync::Mutex<BTreeMap<String, Running>>,
    /// Subscriptions being restarted with new settings, between their old
    /// runner's stop and their new one's start: retention still honours
    /// their last watermarks meanwhile.
    restarting: std::sync::Mutex<BTreeMap<String, Arc<Shared>>>,
    /// Serializes create/update/shutdown.
    changes: tokio::sync::Mutex<()>,
    /// Cluster mode: commits refused by fencing, on this host.
    journals: Arc<super::journaled::JournalStats>,
    /// Cluster mode: the subscriptions that exist, as last listed.
    known: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Subscriptions {
    /// Load the subscriptions the store holds and start them (none in
    /// cluster mode, `clustered`: there, hosts take subscriptions as they
    /// are placed on them).
    pub(crate) async fn load(
        store: Store,
        log: Arc<Log>,
        plugins: Arc<Registry>,
        clustered: bool,
    ) -> Result<Self, BrokerError> {
        let subs = Self {
            store: store.clone(),
            log,
            plugins,
            running: std::sync::Mutex::new(BTreeMap::new()),
            restarting: std::sync::Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
            journals: Arc::default(),
            known: std::sync::Mutex::new(Default::default()),
        };
        let stored = match clustered {
            true => Vec::new(),
            false => store.list_meta::<SubscriptionSpec>(META_SUBSCRIPTION)?,
        };
        for (name, spec) in stored {
            if let Err(e) = subs.start(&name, spec).await {
                tracing::error!(error = %e, subscription = %name, "cannot resume subscription");
            }
        }
        Ok(subs)
    }

    async fn start(&self, name: &str, spec: SubscriptionSpec) -> Result<(), BrokerError> {
        // Hold the registry while collecting topics: a topic created meanwhile
        // is either collected here or announced to the registered runner.
        let (progress, is_paused) = self.stored(name).await?;
        let running = self.running.lock().expect("subscriptions lock");
        let topics = self.matching_topics(&spec)?;
        self.launch(running, name, spec, topics, progress, is_paused, None)
    }

    /// What the store holds for a subscription: its progress and whether
    /// it is paused, read on the blocking pool and not under the
    /// registry's lock, which API calls wait on.
    async fn stored(&self, name: &str) -> Result<(crate::store::Progress, bool), BrokerError> {
        let (store, owned) = (self.store.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            let progress = store.load_progress(&owned)?;
            let paused = store.get_meta::<bool>(META_PAUSED, &owned)? == Some(true);
            Ok::<_, BrokerError>((progress, paused))
        })
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?
    }

    /// Run a subscription whose state is in its shared `journal` (cluster
    /// mode): the journal replayed into this host's store first, its
    /// topics followed in the shared log, every change written through
    /// the journal (compacted once `compact_bytes` more were appended).
    pub(crate) async fn start_clustered(
        &self,
        name: &str,
        record: super::shared::SubscriptionRecord,
        log: Arc<super::shared::Shared>,
        mut journal: Box<dyn super::shared::SharedJournal>,
        compact_bytes: u64,
    ) -> Result<(), BrokerError> {
        let super::shared::SubscriptionRecord {
            spec,
            incarnation,
            paused,
        } = record;
        let replayed = super::journaled::replay(&mut *journal, &self.store, name).await?;
        let (progress, _) = self.stored(name).await?;
        let mut topics = Vec::new();
        if is_pattern(&spec.topic) {
            for name in log.topic_names().await? {
                if topic_matches(&spec.topic, &name) {
                    topics.push(log.follow(&name).await?);
                }
            }
        } else {
            topics.push(log.follow(&spec.topic).await?);
        }
        let sink = super::journaled::JournalSink::start(
            journal,
            self.store.clone(),
            log.clone(),
            name,
            self.journals.clone(),
            (replayed, compact_bytes),
        );
        let clustered = super::runner::Clustered { log, sink };
        let running = self.running.lock().expect("subscriptions lock");
        self.launch(
            running,
            name,
            spec,
            topics,
            progress,
            paused,
            Some((clustered, incarnation)),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        mut running: std::sync::MutexGuard<'_, BTreeMap<String, Running>>,
        name: &str,
        spec: SubscriptionSpec,
        topics: Vec<Arc<Topic>>,
        progress: crate::store::Progress,
        is_paused: bool,
        clustered: Option<(super::runner::Clustered, u64)>,
    ) -> Result<(), BrokerError> {
        let (clustered, incarnation) = clustered.unzip();
        let sink = clustered.as_ref().map(|c| c.sink.clone());
        let shared = Arc::new(Shared::new(name, spec));
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let runner = Runner::start(
            shared.clone(),
            self.store.clone(),
            self.log.clone(),
            self.plugins.clone(),
            topics,
            control_rx,
            progress,
            clustered,
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let (paused, paused_rx) = watch::channel(is_paused);
        let task = delivery_runtime().spawn(runner.run(stop_rx, paused_rx));
        running.insert(
            name.to_string(),
            Running {
                shared,
                incarnation,
                sink,
                stop,
                paused,
                control,
                task,
            },
        );
        tracing::info!(subscription = name, "subscription running");
        Ok(())
    }

    /// Stop running a subscription here (cluster mode: another host takes
    /// it over, or it was deleted): in-flight attempts finish and commit.
    /// With `forget`, what this host kept of it goes too.
    pub(crate) async fn stop_here(&self, name: &str, forget: bool) -> Result<(), BrokerError> {
        self.stop(name).await;
        if forget {
            let ops = vec![Op::ForgetSubscription {
                subscription: name.to_string(),
            }];
            self.store.submit(ops, Durability::Buffered).await?;
        }
        Ok(())
    }

    /// Cluster mode: the info of `name` if it runs here as `incarnation`.
    pub(crate) fn info_of(&self, name: &str, incarnation: u64) -> Option<SubscriptionInfo> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .get(name)
            .filter(|r| r.incarnation == Some(incarnation))
            .map(|r| r.shared.info(*r.paused.borrow()))
    }

    /// Cluster mode: the subscriptions that exist now (listed every beat,
    /// and changed at once by this host's creates and deletes).
    pub(crate) fn set_known(&self, names: impl IntoIterator<Item = String>) {
        *self.known.lock().expect("known lock") = names.into_iter().collect();
    }

    pub(crate) fn know(&self, name: &str, exists: bool) {
        let mut known = self.known.lock().expect("known lock");
        match exists {
            true => known.insert(name.to_string()),
            false => known.remove(name),
        };
    }

    /// Cluster mode: does `name` exist, as last listed?
    pub(crate) fn is_known(&self, name: &str) -> bool {
        self.known.lock().expect("known lock").contains(name)
    }

    /// Commits refused by fencing on this host so far.
    pub(crate) fn fenced_commits(&self) -> u64 {
        self.journals.fenced.load(Ordering::Relaxed)
    }

    /// Journals compacted by this host so far.
    pub(crate) fn journal_compactions(&self) -> u64 {
        self.journals.compactions.load(Ordering::Relaxed)
    }

    /// Whether `name` runs here, and halted (a commit failed).
    pub(crate) fn running_here(&self, name: &str) -> Option<bool> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .get(name)
            .map(|r| r.shared.halted.load(Ordering::Acquire) || r.task.is_finished())
    }

    async fn stop(&self, name: &str) {
        let running = self
            .running
            .lock()
            .expect("subscriptions lock")
            .remove(name);
        if let Some(running) = running {
            let _ = running.stop.send(true);
            if let Err(e) = running.task.await {
                tracing::error!(error = %e, subscription = name, "runner ended abnormally");
            }
        }
    }

    /// Delete a plugin version (or a whole plugin) unless a subscription
    /// uses it; under the change lock, so no subscription starts using it
    /// meanwhile.
    pub(crate) async fn delete_plugin(&self, reference: &str) -> Result<(), BrokerError> {
        let _guard = self.changes.lock().await;
        let users: Vec<(String, String)> = self
            .list()
            .into_iter()
            .map(|s| (s.name, s.spec.plugin))
            .collect();
        self.plugins.delete(reference, &users).await
    }

    pub(crate) async fn put(
        &self,
        name: &str,
        spec: SubscriptionSpec,
    ) -> Result<(SubscriptionInfo, bool), BrokerError> {
        validate_resource_name("subscription", name)?;
        spec.validate()?;
        let topics = self.matching_topics(&spec)?;
        let _guard = self.changes.lock().await;
        // Under the lock: a plugin version cannot be deleted in between.
        if spec.mode == super::spec::Mode::Push {
            self.plugins.resolve(&spec.plugin)?;
        }
        let existing = self
            .running
            .lock()
            .expect("subscriptions lock")
            .get(name)
            .map(|r| r.shared.spec.clone());
        match existing {
            Some(old) if old == spec => return Ok((self.info(name)?, false)),
            Some(old) if old.topic != spec.topic => {
                return Err(BrokerError::Conflict(format!(
                    "subscription {name:?} consumes topic {:?}; delete it to consume another topic",
                    old.topic
                )))
            }
            Some(_) => {
                if let Ok(shared) = self.shared(name) {
                    self.restarting_lock().insert(name.to_string(), shared);
                }
                self.stop(name).await
            }
            None => {}
        }
        // Stored but not running (its start failed): an update, not a new
        // subscription whose leftovers may be cleared.
        let stored = match existing {
            Some(_) => true,
            None => self
                .read(name, |store, name| {
                    store.get_meta::<SubscriptionSpec>(META_SUBSCRIPTION, name)
                })
                .await?
                .is_some(),
        };
        let created = !stored;
        let mut ops = Vec::new();
        if !stored {
            // Nothing of an earlier subscription of this name may survive
            // into this one (D17), whatever an earlier host left behind.
            ops.push(Op::ForgetSubscription {
                subscription: name.to_string(),
            });
            if spec.start == Start::Latest {
                // Begin after everything durable now.
                ops.extend(topics.iter().flat_map(|topic| {
                    (0..topic.partitions()).map(|p| Op::SetProgress {
                        subscription: name.to_string(),
                        topic: topic.name.clone(),
                        partition: p,
                        watermark: topic.head(p),
                        done: Vec::new(),
                        clear_done: Vec::new(),
                    })
                }));
            }
        }
        // The settings and the progress they start from, in one batch.
        ops.push(Op::put_meta(META_SUBSCRIPTION, name, &spec));
        self.store.submit(ops, Durability::Synced).await?;
        let started = self.start(name, spec).await;
        self.restarting_lock().remove(name);
        started?;
        Ok((self.info(name)?, created))
    }

    /// Topics a subscription consumes now. An exact topic name must exist; a
    /// pattern may match none yet.
    fn matching_topics(&self, spec: &SubscriptionSpec) -> Result<Vec<Arc<Topic>>, BrokerError> {
        if !is_pattern(&spec.topic) {
            let topic = self.log.get(&spec.topic).ok_or_else(|| {
                BrokerError::NotFound(format!("topic {:?} does not exist", spec.topic))
            })?;
            return Ok(vec![topic]);
        }
        Ok(self
            .log
            .all()
            .into_iter()
            .filter(|t| topic_matches(&spec.topic, &t.name))
            .collect())
    }

    /// A topic was created: subscriptions whose pattern matches start on it.
    pub(crate) fn topic_created(&self, name: &str) {
        let Some(topic) = self.log.get(name) else {
            return;
        };
        let running = self.running.lock().expect("subscriptions lock");
        for r in running.values().filter(|r| r.shared.consumes(name)) {
            let _ = r.control.send(Control::Topic(topic.clone()));
        }
    }

    /// Cluster mode: the patterns of the subscriptions running here that
    /// name topics by pattern.
    pub(crate) fn patterns_here(&self) -> Vec<String> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .values()
            .map(|r| &r.shared.spec.topic)
            .filter(|topic| is_pattern(topic))
            .cloned()
            .collect()
    }

    /// Cluster mode: offer a topic of the shared log to the subscriptions
    /// running here whose pattern matches it (one already consumed is
    /// ignored).
    pub(crate) fn offer_topic(&self, topic: Arc<Topic>) {
        let running = self.running.lock().expect("subscriptions lock");
        for r in running.values().filter(|r| r.shared.consumes(&topic.name)) {
            let _ = r.control.send(Control::Topic(topic.clone()));
        }
    }

    /// Sample every running subscription's acknowledgements (about once a
    /// second), for `acked_per_sec`.
    pub(crate) fn sample_rates(&self) {
        let running = self.running.lock().expect("subscriptions lock");
        for r in running.values() {
            r.shared.sample_acked();
        }
    }

    /// Names of the subscriptions consuming `topic`.
    pub(crate) fn names_for(&self, topic: &str) -> Vec<String> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .values()
            .filter(|r| r.shared.consumes(topic))
            .map(|r| r.shared.name.clone())
            .collect()
    }

    /// A subscription's delivery record of one message, by id.
    pub(crate) fn ledger(&self, name: &str, id: &str) -> Result<LedgerEntry, BrokerError> {
        self.info(name)?;
        self.store.ledger(name, id)?.ok_or_else(|| {
            BrokerError::NotFound(format!(
                "subscription {name:?} has no delivery of message {id:?} on record \
                 (not attempted yet, deleted by retention, or acknowledged at the first \
                 attempt while the subscription's ledger is `failures`)"
            ))
        })
    }

    /// The lowest watermark of the subscriptions consuming `topic`'s
    /// `partition`: every message below it is finished by all of them.
    /// `None` when no subscription consumes the topic.
    pub(crate) fn min_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        let restarting: Vec<Arc<Shared>> = self.restarting_lock().values().cloned().collect();
        let running = self.running.lock().expect("subscriptions lock");
        running
            .values()
            .map(|r| &r.shared)
            .chain(&restarting)
            .filter(|shared| shared.consumes(topic))
            .map(|shared| shared.watermark(topic, partition))
            .min()
    }

    fn restarting_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Shared>>> {
        self.restarting.lock().expect("restarting lock")
    }

    pub(crate) fn list(&self) -> Vec<SubscriptionInfo> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .values()
            .map(|r| r.shared.info(*r.paused.borrow()))
            .collect()
    }

    /// What the running subscription `name` shares.
    fn shared(&self, name: &str) -> Result<Arc<Shared>, BrokerError> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .get(name)
            .map(|r| r.shared.clone())
            .ok_or_else(|| BrokerError::NotFound(format!("subscription {name:?} does not exist")))
    }

    /// Completed attempts of subscription `name`, from now on.
    pub(crate) fn events(
        &self,
        name: &str,
    ) -> Result<tokio::sync::broadcast::Receiver<super::DeliveryEvent>, BrokerError> {
        Ok(self.shared(name)?.events.subscribe())
    }

    /// The lease desk of pull subscription `name`.
    pub(crate) fn desk(&self, name: &str) -> Result<Arc<super::runner::LeaseDesk>, BrokerError> {
        self.shared(name)?.desk.get().cloned().ok_or_else(|| {
            BrokerError::Conflict(format!(
                "subscription {name:?} delivers to a plugin; only pull subscriptions (\"mode\": \"pull\") are leased"
            ))
        })
    }

    pub(crate) fn info(&self, name: &str) -> Result<SubscriptionInfo, BrokerError> {
        let running = self.running.lock().expect("subscriptions lock");
        running
            .get(name)
            .map(|r| r.shared.info(*r.paused.borrow()))
            .ok_or_else(|| BrokerError::NotFound(format!("subscription {name:?} does not exist")))
    }

    /// Cluster mode: pause or resume the runner of `name` here, if it
    /// runs here (its shared settings say so already).
    pub(crate) fn pause_here(&self, name: &str, paused: bool) {
        if let Some(r) = self.running.lock().expect("subscriptions lock").get(name) {
            if *r.paused.borrow() != paused {
                r.paused.send_replace(paused);
                tracing::info!(subscription = name, paused, "subscription state changed");
            }
        }
    }

    /// Cluster mode: the watermarks `name` has committed (its journal
    /// holds them), per topic and partition (0 where none is stored).
    pub(crate) async fn committed_watermarks(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u64>>, BrokerError> {
        let progress = self
            .read(name, |store, name| store.load_watermarks(name))
            .await?;
        let mut topics: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (topic, partition, watermark, _) in progress.watermarks {
            let marks = topics.entry(topic).or_default();
            let p = partition as usize;
            if marks.len() <= p {
                marks.resize(p + 1, 0);
            }
            marks[p] = watermark;
        }
        Ok(topics)
    }

    /// Cluster mode: delete, through its journal, `name`'s ledger entries
    /// of messages at offsets `from..below` of a partition (retention
    /// trimmed them from the shared log), up to [`LEDGER_TRIM_CHUNK`] at a
    /// time; the offset to go on from.
    pub(crate) async fn forget_trimmed_ledger(
        &self,
        name: &str,
        (topic, partition): (&str, u32),
        (from, below): (u64, u64),
    ) -> Result<u64, BrokerError> {
        let topic_name = topic.to_string();
        let (ops, next) = self
            .read(name, move |store, name| {
                store.ledger_trimmed(
                    name,
                    (&topic_name, partition),
                    (from, below),
                    LEDGER_TRIM_CHUNK,
                )
            })
            .await?;
        if !ops.is_empty() {
            tracing::debug!(
                subscription = name,
                topic,
                partition,
                below = next,
                entries = ops.len(),
                "ledger entries of trimmed messages deleted"
            );
            self.write_state(name, ops).await?;
        }
        Ok(next)
    }

    /// Write changes to a subscription's state where it is kept: through
    /// its journal in cluster mode (so they move with it to another
    /// host), else synced to the store.
    async fn write_state(&self, name: &str, ops: Vec<Op>) -> Result<(), BrokerError> {
        let sink = self
            .running
            .lock()
            .expect("subscriptions lock")
            .get(name)
            .map(|r| r.sink.clone());
        match sink {
            Some(Some(sink)) => sink.commit(ops, BTreeMap::new()).await,
            Some(None) => Ok(self.store.submit(ops, Durability::Synced).await?),
            None => Err(BrokerError::Unavailable(format!(
                "subscription {name:?} stopped running on this host meanwhile; try again"
            ))),
        }
    }

    pub(crate) async fn set_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<SubscriptionInfo, BrokerError> {
        let _guard = self.changes.lock().await;
        self.info(name)?;
        let op = if paused {
            Op::put_meta(META_PAUSED, name, &true)
        } else {
            Op::delete_meta(META_PAUSED, name)
        };
        self.store.submit(vec![op], Durability::Synced).await?;
        if let Some(r) = self.running.lock().expect("subscriptions lock").get(name) {
            r.paused.send_replace(paused);
        }
        tracing::info!(subscription = name, paused, "subscription state changed");
        self.info(name)
    }

    pub(crate) fn kv_entries(
        &self,
        name: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BrokerError> {
        self.info(name)?;
        Ok(self.store.kv_list(name, prefix, after, limit)?)
    }

    pub(crate) fn dead_letters(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.info(name)?;
        Ok(self.store.list_dead_letters(name, limit)?)
    }

    /// Stop a subscription and delete it with its progress, ledger and dead
    /// letters. In-flight attempts finish first.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let _guard = self.changes.lock().await;
        self.info(name)?;
        self.stop(name).await;
        // Settings and everything stored for it, in one batch: a crash
        // leaves the subscription whole or gone (D17).
        let ops = vec![
            Op::delete_meta(META_SUBSCRIPTION, name),
            Op::delete_meta(META_PAUSED, name),
            Op::ForgetSubscription {
                subscription: name.to_string(),
            },
        ];
        self.store.submit(ops, Durability::Synced).await?;
        tracing::info!(subscription = name, "subscription deleted");
        Ok(())
    }

    /// Delete a topic with its messages, ids and settings. Subscriptions
    /// that name it are a conflict, unless `force`, which deletes them in
    /// the same write; those whose pattern matches it stop consuming it
    /// (their progress on it goes too) and go on with their other topics.
    /// Returns the subscriptions deleted with it.
    pub(crate) async fn delete_topic(
        &self,
        topic: &str,
        force: bool,
    ) -> Result<Vec<String>, BrokerError> {
        let _guard = self.changes.lock().await;
        self.log.topic_info(topic)?;
        // Every stored subscription, running or not.
        let stored = self
            .read(topic, |store, _| {
                store.list_meta::<SubscriptionSpec>(META_SUBSCRIPTION)
            })
            .await?;
        let (named, matching): (Vec<_>, Vec<_>) = stored
            .into_iter()
            .filter(|(_, spec)| topic_matches(&spec.topic, topic))
            .partition(|(_, spec)| !is_pattern(&spec.topic));
        if !named.is_empty() && !force {
            let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
            return Err(BrokerError::Conflict(format!(
                "topic {topic:?} is consumed by subscription(s) {}; delete them first, \
                 or delete the topic with ?force=true to delete them with it",
                names.join(", ")
            )));
        }
        let mut ops = Vec::new();
        for (name, _) in &named {
            if let Ok(shared) = self.shared(name) {
                self.restarting_lock().insert(name.clone(), shared);
            }
            self.stop(name).await;
            ops.extend([
                Op::delete_meta(META_SUBSCRIPTION, name),
                Op::delete_meta(META_PAUSED, name),
                Op::ForgetSubscription {
                    subscription: name.clone(),
                },
            ]);
        }
        let mut restart = Vec::new();
        for (name, spec) in matching {
            if let Ok(shared) = self.shared(&name) {
                self.restarting_lock().insert(name.clone(), shared);
                self.stop(&name).await;
                restart.push((name.clone(), spec));
            }
            ops.push(Op::ForgetTopicProgress {
                subscription: name,
                topic: topic.to_string(),
            });
        }
        let written = match self.log.delete_topic(topic, ops) {
            Ok(write) => write.await,
            Err(e) => Err(e),
        };
        if written.is_err() {
            // Not deleted: the subscriptions naming it run again too.
            restart.extend(named.iter().cloned());
        }
        for (name, spec) in restart {
            if let Err(e) = self.start(&name, spec).await {
                tracing::error!(error = %e, subscription = %name, "subscription did not start again after a topic it matched was deleted");
            }
            self.restarting_lock().remove(&name);
        }
        written?;
        let deleted: Vec<String> = named.into_iter().map(|(n, _)| n).collect();
        for name in &deleted {
            self.restarting_lock().remove(name);
        }
        tracing::info!(topic, subscriptions = ?deleted, "topic deleted");
        // Give the space back in the background.
        let (store, name) = (self.store.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.reclaim_topic(&name) {
                tracing::warn!(error = %e, topic = %name, "reclaiming a deleted topic's space failed");
            }
        });
        Ok(deleted)
    }

    /// One dead letter by message id, found through the id index.
    pub(crate) fn dead_letter(&self, name: &str, id: &str) -> Result<DeadLetter, BrokerError> {
        self.info(name)?;
        self.store
            .dead_letters_by_id(name, id)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                BrokerError::NotFound(format!("subscription {name:?} has no dead letter {id:?}"))
            })
    }

    /// Delete dead letters (all, or those with the given message ids). Only
    /// the id index is read, never the letters; all of them go in writes of
    /// up to [`PURGE_PAGE`], each letter with its index entry.
    pub(crate) async fn purge(
        &self,
        name: &str,
        ids: Option<&[String]>,
    ) -> Result<usize, BrokerError> {
        let _guard = self.changes.lock().await;
        self.info(name)?;
        let mut purged = 0;
        let mut after = None;
        match ids {
            Some(ids) => {
                let letters = self.letters_by_id(name, ids).await?;
                let ops: Vec<Op> = letters.iter().map(|d| delete_dead(name, d)).collect();
                purged = ops.len();
                self.write_state(name, ops).await?;
            }
            None => loop {
                let cursor = after.clone();
                let page = self
                    .read(name, move |store, name| {
                        store.dead_letter_refs(name, cursor.as_ref(), PURGE_PAGE)
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.clone());
                purged += page.len();
                let ops = page
                    .into_iter()
                    .map(|r| Op::DeleteDeadLetter {
                        subscription: name.to_string(),
                        id: r.id,
                        topic: r.topic,
                        partition: r.partition,
                        offset: r.offset,
                    })
                    .collect();
                self.write_state(name, ops).await?;
            },
        }
        tracing::info!(subscription = name, purged, "dead letters purged");
        Ok(purged)
    }

    /// Send dead letters (all, or those with the given message ids) back into
    /// this subscription only, with their attempt count starting over. All
    /// of them go in position order, in writes of up to [`REDRIVE_PAGE`]
    /// letters (or about [`REDRIVE_PAGE_BYTES`]); each letter moves whole,
    /// in one write, from the dead letters to the subscription.
    pub(crate) async fn redrive(
        &self,
        name: &str,
        ids: Option<&[String]>,
    ) -> Result<usize, BrokerError> {
        let _guard = self.changes.lock().await;
        self.info(name)?;
        let mut count = 0;
        match ids {
            Some(ids) => {
                let mut chosen = self.letters_by_id(name, ids).await?;
                chosen.sort_by(|a, b| {
                    (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
                });
                count += self.redrive_page(name, chosen).await?;
            }
            None => {
                let mut after: Option<(String, u32, u64)> = None;
                loop {
                    let cursor = after.clone();
                    let page = self
                        .read(name, move |store, name| {
                            let cursor = cursor.as_ref().map(|(t, p, o)| (t.as_str(), *p, *o));
                            store.dead_letters_after(name, cursor, REDRIVE_PAGE, REDRIVE_PAGE_BYTES)
                        })
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some((last.topic.clone(), last.partition, last.offset));
                    count += self.redrive_page(name, page).await?;
                }
            }
        }
        tracing::info!(
            subscription = name,
            redriven = count,
            "dead letters redriven"
        );
        Ok(count)
    }

    /// Run a read of the store for subscription `name` on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        name: &str,
        read: impl FnOnce(&Store, &str) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let (store, name) = (self.store.clone(), name.to_string());
        tokio::task::spawn_blocking(move || read(&store, &name))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?
            .map_err(BrokerError::from)
    }

    /// The dead letters of these message ids, through the id index.
    async fn letters_by_id(
        &self,
        name: &str,
        ids: &[String],
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let ids = ids.to_vec();
        self.read(name, move |store, name| {
            let mut letters = Vec::new();
            for id in &ids {
                letters.extend(store.dead_letters_by_id(name, id)?);
            }
            Ok(letters)
        })
        .await
    }

    async fn redrive_page(
        &self,
        name: &str,
        chosen: Vec<DeadLetter>,
    ) -> Result<usize, BrokerError> {
        let mut ops = Vec::with_capacity(chosen.len() * 2);
        let mut sent = Vec::with_capacity(chosen.len());
        for d in chosen {
            ops.push(delete_dead(name, &d));
            let redrive = Redrive {
                message: d.message,
                attempts: 0,
                due_ms: 0,
                history: Vec::new(),
            };
            ops.push(Op::PutRedrive {
                subscription: name.to_string(),
                topic: d.topic.clone(),
                partition: d.partition,
                offset: d.offset,
                redrive: redrive.clone(),
            });
            sent.push((d.topic, d.partition, d.offset, redrive));
        }
        let count = sent.len();
        if count == 0 {
            return Ok(0);
        }
        self.write_state(name, ops).await?;
        if let Some(r) = self.running.lock().expect("subscriptions lock").get(name) {
            let _ = r.control.send(Control::Redrive(sent));
        }
        Ok(count)
    }

    pub(crate) async fn shutdown(&self) {
        let _guard = self.changes.lock().await;
        let names: Vec<String> = self
            .running
            .lock()
            .expect("subscriptions lock")
            .keys()
            .cloned()
            .collect();
        // Signal all first, so runners drain in parallel.
        for running in self.running.lock().expect("subscriptions lock").values() {
            let _ = running.stop.send(true);
        }
        for name in names {
            self.stop(&name).await;
        }
    }
}

fn delete_dead(subscription: &str, letter: &DeadLetter) -> Op {
    Op::DeleteDeadLetter {
        subscription: subscription.to_string(),
        id: letter.message.id.clone(),
        topic: letter.topic.clone(),
        partition: letter.partition,
        offset: letter.offset,
    }
}

#[cfg(test)]
mod tests {
    use super::META_SUBSCRIPTION;
    use crate::broker::{Broker, BrokerConfig, NewMessage, Settle, SubscriptionSpec, TopicSpec};
    use crate::store::{Durability, Op, Store};
    use std::time::Duration;

    fn pull(topic: &str) -> SubscriptionSpec {
        serde_json::from_value(serde_json::json!({"topic": topic, "mode": "pull"}))
            .expect("a valid spec")
    }

    /// A subscription's lag counts a message from the moment it is durable,
    /// not from when its runner next counts: read between the two, it is
    /// never a stale figure (a false zero for a caught-up subscription).
    #[test]
    fn lag_counts_messages_appended_since_the_runner_counted() {
        use super::{Shared, Source, Topic};
        use std::sync::Arc;
        let topic = Arc::new(Topic::with_head("t", 2, 5));
        let shared = Shared::new("s", pull("t"));
        let sources = [
            Source::new(topic.clone(), 0, 0),
            Source::new(topic.clone(), 1, 0),
        ];
        shared.publish_lag(&sources);
        assert_eq!(shared.lag_now(), 10);
        topic.advance_head(1, 8);
        assert_eq!(shared.lag_now(), 13, "three appended since the count");
        // The runner counts again: the same figure, from its own count.
        shared.publish_lag(&sources);
        assert_eq!(shared.lag_now(), 13);
        // Its sources change (partition 0 no longer its own): appends to
        // partition 0 no longer count.
        shared.publish_lag(&sources[1..]);
        topic.advance_head(0, 9);
        assert_eq!(shared.lag_now(), 8);
    }

    async fn open(dir: &std::path::Path) -> Broker {
        Broker::open(BrokerConfig::new(dir)).await.expect("opens")
    }

    #[test]
    fn the_ack_rate_spans_the_samples_kept() {
        use std::sync::atomic::Ordering;
        let shared = super::Shared::new("s", pull("t"));
        assert_eq!(shared.acked_per_sec(), 0.0, "no samples");
        shared.sample_acked();
        assert_eq!(shared.acked_per_sec(), 0.0, "one sample");
        let t0 = std::time::Instant::now();
        {
            let mut samples = shared.acked_samples.lock().unwrap();
            samples.clear();
            samples.push_back((t0, 100));
            samples.push_back((t0 + Duration::from_secs(2), 110));
        }
        assert_eq!(shared.acked_per_sec(), 5.0);
        shared.acked.store(1000, Ordering::Relaxed);
        for _ in 0..super::RATE_SAMPLES {
            shared.sample_acked();
        }
        assert_eq!(
            shared.acked_samples.lock().unwrap().len(),
            super::RATE_SAMPLES
        );
        assert_eq!(shared.acked_per_sec(), 0.0, "the older samples aged out");
    }

    /// Lease and ack whatever is ready; returns the offsets leased.
    async fn drain(broker: &Broker, name: &str) -> Vec<u64> {
        let leases = broker
            .lease(name, 100, None, Duration::from_secs(2))
            .await
            .expect("leases");
        let items = leases
            .iter()
            .map(|l| (l.lease_id.clone(), Settle::Ack))
            .collect();
        broker.settle(name, items).expect("settles");
        leases.iter().map(|l| l.message.offset).collect()
    }

    /// D17: a subscription created again under an old name starts from
    /// nothing, even if an earlier host crashed between deleting its
    /// settings and its progress (they were two writes then; now one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_created_again_ignores_progress_an_earlier_delete_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = open(dir.path()).await;
        broker
            .create_topic("t", TopicSpec::default())
            .await
            .expect("creates");
        let messages = (0..5).map(|i| NewMessage::new(format!("m{i}"))).collect();
        broker.publish("t", messages).await.expect("publishes");
        broker
            .put_subscription("s", pull("t"))
            .await
            .expect("creates");
        assert_eq!(drain(&broker, "s").await, [0, 1, 2, 3, 4]);
        for _ in 0..200 {
            if broker.subscription("s").expect("exists").stats.acked == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(broker.subscription("s").expect("exists").stats.acked, 5);
        broker.shutdown().await;
        drop(broker);

        // What a crash between the two writes of an earlier host's delete
        // left: the settings gone, the progress still there.
        let store = Store::open(dir.path(), None).expect("opens");
        let op = Op::delete_meta(META_SUBSCRIPTION, "s");
        store
            .submit(vec![op], Durability::Synced)
            .await
            .expect("writes");
        assert_eq!(store.load_progress("s").expect("reads").watermarks.len(), 1);
        store.close().expect("closes");
        drop(store);

        let broker = open(dir.path()).await;
        assert!(broker.subscriptions().is_empty());
        broker
            .put_subscription("s", pull("t"))
            .await
            .expect("creates");
        assert_eq!(drain(&broker, "s").await, [0, 1, 2, 3, 4]);
        broker.shutdown().await;
    }
}
