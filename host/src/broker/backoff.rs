//! Delay before the next attempt of a failed message.

use super::spec::{Backoff, RetrySpec};

/// Delay after `failed_attempts` failures (1 after the first attempt failed).
/// Exponential: `initial_ms * multiplier^(failed_attempts-1)`, capped at `max_ms`;
/// fixed: `initial_ms`. With jitter the delay is drawn from `[d/2, d]`
/// ("equal jitter"), which spreads retries of a burst without ever retrying
/// much earlier than asked.
pub(crate) fn delay_ms(spec: &RetrySpec, failed_attempts: u32, random: f64) -> u64 {
    let base = match spec.backoff {
        Backoff::Fixed => spec.initial_ms as f64,
        Backoff::Exponential => {
            let exp = failed_attempts.saturating_sub(1).min(64) as i32;
            spec.initial_ms as f64 * spec.multiplier.powi(exp)
        }
    };
    let capped = base.min(spec.max_ms as f64).max(0.0);
    let delay = if spec.jitter {
        capped / 2.0 + capped / 2.0 * random.clamp(0.0, 1.0)
    } else {
        capped
    };
    delay.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: RetrySpec, failures: u32, random: f64, expected: u64) {
        assert_eq!(
            delay_ms(&spec, failures, random),
            expected,
            "{spec:?} after {failures}"
        );
    }

    #[test]
    fn exponential_grows_and_caps() {
        let spec = RetrySpec {
            jitter: false,
            ..RetrySpec::default()
        };
        check(spec.clone(), 1, 0.0, 100);
        check(spec.clone(), 2, 0.0, 200);
        check(spec.clone(), 5, 0.0, 1600);
        check(spec.clone(), 30, 0.0, 60_000);
        check(spec, 1000, 0.0, 60_000);
    }

    #[test]
    fn fixed_and_jitter() {
        let fixed = RetrySpec {
            backoff: Backoff::Fixed,
            initial_ms: 250,
            jitter: false,
            ..RetrySpec::default()
        };
        check(fixed, 7, 0.5, 250);
        let jittered = RetrySpec::default();
        check(jittered.clone(), 2, 0.0, 100);
        check(jittered.clone(), 2, 1.0, 200);
        check(jittered, 2, 0.5, 150);
    }
}
