//! The broker: topics, publishing, plugins, subscriptions and their delivery
//! engine (ordering lanes, retries with backoff, dead letters, guarantees).
//!
//! It depends on [`crate::runtime`] to run plugins and on [`crate::store`] to
//! persist, and on nothing else: no HTTP, no RocksDB or wasmtime types.
//!
//! Architecture invariant: a publish is acknowledged only after its batch is
//! durable (synced WAL), and subscriptions only ever see durable messages.
//! API boundary: [`Broker`] and the plain data types re-exported here.

mod backoff;
mod blobs;
mod clock;
mod code;
pub mod compile;
pub mod harness;
mod journaled;
mod kv;
mod log;
mod placement;
mod plugins;
mod progress;
mod recent;
mod retention;
mod runner;
pub mod shared;
mod shared_gc;
mod shared_retention;
mod space;
mod spec;
mod subscriptions;
mod watch;
mod worker;

use crate::histogram::{Histogram, HistogramSnapshot};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::{Store, StoreError};
use crate::telemetry::{self, TraceContext};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::store::{AttemptRecord, DeadLetter, HttpRecord, LedgerEntry, StoredMessage};
pub use clock::Clock;
pub use journaled::DEFAULT_COMPACT_BYTES as DEFAULT_JOURNAL_COMPACT_BYTES;
pub use log::{
    partition_for_key, LogEntry, NewMessage, Published, MAX_DELAY_MS, MAX_PAYLOAD_BYTES,
};
pub use plugins::{PluginInfo, PluginVersionInfo, MAX_PLUGIN_BYTES};
pub use runner::{Lease, Settle, Settled, MAX_LEASE_BATCH, MAX_WAIT};
pub use space::{DiskSnapshot, DEFAULT_RESERVE_MIB};
pub use spec::{
    parse_plugin_ref, validate_resource_name, validate_topic_name, Backoff, DeliveryGuarantee,
    EgressSpec, Filter, Isolation, LedgerMode, Mode, Ordering, RetrySpec, Start, SubscriptionSpec,
    TopicSpec, MAX_LEASE_MS,
};
pub use subscriptions::{AttemptSnapshot, SubscriptionInfo, SubscriptionStats};
pub use watch::{DeliveryEvent, TopicWatch, EVENT_BUFFER};
pub use worker::{PoolSnapshot, DEFAULT_WORKER_THREADS};

/// Errors the broker reports to its callers; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Malformed or out-of-range input (400).
    #[error("{0}")]
    Invalid(String),
    /// No such topic, partition, plugin or subscription (404).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts existing state (409).
    #[error("{0}")]
    Conflict(String),
    /// The input is over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A plugin upload was refused (422 — the bytes are not a usable plugin).
    #[error("{0}")]
    PluginRejected(String),
    /// Temporarily unable to serve, e.g. shutting down or compile timed out (503).
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full (507).
    #[error("{0}")]
    NoSpace(String),
    /// A storage failure (500).
    #[error("storage failure: {0}")]
    Store(String),
    /// Not available in this host's mode, e.g. a part of cluster mode not
    /// built yet (501).
    #[error("{0}")]
    Unsupported(String),
}

impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSpace(t) => BrokerError::NoSpace(t),
            other => BrokerError::Store(other.to_string()),
        }
    }
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where RocksDB keeps its files.
    pub data_dir: PathBuf,
    pub runtime: RuntimeConfig,
    /// Longest a plugin upload may take to compile before it is refused.
    pub compile_timeout: Duration,
    /// `None`: sync the WAL before answering each publish (group commit).
    /// `Some(d)`: answer once written to the WAL and sync every `d`.
    pub fsync_interval: Option<Duration>,
    /// Where compiled plugins are kept between runs (`<data_dir>/code`).
    pub code_dir: PathBuf,
    /// Most threads running plugin calls at once, across all subscriptions.
    pub worker_threads: usize,
    /// Compile uploads in processes of this binary, held to limits (else on
    /// a blocking thread of the host).
    pub compiler: Option<compile::Compiler>,
    /// Free bytes kept on the data directory's filesystem (see `space`).
    pub min_free_disk: u64,
    /// Cluster mode: topics and plugins live there, shared with other hosts.
    pub shared: Option<shared::SharedBackend>,
    /// Cluster mode: bytes appended to a subscription's journal since its
    /// last snapshot that make the next one (docs/cluster.md).
    pub journal_compact_bytes: u64,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            code_dir: data_dir.join("code"),
            data_dir,
            runtime: RuntimeConfig::default(),
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            fsync_interval: None,
            worker_threads: DEFAULT_WORKER_THREADS,
            compiler: None,
            min_free_disk: DEFAULT_RESERVE_MIB << 20,
            shared: None,
            journal_compact_bytes: journaled::DEFAULT_COMPACT_BYTES,
        }
    }
}

/// 60 s: a large Python or JS component compiles in seconds on 2 cores;
/// anything slower is refused rather than left to hog a core.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Information about a topic.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    pub retention_ms: u64,
    pub dedup_window_ms: u64,
    /// Per partition, the offset the next message gets.
    pub offsets: Vec<u64>,
    /// Per partition, the oldest offset still stored (retention deletes below).
    pub first_offsets: Vec<u64>,
    /// Per partition, about how many bytes its stored messages take (the
    /// store's estimate: compressed as stored on disk, plus what the
    /// memtable holds uncompressed), measured every 5 s; empty until the
    /// first measurement.
    pub bytes: Vec<u64>,
}

/// The running broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<log::Log>,
    plugins: Arc<plugins::Registry>,
    subscriptions: Arc<subscriptions::Subscriptions>,
    /// Stops background work (retention).
    background: tokio::sync::watch::Sender<bool>,
    retention: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    store: Store,
    /// Messages per publish call.
    publish_sizes: Histogram,
    /// Cluster mode: where topics live instead of `log`.
    shared: Option<Arc<shared::Shared>>,
    /// Cluster mode: subscriptions' settings and which host runs which.
    cluster: Option<shared::SharedBackend>,
    /// Cluster mode: the task placing subscriptions on this host.
    placement: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Cluster mode: how API calls ask that task for a beat now.
    kick: Option<placement::Kick>,
}

/// Host-wide figures for metrics.
#[derive(Debug, Clone, Default)]
pub struct HostStats {
    /// Messages per publish call.
    pub publish_batch: HistogramSnapshot,
    /// Submissions merged into each store write.
    pub group_commit: HistogramSnapshot,
    /// Store writes answered with an error.
    pub write_failures: u64,
    /// Cluster mode: commits refused by fencing (another host had taken
    /// the subscription over).
    pub fenced_commits: u64,
    /// Cluster mode: subscriptions' journals compacted (a snapshot
    /// appended, the entries before it dropped).
    pub journal_compactions: u64,
    /// Seconds accepted plugin uploads took to compile.
    pub compile_seconds: HistogramSnapshot,
}

impl Broker {
    /// Open the store, load topics, plugins and subscriptions, and resume
    /// delivery where it stopped. Must be called inside a Tokio runtime.
    pub async fn open(config: BrokerConfig) -> Result<Self, BrokerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            BrokerError::Store(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let store = Store::open(&config.data_dir, config.fsync_interval)?;
        let runtime = Runtime::new(config.runtime.clone())
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let space = space::Space::watch(&config.data_dir, config.min_free_disk)?;
        let log =
            Arc::new(log::Log::load(store.clone(), Clock::system(), false)?.with_space(space));
        let mut registry = plugins::Registry::load(
            store.clone(),
            runtime,
            config.compile_timeout,
            Some(code::CodeDir::new(&config.code_dir)),
            Some(blobs::WasmDir::new(config.data_dir.join("plugins"))),
            config.worker_threads,
        )
        .await?;
        if let Some(compiler) = config.compiler.clone() {
            registry = registry.compile_in_processes(compiler);
        }
        if let Some(backend) = &config.shared {
            registry = registry.shared_in(backend.meta.clone());
        }
        let plugins = Arc::new(registry);
        let subscriptions = Arc::new(
            subscriptions::Subscriptions::load(
                store.clone(),
                log.clone(),
                plugins.clone(),
                config.shared.is_some(),
            )
            .await?,
        );
        let (background, stop) = tokio::sync::watch::channel(false);
        let retention = tokio::spawn(retention::run(
            log.clone(),
            subscriptions.clone(),
            stop.clone(),
        ));
        let shared = config
            .shared
            .as_ref()
            .map(|backend| Arc::new(shared::Shared::new(backend.log.clone(), Clock::system())));
        let (placement, kick) = match (&config.shared, &shared) {
            (Some(backend), Some(log)) => {
                let (kick, beats) = placement::Placement::kick();
                let task = tokio::spawn(
                    placement::Placement {
                        subscriptions: subscriptions.clone(),
                        plugins: plugins.clone(),
                        log: log.clone(),
                        backend: backend.clone(),
                        compact_bytes: config.journal_compact_bytes,
                    }
                    .run(kick.clone(), beats, stop),
                );
                (Some(task), Some(kick))
            }
            _ => (None, None),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                plugins,
                subscriptions,
                background,
                retention: std::sync::Mutex::new(Some(retention)),
                store,
                publish_sizes: Histogram::new(crate::histogram::SIZES),
                shared,
                cluster: config.shared,
                placement: std::sync::Mutex::new(placement),
                kick,
            }),
        })
    }

    /// Create a topic, or update an existing one's retention and dedup window
    /// (its partition count cannot change).
    /// Returns whether it was created.
    pub async fn create_topic(
        &self,
        name: &str,
        spec: TopicSpec,
    ) -> Result<(TopicInfo, bool), BrokerError> {
        if let Some(shared) = &self.inner.shared {
            return shared.create_topic(name, spec).await;
        }
        let (log, owned) = (self.inner.log.clone(), name.to_string());
        let created = tokio::task::spawn_blocking(move || log.create_topic(&owned, spec))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))??;
        if created {
            self.inner.subscriptions.topic_created(name);
        }
        Ok((self.inner.log.topic_info(name)?, created))
    }

    /// Whether what the broker stores on can be reached now (always, in
    /// the embedded mode); `Err` says why not.
    pub fn reachable(&self) -> Result<(), String> {
        match &self.inner.shared {
            Some(shared) => shared.reachable(),
            None => Ok(()),
        }
    }

    /// Is this host in cluster mode (topics in a shared log)?
    pub fn clustered(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// In cluster mode, what is read of a subscription's state is read on
    /// the host running it: refuse elsewhere.
    fn here(&self, name: &str) -> Result<(), BrokerError> {
        if !self.clustered() || self.inner.subscriptions.info(name).is_ok() {
            return Ok(());
        }
        if !self.inner.subscriptions.is_known(name) {
            return Err(BrokerError::NotFound(format!(
                "subscription {name:?} does not exist"
            )));
        }
        Err(BrokerError::Unavailable(format!(
            "subscription {name:?} is not running on this host at the moment (it is starting, or moving between hosts); try again"
        )))
    }

    /// Free space on the data directory's filesystem, and the reserve.
    pub fn disk(&self) -> DiskSnapshot {
        self.inner.log.space().snapshot()
    }

    /// Delete a topic with its messages and ids (see
    /// `Subscriptions::delete_topic`); returns the subscriptions deleted
    /// with it (`force`).
    pub async fn delete_topic(&self, name: &str, force: bool) -> Result<Vec<String>, BrokerError> {
        if self.clustered() {
            return self.delete_shared_topic(name, force).await;
        }
        self.inner.subscriptions.delete_topic(name, force).await
    }

    /// The host's plugin threads and instance pool, for metrics.
    pub fn workers(&self) -> PoolSnapshot {
        let mut snapshot = self.inner.plugins.workers().snapshot();
        let runtime = self.inner.plugins.runtime();
        (snapshot.instances, snapshot.instances_max) = runtime.instances();
        let (running, waiting, slots) = runtime.long_calls();
        snapshot.long_calls_running = running as u64;
        snapshot.long_calls_waiting = waiting as u64;
        snapshot.long_call_slots = slots as u64;
        snapshot
    }

    pub async fn topics(&self) -> Result<Vec<TopicInfo>, BrokerError> {
        match &self.inner.shared {
            Some(shared) => shared.topics().await,
            None => Ok(self.inner.log.topics()),
        }
    }

    pub async fn topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        match &self.inner.shared {
            Some(shared) => shared.topic_info(name).await,
            None => self.inner.log.topic_info(name),
        }
    }

    /// Append messages to a topic; returns once they are durable.
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Published>, BrokerError> {
        self.publish_traced(topic, messages, None).await
    }

    /// [`Broker::publish`] in the trace of `parent` (a producer's
    /// `traceparent`): the publish is a span of that trace (or of a new
    /// one), and each message without a valid `traceparent` header of its
    /// own gets one naming that span, which its attempts continue. Without
    /// trace contexts ([`telemetry::carrying`]) it is [`Broker::publish`].
    pub async fn publish_traced(
        &self,
        topic: &str,
        mut messages: Vec<NewMessage>,
        parent: Option<TraceContext>,
    ) -> Result<Vec<Published>, BrokerError> {
        self.inner.publish_sizes.observe(messages.len() as f64);
        if !telemetry::carrying() {
            return self.append(topic, messages).await;
        }
        let mut span = telemetry::start(
            "publish",
            telemetry::Kind::Producer,
            parent.as_ref(),
            std::time::SystemTime::now(),
        );
        span.set_text("messaging.destination.name", topic);
        span.set_number("messaging.batch.message_count", messages.len() as u64);
        let context = *span.context();
        for m in &mut messages {
            telemetry::stamp(&mut m.headers, &context, false);
        }
        let published = self.append(topic, messages).await;
        if let Err(e) = &published {
            span.fail(e.to_string());
        }
        span.end();
        published
    }

    /// Store published messages where this host keeps topics.
    async fn append(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Published>, BrokerError> {
        match &self.inner.shared {
            Some(shared) => shared.publish(topic, messages).await,
            None => self.inner.log.publish(topic, messages).await,
        }
    }

    /// Host-wide figures for metrics.
    pub fn host_stats(&self) -> HostStats {
        let store = self.inner.store.stats();
        HostStats {
            publish_batch: self.inner.publish_sizes.snapshot(),
            group_commit: store.group_commit,
            write_failures: store.write_failures,
            fenced_commits: self.inner.subscriptions.fenced_commits(),
            journal_compactions: self.inner.subscriptions.journal_compactions(),
            compile_seconds: self.inner.plugins.compile_seconds(),
        }
    }

    /// Read a partition from `from`, at most `limit` messages.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BrokerError> {
        if let Some(shared) = &self.inner.shared {
            return shared.read(topic, partition, from, limit).await;
        }
        let (log, topic) = (self.inner.log.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || log.read(&topic, partition, from, limit))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?
    }

    /// Validate, compile and store a plugin upload as the next version of `name`.
    /// Returns the plugin and whether a new version was created (re-uploading
    /// the latest version's exact bytes creates none).
    pub async fn put_plugin(
        &self,
        name: &str,
        wasm: Vec<u8>,
    ) -> Result<(PluginInfo, bool), BrokerError> {
        self.inner.log.space().check()?;
        self.inner.plugins.put(name, wasm).await
    }

    /// Delete a plugin version (`name@N`) or the whole plugin (`name`);
    /// refused with [`BrokerError::Conflict`] while a subscription uses it.
    pub async fn delete_plugin(&self, reference: &str) -> Result<(), BrokerError> {
        if let Some(backend) = &self.inner.cluster {
            // A race with a subscription created meanwhile on another host
            // is not excluded: that subscription then waits for its plugin.
            let users: Vec<(String, String)> = backend
                .subscriptions
                .list()
                .await?
                .into_iter()
                .map(|(name, record, _)| (name, record.spec.plugin))
                .collect();
            return self.inner.plugins.delete_shared(reference, &users).await;
        }
        self.inner.subscriptions.delete_plugin(reference).await
    }

    pub async fn plugins(&self) -> Result<Vec<PluginInfo>, BrokerError> {
        self.inner.plugins.list_any().await
    }

    pub async fn plugin(&self, name: &str) -> Result<PluginInfo, BrokerError> {
        self.inner.plugins.info_any(name).await
    }

    /// Create or update a subscription. Returns whether it was created.
    pub async fn put_subscription(
        &self,
        name: &str,
        spec: SubscriptionSpec,
    ) -> Result<(SubscriptionInfo, bool), BrokerError> {
        if self.clustered() {
            return self.put_shared_subscription(name, spec).await;
        }
        self.inner.subscriptions.put(name, spec).await
    }

    /// Every subscription (in cluster mode: every host's, with stats for
    /// those running here).
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionInfo>, BrokerError> {
        if self.clustered() {
            return self.list_shared_subscriptions().await;
        }
        Ok(self.subscriptions())
    }

    /// One subscription (in cluster mode: any host's, with stats if it
    /// runs here).
    pub async fn get_subscription(&self, name: &str) -> Result<SubscriptionInfo, BrokerError> {
        if self.clustered() {
            return self.shared_subscription(name).await;
        }
        self.subscription(name)
    }

    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.inner.subscriptions.list()
    }

    pub fn subscription(&self, name: &str) -> Result<SubscriptionInfo, BrokerError> {
        self.inner.subscriptions.info(name)
    }

    /// Lease up to `max` messages of a pull subscription for `lease` (its
    /// `lease_ms` if `None`), waiting up to `wait` (at most 20 s) for the
    /// first to be ready.
    pub async fn lease(
        &self,
        name: &str,
        max: usize,
        lease: Option<Duration>,
        wait: Duration,
    ) -> Result<Vec<Lease>, BrokerError> {
        self.here(name)?;
        let desk = self.inner.subscriptions.desk(name)?;
        Ok(desk.lease(max, lease, wait).await)
    }

    /// Settle leases of a pull subscription: one answer per item, in order.
    pub fn settle(
        &self,
        name: &str,
        items: Vec<(String, Settle)>,
    ) -> Result<Vec<Settled>, BrokerError> {
        self.here(name)?;
        Ok(self.inner.subscriptions.desk(name)?.settle(items))
    }

    /// Hand leases back unused (their response could not be delivered): the
    /// messages are leased again later, no attempt counted.
    pub fn release(&self, name: &str, lease_ids: &[String]) {
        if let Ok(desk) = self.inner.subscriptions.desk(name) {
            desk.release(lease_ids);
        }
    }

    /// Watch a topic for new durable messages (the API's live tail).
    pub async fn watch_topic(&self, name: &str) -> Result<TopicWatch, BrokerError> {
        if let Some(shared) = &self.inner.shared {
            return shared.watch(name).await;
        }
        let topic = self
            .inner
            .log
            .get(name)
            .ok_or_else(|| BrokerError::NotFound(format!("topic {name:?} does not exist")))?;
        Ok(TopicWatch::new(topic))
    }

    /// A subscription's attempts as they complete, from now on.
    pub fn subscription_events(
        &self,
        name: &str,
    ) -> Result<tokio::sync::broadcast::Receiver<DeliveryEvent>, BrokerError> {
        self.here(name)?;
        self.inner.subscriptions.events(name)
    }

    /// Delete a subscription with its progress, ledger and dead letters.
    /// Recreating it later starts afresh (per its `start` setting).
    pub async fn delete_subscription(&self, name: &str) -> Result<(), BrokerError> {
        if self.clustered() {
            return self.delete_shared_subscription(name).await;
        }
        self.inner.subscriptions.delete(name).await
    }

    /// Pause a subscription (no new deliveries; in-flight attempts finish) or
    /// resume it. Survives restarts.
    pub async fn set_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<SubscriptionInfo, BrokerError> {
        if self.clustered() {
            return self.set_shared_paused(name, paused).await;
        }
        self.inner.subscriptions.set_paused(name, paused).await
    }

    /// A subscription's delivery record of one message: its state and every
    /// attempt (start, duration, outcome, error, plugin version).
    pub fn ledger(&self, name: &str, id: &str) -> Result<LedgerEntry, BrokerError> {
        self.here(name)?;
        self.inner.subscriptions.ledger(name, id)
    }

    /// One dead letter of a subscription, by message id.
    pub fn dead_letter(&self, name: &str, id: &str) -> Result<DeadLetter, BrokerError> {
        self.here(name)?;
        self.inner.subscriptions.dead_letter(name, id)
    }

    /// Delete a subscription's dead letters: all, or those with these message ids.
    /// Returns how many were deleted.
    pub async fn purge_dead_letters(
        &self,
        name: &str,
        ids: Option<Vec<String>>,
    ) -> Result<usize, BrokerError> {
        self.here(name)?;
        self.inner.subscriptions.purge(name, ids.as_deref()).await
    }

    /// Send a subscription's dead letters (all, or those with these message
    /// ids) back into that subscription only; other subscriptions of the topic
    /// never see them again. Attempts start over. Returns how many.
    pub async fn redrive_dead_letters(
        &self,
        name: &str,
        ids: Option<Vec<String>>,
    ) -> Result<usize, BrokerError> {
        self.here(name)?;
        self.inner.subscriptions.redrive(name, ids.as_deref()).await
    }

    /// A subscription's kv entries whose keys start with `prefix`, after the
    /// key `after` when given, in key order, at most `limit`. Shows what is
    /// written to the store (an ack's kv writes appear once its batch is).
    pub fn kv_entries(
        &self,
        name: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BrokerError> {
        self.here(name)?;
        self.inner
            .subscriptions
            .kv_entries(name, prefix, after, limit)
    }

    /// A subscription's dead letters, at most `limit`.
    pub fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        self.here(name)?;
        self.inner.subscriptions.dead_letters(name, limit)
    }

    /// Stop delivering: in-flight attempts finish (within their timeout) and
    /// their outcomes are committed; everything written is flushed.
    pub async fn shutdown(&self) {
        self.inner.background.send_replace(true);
        let placement = self.inner.placement.lock().expect("placement lock").take();
        if let Some(task) = placement {
            // It stops what runs here and gives the leases up.
            if let Err(e) = task.await {
                tracing::error!(error = %e, "placement task ended abnormally");
            }
        }
        let retention = self.inner.retention.lock().expect("retention lock").take();
        if let Some(task) = retention {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "retention task ended abnormally");
            }
        }
        self.inner.subscriptions.shutdown().await;
        if let Err(e) = self.inner.log.store().close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub(crate) fn now_ms() -> u64 {
    Clock::system().now_ms()
}
