//! Deterministic, sans-io event generators for `runnel simulate`: factory sensors,
//! clickstream / user events and social posts, with the anomalies, out-of-order and late
//! events, silent devices and garbage that real pipelines must survive.
//!
//! A [`Simulator`] is a pure function of its [`SimConfig`] (seed included): no clock, no
//! sockets, no global randomness. Time is virtual: event `n` arrives at
//! `start_ms + n * 1000 / rate_per_sec`, whatever the wall clock does, so the same seed gives
//! the same event sequence however fast a sink drains it. The `runnel simulate` command
//! paces these arrivals against the wall clock and ships the events to a broker.
//!
//! Sensor readings stay typed ([`v1::SensorReading`]) until the edge: the caller encodes them
//! with the broker's own encoder (the one the gRPC `PublishSensorReadings` uses), then
//! [`Event::value`] applies the event's [`Defect`], if any.

mod clicks;
pub mod defects;
mod posts;
pub mod rng;
mod sensors;
pub mod time;

use runnel_proto::v1;

pub use defects::{Defect, Field};
use rng::Rng;

/// Where events come from; each has its own topic in `runnel simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Sensors,
    Clicks,
    Posts,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Sensors, Source::Clicks, Source::Posts];

    pub fn name(self) -> &'static str {
        match self {
            Source::Sensors => "sensors",
            Source::Clicks => "clicks",
            Source::Posts => "posts",
        }
    }
}

/// What is special about an event (ground truth for tests and summaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Normal,
    /// A sensor reading over an alert threshold.
    Spike,
    /// Event time before events already sent, but within the watermark bound.
    OutOfOrder,
    /// Event time older than the watermark bound plus `late_min_ms`: beyond any sane watermark.
    Late,
    /// Bytes that are not valid JSON.
    Malformed,
    /// Valid JSON that breaks the reading's schema.
    SchemaViolation,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Normal,
        Kind::Spike,
        Kind::OutOfOrder,
        Kind::Late,
        Kind::Malformed,
        Kind::SchemaViolation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Spike => "spike",
            Kind::OutOfOrder => "out-of-order",
            Kind::Late => "late",
            Kind::Malformed => "malformed",
            Kind::SchemaViolation => "schema-violation",
        }
    }
}

/// Relative weights of the sources (0 turns one off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceMix {
    pub sensors: f64,
    pub clicks: f64,
    pub posts: f64,
}

impl Default for SourceMix {
    fn default() -> Self {
        Self {
            sensors: 0.8,
            clicks: 0.15,
            posts: 0.05,
        }
    }
}

/// Everything a simulation depends on. Same config (seed included) → same events.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Virtual time of the first event, ms since the Unix epoch.
    pub start_ms: i64,
    /// Events per second of virtual time (spacing of arrivals).
    pub rate_per_sec: u32,
    pub mix: SourceMix,
    pub devices: u32,
    pub users: u32,
    pub authors: u32,
    /// Fraction of sensor readings over an alert threshold.
    pub anomaly_rate: f64,
    /// Fraction of events whose time is earlier than events already sent, within the bound.
    pub out_of_order_rate: f64,
    /// Fraction of events later than any sane watermark.
    pub late_rate: f64,
    /// Fraction of sensor records that are not valid JSON.
    pub malformed_rate: f64,
    /// Fraction of sensor records that are JSON but break the schema.
    pub schema_violation_rate: f64,
    /// Chance per sensor event that one more device goes silent.
    pub silence_rate: f64,
    pub silence_min_ms: i64,
    pub silence_max_ms: i64,
    /// The bounded out-of-orderness a pipeline's watermark allows (USE-CASES: 10 s):
    /// out-of-order events stay within it, late events are beyond it.
    pub watermark_bound_ms: i64,
    /// How far beyond the bound a late event is, at least.
    pub late_min_ms: i64,
    pub temperature_alert_c: f64,
    pub vibration_alert_g: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            start_ms: 1_755_434_096_789,
            rate_per_sec: 1000,
            mix: SourceMix::default(),
            devices: 100,
            users: 1000,
            authors: 500,
            anomaly_rate: 0.01,
            out_of_order_rate: 0.02,
            late_rate: 0.005,
            malformed_rate: 0.002,
            schema_violation_rate: 0.002,
            silence_rate: 0.0005,
            silence_min_ms: 30_000,
            silence_max_ms: 300_000,
            watermark_bound_ms: 10_000,
            late_min_ms: 60_000,
            temperature_alert_c: 85.0,
            vibration_alert_g: 0.5,
        }
    }
}

/// A simulator setting that makes no sense.
#[derive(Debug, thiserror::Error)]
#[error("invalid simulator setting {field}: {reason}")]
pub struct SimError {
    pub field: &'static str,
    pub reason: String,
}

/// Largest span of late events below the bound (they are spread over half an hour).
const LATE_SPREAD_MS: i64 = 30 * 60 * 1000;

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field, reason: &str| {
            Err(SimError {
                field,
                reason: reason.to_owned(),
            })
        };
        let rates = [
            ("anomaly_rate", self.anomaly_rate),
            ("out_of_order_rate", self.out_of_order_rate),
            ("late_rate", self.late_rate),
            ("malformed_rate", self.malformed_rate),
            ("schema_violation_rate", self.schema_violation_rate),
            ("silence_rate", self.silence_rate),
        ];
        for (field, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return bad(field, "must be between 0 and 1");
            }
        }
        let special = self.anomaly_rate
            + self.out_of_order_rate
            + self.late_rate
            + self.malformed_rate
            + self.schema_violation_rate;
        if special > 1.0 {
            return bad("rates", "anomaly + out-of-order + late + malformed + schema-violation rates must not exceed 1");
        }
        let mix = [self.mix.sensors, self.mix.clicks, self.mix.posts];
        if mix.iter().any(|w| !w.is_finite() || *w < 0.0) || mix.iter().sum::<f64>() <= 0.0 {
            return bad(
                "mix",
                "weights must be >= 0 and at least one source enabled",
            );
        }
        if self.rate_per_sec == 0 {
            return bad("rate_per_sec", "must be at least 1");
        }
        if self.devices == 0 && self.mix.sensors > 0.0 {
            return bad("devices", "must be at least 1");
        }
        if self.watermark_bound_ms < 2 || self.late_min_ms < 0 {
            return bad(
                "watermark_bound_ms",
                "must be at least 2 ms (late_min_ms >= 0)",
            );
        }
        if self.silence_min_ms < 0 || self.silence_max_ms < self.silence_min_ms {
            return bad("silence_*_ms", "need 0 <= silence_min_ms <= silence_max_ms");
        }
        let earliest = self
            .watermark_bound_ms
            .saturating_add(self.late_min_ms)
            .saturating_add(LATE_SPREAD_MS);
        if self.start_ms < earliest || self.start_ms > time::MAX_MS / 2 {
            return bad(
                "start_ms",
                "must leave room for late events after 1970 and stay far below year 9999",
            );
        }
        for (field, v) in [
            ("temperature_alert_c", self.temperature_alert_c),
            ("vibration_alert_g", self.vibration_alert_g),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return bad(field, "must be a positive number");
            }
        }
        Ok(())
    }
}

/// A device that stopped sending, announced with the event at which it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub device_id: String,
    pub from_ms: i64,
    pub until_ms: i64,
}

/// What an event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A reading, encoded at the edge; `defect` damages the encoded bytes.
    Sensor {
        reading: v1::SensorReading,
        defect: Option<Defect>,
    },
    /// A ready JSON value (clickstream, posts).
    Json(Vec<u8>),
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// 0, 1, 2, ... in generation order.
    pub seq: u64,
    /// Virtual time at which the event is sent (non-decreasing).
    pub arrival_ms: i64,
    /// Event time, also the record timestamp.
    pub event_time_ms: i64,
    pub source: Source,
    pub kind: Kind,
    /// Record key: device id, user id or author.
    pub key: Vec<u8>,
    pub payload: Payload,
    /// Set when, at this event, a device went silent.
    pub silenced: Option<Silence>,
}

impl Event {
    /// The record value: JSON as is, or the reading encoded by `encode` (the broker's sensor
    /// encoder) with the event's defect applied.
    pub fn value<E>(
        &self,
        encode: impl FnOnce(&v1::SensorReading) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        match &self.payload {
            Payload::Json(v) => Ok(v.clone()),
            Payload::Sensor { reading, defect } => {
                let json = encode(reading)?;
                Ok(match defect {
                    Some(d) => defects::apply(*d, &json),
                    None => json,
                })
            }
        }
    }
}

/// An `i64` as `f64` without `as` (exact below 2^53, which every time here is).
pub(crate) fn ms_f64(ms: i64) -> f64 {
    let hi = i32::try_from(ms >> 32).unwrap_or(if ms < 0 { i32::MIN } else { i32::MAX });
    let lo = u32::try_from(ms & 0xffff_ffff).unwrap_or(0);
    f64::from(hi) * 4_294_967_296.0 + f64::from(lo)
}

/// Generates events; see the module docs. Also an endless [`Iterator`].
#[derive(Debug, Clone, PartialEq)]
pub struct Simulator {
    config: SimConfig,
    rng: Rng,
    seq: u64,
    fleet: sensors::Fleet,
    users: clicks::Users,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let mut rng = Rng::new(config.seed);
        let fleet = sensors::Fleet::new(&mut rng, &config);
        let users = clicks::Users::new(config.users);
        Ok(Self {
            config,
            rng,
            seq: 0,
            fleet,
            users,
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual arrival time of event `seq`.
    fn arrival(&self, seq: u64) -> i64 {
        let rate = u128::from(self.config.rate_per_sec.max(1));
        let offset = u128::from(seq) * 1000 / rate;
        self.config
            .start_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
            .min(time::MAX_MS)
    }

    /// When the next event arrives (virtual ms), so a driver can pace it.
    pub fn next_arrival_ms(&self) -> i64 {
        self.arrival(self.seq)
    }

    /// Devices silent at virtual time `now_ms`.
    pub fn silent_devices(&self, now_ms: i64) -> usize {
        self.fleet.silent_count(now_ms)
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        let seq = self.seq;
        self.seq += 1;
        let arrival = self.arrival(seq);
        let c = &self.config;
        let mix = [c.mix.sensors, c.mix.clicks, c.mix.posts];
        let source = Source::ALL
            .get(self.rng.weighted(&mix))
            .copied()
            .unwrap_or(Source::Sensors);
        // One draw picks the kind; the kinds are exclusive.
        let u = self.rng.unit();
        let kinds: &[(Kind, f64)] = if source == Source::Sensors {
            &[
                (Kind::Spike, c.anomaly_rate),
                (Kind::OutOfOrder, c.out_of_order_rate),
                (Kind::Late, c.late_rate),
                (Kind::Malformed, c.malformed_rate),
                (Kind::SchemaViolation, c.schema_violation_rate),
            ]
        } else {
            &[
                (Kind::OutOfOrder, c.out_of_order_rate),
                (Kind::Late, c.late_rate),
            ]
        };
        let mut acc = 0.0;
        let kind = kinds
            .iter()
            .find(|(_, r)| {
                acc += r;
                u < acc
            })
            .map_or(Kind::Normal, |(k, _)| *k);
        let bound = c.watermark_bound_ms;
        let event_time = match kind {
            Kind::OutOfOrder => arrival - self.rng.between((bound / 10).max(1), bound - 1),
            Kind::Late => arrival - bound - c.late_min_ms - self.rng.between(1, LATE_SPREAD_MS),
            _ => arrival,
        };
        let ts = time::format_ms(event_time);
        let mut silenced = None;
        let (key, payload) = match source {
            Source::Sensors => {
                if self.rng.chance(c.silence_rate) {
                    let until = arrival
                        .saturating_add(self.rng.between(c.silence_min_ms, c.silence_max_ms));
                    silenced = self
                        .fleet
                        .silence(&mut self.rng, arrival, until)
                        .map(|device_id| Silence {
                            device_id,
                            from_ms: arrival,
                            until_ms: until,
                        });
                }
                let d = self.fleet.pick(&mut self.rng, arrival);
                let config = self.config.clone();
                let reading =
                    self.fleet
                        .reading(&mut self.rng, d, event_time, kind == Kind::Spike, &config);
                let defect = match kind {
                    Kind::Malformed => Some(self.malformed()),
                    Kind::SchemaViolation => Some(self.violation()),
                    _ => None,
                };
                (
                    self.fleet.device_id(d).as_bytes().to_vec(),
                    Payload::Sensor { reading, defect },
                )
            }
            Source::Clicks => {
                let (k, v) = self.users.event(&mut self.rng, seq, &ts);
                (k, Payload::Json(v))
            }
            Source::Posts => {
                let (k, v) = posts::post(&mut self.rng, seq, self.config.authors, &ts);
                (k, Payload::Json(v))
            }
        };
        Event {
            seq,
            arrival_ms: arrival,
            event_time_ms: event_time,
            source,
            kind,
            key,
            payload,
            silenced,
        }
    }

    fn malformed(&mut self) -> Defect {
        match self.rng.below(4) {
            0 => Defect::Truncated {
                keep_per_mille: u16::try_from(self.rng.between(50, 950)).unwrap_or(500),
            },
            1 => Defect::NanLiteral,
            2 => Defect::NotJson,
            _ => Defect::InvalidUtf8,
        }
    }

    fn violation(&mut self) -> Defect {
        match self.rng.below(4) {
            0 => {
                let fields = [
                    Field::DeviceId,
                    Field::Ts,
                    Field::TemperatureC,
                    Field::VibrationG,
                ];
                Defect::MissingField(self.rng.pick(&fields).copied().unwrap_or(Field::Ts))
            }
            1 => Defect::WrongType,
            2 => Defect::NumericTimestamp,
            _ => Defect::NullField,
        }
    }
}

impl Iterator for Simulator {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        Some(self.next_event())
    }
}

#[cfg(test)]
mod tests;
