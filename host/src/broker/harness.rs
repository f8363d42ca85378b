//! The plugin test harness: the host's own runtime and delivery engine, on a
//! temporary store and a virtual clock.
//!
//! A [`Harness`] loads one plugin component, subscribes it to an input topic
//! with the settings of a real subscription (ordering, concurrency, retries
//! and backoff, delivery guarantee, config), and lets a test publish
//! messages, move virtual time forward and inspect what happened: every
//! attempt with its outcome, logs and publications, the dead letters, the
//! outputs on other topics and the plugin's kv state. Retries, backoff and
//! ordering behave exactly as in production because the same engine runs
//! them; time moves only when the test says so, and the same inputs give the
//! same trace (backoff jitter comes from a fixed seed, and each round of
//! concurrent attempts is completed in dispatch order).
//!
//! ```no_run
//! use switchyard::harness::{Harness, NewMessage};
//! use std::time::Duration;
//!
//! let wasm = std::fs::read("target/wasm32-wasip2/release/my_plugin.wasm").unwrap();
//! let mut h = Harness::builder(&wasm).max_attempts(3).build().unwrap();
//! h.publish(NewMessage::new("hello").key("user-1"));
//! h.advance(Duration::from_secs(10));
//! assert_eq!(h.outputs("in.out")[0].payload, b"hello");
//! ```

use super::clock::Clock;
use super::code::CodeDir;
use super::log::Log;
pub use super::log::{NewMessage, Published};
use super::plugins::Registry;
use super::runner::{Runner, Traced};
use super::spec::TopicSpec;
pub use super::spec::{Backoff, DeliveryGuarantee, Isolation, Ordering, SubscriptionSpec};
use super::subscriptions::Shared;
use super::BrokerError;
pub use super::DeadLetter;
pub use crate::runtime::egress::{HttpMock, MockResponse, MockRule};
use crate::runtime::{EgressConfig, Runtime, RuntimeConfig};
pub use crate::store::HttpRecord;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// The subscription every harness runs.
pub const SUBSCRIPTION: &str = "harness";
/// The input topic, unless [`HarnessBuilder::topic`] names another.
pub const INPUT_TOPIC: &str = "in";
/// Virtual time the harness starts at: 2026-01-01T00:00:00Z.
const EPOCH_MS: u64 = 1_767_225_600_000;
/// [`Harness::run`] stops after this much virtual time (a plugin retrying
/// for ever with a short delay would otherwise never let it return).
const RUN_LIMIT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Plugin instances one harness may hold at once.
const MAX_INSTANCES: u32 = 64;

/// Why a harness could not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}")]
    Broker(#[from] BrokerError),
    #[error("cannot set up the harness: {0}")]
    Setup(String),
}

/// Settings of the harness's subscription and input topic.
pub struct HarnessBuilder {
    wasm: Vec<u8>,
    spec: SubscriptionSpec,
    partitions: u32,
    http_mock: Option<HttpMock>,
}

impl HarnessBuilder {
    /// Consume from `topic` instead of [`INPUT_TOPIC`].
    pub fn topic(mut self, topic: &str) -> Self {
        self.spec.topic = topic.to_string();
        self
    }

    /// Partitions of the input topic (default 1).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// A value the plugin reads with `config(name)`.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.spec.config.insert(name.to_string(), value.to_string());
        self
    }

    pub fn delivery(mut self, delivery: DeliveryGuarantee) -> Self {
        self.spec.delivery = delivery;
        self
    }

    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.spec.ordering = ordering;
        self
    }

    /// A fresh instance per message (the default) or one reused by each
    /// worker.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.spec.isolation = isolation;
        self
    }

    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.spec.concurrency = concurrency;
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.spec.retry.max_attempts = attempts;
        self
    }

    /// Backoff between attempts: `initial` before the second, growing by
    /// `multiplier` (exponential) up to `max`.
    pub fn backoff(mut self, backoff: Backoff, initial: Duration, max: Duration) -> Self {
        self.spec.retry.backoff = backoff;
        self.spec.retry.initial_ms = initial.as_millis() as u64;
        self.spec.retry.max_ms = max.as_millis() as u64;
        self
    }

    /// Spread each backoff delay over [delay/2, delay] (default on; seeded,
    /// so still repeatable).
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.spec.retry.jitter = jitter;
        self
    }

    /// Per-attempt timeout (wall-clock time: a plugin's own run time is real).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Replace every subscription setting at once (`topic` and `plugin` are
    /// kept as the harness set them unless given).
    pub fn spec(mut self, spec: SubscriptionSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Answer the plugin's outbound HTTP requests from this script, at once
    /// on virtual time (without a mock every request is denied).
    pub fn http_mock(mut self, mock: HttpMock) -> Self {
        self.http_mock = Some(mock);
        self
    }

    /// Compile the plugin and start the subscription.
    pub fn build(self) -> Result<Harness, HarnessError> {
        Harness::start(self)
    }
}

/// One attempt, or a kv conflict that made an acked attempt run again.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub message_id: String,
    pub topic: String,
    pub key: Option<String>,
    pub partition: u32,
    pub offset: u64,
    /// 1 for the first delivery (a kv-conflict re-run keeps the number).
    pub attempt: u32,
    /// Virtual milliseconds since the harness started.
    pub at_ms: u64,
    /// `ack`, `retry`, `dead-letter`, `trap`, `timeout`, `memory-limit` or
    /// `kv-conflict`.
    pub outcome: String,
    pub error: Option<String>,
    /// What became of the message: `retrying`, `acked`, `dead-lettered`,
    /// `failed` (at-most-once) or `kv-conflict` (run again).
    pub state: String,
    /// Log lines (`level: text`), including stdout and stderr.
    pub logs: Vec<String>,
    /// What the attempt published (committed only when it acked).
    pub published: Vec<Output>,
    /// The outbound HTTP requests it made (answered by the HTTP mock).
    pub http: Vec<HttpRecord>,
}

/// A message a plugin published.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Set for messages read back from a topic ([`Harness::outputs`]).
    pub id: Option<String>,
}

/// The host's delivery engine around one plugin, on virtual time.
pub struct Harness {
    // Field order is drop order: the runner (and its worker threads) first.
    runner: Runner,
    log: Arc<Log>,
    store: Store,
    clock: Clock,
    rt: tokio::runtime::Runtime,
    trace: Vec<Attempt>,
    input: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A harness for the component `wasm` with default subscription settings
    /// (those of `PUT /v1/subscriptions`), to adjust before [`HarnessBuilder::build`].
    pub fn builder(wasm: &[u8]) -> HarnessBuilder {
        let spec: SubscriptionSpec = serde_json::from_value(
            serde_json::json!({"topic": INPUT_TOPIC, "plugin": SUBSCRIPTION}),
        )
        .expect("the default subscription settings parse");
        HarnessBuilder {
            wasm: wasm.to_vec(),
            spec,
            partitions: 1,
            http_mock: None,
        }
    }

    /// A harness with default settings.
    pub fn new(wasm: &[u8]) -> Result<Self, HarnessError> {
        Self::builder(wasm).build()
    }

    fn start(b: HarnessBuilder) -> Result<Self, HarnessError> {
        let setup = |e: &dyn std::fmt::Display| HarnessError::Setup(e.to_string());
        let mut spec = b.spec;
        spec.plugin = SUBSCRIPTION.to_string();
        spec.validate()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(&e))?;
        let dir = tempfile::tempdir().map_err(|e| setup(&e))?;
        // Nothing here needs to survive a power loss: never sync the WAL.
        let store =
            Store::open(dir.path(), Some(Duration::from_secs(3600))).map_err(|e| setup(&e))?;
        let clock = Clock::manual(EPOCH_MS);
        let log = Arc::new(Log::load(store.clone(), clock.clone(), true)?);
        let topic = TopicSpec {
            partitions: b.partitions,
            ..TopicSpec::default()
        };
        log.create_topic(&spec.topic, topic)?;
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: MAX_INSTANCES,
            virtual_time: clock.shared_ms(),
            egress: EgressConfig {
                // Denied unless the script answers: a harness never reaches
                // the network.
                mock: Some(Arc::new(match b.http_mock {
                    Some(mock) => mock,
                    None => HttpMock::new(Vec::new()).expect("an empty script is valid"),
                })),
                ..EgressConfig::default()
            },
            ..RuntimeConfig::default()
        })
        .map_err(|e| setup(&e))?;
        let input = spec.topic.clone();
        let runner = rt.block_on(async {
            let plugins = Arc::new(
                Registry::load(
                    store.clone(),
                    runtime,
                    super::DEFAULT_COMPILE_TIMEOUT,
                    code_dir(),
                    None,
                    super::DEFAULT_WORKER_THREADS,
                )
                .await?,
            );
            plugins.put(SUBSCRIPTION, b.wasm).await?;
            let topics = vec![log.get(&input).expect("created above")];
            let shared = Arc::new(Shared::new(SUBSCRIPTION, spec));
            let (_control, control_rx) = tokio::sync::mpsc::unbounded_channel();
            let progress = store.load_progress(SUBSCRIPTION)?;
            let mut runner = Runner::start(
                shared,
                store.clone(),
                log.clone(),
                plugins,
                topics,
                control_rx,
                progress,
                None,
            )?;
            runner.trace = Some(Vec::new());
            Ok::<_, BrokerError>(runner)
        })?;
        Ok(Self {
            runner,
            log,
            store,
            clock,
            rt,
            trace: Vec::new(),
            input,
            _dir: dir,
        })
    }

    /// Publish one message to the input topic at the current virtual time,
    /// then deliver everything that is due.
    pub fn publish(&mut self, message: NewMessage) -> Result<Published, HarnessError> {
        let mut published = self.publish_all(vec![message])?;
        Ok(published.remove(0))
    }

    /// Publish a batch to the input topic, then deliver everything due.
    pub fn publish_all(
        &mut self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Published>, HarnessError> {
        let (log, input) = (self.log.clone(), self.input.clone());
        let published = self.rt.block_on(log.publish(&input, messages))?;
        self.settle();
        Ok(published)
    }

    /// Move virtual time forward by `by`, running each retry and delayed
    /// message at its due time on the way.
    pub fn advance(&mut self, by: Duration) {
        let target = self.clock.now_ms() + by.as_millis() as u64;
        while let Some(due) = self.runner.next_due().filter(|due| *due <= target) {
            self.clock.set(due);
            self.settle();
        }
        self.clock.set(target);
        self.settle();
    }

    /// Move virtual time forward until nothing is waiting (every message
    /// acked, dead-lettered or failed), at most 30 virtual days.
    pub fn run(&mut self) {
        let limit = self.clock.now_ms() + RUN_LIMIT.as_millis() as u64;
        while let Some(due) = self.runner.next_due().filter(|due| *due <= limit) {
            self.clock.set(due);
            self.settle();
        }
    }

    fn settle(&mut self) {
        self.rt.block_on(self.runner.settle());
        let traced = self.runner.trace.as_mut().map(std::mem::take);
        for t in traced.unwrap_or_default() {
            self.trace.push(attempt(t));
        }
    }

    /// Virtual milliseconds since the harness started.
    pub fn elapsed_ms(&self) -> u64 {
        self.clock.now_ms() - EPOCH_MS
    }

    /// Every attempt so far, in the order they were completed.
    pub fn attempts(&self) -> &[Attempt] {
        &self.trace
    }

    /// The attempts of one message.
    pub fn attempts_of(&self, message_id: &str) -> Vec<&Attempt> {
        self.trace
            .iter()
            .filter(|a| a.message_id == message_id)
            .collect()
    }

    /// Every message on `topic` (the plugin's outputs), by partition and offset.
    pub fn outputs(&self, topic: &str) -> Vec<Output> {
        let Some(t) = self.log.get(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for partition in 0..t.partitions() {
            let head = t.head(partition) as usize;
            let entries = self.log.read(topic, partition, 0, head).unwrap_or_default();
            out.extend(entries.into_iter().map(|e| Output {
                topic: topic.to_string(),
                key: e.key,
                payload: e.payload,
                headers: e.headers,
                id: Some(e.id),
            }));
        }
        out
    }

    /// The subscription's dead letters.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.store
            .list_dead_letters(SUBSCRIPTION, usize::MAX)
            .unwrap_or_default()
    }

    /// The plugin's committed kv value under `key`.
    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        self.store.kv_get(SUBSCRIPTION, key).ok().flatten()
    }

    /// The plugin's committed kv entries whose keys start with `prefix`.
    pub fn kv_entries(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.store
            .kv_list(SUBSCRIPTION, prefix, None, usize::MAX)
            .unwrap_or_default()
    }
}

/// Where the harness keeps compiled components between runs:
/// `$SWITCHYARD_CACHE_DIR`, else `~/.cache/switchyard/compiled`. Compiling a
/// Python or JavaScript component takes tens of seconds on a small machine;
/// mapping its cached code takes milliseconds. The directory is trusted like
/// a data directory: its files are machine code. Code no run has used for
/// [`CACHE_UNUSED_FOR`] is deleted.
fn code_dir() -> Option<CodeDir> {
    let dir = std::env::var_os("SWITCHYARD_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| std::path::PathBuf::from(home).join(".cache/switchyard/compiled"))
        })
        .map(CodeDir::new)?;
    dir.prune(CACHE_UNUSED_FOR);
    Some(dir)
}

/// How long compiled code may go unused in the harness's cache.
const CACHE_UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

fn attempt(t: Traced) -> Attempt {
    Attempt {
        message_id: t.message.id.clone(),
        topic: t.topic,
        key: t.message.key.clone(),
        partition: t.partition,
        offset: t.offset,
        attempt: t.attempt.attempt,
        at_ms: t.attempt.started_ms.saturating_sub(EPOCH_MS),
        outcome: t.attempt.outcome,
        error: t.attempt.error,
        state: t.state.to_string(),
        logs: t.attempt.logs,
        http: t.attempt.http,
        published: t
            .published
            .into_iter()
            .map(|p| Output {
                topic: p.topic,
                key: p.key,
                payload: p.payload,
                headers: p.headers,
                id: None,
            })
            .collect(),
    }
}
