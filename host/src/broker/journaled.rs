//! A subscription's state written through a shared journal (cluster mode,
//! docs/cluster.md, "A subscription's state").
//!
//! The host running a subscription keeps its state in its own store, as
//! in the embedded mode, and every change reaches the store through here:
//! first the attempts' publications go to the shared log, then the
//! changes are appended to the subscription's journal (refused whole if
//! another host wrote it since: fencing), and only then are they applied
//! to this host's store. Commits are taken in the order the runner makes
//! them, and those queued together go as one append. After a failure
//! nothing more is written: the runner halts, and the host replays the
//! journal before it runs the subscription again.
//!
//! The journal is compacted as it grows: once the bytes appended since its
//! last snapshot (or replayed at start) pass a threshold, and twice that
//! snapshot's size, the writer appends a snapshot of the subscription's
//! whole state as read from this host's store (which then holds exactly
//! what the journal says), and the entries before it are dropped. So a
//! replay reads at most about three snapshots' worth, however long the
//! subscription has run.

use super::log::NewMessage;
use super::shared::{AppendError, Shared, SharedJournal};
use super::BrokerError;
use crate::store::{Durability, Op, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most entries in one append (JetStream's limit for an atomic batch).
const MAX_ENTRIES: usize = 1000;

/// Default of how many bytes appended to a journal since its last
/// snapshot make the next one ([`JournalSink::start`]).
pub const DEFAULT_COMPACT_BYTES: u64 = 8 << 20;

/// What this host's journal writers did, for metrics.
#[derive(Debug, Default)]
pub(crate) struct JournalStats {
    /// Commits refused by fencing.
    pub(crate) fenced: AtomicU64,
    /// Snapshots appended (journals compacted).
    pub(crate) compactions: AtomicU64,
}

struct Commit {
    ops: Vec<Op>,
    outputs: BTreeMap<String, Vec<NewMessage>>,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// Where a clustered runner commits: cheap to clone.
#[derive(Clone)]
pub(crate) struct JournalSink {
    queue: mpsc::UnboundedSender<Commit>,
}

impl JournalSink {
    /// Write through `journal` (replayed into `store` already: `replayed`
    /// bytes) from now on, compacting it once `compact_bytes` more were
    /// appended.
    pub(crate) fn start(
        journal: Box<dyn SharedJournal>,
        store: Store,
        shared: Arc<Shared>,
        subscription: &str,
        stats: Arc<JournalStats>,
        (replayed, compact_bytes): (u64, u64),
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            journal,
            store,
            shared,
            stats,
            compact_bytes,
            since_snapshot: replayed,
            snapshot: 0,
        };
        tokio::spawn(writer.run(subscription.to_string(), rx));
        Self { queue }
    }

    /// Publish `outputs`, then journal and apply `ops`; resolves once all
    /// is done, or with why it was not.
    pub(crate) fn commit(
        &self,
        ops: Vec<Op>,
        outputs: BTreeMap<String, Vec<NewMessage>>,
    ) -> impl std::future::Future<Output = Result<(), BrokerError>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let queued = self.queue.send(Commit { ops, outputs, done });
        async move {
            queued.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
    }
}

/// The bytes of journal entries.
fn size(entries: &[Vec<u8>]) -> u64 {
    entries.iter().map(|e| e.len() as u64).sum()
}

fn stopped() -> BrokerError {
    BrokerError::Unavailable("the subscription's journal writer stopped".to_string())
}

/// Why a compaction did not happen.
enum Compaction {
    /// Another host wrote the journal since: this host lost the
    /// subscription.
    Fenced(BrokerError),
    /// Anything else: the journal is as it was, or the next append finds
    /// out.
    Failed(BrokerError),
}

/// The task writing a subscription's commits, in order.
struct Writer {
    journal: Box<dyn SharedJournal>,
    store: Store,
    shared: Arc<Shared>,
    stats: Arc<JournalStats>,
    /// Bytes appended since the last snapshot that make the next one.
    compact_bytes: u64,
    /// Bytes in the journal since its last snapshot (or replayed).
    since_snapshot: u64,
    /// The last snapshot's size.
    snapshot: u64,
}

impl Writer {
    async fn run(mut self, subscription: String, mut rx: mpsc::UnboundedReceiver<Commit>) {
        let mut failed: Option<String> = None;
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while let Ok(next) = rx.try_recv() {
                group.push(next);
            }
            if failed.is_none() {
                if let Err(e) = self.write(&mut group).await {
                    tracing::error!(subscription = %subscription, error = %e, "a commit of the subscription's state failed");
                    failed = Some(e.to_string());
                }
            }
            for commit in group {
                let answer = match &failed {
                    None => Ok(()),
                    Some(e) => Err(BrokerError::Unavailable(e.clone())),
                };
                let _ = commit.done.send(answer);
            }
            // After the answers (those commits are done either way), before
            // the next group: the store holds exactly what the journal says.
            if failed.is_none() && self.since_snapshot >= self.compact_bytes.max(2 * self.snapshot)
            {
                match self.compact(&subscription).await {
                    Ok(()) => {}
                    // Another host wrote the journal: this one must stop.
                    Err(Compaction::Fenced(e)) => {
                        tracing::error!(subscription = %subscription, error = %e, "compacting the subscription's journal was fenced");
                        failed = Some(e.to_string());
                    }
                    // Tried again once as much more was appended. (If the
                    // snapshot was stored unanswered, the next append is
                    // refused as fenced, and the runner halts then.)
                    Err(Compaction::Failed(e)) => {
                        tracing::warn!(subscription = %subscription, error = %e, "compacting the subscription's journal failed; trying again later");
                    }
                }
            }
        }
    }

    /// Write a group of commits: publications, then the journal, then the
    /// store.
    async fn write(&mut self, group: &mut [Commit]) -> Result<(), BrokerError> {
        for commit in group.iter_mut() {
            for (topic, messages) in std::mem::take(&mut commit.outputs) {
                self.shared.publish(&topic, messages).await?;
            }
        }
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let mut ops = Vec::new();
        for commit in group.iter_mut() {
            let (pieces, op) = Op::journal(std::mem::take(&mut commit.ops));
            if entries.len() + pieces.len() > MAX_ENTRIES && !entries.is_empty() {
                self.append(std::mem::take(&mut entries)).await?;
            }
            self.since_snapshot += size(&pieces);
            entries.extend(pieces);
            ops.push(op);
        }
        if !entries.is_empty() {
            self.append(entries).await?;
        }
        if !ops.is_empty() {
            self.store.submit(ops, Durability::Buffered).await?;
        }
        Ok(())
    }

    async fn append(&mut self, entries: Vec<Vec<u8>>) -> Result<(), BrokerError> {
        let appended = self.journal.append(entries).await;
        appended.map_err(|e| self.refused(e))
    }

    fn refused(&self, e: AppendError) -> BrokerError {
        match e {
            AppendError::Fenced(e) => {
                self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                BrokerError::Unavailable(format!("another host took the subscription over ({e})"))
            }
            AppendError::Failed(e) => BrokerError::Unavailable(e),
        }
    }

    /// Append a snapshot of the subscription's state (this host's store
    /// holds all the journal says: every append before was applied) and
    /// drop the entries before it.
    async fn compact(&mut self, subscription: &str) -> Result<(), Compaction> {
        let (store, name) = (self.store.clone(), subscription.to_string());
        let snapshot = tokio::task::spawn_blocking(move || store.subscription_snapshot(&name))
            .await
            .map_err(|e| Compaction::Failed(BrokerError::Unavailable(e.to_string())))?
            .map_err(|e| Compaction::Failed(e.into()))?;
        let (pieces, _) = Op::journal(vec![snapshot]);
        let bytes = size(&pieces);
        self.since_snapshot = 0;
        self.snapshot = bytes;
        if pieces.len() > MAX_ENTRIES {
            tracing::warn!(subscription, bytes, "the subscription's state is too large for one append: its journal is not compacted");
            return Ok(());
        }
        match self.journal.compact(pieces).await {
            Ok(()) => {}
            Err(e @ AppendError::Fenced(_)) => return Err(Compaction::Fenced(self.refused(e))),
            Err(e) => return Err(Compaction::Failed(self.refused(e))),
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(subscription, bytes, "journal compacted");
        Ok(())
    }
}

/// Replay `journal` into `store`: everything this host kept of the
/// subscription is replaced by what the journal holds. Returns the bytes
/// replayed.
pub(crate) async fn replay(
    journal: &mut dyn SharedJournal,
    store: &Store,
    subscription: &str,
) -> Result<u64, BrokerError> {
    let entries = journal.replay().await?;
    let bytes = size(&entries);
    let mut ops = vec![Op::ForgetSubscription {
        subscription: subscription.to_string(),
    }];
    for entry in &entries {
        ops.push(Op::replay(entry)?);
    }
    store.submit(ops, Durability::Buffered).await?;
    Ok(bytes)
}
