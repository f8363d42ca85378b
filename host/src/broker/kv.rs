//! A subscription's kv state as its plugin calls see it, and the host
//! environment those calls run in.
//!
//! Plugins read committed kv state and buffer their writes per attempt; the
//! subscription's runner commits an acked attempt's writes in the same store
//! batch as the ack. Commits are visible to reads at once, before the batch
//! is written: [`KvState`] keeps them in memory until the store has them.
//!
//! Concurrent attempts may read-modify-write the same key, so commits are
//! checked optimistically: a read returns a version token (the commit count
//! at that moment), every commit stamps the keys it writes with a new count,
//! and an attempt that read a key stamped later than its token conflicts and
//! is run again instead of committed. Serializable, without locks held
//! across plugin calls.

use super::log::Log;
use crate::runtime::{Egress, HostEnv};
use crate::store::{Op, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Stamps older than every running attempt's start are dropped once there
/// are more than this many.
const PRUNE_AT: usize = 4096;
/// Reads of a key outside the lock before one under it.
const READ_TRIES: usize = 3;

pub(crate) struct KvState {
    store: Store,
    subscription: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Commits so far in this run of the subscription.
    seq: u64,
    /// Per key: the commit that last wrote it (recent commits only, see
    /// [`KvState::prune`]; a missing key was last written before any running
    /// attempt started).
    stamps: HashMap<String, u64>,
    /// Committed writes not yet known to be in the store: key → (commit, value).
    unwritten: HashMap<String, (u64, Option<Vec<u8>>)>,
}

impl KvState {
    pub(crate) fn new(store: Store, subscription: &str) -> Self {
        Self {
            store,
            subscription: subscription.to_string(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("kv state lock")
    }

    /// The number of commits so far: an attempt started now holds tokens at
    /// least this high.
    pub(crate) fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// The committed value of `key` and the version token of this read.
    /// The store is read without the lock the runner commits under: if a
    /// commit wrote the key meanwhile, the read is made again.
    pub(crate) fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u64), String> {
        for _ in 0..READ_TRIES {
            let seq = {
                let inner = self.lock();
                if let Some((_, value)) = inner.unwritten.get(key) {
                    return Ok((value.clone(), inner.seq));
                }
                inner.seq
            };
            let value = self.read(key)?;
            // Unchanged since `seq` (stamps newer than any running attempt's
            // start are kept): the value read is the one committed at `seq`.
            let inner = self.lock();
            if inner.stamps.get(key).is_none_or(|stamp| *stamp <= seq) {
                return Ok((value, seq));
            }
        }
        // Contended: read under the lock, so no commit slips in between.
        let inner = self.lock();
        if let Some((_, value)) = inner.unwritten.get(key) {
            return Ok((value.clone(), inner.seq));
        }
        Ok((self.read(key)?, inner.seq))
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.store
            .kv_get(&self.subscription, key)
            .map_err(|e| e.to_string())
    }

    /// Whether a key an attempt read (with these tokens) was committed since.
    pub(crate) fn conflicts(&self, reads: &BTreeMap<String, u64>) -> bool {
        let inner = self.lock();
        reads
            .iter()
            .any(|(key, token)| inner.stamps.get(key).is_some_and(|stamp| stamp > token))
    }

    /// Commit an acked attempt's writes: visible to reads from now on, and
    /// queued as ops for the ack's batch. Returns the commit's number, for
    /// [`KvState::written`].
    pub(crate) fn commit(
        &self,
        writes: BTreeMap<String, Option<Vec<u8>>>,
        ops: &mut Vec<Op>,
    ) -> Option<u64> {
        if writes.is_empty() {
            return None;
        }
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        for (key, value) in writes {
            inner.stamps.insert(key.clone(), seq);
            inner.unwritten.insert(key.clone(), (seq, value.clone()));
            ops.push(Op::PutKv {
                subscription: self.subscription.clone(),
                key,
                value,
            });
        }
        Some(seq)
    }

    /// Commits up to `seq` are in the store: reads may go there for them.
    pub(crate) fn written(&self, seq: u64) {
        self.lock().unwritten.retain(|_, (commit, _)| *commit > seq);
    }

    /// Forget stamps no running attempt can conflict with: those at or below
    /// `oldest`, the lowest start token of the attempts in flight (or the
    /// current count when none is).
    pub(crate) fn prune(&self, oldest: Option<u64>) {
        let mut inner = self.lock();
        if inner.stamps.len() < PRUNE_AT {
            return;
        }
        let floor = oldest.unwrap_or(inner.seq);
        inner.stamps.retain(|_, stamp| *stamp > floor);
    }
}

/// What a subscription's plugin calls are given: its topics to publish to,
/// its kv state and its configuration.
pub(crate) struct SubscriptionEnv {
    pub(crate) log: Arc<Log>,
    /// Cluster mode: the shared log the plugin publishes to, and a handle
    /// to ask it from a plugin thread.
    pub(crate) shared: Option<(Arc<super::shared::Shared>, tokio::runtime::Handle)>,
    pub(crate) kv: Arc<KvState>,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) egress: Arc<Egress>,
    /// How the plugin's calls have behaved (where the next one starts).
    pub(crate) conduct: crate::runtime::Conduct,
}

impl HostEnv for SubscriptionEnv {
    fn check_publish(&self, topic: &str) -> Result<(), String> {
        let Some((shared, handle)) = &self.shared else {
            return self.log.check_publish(topic);
        };
        // A plugin thread, not an async one: it may wait for the answer.
        match handle.block_on(shared.exists(topic)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("topic {topic:?} does not exist")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn kv_get(&self, key: &str) -> Result<(Option<Vec<u8>>, u64), String> {
        self.kv.get(key)
    }

    fn config(&self, name: &str) -> Option<String> {
        self.config.get(name).cloned()
    }

    fn egress(&self) -> Option<Arc<Egress>> {
        Some(self.egress.clone())
    }

    fn conduct(&self) -> Option<&crate::runtime::Conduct> {
        Some(&self.conduct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, KvState) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), None).expect("open store");
        (dir, KvState::new(store, "sub"))
    }

    fn writes(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_read_of_a_key_committed_since_conflicts() {
        let (_dir, kv) = state();
        let (value, token) = kv.get("n").expect("read");
        assert_eq!(value, None);
        let reads = BTreeMap::from([("n".to_string(), token)]);
        assert!(!kv.conflicts(&reads));
        let mut ops = Vec::new();
        kv.commit(writes(&[("n", Some("1"))]), &mut ops);
        assert_eq!(ops.len(), 1);
        assert!(kv.conflicts(&reads), "n changed after it was read");
        // A read after the commit sees it, and does not conflict.
        let (value, token) = kv.get("n").expect("read");
        assert_eq!(value.as_deref(), Some(&b"1"[..]));
        assert!(!kv.conflicts(&BTreeMap::from([("n".to_string(), token)])));
        // Other keys are unaffected.
        assert!(!kv.conflicts(&BTreeMap::from([("m".to_string(), 0)])));
    }

    #[tokio::test]
    async fn commits_are_read_back_before_and_after_they_are_written() {
        let (_dir, kv) = state();
        let mut ops = Vec::new();
        let seq = kv
            .commit(writes(&[("a", Some("x")), ("b", None)]), &mut ops)
            .expect("a commit");
        assert_eq!(kv.get("a").expect("read").0.as_deref(), Some(&b"x"[..]));
        kv.store
            .submit(ops, crate::store::Durability::Buffered)
            .await
            .expect("write");
        kv.written(seq);
        assert!(kv.lock().unwritten.is_empty());
        assert_eq!(kv.get("a").expect("read").0.as_deref(), Some(&b"x"[..]));
        assert_eq!(kv.get("b").expect("read").0, None);
        assert_eq!(kv.commit(BTreeMap::new(), &mut Vec::new()), None);
    }

    #[test]
    fn pruning_keeps_stamps_a_running_attempt_may_conflict_with() {
        let (_dir, kv) = state();
        let mut ops = Vec::new();
        for i in 0..PRUNE_AT {
            kv.commit(writes(&[(&format!("k{i}"), Some("v"))]), &mut ops);
        }
        let running_since = kv.seq() - 10;
        kv.prune(Some(running_since));
        assert_eq!(kv.lock().stamps.len(), 10);
        let token = running_since;
        let key = format!("k{}", PRUNE_AT - 1);
        assert!(kv.conflicts(&BTreeMap::from([(key, token)])));
    }
}
