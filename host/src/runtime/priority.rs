//! CPU priority of plugin calls. A call that runs past [`DEMOTE_AFTER`] is
//! moved to the lowest scheduling class (`SCHED_IDLE`) for the rest of the
//! call: on a machine short of CPU, the host's own threads (answering
//! publishes, writing the store, dispatching) and short plugin calls run
//! before it, so endless loops up to their timeout cost only themselves.
//! When the CPU is free, a long call runs as fast as before.
//!
//! Moving back needs privileges an unprivileged host may lack
//! (`RLIMIT_NICE`); a thread that cannot move back says so through
//! [`stuck_low`], and the plugin thread pool lets it go.

use std::cell::Cell;
use std::time::Duration;

/// How long a call runs at normal priority.
pub(super) const DEMOTE_AFTER: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread was demoted (and not moved back yet).
    static LOW: Cell<bool> = const { Cell::new(false) };
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

/// After a call: move the calling thread back if it was demoted.
pub(super) fn restore() {
    if LOW.get() && set_policy(libc::SCHED_OTHER) {
        LOW.set(false);
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
}
