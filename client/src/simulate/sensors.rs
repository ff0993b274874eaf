//! Factory sensor devices: each has its own baseline temperature and vibration, noise, and a
//! slow sinusoidal drift; a reading is either normal (kept below the alert thresholds) or a
//! spike over them. Devices can go silent for a while.

use runnel_proto::v1;

use super::rng::Rng;
use super::{ms_f64, SimConfig};

const SITES: [&str; 3] = ["fab1", "fab2", "fab3"];

/// One simulated device.
#[derive(Debug, Clone, PartialEq)]
struct Device {
    id: String,
    site: &'static str,
    line: String,
    base_temp_c: f64,
    base_vibration_g: f64,
    drift_amplitude_c: f64,
    drift_period_ms: f64,
    drift_phase: f64,
    /// Silent (emits nothing) before this virtual time.
    silent_until_ms: i64,
}

/// Every device of the simulation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fleet {
    devices: Vec<Device>,
    start_ms: i64,
}

fn round_to(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// A protobuf timestamp for ms since the epoch (`ms` >= 0).
pub(crate) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

impl Fleet {
    pub(crate) fn new(rng: &mut Rng, config: &SimConfig) -> Self {
        let devices = (0..config.devices)
            .map(|i| Device {
                id: format!("MTR-{i:05}"),
                site: SITES
                    .get(usize::try_from(i % 3).unwrap_or(0))
                    .copied()
                    .unwrap_or("fab1"),
                line: format!("L{:02}", 1 + (i / 3) % 8),
                base_temp_c: rng.range(55.0, 70.0),
                base_vibration_g: rng.range(0.04, 0.2),
                drift_amplitude_c: rng.range(1.0, 6.0),
                drift_period_ms: rng.range(1.0, 6.0) * 3_600_000.0,
                drift_phase: rng.range(0.0, std::f64::consts::TAU),
                silent_until_ms: i64::MIN,
            })
            .collect();
        Self {
            devices,
            start_ms: config.start_ms,
        }
    }

    pub(crate) fn silent_count(&self, now_ms: i64) -> usize {
        self.devices
            .iter()
            .filter(|d| d.silent_until_ms > now_ms)
            .count()
    }

    /// A device that is not silent at `now_ms`, chosen uniformly then probing forward.
    pub(crate) fn pick(&self, rng: &mut Rng, now_ms: i64) -> usize {
        let n = self.devices.len();
        let first = rng.index(n);
        (0..n)
            .map(|k| (first + k) % n.max(1))
            .find(|i| {
                self.devices
                    .get(*i)
                    .is_some_and(|d| d.silent_until_ms <= now_ms)
            })
            .unwrap_or(first)
    }

    /// Silence one more device (at most half of them at once) until `until_ms`; returns its id.
    pub(crate) fn silence(&mut self, rng: &mut Rng, now_ms: i64, until_ms: i64) -> Option<String> {
        if (self.silent_count(now_ms) + 1) * 2 > self.devices.len() {
            return None;
        }
        let i = self.pick(rng, now_ms);
        let d = self.devices.get_mut(i)?;
        d.silent_until_ms = until_ms;
        Some(d.id.clone())
    }

    pub(crate) fn device_id(&self, i: usize) -> &str {
        self.devices.get(i).map_or("", |d| d.id.as_str())
    }

    /// A reading of device `i` taken at `event_ms`: normal (below both thresholds) or a spike
    /// (above at least one).
    pub(crate) fn reading(
        &self,
        rng: &mut Rng,
        i: usize,
        event_ms: i64,
        spike: bool,
        config: &SimConfig,
    ) -> v1::SensorReading {
        let Some(d) = self.devices.get(i) else {
            return v1::SensorReading::default();
        };
        let elapsed = ms_f64(event_ms.saturating_sub(self.start_ms));
        let wave = (std::f64::consts::TAU * elapsed / d.drift_period_ms + d.drift_phase).sin();
        let temp_alert = config.temperature_alert_c;
        let vib_alert = config.vibration_alert_g;
        let mut temp = (d.base_temp_c + d.drift_amplitude_c * wave + rng.normal(0.0, 0.4))
            .clamp(d.base_temp_c - 20.0, temp_alert - 0.5);
        let mut vib = (d.base_vibration_g * (1.0 + 0.2 * wave) + rng.normal(0.0, 0.01))
            .clamp(0.0, (vib_alert - 0.05).max(0.0));
        let mut status = "OK";
        if spike {
            let (hot, shaking) = match rng.below(3) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            if hot {
                temp = temp_alert + rng.range(0.5, 25.0);
            }
            if shaking {
                vib = vib_alert + rng.range(0.02, 1.5);
            }
            status = if temp > temp_alert + 10.0 || vib > vib_alert + 0.5 {
                "FAULT"
            } else {
                "WARN"
            };
        }
        v1::SensorReading {
            device_id: d.id.clone(),
            event_time: Some(timestamp(event_ms)),
            temperature_c: round_to(temp, 2),
            vibration_g: round_to(vib, 3),
            status: status.to_owned(),
            site: d.site.to_owned(),
            line: d.line.clone(),
        }
    }
}
