//! Watermarks: bounded out-of-orderness per source partition, the pipeline watermark as the
//! minimum over active partitions, and idleness measured in processing time (an input).

use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::time::Millis;

/// A source partition: topic and partition number.
pub type SourcePartition = (String, u32);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Clock {
    /// Highest event time seen on the partition.
    max_event_time: Option<Millis>,
    /// Processing time of the last valid reading.
    last_activity: Option<Millis>,
}

/// Tracks per-partition watermarks and derives the pipeline watermark.
///
/// A partition's watermark is `max event time - max_out_of_orderness`. A partition is *idle*
/// when no reading arrived for `idle_timeout` of processing time (one that never delivered
/// anything counts from the first processing time the tracker saw); idle partitions do not hold
/// the pipeline watermark back. If every partition is idle the watermark is the maximum of
/// theirs: all data seen is complete up to the bound. The pipeline watermark never decreases;
/// a partition that wakes up behind it simply delivers late data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatermarkTracker {
    bound: Millis,
    idle_timeout: Millis,
    clocks: Vec<(SourcePartition, Clock)>,
    started_at: Option<Millis>,
    current: Option<Millis>,
    /// Set by [`WatermarkTracker::advance`] to the processing time it evaluated at; cleared by
    /// any change to its inputs. While set and `now` is the same, `advance` would compute the
    /// same candidate again, which the watermark already covers, so it answers `None` without
    /// the pass over every partition (a reading that raises nothing, the common case). A
    /// cache, not state: not saved, not compared.
    #[serde(skip)]
    evaluated_at: Option<Millis>,
}

impl PartialEq for WatermarkTracker {
    fn eq(&self, other: &Self) -> bool {
        (
            self.bound,
            self.idle_timeout,
            &self.clocks,
            self.started_at,
            self.current,
        ) == (
            other.bound,
            other.idle_timeout,
            &other.clocks,
            other.started_at,
            other.current,
        )
    }
}

impl WatermarkTracker {
    /// A tracker expecting `source.partitions` partitions of each source topic.
    pub fn new(config: &PipelineConfig) -> Self {
        let mut clocks = Vec::new();
        for t in &config.source.topics {
            for p in 0..config.source.partitions {
                clocks.push(((t.clone(), p), Clock::default()));
            }
        }
        clocks.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            bound: config.watermark.max_out_of_orderness_ms,
            idle_timeout: config.watermark.idle_timeout_ms,
            clocks,
            started_at: None,
            current: None,
            evaluated_at: None,
        }
    }

    fn clock_mut(&mut self, topic: &str, partition: u32) -> &mut Clock {
        // Compared as `(&str, u32)`: no allocation unless the partition is new.
        let i = match self
            .clocks
            .binary_search_by(|((t, p), _)| (t.as_str(), *p).cmp(&(topic, partition)))
        {
            Ok(i) => i,
            Err(i) => {
                // A partition beyond the configured count: track it from now on.
                self.clocks
                    .insert(i, ((topic.to_owned(), partition), Clock::default()));
                self.evaluated_at = None;
                i
            }
        };
        &mut self.clocks[i].1
    }

    /// Records a valid reading at processing time `now`.
    pub fn observe(&mut self, topic: &str, partition: u32, event_time: Millis, now: Millis) {
        if self.started_at.is_none() {
            self.started_at = Some(now);
            self.evaluated_at = None;
        }
        let c = self.clock_mut(topic, partition);
        let max = Some(c.max_event_time.map_or(event_time, |m| m.max(event_time)));
        let changed = c.max_event_time != max || c.last_activity != Some(now);
        c.max_event_time = max;
        c.last_activity = Some(now);
        if changed {
            self.evaluated_at = None;
        }
    }

    /// Recomputes the pipeline watermark at processing time `now`; returns it if it advanced.
    pub fn advance(&mut self, now: Millis) -> Option<Millis> {
        if self.evaluated_at == Some(now) {
            return None;
        }
        self.evaluated_at = Some(now);
        let started = *self.started_at.get_or_insert(now);
        let mut active_min: Option<Option<Millis>> = None;
        let mut all_max: Option<Millis> = None;
        for (_, c) in &self.clocks {
            let wm = c.max_event_time.map(|m| m.saturating_sub(self.bound));
            if let Some(w) = wm {
                all_max = Some(all_max.map_or(w, |m| m.max(w)));
            }
            let since = c.last_activity.unwrap_or(started);
            let idle = now.saturating_sub(since) >= self.idle_timeout;
            if !idle {
                // `None` (no data yet) holds everything back.
                active_min = Some(match active_min {
                    None => wm,
                    Some(prev) => prev.zip(wm).map(|(a, b)| a.min(b)),
                });
            }
        }
        let candidate = match active_min {
            Some(m) => m,
            None => all_max,
        }?;
        if self.current.is_none_or(|c| candidate > c) {
            self.current = Some(candidate);
            Some(candidate)
        } else {
            None
        }
    }

    /// The pipeline watermark, `None` before any.
    pub fn current(&self) -> Option<Millis> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(partitions: u32) -> WatermarkTracker {
        let mut c = PipelineConfig::default();
        c.source.partitions = partitions;
        c.watermark.max_out_of_orderness_ms = 10;
        c.watermark.idle_timeout_ms = 100;
        WatermarkTracker::new(&c)
    }

    const T: &str = "sensor_events";

    #[test]
    fn min_over_partitions_and_monotone() {
        let mut w = tracker(2);
        w.observe(T, 0, 1000, 0);
        assert_eq!(w.advance(0), None, "partition 1 has no data yet");
        w.observe(T, 1, 500, 0);
        assert_eq!(w.advance(0), Some(490));
        w.observe(T, 1, 2000, 1);
        assert_eq!(w.advance(1), Some(990));
        w.observe(T, 0, 900, 2); // out of order: max stays 1000
        assert_eq!(w.advance(2), None);
        assert_eq!(w.current(), Some(990));
    }

    #[test]
    fn idle_partition_stops_holding_back_and_never_regresses() {
        let mut w = tracker(2);
        w.observe(T, 0, 1000, 0);
        assert_eq!(w.advance(50), None);
        // Partition 1 never delivered: idle 100 ms after the tracker started.
        assert_eq!(w.advance(100), Some(990));
        w.observe(T, 0, 5000, 150);
        assert_eq!(w.advance(150), Some(4990));
        // Partition 1 wakes up far behind: it is active again, but the watermark stays.
        w.observe(T, 1, 200, 160);
        assert_eq!(w.advance(160), None);
        assert_eq!(w.current(), Some(4990));
        // Partition 0 goes idle, partition 1 holds the minimum (190) < current: no change.
        assert_eq!(w.advance(255), None);
        // Both idle: maximum of all.
        w.observe(T, 0, 6000, 300);
        assert_eq!(w.advance(1000), Some(5990));
    }

    #[test]
    fn unknown_partitions_are_tracked() {
        let mut w = tracker(1);
        w.observe(T, 0, 100, 0);
        w.observe("other", 7, 50, 0);
        assert_eq!(w.advance(0), Some(40));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut w = tracker(1);
        w.observe(T, 0, i64::MIN, i64::MIN);
        let _ = w.advance(i64::MAX);
        w.observe(T, 0, i64::MAX, i64::MAX);
        assert_eq!(w.advance(i64::MAX), Some(i64::MAX - 10));
    }

    proptest::proptest! {
        /// The cached `advance` answers exactly as a fresh pass over every partition would,
        /// for any interleaving of readings and advances, in any partition, at any times.
        #[test]
        fn cached_advance_equals_a_fresh_pass(
            ops in proptest::collection::vec(
                (0u32..4, proptest::bool::ANY, -50i64..5_000, 0i64..400),
                0..200,
            )
        ) {
            let (mut cached, mut fresh) = (tracker(3), tracker(3));
            let mut now = 0;
            for (partition, is_reading, event_time, dt) in ops {
                // Processing time mostly stands still (a step), sometimes moves on.
                if dt > 300 {
                    now += dt - 300;
                }
                if is_reading {
                    cached.observe(T, partition, event_time, now);
                    fresh.observe(T, partition, event_time, now);
                } else {
                    fresh.evaluated_at = None;
                    proptest::prop_assert_eq!(cached.advance(now), fresh.advance(now));
                }
                proptest::prop_assert_eq!(&cached, &fresh);
            }
        }
    }
}
