//! Topics in a log that several hosts share (cluster mode,
//! docs/cluster.md): the seam between the broker and that log.
//!
//! The embedded mode keeps its topics in [`super::log::Log`], which assigns
//! offsets itself and commits them with subscriptions' progress in one
//! store write. A shared log assigns offsets where it stores (a stream's
//! sequence), so the seam sits at what the broker asks for: the broker
//! still validates and partitions every publish here, exactly as the
//! embedded mode does (so a key lands in the same partition in both), and
//! the [`SharedLog`] stores each partition's messages and settings.
//!
//! Plugins' versions and components live in a [`SharedMeta`]: records
//! changed by compare-and-set (revision numbers), components by digest.

use super::log::{check_messages, partition_for_key, LogEntry, NewMessage, Published, Topic};
pub use super::plugins::PluginRecord;
pub use super::shared_gc::{collect_leftovers, GRACE_MS as LEFTOVER_GRACE_MS};
pub use super::spec::SubscriptionSpec;
use super::spec::{validate_topic_name, TopicSpec};
use super::{BrokerError, Clock, TopicInfo};
use crate::store::StoredMessage;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A message handed to a [`SharedLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMessage {
    /// The producer-given id, if any.
    pub id: Option<String>,
    /// Deduplicate by `id` within the topic's window.
    pub dedup: bool,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    /// Deliver no sooner than this (ms since the epoch).
    pub deliver_at_ms: Option<u64>,
}

/// A message read back from a [`SharedLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    pub offset: u64,
    pub message: SharedMessage,
    /// When it was stored (ms since the epoch).
    pub timestamp_ms: u64,
}

/// Where a message was appended: its offset, and whether an earlier
/// publish with its id had stored it (the offset is then that one's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedAppended {
    pub offset: u64,
    pub duplicate: bool,
}

/// A partition's stored range and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedPartition {
    /// The oldest offset still stored (the next one when empty).
    pub first: u64,
    /// The offset the next message gets.
    pub next: u64,
    pub bytes: u64,
}

/// A log several hosts share: topics' settings, and per partition an
/// append-only sequence of messages at dense offsets. Every call may be
/// made by any host at any time; the implementation keeps them consistent
/// (settings by compare-and-set, appends by the store's own sequence).
pub trait SharedLog: Send + Sync + std::fmt::Debug + 'static {
    /// Every topic, with its settings.
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, TopicSpec)>, BrokerError>>;
    /// A topic's settings, if it exists.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<TopicSpec>, BrokerError>>;
    /// Create a topic (`true`), or give an existing one these settings
    /// (`false`); [`BrokerError::Conflict`] if it has another partition
    /// count.
    fn put<'a>(
        &'a self,
        name: &'a str,
        spec: &'a TopicSpec,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Delete a topic with its messages.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Append `messages` to a partition in order, each durable before the
    /// answer; [`BrokerError::NotFound`] if the partition does not exist.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        messages: Vec<SharedMessage>,
    ) -> BoxFuture<'a, Result<Vec<SharedAppended>, BrokerError>>;
    /// Up to `limit` messages of a partition from offset `from`, in order.
    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SharedEntry>, BrokerError>>;
    /// Like [`SharedLog::read`], answered by any copy of the partition: one
    /// behind may return fewer messages than are stored, never with a gap.
    /// For readers that read again for the rest (runners).
    fn scan<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SharedEntry>, BrokerError>> {
        self.read(topic, partition, from, limit)
    }
    /// A partition's stored range and size.
    fn partition<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<SharedPartition, BrokerError>>;
    /// Drop a partition's messages below offset `before` (retention).
    fn trim<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        before: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Whether the log can be reached now; `Err` says why not.
    fn reachable(&self) -> Result<(), String>;
    /// For each message appended to any partition of `topic` by any host,
    /// its partition (`None`: not known), heard as it arrives (it is
    /// readable once stored, a moment later). Ends with the topic or the
    /// connection.
    fn appends<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Option<u32>>, BrokerError>>;
    /// The offset a partition's next message gets, as a copy of the log
    /// knows it: cheaper than [`SharedLog::partition`], and perhaps behind
    /// it for a moment.
    fn head<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<u64, BrokerError>>;
}

/// What hosts share besides the log: plugin records, each changed only
/// if it is still at the revision its writer read, and components by name.
pub trait SharedMeta: Send + Sync + std::fmt::Debug + 'static {
    /// The names of every plugin with a record.
    fn plugin_names(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>>;
    /// A plugin's record and its revision, if it has one.
    fn plugin<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(PluginRecord, u64)>, BrokerError>>;
    /// Store `record` if the plugin's record is still at `revision` (0: it
    /// has none); `false` if another host changed it since.
    fn put_plugin<'a>(
        &'a self,
        name: &'a str,
        record: &'a PluginRecord,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Remove the plugin's record if it is still at `revision`; `false` if
    /// another host changed it since.
    fn delete_plugin<'a>(
        &'a self,
        name: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Keep a component under its digest (durable before the answer).
    fn put_component<'a>(
        &'a self,
        digest: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// A component by its digest, if kept.
    fn component<'a>(
        &'a self,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BrokerError>>;
    /// Every kept component's digest, with when it was last stored (ms
    /// since the epoch).
    fn components(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, BrokerError>>;
    /// Remove a kept component.
    fn delete_component<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
}

/// A subscription as hosts share it: its settings, and which incarnation
/// of its name it is. Each creation of a name is a new incarnation with a
/// journal of its own, so nothing of a deleted subscription (whatever a
/// host that died while deleting it left) is ever read by a new one (D17).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionRecord {
    pub spec: SubscriptionSpec,
    pub incarnation: u64,
    /// Paused: no new deliveries, wherever it runs.
    #[serde(default)]
    pub paused: bool,
}

impl SubscriptionRecord {
    /// Whether a runner started with `self` runs `other` too (it differs
    /// at most in being paused).
    pub fn same_run(&self, other: &Self) -> bool {
        self.spec == other.spec && self.incarnation == other.incarnation
    }

    /// The name of this incarnation's journal.
    pub fn journal(&self, name: &str) -> String {
        format!("{name}-{:016x}", self.incarnation)
    }
}

/// A subscription's name, record and revision.
pub type ListedSubscription = (String, SubscriptionRecord, u64);

/// What a subscription has committed as finished, as the host running it
/// last told: per topic, each partition's watermark (every offset below
/// it is finished). Retention never trims at or above it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Watermarks {
    /// The incarnation they are of (those of an earlier one count as 0).
    pub incarnation: u64,
    pub topics: std::collections::BTreeMap<String, Vec<u64>>,
}

/// Subscriptions' records, shared by every host: each changed only if it
/// is still at the revision its writer read (0: none yet).
pub trait SharedSubscriptions: Send + Sync + std::fmt::Debug + 'static {
    /// Every subscription with its record and revision.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedSubscription>, BrokerError>>;
    /// One subscription's record and revision, if it exists.
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(SubscriptionRecord, u64)>, BrokerError>>;
    /// Store `record` if the key is still at `revision`; `false` if
    /// another host changed it since.
    fn put<'a>(
        &'a self,
        name: &'a str,
        record: &'a SubscriptionRecord,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Remove the record if it is still at `revision`.
    fn delete<'a>(
        &'a self,
        name: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
    /// Store a subscription's committed watermarks (the last write wins).
    fn put_watermarks<'a>(
        &'a self,
        name: &'a str,
        marks: &'a Watermarks,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Every subscription's last stored watermarks.
    fn watermarks(&self) -> BoxFuture<'_, Result<Vec<(String, Watermarks)>, BrokerError>>;
    /// One subscription's last stored watermarks, if any are.
    fn watermarks_of<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Watermarks>, BrokerError>>;
    /// Forget a subscription's watermarks.
    fn delete_watermarks<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
}

/// Why an append to a [`SharedJournal`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another host wrote the journal since this one read or wrote it:
    /// nothing of the append was stored, and this host's copy of the
    /// state is stale.
    #[error("{0}")]
    Fenced(String),
    /// Not stored, or not known to be: replay before writing again.
    #[error("{0}")]
    Failed(String),
}

/// A subscription's state journal as its one writer sees it: entries in
/// the order appended, each append whole or not at all, and refused if
/// anyone else appended since this writer last read or wrote.
pub trait SharedJournal: Send + 'static {
    /// Every entry, in order; later appends expect the last one.
    fn replay(&mut self) -> BoxFuture<'_, Result<Vec<Vec<u8>>, BrokerError>>;
    /// Append `entries` as one whole.
    fn append(&mut self, entries: Vec<Vec<u8>>) -> BoxFuture<'_, Result<(), AppendError>>;
    /// Append `entries` — a snapshot of the whole state, which replaces
    /// every entry before it — as one whole, then drop the entries before
    /// it (a failure to drop them is only logged: they are superseded).
    fn compact(&mut self, entries: Vec<Vec<u8>>) -> BoxFuture<'_, Result<(), AppendError>>;
}

/// Which host runs which subscription: live hosts, placement over them,
/// leases, and the subscriptions' journals.
pub trait SharedRunners: Send + Sync + std::fmt::Debug + 'static {
    /// This host's name among the live hosts.
    fn host(&self) -> &str;
    /// How often a host looks again at what it should run; a lease lives
    /// a few of these.
    fn beat(&self) -> std::time::Duration;
    /// The live hosts, sorted.
    fn live(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>>;
    /// Leave the live hosts at once (a clean stop), so others take over
    /// this host's work without waiting for its entry to expire.
    fn leave(&self) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// The host among `live` that `unit` belongs to (the same answer on
    /// every host for the same list).
    fn owner(&self, live: &[String], unit: &str) -> Option<String>;
    /// Take `unit`'s lease: its revision, or `None` if another host holds it.
    fn acquire<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<u64>, BrokerError>>;
    /// Renew a lease held at `revision`: the new revision, or `None` if it
    /// was lost meanwhile.
    fn renew<'a>(
        &'a self,
        unit: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, BrokerError>>;
    /// Give a lease up at once (if still at `revision`).
    fn release<'a>(
        &'a self,
        unit: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// A journal of a subscription's state
    /// ([`SubscriptionRecord::journal`]), made if missing.
    fn journal<'a>(
        &'a self,
        journal: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn SharedJournal>, BrokerError>>;
    /// Delete a journal, if it exists.
    fn delete_journal<'a>(&'a self, journal: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Every journal, with when it was made (ms since the epoch).
    fn journals(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, BrokerError>>;
    /// The host holding `unit`'s lease now, if any.
    fn holder<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<String>, BrokerError>>;
    /// Hand `request` to `host`'s [`Answerer`] and wait (at most
    /// `timeout`) for its answer. [`BrokerError::Unavailable`] if the host
    /// is gone or did not answer in time.
    fn ask<'a>(
        &'a self,
        host: &'a str,
        request: Vec<u8>,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, BrokerError>>;
    /// Answer what other hosts ask this one with `answerer`, from now on.
    fn answer(&self, answerer: Answerer) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Hand `request` to `host`'s [`StreamAnswerer`]: its answer's pieces,
    /// the first within `timeout` ([`BrokerError::Unavailable`] if not).
    /// The stream ends with the answer, or with an error if the host stops
    /// answering or pieces were lost; dropping it tells the host to stop.
    fn ask_stream<'a>(
        &'a self,
        host: &'a str,
        request: Vec<u8>,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<AnswerStream, BrokerError>>;
    /// Stream answers to what other hosts ask this one with `answerer`,
    /// from now on.
    fn answer_streams(&self, answerer: StreamAnswerer) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// The largest request or answer hosts can hand each other, in bytes.
    fn max_message(&self) -> usize;
}

/// What answers requests other hosts hand this one (the API, which
/// knows what they mean): request bytes in, answer bytes out.
pub type Answerer = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// What streams answers to requests other hosts hand this one: request
/// bytes in, the answer's pieces out.
pub type StreamAnswerer = Arc<dyn Fn(Vec<u8>) -> BoxStream<'static, Vec<u8>> + Send + Sync>;

/// A streamed answer's pieces, as the asking host receives them.
pub type AnswerStream = BoxStream<'static, Result<Vec<u8>, BrokerError>>;

/// A host's shared storage in cluster mode.
#[derive(Debug, Clone)]
pub struct SharedBackend {
    pub log: Arc<dyn SharedLog>,
    pub meta: Arc<dyn SharedMeta>,
    pub subscriptions: Arc<dyn SharedSubscriptions>,
    pub runners: Arc<dyn SharedRunners>,
}

/// The broker's side of a shared log: validation and partitioning as in
/// the embedded mode, and a cache of topics' settings.
pub(crate) struct Shared {
    log: Arc<dyn SharedLog>,
    clock: Clock,
    /// Settings of topics seen, by name. Partition counts never change
    /// under a name while it exists; an entry goes stale only when its
    /// topic is deleted, which appends then report ([`BrokerError::NotFound`]).
    specs: RwLock<HashMap<String, TopicSpec>>,
    /// Spreads unkeyed messages without an id over partitions.
    round_robin: AtomicU64,
    /// Topics followed for this host's runners, by name, while any runner
    /// holds them.
    followed: std::sync::Mutex<HashMap<String, std::sync::Weak<Topic>>>,
}

impl Shared {
    pub(crate) fn new(log: Arc<dyn SharedLog>, clock: Clock) -> Self {
        Self {
            log,
            clock,
            specs: RwLock::new(HashMap::new()),
            round_robin: AtomicU64::new(0),
            followed: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A topic for this host's runners to consume: its heads follow what
    /// every host appends (woken by appends, looked at again every
    /// second), for as long as a runner holds it.
    pub(crate) async fn follow(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        if let Some(topic) = self.followed.lock().expect("followed lock").get(name) {
            if let Some(topic) = topic.upgrade() {
                return Ok(topic);
            }
        }
        let spec = self.spec(name).await?;
        let mut watch = self.watch(name).await?;
        let (firsts, heads) = watch.offsets().await?;
        let topic = Arc::new(Topic::remote(name, spec, &firsts, &heads));
        let mut followed = self.followed.lock().expect("followed lock");
        if let Some(earlier) = followed.get(name).and_then(std::sync::Weak::upgrade) {
            // Another runner started following it meanwhile.
            return Ok(earlier);
        }
        followed.insert(name.to_string(), Arc::downgrade(&topic));
        let weak = Arc::downgrade(&topic);
        tokio::spawn(async move {
            loop {
                watch.changed().await;
                let Some(topic) = weak.upgrade() else {
                    return;
                };
                match watch.heads_heard().await {
                    Ok(heads) => topic.reached(&heads),
                    // Deleted: its runners learn it from the topic's settings.
                    Err(BrokerError::NotFound(_)) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, topic = %topic.name, "reading a followed topic's heads failed")
                    }
                }
            }
        });
        Ok(topic)
    }

    /// Messages of a partition from `from`, as the store would give them
    /// to a runner; perhaps fewer than are stored (a copy behind answered).
    pub(crate) async fn read_stored(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredMessage)>, BrokerError> {
        let entries = self.log.scan(topic, partition, from, limit).await?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let message = StoredMessage {
                    id: e
                        .message
                        .id
                        .unwrap_or_else(|| assigned_id(topic, partition, e.offset)),
                    key: e.message.key,
                    payload: e.message.payload,
                    headers: e.message.headers,
                    timestamp_ms: e.timestamp_ms,
                    deliver_at_ms: e.message.deliver_at_ms,
                };
                (e.offset, message)
            })
            .collect())
    }

    /// The names of every topic.
    pub(crate) async fn topic_names(&self) -> Result<Vec<String>, BrokerError> {
        let listed = self.log.list().await?;
        Ok(listed
            .into_iter()
            .map(|(name, spec)| {
                self.remember(&name, &spec);
                name
            })
            .collect())
    }

    /// Does `topic` exist (cached settings, else asked)?
    pub(crate) async fn exists(&self, topic: &str) -> Result<bool, BrokerError> {
        match self.spec(topic).await {
            Ok(_) => Ok(true),
            Err(BrokerError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn reachable(&self) -> Result<(), String> {
        self.log.reachable()
    }

    /// Watch a topic's partitions for appends by any host.
    pub(crate) async fn watch(&self, topic: &str) -> Result<super::TopicWatch, BrokerError> {
        let spec = self.spec(topic).await?;
        let appends = self.log.appends(topic).await?;
        Ok(super::TopicWatch::shared(
            self.log.clone(),
            topic,
            spec.partitions,
            appends,
        ))
    }

    /// A topic's settings: cached, else from the shared log.
    async fn spec(&self, name: &str) -> Result<TopicSpec, BrokerError> {
        if let Some(spec) = self.specs.read().expect("topic specs lock").get(name) {
            return Ok(spec.clone());
        }
        let spec = self.log.get(name).await?.ok_or_else(|| not_found(name))?;
        self.remember(name, &spec);
        Ok(spec)
    }

    fn remember(&self, name: &str, spec: &TopicSpec) {
        self.specs
            .write()
            .expect("topic specs lock")
            .insert(name.to_string(), spec.clone());
    }

    fn forget(&self, name: &str) {
        self.specs.write().expect("topic specs lock").remove(name);
    }

    /// Create a topic, or update an existing one's settings.
    pub(crate) async fn create_topic(
        &self,
        name: &str,
        spec: TopicSpec,
    ) -> Result<(TopicInfo, bool), BrokerError> {
        validate_topic_name(name)?;
        spec.validate()?;
        let created = self.log.put(name, &spec).await?;
        self.remember(name, &spec);
        Ok((self.info(name, spec).await?, created))
    }

    pub(crate) async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.forget(name);
        self.log.delete(name).await
    }

    pub(crate) async fn topics(&self) -> Result<Vec<TopicInfo>, BrokerError> {
        let mut topics = Vec::new();
        for (name, spec) in self.log.list().await? {
            self.remember(&name, &spec);
            match self.info(&name, spec).await {
                Ok(info) => topics.push(info),
                // Deleted since it was listed.
                Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    pub(crate) async fn topic_info(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        // Settings may change on another host: read them afresh.
        let spec = self.log.get(name).await?.ok_or_else(|| not_found(name))?;
        self.remember(name, &spec);
        self.info(name, spec).await
    }

    async fn info(&self, name: &str, spec: TopicSpec) -> Result<TopicInfo, BrokerError> {
        let partitions = futures_util::future::try_join_all(
            (0..spec.partitions).map(|p| self.log.partition(name, p)),
        )
        .await?;
        Ok(TopicInfo {
            name: name.to_string(),
            partitions: spec.partitions,
            retention_ms: spec.retention_ms,
            dedup_window_ms: spec.dedup_window_ms,
            offsets: partitions.iter().map(|p| p.next).collect(),
            first_offsets: partitions.iter().map(|p| p.first).collect(),
            bytes: partitions.iter().map(|p| p.bytes).collect(),
        })
    }

    /// Validate and partition `messages` as the embedded mode does, and
    /// append each partition's share (all partitions at once). A message
    /// with an id and no key goes to the partition its id hashes to, so a
    /// retried publish meets its first copy there; without either, round
    /// robin. If a partition's append fails after others succeeded, the
    /// publish fails and those stay stored: producers retry with ids.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Published>, BrokerError> {
        check_messages(&messages)?;
        let spec = self.spec(topic).await?;
        let now = self.clock.now_ms();
        let dedup = spec.dedup_window_ms > 0;
        let count = messages.len();
        let mut shares: Vec<(Vec<usize>, Vec<SharedMessage>)> =
            vec![(Vec::new(), Vec::new()); spec.partitions as usize];
        for (i, m) in messages.into_iter().enumerate() {
            let partition = match (&m.key, &m.id) {
                (Some(key), _) => partition_for_key(key, spec.partitions),
                (None, Some(id)) if dedup => partition_for_key(id, spec.partitions),
                _ => {
                    (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(spec.partitions))
                        as u32
                }
            };
            let share = &mut shares[partition as usize];
            share.0.push(i);
            share.1.push(SharedMessage {
                id: m.id,
                dedup,
                key: m.key,
                headers: m.headers,
                payload: m.payload,
                deliver_at_ms: m.delay_ms.filter(|d| *d > 0).map(|d| now + d),
            });
        }
        let mut positions = Vec::new();
        let mut appends = Vec::new();
        for (partition, (indexes, share)) in shares.into_iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            let ids: Vec<Option<String>> = share.iter().map(|m| m.id.clone()).collect();
            positions.push((partition as u32, indexes, ids));
            appends.push(self.log.append(topic, partition as u32, share));
        }
        let appended = match futures_util::future::try_join_all(appends).await {
            Ok(appended) => appended,
            Err(e @ BrokerError::NotFound(_)) => {
                // Deleted, perhaps on another host: look again next time.
                self.forget(topic);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut results: Vec<Option<Published>> = vec![None; count];
        for ((partition, indexes, ids), appended) in positions.into_iter().zip(appended) {
            for ((i, id), a) in indexes.into_iter().zip(ids).zip(appended) {
                results[i] = Some(Published {
                    id: id.unwrap_or_else(|| assigned_id(topic, partition, a.offset)),
                    partition,
                    offset: a.offset,
                    duplicate: a.duplicate,
                });
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every message appended"))
            .collect())
    }

    pub(crate) async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BrokerError> {
        let spec = self.spec(topic).await?;
        if partition >= spec.partitions {
            return Err(BrokerError::NotFound(format!(
                "topic {topic:?} has no partition {partition} (it has {})",
                spec.partitions
            )));
        }
        let entries = match self.log.read(topic, partition, from, limit).await {
            Err(e @ BrokerError::NotFound(_)) => {
                self.forget(topic);
                return Err(e);
            }
            other => other?,
        };
        Ok(entries
            .into_iter()
            .map(|e| LogEntry {
                id: e
                    .message
                    .id
                    .unwrap_or_else(|| assigned_id(topic, partition, e.offset)),
                partition,
                offset: e.offset,
                key: e.message.key,
                payload: e.message.payload,
                headers: e.message.headers,
                timestamp_ms: e.timestamp_ms,
            })
            .collect())
    }
}

/// The id of a message published without one, as in the embedded mode.
fn assigned_id(topic: &str, partition: u32, offset: u64) -> String {
    format!("{topic}-{partition}-{offset}")
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound(format!("topic {name:?} does not exist"))
}
