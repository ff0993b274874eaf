//! Pipeline configuration: serde structs whose defaults are the sensor use case.
//!
//! Config is data (house style 11): the broker's TOML config embeds `Vec<PipelineConfig>`
//! (`[[processor.pipelines]]`); [`PipelineConfig::validate`] and, across pipelines,
//! [`validate_pipelines`] reject what the processor cannot run, before anything starts.

use std::collections::{BTreeMap, BTreeSet};
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

/// Value encoding of source records. In config: `"json"` or `"protobuf"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// One JSON object per record.
    Json,
    /// One protobuf `runnel.v1.SensorReading` per record, its fields named as in its stored
    /// JSON form (`device_id`, `ts`, `temperature_c`, ...; see [`crate::proto`]).
    Protobuf,
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
    /// Clearing band below the threshold (default 0: re-arms as soon as the value is back
    /// under it).
    #[serde(default)]
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
    /// EWMA weight of a new reading, in (0, 1] (default 0.1).
    #[serde(default = "ZScoreRule::default_alpha")]
    pub alpha: f64,
    /// Score that raises the alert (default 4).
    #[serde(default = "ZScoreRule::default_threshold")]
    pub threshold: f64,
    /// Score below which the rule re-arms (default 2).
    #[serde(default = "ZScoreRule::default_clear_below")]
    pub clear_below: f64,
    /// Readings needed before the baseline is trusted (default 20).
    #[serde(default = "ZScoreRule::default_warmup")]
    pub warmup: u64,
}

impl ZScoreRule {
    fn default_alpha() -> f64 {
        0.1
    }
    fn default_threshold() -> f64 {
        4.0
    }
    fn default_clear_below() -> f64 {
        2.0
    }
    fn default_warmup() -> u64 {
        20
    }
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

impl OutputsConfig {
    /// Each output with its setting name.
    pub fn all(&self) -> [(&'static str, &OutputTopic); 4] {
        [
            ("aggregates", &self.aggregates),
            ("alerts", &self.alerts),
            ("late", &self.late),
            ("dlq", &self.dlq),
        ]
    }
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

/// Kafka's topic name rules: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(what: &str, name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > 249 || !ok_chars || name == "." || name == ".." {
        return Err(format!(
            "{what} `{name}` is not a topic name: 1-249 characters of [a-zA-Z0-9._-], \
             not `.` or `..`"
        ));
    }
    Ok(())
}

/// Prefix of the topics the processor keeps for itself (`__runnel_journal.<pipeline>`).
const INTERNAL_PREFIX: &str = "__runnel";
/// Longest pipeline name: `__runnel_checkpoints.<name>` must stay a legal topic name.
const MAX_NAME_LEN: usize = 200;

impl PipelineConfig {
    /// Checks everything the processor relies on; the error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|reason| ConfigError {
            pipeline: self.name.clone(),
            reason,
        })
    }

    fn check(&self) -> Result<(), String> {
        let finite = |x: f64| x.is_finite();
        // The name is a directory (`<state_dir>/<name>`) and part of the journal topic's name.
        if self.name.is_empty() {
            return Err("name is empty".into());
        }
        let name_chars = self
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !name_chars || self.name.len() > MAX_NAME_LEN || self.name.starts_with('.') {
            return Err(format!(
                "name must be 1-{MAX_NAME_LEN} characters of [a-zA-Z0-9._-], not starting \
                 with `.` (it names a directory and the topic `__runnel_journal.<name>`)"
            ));
        }
        if self.source.topics.is_empty() {
            return Err("source.topics must name at least one topic".into());
        }
        let mut sources = BTreeSet::new();
        for t in &self.source.topics {
            check_topic("source.topics entry", t)?;
            if !sources.insert(t) {
                return Err(format!("source topic `{t}` is listed twice"));
            }
        }
        if self.source.partitions == 0 {
            return Err("source.partitions must be at least 1".into());
        }
        if self.source.key_field.is_empty() {
            return Err("source.key_field is empty".into());
        }
        if self.source.time_field.is_empty() {
            return Err("source.time_field is empty".into());
        }
        if self.source.max_key_len == 0 {
            return Err("source.max_key_len must be at least 1".into());
        }
        if self.watermark.max_out_of_orderness_ms < 0 {
            return Err("watermark.max_out_of_orderness_ms must be >= 0".into());
        }
        if self.watermark.idle_timeout_ms <= 0 {
            return Err("watermark.idle_timeout_ms must be > 0".into());
        }
        let (size, slide) = (self.window.size_ms, self.window.slide());
        if size <= 0 {
            return Err(format!("window.size_ms must be > 0, got {size}"));
        }
        if slide <= 0 {
            return Err(format!("window.slide_ms must be > 0, got {slide}"));
        }
        if slide > size {
            return Err(format!(
                "window.slide_ms ({slide}) is larger than window.size_ms ({size}): \
                 readings between windows would be dropped"
            ));
        }
        if size / slide > 1000 {
            return Err(format!(
                "window: size_ms / slide_ms = {} overlapping windows per reading, at most 1000",
                size / slide
            ));
        }
        if self.window.allowed_lateness_ms < 0 {
            return Err("window.allowed_lateness_ms must be >= 0".into());
        }
        let mut columns = BTreeSet::new();
        for a in &self.aggregations {
            if a.field.is_empty() {
                return Err("an aggregation has an empty field".into());
            }
            if a.functions.is_empty() {
                return Err(format!("aggregation of `{}` lists no functions", a.field));
            }
            for f in &a.functions {
                if let AggFn::Percentile(p) = f {
                    if !p.is_valid() {
                        return Err(format!("{}: percentile must be in (0, 100]", a.field));
                    }
                }
                if !columns.insert((a.field.as_str(), *f)) {
                    return Err(format!("aggregation `{}_{f}` is listed twice", a.field));
                }
            }
        }
        let mut names = BTreeSet::new();
        for r in &self.rules {
            if r.name().is_empty() {
                return Err("a rule has an empty name".into());
            }
            if !names.insert(r.name()) {
                return Err(format!("rule name `{}` is repeated", r.name()));
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
                return Err(format!(
                    "rule `{}` has out-of-range parameters (threshold: a field, finite \
                     `above`, `hysteresis` >= 0; zscore: a field, 0 < alpha <= 1, \
                     0 < threshold, clear_below <= threshold; silence: after_ms > 0)",
                    r.name()
                ));
            }
        }
        let a = self.sketch_relative_accuracy;
        if !(a > 0.0 && a < 0.5) {
            return Err("sketch_relative_accuracy must be in (0, 0.5)".into());
        }
        if !(self.max_abs_value > 0.0 && self.max_abs_value <= 1e100) {
            return Err("max_abs_value must be in (0, 1e100]".into());
        }
        if self.source.format == ValueFormat::Protobuf {
            self.check_protobuf_fields()?;
        }
        let mut partitions_of = BTreeMap::new();
        for (kind, t) in self.outputs.all() {
            let what = format!("outputs.{kind}.topic");
            check_topic(&what, &t.topic)?;
            if t.topic.starts_with(INTERNAL_PREFIX) {
                return Err(format!(
                    "{what} `{}`: names starting with `{INTERNAL_PREFIX}` are internal",
                    t.topic
                ));
            }
            if t.partitions == 0 {
                return Err(format!("outputs.{kind}.partitions must be at least 1"));
            }
            if sources.contains(&t.topic) {
                return Err(format!(
                    "{what} `{}` is also a source topic: the pipeline would read its own output",
                    t.topic
                ));
            }
            // Two kinds may share a topic (each stream's `runnel.seq` covers both), but only
            // with one partition count.
            if let Some(p) = partitions_of.insert(t.topic.as_str(), t.partitions) {
                if p != t.partitions {
                    return Err(format!(
                        "output topic `{}` is declared with {p} and {} partitions",
                        t.topic, t.partitions
                    ));
                }
            }
        }
        Ok(())
    }

    /// With `format = "protobuf"`, every field named must exist in `runnel.v1.SensorReading`
    /// with the right kind, or every record would go to the DLQ.
    fn check_protobuf_fields(&self) -> Result<(), String> {
        use crate::proto::{field_kind, fields_of, FieldKind};
        let want = |what: &str, name: &str, kind: FieldKind| {
            if field_kind(name) == Some(kind) {
                return Ok(());
            }
            let (k, options) = match kind {
                FieldKind::Str => ("string", fields_of(kind)),
                FieldKind::Double => ("numeric", fields_of(kind)),
                FieldKind::Time => ("time", fields_of(kind)),
            };
            Err(format!(
                "{what} `{name}`: format \"protobuf\" reads runnel.v1.SensorReading, whose \
                 {k} fields are {}",
                options.join(", ")
            ))
        };
        want("source.key_field", &self.source.key_field, FieldKind::Str)?;
        want(
            "source.time_field",
            &self.source.time_field,
            FieldKind::Time,
        )?;
        for f in self.numeric_fields() {
            want("numeric field", &f, FieldKind::Double)?;
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

/// Checks a set of pipelines that run side by side: each one valid, names unique (a name is a
/// state directory and a journal topic), and no output topic written by two pipelines
/// (recovery finds a pipeline's last `runnel.seq` in its output topics' tails, which another
/// pipeline's records could push out of reach).
pub fn validate_pipelines(pipelines: &[PipelineConfig]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut writers: BTreeMap<&str, &str> = BTreeMap::new();
    for p in pipelines {
        p.validate()?;
        let err = |reason: String| ConfigError {
            pipeline: p.name.clone(),
            reason,
        };
        if !names.insert(p.name.as_str()) {
            return Err(err(
                "another pipeline has this name (names must be unique)".into()
            ));
        }
        let mut own = BTreeSet::new();
        for (kind, t) in p.outputs.all() {
            if !own.insert(t.topic.as_str()) {
                continue;
            }
            if let Some(other) = writers.insert(&t.topic, &p.name) {
                return Err(err(format!(
                    "outputs.{kind}.topic `{}` is also written by pipeline `{other}`: give \
                     each pipeline its own output topics",
                    t.topic
                )));
            }
        }
    }
    Ok(())
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

    /// Data-driven: a change to the default pipeline → the start of the error's reason.
    #[test]
    fn validate_rejects_bad_values() {
        type Mutation = Box<dyn Fn(&mut PipelineConfig)>;
        let bad: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.name.clear()), "name is empty"),
            (Box::new(|c| c.name = "../up".into()), "name must be"),
            (Box::new(|c| c.name = "a/b".into()), "name must be"),
            (Box::new(|c| c.name = ".hidden".into()), "name must be"),
            (Box::new(|c| c.name = "x".repeat(201)), "name must be"),
            (
                Box::new(|c| c.source.topics.clear()),
                "source.topics must name",
            ),
            (
                Box::new(|c| c.source.topics = vec![String::new()]),
                "source.topics entry is empty",
            ),
            (
                Box::new(|c| c.source.topics = vec!["a b".into()]),
                "source.topics entry `a b` is not a topic name",
            ),
            (
                Box::new(|c| c.source.topics = vec!["a".into(), "a".into()]),
                "source topic `a` is listed twice",
            ),
            (Box::new(|c| c.source.partitions = 0), "source.partitions"),
            (Box::new(|c| c.source.key_field.clear()), "source.key_field"),
            (
                Box::new(|c| c.source.time_field.clear()),
                "source.time_field",
            ),
            (Box::new(|c| c.source.max_key_len = 0), "source.max_key_len"),
            (
                Box::new(|c| c.watermark.max_out_of_orderness_ms = -1),
                "watermark.max_out_of_orderness_ms",
            ),
            (
                Box::new(|c| c.watermark.idle_timeout_ms = 0),
                "watermark.idle_timeout_ms",
            ),
            (
                Box::new(|c| c.window.size_ms = 0),
                "window.size_ms must be > 0, got 0",
            ),
            (
                Box::new(|c| c.window.slide_ms = Some(0)),
                "window.slide_ms must be > 0",
            ),
            (
                Box::new(|c| c.window.slide_ms = Some(c.window.size_ms + 1)),
                "window.slide_ms (60001) is larger than window.size_ms (60000)",
            ),
            (
                Box::new(|c| c.window.slide_ms = Some(1)),
                "window: size_ms / slide_ms = 60000",
            ),
            (
                Box::new(|c| c.window.allowed_lateness_ms = -1),
                "window.allowed_lateness_ms",
            ),
            (
                Box::new(|c| c.aggregations[0].functions.clear()),
                "aggregation of `temperature_c` lists no functions",
            ),
            (
                Box::new(|c| c.aggregations[1].functions.push(AggFn::Max)),
                "aggregation `vibration_g_max` is listed twice",
            ),
            (
                Box::new(|c| c.sketch_relative_accuracy = f64::NAN),
                "sketch_relative_accuracy",
            ),
            (Box::new(|c| c.max_abs_value = 0.0), "max_abs_value"),
            (
                Box::new(|c| c.outputs.dlq.topic.clear()),
                "outputs.dlq.topic is empty",
            ),
            (
                Box::new(|c| c.outputs.alerts.partitions = 0),
                "outputs.alerts.partitions",
            ),
            (
                Box::new(|c| c.outputs.late.topic = "__runnel_journal.x".into()),
                "outputs.late.topic `__runnel_journal.x`: names starting with `__runnel`",
            ),
            (
                Box::new(|c| c.outputs.aggregates.topic = "sensor_events".into()),
                "outputs.aggregates.topic `sensor_events` is also a source topic",
            ),
            (
                Box::new(|c| {
                    c.outputs.dlq.topic = c.outputs.late.topic.clone();
                    c.outputs.dlq.partitions = 2;
                }),
                "output topic `sensor_events_late` is declared with 1 and 2 partitions",
            ),
            (
                Box::new(|c| {
                    let r = c.rules[0].clone();
                    c.rules.push(r);
                }),
                "rule name `temperature_high` is repeated",
            ),
            (
                Box::new(|c| {
                    if let RuleConfig::Threshold(t) = &mut c.rules[0] {
                        t.above = f64::INFINITY;
                    }
                }),
                "rule `temperature_high` has out-of-range parameters",
            ),
            (
                Box::new(|c| {
                    c.source.format = ValueFormat::Protobuf;
                    c.source.time_field = "status".into();
                }),
                "source.time_field `status`: format \"protobuf\"",
            ),
        ];
        for (i, (f, want)) in bad.iter().enumerate() {
            let mut c = PipelineConfig::default();
            f(&mut c);
            match c.validate() {
                Ok(()) => panic!("case {i} ({want}) should be rejected"),
                Err(e) => assert!(e.reason.starts_with(want), "case {i}: {e}"),
            }
        }
        // Two kinds sharing one topic with one partition count is fine.
        let mut c = PipelineConfig::default();
        c.outputs.dlq.topic = c.outputs.late.topic.clone();
        c.validate().unwrap();
    }

    #[test]
    fn protobuf_format_names_only_fields_of_the_message() {
        let mut c = PipelineConfig::default();
        c.source.format = ValueFormat::Protobuf;
        // `ts` is the name of the event time in the stored JSON form: it is accepted...
        let err = c.validate().map_err(|e| e.to_string());
        assert_eq!(err, Ok(()));
        // ...and so is the protobuf's own name.
        c.source.time_field = "event_time".into();
        c.validate().unwrap();
        c.source.time_field = "device_id".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("source.time_field `device_id`")
                && e.contains("time fields are ts, event_time"),
            "{e}"
        );
        c.source.time_field = "ts".into();
        c.source.key_field = "temperature_c".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("string fields are device_id, status, site, line"),
            "{e}"
        );
        c.source.key_field = "site".into();
        c.validate().unwrap();
        c.aggregations[0].field = "humidity".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("numeric field `humidity`")
                && e.contains("numeric fields are temperature_c, vibration_g"),
            "{e}"
        );
    }

    /// A second pipeline over another topic: its own name and outputs.
    fn second() -> PipelineConfig {
        let mut c = PipelineConfig {
            name: "lines".into(),
            ..PipelineConfig::default()
        };
        c.source.topics = vec!["line_events".into()];
        c.outputs.aggregates.topic = "line_aggregates".into();
        c.outputs.alerts.topic = "line_alerts".into();
        c.outputs.late.topic = "line_events_late".into();
        c.outputs.dlq.topic = "line_events_dlq".into();
        c
    }

    #[test]
    fn pipelines_side_by_side_need_their_own_names_and_outputs() {
        validate_pipelines(&[PipelineConfig::default(), second()]).unwrap();
        validate_pipelines(&[]).unwrap();

        let mut twin = second();
        twin.source.topics = vec!["other".into()];
        twin.outputs.aggregates.topic = "other_aggregates".into();
        let e = validate_pipelines(&[second(), twin]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pipeline config `lines`: another pipeline has this name (names must be \
             unique)"
        );

        let mut shares = second();
        shares.outputs.alerts.topic = "sensor_alerts".into();
        let e = validate_pipelines(&[PipelineConfig::default(), shares]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pipeline config `lines`: outputs.alerts.topic `sensor_alerts` is also \
             written by pipeline `sensors`: give each pipeline its own output topics"
        );

        // Chaining is allowed: one pipeline may read another's output.
        let mut chained = second();
        chained.source.topics = vec!["sensor_aggregates".into()];
        validate_pipelines(&[PipelineConfig::default(), chained]).unwrap();

        let mut invalid = second();
        invalid.window.size_ms = 0;
        let e = validate_pipelines(&[PipelineConfig::default(), invalid]).unwrap_err();
        assert_eq!(e.pipeline, "lines");
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        let cases = [
            (r#"{"nmae":"x"}"#, "unknown field `nmae`"),
            (r#"{"source":{"topic":["a"]}}"#, "unknown field `topic`"),
            (r#"{"source":{"format":"avro"}}"#, "unknown variant `avro`"),
            (r#"{"window":{"size":1}}"#, "unknown field `size`"),
            (r#"{"watermark":{"idle_ms":1}}"#, "unknown field `idle_ms`"),
            (
                r#"{"aggregations":[{"field":"x","functions":["median"]}]}"#,
                "unknown aggregation function `median`",
            ),
            (
                r#"{"aggregations":[{"field":"x","functions":["max"],"fn":1}]}"#,
                "unknown field `fn`",
            ),
            (
                r#"{"rules":[{"kind":"threshold","name":"r","field":"x","above":1,"below":0}]}"#,
                "unknown field `below`",
            ),
            (
                r#"{"rules":[{"kind":"spike","name":"r"}]}"#,
                "unknown variant `spike`",
            ),
            (
                r#"{"rules":[{"kind":"threshold","name":"r","field":"x"}]}"#,
                "missing field `above`",
            ),
            (
                r#"{"outputs":{"alert":{"topic":"a"}}}"#,
                "unknown field `alert`",
            ),
            (
                r#"{"outputs":{"alerts":{"topic":"a","partition":1}}}"#,
                "unknown field `partition`",
            ),
        ];
        for (input, want) in cases {
            let e = serde_json::from_str::<PipelineConfig>(input).unwrap_err();
            assert!(e.to_string().contains(want), "{input}: {e}");
        }
        // Rule parameters with defaults may be left out.
        let c: PipelineConfig = serde_json::from_str(
            r#"{"rules":[{"kind":"threshold","name":"t","field":"x","above":1},
                         {"kind":"zscore","name":"z","field":"x"},
                         {"kind":"silence","name":"s","after_ms":5}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.rules,
            [
                RuleConfig::Threshold(ThresholdRule {
                    name: "t".into(),
                    field: "x".into(),
                    above: 1.0,
                    hysteresis: 0.0,
                }),
                RuleConfig::ZScore(ZScoreRule {
                    name: "z".into(),
                    field: "x".into(),
                    alpha: 0.1,
                    threshold: 4.0,
                    clear_below: 2.0,
                    warmup: 20,
                }),
                RuleConfig::Silence(SilenceRule {
                    name: "s".into(),
                    after_ms: 5,
                    processing_time_after_ms: None,
                }),
            ]
        );
        c.validate().unwrap();
    }
}
