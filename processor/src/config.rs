//! Pipeline configuration: serde structs whose defaults are the sensor use case.
//!
//! Config is data (house style 11): the broker's TOML loader will embed `Vec<PipelineConfig>`;
//! `validate()` rejects what the processor cannot run, before anything starts.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time::Millis;

/// A configuration the processor cannot run.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid pipeline config `{pipeline}`: {reason}")]
pub struct ConfigError {
    /// Pipeline name.
    pub pipeline: String,
    /// What is wrong.
    pub reason: String,
}

/// One pipeline: source → parse → windows + rules → output topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name; stamped on every output record (header `runnel.pipeline`).
    pub name: String,
    /// Where readings come from and how to read them.
    pub source: SourceConfig,
    /// Watermark generation.
    pub watermark: WatermarkConfig,
    /// Event-time windows.
    pub window: WindowConfig,
    /// Aggregations computed per key and window.
    pub aggregations: Vec<AggregationConfig>,
    /// Anomaly rules evaluated per reading / on timers.
    pub rules: Vec<RuleConfig>,
    /// Output topics.
    pub outputs: OutputsConfig,
    /// Relative accuracy of percentile sketches (0.01 = estimates within 1%).
    pub sketch_relative_accuracy: f64,
    /// Readings with a numeric field beyond ±this are rejected to the DLQ, which keeps every
    /// sum, mean and variance finite (a NaN or ∞ in state would poison a window for good).
    pub max_abs_value: f64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: "sensors".into(),
            source: SourceConfig::default(),
            watermark: WatermarkConfig::default(),
            window: WindowConfig::default(),
            aggregations: vec![
                AggregationConfig {
                    field: "temperature_c".into(),
                    functions: vec![
                        AggFn::Avg,
                        AggFn::Min,
                        AggFn::Max,
                        AggFn::Percentile(Percentile::new(95.0)),
                    ],
                },
                AggregationConfig {
                    field: "vibration_g".into(),
                    functions: vec![AggFn::Max],
                },
            ],
            rules: vec![
                RuleConfig::Threshold(ThresholdRule {
                    name: "temperature_high".into(),
                    field: "temperature_c".into(),
                    above: 85.0,
                    hysteresis: 2.0,
                }),
                RuleConfig::Threshold(ThresholdRule {
                    name: "vibration_high".into(),
                    field: "vibration_g".into(),
                    above: 0.5,
                    hysteresis: 0.05,
                }),
                RuleConfig::ZScore(ZScoreRule {
                    name: "temperature_zscore".into(),
                    field: "temperature_c".into(),
                    alpha: 0.1,
                    threshold: 4.0,
                    clear_below: 2.0,
                    warmup: 20,
                }),
                RuleConfig::Silence(SilenceRule {
                    name: "device_silent".into(),
                    after_ms: 30_000,
                    processing_time_after_ms: None,
                }),
            ],
            outputs: OutputsConfig::default(),
            sketch_relative_accuracy: 0.01,
            max_abs_value: 1e9,
        }
    }
}

/// Value encoding of source records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// One JSON object per record.
    Json,
}

/// The source topic(s) and the fields that carry the key and the event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Topics read (the partition numbers of all of them share one watermark).
    pub topics: Vec<String>,
    /// Partitions expected; each holds the watermark back until it is seen or goes idle.
    pub partitions: u32,
    /// Value format.
    pub format: ValueFormat,
    /// Field holding the grouping key (a non-empty string).
    pub key_field: String,
    /// Field holding the event time (RFC 3339 string, or integer epoch milliseconds).
    pub time_field: String,
    /// Longest accepted key, in bytes.
    pub max_key_len: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            topics: vec!["sensor_events".into()],
            partitions: 3,
            format: ValueFormat::Json,
            key_field: "device_id".into(),
            time_field: "ts".into(),
            max_key_len: 256,
        }
    }
}

/// Bounded out-of-orderness watermarks with idleness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatermarkConfig {
    /// A partition's watermark is its highest event time minus this.
    pub max_out_of_orderness_ms: Millis,
    /// A partition with no valid reading for this long (processing time) stops holding the
    /// pipeline watermark back until it has data again.
    pub idle_timeout_ms: Millis,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self {
            max_out_of_orderness_ms: 10_000,
            idle_timeout_ms: 30_000,
        }
    }
}

/// Window shape and lateness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length.
    pub size_ms: Millis,
    /// Distance between window starts; `None` (or equal to `size_ms`) means tumbling.
    pub slide_ms: Option<Millis>,
    /// How long after a window closes late readings still update it (and re-emit it with the
    /// next revision). Later readings go to the late-data topic.
    pub allowed_lateness_ms: Millis,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size_ms: 60_000,
            slide_ms: None,
            allowed_lateness_ms: 60_000,
        }
    }
}

impl WindowConfig {
    /// The slide, `size_ms` for tumbling windows.
    pub fn slide(&self) -> Millis {
        self.slide_ms.unwrap_or(self.size_ms)
    }
}

/// Aggregations over one numeric field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// Field name in the reading.
    pub field: String,
    /// Functions to compute; output columns are `<field>_<fn>`.
    pub functions: Vec<AggFn>,
}

/// A percentile in (0, 100], stored in hundredths so it is `Eq` and names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percentile(u32);

impl Percentile {
    /// `p` in (0, 100] with at most two decimals (clamped otherwise).
    pub fn new(p: f64) -> Self {
        Self(
            crate::num::floor_to_u64((p * 100.0).round())
                .map_or(0, |v| u32::try_from(v.min(10_000)).unwrap_or(10_000)),
        )
    }

    /// As a quantile in (0, 1].
    pub fn quantile(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    fn is_valid(self) -> bool {
        (1..=10_000).contains(&self.0)
    }
}

/// An aggregation function. In config: `"count"`, `"sum"`, `"avg"`, `"min"`, `"max"`,
/// `"p95"`, `"p99.9"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AggFn {
    /// Readings with this field.
    Count,
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Percentile estimate from a mergeable sketch.
    Percentile(Percentile),
}

impl fmt::Display for AggFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count => f.write_str("count"),
            Self::Sum => f.write_str("sum"),
            Self::Avg => f.write_str("avg"),
            Self::Min => f.write_str("min"),
            Self::Max => f.write_str("max"),
            Self::Percentile(p) => {
                let (whole, frac) = (p.0 / 100, p.0 % 100);
                match frac {
                    0 => write!(f, "p{whole}"),
                    x if x % 10 == 0 => write!(f, "p{whole}.{}", x / 10),
                    x => write!(f, "p{whole}.{x:02}"),
                }
            }
        }
    }
}

impl FromStr for AggFn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            _ => {
                let p = s
                    .strip_prefix('p')
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|p| *p > 0.0 && *p <= 100.0)
                    .ok_or_else(|| format!("unknown aggregation function `{s}`"))?;
                Self::Percentile(Percentile::new(p))
            }
        })
    }
}

impl TryFrom<String> for AggFn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AggFn> for String {
    fn from(f: AggFn) -> Self {
        f.to_string()
    }
}

/// An anomaly rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleConfig {
    /// Value above a threshold, with hysteresis.
    Threshold(ThresholdRule),
    /// Value far from the key's own EWMA baseline.
    #[serde(rename = "zscore")]
    ZScore(ZScoreRule),
    /// No reading from a key for a while.
    Silence(SilenceRule),
}

impl RuleConfig {
    /// The rule's unique name (part of every alert id).
    pub fn name(&self) -> &str {
        match self {
            Self::Threshold(r) => &r.name,
            Self::ZScore(r) => &r.name,
            Self::Silence(r) => &r.name,
        }
    }
}

/// Fires when `field > above`; re-arms only once `field < above - hysteresis`, so a value
/// hovering at the threshold raises one alert, not one per reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// Rule name.
    pub name: String,
    /// Field.
    pub field: String,
    /// Threshold.
    pub above: f64,
    /// Clearing band below the threshold.
    pub hysteresis: f64,
}

/// Fires when `|x - mean| / stddev > threshold` against the key's exponentially weighted mean
/// and variance; re-arms once the score falls below `clear_below`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreRule {
    /// Rule name.
    pub name: String,
    /// Field.
    pub field: String,
    /// EWMA weight of a new reading, in (0, 1].
    pub alpha: f64,
    /// Score that raises the alert.
    pub threshold: f64,
    /// Score below which the rule re-arms.
    pub clear_below: f64,
    /// Readings needed before the baseline is trusted.
    pub warmup: u64,
}

/// Fires once when a key has been silent for `after_ms`: in event time (the watermark passed
/// its last event time + `after_ms`) or, if set, in processing time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRule {
    /// Rule name.
    pub name: String,
    /// Event-time silence.
    pub after_ms: Millis,
    /// Processing-time silence (no reading arrived for this long), for when the whole stream
    /// stops and the watermark with it.
    pub processing_time_after_ms: Option<Millis>,
}

/// An output topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputTopic {
    /// Topic name.
    pub topic: String,
    /// Partitions; records are spread by a stable hash of their key.
    pub partitions: u32,
}

impl OutputTopic {
    fn named(topic: &str) -> Self {
        Self {
            topic: topic.into(),
            partitions: 1,
        }
    }
}

impl Default for OutputTopic {
    fn default() -> Self {
        Self::named("")
    }
}

/// Where each kind of output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputsConfig {
    /// Window results.
    pub aggregates: OutputTopic,
    /// Alerts.
    pub alerts: OutputTopic,
    /// Readings later than the allowed lateness.
    pub late: OutputTopic,
    /// Records that failed to parse or validate.
    pub dlq: OutputTopic,
}

impl Default for OutputsConfig {
    fn default() -> Self {
        Self {
            aggregates: OutputTopic::named("sensor_aggregates"),
            alerts: OutputTopic::named("sensor_alerts"),
            late: OutputTopic::named("sensor_events_late"),
            dlq: OutputTopic::named("sensor_events_dlq"),
        }
    }
}

impl PipelineConfig {
    /// Checks everything the processor relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |reason: String| ConfigError {
            pipeline: self.name.clone(),
            reason,
        };
        let finite = |x: f64| x.is_finite();
        if self.name.is_empty() {
            return Err(err("name is empty".into()));
        }
        if self.source.topics.is_empty() || self.source.topics.iter().any(String::is_empty) {
            return Err(err("source.topics must name at least one topic".into()));
        }
        if self.source.partitions == 0 {
            return Err(err("source.partitions must be at least 1".into()));
        }
        if self.source.key_field.is_empty() || self.source.time_field.is_empty() {
            return Err(err("source key_field and time_field must be set".into()));
        }
        if self.watermark.max_out_of_orderness_ms < 0 || self.watermark.idle_timeout_ms <= 0 {
            return Err(err(
                "watermark: out-of-orderness must be >= 0 and idle timeout > 0".into(),
            ));
        }
        let (size, slide) = (self.window.size_ms, self.window.slide());
        if size <= 0 || slide <= 0 || slide > size {
            return Err(err("window: need 0 < slide_ms <= size_ms".into()));
        }
        if size / slide > 1000 {
            return Err(err(
                "window: at most 1000 overlapping windows per reading".into()
            ));
        }
        if self.window.allowed_lateness_ms < 0 {
            return Err(err("window.allowed_lateness_ms must be >= 0".into()));
        }
        for a in &self.aggregations {
            if a.field.is_empty() || a.functions.is_empty() {
                return Err(err("each aggregation needs a field and functions".into()));
            }
            for f in &a.functions {
                if let AggFn::Percentile(p) = f {
                    if !p.is_valid() {
                        return Err(err(format!("{}: percentile must be in (0, 100]", a.field)));
                    }
                }
            }
        }
        let mut names = BTreeSet::new();
        for r in &self.rules {
            if r.name().is_empty() || !names.insert(r.name()) {
                return Err(err(format!(
                    "rule name `{}` is empty or repeated",
                    r.name()
                )));
            }
            let ok = match r {
                RuleConfig::Threshold(t) => {
                    !t.field.is_empty()
                        && finite(t.above)
                        && finite(t.hysteresis)
                        && t.hysteresis >= 0.0
                }
                RuleConfig::ZScore(z) => {
                    !z.field.is_empty()
                        && z.alpha > 0.0
                        && z.alpha <= 1.0
                        && finite(z.threshold)
                        && z.threshold > 0.0
                        && finite(z.clear_below)
                        && z.clear_below <= z.threshold
                }
                RuleConfig::Silence(s) => {
                    s.after_ms > 0 && s.processing_time_after_ms.is_none_or(|p| p > 0)
                }
            };
            if !ok {
                return Err(err(format!(
                    "rule `{}` has out-of-range parameters",
                    r.name()
                )));
            }
        }
        let a = self.sketch_relative_accuracy;
        if !(a > 0.0 && a < 0.5) {
            return Err(err("sketch_relative_accuracy must be in (0, 0.5)".into()));
        }
        if !(self.max_abs_value > 0.0 && self.max_abs_value <= 1e100) {
            return Err(err("max_abs_value must be in (0, 1e100]".into()));
        }
        let o = &self.outputs;
        for t in [&o.aggregates, &o.alerts, &o.late, &o.dlq] {
            if t.topic.is_empty() || t.partitions == 0 {
                return Err(err(
                    "every output needs a topic and at least 1 partition".into()
                ));
            }
        }
        Ok(())
    }

    /// Every numeric field the pipeline reads (aggregations and rules), sorted.
    pub fn numeric_fields(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.aggregations.iter().map(|a| a.field.clone()).collect();
        for r in &self.rules {
            match r {
                RuleConfig::Threshold(t) => {
                    out.insert(t.field.clone());
                }
                RuleConfig::ZScore(z) => {
                    out.insert(z.field.clone());
                }
                RuleConfig::Silence(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_sensor_pipeline() {
        let c = PipelineConfig::default();
        c.validate().unwrap();
        assert_eq!(c.source.topics, ["sensor_events"]);
        assert_eq!(
            c.numeric_fields().into_iter().collect::<Vec<_>>(),
            ["temperature_c", "vibration_g"]
        );
    }

    #[test]
    fn agg_fn_names_round_trip() {
        for s in [
            "count", "sum", "avg", "min", "max", "p95", "p99.9", "p99.99", "p100",
        ] {
            let f: AggFn = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        for bad in ["p0", "p101", "median", "p", "pNaN", "p-1"] {
            assert!(bad.parse::<AggFn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_round_trip_and_partial_config_takes_defaults() {
        let c = PipelineConfig::default();
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<PipelineConfig>(&s).unwrap(), c);
        let partial: PipelineConfig =
            serde_json::from_str(r#"{"name":"x","window":{"size_ms":1000,"slide_ms":500}}"#)
                .unwrap();
        assert_eq!(partial.window.allowed_lateness_ms, 60_000);
        assert_eq!(partial.rules, c.rules);
        partial.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_values() {
        type Mutation = Box<dyn Fn(&mut PipelineConfig)>;
        let bad: Vec<Mutation> = vec![
            Box::new(|c| c.window.slide_ms = Some(0)),
            Box::new(|c| c.window.slide_ms = Some(c.window.size_ms + 1)),
            Box::new(|c| c.window.slide_ms = Some(1)),
            Box::new(|c| c.source.partitions = 0),
            Box::new(|c| c.watermark.idle_timeout_ms = 0),
            Box::new(|c| c.sketch_relative_accuracy = f64::NAN),
            Box::new(|c| c.outputs.dlq.topic.clear()),
            Box::new(|c| {
                let r = c.rules[0].clone();
                c.rules.push(r);
            }),
            Box::new(|c| {
                if let RuleConfig::Threshold(t) = &mut c.rules[0] {
                    t.above = f64::INFINITY;
                }
            }),
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut c = PipelineConfig::default();
            f(&mut c);
            assert!(c.validate().is_err(), "case {i} should be rejected");
        }
    }
}
