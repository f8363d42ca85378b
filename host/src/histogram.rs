//! Histograms of atomic counters: cheap to observe from any thread (two
//! relaxed additions), read at scrape time. The api renders them; the parts that observe need not
//! know any metrics library.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of durations in seconds, from 100 µs to 10 s.
pub const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of durations in seconds for slow work (compiles), 10 ms to 2 min.
pub const SLOW_SECONDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets of sizes (messages or writes per batch), 1 to 10,000.
pub const SIZES: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// Sums are kept in millionths of the observed unit.
const SCALE: f64 = 1e6;

/// Observations counted per bucket.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last slot counts the rest (+Inf).
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in millionths.
    sum: AtomicU64,
}

/// A reading of a [`Histogram`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Per upper bound, the observations above the previous bound and up to
    /// this one (not cumulative: the exposition encoder sums them); the
    /// last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add((value.max(0.0) * SCALE) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, duration: std::time::Duration) {
        self.observe(duration.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .chain([f64::INFINITY].iter())
            .zip(self.counts.iter())
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>();
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum.load(Ordering::Relaxed) as f64 / SCALE,
        }
    }
}

/// Counts per label out of a fixed set (outcomes of requests or attempts).
#[derive(Debug)]
pub struct Tally {
    labels: &'static [&'static str],
    counts: Box<[AtomicU64]>,
}

impl Tally {
    pub fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            counts: labels.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Count one `label`; a label outside the set is not counted.
    pub fn add(&self, label: &str) {
        if let Some(i) = self.labels.iter().position(|l| *l == label) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts of the labels seen at least once, in the set's order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.labels
            .iter()
            .zip(self.counts.iter())
            .map(|(l, n)| (*l, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 3.0, 50.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (10.0, 1), (f64::INFINITY, 1)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 54.5).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn a_tally_counts_the_labels_of_its_set() {
        let t = Tally::new(&["ack", "retry", "trap"]);
        for label in ["trap", "ack", "trap", "unknown"] {
            t.add(label);
        }
        assert_eq!(t.snapshot(), vec![("ack", 1), ("trap", 2)]);
    }
}
