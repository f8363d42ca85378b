//! CPU priority of plugin calls. A call that runs past [`DEMOTE_AFTER`]
//! (under a CPU budget: and is computing, see [`PROBES`]) is a *long
//! call*: it moves to the lowest scheduling class (`SCHED_IDLE`)
//! for the rest of the call, and it runs only while it holds one of the
//! host's long-call slots ([`LongCalls`], by default one fewer than the
//! cores): the others wait, using no CPU, taking turns of [`SLICE`]. On a
//! machine short of CPU, the host's own threads (answering publishes,
//! writing the store, dispatching) and short plugin calls run before long
//! ones, and long calls — endless loops up to their timeouts among them —
//! never fill every core. A long call's timeout runs while it waits, as it
//! would while it shared a core. Under a CPU budget
//! (`--long-call-cpu-percent`) long calls together also spend no more than
//! their share of one core, and a suspect plugin's call holds its slot
//! from before its instantiation to after its teardown ([`LongCalls::gate`]).
//!
//! Moving back needs privileges an unprivileged host may lack
//! (`RLIMIT_NICE`); a thread that cannot move back says so through
//! [`stuck_low`], and the plugin thread pool lets it go.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a call runs at normal priority, without a slot.
pub(super) const DEMOTE_AFTER: Duration = Duration::from_millis(10);

/// How many epoch ticks a call past [`DEMOTE_AFTER`] is watched before it
/// is demoted although it got too little CPU to show it computes (on a
/// machine short of CPU, a loop may never have half a tick to itself).
pub(super) const PROBES: u8 = 2;

/// How long a long call keeps its slot while others wait for one.
pub(super) const SLICE: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread was demoted (and not moved back yet).
    static LOW: Cell<bool> = const { Cell::new(false) };
    /// This thread's attempt holds its slot until the attempt ends.
    static GATED: Cell<bool> = const { Cell::new(false) };
    /// The long-call slot this thread's call holds.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// A slot held by the calling thread.
struct Held {
    slots: Arc<LongCalls>,
    id: u64,
    /// When it was taken.
    since: Instant,
    /// The thread's CPU time when last charged to the budget.
    cpu_at: Duration,
}

/// Most CPU time long calls may save up while none runs.
const BURST: Duration = Duration::from_millis(5);

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
    /// The CPU long calls may use together, in cores (0.1: a tenth of one);
    /// `None`: no budget, only the slots.
    share: Option<f64>,
    state: Mutex<Turns>,
    /// Holders and waiters, for metrics without taking the lock.
    running: AtomicUsize,
    waiting: AtomicUsize,
}

#[derive(Debug, Default)]
struct Turns {
    /// Calls holding a slot, and when each last checked in.
    holders: HashMap<u64, Instant>,
    /// Calls waiting for a slot, in order of arrival, and their threads.
    queue: VecDeque<(u64, std::thread::Thread)>,
    next: u64,
    /// CPU time long calls may still use (negative: owed), in nanoseconds,
    /// and when it was last topped up.
    balance_ns: i64,
    topped_up: Option<Instant>,
}

impl Turns {
    /// Wake the first in line (only it may take a slot): a slot came free,
    /// or it became first.
    fn wake_front(&self) {
        if let Some((_, thread)) = self.queue.front() {
            thread.unpark();
        }
    }
}

impl LongCalls {
    /// `slots` long calls at once (0: no limit), using together at most
    /// `cpu_percent` of one core (0: no budget).
    pub fn new(slots: usize, cpu_percent: u32) -> Arc<Self> {
        Self::with_silence(slots, cpu_percent, 2 * SLICE)
    }

    fn with_silence(slots: usize, cpu_percent: u32, silent: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots,
            silent,
            share: (cpu_percent > 0).then(|| f64::from(cpu_percent) / 100.0),
            state: Mutex::new(Turns::default()),
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
        if let Some((id, since)) = HELD.with_borrow(|h| h.as_ref().map(|h| (h.id, h.since))) {
            self.charge(&mut turns);
            if let Some(seen) = turns.holders.get_mut(&id) {
                *seen = now;
                if turns.queue.is_empty() || now - since < SLICE {
                    return self.pay(turns, id, deadline);
                }
                turns.holders.remove(&id);
                turns.wake_front();
            }
            HELD.set(None);
        }
        let ticket = turns.next;
        turns.next += 1;
        turns.queue.push_back((ticket, std::thread::current()));
        loop {
            let now = Instant::now();
            let front = turns.queue.front().map(|(t, _)| *t) == Some(ticket);
            if front {
                if turns.holders.len() >= self.slots {
                    // A holder silent for two turns is not running wasm.
                    let stale = turns
                        .holders
                        .iter()
                        .find(|(_, seen)| now.saturating_duration_since(**seen) >= self.silent)
                        .map(|(id, _)| *id);
                    if let Some(id) = stale {
                        turns.holders.remove(&id);
                    }
                }
                if turns.holders.len() < self.slots {
                    turns.queue.pop_front();
                    turns.holders.insert(ticket, now);
                    HELD.set(Some(Held {
                        slots: self.clone(),
                        id: ticket,
                        since: now,
                        cpu_at: thread_cpu(),
                    }));
                    self.count(&turns);
                    // The next in line may find a slot free too.
                    turns.wake_front();
                    return self.pay(turns, ticket, deadline);
                }
            }
            if now >= deadline {
                turns.queue.retain(|(t, _)| *t != ticket);
                self.count(&turns);
                if front {
                    turns.wake_front();
                }
                return false;
            }
            self.count(&turns);
            // Only the first in line looks for silent holders, once a turn;
            // the others sleep until it is their turn to be first.
            let wait = match front {
                true => (deadline - now).min(SLICE),
                false => deadline - now,
            };
            drop(turns);
            std::thread::park_timeout(wait);
            turns = self.state.lock().expect("long-call slots lock");
        }
    }

    /// Charge the CPU the calling thread's long call used since it was last
    /// charged to the budget (under the lock).
    fn charge(&self, turns: &mut Turns) {
        if self.share.is_none() {
            return;
        }
        let now = thread_cpu();
        let used = HELD.with_borrow_mut(|held| match held {
            Some(held) => {
                let used = now.saturating_sub(held.cpu_at);
                held.cpu_at = now;
                used
            }
            None => Duration::ZERO,
        });
        turns.balance_ns = turns
            .balance_ns
            .saturating_sub(used.as_nanos().min(i64::MAX as u128) as i64);
    }

    /// Before slot `id`'s holder (the calling thread) runs on: wait,
    /// without CPU and keeping the slot, until the budget is out of debt.
    /// `false` if `deadline` passed first: the slot is given up and the
    /// call is to be stopped.
    fn pay<'a>(&'a self, mut turns: MutexGuard<'a, Turns>, id: u64, deadline: Instant) -> bool {
        let Some(share) = self.share else {
            return true;
        };
        loop {
            let now = Instant::now();
            let since = *turns.topped_up.get_or_insert(now);
            let earned = (now - since).as_nanos() as f64 * share;
            turns.balance_ns =
                (turns.balance_ns as f64 + earned).min(BURST.as_nanos() as f64) as i64;
            turns.topped_up = Some(now);
            if turns.balance_ns >= 0 {
                return true;
            }
            if now >= deadline {
                turns.holders.remove(&id);
                HELD.set(None);
                self.count(&turns);
                turns.wake_front();
                return false;
            }
            let owed = Duration::from_nanos((-turns.balance_ns as f64 / share) as u64);
            let wait = owed.min(deadline - now);
            // Waiting to pay is not silence: the slot stays taken.
            if let Some(seen) = turns.holders.get_mut(&id) {
                *seen = now + wait;
            }
            drop(turns);
            std::thread::park_timeout(wait);
            turns = self.state.lock().expect("long-call slots lock");
            // Taken as silent meanwhile (its wake-up came late): it runs
            // on, as a holder that checks in again would.
            turns.holders.entry(id).or_insert(now);
        }
    }

    /// Whether long calls have a CPU budget.
    pub(super) fn budgeted(&self) -> bool {
        self.share.is_some()
    }

    /// How many epoch ticks a long call runs before it checks in again,
    /// with `left` until its deadline: every tick under a budget, so that
    /// it is charged as it goes; else once a turn.
    pub(super) fn check_in_ticks(&self, left: Duration) -> u64 {
        match self.share {
            Some(_) => 1,
            None => super::deadline_ticks(left.min(SLICE)),
        }
    }

    /// Take a slot for a suspect plugin's whole attempt — instantiation,
    /// call, teardown — when long calls have a CPU budget: one that loops or
    /// hogs memory every time then spends only from the budget, from its
    /// first instruction. Waits without CPU, at most `timeout`; `None`: no
    /// slot needed (no budget, no slot limit); `Err` if none came in time.
    pub(super) fn gate(self: &Arc<Self>, timeout: Duration) -> Result<Option<Gate>, ()> {
        if self.slots == 0 || self.share.is_none() {
            return Ok(None);
        }
        if !self.take_turn(Instant::now() + timeout) {
            return Err(());
        }
        GATED.set(true);
        Ok(Some(Gate(std::marker::PhantomData)))
    }

    fn release(&self, id: u64) {
        let mut turns = self.state.lock().expect("long-call slots lock");
        self.charge(&mut turns);
        if turns.holders.remove(&id).is_some() {
            self.count(&turns);
            turns.wake_front();
        }
    }
}

/// How a subscription's plugin calls have behaved, for where its next call
/// starts: after a call that used 10 ms of CPU as a long call
/// ([`DEMOTE_AFTER`] of its thread's CPU time from the moment it became
/// one) or was stopped by its memory limit, the plugin is *suspect*, and
/// its calls start as long calls — at the lowest priority, needing a slot
/// from their first epoch tick — instead of after [`DEMOTE_AFTER`] at
/// normal priority. A plugin that loops or hogs memory on every message
/// then never competes with the host's threads and healthy calls, not even
/// for its first milliseconds. Its first call that ends without using that
/// CPU (and not by its timeout) clears it; a timeout that came while the
/// call waited in a host call says nothing either way. A call its timeout
/// stopped while it waited for a turn to compute on (a slot, the budget)
/// makes it suspect: it wanted the CPU, and under a budget an endless loop
/// would otherwise never get the 10 ms that show it. The call's
/// instantiation and teardown run at normal priority: they take locks of
/// the engine that other calls wait for.
#[derive(Debug, Default)]
pub struct Conduct {
    suspect: AtomicBool,
}

impl Conduct {
    /// Whether the next call starts as a long call. Never on a host that
    /// cannot move a thread back to normal priority: there each such call
    /// would cost its thread.
    pub(super) fn starts_long(&self) -> bool {
        self.suspect.load(Ordering::Relaxed) && RAISES.load(Ordering::Relaxed)
    }

    /// After a call, with its outcome, the CPU time it used as a long call
    /// (`None`: it never became one) and whether its timeout stopped it
    /// waiting for a turn; `None` for a call that never started (the host
    /// had no room).
    pub(super) fn end(&self, ended: Option<(&super::Outcome, Option<Duration>, bool)>) {
        let Some((outcome, long_cpu, starved)) = ended else {
            return;
        };
        let hogged = matches!(outcome, super::Outcome::MemoryLimit(_))
            || long_cpu.is_some_and(|cpu| cpu >= DEMOTE_AFTER)
            || (starved && matches!(outcome, super::Outcome::Timeout(_)));
        let suspect = match outcome {
            _ if hogged => true,
            super::Outcome::Timeout(_) => return,
            _ => false,
        };
        if self.suspect.load(Ordering::Relaxed) != suspect {
            self.suspect.store(suspect, Ordering::Relaxed);
        }
    }

    /// Whether the plugin is suspect now.
    #[cfg(test)]
    pub(super) fn suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed)
    }
}

/// Whether threads have moved back to normal priority so far (false once
/// one could not: the host lacks the privilege).
static RAISES: AtomicBool = AtomicBool::new(true);

/// CPU time the calling thread has used.
pub(super) fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
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
/// wait for the lock) — unless a [`Gate`] holds it until the attempt
/// ends. Also for a call that ended without finishing (a panic, a full
/// instance pool).
pub fn restore() {
    if LOW.get() {
        if set_policy(libc::SCHED_OTHER) {
            LOW.set(false);
        } else {
            RAISES.store(false, Ordering::Relaxed);
        }
    }
    if GATED.get() {
        return;
    }
    let held = HELD.with_borrow(|h| h.as_ref().map(|h| (h.slots.clone(), h.id)));
    if let Some((slots, id)) = held {
        normal(|| slots.release(id));
        HELD.set(None);
    }
}

/// A suspect attempt's slot, given up when dropped, on the thread that took
/// it (the slot is the thread's).
pub(super) struct Gate(std::marker::PhantomData<*const ()>);

impl Drop for Gate {
    fn drop(&mut self) {
        GATED.set(false);
        restore();
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
        let slots = LongCalls::with_silence(1, 0, Duration::from_secs(3600));
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
        let slots = LongCalls::with_silence(1, 0, Duration::from_secs(3600));
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
        assert!(LongCalls::new(0, 0).run(Instant::now()), "0: no limit");
    }

    /// A holder that stops checking in (it waits in a host call, using no
    /// CPU) loses its slot to a waiter, and queues again when it runs.
    #[test]
    fn a_silent_holder_loses_its_slot_to_a_waiter() {
        let slots = LongCalls::new(1, 0);
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

    /// A plugin whose call used 10 ms of CPU as a long call or hit its
    /// memory limit starts its next calls as long ones; a call that ends
    /// without that clears it; a timeout without that CPU (a wait) and a
    /// call that never started change nothing.
    #[test]
    fn a_plugin_that_ran_long_starts_its_next_calls_as_long_ones() {
        use super::super::Outcome;
        let conduct = Conduct::default();
        let (quick, long) = (Duration::from_millis(1), DEMOTE_AFTER);
        assert!(!conduct.starts_long(), "a new plugin starts normally");
        conduct.end(Some((&Outcome::Timeout(quick), Some(long), false)));
        assert!(conduct.suspect(), "it looped until stopped");
        assert!(conduct.starts_long());
        conduct.end(None);
        assert!(conduct.suspect(), "an unstarted call says nothing");
        conduct.end(Some((&Outcome::Timeout(quick), Some(quick), false)));
        assert!(conduct.suspect(), "a timeout spent waiting says nothing");
        conduct.end(Some((&Outcome::Ack, Some(quick), false)));
        assert!(!conduct.suspect(), "a call without that CPU clears it");
        conduct.end(Some((&Outcome::Timeout(quick), None, false)));
        assert!(!conduct.suspect(), "nor does a timeout clear or set it");
        conduct.end(Some((&Outcome::Timeout(quick), Some(quick), true)));
        assert!(
            conduct.suspect(),
            "a call stopped while it waited for a turn to compute on"
        );
        conduct.end(Some((&Outcome::Ack, None, false)));
        assert!(!conduct.suspect());
        conduct.end(Some((&Outcome::MemoryLimit(1 << 20), None, false)));
        assert!(conduct.suspect(), "a memory hog");
        conduct.end(Some((&Outcome::Trap("unreachable".into()), None, false)));
        assert!(!conduct.suspect(), "a quick trap is no hog");
        conduct.end(Some((&Outcome::Ack, Some(long), false)));
        assert!(
            conduct.suspect(),
            "a call that computed long, even one that acked"
        );
    }

    /// Burn `cpu` of the calling thread's CPU time.
    fn compute(cpu: Duration) {
        let start = thread_cpu();
        while thread_cpu() - start < cpu {
            std::hint::black_box(0u64);
        }
    }

    /// Under a budget, long calls together use no more CPU than their
    /// share: a holder that spent more waits, keeping its slot, until the
    /// budget has refilled, or gives up at its deadline; its slot is freed.
    #[test]
    fn a_budget_holds_long_calls_to_their_share() {
        // 10 % of one core; a holder that never counts as silent.
        let slots = LongCalls::with_silence(1, 10, Duration::from_secs(3600));
        let far = Instant::now() + Duration::from_secs(3600);
        std::thread::spawn(move || {
            assert!(slots.run(far), "nothing is owed at first");
            compute(Duration::from_millis(25));
            // About 25 ms owed, earned back at 10 % of the time.
            let started = Instant::now();
            assert!(slots.run(far));
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(150), "{waited:?}");
            assert_eq!(slots.load(), (1, 0), "it kept its slot while it paid");
            compute(Duration::from_millis(25));
            let soon = Instant::now() + Duration::from_millis(20);
            assert!(!slots.run(soon), "its deadline came before the budget");
            assert_eq!(slots.load(), (0, 0), "and its slot is free");
            restore();
        })
        .join()
        .unwrap();
    }

    /// Without a budget, a holder runs on whatever it spent.
    #[test]
    fn without_a_budget_long_calls_run_on() {
        let slots = LongCalls::with_silence(1, 0, Duration::from_secs(3600));
        let far = Instant::now() + Duration::from_secs(3600);
        std::thread::spawn(move || {
            assert!(slots.run(far));
            compute(Duration::from_millis(25));
            let soon = Instant::now() + Duration::from_millis(20);
            assert!(slots.run(soon), "no budget to wait for");
            restore();
            assert_eq!(slots.load(), (0, 0));
        })
        .join()
        .unwrap();
    }
}
