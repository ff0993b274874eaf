//! Runnel benches harness (see README): helpers shared by the benchmark binaries
//! (`grpc_bench`, `produce_latency`, `fsync_floor`): nearest-rank latency percentiles, the
//! latency summary line and fixed-rate pacing.

use std::time::Duration;

/// The nearest-rank `pct`-th percentile (1..=100) of `sorted` (ascending); `None` if empty.
pub fn percentile(sorted: &[Duration], pct: usize) -> Option<Duration> {
    let rank = (sorted.len() * pct.clamp(1, 100)).div_ceil(100);
    sorted.get(rank.checked_sub(1)?).copied()
}

/// `"NAME: p50=…ms p90=…ms p99=…ms p99.9=…ms max=…ms"` over `sorted` (ascending), the
/// summary the latency probes print and `benches/kafka_throughput.sh` parses (NaN if empty).
pub fn latency_summary(name: &str, sorted: &[Duration]) -> String {
    let p = |pct| percentile(sorted, pct).map_or(f64::NAN, ms);
    let p999 = sorted
        .get((sorted.len() * 999).div_ceil(1000).saturating_sub(1))
        .map_or(f64::NAN, |d| ms(*d));
    format!(
        "{name}: p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={p999:.3}ms max={:.3}ms",
        p(50),
        p(90),
        p(99),
        sorted.last().map_or(f64::NAN, |d| ms(*d)),
    )
}

/// When record `i` is due, from the start of a run paced at `rate` records/s (`rate` > 0).
pub fn due(i: u64, rate: u64) -> Duration {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// `d` in milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v[..1], 99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn latency_summary_reads_nearest_ranks() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        assert_eq!(
            latency_summary("from due", &v),
            "from due: p50=0.500ms p90=0.900ms p99=0.990ms p99.9=0.999ms max=1.000ms"
        );
        assert_eq!(
            latency_summary("x", &[]),
            "x: p50=NaNms p90=NaNms p99=NaNms p99.9=NaNms max=NaNms"
        );
    }

    #[test]
    fn pacing_spreads_records_evenly() {
        assert_eq!(due(0, 2000), Duration::ZERO);
        assert_eq!(due(1, 2000), Duration::from_micros(500));
        assert_eq!(due(4000, 2000), Duration::from_secs(2));
        assert_eq!(due(3, 3), Duration::from_secs(1));
    }
}
