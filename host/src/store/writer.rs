//! The single writer thread: applies queued batches in order, merging whatever
//! is waiting into one RocksDB write (group commit).

use super::records::{Counters, DeadLetter, LedgerEntry, Redrive, RetryState, StoredMessage};
use super::{
    encode, encode_into, keys, StoreError, CF_BLOBS, CF_DEAD, CF_DEDUP, CF_LOG, CF_META,
    CF_PROGRESS,
};
use crate::histogram::{self, Histogram};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Most queued requests merged into one write; bounds the latency one sync adds.
const MAX_MERGED: usize = 1024;

/// How durable a write must be before it is reported done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The WAL is fsynced: survives power loss.
    Synced,
    /// Written to the WAL without fsync: survives a process crash, not power loss.
    Buffered,
}

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    Append {
        topic: String,
        partition: u32,
        offset: u64,
        /// Shared with the topic's recent messages (see `broker::recent`).
        message: Arc<StoredMessage>,
    },
    /// Delete everything stored for a subscription: progress, retry and
    /// redrive records, counters, ledger and dead letters.
    ForgetSubscription {
        subscription: String,
    },
    /// Delete everything stored for a topic: its messages and its
    /// producers' ids.
    ForgetTopic {
        topic: String,
    },
    /// Delete a subscription's progress, retry and redrive records for one
    /// topic (a deleted topic that its pattern matched).
    ForgetTopicProgress {
        subscription: String,
        topic: String,
    },
    /// Delete a partition's messages below offset `below` (retention).
    TrimLog {
        topic: String,
        partition: u32,
        below: u64,
    },
    /// A partition's progress: every offset below `watermark` is finished,
    /// and so are those in the `done` ranges (start, end exclusive) above
    /// it. One record per partition, rewritten whole. The one-key-per-offset
    /// done markers an earlier host wrote (`clear_done`) are removed.
    SetProgress {
        subscription: String,
        topic: String,
        partition: u32,
        watermark: u64,
        done: Vec<(u64, u64)>,
        clear_done: Vec<u64>,
    },
    PutRetry {
        subscription: String,
        topic: String,
        partition: u32,
        offset: u64,
        state: RetryState,
    },
    ClearRetry {
        subscription: String,
        topic: String,
        partition: u32,
        offset: u64,
    },
    PutDeadLetter {
        subscription: String,
        letter: DeadLetter,
    },
    DeleteDeadLetter {
        subscription: String,
        /// The message's id, for the index.
        id: String,
        topic: String,
        partition: u32,
        offset: u64,
    },
    /// A redriven message (keyed by its original position) and its state.
    PutRedrive {
        subscription: String,
        topic: String,
        partition: u32,
        offset: u64,
        redrive: Redrive,
    },
    ClearRedrive {
        subscription: String,
        topic: String,
        partition: u32,
        offset: u64,
    },
    PutCounters {
        subscription: String,
        counters: Counters,
    },
    PutLedger {
        subscription: String,
        id: String,
        entry: LedgerEntry,
    },
    /// Delete the ledger's index entry of message `id` at `offset`, and
    /// if `entry`, the ledger entry itself (not when it was rewritten for
    /// a message of that id at another position).
    DeleteLedger {
        subscription: String,
        id: String,
        topic: String,
        partition: u32,
        offset: u64,
        entry: bool,
    },
    /// Set (`Some`) or delete (`None`) a key of a subscription's kv state.
    PutKv {
        subscription: String,
        key: String,
        value: Option<Vec<u8>>,
    },
    /// A producer-given id was stored at this position; remember it until
    /// `expires_at_ms` for deduplication.
    RememberId {
        topic: String,
        id: String,
        partition: u32,
        offset: u64,
        expires_at_ms: u64,
    },
    /// A metadata record (topic, subscription, plugin …), encoded: see
    /// [`Op::put_meta`].
    PutMeta {
        kind: &'static str,
        name: String,
        value: Vec<u8>,
    },
    DeleteMeta {
        kind: &'static str,
        name: String,
    },
    /// A blob under its name (e.g. a content digest).
    PutBlob {
        name: String,
        bytes: Vec<u8>,
    },
    DeleteBlob {
        name: String,
    },
    /// Changes read back from a journal ([`Op::journal`], [`Op::replay`]).
    Replay(Replayed),
}

/// Changes decoded from a journal entry, applied as they were made.
#[derive(Debug, Clone)]
pub struct Replayed(RawBatch);

impl Op {
    /// Store `value` as the metadata record `kind`/`name`.
    pub fn put_meta<T: serde::Serialize>(kind: &'static str, name: &str, value: &T) -> Self {
        Op::PutMeta {
            kind,
            name: name.to_string(),
            value: encode(value),
        }
    }

    pub fn delete_meta(kind: &'static str, name: &str) -> Self {
        Op::DeleteMeta {
            kind,
            name: name.to_string(),
        }
    }
}

/// What an encoded change does.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Put,
    Delete,
    DeleteRange,
}

/// An encoded change: its column family, and where its key and its value
/// (a put) or the end of its range (a range delete) are in the batch's
/// bytes, one after the other from `start` to `end`.
#[derive(Debug, Clone, Copy)]
struct Raw {
    kind: Kind,
    cf: &'static str,
    start: usize,
    key_len: usize,
    end: usize,
}

/// Collects encoded changes; mirrors the batch calls it stands in for.
/// Every key and value is in one buffer: a batch is two buffers however
/// many changes it holds, and the writer thread, which frees it, frees
/// two, not two per change made on another thread.
#[derive(Debug, Clone, Default)]
pub(super) struct RawBatch {
    bytes: Vec<u8>,
    changes: Vec<Raw>,
}

/// A change as a journal carries it: the column family by name. Written
/// from the encoded batch it borrows, read back owned.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
enum Change<'a> {
    Put(
        Cow<'a, str>,
        #[serde(with = "serde_bytes")] Cow<'a, [u8]>,
        #[serde(with = "serde_bytes")] Cow<'a, [u8]>,
    ),
    Delete(Cow<'a, str>, #[serde(with = "serde_bytes")] Cow<'a, [u8]>),
    DeleteRange(
        Cow<'a, str>,
        #[serde(with = "serde_bytes")] Cow<'a, [u8]>,
        #[serde(with = "serde_bytes")] Cow<'a, [u8]>,
    ),
}

/// A journal entry of one put to `cf`, whatever it is (for tests of what
/// a replay accepts).
#[cfg(test)]
pub(super) fn journal_put(cf: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let change = Change::Put(cf.into(), key.into(), value.into());
    rmp_serde::to_vec(&vec![change]).expect("changes serialize")
}

/// Column families a journal may change: a subscription's state only.
const JOURNALED: [&str; 2] = [CF_PROGRESS, CF_DEAD];
/// About the most bytes of changes in one journal entry.
pub const JOURNAL_PIECE: usize = 256 << 10;

impl Change<'_> {
    fn journaled(&self) -> bool {
        match self {
            Change::Put(cf, ..) | Change::Delete(cf, ..) | Change::DeleteRange(cf, ..) => {
                JOURNALED.contains(&cf.as_ref())
            }
        }
    }
}

impl Op {
    /// `ops` as journal entries (MessagePack): the changes they make, in
    /// pieces of about [`JOURNAL_PIECE`] bytes (one change is never split),
    /// which [`Op::replay`] applies again, in order, on another host's
    /// store; and those changes as one `Op` for this host's store, encoded
    /// once for both. Only a subscription's state (progress, kv, ledger,
    /// dead letters) may be in them; a journal is no place for messages or
    /// metadata.
    pub fn journal(ops: Vec<Op>) -> (Vec<Vec<u8>>, Op) {
        let mut batch = RawBatch::default();
        for op in ops {
            op.encode(&mut batch);
        }
        let mut pieces = Vec::new();
        let mut piece: Vec<Change> = Vec::new();
        let mut size = 0;
        for (change, bytes) in batch.changes() {
            debug_assert!(
                change.journaled(),
                "only a subscription's state is journaled"
            );
            if size + bytes > JOURNAL_PIECE && !piece.is_empty() {
                pieces.push(rmp_serde::to_vec(&piece).expect("changes serialize"));
                piece.clear();
                size = 0;
            }
            size += bytes + 16;
            piece.push(change);
        }
        if !piece.is_empty() {
            pieces.push(rmp_serde::to_vec(&piece).expect("changes serialize"));
        }
        (pieces, Op::Replay(Replayed(batch)))
    }

    /// A subscription's whole state as one change: whatever a store holds
    /// of the subscription goes, and `entries` (column family, key, value,
    /// read from a store) are put in its place. Journaled
    /// ([`Op::journal`]), it is a snapshot that replaces every entry
    /// before it.
    pub(super) fn snapshot(
        subscription: &str,
        entries: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    ) -> Op {
        let mut batch = RawBatch::default();
        Op::ForgetSubscription {
            subscription: subscription.to_string(),
        }
        .encode(&mut batch);
        for (cf, key, value) in entries {
            batch.put_cf(cf, key, value);
        }
        Op::Replay(Replayed(batch))
    }

    /// The changes of a journal entry, to apply in the order entries were
    /// made. An entry that does not decode, or that names a column family
    /// outside a subscription's state, is refused.
    pub fn replay(entry: &[u8]) -> Result<Op, StoreError> {
        let changes: Vec<Change> =
            rmp_serde::from_slice(entry).map_err(|e| StoreError::Corrupt {
                key: "a journal entry".to_string(),
                reason: format!("it does not decode: {e}"),
            })?;
        let table = |name: Cow<str>| {
            JOURNALED
                .iter()
                .find(|cf| **cf == name)
                .copied()
                .ok_or_else(|| StoreError::Corrupt {
                    key: "a journal entry".to_string(),
                    reason: format!("it changes {name:?}"),
                })
        };
        let mut batch = RawBatch::default();
        for change in changes {
            match change {
                Change::Put(cf, k, v) => batch.put_cf(table(cf)?, k, v),
                Change::Delete(cf, k) => batch.delete_cf(table(cf)?, k),
                Change::DeleteRange(cf, from, to) => batch.delete_range_cf(table(cf)?, from, to),
            }
        }
        Ok(Op::Replay(Replayed(batch)))
    }
}

impl RawBatch {
    /// Add a change: `key`, then `second` (its value or range end), each
    /// append to the batch's bytes and must not change what is there.
    fn push_with(
        &mut self,
        kind: Kind,
        cf: &'static str,
        key: impl FnOnce(&mut Vec<u8>),
        second: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        key(&mut self.bytes);
        let key_len = self.bytes.len() - start;
        second(&mut self.bytes);
        let end = self.bytes.len();
        self.changes.push(Raw {
            kind,
            cf,
            start,
            key_len,
            end,
        });
    }

    /// Add a change whose key and value (or range end) are encoded already.
    fn push(&mut self, kind: Kind, cf: &'static str, key: &[u8], second: &[u8]) {
        self.push_with(
            kind,
            cf,
            |b| b.extend_from_slice(key),
            |b| b.extend_from_slice(second),
        );
    }

    fn put_cf(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.push(Kind::Put, cf, key.as_ref(), value.as_ref());
    }

    fn delete_cf(&mut self, cf: &'static str, key: impl AsRef<[u8]>) {
        self.push(Kind::Delete, cf, key.as_ref(), &[]);
    }

    fn delete_range_cf(&mut self, cf: &'static str, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) {
        self.push(Kind::DeleteRange, cf, from.as_ref(), to.as_ref());
    }

    /// Add `other`'s changes after this batch's.
    fn append(&mut self, other: RawBatch) {
        if self.changes.is_empty() {
            *self = other;
            return;
        }
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.changes
            .extend(other.changes.into_iter().map(|raw| Raw {
                start: raw.start + base,
                end: raw.end + base,
                ..raw
            }));
    }

    /// Each change, borrowed, and how many bytes its key and value (or
    /// range ends) take.
    fn changes(&self) -> impl Iterator<Item = (Change<'_>, usize)> {
        self.changes.iter().map(|raw| {
            let key = &self.bytes[raw.start..raw.start + raw.key_len];
            let second = &self.bytes[raw.start + raw.key_len..raw.end];
            let cf = Cow::Borrowed(raw.cf);
            let change = match raw.kind {
                Kind::Put => Change::Put(cf, key.into(), second.into()),
                Kind::Delete => Change::Delete(cf, key.into()),
                Kind::DeleteRange => Change::DeleteRange(cf, key.into(), second.into()),
            };
            (change, raw.end - raw.start)
        })
    }

    /// About the bytes this batch takes in a RocksDB write batch.
    fn encoded_len(&self) -> usize {
        // A record's tag, column family and two lengths: at most 16 bytes.
        self.bytes.len() + 16 * self.changes.len()
    }
}

impl Op {
    fn encode(self, batch: &mut RawBatch) {
        let cf = |name: &'static str| name;
        match self {
            Op::Append {
                topic,
                partition,
                offset,
                message,
            } => batch.push_with(
                Kind::Put,
                cf(CF_LOG),
                |b| keys::log_into(b, &topic, partition, offset),
                |b| encode_into(b, &*message),
            ),
            Op::ForgetSubscription { subscription } => {
                for (from, to) in keys::subscription_ranges(&subscription) {
                    batch.delete_range_cf(cf(CF_PROGRESS), from, to);
                }
                let (from, to) = keys::dead_range(&subscription);
                batch.delete_range_cf(cf(CF_DEAD), from, to);
            }
            Op::ForgetTopic { topic } => {
                let (from, to) = keys::topic_range(&topic);
                batch.delete_range_cf(cf(CF_LOG), &from, &to);
                batch.delete_range_cf(cf(CF_DEDUP), from, to);
            }
            Op::ForgetTopicProgress {
                subscription,
                topic,
            } => {
                for (from, to) in keys::topic_progress_ranges(&subscription, &topic) {
                    batch.delete_range_cf(cf(CF_PROGRESS), from, to);
                }
            }
            Op::TrimLog {
                topic,
                partition,
                below,
            } => batch.delete_range_cf(
                cf(CF_LOG),
                keys::log(&topic, partition, 0),
                keys::log(&topic, partition, below),
            ),
            Op::SetProgress {
                subscription,
                topic,
                partition,
                watermark,
                done,
                clear_done,
            } => {
                batch.put_cf(
                    cf(CF_PROGRESS),
                    keys::progress(keys::WATERMARK, &subscription, &topic, partition),
                    keys::encode_progress(watermark, &done),
                );
                for offset in clear_done {
                    batch.delete_cf(
                        cf(CF_PROGRESS),
                        keys::progress_at(keys::DONE, &subscription, &topic, partition, offset),
                    );
                }
            }
            Op::PutRetry {
                subscription,
                topic,
                partition,
                offset,
                state,
            } => batch.put_cf(
                cf(CF_PROGRESS),
                keys::progress_at(keys::RETRY, &subscription, &topic, partition, offset),
                encode(&state),
            ),
            Op::ClearRetry {
                subscription,
                topic,
                partition,
                offset,
            } => batch.delete_cf(
                cf(CF_PROGRESS),
                keys::progress_at(keys::RETRY, &subscription, &topic, partition, offset),
            ),
            Op::PutDeadLetter {
                subscription,
                letter,
            } => {
                let (topic, partition, offset) = (&letter.topic, letter.partition, letter.offset);
                batch.put_cf(
                    cf(CF_PROGRESS),
                    keys::dead_id(&subscription, &letter.message.id, topic, partition, offset),
                    Vec::new(),
                );
                batch.put_cf(
                    cf(CF_DEAD),
                    keys::dead(&subscription, topic, partition, offset),
                    encode(&letter),
                );
            }
            Op::DeleteDeadLetter {
                subscription,
                id,
                topic,
                partition,
                offset,
            } => {
                batch.delete_cf(
                    cf(CF_PROGRESS),
                    keys::dead_id(&subscription, &id, &topic, partition, offset),
                );
                batch.delete_cf(
                    cf(CF_DEAD),
                    keys::dead(&subscription, &topic, partition, offset),
                );
            }
            Op::PutRedrive {
                subscription,
                topic,
                partition,
                offset,
                redrive,
            } => batch.put_cf(
                cf(CF_PROGRESS),
                keys::progress_at(keys::REDRIVE, &subscription, &topic, partition, offset),
                encode(&redrive),
            ),
            Op::ClearRedrive {
                subscription,
                topic,
                partition,
                offset,
            } => batch.delete_cf(
                cf(CF_PROGRESS),
                keys::progress_at(keys::REDRIVE, &subscription, &topic, partition, offset),
            ),
            Op::PutLedger {
                subscription,
                id,
                entry,
            } => {
                let at = keys::ledger_at(
                    &subscription,
                    &entry.topic,
                    entry.partition,
                    entry.offset,
                    &id,
                );
                batch.put_cf(cf(CF_PROGRESS), at, Vec::new());
                batch.put_cf(
                    cf(CF_PROGRESS),
                    keys::ledger(&subscription, &id),
                    encode(&entry),
                )
            }
            Op::PutKv {
                subscription,
                key,
                value,
            } => {
                let key = keys::kv(&subscription, &key);
                match value {
                    Some(value) => batch.put_cf(cf(CF_PROGRESS), key, value),
                    None => batch.delete_cf(cf(CF_PROGRESS), key),
                }
            }
            Op::DeleteLedger {
                subscription,
                id,
                topic,
                partition,
                offset,
                entry,
            } => {
                let at = keys::ledger_at(&subscription, &topic, partition, offset, &id);
                batch.delete_cf(cf(CF_PROGRESS), at);
                if entry {
                    batch.delete_cf(cf(CF_PROGRESS), keys::ledger(&subscription, &id))
                }
            }
            Op::RememberId {
                topic,
                id,
                partition,
                offset,
                expires_at_ms,
            } => batch.push_with(
                Kind::Put,
                cf(CF_DEDUP),
                |b| keys::dedup_into(b, &topic, &id),
                |b| keys::encode_id_into(b, expires_at_ms, partition, offset),
            ),
            Op::PutCounters {
                subscription,
                counters,
            } => batch.put_cf(
                cf(CF_PROGRESS),
                keys::counters(&subscription),
                encode(&counters),
            ),
            Op::PutMeta { kind, name, value } => {
                batch.put_cf(cf(CF_META), keys::meta(kind, &name), value)
            }
            Op::DeleteMeta { kind, name } => batch.delete_cf(cf(CF_META), keys::meta(kind, &name)),
            Op::PutBlob { name, bytes } => batch.put_cf(cf(CF_BLOBS), name, bytes),
            Op::DeleteBlob { name } => batch.delete_cf(cf(CF_BLOBS), name),
            Op::Replay(Replayed(raw)) => batch.append(raw),
        }
    }
}

struct Request {
    batch: RawBatch,
    durability: Durability,
    done: oneshot::Sender<Result<(), StoreError>>,
}

enum Message {
    Write(Request),
    /// Finish what is queued, then exit the thread.
    Stop,
}

/// What the writer reports for metrics.
#[derive(Debug)]
pub(super) struct WriterStats {
    /// Submissions merged into each RocksDB write (the group commit).
    pub(super) group: Histogram,
    /// Submissions answered with an error.
    pub(super) failures: AtomicU64,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            group: Histogram::new(histogram::SIZES),
            failures: AtomicU64::new(0),
        }
    }
}

#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Message>,
    pub(super) stats: Arc<WriterStats>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Tells the periodic WAL syncer (if any) to stop.
    stopped: Arc<AtomicBool>,
}

impl Writer {
    pub(super) fn start(db: Arc<DB>, sync_interval: Option<Duration>) -> Self {
        let (queue, rx) = mpsc::channel::<Message>();
        let stopped = Arc::new(AtomicBool::new(false));
        if let Some(every) = sync_interval {
            spawn_syncer(db.clone(), every, stopped.clone());
        }
        let stats = Arc::new(WriterStats::default());
        let reported = stats.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-store-writer".into())
            .spawn(move || run(&db, rx, sync_interval.is_none(), &reported))
            .expect("spawning the store writer thread");
        Self {
            queue,
            stats,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            stopped,
        }
    }

    /// Apply everything queued so far, then stop the writer thread. Later
    /// submissions fail with [`StoreError::WriterGone`].
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.queue.send(Message::Stop);
        let thread = self.thread.lock().expect("writer thread lock").take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }

    /// Queue `batch` (see [`encode_ops`]); resolves once it is written.
    pub(super) fn submit(
        &self,
        batch: RawBatch,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let queued = self.enqueue(batch, durability);
        async move { queued?.await.map_err(|_| StoreError::WriterGone)? }
    }

    /// [`Writer::submit`], waiting on the calling thread, which must not be
    /// an async executor's.
    pub(super) fn write(&self, ops: Vec<Op>, durability: Durability) -> Result<(), StoreError> {
        self.enqueue(encode_ops(ops), durability)?
            .blocking_recv()
            .map_err(|_| StoreError::WriterGone)?
    }

    fn enqueue(
        &self,
        batch: RawBatch,
        durability: Durability,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.queue
            .send(Message::Write(Request {
                batch,
                durability,
                done,
            }))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(rx)
    }
}

/// The keys and values of `ops`, made on the caller's thread so that the
/// writer thread only writes.
pub(super) fn encode_ops(ops: impl IntoIterator<Item = Op>) -> RawBatch {
    let mut batch = RawBatch::default();
    for op in ops {
        op.encode(&mut batch);
    }
    batch
}

/// Sync the WAL every `every` until the database is closed.
fn spawn_syncer(db: Arc<DB>, every: Duration, stopped: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("switchyard-wal-sync".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if stopped.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = db.flush_wal(true) {
                tracing::error!(error = %e, "periodic WAL sync failed");
            }
        })
        .expect("spawning the WAL sync thread");
}

/// `sync_on_request`: honour [`Durability::Synced`] by syncing the write;
/// when false a periodic syncer covers it.
///
/// After a write fails, every later one fails too without being applied: what
/// is on disk is always a prefix of what was submitted, so no later batch
/// (progress, say) can cover one that was lost. A restart starts afresh.
fn run(db: &DB, rx: mpsc::Receiver<Message>, sync_on_request: bool, stats: &WriterStats) {
    let mut stopping = false;
    let mut failed: Option<StoreError> = None;
    while !stopping {
        let Ok(Message::Write(first)) = rx.recv() else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_MERGED {
            match rx.try_recv() {
                Ok(Message::Write(next)) => group.push(next),
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        stats.group.observe(group.len() as f64);
        let sync = sync_on_request && group.iter().any(|r| r.durability == Durability::Synced);
        // Sized for the whole group at once, not grown (and copied) as
        // the changes go in.
        let bytes = group.iter().map(|r| r.batch.encoded_len()).sum::<usize>();
        let mut merged = WriteBatch::with_capacity_bytes(bytes + 12);
        let mut waiters = Vec::with_capacity(group.len());
        for request in group {
            for (change, _) in request.batch.changes() {
                let cf = |name: &str| db.cf_handle(name).expect("column families exist");
                match change {
                    Change::Put(name, k, v) => merged.put_cf(cf(&name), k, v),
                    Change::Delete(name, k) => merged.delete_cf(cf(&name), k),
                    Change::DeleteRange(name, from, to) => {
                        merged.delete_range_cf(cf(&name), from, to)
                    }
                }
            }
            waiters.push(request.done);
        }
        let result = match &failed {
            Some(StoreError::NoSpace(first)) => Err(StoreError::NoSpace(format!(
                "an earlier write found the disk full ({first}); free space, then restart the host"
            ))),
            Some(first) => Err(StoreError::Engine(format!(
                "an earlier write failed ({first}); restart the host"
            ))),
            None => {
                let mut opts = WriteOptions::default();
                opts.set_sync(sync);
                db.write_opt(merged, &opts).map_err(StoreError::from)
            }
        };
        if let (Err(e), None) = (&result, &failed) {
            tracing::error!(error = %e, "store write failed; refusing every later write");
            failed = Some(e.same());
        }
        if result.is_err() {
            stats
                .failures
                .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        }
        for waiter in waiters {
            let _ = waiter.send(result.as_ref().map_err(StoreError::same).copied());
        }
    }
}
