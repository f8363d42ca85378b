//! Worker threads of one subscription: each takes a job, runs the plugin in
//! its sandbox and reports the outcome, with the effects the plugin asked for
//! (publications, kv writes), back to the subscription's runner, which
//! commits them with the ack.
//!
//! Plain OS threads, not async tasks: a plugin call is CPU-bound and may run
//! until its timeout, and must never stall the async executor.

use super::spec::Isolation;
use super::Clock;
use crate::runtime::{Delivery, HostEnv, Invocation, Outcome, Plugin, PluginWorker};
use std::sync::Arc;
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
    /// The attempt never reached a consumer (a pull lease handed back
    /// unused): the message is queued again and no attempt is counted.
    pub(crate) released: bool,
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
            true,
        )
    }

    /// A job that ended in `outcome` outside a plugin (a pull consumer's
    /// settle, an expired lease).
    pub(crate) fn finished(job: Job<L>, started_ms: u64, outcome: Outcome, released: bool) -> Self {
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
            invocation: Invocation {
                outcome,
                published: Vec::new(),
                kv: Default::default(),
                logs: Vec::new(),
                http: Vec::new(),
                duration: Duration::ZERO,
            },
            released,
        }
    }
}

/// Settings every worker of a subscription shares.
#[derive(Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) timeout: Duration,
    pub(crate) isolation: Isolation,
    pub(crate) recycle_after: u32,
    pub(crate) subscription: String,
    pub(crate) clock: Clock,
}

/// Start `count` workers; they exit when the job channel closes.
pub(crate) fn spawn<L: Clone + Send + 'static>(
    count: u32,
    settings: WorkerSettings,
    jobs: crossbeam_channel::Receiver<Vec<Job<L>>>,
    results: UnboundedSender<Vec<JobDone<L>>>,
    env: Arc<dyn HostEnv>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (settings, jobs, results, env) =
            (settings.clone(), jobs.clone(), results.clone(), env.clone());
        let name = settings.subscription.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sub-{}-{i}", settings.subscription))
            .spawn(move || work(&settings, &jobs, &results, &env));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                tracing::error!(error = %e, subscription = %name, "cannot start a worker thread")
            }
        }
    }
    threads
}

fn work<L: Clone>(
    settings: &WorkerSettings,
    jobs: &crossbeam_channel::Receiver<Vec<Job<L>>>,
    results: &UnboundedSender<Vec<JobDone<L>>>,
    env: &Arc<dyn HostEnv>,
) {
    // Under worker isolation: the reused instance and the plugin version it runs.
    let mut reused: Option<(String, PluginWorker)> = None;
    // Jobs arrive in chunks and results leave in chunks: one thread wake-up
    // per chunk instead of one per message.
    while let Ok(chunk) = jobs.recv() {
        let mut done = Vec::with_capacity(chunk.len());
        for job in chunk {
            let Some(plugin) = &job.plugin else {
                // Only a pull subscription's jobs lack a plugin, and they
                // never reach a worker: hand it back uncounted.
                done.push(JobDone::released(job, settings.clock.now_ms()));
                continue;
            };
            let plugin = plugin.clone();
            let (seq, lane, kv_start, label) = (job.seq, job.lane, job.kv_start, job.label);
            let mut deliveries = std::iter::once(job.delivery).chain(job.tail).peekable();
            let mut follows = false;
            while let Some(delivery) = deliveries.next() {
                let started_ms = settings.clock.now_ms();
                let invocation = run(settings, &plugin, &label, &delivery, env, &mut reused);
                // The lane's next message may run only after this one is
                // settled for good: acked, with no kv read to check.
                let clean = invocation.outcome == Outcome::Ack
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
                    released: false,
                });
                follows = true;
                // Don't hold finished results back behind a slow call.
                if slow && results.send(std::mem::take(&mut done)).is_err() {
                    return;
                }
            }
        }
        if !done.is_empty() && results.send(done).is_err() {
            return;
        }
    }
}

/// A call longer than this sends its chunk's results at once.
const SLOW_CALL: Duration = Duration::from_millis(1);

fn run(
    settings: &WorkerSettings,
    plugin: &Plugin,
    label: &str,
    delivery: &Delivery,
    env: &Arc<dyn HostEnv>,
    reused: &mut Option<(String, PluginWorker)>,
) -> Invocation {
    let tag = format!("{label} msg={}", delivery.id);
    match settings.isolation {
        Isolation::Message => plugin.invoke(delivery, settings.timeout, env.clone(), tag),
        Isolation::Worker => {
            if reused.as_ref().is_none_or(|(l, _)| l != label) {
                *reused = Some((label.to_string(), plugin.worker(settings.recycle_after)));
            }
            let (_, worker) = reused.as_mut().expect("set above");
            worker.invoke(delivery, settings.timeout, env.clone(), tag)
        }
    }
}
