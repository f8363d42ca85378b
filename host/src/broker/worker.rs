//! The threads that run plugins: one pool for the whole host, shared by every
//! subscription. A subscription's runner hands its jobs to its [`Crew`],
//! which runs at most `concurrency` of them at once on the pool's threads and
//! reports each outcome, with the effects the plugin asked for (publications,
//! kv writes), back to the runner, which commits them with the ack.
//!
//! Plain OS threads, not async tasks: a plugin call is CPU-bound and may run
//! until its timeout, and must never stall the async executor. The pool
//! grows with demand up to its limit and shrinks when idle, so threads follow
//! the work in flight, not the sum of every subscription's `concurrency`:
//! beyond the limit, work queues. A crew runs one chunk of jobs per turn and
//! then queues behind the others, so busy subscriptions share the threads
//! round-robin.
//!
//! Host limits are never a plugin's fault: when the runtime's instance pool
//! is full, instances idle in any crew are dropped and the call is tried
//! again; if there is still no room, the job is handed back unrun
//! ([`Release::HostBusy`]) and its runner queues it again without counting
//! an attempt.

use super::spec::Isolation;
use super::Clock;
use crate::runtime::{CallResult, Delivery, HostEnv, Invocation, Outcome, Plugin, PluginWorker};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// One delivery attempt to run, and possibly the next messages of its lane
/// (a *run*).
pub(crate) struct Job<L> {
    /// Dispatch order, for completing a round's attempts in that order.
    pub(crate) seq: u64,
    pub(crate) lane: L,
    pub(crate) delivery: Delivery,
    /// The lane's next messages, in order: each is delivered only after the
    /// one before it acked without touching kv, so the lane still runs one
    /// message at a time. The rest of a run that stops early is not
    /// delivered (see [`JobDone::unrun`]).
    pub(crate) tail: Vec<Delivery>,
    /// `None` for a pull subscription's job, which a lease hands out.
    pub(crate) plugin: Option<Plugin>,
    /// `name@version` of the plugin.
    pub(crate) label: String,
    /// The kv commit count when the job was dispatched: no attempt of the
    /// run holds an older read token.
    pub(crate) kv_start: u64,
}

/// The result of one attempt of a job.
pub(crate) struct JobDone<L> {
    pub(crate) seq: u64,
    pub(crate) lane: L,
    pub(crate) offset: u64,
    /// An attempt of the job's tail: counted when it comes back, not at
    /// dispatch.
    pub(crate) follows: bool,
    /// The job's last result: its lane is free again.
    pub(crate) last: bool,
    /// On the last result: messages of the tail that were not delivered.
    pub(crate) unrun: usize,
    pub(crate) kv_start: u64,
    pub(crate) label: String,
    pub(crate) started_ms: u64,
    pub(crate) invocation: Invocation,
    /// The attempt never reached a consumer: the message is queued again and
    /// no attempt is counted.
    pub(crate) released: Option<Release>,
}

/// Why a job came back without an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// A pull lease handed back unused, or never leased: queue it again now.
    Unused,
    /// The host had no room for a plugin instance: queue it again shortly.
    HostBusy,
}

impl<L> JobDone<L> {
    /// A job handed back without an attempt.
    pub(crate) fn released(job: Job<L>, started_ms: u64) -> Self {
        Self::finished(
            job,
            started_ms,
            Outcome::Retry {
                reason: "released".into(),
                delay_ms: None,
            },
            Some(Release::Unused),
        )
    }

    /// A job that ended in `outcome` outside a plugin (a pull consumer's
    /// settle, an expired lease).
    pub(crate) fn finished(
        job: Job<L>,
        started_ms: u64,
        outcome: Outcome,
        released: Option<Release>,
    ) -> Self {
        debug_assert!(job.tail.is_empty(), "a lease is one message");
        Self {
            seq: job.seq,
            lane: job.lane,
            offset: job.delivery.offset,
            follows: false,
            last: true,
            unrun: job.tail.len(),
            kv_start: job.kv_start,
            label: job.label,
            started_ms,
            invocation: Invocation::unstarted(outcome, Duration::ZERO),
            released,
        }
    }
}

/// Settings every attempt of a subscription shares.
#[derive(Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) timeout: Duration,
    pub(crate) isolation: Isolation,
    pub(crate) recycle_after: u32,
    pub(crate) subscription: String,
    pub(crate) clock: Clock,
}

/// The default limit of plugin threads: enough for many subscriptions'
/// calls that wait (outbound HTTP, timeouts) at once, far below where an
/// operating system refuses threads.
pub const DEFAULT_WORKER_THREADS: usize = 256;

/// An idle thread beyond the first exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(10);

type Task = Box<dyn FnOnce() + Send>;

/// The host's plugin threads. Cheap to clone; the threads exit once every
/// clone (and every crew) is gone.
#[derive(Clone)]
pub(crate) struct WorkerPool {
    /// Shared by the clones; dropping the last closes the pool.
    handle: Arc<PoolHandle>,
}

/// Closes the pool when the last [`WorkerPool`] clone goes.
struct PoolHandle(Arc<PoolCore>);

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.0.counts().closed = true;
        self.0.ready.notify_all();
    }
}

/// What the pool's threads share (they hold no [`PoolHandle`], so dropping
/// the pool ends them).
struct PoolCore {
    max_threads: usize,
    /// The queue of tasks and the threads' counts, under one lock.
    counts: Mutex<Counts>,
    /// Signalled for tasks queued, and when the pool closes. Idle threads
    /// sleep on it in the kernel: a channel whose receivers spun and
    /// yielded before sleeping made about 20,000 `sched_yield` calls a
    /// second in a fast plugin's drain.
    ready: Condvar,
    /// Crews whose idle instances may be dropped to make room.
    crews: Mutex<Vec<Weak<dyn Reclaim>>>,
    stats: PoolStats,
}

#[derive(Default)]
struct Counts {
    threads: usize,
    idle: usize,
    queue: VecDeque<Task>,
    /// Tasks queued with [`Wake::Later`] since the last [`WorkerPool::wake`].
    deferred: usize,
    closed: bool,
}

/// How a queued task gets a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Queued by a pool thread that takes the next task itself: wake
    /// another only if more tasks wait.
    Worker,
    /// Leave it to a thread that finishes its task, or to the next
    /// [`Crew::wake`]: the submitter has more to do before it waits, and a
    /// thread woken now would take its core.
    Later,
}

/// The pool's counters, for metrics.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    /// Threads the operating system refused to start.
    pub(crate) spawn_failures: AtomicU64,
    /// Calls that found the instance pool full.
    pub(crate) pool_full: AtomicU64,
    /// Instances dropped to make room for others.
    pub(crate) reclaimed: AtomicU64,
}

/// A snapshot of the pool, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub threads: u64,
    pub busy: u64,
    pub queued: u64,
    pub max_threads: u64,
    pub spawn_failures: u64,
    pub pool_full: u64,
    pub reclaimed: u64,
    /// Plugin instances alive now, and the most the instance pool holds.
    pub instances: u64,
    pub instances_max: u64,
    /// Long plugin calls (past 10 ms) running in a slot, waiting for one,
    /// and the slots (0: no limit).
    pub long_calls_running: u64,
    pub long_calls_waiting: u64,
    pub long_call_slots: u64,
}

impl WorkerPool {
    /// A pool of up to `max_threads` threads (at least one), started with one.
    pub(crate) fn new(max_threads: usize) -> Self {
        let core = Arc::new(PoolCore {
            max_threads: max_threads.max(1),
            counts: Mutex::new(Counts::default()),
            ready: Condvar::new(),
            crews: Mutex::new(Vec::new()),
            stats: PoolStats::default(),
        });
        let pool = Self {
            handle: Arc::new(PoolHandle(core)),
        };
        pool.core().counts().threads = 1;
        pool.spawn_thread();
        pool
    }

    fn core(&self) -> &Arc<PoolCore> {
        &self.handle.0
    }

    /// Queue a task; `wake` says who gets a thread to it.
    fn submit(&self, task: Task, wake: Wake) {
        let notify = {
            let mut counts = self.core().counts();
            counts.queue.push_back(task);
            match wake {
                Wake::Later => {
                    counts.deferred += 1;
                    false
                }
                // The thread takes one task itself: wake another only for more.
                Wake::Worker => counts.queue.len() > 1,
            }
        };
        if notify {
            self.core().ready.notify_one();
        }
    }

    /// Get threads to the tasks queued with [`Wake::Later`] that no thread
    /// has taken yet: wake idle ones, start more if needed (and the limit
    /// allows).
    fn wake(&self) {
        let (wakes, spawns) = {
            let mut counts = self.core().counts();
            let wanted = counts.deferred.min(counts.queue.len());
            counts.deferred = 0;
            let spawns = (counts.queue.len().saturating_sub(counts.idle))
                .min(wanted)
                .min(self.core().max_threads.saturating_sub(counts.threads));
            counts.threads += spawns;
            (wanted.min(counts.idle), spawns)
        };
        for _ in 0..wakes {
            self.core().ready.notify_one();
        }
        for _ in 0..spawns {
            self.spawn_thread();
        }
    }

    /// Start a thread already counted in `threads`. If the operating system
    /// refuses, the work waits for the threads there are.
    fn spawn_thread(&self) {
        if let Err(e) = self.core().start_thread() {
            let threads = {
                let mut counts = self.core().counts();
                counts.threads -= 1;
                counts.threads
            };
            self.core()
                .stats
                .spawn_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, threads, "cannot start another plugin thread; work waits for the running ones");
        }
    }

    /// Drop the instances idle in every crew, to make room in the instance
    /// pool. Returns how many were dropped.
    fn reclaim_idle(&self) -> usize {
        let crews: Vec<_> = {
            let mut crews = self.core().crews.lock().expect("crews lock");
            crews.retain(|c| c.strong_count() > 0);
            crews.iter().filter_map(Weak::upgrade).collect()
        };
        let dropped: usize = crews.iter().map(|c| c.reclaim()).sum();
        self.core()
            .stats
            .reclaimed
            .fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    pub(crate) fn snapshot(&self) -> PoolSnapshot {
        let counts = self.core().counts();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let stats = &self.core().stats;
        PoolSnapshot {
            threads: counts.threads as u64,
            busy: counts.threads.saturating_sub(counts.idle) as u64,
            queued: counts.queue.len() as u64,
            max_threads: self.core().max_threads as u64,
            spawn_failures: get(&stats.spawn_failures),
            pool_full: get(&stats.pool_full),
            reclaimed: get(&stats.reclaimed),
            ..PoolSnapshot::default()
        }
    }
}

impl PoolCore {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().expect("worker pool lock")
    }

    fn start_thread(self: &Arc<Self>) -> std::io::Result<()> {
        let core = self.clone();
        std::thread::Builder::new()
            .name("switchyard-plugin".into())
            .spawn(move || core.work())
            .map(drop)
    }

    fn work(self: Arc<Self>) {
        while let Some(task) = self.next_task() {
            // A panic ends the task, not the thread.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
                tracing::error!("a plugin task panicked");
                // Its call did not finish: give back what it held.
                crate::runtime::priority::restore();
            }
            // A long call left this thread at the lowest priority and it may
            // not move back: a fresh thread takes its place (if none can
            // start, it goes on as it is).
            if crate::runtime::priority::stuck_low() && self.start_thread().is_ok() {
                return;
            }
        }
    }

    /// Wait for the next task. `None`: this thread is to exit (counted out
    /// already) — the pool closed, or it sat idle while others remain.
    fn next_task(&self) -> Option<Task> {
        let mut counts = self.counts();
        loop {
            if let Some(task) = counts.queue.pop_front() {
                return Some(task);
            }
            if counts.closed {
                counts.threads -= 1;
                return None;
            }
            counts.idle += 1;
            let (woken, wait) = self
                .ready
                .wait_timeout(counts, IDLE_EXIT)
                .expect("worker pool lock");
            counts = woken;
            counts.idle -= 1;
            if wait.timed_out() && counts.queue.is_empty() && counts.threads > 1 {
                counts.threads -= 1;
                return None;
            }
        }
    }
}

/// Something holding instances it can give up.
trait Reclaim: Send + Sync {
    /// Drop idle instances; returns how many.
    fn reclaim(&self) -> usize;
}

/// One subscription's share of the pool: its queue of job chunks, at most
/// `concurrency` of them running at once, and the instances it reuses under
/// worker isolation (at most one per running chunk).
pub(crate) struct Crew<L> {
    inner: Arc<CrewInner<L>>,
}

struct CrewInner<L> {
    pool: WorkerPool,
    settings: WorkerSettings,
    env: Arc<dyn HostEnv>,
    results: UnboundedSender<Vec<JobDone<L>>>,
    concurrency: usize,
    queue: Mutex<CrewQueue<L>>,
    /// Instances not in use, each with the `name@version` it runs.
    idle: Mutex<Vec<(String, PluginWorker)>>,
}

struct CrewQueue<L> {
    chunks: VecDeque<Vec<Job<L>>>,
    /// Chunks running or queued on the pool.
    active: usize,
}

impl<L: Clone + Send + 'static> Crew<L> {
    pub(crate) fn new(
        pool: &WorkerPool,
        concurrency: u32,
        settings: WorkerSettings,
        env: Arc<dyn HostEnv>,
        results: UnboundedSender<Vec<JobDone<L>>>,
    ) -> Self {
        let inner = Arc::new(CrewInner {
            pool: pool.clone(),
            settings,
            env,
            results,
            concurrency: concurrency.max(1) as usize,
            queue: Mutex::new(CrewQueue {
                chunks: VecDeque::new(),
                active: 0,
            }),
            idle: Mutex::new(Vec::new()),
        });
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&(inner.clone() as Arc<dyn Reclaim>));
        pool.core().crews.lock().expect("crews lock").push(weak);
        Self { inner }
    }

    /// Queue a chunk of jobs; they run in order, on one thread. With
    /// [`Wake::Later`], a thread is woken for it at the next
    /// [`Crew::wake`] if none has taken it by then.
    pub(crate) fn send(&self, chunk: Vec<Job<L>>, wake: Wake) {
        let start = {
            let mut queue = self.inner.queue();
            queue.chunks.push_back(chunk);
            let start = queue.active < self.inner.concurrency;
            if start {
                queue.active += 1;
            }
            start
        };
        if start {
            CrewInner::turn_later(self.inner.clone(), wake);
        }
    }

    /// Get threads to the chunks sent with [`Wake::Later`]: before the
    /// runner waits.
    pub(crate) fn wake(&self) {
        self.inner.pool.wake();
    }
}

impl<L> Reclaim for CrewInner<L>
where
    L: Send,
{
    fn reclaim(&self) -> usize {
        std::mem::take(&mut *self.idle.lock().expect("idle instances lock")).len()
    }
}

impl<L: Clone + Send + 'static> CrewInner<L> {
    fn queue(&self) -> std::sync::MutexGuard<'_, CrewQueue<L>> {
        self.queue.lock().expect("crew queue lock")
    }

    fn turn_later(self: Arc<Self>, wake: Wake) {
        let pool = self.pool.clone();
        pool.submit(Box::new(move || self.turn()), wake);
    }

    /// Run one chunk, then queue again behind other crews' work if more
    /// chunks wait.
    fn turn(self: Arc<Self>) {
        let Some(chunk) = self.queue().chunks.pop_front() else {
            self.queue().active -= 1;
            return;
        };
        let done = self.run_chunk(chunk);
        // The runner is gone only when stopping with nothing in flight.
        let _ = self.results.send(done);
        let again = {
            let mut queue = self.queue();
            let again = !queue.chunks.is_empty();
            if !again {
                queue.active -= 1;
            }
            again
        };
        if again {
            self.turn_later(Wake::Worker);
        }
    }

    fn run_chunk(&self, chunk: Vec<Job<L>>) -> Vec<JobDone<L>> {
        let settings = &self.settings;
        // Under worker isolation: the reused instance and the plugin version
        // it runs, taken from the idle ones and given back afterwards.
        let mut reused = match settings.isolation {
            Isolation::Worker => self.idle.lock().expect("idle instances lock").pop(),
            Isolation::Message => None,
        };
        let mut host_busy = false;
        let mut done = Vec::with_capacity(chunk.len());
        for job in chunk {
            let started_ms = settings.clock.now_ms();
            let Some(plugin) = &job.plugin else {
                // Only a pull subscription's jobs lack a plugin, and they
                // never reach a worker: hand it back uncounted.
                done.push(JobDone::released(job, started_ms));
                continue;
            };
            let plugin = plugin.clone();
            let (seq, lane, kv_start, label) = (job.seq, job.lane, job.kv_start, job.label);
            let mut deliveries = std::iter::once(job.delivery).chain(job.tail).peekable();
            let mut follows = false;
            while let Some(delivery) = deliveries.next() {
                let started_ms = settings.clock.now_ms();
                let called = if host_busy {
                    None
                } else {
                    self.attempt(&plugin, &label, &delivery, &mut reused)
                };
                let (invocation, released) = match called {
                    Some(invocation) => (invocation, None),
                    None => {
                        host_busy = true;
                        (
                            Invocation::unstarted(
                                Outcome::Retry {
                                    reason: "host busy".into(),
                                    delay_ms: None,
                                },
                                Duration::ZERO,
                            ),
                            Some(Release::HostBusy),
                        )
                    }
                };
                // The lane's next message may run only after this one is
                // settled for good: acked, with no kv read to check.
                let clean = released.is_none()
                    && invocation.outcome == Outcome::Ack
                    && invocation.kv.reads.is_empty()
                    && invocation.kv.writes.is_empty();
                let last = !clean || deliveries.peek().is_none();
                let slow = invocation.duration > SLOW_CALL;
                done.push(JobDone {
                    seq,
                    lane: lane.clone(),
                    offset: delivery.offset,
                    follows,
                    last,
                    unrun: if last { deliveries.by_ref().count() } else { 0 },
                    kv_start,
                    label: label.clone(),
                    started_ms,
                    invocation,
                    released,
                });
                follows = true;
                // Don't hold finished results back behind a slow call.
                if slow && self.results.send(std::mem::take(&mut done)).is_err() {
                    return done;
                }
            }
        }
        if let Some(instance) = reused {
            self.idle
                .lock()
                .expect("idle instances lock")
                .push(instance);
        }
        done
    }

    /// One call of the plugin; `None` if the host has no room for its
    /// instance even after dropping idle ones.
    fn attempt(
        &self,
        plugin: &Plugin,
        label: &str,
        delivery: &Delivery,
        reused: &mut Option<(String, PluginWorker)>,
    ) -> Option<Invocation> {
        let call = |reused: &mut Option<(String, PluginWorker)>| -> CallResult {
            let settings = &self.settings;
            let env = self.env.clone();
            match settings.isolation {
                Isolation::Message => plugin.invoke(delivery, settings.timeout, env, label),
                Isolation::Worker => {
                    if reused.as_ref().is_none_or(|(l, _)| l != label) {
                        *reused = Some((label.to_string(), plugin.worker(settings.recycle_after)));
                    }
                    let (_, worker) = reused.as_mut().expect("set above");
                    worker.invoke(delivery, settings.timeout, env, label)
                }
            }
        };
        match call(reused) {
            Ok(invocation) => Some(invocation),
            Err(full) => {
                let stats = &self.pool.core().stats;
                stats.pool_full.fetch_add(1, Ordering::Relaxed);
                let dropped = self.pool.reclaim_idle();
                tracing::debug!(subscription = %self.settings.subscription, %full, dropped, "instance pool full; dropped idle instances");
                call(reused).ok()
            }
        }
    }
}

/// A call longer than this sends its chunk's results at once.
const SLOW_CALL: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks queued to be woken later run once the pool is told to wake
    /// threads for them; no more threads than the limit start; once the
    /// last clone of the pool is gone, a thread waiting for work is told to
    /// end.
    #[test]
    fn queued_tasks_run_once_woken_and_threads_end_with_the_pool() {
        let pool = WorkerPool::new(3);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..12 {
            let tx = tx.clone();
            pool.submit(
                Box::new(move || {
                    tx.send(std::thread::current().id())
                        .expect("the test waits");
                }),
                Wake::Later,
            );
        }
        assert_eq!(pool.core().counts().deferred, 12);
        pool.wake();
        assert_eq!(pool.core().counts().deferred, 0);
        let ran: std::collections::HashSet<_> =
            (0..12).map(|_| rx.recv().expect("a task ran")).collect();
        assert!((1..=3).contains(&ran.len()), "on at most 3 threads");
        let core = pool.core().clone();
        assert!((1..=3).contains(&core.counts().threads));
        drop(pool.clone());
        assert!(!core.counts().closed, "a clone remains");
        drop(pool);
        assert!(core.counts().closed);
        core.counts().threads += 1;
        assert!(core.next_task().is_none(), "nothing queued, pool closed");
    }
}
