//! Durable storage on RocksDB: the message log, subscription progress, retry
//! timers, dead letters, plugin kv state, metadata and plugin blobs.
//!
//! This is the only module that names RocksDB. It offers the broker a small
//! storage API — append, read, commit progress, timers, dead letters, plugin
//! kv state, metadata and blobs — in its own types, so that another engine can stand behind it.
//! It knows nothing of wasm or HTTP.
//!
//! Architecture invariant: every multi-key change the broker makes goes through
//! [`Store::submit`] as one list of [`Op`]s and lands in one atomic write batch.
//! Writes are applied in submission order by a single writer thread, which
//! merges whatever is queued into one batch (group commit): one WAL sync serves
//! every publish waiting at that moment.

mod keys;
mod records;
mod writer;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use records::{
    AttemptRecord, Counters, DeadLetter, HttpRecord, LedgerEntry, Redrive, RetryState,
    StoredMessage,
};
pub use writer::{Durability, Op};

const CF_LOG: &str = "log";
const CF_PROGRESS: &str = "progress";
const CF_DEAD: &str = "dead";
const CF_META: &str = "meta";
const CF_BLOBS: &str = "blobs";
const CF_DEDUP: &str = "dedup";
const ALL_CFS: [&str; 6] = [CF_LOG, CF_PROGRESS, CF_DEAD, CF_META, CF_BLOBS, CF_DEDUP];

/// WAL size past which RocksDB flushes memtables so old WAL files can go:
/// 64 MiB bounds replay time and disk use at steady load.
const MAX_WAL_BYTES: u64 = 64 << 20;
/// RocksDB info log files kept, and the size at which one is rotated. Only
/// warnings and errors are written there (flush and compaction events at
/// info level would grow it with every retention sweep).
const INFO_LOGS_KEPT: usize = 2;
const INFO_LOG_BYTES: usize = 1 << 20;
/// MANIFEST size at which RocksDB starts a new one (it grows with every flush).
const MANIFEST_BYTES: usize = 4 << 20;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("corrupt record under {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("out of disk space: {0}")]
    NoSpace(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        let text = e.to_string();
        if text.contains("No space left") {
            StoreError::NoSpace(text)
        } else {
            StoreError::Engine(text)
        }
    }
}

/// A handle to the open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    writer: writer::Writer,
}

/// Finished offset ranges above a watermark: (start, end exclusive).
pub type DoneRanges = Vec<(u64, u64)>;

/// Progress of one subscription, as persisted.
#[derive(Debug, Default)]
pub struct Progress {
    /// Per (topic, partition): every offset below the watermark is
    /// finished, and so are those in the ranges (start, end exclusive).
    pub watermarks: Vec<(String, u32, u64, DoneRanges)>,
    /// Finished offsets as an earlier host recorded them, one key each.
    pub done: Vec<(String, u32, u64)>,
    /// Messages waiting for another attempt.
    pub retries: Vec<(String, u32, u64, RetryState)>,
    /// Dead letters sent back into the subscription, by original position.
    pub redrives: Vec<(String, u32, u64, Redrive)>,
    pub counters: Counters,
}

impl Store {
    /// Open (or create) the store in `dir`. With `sync_interval`, writes asked
    /// to be [`Durability::Synced`] are only written to the WAL, which a
    /// background thread syncs every `sync_interval`.
    pub fn open(dir: &Path, sync_interval: Option<Duration>) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        // Bound the disk used besides the data itself: the WAL (column
        // families holding its oldest entries are flushed past this) and
        // RocksDB's own info logs.
        opts.set_max_total_wal_size(MAX_WAL_BYTES);
        opts.set_keep_log_file_num(INFO_LOGS_KEPT);
        opts.set_max_log_file_size(INFO_LOG_BYTES);
        opts.set_log_level(rocksdb::LogLevel::Warn);
        opts.set_max_manifest_file_size(MANIFEST_BYTES);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = opts.clone();
            if *name == CF_DEDUP || *name == CF_PROGRESS {
                // Point lookups of keys that are mostly absent (a publish id
                // never seen, a kv key never written) skip files by their
                // bloom filter instead of searching each.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                cf_opts.set_block_based_table_factory(&table);
            }
            if *name == CF_DEDUP {
                // Expired publish ids are dropped as compaction passes over them.
                cf_opts.set_compaction_filter("expired-ids", |_level, _key, value| {
                    if keys::id_expired(value, now_ms()) {
                        rocksdb::CompactionDecision::Remove
                    } else {
                        rocksdb::CompactionDecision::Keep
                    }
                });
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
        let writer = writer::Writer::start(db.clone(), sync_interval);
        Ok(Self { db, writer })
    }

    /// Queue `ops` as one atomic batch. The returned future resolves once the
    /// batch is written (and, with [`Durability::Synced`], its WAL synced).
    /// Batches are applied in the order they are submitted.
    pub fn submit(
        &self,
        ops: Vec<Op>,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.writer.submit(ops, durability)
    }

    /// [`Store::submit`], waiting for the write on the calling thread: for
    /// code on a blocking thread, never on an async executor's (it panics
    /// there).
    pub fn write(&self, ops: Vec<Op>, durability: Durability) -> Result<(), StoreError> {
        self.writer.write(ops, durability)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Messages of a partition from offset `from`, at most `limit`.
    pub fn read_log(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
        let start = keys::log(topic, partition, from);
        let prefix = keys::log_prefix(topic, partition);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let offset = log_offset(&key, &prefix)?;
            out.push((offset, decode(&key, &value)?));
        }
        Ok(out)
    }

    /// The oldest offset still stored in a partition (`None` when empty).
    pub fn first_offset(&self, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        let start = keys::log_prefix(topic, partition);
        self.edge_offset(topic, partition, &start, Direction::Forward)
    }

    /// Reclaim the space of a partition's messages below `below` (after a
    /// [`Op::TrimLog`]): flush every column family (so the WAL files holding
    /// the trimmed messages can be deleted) and compact that range.
    /// Blocking and I/O-heavy.
    pub fn reclaim_log(&self, topic: &str, partition: u32, below: u64) -> Result<(), StoreError> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        // Progress is small and rewritten constantly: compact all of it.
        self.db
            .compact_range_cf(self.cf(CF_PROGRESS), None::<&[u8]>, None::<&[u8]>);
        let cf = self.cf(CF_LOG);
        self.db.compact_range_cf(
            cf,
            Some(keys::log(topic, partition, 0)),
            Some(keys::log(topic, partition, below)),
        );
        Ok(())
    }

    /// The offset the next message of a partition gets (0 when empty).
    pub fn next_offset(&self, topic: &str, partition: u32) -> Result<u64, StoreError> {
        let end = keys::log(topic, partition, u64::MAX);
        let last = self.edge_offset(topic, partition, &end, Direction::Reverse)?;
        Ok(last.map_or(0, |offset| offset + 1))
    }

    /// The first offset of a partition met iterating from `from` in `direction`.
    fn edge_offset(
        &self,
        topic: &str,
        partition: u32,
        from: &[u8],
        direction: Direction,
    ) -> Result<Option<u64>, StoreError> {
        let prefix = keys::log_prefix(topic, partition);
        let mut iter = self
            .db
            .iterator_cf(self.cf(CF_LOG), IteratorMode::From(from, direction));
        match iter.next() {
            Some(item) => {
                let (key, _) = item?;
                if !key.starts_with(&prefix) {
                    return Ok(None);
                }
                log_offset(&key, &prefix).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Where a message with producer-given `id` was stored on `topic`, if that
    /// was recently enough that its dedup entry has not expired at `now_ms`.
    pub fn lookup_id(
        &self,
        topic: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<Option<(u32, u64)>, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_DEDUP), keys::dedup(topic, id))?;
        Ok(value.and_then(|v| keys::decode_id(&v, now_ms)))
    }

    /// A subscription's ledger entry for a message id.
    pub fn ledger(&self, subscription: &str, id: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let key = keys::ledger(subscription, id);
        match self.db.get_pinned_cf(self.cf(CF_PROGRESS), &key)? {
            Some(value) => Ok(Some(decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// The value of `key` in a subscription's kv state.
    pub fn kv_get(&self, subscription: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PROGRESS), keys::kv(subscription, key))?)
    }

    /// A subscription's kv entries with keys starting with `prefix`, after
    /// `after` (exclusive) when given, in key order, at most `limit`.
    pub fn kv_list(
        &self,
        subscription: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let base = keys::kv(subscription, "");
        let wanted = keys::kv(subscription, prefix);
        let start = match after {
            // The smallest key after `after`.
            Some(after) => {
                let mut k = keys::kv(subscription, after);
                k.push(0);
                k.max(wanted.clone())
            }
            None => wanted.clone(),
        };
        let iter = self.db.iterator_cf(
            self.cf(CF_PROGRESS),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&wanted) || out.len() >= limit {
                break;
            }
            let name = String::from_utf8_lossy(&key[base.len()..]).into_owned();
            out.push((name, value.into_vec()));
        }
        Ok(out)
    }

    /// Everything persisted about a subscription's progress.
    pub fn load_progress(&self, subscription: &str) -> Result<Progress, StoreError> {
        let mut progress = Progress::default();
        let cf = self.cf(CF_PROGRESS);
        for (tag, prefix) in keys::progress_prefixes(subscription) {
            let iter = self
                .db
                .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward));
            for item in iter {
                let (key, value) = item?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let rest = &key[prefix.len()..];
                match tag {
                    keys::WATERMARK => {
                        let (topic, partition) = keys::split_topic_partition(rest);
                        let (mark, done) = keys::decode_progress(&value)
                            .ok_or_else(|| corrupt(&key, "malformed progress record"))?;
                        progress.watermarks.push((topic, partition, mark, done));
                    }
                    keys::DONE => {
                        let (topic, partition, offset) = position(&key, rest)?;
                        progress.done.push((topic, partition, offset));
                    }
                    keys::RETRY => {
                        let (topic, partition, offset) = position(&key, rest)?;
                        progress
                            .retries
                            .push((topic, partition, offset, decode(&key, &value)?));
                    }
                    keys::REDRIVE => {
                        let (topic, partition, offset) = position(&key, rest)?;
                        progress
                            .redrives
                            .push((topic, partition, offset, decode(&key, &value)?));
                    }
                    _ => progress.counters = decode(&key, &value)?,
                }
            }
        }
        Ok(progress)
    }

    /// Dead letters of a subscription, by position (topic, partition, offset),
    /// at most `limit`.
    pub fn list_dead_letters(
        &self,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let prefix = keys::dead_prefix(subscription);
        let iter = self.db.iterator_cf(
            self.cf(CF_DEAD),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    /// One metadata record, if present.
    pub fn get_meta<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = keys::meta(kind, name);
        match self.db.get_pinned_cf(self.cf(CF_META), &key)? {
            Some(value) => Ok(Some(decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// All metadata records of one kind, by name.
    pub fn list_meta<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = keys::meta(kind, "");
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.push((name, decode(&key, &value)?));
        }
        Ok(out)
    }

    /// A blob by name.
    pub fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_BLOBS), name)?)
    }

    /// Apply every queued batch, sync the WAL and stop RocksDB's background
    /// work, so the process can exit without racing flushes or compactions.
    /// Nothing may be written afterwards.
    pub fn close(&self) -> Result<(), StoreError> {
        self.writer.stop();
        self.db.flush_wal(true)?;
        self.db.cancel_all_background_work(true);
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The offset of a log key of a partition (`prefix`): exactly eight bytes
/// after the prefix.
fn log_offset(key: &[u8], prefix: &[u8]) -> Result<u64, StoreError> {
    match key.len() == prefix.len() + 8 {
        true => keys::trailing_u64(key).ok_or_else(|| corrupt(key, "log key without an offset")),
        false => Err(corrupt(key, "log key of the wrong length")),
    }
}

/// The position (topic, partition, offset) at the end of a progress key.
fn position(key: &[u8], rest: &[u8]) -> Result<(String, u32, u64), StoreError> {
    keys::split_position(rest).ok_or_else(|| corrupt(key, "progress key without a position"))
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("records always serialize")
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(value).map_err(|e| corrupt(key, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, key_start: &str) {
        match result {
            Err(StoreError::Corrupt { key, .. }) => {
                assert!(key.starts_with(key_start), "names the key: {key:?}")
            }
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
    }

    /// Keys cut short and values that do not decode are errors naming the
    /// key, never a panic.
    #[test]
    fn corrupt_keys_and_records_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), None).expect("opens");
        let put = |cf: &str, key: &[u8], value: &[u8]| {
            store
                .db
                .put_cf(store.cf(cf), key, value)
                .expect("raw write");
        };
        let mut short = keys::log_prefix("cut", 0);
        short.extend_from_slice(&[0, 1]);
        put(CF_LOG, &short, b"x");
        is_corrupt(store.read_log("cut", 0, 0, 10), "cut");
        is_corrupt(store.next_offset("cut", 0), "cut");
        is_corrupt(store.first_offset("cut", 0), "cut");

        put(CF_LOG, &keys::log("bad", 0, 0), &[0xc1]);
        is_corrupt(store.read_log("bad", 0, 0, 10), "bad");

        for (tag, prefix) in keys::progress_prefixes("s") {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path(), None).expect("opens");
            let key = [prefix.as_slice(), b"x"].concat();
            store
                .db
                .put_cf(store.cf(CF_PROGRESS), &key, [0xc1])
                .expect("raw write");
            is_corrupt(store.load_progress("s"), &String::from_utf8_lossy(&[tag]));
            store.close().expect("closes");
        }
        store.close().expect("closes");
    }
}
