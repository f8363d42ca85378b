//! Which subscriptions this host runs in cluster mode (docs/cluster.md,
//! "Running subscriptions").
//!
//! Every beat each host lists the live hosts and the subscriptions, and
//! runs those placed on it (rendezvous hashing over the live hosts, the
//! same answer on every host) once it holds their lease: it replays the
//! subscription's journal into its store and starts a runner that writes
//! through the journal. It renews the leases of what it runs, and stops a
//! subscription (its in-flight attempts finish and commit) when the
//! subscription is placed elsewhere, changed, deleted, or its lease was
//! lost, then gives the lease up so the next host need not wait for it to
//! expire. A runner whose commit failed (fenced, or the cluster
//! unreachable) halts; the next beat stops it and starts it again from the
//! journal if the host still holds it.
//!
//! A subscription that names its topics by pattern is offered, every beat,
//! the matching topics created since it started.
//!
//! The lease keeps two hosts from running one subscription most of the
//! time; the journal's fencing is what keeps a host that lost it from
//! doing harm.

use super::plugins::Registry;
use super::shared::{Shared, SubscriptionRecord, Watermarks};
use super::subscriptions::Subscriptions;
use super::BrokerError;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// A subscription this host runs: its lease, and the settings it runs
/// with and their revision.
struct Held {
    lease: u64,
    revision: u64,
    record: SubscriptionRecord,
    /// The committed watermarks last stored for retention, and when.
    marks: Option<(Watermarks, std::time::Instant)>,
    /// Per topic and partition, the offset below which the ledger holds
    /// no entry of a trimmed message (as far as this host deleted them).
    ledger_from: HashMap<(String, u32), u64>,
}

/// How often watermarks are stored again although they did not move (a
/// record lost to a race with a delete is restored so).
const MARKS_AGAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Every how many beats the watermarks of what runs here are stored (10 s
/// by default), and every how many retention trims the topics (30 s: a
/// sweep reads every partition's state).
const RETAIN_EVERY: u64 = 5;
const SWEEP_EVERY: u64 = 15;

/// Most partitions' heads read at once to estimate lag.
const HEAD_READS: usize = 32;

/// The unit whose owner among the live hosts trims the topics.
const RETENTION: &str = "retention";

/// The lease unit of a subscription.
fn unit(subscription: &str) -> String {
    format!("sub.{subscription}")
}

/// How an API call asks for a beat now and waits for it to be done.
#[derive(Clone)]
pub(crate) struct Kick {
    now: Arc<tokio::sync::Notify>,
    beats: watch::Receiver<u64>,
}

/// Longest an API call waits for the beats it asked for.
const KICK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Kick {
    /// Ask for a beat now and wait until a whole beat began after the
    /// ask and ended (the one under way may have listed before it).
    async fn settle(&self) {
        let mut beats = self.beats.clone();
        let goal = *beats.borrow_and_update() + 2;
        self.now.notify_one();
        let waited = tokio::time::timeout(KICK_WAIT, async {
            while *beats.borrow_and_update() < goal {
                if beats.changed().await.is_err() {
                    return;
                }
                self.now.notify_one();
            }
        });
        let _ = waited.await;
    }
}

pub(crate) struct Placement {
    pub(crate) subscriptions: Arc<Subscriptions>,
    pub(crate) plugins: Arc<Registry>,
    pub(crate) log: Arc<Shared>,
    /// What the host shares: subscriptions' records, leases and journals,
    /// the log retention trims, the components collected when nothing
    /// names them.
    pub(crate) backend: super::shared::SharedBackend,
    /// Bytes appended to a journal since its last snapshot that make the
    /// next one.
    pub(crate) compact_bytes: u64,
}

impl Placement {
    /// A way for API calls to ask for a beat at once, and the beats'
    /// count it watches.
    pub(crate) fn kick() -> (Kick, watch::Sender<u64>) {
        let (beats_tx, beats) = watch::channel(0);
        let kick = Kick {
            now: Arc::new(tokio::sync::Notify::new()),
            beats,
        };
        (kick, beats_tx)
    }

    /// Place subscriptions every beat (or at once when kicked) until
    /// `stop`, then stop running them here and give their leases up.
    pub(crate) async fn run(
        self,
        kick: Kick,
        beats: watch::Sender<u64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut held: HashMap<String, Held> = HashMap::new();
        for n in 1u64.. {
            if let Err(e) = self.beat(&mut held).await {
                tracing::warn!(error = %e, "placing subscriptions failed; trying again next beat");
            }
            if n % RETAIN_EVERY == 0 {
                if let Err(e) = self.retain(&mut held, n % SWEEP_EVERY == 0).await {
                    tracing::warn!(error = %e, "retention in the cluster failed; trying again later");
                }
            }
            beats.send_modify(|n| *n += 1);
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(self.backend.runners.beat()) => {}
                () = kick.now.notified() => {}
            }
        }
        for (name, h) in held {
            self.give_up(&name, h, false).await;
        }
        if let Err(e) = self.backend.runners.leave().await {
            tracing::warn!(error = %e, "leaving the cluster failed; other hosts see this one gone once its entry expires");
        }
    }

    async fn beat(&self, held: &mut HashMap<String, Held>) -> Result<(), BrokerError> {
        let live = self.backend.runners.live().await?;
        let listed = self.backend.subscriptions.list().await?;
        self.subscriptions
            .set_known(listed.iter().map(|(name, _, _)| name.clone()));
        let me = self.backend.runners.host().to_string();
        let wanted: HashMap<&str, u64> = listed.iter().map(|(n, _, r)| (n.as_str(), *r)).collect();
        // Deleted ones first: their state here goes too.
        let gone: Vec<String> = held
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let h = held.remove(&name).expect("held");
            self.give_up(&name, h, true).await;
        }
        for (name, record, revision) in listed {
            let mine = self.backend.runners.owner(&live, &name).as_deref() == Some(me.as_str());
            if let Some(h) = held.get_mut(&name) {
                if h.revision != revision && h.record.same_run(&record) {
                    // Paused or resumed through another host.
                    self.subscriptions.pause_here(&name, record.paused);
                    h.revision = revision;
                    h.record = record.clone();
                }
                let halted = self.subscriptions.running_here(&name) != Some(false);
                if mine && h.revision == revision && !halted {
                    match self.backend.runners.renew(&unit(&name), h.lease).await {
                        Ok(Some(lease)) => {
                            h.lease = lease;
                            continue;
                        }
                        Ok(None) => {
                            tracing::warn!(subscription = %name, "lost the subscription's lease; stopping it here");
                        }
                        Err(e) => {
                            // Fencing keeps a stale runner harmless: run on.
                            tracing::warn!(subscription = %name, error = %e, "renewing the subscription's lease failed");
                            continue;
                        }
                    }
                }
                let h = held.remove(&name).expect("held");
                self.give_up(&name, h, false).await;
                if !mine {
                    continue;
                }
            } else if !mine {
                continue;
            }
            // Placed here and not running: take it if its lease is free
            // (a failure here must not keep the others' leases unrenewed).
            let lease = match self.backend.runners.acquire(&unit(&name)).await {
                Ok(Some(lease)) => lease,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(subscription = %name, error = %e, "taking the subscription's lease failed");
                    continue;
                }
            };
            match self.take(&name, record.clone()).await {
                Ok(()) => {
                    tracing::info!(subscription = %name, host = %me, "running the subscription on this host");
                    let h = Held {
                        lease,
                        revision,
                        record,
                        marks: None,
                        ledger_from: HashMap::new(),
                    };
                    held.insert(name, h);
                }
                Err(e) => {
                    tracing::warn!(subscription = %name, error = %e, "cannot run the subscription here yet");
                    self.release(&name, lease).await;
                }
            }
        }
        self.offer_new_topics().await
    }

    /// Store the committed watermarks of what runs here (when they moved),
    /// then, if `sweep`, on the host placement picks for it, trim the
    /// topics.
    async fn retain(
        &self,
        held: &mut HashMap<String, Held>,
        sweep: bool,
    ) -> Result<(), BrokerError> {
        for (name, h) in held.iter_mut() {
            let marks = Watermarks {
                incarnation: h.record.incarnation,
                topics: self.subscriptions.committed_watermarks(name).await?,
            };
            let fresh = h
                .marks
                .as_ref()
                .is_some_and(|(m, at)| *m == marks && at.elapsed() < MARKS_AGAIN);
            if !fresh {
                self.backend
                    .subscriptions
                    .put_watermarks(name, &marks)
                    .await?;
                h.marks = Some((marks, std::time::Instant::now()));
            }
        }
        if !sweep {
            return Ok(());
        }
        let swept = self.sweep_if_picked().await;
        // After the trim, so that what this host trimmed goes at once.
        self.forget_trimmed_ledgers(held).await;
        swept
    }

    /// On the host placement picks for it, trim the topics and collect
    /// leftovers.
    async fn sweep_if_picked(&self) -> Result<(), BrokerError> {
        let live = self.backend.runners.live().await?;
        if self.backend.runners.owner(&live, RETENTION).as_deref()
            != Some(self.backend.runners.host())
        {
            return Ok(());
        }
        // One listing and one clock reading serve both.
        let listed = self.backend.subscriptions.list().await?;
        let now = super::now_ms();
        super::shared_retention::sweep(&self.backend, &listed, now).await?;
        super::shared::collect_leftovers(&self.backend, &listed, now).await?;
        Ok(())
    }

    /// Delete the ledger entries of messages retention trimmed from the
    /// shared log (wherever it ran), of the subscriptions running here:
    /// their journals carry the deletes, as the embedded mode's retention
    /// deletes them with the messages. A failure is logged and tried again
    /// at the next sweep.
    async fn forget_trimmed_ledgers(&self, held: &mut HashMap<String, Held>) {
        let mut firsts: HashMap<(String, u32), u64> = HashMap::new();
        for (name, h) in held.iter_mut() {
            let Some((marks, _)) = &h.marks else { continue };
            let partitions: Vec<(String, u32)> = marks
                .topics
                .iter()
                .flat_map(|(topic, w)| (0..w.len() as u32).map(|p| (topic.clone(), p)))
                .collect();
            for at in partitions {
                let first = match firsts.get(&at) {
                    Some(first) => *first,
                    None => match self.backend.log.partition(&at.0, at.1).await {
                        Ok(stored) => *firsts.entry(at.clone()).or_insert(stored.first),
                        Err(e) => {
                            tracing::debug!(topic = %at.0, partition = at.1, error = %e, "reading a partition's first offset failed");
                            continue;
                        }
                    },
                };
                let mut from = h.ledger_from.get(&at).copied().unwrap_or(0);
                // A write per chunk, until the partition is done.
                while from < first {
                    match self
                        .subscriptions
                        .forget_trimmed_ledger(name, (&at.0, at.1), (from, first))
                        .await
                    {
                        Ok(next) => from = next,
                        Err(e) => {
                            tracing::warn!(subscription = %name, error = %e, "deleting the ledger entries of trimmed messages failed; trying again at the next sweep");
                            break;
                        }
                    }
                }
                h.ledger_from.insert(at, from);
            }
        }
    }

    /// Topics created since a pattern subscription running here started:
    /// it consumes them from now on (from their beginning).
    async fn offer_new_topics(&self) -> Result<(), BrokerError> {
        let patterns = self.subscriptions.patterns_here();
        if patterns.is_empty() {
            return Ok(());
        }
        for name in self.log.topic_names().await? {
            if !patterns
                .iter()
                .any(|p| super::spec::topic_matches(p, &name))
            {
                continue;
            }
            match self.log.follow(&name).await {
                Ok(topic) => self.subscriptions.offer_topic(topic),
                // Deleted since it was listed.
                Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Start running `name` here: its plugin compiled here, its journal
    /// replayed.
    async fn take(&self, name: &str, record: SubscriptionRecord) -> Result<(), BrokerError> {
        if record.spec.mode == super::spec::Mode::Push {
            self.plugins.fetch_shared(&record.spec.plugin).await?;
        }
        let journal = self.backend.runners.journal(&record.journal(name)).await?;
        self.subscriptions
            .start_clustered(name, record, self.log.clone(), journal, self.compact_bytes)
            .await
    }

    async fn give_up(&self, name: &str, h: Held, forget: bool) {
        if let Err(e) = self.subscriptions.stop_here(name, forget).await {
            tracing::warn!(subscription = %name, error = %e, "forgetting the subscription's state here failed");
        }
        self.release(name, h.lease).await;
    }

    async fn release(&self, name: &str, lease: u64) {
        if let Err(e) = self.backend.runners.release(&unit(name), lease).await {
            // It expires with its TTL.
            tracing::debug!(subscription = %name, error = %e, "giving up the lease failed");
        }
    }
}

/// Most rounds a change of a subscription's record retries after losing a
/// race with another host.
const RACES: usize = 16;

/// What the subscriptions API does in cluster mode.
impl super::Broker {
    fn cluster(&self) -> Option<(&super::shared::SharedBackend, &Arc<Shared>)> {
        self.inner.cluster.as_ref().zip(self.inner.shared.as_ref())
    }

    /// Create or update a subscription's shared record; the host it is
    /// placed on runs it from its next beat on.
    pub(super) async fn put_shared_subscription(
        &self,
        name: &str,
        mut spec: super::spec::SubscriptionSpec,
    ) -> Result<(super::SubscriptionInfo, bool), BrokerError> {
        let (backend, log) = self.cluster().expect("cluster mode");
        super::spec::validate_resource_name("subscription", name)?;
        spec.validate()?;
        if !super::spec::is_pattern(&spec.topic) && !log.exists(&spec.topic).await? {
            return Err(BrokerError::NotFound(format!(
                "topic {:?} does not exist",
                spec.topic
            )));
        }
        if spec.mode == super::spec::Mode::Push {
            self.inner.plugins.check_shared(&spec.plugin).await?;
        }
        for _ in 0..RACES {
            match backend.subscriptions.get(name).await? {
                Some((old, _)) if old.spec == spec => return Ok((self.placed(name, old), false)),
                Some((old, _)) if old.spec.topic != spec.topic => {
                    return Err(BrokerError::Conflict(format!(
                        "subscription {name:?} consumes topic {:?}; delete it to consume another topic",
                        old.spec.topic
                    )))
                }
                Some((old, revision)) => {
                    let record = SubscriptionRecord { spec, ..old };
                    if backend.subscriptions.put(name, &record, revision).await? {
                        self.settle_placement().await;
                        return Ok((self.placed(name, record), false));
                    }
                    spec = record.spec;
                }
                None => {
                    let record = SubscriptionRecord {
                        spec,
                        incarnation: rand::random(),
                        paused: false,
                    };
                    if record.spec.start == super::spec::Start::Latest {
                        self.start_at_heads(backend, log, name, &record).await?;
                    }
                    if backend.subscriptions.put(name, &record, 0).await? {
                        self.inner.subscriptions.know(name, true);
                        self.settle_placement().await;
                        return Ok((self.placed(name, record), true));
                    }
                    // Another host created it meanwhile.
                    backend.runners.delete_journal(&record.journal(name)).await?;
                    spec = record.spec;
                }
            }
        }
        Err(BrokerError::Unavailable(format!(
            "subscription {name:?} kept changing on other hosts; try again"
        )))
    }

    /// After a change of a subscription's record: this host's placement
    /// acts on it before the answer (if the subscription is placed here,
    /// it runs here, or stopped, by then); other hosts act at their next
    /// beat.
    async fn settle_placement(&self) {
        let kick = self.inner.kick.clone();
        if let Some(kick) = kick {
            kick.settle().await;
        }
    }

    /// A new incarnation that starts at the heads of its topics now: its
    /// journal's first entry is that progress.
    async fn start_at_heads(
        &self,
        backend: &super::shared::SharedBackend,
        log: &Arc<Shared>,
        name: &str,
        record: &SubscriptionRecord,
    ) -> Result<(), BrokerError> {
        let mut ops = Vec::new();
        for info in log.topics().await? {
            if !super::spec::topic_matches(&record.spec.topic, &info.name) {
                continue;
            }
            for (p, head) in info.offsets.iter().enumerate() {
                ops.push(crate::store::Op::SetProgress {
                    subscription: name.to_string(),
                    topic: info.name.clone(),
                    partition: p as u32,
                    watermark: *head,
                    done: Vec::new(),
                    clear_done: Vec::new(),
                });
            }
        }
        let mut journal = backend.runners.journal(&record.journal(name)).await?;
        journal.replay().await?;
        journal
            .append(crate::store::Op::journal(ops).0)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
    }

    /// Pause or resume a subscription: its shared record says so, and the
    /// host running it acts on it at once if that is this host (requests
    /// about a subscription are handed to the host running it), else at
    /// its next beat.
    pub(super) async fn set_shared_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<super::SubscriptionInfo, BrokerError> {
        let (backend, _) = self.cluster().expect("cluster mode");
        for _ in 0..RACES {
            let Some((record, revision)) = backend.subscriptions.get(name).await? else {
                return Err(not_found(name));
            };
            let record = SubscriptionRecord { paused, ..record };
            if backend.subscriptions.put(name, &record, revision).await? {
                if self
                    .inner
                    .subscriptions
                    .info_of(name, record.incarnation)
                    .is_some()
                {
                    self.inner.subscriptions.pause_here(name, paused);
                }
                return Ok(self.placed(name, record));
            }
        }
        Err(BrokerError::Unavailable(format!(
            "subscription {name:?} kept changing on other hosts; try again"
        )))
    }

    /// Cluster mode: the other host running subscription `name` now, which
    /// answers what is asked of its state. `None` when it runs here, on no
    /// host at the moment, or in the embedded mode.
    pub async fn runs_elsewhere(&self, name: &str) -> Result<Option<String>, BrokerError> {
        let Some((backend, _)) = self.cluster() else {
            return Ok(None);
        };
        if self.inner.subscriptions.info(name).is_ok() {
            return Ok(None);
        }
        let holder = backend.runners.holder(&unit(name)).await?;
        Ok(holder.filter(|host| host != backend.runners.host()))
    }

    /// Hand `request` to another host and wait up to `timeout` for its
    /// answer.
    pub async fn ask_host(
        &self,
        host: &str,
        request: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, BrokerError> {
        let (backend, _) = self.cluster().ok_or_else(embedded)?;
        backend.runners.ask(host, request, timeout).await
    }

    /// Hand `request` to another host for a streamed answer: its pieces,
    /// the first within `timeout`.
    pub async fn ask_host_stream(
        &self,
        host: &str,
        request: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<super::shared::AnswerStream, BrokerError> {
        let (backend, _) = self.cluster().ok_or_else(embedded)?;
        backend.runners.ask_stream(host, request, timeout).await
    }

    /// Stream answers to what other hosts hand this one with `answerer`.
    pub async fn answer_host_streams(
        &self,
        answerer: super::shared::StreamAnswerer,
    ) -> Result<(), BrokerError> {
        let (backend, _) = self.cluster().ok_or_else(embedded)?;
        backend.runners.answer_streams(answerer).await
    }

    /// Answer what other hosts hand this one with `answerer`.
    pub async fn answer_hosts(&self, answerer: super::shared::Answerer) -> Result<(), BrokerError> {
        let (backend, _) = self.cluster().ok_or_else(embedded)?;
        backend.runners.answer(answerer).await
    }

    /// Cluster mode: this host's name among the live hosts.
    pub fn host_name(&self) -> Option<String> {
        self.cluster()
            .map(|(backend, _)| backend.runners.host().to_string())
    }

    /// The largest request or answer hosts can hand each other.
    pub fn host_message_limit(&self) -> usize {
        self.cluster()
            .map_or(usize::MAX, |(backend, _)| backend.runners.max_message())
    }

    /// Delete a subscription's shared record, then its journal; the host
    /// running it stops at its next beat.
    pub(super) async fn delete_shared_subscription(&self, name: &str) -> Result<(), BrokerError> {
        let (backend, _) = self.cluster().expect("cluster mode");
        for _ in 0..RACES {
            let Some((record, revision)) = backend.subscriptions.get(name).await? else {
                return Err(not_found(name));
            };
            if backend.subscriptions.delete(name, revision).await? {
                backend
                    .runners
                    .delete_journal(&record.journal(name))
                    .await?;
                // Of no incarnation that exists: retention ignores them.
                if let Err(e) = backend.subscriptions.delete_watermarks(name).await {
                    tracing::debug!(subscription = name, error = %e, "forgetting the watermarks of a deleted subscription failed");
                }
                tracing::info!(subscription = name, "subscription deleted");
                return Ok(());
            }
        }
        Err(BrokerError::Unavailable(format!(
            "subscription {name:?} kept changing on other hosts; try again"
        )))
    }

    /// Delete a topic from the shared log. Subscriptions that name it are a
    /// conflict, unless `force`, which deletes them first; returns those.
    /// (Pattern subscriptions go on with their other topics.)
    pub(super) async fn delete_shared_topic(
        &self,
        topic: &str,
        force: bool,
    ) -> Result<Vec<String>, BrokerError> {
        let (backend, log) = self.cluster().expect("cluster mode");
        let names: Vec<String> = backend
            .subscriptions
            .list()
            .await?
            .into_iter()
            .filter(|(_, record, _)| record.spec.topic == topic)
            .map(|(name, _, _)| name)
            .collect();
        if !names.is_empty() && !force {
            return Err(BrokerError::Conflict(format!(
                "topic {topic:?} is consumed by subscription(s) {}; delete them first, \
                 or delete the topic with ?force=true to delete them with it",
                names.join(", ")
            )));
        }
        for name in &names {
            match self.delete_shared_subscription(name).await {
                Ok(()) | Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        log.delete_topic(topic).await?;
        Ok(names)
    }

    /// Every subscription: those running here with their stats, the
    /// others as placed elsewhere, without stats (the API asks their
    /// hosts; for those that do not answer, `get_subscription` estimates
    /// the lag).
    pub(super) async fn list_shared_subscriptions(
        &self,
    ) -> Result<Vec<super::SubscriptionInfo>, BrokerError> {
        let (backend, _) = self.cluster().expect("cluster mode");
        Ok(backend
            .subscriptions
            .list()
            .await?
            .into_iter()
            .map(|(name, record, _)| self.placed(&name, record))
            .collect())
    }

    pub(super) async fn shared_subscription(
        &self,
        name: &str,
    ) -> Result<super::SubscriptionInfo, BrokerError> {
        let (backend, _) = self.cluster().expect("cluster mode");
        let Some((record, _)) = backend.subscriptions.get(name).await? else {
            return Err(not_found(name));
        };
        let incarnation = record.incarnation;
        let mut info = self.placed(name, record);
        if info.state == "elsewhere" {
            info.stats.lag = self.estimate_lag(&info, incarnation).await?;
        }
        Ok(info)
    }

    /// The lag of a subscription (of incarnation `incarnation`) placed
    /// elsewhere, from the watermarks its host stores every 10 s and the
    /// partitions' heads. Stored watermarks trail the runner, so the
    /// estimate may be more than the lag, never less (docs/cluster.md,
    /// C10): without watermarks of this incarnation stored, every stored
    /// message of its topics counts. A topic deleted meanwhile counts
    /// nothing; if the log cannot be read, there is no estimate (an error).
    async fn estimate_lag(
        &self,
        info: &super::SubscriptionInfo,
        incarnation: u64,
    ) -> Result<u64, BrokerError> {
        use futures_util::{StreamExt as _, TryStreamExt as _};
        let (backend, _) = self.cluster().expect("cluster mode");
        let marks = backend
            .subscriptions
            .watermarks_of(&info.name)
            .await?
            .filter(|marks| marks.incarnation == incarnation);
        let pattern = &info.spec.topic;
        // A topic name needs its own settings only; a pattern, every topic's.
        let topics = match super::spec::is_pattern(pattern) {
            true => backend.log.list().await?,
            false => match backend.log.get(pattern).await? {
                Some(spec) => vec![(pattern.clone(), spec)],
                None => Vec::new(),
            },
        };
        let wanted: Vec<(String, u32)> = topics
            .into_iter()
            .filter(|(topic, _)| super::spec::topic_matches(pattern, topic))
            .flat_map(|(topic, spec)| (0..spec.partitions).map(move |p| (topic.clone(), p)))
            .collect();
        let marks = &marks;
        futures_util::stream::iter(wanted)
            .map(|(topic, p)| async move {
                let head = match backend.log.partition(&topic, p).await {
                    Ok(head) => head,
                    Err(BrokerError::NotFound(_)) => return Ok(0),
                    Err(e) => return Err(e),
                };
                let finished = marks
                    .as_ref()
                    .and_then(|m| m.topics.get(&topic))
                    .and_then(|w| w.get(p as usize))
                    .copied()
                    .unwrap_or(0);
                Ok(head.next.saturating_sub(finished.max(head.first)))
            })
            .buffer_unordered(HEAD_READS)
            .try_fold(0, |lag, behind| async move { Ok(lag + behind) })
            .await
    }

    /// A subscription's info: its stats if this incarnation runs here with
    /// these settings, else `state: elsewhere` (another host runs it, or
    /// will within a few beats) and no stats.
    fn placed(&self, name: &str, record: SubscriptionRecord) -> super::SubscriptionInfo {
        match self.inner.subscriptions.info_of(name, record.incarnation) {
            Some(info) if info.spec == record.spec => super::SubscriptionInfo {
                host: self.host_name(),
                ..info
            },
            _ => super::SubscriptionInfo {
                name: name.to_string(),
                spec: record.spec,
                host: None,
                state: "elsewhere",
                stats: Default::default(),
            },
        }
    }
}

fn embedded() -> BrokerError {
    BrokerError::Unsupported("there are no other hosts in the embedded mode".to_string())
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound(format!("subscription {name:?} does not exist"))
}
