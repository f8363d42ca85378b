//! CPU priority of plugin calls. A call that runs past [`DEMOTE_AFTER`] is
//! a *long call*: it moves to the lowest scheduling class (`SCHED_IDLE`)
//! for the rest of the call, and it runs only while it holds one of the
//! host's long-call slots ([`LongCalls`], by default one fewer than the
//! cores): the others wait, using no CPU, taking turns of [`SLICE`]. On a
//! machine short of CPU, the host's own threads (answering publishes,
//! writing the store, dispatching) and short plugin calls run before long
//! ones, and long calls — endless loops up to their timeouts among them —
//! never fill every core. A long call's timeout runs while it waits, as it
//! would while it shared a core.
//!
//! Moving back needs privileges an unprivileged host may lack
//! (`RLIMIT_NICE`); a thread that cannot move back says so through
//! [`stuck_low`], and the plugin thread pool lets it go.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a call runs at normal priority, without a slot.
pub(super) const DEMOTE_AFTER: Duration = Duration::from_millis(10);

/// How long a long call keeps its slot while others wait for one.
pub(super) const SLICE: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread was demoted (and not moved back yet).
    static LOW: Cell<bool> = const { Cell::new(false) };
    /// The long-call slot this thread's call holds: whose, its id, and
    /// since when.
    static HELD: RefCell<Option<(Arc<LongCalls>, u64, Instant)>> = const { RefCell::new(None) };
}

/// The slots long calls run in, shared by every plugin of a runtime.
///
/// A holder checks in at every turn of [`SLICE`] while it runs wasm; one
/// that has not for two turns is waiting in a host call (an outbound
/// request, a sleep) and using no CPU, and a waiter takes its slot. It
/// queues again when it runs wasm again.
#[derive(Debug)]
pub struct LongCalls {
    /// How many long calls may run at once; 0: no limit.
    slots: usize,
    /// How long a holder may go without checking in before it counts as
    /// waiting in a host call (two turns).
    silent: Duration,
    state: Mutex<Turns>,
    freed: Condvar,
    /// Holders and waiters, for metrics without taking the lock.
    running: AtomicUsize,
    waiting: AtomicUsize,
}

#[derive(Debug, Default)]
struct Turns {
    /// Calls holding a slot, and when each last checked in.
    holders: HashMap<u64, Instant>,
    /// Calls waiting for a slot, in order of arrival.
    queue: VecDeque<u64>,
    next: u64,
}

impl LongCalls {
    /// `slots` long calls at once (0: no limit).
    pub fn new(slots: usize) -> Arc<Self> {
        Self::with_silence(slots, 2 * SLICE)
    }

    fn with_silence(slots: usize, silent: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots,
            silent,
            state: Mutex::new(Turns::default()),
            freed: Condvar::new(),
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The default: one core kept for the host and short calls, on a
    /// machine of more than one.
    pub fn default_slots() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores.saturating_sub(1).max(1)
    }

    /// Long calls holding a slot now, and waiting for one.
    pub fn load(&self) -> (usize, usize) {
        (
            self.running.load(Ordering::Relaxed),
            self.waiting.load(Ordering::Relaxed),
        )
    }

    /// Publish the counts for [`LongCalls::load`] (under the lock).
    fn count(&self, turns: &Turns) {
        self.running.store(turns.holders.len(), Ordering::Relaxed);
        self.waiting.store(turns.queue.len(), Ordering::Relaxed);
    }

    /// Let the calling thread's long call run on: keep its slot, or give it
    /// up after its turn if others wait, and wait (without CPU) for one.
    /// `false` if `deadline` passed first: the call is to be stopped. The
    /// lock is taken at normal priority (the metrics read no lock, but
    /// other calls wait for it).
    pub(super) fn run(self: &Arc<Self>, deadline: Instant) -> bool {
        if self.slots == 0 {
            return true;
        }
        normal(|| self.take_turn(deadline))
    }

    fn take_turn(self: &Arc<Self>, deadline: Instant) -> bool {
        let mut turns = self.state.lock().expect("long-call slots lock");
        let now = Instant::now();
        if let Some((id, since)) = HELD.with_borrow(|h| h.as_ref().map(|(_, id, t)| (*id, *t))) {
            if let Some(seen) = turns.holders.get_mut(&id) {
                *seen = now;
                if turns.queue.is_empty() || now - since < SLICE {
                    return true;
                }
                turns.holders.remove(&id);
                self.freed.notify_all();
            }
            HELD.set(None);
        }
        let ticket = turns.next;
        turns.next += 1;
        turns.queue.push_back(ticket);
        loop {
            let now = Instant::now();
            if turns.queue.front() == Some(&ticket) {
                if turns.holders.len() >= self.slots {
                    // A holder silent for two turns is not running wasm.
                    let stale = turns
                        .holders
                        .iter()
                        .find(|(_, seen)| now - **seen >= self.silent)
                        .map(|(id, _)| *id);
                    if let Some(id) = stale {
                        turns.holders.remove(&id);
                    }
                }
                if turns.holders.len() < self.slots {
                    turns.queue.pop_front();
                    turns.holders.insert(ticket, now);
                    HELD.set(Some((self.clone(), ticket, now)));
                    self.count(&turns);
                    // The next in line may find a slot free too.
                    self.freed.notify_all();
                    return true;
                }
            }
            if now >= deadline {
                turns.queue.retain(|t| *t != ticket);
                self.count(&turns);
                self.freed.notify_all();
                return false;
            }
            self.count(&turns);
            let wait = (deadline - now).min(SLICE);
            turns = self
                .freed
                .wait_timeout(turns, wait)
                .expect("long-call slots lock")
                .0;
        }
    }

    fn release(&self, id: u64) {
        let mut turns = self.state.lock().expect("long-call slots lock");
        if turns.holders.remove(&id).is_some() {
            self.count(&turns);
            drop(turns);
            self.freed.notify_all();
        }
    }
}

/// How a plugin's calls have behaved, for where its next call starts: a
/// plugin whose last call ran long or was stopped by a limit (its timeout,
/// its memory) is *suspect*, and its calls start at the lowest priority
/// instead of after [`DEMOTE_AFTER`] at normal priority. A plugin that
/// loops or hogs memory on every message then never competes with the
/// host's threads and healthy calls, not even for its first milliseconds;
/// its first call that ends quickly and well clears it. Demotion costs a
/// call nothing while a core is free.
#[derive(Debug, Default)]
pub(super) struct Conduct {
    suspect: AtomicBool,
}

impl Conduct {
    /// Before a call (and its instantiation) on the calling thread.
    pub(super) fn begin(&self) {
        if self.suspect.load(Ordering::Relaxed) {
            demote();
        }
    }

    /// After the call, with how it ended (`None`: it never started, the
    /// host had no room): the thread is moved back in any case.
    pub(super) fn end(&self, ended: Option<(&super::Outcome, Duration)>) {
        restore();
        if let Some((outcome, took)) = ended {
            let suspect = took >= DEMOTE_AFTER
                || matches!(
                    outcome,
                    super::Outcome::Timeout(_) | super::Outcome::MemoryLimit(_)
                );
            if self.suspect.load(Ordering::Relaxed) != suspect {
                self.suspect.store(suspect, Ordering::Relaxed);
            }
        }
    }

    /// Whether the plugin's next call starts demoted.
    #[cfg(test)]
    pub(super) fn suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed)
    }
}

fn set_policy(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `pid` 0 names the calling thread; `param` is valid.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// Demote the calling thread for the rest of its call.
pub(super) fn demote() {
    if !LOW.get() && set_policy(libc::SCHED_IDLE) {
        LOW.set(true);
    }
}

/// After a call: move the calling thread back if it was demoted, then give
/// up its long-call slot if it held one (at normal priority: other calls
/// wait for the lock). Also for a call that ended without finishing (a
/// panic, a full instance pool).
pub fn restore() {
    if LOW.get() && set_policy(libc::SCHED_OTHER) {
        LOW.set(false);
    }
    if let Some((slots, id, _)) = HELD.take() {
        normal(|| slots.release(id));
    }
}

/// Run `f` at normal priority. Host code a demoted call runs (a kv read, a
/// check of a topic) takes locks the host's own threads wait for, and must
/// not hold them where it may get no CPU.
pub(super) fn normal<T>(f: impl FnOnce() -> T) -> T {
    if !LOW.get() {
        return f();
    }
    let raised = set_policy(libc::SCHED_OTHER);
    let out = f();
    if raised {
        set_policy(libc::SCHED_IDLE);
    }
    out
}

/// The calling thread runs demoted now.
pub(super) fn demoted() -> bool {
    LOW.get()
}

/// The calling thread was demoted and could not move back: it should end.
pub fn stuck_low() -> bool {
    LOW.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> libc::c_int {
        // SAFETY: `pid` 0 names the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// A long call waits for a slot no longer than its deadline, and
    /// leaves the queue when it gives up; a call's end frees its slot.
    #[test]
    fn a_long_call_waits_for_a_slot_until_its_deadline() {
        // A holder that never counts as silent.
        let slots = LongCalls::with_silence(1, Duration::from_secs(3600));
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(slots.run(far), "a free slot is taken");
        assert_eq!(slots.load(), (1, 0));
        let other = slots.clone();
        let waited = std::thread::spawn(move || {
            let started = Instant::now();
            let ran = other.run(started + SLICE);
            (ran, started.elapsed())
        })
        .join()
        .unwrap();
        assert!(!waited.0, "no slot came before the deadline");
        assert!(waited.1 >= SLICE, "{:?}", waited.1);
        assert_eq!(slots.load(), (1, 0), "the one that gave up left the queue");
        restore();
        assert_eq!(slots.load(), (0, 0), "the call's end frees its slot");
    }

    /// Long calls take turns: a holder gives its slot up after its turn
    /// when another waits, and gets it back when that one ends.
    #[test]
    fn long_calls_take_turns() {
        let slots = LongCalls::with_silence(1, Duration::from_secs(3600));
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(slots.run(far));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (other, finished) = (slots.clone(), done.clone());
        let waiter = std::thread::spawn(move || {
            assert!(other.run(far), "a turn came");
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            restore();
        });
        while slots.load().1 == 0 {
            std::thread::yield_now();
        }
        // Runs on while its turn lasts, then waits for the other's turn to
        // end, and runs again.
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(slots.run(far));
        }
        waiter.join().unwrap();
        assert_eq!(slots.load(), (1, 0));
        restore();
        assert_eq!(slots.load(), (0, 0));
        assert!(LongCalls::new(0).run(Instant::now()), "0: no limit");
    }

    /// A holder that stops checking in (it waits in a host call, using no
    /// CPU) loses its slot to a waiter, and queues again when it runs.
    #[test]
    fn a_silent_holder_loses_its_slot_to_a_waiter() {
        let slots = LongCalls::new(1);
        let far = Instant::now() + Duration::from_secs(3600);
        let acquired = Instant::now();
        assert!(slots.run(far));
        let (other, (tx, rx)) = (slots.clone(), std::sync::mpsc::channel());
        let waiter = std::thread::spawn(move || {
            assert!(other.run(far), "the silent holder's slot was taken");
            tx.send(acquired.elapsed()).unwrap();
            // Hold it until the first holder has queued again.
            while other.load().1 == 0 {
                std::thread::yield_now();
            }
            restore();
        });
        let waited = rx.recv().unwrap();
        assert!(
            waited >= 2 * SLICE,
            "taken after two silent turns: {waited:?}"
        );
        assert!(
            slots.run(far),
            "the first holder runs again after the waiter"
        );
        waiter.join().unwrap();
        assert_eq!(slots.load(), (1, 0));
        restore();
        assert_eq!(slots.load(), (0, 0));
    }

    #[test]
    fn a_demoted_thread_moves_back_after_its_call() {
        std::thread::spawn(|| {
            assert_eq!(policy(), libc::SCHED_OTHER);
            demote();
            assert_eq!(policy(), libc::SCHED_IDLE);
            assert!(stuck_low());
            restore();
            // Moving back needs CAP_SYS_NICE or RLIMIT_NICE: as root it works;
            // otherwise the thread reports it.
            assert_eq!(policy() == libc::SCHED_IDLE, stuck_low());
        })
        .join()
        .unwrap();
    }

    /// A plugin whose call ran long or hit a limit starts its next call
    /// demoted; a call that ends quickly and well clears that, and a call
    /// that never started (no room on the host) changes nothing.
    #[test]
    fn a_plugin_that_ran_long_starts_its_next_call_demoted() {
        std::thread::spawn(|| {
            let conduct = Conduct::default();
            let quick = Duration::from_millis(1);
            let start = |c: &Conduct| {
                c.begin();
                policy()
            };
            assert_eq!(
                start(&conduct),
                libc::SCHED_OTHER,
                "a new plugin starts normal"
            );
            conduct.end(Some((&super::super::Outcome::Timeout(quick), quick)));
            assert!(conduct.suspect());
            assert_eq!(policy(), libc::SCHED_OTHER, "moved back after the call");
            assert_eq!(
                start(&conduct),
                libc::SCHED_IDLE,
                "its next call starts demoted"
            );
            conduct.end(None);
            assert!(conduct.suspect(), "an unstarted call says nothing");
            assert_eq!(policy(), libc::SCHED_OTHER);
            start(&conduct);
            conduct.end(Some((&super::super::Outcome::MemoryLimit(1 << 20), quick)));
            assert!(conduct.suspect());
            start(&conduct);
            conduct.end(Some((&super::super::Outcome::Ack, quick)));
            assert!(!conduct.suspect(), "a quick good call clears it");
            assert_eq!(start(&conduct), libc::SCHED_OTHER);
            conduct.end(Some((&super::super::Outcome::Ack, DEMOTE_AFTER)));
            assert!(
                conduct.suspect(),
                "a call that ran long, even one that acked"
            );
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
