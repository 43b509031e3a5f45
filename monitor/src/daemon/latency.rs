//! Event → decision latency quantiles for `status` and the benchmark: a log-linear histogram
//! (8 sub-buckets per power of two, so a quantile is within 1/8 of its true value), fixed size.

use serde::Serialize;

const SUB_BUCKETS: usize = 8;
const BUCKETS: usize = 64 * SUB_BUCKETS;

#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    max_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { counts: Box::new([0; BUCKETS]), count: 0, max_ns: 0 }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < SUB_BUCKETS as u64 {
        return ns as usize;
    }
    let power = 63 - ns.leading_zeros() as usize;
    let sub = ((ns >> (power - 3)) & (SUB_BUCKETS as u64 - 1)) as usize;
    (power - 2) * SUB_BUCKETS + sub
}

/// The smallest value that falls in bucket `index`.
fn lower_bound(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let power = index / SUB_BUCKETS + 2;
    let sub = (index % SUB_BUCKETS) as u64;
    (1 << power) | (sub << (power - 3))
}

impl LatencyHistogram {
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns).min(BUCKETS - 1)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return lower_bound(index).min(self.max_ns);
            }
        }
        self.max_ns
    }

    pub fn summary(&self) -> LatencySummary {
        if self.count == 0 {
            return LatencySummary::default();
        }
        LatencySummary { count: self.count, p50_ns: self.quantile(0.5), p99_ns: self.quantile(0.99), max_ns: self.max_ns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_an_eighth() {
        let mut histogram = LatencyHistogram::default();
        for ns in 1..=10_000u64 {
            histogram.record(ns * 1000);
        }
        let LatencySummary { count, p50_ns, p99_ns, max_ns } = histogram.summary();
        assert_eq!(count, 10_000);
        assert_eq!(max_ns, 10_000_000);
        assert!((4_375_000..=5_000_000).contains(&p50_ns), "{p50_ns}");
        assert!((8_662_500..=9_900_000).contains(&p99_ns), "{p99_ns}");
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for ns in [0, 1, 7, 8, 9, 15, 16, 17, 1000, 1 << 20, u64::MAX / 2] {
            let index = bucket(ns);
            assert!(index >= last, "{ns}");
            assert!(lower_bound(index) <= ns, "{ns}");
            last = index;
        }
    }
}
