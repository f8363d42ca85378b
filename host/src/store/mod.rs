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

/// A stored message's id and time, read without its payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MessageHead {
    pub id: String,
    pub timestamp_ms: u64,
}

/// A dead letter's message id and position, as its index holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRef {
    pub id: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

const CF_LOG: &str = "log";
const CF_PROGRESS: &str = "progress";
const CF_DEAD: &str = "dead";
const CF_META: &str = "meta";
const CF_BLOBS: &str = "blobs";
const CF_DEDUP: &str = "dedup";
const ALL_CFS: [&str; 6] = [CF_LOG, CF_PROGRESS, CF_DEAD, CF_META, CF_BLOBS, CF_DEDUP];

/// Rows a log scan makes room for at once.
const SCAN_ROOM: usize = 1024;

/// Share of a memtable's size given to its bloom filter, in the column
/// families of point lookups (about 16 bits per key at their key sizes).
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

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

impl StoreError {
    /// An error of the same kind and text, for each caller of a failed
    /// batch: a full disk stays a full disk.
    pub(crate) fn same(&self) -> Self {
        match self {
            StoreError::NoSpace(text) => StoreError::NoSpace(text.clone()),
            other => StoreError::Engine(other.to_string()),
        }
    }
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

/// What the store reports for metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Submissions merged into each write (the group commit).
    pub group_commit: crate::histogram::HistogramSnapshot,
    /// Submissions answered with an error.
    pub write_failures: u64,
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
    /// Group-commit sizes and failed writes so far.
    pub fn stats(&self) -> StoreStats {
        let stats = &self.writer.stats;
        StoreStats {
            group_commit: stats.group.snapshot(),
            write_failures: stats.failures.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

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
                // The same for the memtable, which holds the newest keys: an
                // exactly-once output's id is looked up there as it is
                // written, and is almost never found.
                cf_opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
                cf_opts.set_memtable_whole_key_filtering(true);
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
        // Before the writer starts: nothing else writes yet.
        index_dead_letters(&db)?;
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
        self.writer.submit(writer::encode_ops(ops), durability)
    }

    /// [`Store::submit`], taking the changes out of `ops` and leaving its
    /// memory for the caller's next batch.
    pub fn submit_from(
        &self,
        ops: &mut Vec<Op>,
        durability: Durability,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.writer
            .submit(writer::encode_ops(ops.drain(..)), durability)
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
        self.scan_log(topic, partition, from, limit, |m| m)
    }

    /// [`Store::read_log`], each message made shareable as it is decoded
    /// (what a subscription's runner holds and hands to plugins).
    pub fn read_log_shared(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Arc<StoredMessage>)>, StoreError> {
        self.scan_log(topic, partition, from, limit, Arc::new)
    }

    /// The ids and timestamps of a partition's messages from offset `from`,
    /// at most `limit`: what retention needs, without copying payloads.
    pub fn read_log_heads(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MessageHead)>, StoreError> {
        self.scan_log(topic, partition, from, limit, |h| h)
    }

    /// A partition's records from offset `from`, at most `limit`, each
    /// decoded as `T` (the whole message, or the fields `T` names) and
    /// kept as `wrap` makes it.
    fn scan_log<T: DeserializeOwned, U>(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
        wrap: impl Fn(T) -> U,
    ) -> Result<Vec<(u64, U)>, StoreError> {
        let prefix = keys::log_prefix(topic, partition);
        // Bounded to the partition, so the scan stops at its end; records
        // are decoded from RocksDB's own buffers, not copies of them. A log
        // is mostly read through once per subscription, so its blocks stay
        // out of the block cache: a backlog's drain would fill the cache
        // (and the process's memory) with blocks nobody reads again, and
        // push out the blocks of the column families that share it
        // (metadata, plugin blobs, dead letters).
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(keys::log(topic, partition, u64::MAX));
        options.fill_cache(false);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_LOG), options);
        iter.seek(keys::log(topic, partition, from));
        let mut out = Vec::with_capacity(limit.min(SCAN_ROOM));
        while out.len() < limit {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            out.push((log_offset(key, &prefix)?, wrap(decode(key, value)?)));
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// About how many bytes each of a topic's first `partitions` partitions
    /// takes (RocksDB's estimate): in files on disk, compressed as stored,
    /// and in the memtable not yet flushed, uncompressed.
    pub fn log_bytes(&self, topic: &str, partitions: u32) -> Result<Vec<u64>, StoreError> {
        use rocksdb::{AsColumnFamilyRef as _, AsRawPtr as _};
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = (0..partitions)
            .map(|p| (keys::log(topic, p, 0), keys::log(topic, p, u64::MAX)))
            .collect();
        let starts: Vec<*const std::ffi::c_char> =
            ranges.iter().map(|r| r.0.as_ptr().cast()).collect();
        let start_lens: Vec<usize> = ranges.iter().map(|r| r.0.len()).collect();
        let ends: Vec<*const std::ffi::c_char> =
            ranges.iter().map(|r| r.1.as_ptr().cast()).collect();
        let end_lens: Vec<usize> = ranges.iter().map(|r| r.1.len()).collect();
        let mut sizes = vec![0u64; ranges.len()];
        let mut error: *mut std::ffi::c_char = std::ptr::null_mut();
        let flags = (librocksdb_sys::rocksdb_size_approximation_flags_include_memtable
            | librocksdb_sys::rocksdb_size_approximation_flags_include_files)
            as u8;
        // SAFETY: the database and the column family outlive the call; every
        // array has `ranges.len()` elements and the keys they point into stay
        // alive (`ranges`) until it returns. The only call with this flag
        // argument the rocksdb crate does not wrap.
        unsafe {
            librocksdb_sys::rocksdb_approximate_sizes_cf_with_flags(
                self.db.as_raw_ptr(),
                self.cf(CF_LOG).inner(),
                ranges.len() as i32,
                starts.as_ptr(),
                start_lens.as_ptr(),
                ends.as_ptr(),
                end_lens.as_ptr(),
                flags,
                sizes.as_mut_ptr(),
                &raw mut error,
            );
        }
        if !error.is_null() {
            // SAFETY: RocksDB gives an error as a C string for us to free.
            let text = unsafe {
                let text = std::ffi::CStr::from_ptr(error)
                    .to_string_lossy()
                    .into_owned();
                librocksdb_sys::rocksdb_free(error.cast());
                text
            };
            return Err(StoreError::Engine(text));
        }
        Ok(sizes)
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

    /// Reclaim the space of a deleted topic ([`Op::ForgetTopic`]): flush,
    /// then compact its key range. Blocking: call it off the async threads.
    pub fn reclaim_topic(&self, topic: &str) -> Result<(), StoreError> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        let (from, to) = keys::topic_range(topic);
        for name in [CF_LOG, CF_DEDUP] {
            self.db
                .compact_range_cf(self.cf(name), Some(&from), Some(&to));
        }
        self.db
            .compact_range_cf(self.cf(CF_PROGRESS), None::<&[u8]>, None::<&[u8]>);
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

    /// [`Store::lookup_id`] for many ids of one topic in one batched read,
    /// each answer in the place of its id.
    pub fn lookup_ids(
        &self,
        topic: &str,
        ids: &[&str],
        now_ms: u64,
    ) -> Vec<Result<Option<(u32, u64)>, StoreError>> {
        // Outputs without ids (most at-least-once commits) ask nothing.
        if ids.is_empty() {
            return Vec::new();
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::dedup(topic, id)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_DEDUP), &keys, false)
            .into_iter()
            .map(|value| Ok(value?.and_then(|v| keys::decode_id(&v, now_ms))))
            .collect()
    }

    /// A subscription's ledger entry for a message id.
    pub fn ledger(&self, subscription: &str, id: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let key = keys::ledger(subscription, id);
        match self.db.get_pinned_cf(self.cf(CF_PROGRESS), &key)? {
            Some(value) => Ok(Some(decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// The changes that delete a subscription's ledger entries of messages
    /// at offsets `from..below` of a partition (retention trimmed them), at
    /// most `limit` of them, and the offset to go on from. An entry since
    /// rewritten for a message of the same id elsewhere is kept (only its
    /// stale index entry goes).
    pub fn ledger_trimmed(
        &self,
        subscription: &str,
        (topic, partition): (&str, u32),
        (from, below): (u64, u64),
        limit: usize,
    ) -> Result<(Vec<Op>, u64), StoreError> {
        let cf = self.cf(CF_PROGRESS);
        let start = keys::progress_at(keys::LEDGER_AT, subscription, topic, partition, from);
        let end = keys::progress_at(keys::LEDGER_AT, subscription, topic, partition, below);
        let prefix_len = start.len() - 8;
        let mut ops = Vec::new();
        let mut next = below;
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, _) = item?;
            if *key >= *end {
                break;
            }
            let corrupt = || StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "a ledger index entry without its position".to_string(),
            };
            let at = key.get(prefix_len..prefix_len + 8).ok_or_else(corrupt)?;
            let offset = u64::from_be_bytes(at.try_into().map_err(|_| corrupt())?);
            if ops.len() >= limit {
                next = offset;
                break;
            }
            let id = String::from_utf8_lossy(&key[prefix_len + 8..]).into_owned();
            let entry = self
                .ledger(subscription, &id)?
                .is_none_or(|e| e.topic == topic && e.partition == partition && e.offset == offset);
            ops.push(Op::DeleteLedger {
                subscription: subscription.to_string(),
                id,
                topic: topic.to_string(),
                partition,
                offset,
                entry,
            });
        }
        Ok((ops, next))
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

    /// Everything kept of a subscription's state (progress, retries, kv,
    /// ledger, counters, dead letters) as one change that replaces what
    /// any store holds of it: what a compacted journal begins with
    /// (cluster mode). Read while nothing else writes the subscription.
    pub fn subscription_snapshot(&self, subscription: &str) -> Result<Op, StoreError> {
        let mut entries = Vec::new();
        let mut ranges: Vec<(&'static str, Vec<u8>, Vec<u8>)> =
            keys::subscription_ranges(subscription)
                .into_iter()
                .map(|(from, to)| (CF_PROGRESS, from, to))
                .collect();
        let (from, to) = keys::dead_range(subscription);
        ranges.push((CF_DEAD, from, to));
        for (cf, from, to) in ranges {
            let iter = self
                .db
                .iterator_cf(self.cf(cf), IteratorMode::From(&from, Direction::Forward));
            for item in iter {
                let (key, value) = item?;
                if *key >= *to {
                    break;
                }
                entries.push((cf, key.into_vec(), value.into_vec()));
            }
        }
        Ok(Op::snapshot(subscription, entries))
    }

    /// Everything persisted about a subscription's progress.
    pub fn load_progress(&self, subscription: &str) -> Result<Progress, StoreError> {
        self.load_tags(&keys::progress_prefixes(subscription))
    }

    /// A subscription's progress records only (its watermarks and the
    /// ranges finished above them), without retry states, redriven
    /// messages or counters.
    pub fn load_watermarks(&self, subscription: &str) -> Result<Progress, StoreError> {
        let [watermarks, ..] = keys::progress_prefixes(subscription);
        self.load_tags(&[watermarks])
    }

    /// The progress records of `prefixes` (tag and key prefix).
    fn load_tags(&self, prefixes: &[(u8, Vec<u8>)]) -> Result<Progress, StoreError> {
        let mut progress = Progress::default();
        let cf = self.cf(CF_PROGRESS);
        for (tag, prefix) in prefixes {
            let iter = self
                .db
                .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward));
            for item in iter {
                let (key, value) = item?;
                if !key.starts_with(prefix) {
                    break;
                }
                let rest = &key[prefix.len()..];
                match *tag {
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
        self.dead_letters_after(subscription, None, limit, usize::MAX)
    }

    /// Dead letters by position after `after` (topic, partition, offset;
    /// exclusive): at most `limit`, and no more once `max_bytes` of them are
    /// read (at least one).
    pub fn dead_letters_after(
        &self,
        subscription: &str,
        after: Option<(&str, u32, u64)>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let prefix = keys::dead_prefix(subscription);
        let start = match after {
            Some((topic, partition, offset)) => {
                let mut k = keys::dead(subscription, topic, partition, offset);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let iter = self.db.iterator_cf(
            self.cf(CF_DEAD),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix)
                || out.len() >= limit
                || (bytes >= max_bytes && !out.is_empty())
            {
                break;
            }
            bytes += value.len();
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    /// The dead letters of messages with id `id` (usually one; an id may
    /// repeat across topics), by position, found through their index.
    pub fn dead_letters_by_id(
        &self,
        subscription: &str,
        id: &str,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let prefix = keys::dead_id_prefix(subscription, Some(id));
        let mut out = Vec::new();
        for r in self.index_scan(subscription, &prefix, None, usize::MAX)? {
            let key = keys::dead(subscription, &r.topic, r.partition, r.offset);
            if let Some(value) = self.db.get_pinned_cf(self.cf(CF_DEAD), &key)? {
                out.push(decode(&key, &value)?);
            }
        }
        out.sort_by(|a: &DeadLetter, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        Ok(out)
    }

    /// The ids and positions of a subscription's dead letters, from their
    /// index (no letter is read), after `after` (exclusive), at most `limit`.
    pub fn dead_letter_refs(
        &self,
        subscription: &str,
        after: Option<&DeadRef>,
        limit: usize,
    ) -> Result<Vec<DeadRef>, StoreError> {
        let prefix = keys::dead_id_prefix(subscription, None);
        self.index_scan(subscription, &prefix, after, limit)
    }

    fn index_scan(
        &self,
        subscription: &str,
        prefix: &[u8],
        after: Option<&DeadRef>,
        limit: usize,
    ) -> Result<Vec<DeadRef>, StoreError> {
        let base = keys::dead_id_prefix(subscription, None);
        let start = match after {
            Some(r) => {
                let mut k = keys::dead_id(subscription, &r.id, &r.topic, r.partition, r.offset);
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let iter = self.db.iterator_cf(
            self.cf(CF_PROGRESS),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            let (id, topic, partition, offset) = keys::split_dead_id(&key[base.len()..])
                .ok_or_else(|| corrupt(&key, "malformed dead-letter index key"))?;
            out.push(DeadRef {
                id,
                topic,
                partition,
                offset,
            });
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

/// Index the dead letters an earlier host stored without their id index,
/// once (a marker in `meta` records that it was done).
fn index_dead_letters(db: &DB) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct Head {
        topic: String,
        partition: u32,
        offset: u64,
        message: Id,
    }
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let cf = |name| {
        db.cf_handle(name)
            .expect("column families are created at open")
    };
    let marker = keys::meta(META_STORE, DEAD_LETTER_INDEX);
    if db.get_cf(cf(CF_META), &marker)?.is_some() {
        return Ok(());
    }
    let mut batch = rocksdb::WriteBatch::default();
    let mut indexed = 0usize;
    for item in db.iterator_cf(cf(CF_DEAD), IteratorMode::Start) {
        let (key, value) = item?;
        let (subscription, _) =
            keys::split_dead(&key).ok_or_else(|| corrupt(&key, "malformed dead-letter key"))?;
        let head: Head = decode(&key, &value)?;
        let id = keys::dead_id(
            subscription,
            &head.message.id,
            &head.topic,
            head.partition,
            head.offset,
        );
        batch.put_cf(cf(CF_PROGRESS), id, []);
        indexed += 1;
    }
    batch.put_cf(cf(CF_META), marker, encode(&true));
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    if indexed > 0 {
        tracing::info!(indexed, "dead letters indexed by message id");
    }
    Ok(())
}

/// `meta` kind of the store's own records.
const META_STORE: &str = "store";
/// Present once every dead letter has its id index entry.
const DEAD_LETTER_INDEX: &str = "dead-letter-index";

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

/// [`encode`] to the end of `out`.
fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    rmp_serde::encode::write_named(out, value).expect("records always serialize")
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

    /// Reading a partition through leaves RocksDB's block cache as it was:
    /// a backlog's drain keeps no blocks in memory that nothing reads again.
    #[test]
    fn reading_a_log_brings_no_blocks_into_the_block_cache() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), None).expect("opens");
        let ops = (0..2_000u64)
            .map(|offset| Op::Append {
                topic: "t".into(),
                partition: 0,
                offset,
                message: Arc::new(StoredMessage {
                    id: format!("m{offset}"),
                    key: None,
                    payload: vec![offset as u8; 1024],
                    headers: vec![],
                    timestamp_ms: 1,
                    deliver_at_ms: None,
                }),
            })
            .collect();
        store.write(ops, Durability::Synced).expect("written");
        // Flushed: the messages are read from a table file, through the
        // cache's path, not from the memtable.
        store.db.flush_cf(store.cf(CF_LOG)).expect("flushed");
        let cached = || {
            store
                .db
                .property_int_value_cf(store.cf(CF_LOG), "rocksdb.block-cache-usage")
                .expect("the property")
                .expect("a block cache")
        };
        let before = cached();
        let read = store.read_log("t", 0, 0, 5_000).expect("reads");
        assert_eq!(read.len(), 2_000);
        assert_eq!(read[1_999].1.payload, vec![1_999u64 as u8; 1024]);
        let added = cached().saturating_sub(before);
        assert!(added < 64 << 10, "{added} bytes of blocks cached");
        // The same blocks read through the cache do land there: the check
        // above can fail.
        let mut iter = store
            .db
            .raw_iterator_cf_opt(store.cf(CF_LOG), rocksdb::ReadOptions::default());
        iter.seek_to_first();
        while iter.valid() {
            iter.next();
        }
        drop(iter);
        let filled = cached().saturating_sub(before);
        assert!(filled > 1 << 20, "{filled} bytes cached by a caching read");
        store.close().expect("closes");
    }

    /// A subscription's changes as journal entries, replayed in order on
    /// another store, leave it with the same state as their local form
    /// leaves this one: progress, retries,
    /// kv, counters, dead letters, and what a range delete removed. An
    /// entry that would change anything but a subscription's state is
    /// refused.
    #[test]
    fn journal_entries_replay_a_subscriptions_state_on_another_store() {
        let (a_dir, b_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let a = Store::open(a_dir.path(), None).expect("opens");
        let b = Store::open(b_dir.path(), None).expect("opens");
        let message = StoredMessage {
            id: "m1".into(),
            key: Some("k".into()),
            payload: vec![7; 300 << 10],
            headers: vec![],
            timestamp_ms: 1,
            deliver_at_ms: None,
        };
        let commits = vec![
            vec![
                Op::SetProgress {
                    subscription: "s".into(),
                    topic: "t".into(),
                    partition: 0,
                    watermark: 5,
                    done: vec![(7, 9)],
                    clear_done: vec![],
                },
                Op::PutRetry {
                    subscription: "s".into(),
                    topic: "t".into(),
                    partition: 0,
                    offset: 5,
                    state: RetryState {
                        attempts: 2,
                        due_ms: 10,
                        history: vec![],
                    },
                },
                Op::PutKv {
                    subscription: "s".into(),
                    key: "gone".into(),
                    value: Some(b"x".to_vec()),
                },
            ],
            vec![
                Op::PutKv {
                    subscription: "s".into(),
                    key: "total".into(),
                    value: Some(b"3".to_vec()),
                },
                Op::PutKv {
                    subscription: "s".into(),
                    key: "gone".into(),
                    value: None,
                },
                Op::PutDeadLetter {
                    subscription: "s".into(),
                    letter: DeadLetter {
                        topic: "t".into(),
                        partition: 0,
                        offset: 6,
                        message,
                        reason: "poison".into(),
                        dead_at_ms: 2,
                        history: vec![],
                    },
                },
                Op::PutCounters {
                    subscription: "s".into(),
                    counters: Counters {
                        delivered: 4,
                        ..Counters::default()
                    },
                },
            ],
            vec![Op::ForgetTopicProgress {
                subscription: "s".into(),
                topic: "gone-topic".into(),
            }],
        ];
        // b holds stale state of "s" that the replay replaces.
        b.write(
            vec![Op::PutKv {
                subscription: "s".into(),
                key: "stale".into(),
                value: Some(b"1".to_vec()),
            }],
            Durability::Buffered,
        )
        .expect("written");
        let mut replayed = vec![Op::ForgetSubscription {
            subscription: "s".into(),
        }];
        for ops in commits {
            // a applies the changes as encoded for its own store.
            let (pieces, local) = Op::journal(ops);
            // The 300 KiB dead letter gets a piece of its own.
            assert!(!pieces.is_empty() && pieces.iter().all(|p| p.len() < (1 << 20)));
            for piece in &pieces {
                replayed.push(Op::replay(piece).expect("replays"));
            }
            a.write(vec![local], Durability::Buffered).expect("written");
        }
        b.write(replayed, Durability::Buffered).expect("replayed");
        let progress = |s: &Store| format!("{:?}", s.load_progress("s").expect("progress"));
        assert_eq!(progress(&a), progress(&b));
        // The watermarks alone: the progress record, no retry state.
        let marks = b.load_watermarks("s").expect("watermarks");
        assert_eq!(marks.watermarks, [("t".to_string(), 0, 5, vec![(7, 9)])]);
        assert!(marks.retries.is_empty() && marks.counters == Counters::default());
        assert_eq!(b.load_progress("s").expect("progress").retries.len(), 1);
        assert_eq!(b.kv_get("s", "total").expect("kv"), Some(b"3".to_vec()));
        assert_eq!(b.kv_get("s", "gone").expect("kv"), None);
        assert_eq!(b.kv_get("s", "stale").expect("kv"), None);
        let letters = b.list_dead_letters("s", 10).expect("dead letters");
        assert_eq!(letters, a.list_dead_letters("s", 10).expect("dead letters"));
        assert_eq!(letters.len(), 1);

        // A snapshot of a's state, replayed on a store holding stale state
        // of "s" and state of "s10", gives a's state and leaves "s10" be.
        let c_dir = tempfile::tempdir().expect("dir");
        let c = Store::open(c_dir.path(), None).expect("opens");
        let kv = |sub: &str, key: &str, value: &[u8]| Op::PutKv {
            subscription: sub.into(),
            key: key.into(),
            value: Some(value.to_vec()),
        };
        c.write(
            vec![kv("s", "stale", b"1"), kv("s10", "total", b"9")],
            Durability::Buffered,
        )
        .expect("written");
        let snapshot = a.subscription_snapshot("s").expect("snapshot");
        let (pieces, _) = Op::journal(vec![snapshot]);
        let ops: Vec<Op> = pieces
            .iter()
            .map(|p| Op::replay(p).expect("replays"))
            .collect();
        c.write(ops, Durability::Buffered).expect("replayed");
        assert_eq!(progress(&a), progress(&c));
        assert_eq!(c.kv_get("s", "total").expect("kv"), Some(b"3".to_vec()));
        assert_eq!(c.kv_get("s", "stale").expect("kv"), None);
        assert_eq!(c.kv_get("s10", "total").expect("kv"), Some(b"9".to_vec()));
        assert_eq!(c.list_dead_letters("s", 10).expect("dead letters"), letters);
        // Closed here, not by their writer threads after the test returned
        // (RocksDB must not be closing when the process exits).
        for store in [&a, &b, &c] {
            store.close().expect("closes");
        }

        // Only a subscription's state: an entry naming messages is refused.
        let progress_entry = writer::journal_put(CF_PROGRESS, b"k", b"v");
        assert!(Op::replay(&progress_entry).is_ok());
        let log_entry = writer::journal_put(CF_LOG, b"k", b"v");
        is_corrupt(Op::replay(&log_entry), "a journal entry");
        assert!(Op::replay(b"not msgpack").is_err());
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

    fn letter(topic: &str, offset: u64, id: &str) -> DeadLetter {
        DeadLetter {
            topic: topic.into(),
            partition: 0,
            offset,
            message: StoredMessage {
                id: id.into(),
                key: None,
                payload: vec![7; 1024],
                headers: Vec::new(),
                timestamp_ms: 1,
                deliver_at_ms: None,
            },
            reason: "test".into(),
            dead_at_ms: 2,
            history: Vec::new(),
        }
    }

    fn put_letters(store: &Store, letters: &[DeadLetter]) {
        let ops = letters
            .iter()
            .map(|l| Op::PutDeadLetter {
                subscription: "s".into(),
                letter: l.clone(),
            })
            .collect();
        store.write(ops, Durability::Synced).expect("writes");
    }

    /// The ledger entries of a partition's trimmed messages are found by
    /// position, in chunks; an entry rewritten for a message of the same id
    /// elsewhere is kept, and a snapshot carries the index.
    #[test]
    fn ledger_entries_of_trimmed_messages_are_found_by_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), None).expect("opens");
        let put = |topic: &str, offset: u64, id: &str| Op::PutLedger {
            subscription: "s".into(),
            id: id.into(),
            entry: LedgerEntry {
                topic: topic.into(),
                partition: 0,
                offset,
                state: "acked".into(),
                attempts: Vec::new(),
            },
        };
        let mut ops: Vec<Op> = (0..10).map(|i| put("a", i, &format!("m{i}"))).collect();
        // `m3` again, later, in another topic: its entry now says so.
        ops.push(put("b", 40, "m3"));
        let mut apart = put("a", 2, "m2");
        if let Op::PutLedger { subscription, .. } = &mut apart {
            *subscription = "t".into();
        }
        ops.push(apart);
        store.write(ops, Durability::Synced).expect("writes");

        let (first, next) = store
            .ledger_trimmed("s", ("a", 0), (0, 6), 4)
            .expect("reads");
        assert_eq!((first.len(), next), (4, 4), "a chunk, and where to go on");
        store.write(first, Durability::Synced).expect("writes");
        let (rest, next) = store
            .ledger_trimmed("s", ("a", 0), (next, 6), 4)
            .expect("reads");
        assert_eq!(next, 6);
        store.write(rest, Durability::Synced).expect("writes");
        for i in 0..10 {
            let id = format!("m{i}");
            let kept = store.ledger("s", &id).expect("reads").is_some();
            assert_eq!(kept, i >= 6 || i == 3, "{id}");
        }
        assert_eq!(
            store.ledger("s", "m3").expect("reads").map(|e| e.topic),
            Some("b".to_string())
        );
        assert!(
            store.ledger("t", "m2").expect("reads").is_some(),
            "another subscription's"
        );
        assert!(store
            .ledger_trimmed("s", ("a", 0), (0, 6), 100)
            .expect("reads")
            .0
            .is_empty());

        // The index moves with the subscription's state.
        let snapshot = store.subscription_snapshot("s").expect("reads");
        let (pieces, _) = Op::journal(vec![snapshot]);
        let dir2 = tempfile::tempdir().expect("temp dir");
        let copy = Store::open(dir2.path(), None).expect("opens");
        let replayed = pieces
            .iter()
            .map(|p| Op::replay(p).expect("replays"))
            .collect();
        copy.write(replayed, Durability::Synced).expect("writes");
        let (later, _) = copy
            .ledger_trimmed("s", ("a", 0), (0, 100), 100)
            .expect("reads");
        assert_eq!(later.len(), 4, "m6..m9 are indexed there too");
        copy.close().expect("closes");
        store.close().expect("closes");
    }

    /// A batched lookup answers each id in its place as a point lookup
    /// would.
    #[test]
    fn a_batched_id_lookup_answers_each_id_in_its_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), None).expect("opens");
        let remember = |topic: &str, id: &str, offset: u64, expires_at_ms: u64| Op::RememberId {
            topic: topic.into(),
            id: id.into(),
            partition: 2,
            offset,
            expires_at_ms,
        };
        let ops = vec![
            remember("t", "b", 7, 5_000),
            remember("t", "a", 9, 5_000),
            remember("t", "old", 3, 1_000),
            remember("other", "c", 1, 5_000),
        ];
        store.write(ops, Durability::Synced).expect("writes");
        // Out of key order, with an expired id, another topic's id and a
        // repeat: each answer is the point lookup's.
        let ids = ["b", "missing", "a", "old", "c", "b"];
        let batched: Vec<_> = store
            .lookup_ids("t", &ids, 2_000)
            .into_iter()
            .map(|answer| answer.expect("reads"))
            .collect();
        assert_eq!(
            batched,
            vec![Some((2, 7)), None, Some((2, 9)), None, None, Some((2, 7))]
        );
        for (id, answer) in ids.iter().zip(&batched) {
            assert_eq!(&store.lookup_id("t", id, 2_000).expect("reads"), answer);
        }
        assert!(store.lookup_ids("t", &[], 2_000).is_empty());
        store.close().expect("closes");
    }

    /// Dead letters are found by message id through their index, an id that
    /// repeats across topics finds each, deleting one removes its entry, and
    /// the index pages with a cursor.
    #[test]
    fn dead_letters_are_indexed_by_message_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), None).expect("opens");
        let mut letters: Vec<DeadLetter> = (0..50)
            .map(|i| letter("a", i, &format!("m{i:02}")))
            .collect();
        letters.push(letter("b", 9, "m07"));
        put_letters(&store, &letters);
        let found = store.dead_letters_by_id("s", "m07").expect("reads");
        let positions: Vec<_> = found.iter().map(|d| (d.topic.as_str(), d.offset)).collect();
        assert_eq!(positions, [("a", 7), ("b", 9)]);
        assert!(store
            .dead_letters_by_id("s", "m7")
            .expect("reads")
            .is_empty());
        assert!(store
            .dead_letters_by_id("other", "m07")
            .expect("reads")
            .is_empty());

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .dead_letter_refs("s", after.as_ref(), 7)
                .expect("reads");
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            seen.extend(page);
        }
        assert_eq!(seen.len(), 51);

        let op = Op::DeleteDeadLetter {
            subscription: "s".into(),
            id: "m07".into(),
            topic: "a".into(),
            partition: 0,
            offset: 7,
        };
        store.write(vec![op], Durability::Synced).expect("writes");
        let left = store.dead_letters_by_id("s", "m07").expect("reads");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].topic, "b");
        assert_eq!(
            store.dead_letter_refs("s", None, 100).expect("reads").len(),
            50
        );
        store.close().expect("closes");
    }

    /// Dead letters an earlier host stored without the index are indexed
    /// when the store opens.
    #[test]
    fn dead_letters_of_an_earlier_host_are_indexed_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open(dir.path(), None).expect("opens");
            for l in [letter("a", 1, "x"), letter("a", 2, "y")] {
                let key = keys::dead("s", &l.topic, l.partition, l.offset);
                store
                    .db
                    .put_cf(store.cf(CF_DEAD), key, encode(&l))
                    .expect("raw write");
            }
            let marker = keys::meta(META_STORE, DEAD_LETTER_INDEX);
            store
                .db
                .delete_cf(store.cf(CF_META), marker)
                .expect("raw write");
            assert!(store
                .dead_letters_by_id("s", "y")
                .expect("reads")
                .is_empty());
            store.close().expect("closes");
        }
        let store = Store::open(dir.path(), None).expect("opens");
        let found = store.dead_letters_by_id("s", "y").expect("reads");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].offset, 2);
        store.close().expect("closes");
    }

    proptest::proptest! {
        /// Keys and records of any bytes decode or are refused, never a
        /// panic (`./dev.sh fuzz` runs a long campaign).
        #[test]
        fn keys_and_records_of_any_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = keys::decode_progress(&bytes);
            let _ = keys::split_position(&bytes);
            let _ = keys::split_dead_id(&bytes);
            let _ = keys::split_dead(&bytes);
            let _ = keys::split_topic_partition(&bytes);
            let _ = keys::decode_id(&bytes, 1);
            let _ = keys::trailing_u64(&bytes);
            let _ = decode::<StoredMessage>(b"k", &bytes);
            let _ = decode::<DeadLetter>(b"k", &bytes);
            let _ = decode::<RetryState>(b"k", &bytes);
            let _ = decode::<Redrive>(b"k", &bytes);
            let _ = decode::<Counters>(b"k", &bytes);
            let _ = decode::<LedgerEntry>(b"k", &bytes);
            let _ = decode::<MessageHead>(b"k", &bytes);
        }
    }
}
