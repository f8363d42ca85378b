//! Time as the delivery engine sees it: the system clock when serving, or a
//! manual clock that only moves when told to, so the harness can run the same
//! engine on virtual time (retry backoff, delays) and reproduce a run exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, from the system clock or a manual one.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A manual clock reading `start_ms` until [`Clock::set`] moves it.
    pub fn manual(start_ms: u64) -> Self {
        Self(Some(Arc::new(AtomicU64::new(start_ms))))
    }

    /// Whether this is a manual clock (then the engine is also deterministic:
    /// backoff jitter comes from a fixed seed).
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(ms) => ms.load(Ordering::Acquire),
            None => system_ms(),
        }
    }

    /// A manual clock's counter, to share with the runtime (plugins then
    /// read virtual time too). `None` for the system clock.
    pub fn shared_ms(&self) -> Option<Arc<AtomicU64>> {
        self.0.clone()
    }

    /// Move a manual clock to `ms` (never backwards). No effect on the system clock.
    pub fn set(&self, ms: u64) {
        if let Some(now) = &self.0 {
            now.fetch_max(ms, Ordering::AcqRel);
        }
    }
}

fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_and_when_told() {
        let clock = Clock::manual(1_000);
        assert!(clock.is_manual());
        assert_eq!(clock.now_ms(), 1_000);
        clock.set(1_500);
        clock.set(1_200);
        assert_eq!(clock.now_ms(), 1_500);
        let system = Clock::system();
        assert!(!system.is_manual());
        assert!(system.now_ms() > 1_600_000_000_000);
    }
}
