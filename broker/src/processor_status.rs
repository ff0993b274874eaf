//! What the embedded pipelines are doing right now, for `/metrics`, the dashboard and
//! `runnel status`: a snapshot per pipeline published after every driver step, plus the
//! alert latencies seen as alerts are appended.
//!
//! Nothing here feeds back into processing: it is observation only, so it may be lost or
//! reset on restart (the pipeline's own counters are checkpointed with its state).
//!
//! A broker keeps the statuses and its [`Metrics`] as two fields; the standalone processor
//! (`runnel process`), which has no broker, keeps them in an [`Observed`] and serves them on
//! its own HTTP listener (`net::http::serve_processor_http`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use runnel_processor::driver::CheckpointStats;
use runnel_processor::pipeline::Stats;
use runnel_processor::time::Millis;
use runnel_processor::Pipeline;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// What a standalone processor shows operators: its Prometheus series and the status of each
/// pipeline (the same types, names and labels a broker serves).
#[derive(Default)]
pub struct Observed {
    pub metrics: Metrics,
    pub pipelines: PipelineStatuses,
}

/// How many recent alert latencies are kept for percentiles.
const RECENT_LATENCIES: usize = 1_000;
/// Counting open windows walks them all, so it is refreshed at most this often.
const WINDOW_COUNT_EVERY: Duration = Duration::from_millis(500);

/// One pipeline, as last observed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: String,
    /// Source topics.
    pub sources: Vec<String>,
    /// Output topics: aggregates, alerts, late, dlq.
    pub outputs: OutputTopics,
    /// Checkpointed counters (input records, DLQ, late, aggregates, alerts).
    pub stats: Stats,
    /// Event-time watermark, ms since the epoch (none before the first reading).
    pub watermark_ms: Option<Millis>,
    /// Windows currently open.
    pub windows_open: u64,
    /// Next input offset per source partition: (topic, partition, offset).
    pub positions: Vec<(String, u32, i64)>,
    /// Steps applied since the pipeline was created.
    pub steps: u64,
    /// Checkpoints taken since this broker started.
    pub checkpoints: u64,
    /// How long the last checkpoint took, in seconds.
    pub last_checkpoint_seconds: Option<f64>,
    /// Whether a driver is running (false while it recovers after an error).
    pub running: bool,
    /// The last error that stopped the driver, if any.
    pub last_error: Option<String>,
    #[serde(skip)]
    windows_counted_at: Option<Instant>,
    #[serde(skip)]
    checkpoints_in_lifetime: u64,
}

/// The output topics of a pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutputTopics {
    pub aggregates: String,
    pub alerts: String,
    pub late: String,
    pub dlq: String,
}

/// Every pipeline's status, and what metrics need of each step.
#[derive(Debug, Default)]
pub struct PipelineStatuses {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pipelines: BTreeMap<String, PipelineStatus>,
    /// Recent (append time − triggering reading's timestamp), ms, per pipeline.
    latencies: BTreeMap<String, VecDeque<u64>>,
}

impl PipelineStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Observation only: a panic elsewhere while holding the lock leaves data that is
        // still good enough to show.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a pipeline before its first step.
    pub fn register(&self, config: &runnel_processor::PipelineConfig) {
        let o = &config.outputs;
        let status = PipelineStatus {
            name: config.name.clone(),
            sources: config.source.topics.clone(),
            outputs: OutputTopics {
                aggregates: o.aggregates.topic.clone(),
                alerts: o.alerts.topic.clone(),
                late: o.late.topic.clone(),
                dlq: o.dlq.topic.clone(),
            },
            ..PipelineStatus::default()
        };
        self.lock().pipelines.insert(config.name.clone(), status);
    }

    /// Records a pipeline's state after a driver step (counting open windows at most every
    /// [`WINDOW_COUNT_EVERY`]).
    pub fn observe(&self, p: &Pipeline, checkpoint: CheckpointStats) {
        let mut inner = self.lock();
        let Some(s) = inner.pipelines.get_mut(&p.config().name) else {
            return;
        };
        s.stats = p.stats();
        s.watermark_ms = p.watermark();
        s.steps = p.steps_applied();
        s.positions = p.next_offsets();
        s.running = true;
        let due = s
            .windows_counted_at
            .is_none_or(|at| at.elapsed() >= WINDOW_COUNT_EVERY);
        if due {
            s.windows_open = u64::try_from(p.open_window_count()).unwrap_or(u64::MAX);
            s.windows_counted_at = Some(Instant::now());
        }
        if checkpoint.count > s.checkpoints_in_lifetime {
            let added = checkpoint.count.saturating_sub(s.checkpoints_in_lifetime);
            s.checkpoints = s.checkpoints.saturating_add(added);
            s.checkpoints_in_lifetime = checkpoint.count;
        }
    }

    /// Records how long a pipeline's last checkpoint (its state-store batch) took.
    pub fn checkpointed(&self, name: &str, took: Duration) {
        if let Some(s) = self.lock().pipelines.get_mut(name) {
            s.last_checkpoint_seconds = Some(took.as_secs_f64());
        }
    }

    /// The driver stopped (error or shutdown); a new lifetime starts its counts afresh.
    pub fn stopped(&self, name: &str, error: Option<String>) {
        if let Some(s) = self.lock().pipelines.get_mut(name) {
            s.running = false;
            s.checkpoints_in_lifetime = 0;
            if error.is_some() {
                s.last_error = error;
            }
        }
    }

    /// Records one alert's latency in ms.
    pub fn alert_latency(&self, pipeline: &str, ms: u64) {
        let mut inner = self.lock();
        let q = inner.latencies.entry(pipeline.to_owned()).or_default();
        if q.len() == RECENT_LATENCIES {
            q.pop_front();
        }
        q.push_back(ms);
    }

    /// A pipeline's last observed watermark.
    pub fn watermark(&self, pipeline: &str) -> Option<Millis> {
        self.lock().pipelines.get(pipeline)?.watermark_ms
    }

    /// Every pipeline, by name.
    pub fn snapshot(&self) -> Vec<PipelineStatus> {
        self.lock().pipelines.values().cloned().collect()
    }

    /// `(p50, p99, samples)` of the recent alert latencies of a pipeline, in ms.
    pub fn latency_percentiles(&self, pipeline: &str) -> Option<(u64, u64, usize)> {
        let inner = self.lock();
        let q = inner.latencies.get(pipeline)?;
        let mut v: Vec<u64> = q.iter().copied().collect();
        v.sort_unstable();
        Some((percentile(&v, 50)?, percentile(&v, 99)?, v.len()))
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len().saturating_mul(p)).div_ceil(100).max(1);
    sorted.get(rank.saturating_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn checkpoints_accumulate_across_driver_lifetimes() {
        let s = PipelineStatuses::default();
        let config = runnel_processor::PipelineConfig::default();
        s.register(&config);
        let p = Pipeline::new(config).unwrap();
        let cp = |count| CheckpointStats { count };
        s.observe(&p, cp(0));
        s.observe(&p, cp(1));
        s.observe(&p, cp(1));
        assert_eq!(
            s.snapshot()[0].checkpoints,
            1,
            "the same checkpoint is not counted twice"
        );
        s.stopped(&p.config().name, Some("boom".into()));
        s.observe(&p, cp(1));
        s.checkpointed(&p.config().name, Duration::from_millis(3));
        let snap = s.snapshot();
        assert_eq!(snap[0].checkpoints, 2);
        assert_eq!(snap[0].last_error.as_deref(), Some("boom"));
        assert!(snap[0].running);
        assert_eq!(snap[0].last_checkpoint_seconds, Some(0.003));
    }

    #[test]
    fn latency_window_is_bounded() {
        let s = PipelineStatuses::default();
        for ms in 0..5_000 {
            s.alert_latency("p", ms);
        }
        let (p50, p99, n) = s.latency_percentiles("p").unwrap();
        assert_eq!(n, RECENT_LATENCIES);
        // The last 1000 values (4000..5000) remain: nearest rank 500 and 990.
        assert_eq!((p50, p99), (4_499, 4_989));
    }
}
