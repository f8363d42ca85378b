//! Topics and their partitions: creation, the publish path (partitioning,
//! offsets, group-committed durable appends) and reads.

use super::recent::Recent;
use super::space::Space;
use super::spec::{validate_topic_name, TopicSpec};
use super::{BrokerError, Clock, TopicInfo};
use crate::store::{Durability, Op, Store, StoredMessage};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// Largest message payload accepted, from producers and plugins alike.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
const META_TOPIC: &str = "topic";
/// Longest publish delay: 7 days, the default retention.
pub const MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

/// A message to publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMessage {
    pub id: Option<String>,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub delay_ms: Option<u64>,
}

impl NewMessage {
    /// A message with this payload (and no id, key, headers or delay).
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// The producer-given idempotency id.
    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    /// The ordering key.
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// A header (kept in the order added).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Deliver no sooner than `delay_ms` after publishing.
    pub fn delay_ms(mut self, delay_ms: u64) -> Self {
        self.delay_ms = Some(delay_ms);
        self
    }
}

/// Where a published message was stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    pub duplicate: bool,
}

/// A message read back from a partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub timestamp_ms: u64,
}

/// The partition of a keyed message: 64-bit FNV-1a of the key's UTF-8 bytes,
/// modulo the partition count. Stable across versions and platforms, so a key
/// always lands in the same partition of a topic.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key
        .bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % u64::from(partitions.max(1))) as u32
}

/// Refuse a publish of no messages, or of one over a limit.
pub(crate) fn check_messages(messages: &[NewMessage]) -> Result<(), BrokerError> {
    if messages.is_empty() {
        return Err(BrokerError::Invalid("no messages to publish".into()));
    }
    for m in messages {
        if m.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(BrokerError::TooLarge(format!(
                "a payload of {} bytes is over the limit of {MAX_PAYLOAD_BYTES}",
                m.payload.len()
            )));
        }
        if m.delay_ms.is_some_and(|d| d > MAX_DELAY_MS) {
            return Err(BrokerError::Invalid(format!(
                "delay_ms must be at most {MAX_DELAY_MS} (7 days)"
            )));
        }
    }
    Ok(())
}

/// One topic's live state.
pub(crate) struct Topic {
    pub(crate) name: String,
    partitions: u32,
    /// Settings; retention and the dedup window may change.
    settings: RwLock<TopicSpec>,
    /// Per partition: offsets below this are durable and visible to readers.
    heads: Vec<AtomicU64>,
    /// Per partition: the oldest offset still stored (retention trims below).
    firsts: Vec<AtomicU64>,
    /// Offset assignment and in-flight ids. Held while a batch is queued for
    /// writing, so offsets reach the store in order.
    next: Mutex<Appender>,
    /// Spreads unkeyed messages over partitions.
    round_robin: AtomicU64,
    /// Woken after each durable append.
    watchers: Mutex<Vec<Arc<Notify>>>,
    /// Per partition, the newest durable messages (kept while anyone
    /// watches the topic).
    recent: Vec<Recent>,
    /// Per partition, the store's latest estimate of its size in bytes
    /// (measured in the background: [`Log::measure`]).
    bytes: Mutex<Vec<u64>>,
}

impl Topic {
    /// Queue `ops` (retention's, which name this topic's keys) unless the
    /// topic was deleted meanwhile: a topic created again under its name
    /// must not lose its messages to them.
    pub(crate) fn submit_unless_deleted(
        &self,
        store: &Store,
        ops: Vec<Op>,
        durability: Durability,
    ) -> Option<
        impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static,
    > {
        let appender = self.next.lock().expect("offsets lock");
        (!appender.deleted).then(|| store.submit(ops, durability))
    }

    pub(crate) fn head(&self, partition: u32) -> u64 {
        self.heads[partition as usize].load(Ordering::Acquire)
    }

    /// The oldest offset of a partition still stored.
    pub(crate) fn first(&self, partition: u32) -> u64 {
        self.firsts[partition as usize].load(Ordering::Acquire)
    }

    pub(crate) fn set_first(&self, partition: u32, first: u64) {
        self.firsts[partition as usize].fetch_max(first, Ordering::AcqRel);
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Wake `notify` whenever new messages become durable.
    pub(crate) fn watch(&self, notify: Arc<Notify>) {
        self.watchers.lock().expect("watchers lock").push(notify);
    }

    /// Up to `limit` messages of `partition` from offset `from` on, if they
    /// are among its newest durable ones (else none: read the store).
    pub(crate) fn recent(
        &self,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Vec<(u64, Arc<StoredMessage>)> {
        self.recent
            .get(partition as usize)
            .map_or_else(Vec::new, |r| r.read(from, limit))
    }

    /// Stop waking `notify`; once nobody watches, the topic keeps no
    /// recent messages.
    pub(crate) fn unwatch(&self, notify: &Arc<Notify>) {
        let mut watchers = self.watchers.lock().expect("watchers lock");
        watchers.retain(|n| !Arc::ptr_eq(n, notify));
        if watchers.is_empty() {
            self.recent.iter().for_each(Recent::clear);
        }
    }

    /// A topic that lives in a shared log (cluster mode): its partitions
    /// hold `firsts[p]..heads[p]` there, and [`Topic::reached`] moves the
    /// heads as others append. Nothing of it is in this host's store.
    pub(crate) fn remote(name: &str, spec: TopicSpec, firsts: &[u64], heads: &[u64]) -> Topic {
        Topic {
            name: name.to_string(),
            partitions: spec.partitions,
            heads: heads.iter().map(|h| AtomicU64::new(*h)).collect(),
            firsts: firsts.iter().map(|f| AtomicU64::new(*f)).collect(),
            next: Mutex::new(Appender::new(heads.to_vec())),
            settings: RwLock::new(spec),
            round_robin: AtomicU64::new(0),
            watchers: Mutex::new(Vec::new()),
            recent: Vec::new(),
            bytes: Mutex::new(Vec::new()),
        }
    }

    /// A remote topic's partitions were seen at `heads`: move them on and
    /// wake the watchers if any moved.
    pub(crate) fn reached(&self, heads: &[(u32, u64)]) {
        let mut moved = false;
        for (partition, seen) in heads {
            if let Some(head) = self.heads.get(*partition as usize) {
                moved |= head.fetch_max(*seen, Ordering::AcqRel) < *seen;
            }
        }
        if moved {
            for watcher in self.watchers.lock().expect("watchers lock").iter() {
                watcher.notify_one();
            }
        }
    }

    /// The topic's current settings.
    pub(crate) fn spec(&self) -> TopicSpec {
        self.settings.read().expect("topic settings lock").clone()
    }

    fn info(&self) -> TopicInfo {
        let spec = self.spec();
        TopicInfo {
            name: self.name.clone(),
            partitions: self.partitions,
            retention_ms: spec.retention_ms,
            dedup_window_ms: spec.dedup_window_ms,
            offsets: (0..self.partitions).map(|p| self.head(p)).collect(),
            first_offsets: (0..self.partitions).map(|p| self.first(p)).collect(),
            bytes: self.bytes.lock().expect("topic sizes lock").clone(),
        }
    }
}

/// The state a publish needs exclusively.
struct Appender {
    /// Per partition: the next offset to assign.
    offsets: Vec<u64>,
    /// Producer-given ids queued for writing but not yet durable, and where.
    pending_ids: HashMap<String, (u32, u64)>,
    /// The latest ids that became durable (at most [`SETTLED_KEPT`]), and
    /// how many ever did: a publish that looked its ids up in the store
    /// before taking this lock checks those settled since it began.
    settled: VecDeque<(String, (u32, u64))>,
    settled_total: u64,
    /// The topic was deleted: nothing more is written to it.
    deleted: bool,
}

/// Ids kept in [`Appender::settled`].
const SETTLED_KEPT: usize = 4096;

impl Appender {
    fn new(offsets: Vec<u64>) -> Self {
        Self {
            offsets,
            pending_ids: HashMap::new(),
            settled: VecDeque::new(),
            settled_total: 0,
            deleted: false,
        }
    }
}

/// What a publish found in the store for its ids before taking the lock.
struct Looked {
    /// `settled_total` when the lookup began.
    since: u64,
    found: HashMap<String, Option<(u32, u64)>>,
}

/// Messages assigned to one topic's partitions, whose write is queued.
struct Appended {
    topic: Arc<Topic>,
    /// Per partition: the new head once the write is durable.
    ends: Vec<Option<u64>>,
    /// Per partition: the messages written, from their first offset (only
    /// when someone watches the topic, to keep them as its recent ones).
    fresh: Vec<(u64, Vec<Arc<StoredMessage>>)>,
    /// Ids to drop from the pending set once the write is done.
    remembered: Vec<String>,
}

impl Appended {
    /// The write is done: forget the pending ids and, if it succeeded, make
    /// the messages visible and wake the topic's readers.
    fn settle(&self, written: bool) {
        if !self.remembered.is_empty() {
            let mut appender = self.topic.next.lock().expect("offsets lock");
            for id in &self.remembered {
                // The pending entry's own id moves to the settled ones.
                let entry = appender.pending_ids.remove_entry(id);
                if let Some(entry) = entry.filter(|_| written) {
                    appender.settled.push_back(entry);
                    appender.settled_total += 1;
                }
            }
            while appender.settled.len() > SETTLED_KEPT {
                appender.settled.pop_front();
            }
        }
        if !written {
            return;
        }
        // Kept only while someone still watches (under the lock `unwatch`
        // clears them under), and before the heads move past them.
        let watchers = self.topic.watchers.lock().expect("watchers lock");
        if !watchers.is_empty() {
            for ((first, messages), recent) in self.fresh.iter().zip(&self.topic.recent) {
                if !messages.is_empty() {
                    recent.extend(*first, messages);
                }
            }
        }
        for (partition, end) in self.ends.iter().enumerate() {
            if let Some(end) = end {
                self.topic.heads[partition].fetch_max(*end, Ordering::AcqRel);
            }
        }
        for watcher in watchers.iter() {
            watcher.notify_one();
        }
    }
}

/// What a publish knows of its ids without the store: its lookup, and the
/// ids that became durable since it began.
struct Known<'a> {
    looked: &'a Looked,
    recent: HashMap<String, (u32, u64)>,
}

thread_local! {
    /// Each thread's list of writes for [`Log::commit`], kept between commits.
    static COMMIT_WRITES: std::cell::RefCell<Vec<Op>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most memory a thread's list of writes keeps between commits (bytes):
/// room for a round of a subscription's default concurrency (16 × 64
/// messages), each output with its id.
const COMMIT_WRITES_KEPT: usize = 2 << 20;

/// Where an id is stored, as a store lookup answers.
type StoredAt = Result<Option<(u32, u64)>, crate::store::StoreError>;

/// How [`Log::assign`] learns which ids are stored already.
enum Lookup<'a> {
    /// A publish: a failed lookup is an error. With what was looked up
    /// before the lock, if anything.
    Strict(Option<&'a Looked>),
    /// A plugin's outputs: looked up under the lock; a failed lookup is
    /// logged and the message stored. Nobody is answered, so the stored
    /// messages are not listed in the results.
    Lenient,
}

/// All topics, and the store they live in.
pub(crate) struct Log {
    store: Store,
    clock: Clock,
    /// Create a topic a plugin publishes to if it does not exist (harness).
    auto_create: bool,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation.
    creating: Mutex<()>,
    /// Free disk space: below its reserve, publishes are refused.
    space: Space,
}

impl Log {
    pub(crate) fn load(store: Store, clock: Clock, auto_create: bool) -> Result<Self, BrokerError> {
        let mut topics = BTreeMap::new();
        for (name, spec) in store.list_meta::<TopicSpec>(META_TOPIC)? {
            let topic = open_topic(&store, &name, spec)?;
            topics.insert(name, Arc::new(topic));
        }
        Ok(Self {
            store,
            clock,
            auto_create,
            topics: RwLock::new(topics),
            creating: Mutex::new(()),
            space: Space::unwatched(),
        })
    }

    /// Refuse publishes while `space` is below its reserve.
    pub(crate) fn with_space(mut self, space: Space) -> Self {
        self.space = space;
        self
    }

    pub(crate) fn space(&self) -> &Space {
        &self.space
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    fn require(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.get(name)
            .ok_or_else(|| BrokerError::NotFound(format!("topic {name:?} does not exist")))
    }

    /// Create a topic (synced before it returns: call it on a blocking
    /// thread), or update an existing one's retention and dedup window.
    pub(crate) fn create_topic(&self, name: &str, spec: TopicSpec) -> Result<bool, BrokerError> {
        validate_topic_name(name)?;
        spec.validate()?;
        // One creation at a time; publishers, who only read the topics, do
        // not wait for its write.
        let _creating = self.creating.lock().expect("topic creation lock");
        if let Some(existing) = self.get(name) {
            let current = existing.spec();
            if current.partitions != spec.partitions {
                return Err(BrokerError::Conflict(format!(
                    "topic {name:?} has {} partitions; the partition count cannot change \
                     (retention_ms and dedup_window_ms can)",
                    current.partitions
                )));
            }
            if current != spec {
                // An update of retention or the dedup window.
                let op = Op::put_meta(META_TOPIC, name, &spec);
                self.store.write(vec![op], Durability::Synced)?;
                tracing::info!(topic = name, ?spec, "topic settings changed");
                *existing.settings.write().expect("topic settings lock") = spec;
            }
            return Ok(false);
        }
        let op = Op::put_meta(META_TOPIC, name, &spec);
        self.store.write(vec![op], Durability::Synced)?;
        let topic = open_topic(&self.store, name, spec)?;
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_string(), Arc::new(topic));
        Ok(true)
    }

    /// Delete a topic: from now on it is gone for publishers and readers,
    /// and `ops` (what else goes with it) are queued in the same atomic
    /// write as its messages, ids and settings. Publishes queued before
    /// are deleted with it; later ones find no topic. Resolves once written.
    pub(crate) fn delete_topic(
        &self,
        name: &str,
        mut ops: Vec<Op>,
    ) -> Result<
        impl std::future::Future<Output = Result<(), BrokerError>> + Send + 'static,
        BrokerError,
    > {
        let _creating = self.creating.lock().expect("topic creation lock");
        let topic = self.require(name)?;
        let mut appender = topic.next.lock().expect("offsets lock");
        appender.deleted = true;
        ops.push(Op::delete_meta(META_TOPIC, name));
        ops.push(Op::ForgetTopic {
            topic: name.to_string(),
        });
        let write = self.store.submit(ops, Durability::Synced);
        drop(appender);
        self.topics.write().expect("topics lock").remove(name);
        Ok(async move { Ok(write.await?) })
    }

    /// Every topic, for background work over all of them.
    pub(crate) fn all(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn topics(&self) -> Vec<TopicInfo> {
        let topics = self.topics.read().expect("topics lock");
        topics.values().map(|t| t.info()).collect()
    }

    pub(crate) fn topic_info(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        Ok(self.require(name)?.info())
    }

    /// Ask the store how large each topic's partitions are, for
    /// [`TopicInfo::bytes`]. Blocking (it may read index blocks): retention's
    /// background task calls it on a blocking thread every few seconds.
    pub(crate) fn measure(&self) {
        for topic in self.all() {
            match self.store.log_bytes(&topic.name, topic.partitions) {
                Ok(bytes) => *topic.bytes.lock().expect("topic sizes lock") = bytes,
                Err(error) => {
                    tracing::warn!(topic = %topic.name, %error, "estimating the topic's size failed");
                }
            }
        }
    }

    pub(crate) fn publish(
        self: &Arc<Self>,
        topic_name: &str,
        messages: Vec<NewMessage>,
    ) -> impl std::future::Future<Output = Result<Vec<Published>, BrokerError>> + Send + 'static
    {
        let (log, topic_name) = (self.clone(), topic_name.to_string());
        async move {
            log.space.check()?;
            let looked = log.look_up_ids(&topic_name, &messages).await?;
            let (results, appended, write) = log.prepare(&topic_name, messages, looked)?;
            let written = write.await;
            appended.settle(written.is_ok());
            written?;
            Ok(results)
        }
    }

    /// Where the store has the messages' producer-given ids, looked up on
    /// the blocking pool and not under the topic's lock (`None` if there
    /// is nothing to look up).
    async fn look_up_ids(
        &self,
        topic_name: &str,
        messages: &[NewMessage],
    ) -> Result<Option<Looked>, BrokerError> {
        let topic = self.require(topic_name)?;
        if topic.spec().dedup_window_ms == 0 {
            return Ok(None);
        }
        let ids: Vec<String> = messages.iter().filter_map(|m| m.id.clone()).collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let since = topic.next.lock().expect("offsets lock").settled_total;
        let (store, now) = (self.store.clone(), self.clock.now_ms());
        let found = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let positions = store.lookup_ids(&topic.name, &refs, now);
            ids.into_iter()
                .zip(positions)
                .map(|(id, position)| Ok((id, position?)))
                .collect::<Result<HashMap<_, _>, crate::store::StoreError>>()
        })
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))??;
        Ok(Some(Looked { since, found }))
    }

    /// Validate, deduplicate, assign partitions and offsets, and queue the
    /// durable write.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        topic_name: &str,
        messages: Vec<NewMessage>,
        looked: Option<Looked>,
    ) -> Result<
        (
            Vec<Published>,
            Appended,
            impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static,
        ),
        BrokerError,
    > {
        let topic = self.require(topic_name)?;
        check_messages(&messages)?;
        let mut ops = Vec::with_capacity(messages.len());
        let mut appender = topic.next.lock().expect("offsets lock");
        if appender.deleted {
            return Err(BrokerError::NotFound(format!(
                "topic {topic_name:?} does not exist"
            )));
        }
        let (results, appended) = self.assign(
            &topic,
            &mut appender,
            messages,
            self.clock.now_ms(),
            &mut ops,
            Lookup::Strict(looked.as_ref()),
        )?;
        // Queue while holding the offsets lock: batches reach the writer in
        // offset order. An all-duplicate batch still queues (an empty write):
        // its answer then waits until the originals are durable.
        let write = self.store.submit(ops, Durability::Synced);
        drop(appender);
        Ok((results, appended, write))
    }

    /// Queue plugin outputs (by topic, each with its id) and `ops` as one
    /// atomic write: the commit of an exactly-once attempt. Outputs whose id
    /// is already stored on their topic within its dedup window are left
    /// out. Resolves once the write is done and the outputs are visible.
    pub(crate) fn commit(
        &self,
        outputs: BTreeMap<String, Vec<NewMessage>>,
        mut ops: Vec<Op>,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<(), BrokerError>> + Send + 'static {
        let (topics, batches): (Vec<Arc<Topic>>, Vec<Vec<NewMessage>>) = outputs
            .into_iter()
            .filter_map(|(name, messages)| match self.get(&name) {
                Some(topic) => Some((topic, messages)),
                None => {
                    tracing::error!(topic = %name, dropped = messages.len(), "a plugin's output topic no longer exists");
                    None
                }
            })
            .unzip();
        // Lock every output topic, in name order (publishers take one lock
        // at a time, so this cannot deadlock), so each topic's batches reach
        // the writer in offset order.
        let mut guards: Vec<_> = topics
            .iter()
            .map(|topic| topic.next.lock().expect("offsets lock"))
            .collect();
        let now = self.clock.now_ms();
        // Room for each message's append and id, and the runner's own
        // changes, in this thread's list from its last commit: memory
        // already in use, where a fresh list of that size (hundreds of
        // kilobytes for a large round) faults in new pages every time.
        let messages: usize = batches.iter().map(Vec::len).sum();
        let mut writes = COMMIT_WRITES.with(|kept| std::mem::take(&mut *kept.borrow_mut()));
        writes.reserve(2 * messages + ops.len());
        let mut appended = Vec::with_capacity(topics.len());
        for ((topic, messages), appender) in topics.iter().zip(batches).zip(guards.iter_mut()) {
            if appender.deleted {
                tracing::error!(topic = %topic.name, dropped = messages.len(), "a plugin's output topic no longer exists");
                continue;
            }
            let assigned =
                self.assign(topic, appender, messages, now, &mut writes, Lookup::Lenient);
            appended.push(assigned.expect("lenient assignment does not fail").1);
        }
        writes.append(&mut ops);
        let write = self.store.submit_from(&mut writes, durability);
        drop(guards);
        if writes.capacity() * std::mem::size_of::<Op>() <= COMMIT_WRITES_KEPT {
            COMMIT_WRITES.with(|kept| *kept.borrow_mut() = writes);
        }
        async move {
            let written = write.await;
            for a in &appended {
                a.settle(written.is_ok());
            }
            Ok(written?)
        }
    }

    /// Deduplicate and assign partitions and offsets to `messages`, adding
    /// their writes to `ops`.
    fn assign(
        &self,
        topic: &Arc<Topic>,
        appender: &mut Appender,
        messages: Vec<NewMessage>,
        now: u64,
        ops: &mut Vec<Op>,
        lookup: Lookup<'_>,
    ) -> Result<(Vec<Published>, Appended), BrokerError> {
        let strict = matches!(lookup, Lookup::Strict(_));
        // Ids that became durable since the lookup began, if all are known.
        let looked = match lookup {
            Lookup::Strict(Some(looked)) => {
                let since = (appender.settled_total - looked.since) as usize;
                (since <= appender.settled.len()).then(|| Known {
                    looked,
                    recent: appender.settled.iter().rev().take(since).cloned().collect(),
                })
            }
            _ => None,
        };
        let partitions = topic.partitions();
        let mut results = Vec::with_capacity(if strict { messages.len() } else { 0 });
        let mut ends = vec![None; partitions as usize];
        let window = topic.spec().dedup_window_ms;
        // Ids to register, and where their messages go.
        let mut remember = Vec::new();
        let watched = !topic.watchers.lock().expect("watchers lock").is_empty();
        let mut fresh: Vec<(u64, Vec<Arc<StoredMessage>>)> = match watched {
            true => vec![(0, Vec::new()); partitions as usize],
            false => Vec::new(),
        };
        // A plugin's outputs are looked up here, under the lock: all in one
        // batched read rather than a point lookup each. (A publish's were
        // looked up before the lock.)
        let mut stored = match (strict, window > 0) {
            (false, true) => {
                let ids: Vec<&str> = messages.iter().filter_map(|m| m.id.as_deref()).collect();
                self.store.lookup_ids(&topic.name, &ids, now)
            }
            _ => Vec::new(),
        }
        .into_iter();
        for m in messages {
            // Given ids are deduplicated unless the window is 0.
            let dedup_id = m.id.as_ref().filter(|_| window > 0);
            if let Some(id) = dedup_id {
                let seen = self.seen(topic, appender, id, now, (looked.as_ref(), stored.next()));
                let seen = match seen {
                    Ok(seen) => seen,
                    Err(e) if !strict => {
                        tracing::warn!(error = %e, topic = %topic.name, id = %id, "dedup lookup failed; storing the message");
                        None
                    }
                    Err(e) => return Err(e),
                };
                if let Some((partition, offset)) = seen {
                    results.push(Published {
                        id: id.clone(),
                        partition,
                        offset,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let partition = match &m.key {
                Some(key) => partition_for_key(key, partitions),
                None => {
                    (topic.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions))
                        as u32
                }
            };
            let offset = appender.offsets[partition as usize];
            appender.offsets[partition as usize] += 1;
            ends[partition as usize] = Some(offset + 1);
            if let Some(id) = dedup_id {
                appender.pending_ids.insert(id.clone(), (partition, offset));
                remember.push((id.clone(), partition, offset));
            }
            let id =
                m.id.unwrap_or_else(|| format!("{}-{partition}-{offset}", topic.name));
            // A plugin's outputs are not answered to anyone.
            if strict {
                results.push(Published {
                    id: id.clone(),
                    partition,
                    offset,
                    duplicate: false,
                });
            }
            let message = Arc::new(StoredMessage {
                id,
                key: m.key,
                payload: m.payload,
                headers: m.headers,
                timestamp_ms: now,
                deliver_at_ms: m.delay_ms.filter(|d| *d > 0).map(|d| now + d),
            });
            if let Some((first, kept)) = fresh.get_mut(partition as usize) {
                if kept.is_empty() {
                    *first = offset;
                }
                kept.push(message.clone());
            }
            ops.push(Op::Append {
                topic: topic.name.clone(),
                partition,
                offset,
                message,
            });
        }
        // Written in key order, each id goes into the dedup memtable's skip
        // list next to the one before, where in arrival order (outputs of
        // many partitions, ids of any shape) each took a search.
        remember.sort_unstable_by(|(a, ..), (b, ..)| a.cmp(b));
        let remembered = remember.iter().map(|(id, ..)| id.clone()).collect();
        ops.extend(
            remember
                .into_iter()
                .map(|(id, partition, offset)| Op::RememberId {
                    topic: topic.name.clone(),
                    id,
                    partition,
                    offset,
                    expires_at_ms: now + window,
                }),
        );
        let appended = Appended {
            topic: topic.clone(),
            ends,
            fresh,
            remembered,
        };
        Ok((results, appended))
    }

    /// Where a message with this producer-given id was stored within the
    /// topic's dedup window: queued in this or an earlier batch, or durable
    /// (as looked up before the lock, or settled since; else this id's
    /// answer of the batched read, if it had one; else from the store).
    fn seen(
        &self,
        topic: &Topic,
        appender: &Appender,
        id: &str,
        now: u64,
        (looked, stored): (Option<&Known<'_>>, Option<StoredAt>),
    ) -> Result<Option<(u32, u64)>, BrokerError> {
        if let Some(position) = appender.pending_ids.get(id) {
            return Ok(Some(*position));
        }
        if let Some(known) = looked {
            if let Some(found) = known.looked.found.get(id) {
                return Ok(found.or_else(|| known.recent.get(id).copied()));
            }
        }
        match stored {
            Some(answer) => Ok(answer?),
            None => Ok(self.store.lookup_id(&topic.name, id, now)?),
        }
    }

    pub(crate) fn read(
        &self,
        topic_name: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BrokerError> {
        let topic = self.require(topic_name)?;
        if partition >= topic.partitions() {
            return Err(BrokerError::NotFound(format!(
                "topic {topic_name:?} has no partition {partition} (it has {})",
                topic.partitions()
            )));
        }
        let head = topic.head(partition);
        let limit = limit.min(head.saturating_sub(from) as usize);
        let rows = self.store.read_log(topic_name, partition, from, limit)?;
        Ok(rows
            .into_iter()
            .map(|(offset, m)| LogEntry {
                id: m.id,
                partition,
                offset,
                key: m.key,
                payload: m.payload,
                headers: m.headers,
                timestamp_ms: m.timestamp_ms,
            })
            .collect())
    }
}

#[cfg(test)]
impl Topic {
    /// Make offsets below `head` of a partition durable, as an append would.
    pub(crate) fn advance_head(&self, partition: u32, head: u64) {
        self.heads[partition as usize].fetch_max(head, Ordering::AcqRel);
    }

    /// A topic whose partitions each hold offsets below `head`, for unit tests.
    pub(crate) fn with_head(name: &str, partitions: u32, head: u64) -> Topic {
        Topic {
            name: name.to_string(),
            heads: (0..partitions).map(|_| AtomicU64::new(head)).collect(),
            firsts: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            next: Mutex::new(Appender::new(vec![head; partitions as usize])),
            partitions,
            settings: RwLock::new(TopicSpec {
                partitions,
                ..TopicSpec::default()
            }),
            round_robin: AtomicU64::new(0),
            watchers: Mutex::new(Vec::new()),
            recent: (0..partitions).map(|_| Recent::default()).collect(),
            bytes: Mutex::new(Vec::new()),
        }
    }
}

fn open_topic(store: &Store, name: &str, spec: TopicSpec) -> Result<Topic, BrokerError> {
    let partitions = spec.partitions;
    let mut offsets = Vec::with_capacity(spec.partitions as usize);
    let mut firsts = Vec::with_capacity(spec.partitions as usize);
    for p in 0..spec.partitions {
        let next = store.next_offset(name, p)?;
        offsets.push(next);
        firsts.push(AtomicU64::new(store.first_offset(name, p)?.unwrap_or(next)));
    }
    Ok(Topic {
        name: name.to_string(),
        heads: offsets.iter().map(|n| AtomicU64::new(*n)).collect(),
        firsts,
        next: Mutex::new(Appender::new(offsets)),
        partitions: spec.partitions,
        settings: RwLock::new(spec),
        round_robin: AtomicU64::new(0),
        watchers: Mutex::new(Vec::new()),
        recent: (0..partitions).map(|_| Recent::default()).collect(),
        bytes: Mutex::new(Vec::new()),
    })
}

impl Log {
    /// May a plugin publish to `topic`? `Err` carries the reason it is given.
    pub(crate) fn check_publish(&self, topic: &str) -> Result<(), String> {
        match self.get(topic) {
            Some(_) => Ok(()),
            None if self.auto_create => self
                .create_topic(topic, TopicSpec::default())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Err(format!("topic {topic:?} does not exist")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_partitioning_is_stable_and_spread() {
        // Fixed values: changing the hash would move keys between partitions.
        assert_eq!(
            partition_for_key("", 4),
            (0xcbf2_9ce4_8422_2325u64 % 4) as u32
        );
        assert_eq!(partition_for_key("a", 1), 0);
        let mut seen = [0u32; 4];
        for i in 0..1000 {
            seen[partition_for_key(&format!("key-{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 150), "uneven spread: {seen:?}");
        assert_eq!(
            partition_for_key("user-7", 4),
            partition_for_key("user-7", 4)
        );
    }

    fn with_id(id: &str) -> NewMessage {
        NewMessage {
            id: Some(id.into()),
            ..NewMessage::new("p")
        }
    }

    /// A log in `dir` with the topic `t` created with `spec`.
    async fn log_with_topic(dir: &std::path::Path, spec: TopicSpec) -> (Store, Arc<Log>) {
        let store = Store::open(dir, None).expect("opens");
        let log = Arc::new(Log::load(store.clone(), Clock::system(), false).expect("loads"));
        let l = log.clone();
        tokio::task::spawn_blocking(move || l.create_topic("t", spec))
            .await
            .expect("joins")
            .expect("creates");
        (store, log)
    }

    /// A publish looks its ids up before taking the topic's lock; an id that
    /// another publish made durable meanwhile is still found (among those
    /// settled since), and when too many settled to tell, the store is asked
    /// under the lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_made_durable_during_a_lookup_are_still_duplicates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, log) = log_with_topic(dir.path(), TopicSpec::default()).await;
        // The lookup saw nothing...
        let looked = log
            .look_up_ids("t", &[with_id("x")])
            .await
            .expect("looks up");
        let looked = looked.expect("an id to look up");
        assert_eq!(looked.found.get("x"), Some(&None));
        // ...then another publish of the same id became durable.
        let first = log
            .publish("t", vec![with_id("x")])
            .await
            .expect("publishes");
        assert!(!first[0].duplicate);
        let (results, appended, write) = log
            .prepare("t", vec![with_id("x")], Some(looked))
            .expect("prepares");
        write.await.expect("writes");
        appended.settle(true);
        assert!(results[0].duplicate, "{results:?}");
        assert_eq!(results[0].offset, first[0].offset);

        // More settled since the lookup than are kept: the store decides.
        let looked = log
            .look_up_ids("t", &[with_id("y")])
            .await
            .expect("looks up");
        log.publish("t", vec![with_id("y")])
            .await
            .expect("publishes");
        let others = (0..SETTLED_KEPT + 1)
            .map(|i| with_id(&format!("z{i}")))
            .collect();
        log.publish("t", others).await.expect("publishes");
        let (results, appended, write) = log
            .prepare("t", vec![with_id("y")], looked)
            .expect("prepares");
        write.await.expect("writes");
        appended.settle(true);
        assert!(results[0].duplicate, "{results:?}");
        store.close().expect("closes");
    }

    /// A plugin's outputs (an exactly-once commit) are left out when their
    /// id is stored already, found by one batched lookup, or comes earlier
    /// in the same commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outputs_with_stored_or_repeated_ids_are_left_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = TopicSpec {
            partitions: 1,
            ..TopicSpec::default()
        };
        let (store, log) = log_with_topic(dir.path(), spec).await;
        log.publish("t", vec![with_id("a"), with_id("b")])
            .await
            .expect("publishes");
        let outputs = ["b", "c", "a", "c", "d"].map(with_id).to_vec();
        log.commit(
            BTreeMap::from([("t".to_string(), outputs)]),
            Vec::new(),
            Durability::Synced,
        )
        .await
        .expect("commits");
        let stored = log.read("t", 0, 0, 100).expect("reads");
        let ids: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        store.close().expect("closes");
    }

    /// A watched topic keeps its newest messages once they are durable (a
    /// failed write keeps nothing, and the run does not go on past it); a
    /// topic nobody watches, or no longer watches, keeps none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_watched_topics_keep_their_newest_messages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = TopicSpec {
            partitions: 1,
            ..TopicSpec::default()
        };
        let (store, log) = log_with_topic(dir.path(), spec).await;
        let topic = log.get("t").expect("the topic");
        let payloads = |kept: Vec<(u64, Arc<StoredMessage>)>| {
            kept.into_iter()
                .map(|(offset, m)| (offset, String::from_utf8_lossy(&m.payload).into_owned()))
                .collect::<Vec<_>>()
        };
        let publish = |payload: &'static str| {
            let log = log.clone();
            async move {
                log.publish("t", vec![NewMessage::new(payload)])
                    .await
                    .expect("publishes")
            }
        };
        publish("a").await;
        assert!(topic.recent(0, 0, 10).is_empty(), "nobody watches");
        let watcher = Arc::new(Notify::new());
        topic.watch(watcher.clone());
        publish("b").await;
        publish("c").await;
        assert_eq!(
            payloads(topic.recent(0, 1, 10)),
            vec![(1, "b".to_string()), (2, "c".to_string())]
        );
        assert!(
            topic.recent(0, 0, 10).is_empty(),
            "written before anyone watched"
        );
        let (_, appended, write) = log
            .prepare("t", vec![NewMessage::new("d")], None)
            .expect("prepares");
        write.await.expect("writes");
        appended.settle(false);
        assert!(topic.recent(0, 3, 10).is_empty(), "a failed write");
        publish("e").await;
        assert!(topic.recent(0, 3, 10).is_empty(), "no run past the gap");
        assert_eq!(payloads(topic.recent(0, 4, 10)), vec![(4, "e".to_string())]);
        topic.unwatch(&watcher);
        assert!(topic.recent(0, 4, 10).is_empty(), "nobody watches any more");
        publish("f").await;
        assert!(topic.recent(0, 5, 10).is_empty());
        store.close().expect("closes");
    }
}
