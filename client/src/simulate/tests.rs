//! Seeded determinism and statistical properties of the generators, over many events.

use std::collections::HashMap;

use super::*;
use crate::sensor::{self, SensorJson};

/// A stand-in for the broker's encoder (the broker's own tests use the real one).
fn encode(r: &v1::SensorReading) -> Result<Vec<u8>, serde_json::Error> {
    let ts = r
        .event_time
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
    serde_json::to_vec(&SensorJson {
        device_id: r.device_id.clone(),
        ts: time::format_ms(ts),
        temperature_c: r.temperature_c,
        vibration_g: r.vibration_g,
        status: r.status.clone(),
        site: r.site.clone(),
        line: r.line.clone(),
    })
}

fn sim(seed: u64) -> Simulator {
    Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .unwrap()
}

fn bytes(events: &[Event]) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    events
        .iter()
        .map(|e| (e.key.clone(), e.value(encode).unwrap(), e.event_time_ms))
        .collect()
}

#[test]
fn same_seed_same_events_different_seed_different_events() {
    let a: Vec<Event> = sim(42).take(20_000).collect();
    let b: Vec<Event> = sim(42).take(20_000).collect();
    let c: Vec<Event> = sim(43).take(20_000).collect();
    assert_eq!(a, b);
    assert_eq!(bytes(&a), bytes(&b));
    assert_ne!(bytes(&a), bytes(&c));
    // Draining in chunks (as a paced driver does) changes nothing.
    let mut s = sim(42);
    let mut chunked = Vec::new();
    while chunked.len() < 20_000 {
        let until = s.next_arrival_ms() + 7;
        while s.next_arrival_ms() <= until && chunked.len() < 20_000 {
            chunked.push(s.next_event());
        }
    }
    assert_eq!(a, chunked);
}

#[test]
fn invalid_settings_are_refused() {
    for c in [
        SimConfig {
            anomaly_rate: 1.5,
            ..SimConfig::default()
        },
        SimConfig {
            late_rate: 0.6,
            malformed_rate: 0.6,
            ..SimConfig::default()
        },
        SimConfig {
            rate_per_sec: 0,
            ..SimConfig::default()
        },
        SimConfig {
            devices: 0,
            ..SimConfig::default()
        },
        SimConfig {
            mix: SourceMix {
                sensors: 0.0,
                clicks: 0.0,
                posts: 0.0,
            },
            ..SimConfig::default()
        },
        SimConfig {
            start_ms: 0,
            ..SimConfig::default()
        },
        SimConfig {
            temperature_alert_c: f64::NAN,
            ..SimConfig::default()
        },
    ] {
        assert!(Simulator::new(c).is_err());
    }
}

#[test]
fn arrivals_follow_the_rate() {
    let mut s = Simulator::new(SimConfig {
        rate_per_sec: 250,
        ..SimConfig::default()
    })
    .unwrap();
    let start = s.config().start_ms;
    let events: Vec<Event> = s.by_ref().take(1001).collect();
    assert_eq!(events[0].arrival_ms, start);
    assert_eq!(events[1000].arrival_ms, start + 4000);
    assert!(events
        .windows(2)
        .all(|w| w[0].arrival_ms <= w[1].arrival_ms));
}

fn within(actual: usize, n: usize, rate: f64, what: &str) {
    let expected = rate * f64::from(u32::try_from(n).unwrap());
    let got = f64::from(u32::try_from(actual).unwrap());
    // Five standard deviations of a binomial, plus a little slack for tiny rates.
    let sd = (expected * (1.0 - rate)).sqrt();
    assert!(
        (got - expected).abs() <= 5.0 * sd + 3.0,
        "{what}: {actual} of {n}, expected about {expected:.0}"
    );
}

#[test]
fn rates_are_roughly_honoured() {
    let config = SimConfig {
        seed: 9,
        anomaly_rate: 0.05,
        out_of_order_rate: 0.04,
        late_rate: 0.02,
        malformed_rate: 0.01,
        schema_violation_rate: 0.015,
        ..SimConfig::default()
    };
    let n = 200_000;
    let events: Vec<Event> = Simulator::new(config.clone()).unwrap().take(n).collect();
    let mut by_source: HashMap<Source, Vec<&Event>> = HashMap::new();
    for e in &events {
        by_source.entry(e.source).or_default().push(e);
    }
    within(by_source[&Source::Sensors].len(), n, 0.8, "sensor share");
    within(by_source[&Source::Clicks].len(), n, 0.15, "click share");
    within(by_source[&Source::Posts].len(), n, 0.05, "post share");
    let sensors = &by_source[&Source::Sensors];
    let count = |k: Kind| sensors.iter().filter(|e| e.kind == k).count();
    within(
        count(Kind::Spike),
        sensors.len(),
        config.anomaly_rate,
        "spikes",
    );
    within(
        count(Kind::OutOfOrder),
        sensors.len(),
        config.out_of_order_rate,
        "out of order",
    );
    within(count(Kind::Late), sensors.len(), config.late_rate, "late");
    within(
        count(Kind::Malformed),
        sensors.len(),
        config.malformed_rate,
        "malformed",
    );
    within(
        count(Kind::SchemaViolation),
        sensors.len(),
        config.schema_violation_rate,
        "schema",
    );
    let clicks = &by_source[&Source::Clicks];
    within(
        clicks.iter().filter(|e| e.kind == Kind::Late).count(),
        clicks.len(),
        config.late_rate,
        "late clicks",
    );
    assert!(clicks
        .iter()
        .all(|e| matches!(e.kind, Kind::Normal | Kind::OutOfOrder | Kind::Late)));
}

#[test]
fn late_events_are_older_than_the_watermark_and_out_of_order_ones_are_not() {
    let config = SimConfig {
        seed: 5,
        late_rate: 0.05,
        out_of_order_rate: 0.1,
        ..SimConfig::default()
    };
    let bound = config.watermark_bound_ms;
    let mut max_seen = i64::MIN;
    let (mut late, mut ooo) = (0, 0);
    for e in Simulator::new(config).unwrap().take(100_000) {
        // A watermark with bounded out-of-orderness trails the newest event time by `bound`.
        let watermark = max_seen.saturating_sub(bound);
        match e.kind {
            Kind::Late => {
                late += 1;
                assert!(e.event_time_ms < e.arrival_ms - bound, "{e:?}");
                if max_seen > i64::MIN {
                    assert!(
                        e.event_time_ms < watermark,
                        "late event not behind the watermark: {e:?}"
                    );
                }
            }
            Kind::OutOfOrder => {
                ooo += 1;
                assert!(e.event_time_ms < e.arrival_ms && e.event_time_ms > e.arrival_ms - bound);
            }
            _ => assert_eq!(e.event_time_ms, e.arrival_ms),
        }
        max_seen = max_seen.max(e.event_time_ms);
    }
    assert!(late > 0 && ooo > 0);
}

#[test]
fn malformed_records_do_not_parse_and_violations_are_json_but_not_readings() {
    let config = SimConfig {
        seed: 11,
        malformed_rate: 0.05,
        schema_violation_rate: 0.05,
        mix: SourceMix {
            sensors: 1.0,
            clicks: 0.0,
            posts: 0.0,
        },
        ..SimConfig::default()
    };
    let n = 50_000;
    let (mut malformed, mut violations, mut good) = (0usize, 0usize, 0usize);
    for e in Simulator::new(config).unwrap().take(n) {
        let v = e.value(encode).unwrap();
        let json = serde_json::from_slice::<serde_json::Value>(&v);
        match e.kind {
            Kind::Malformed => {
                malformed += 1;
                assert!(json.is_err(), "{}", String::from_utf8_lossy(&v));
            }
            Kind::SchemaViolation => {
                violations += 1;
                assert!(
                    json.is_ok() && sensor::parse(&v).is_err(),
                    "{}",
                    String::from_utf8_lossy(&v)
                );
            }
            _ => {
                good += 1;
                let r = sensor::parse(&v).unwrap();
                assert_eq!(r.device_id.as_bytes(), e.key.as_slice());
                assert_eq!(time::parse_ms(&r.ts), Some(e.event_time_ms));
            }
        }
    }
    within(malformed, n, 0.05, "malformed");
    within(violations, n, 0.05, "violations");
    assert_eq!(malformed + violations + good, n);
}

#[test]
fn spikes_cross_a_threshold_and_normal_readings_do_not() {
    let config = SimConfig {
        seed: 3,
        anomaly_rate: 0.1,
        ..SimConfig::default()
    };
    let (t, v) = (config.temperature_alert_c, config.vibration_alert_g);
    let mut per_device: HashMap<String, Vec<f64>> = HashMap::new();
    for e in Simulator::new(config).unwrap().take(50_000) {
        let Payload::Sensor { reading: r, .. } = &e.payload else {
            continue;
        };
        if e.kind == Kind::Spike {
            assert!(r.temperature_c > t || r.vibration_g > v, "{r:?}");
            assert_ne!(r.status, "OK");
        } else {
            assert!(r.temperature_c <= t && r.vibration_g <= v, "{r:?}");
            assert_eq!(r.status, "OK");
            per_device
                .entry(r.device_id.clone())
                .or_default()
                .push(r.temperature_c);
        }
    }
    // Devices have their own baselines: the per-device means are spread out.
    let means: Vec<f64> = per_device
        .values()
        .map(|xs| xs.iter().sum::<f64>() / f64::from(u32::try_from(xs.len()).unwrap()))
        .collect();
    let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(hi - lo > 5.0, "baselines {lo}..{hi}");
}

#[test]
fn silent_devices_send_nothing_while_silent() {
    let config = SimConfig {
        seed: 8,
        silence_rate: 0.01,
        devices: 20,
        mix: SourceMix {
            sensors: 1.0,
            clicks: 0.0,
            posts: 0.0,
        },
        ..SimConfig::default()
    };
    let mut silences: Vec<Silence> = Vec::new();
    for e in Simulator::new(config).unwrap().take(50_000) {
        let device = String::from_utf8(e.key.clone()).unwrap();
        for s in &silences {
            assert!(
                !(s.device_id == device && (s.from_ms..s.until_ms).contains(&e.arrival_ms)),
                "{device} sent at {} while silent {s:?}",
                e.arrival_ms
            );
        }
        silences.extend(e.silenced);
    }
    assert!(!silences.is_empty());
}

#[test]
fn clicks_and_posts_are_json_with_their_keys() {
    let config = SimConfig {
        seed: 1,
        mix: SourceMix {
            sensors: 0.0,
            clicks: 1.0,
            posts: 1.0,
        },
        ..SimConfig::default()
    };
    let mut tags: HashMap<String, usize> = HashMap::new();
    let mut signups = 0;
    for e in Simulator::new(config).unwrap().take(10_000) {
        let Payload::Json(v) = &e.payload else {
            panic!("{e:?}")
        };
        let j: serde_json::Value = serde_json::from_slice(v).unwrap();
        assert_eq!(
            time::parse_ms(j["ts"].as_str().unwrap()),
            Some(e.event_time_ms)
        );
        match e.source {
            Source::Clicks => {
                assert_eq!(j["user_id"].as_str().unwrap().as_bytes(), e.key.as_slice());
                if j["type"] == "user_created" {
                    signups += 1;
                    assert!(j["user"]["email"].as_str().unwrap().contains('@'));
                }
            }
            Source::Posts => {
                assert_eq!(j["author"].as_str().unwrap().as_bytes(), e.key.as_slice());
                for t in j["hashtags"].as_array().unwrap() {
                    let t = t.as_str().unwrap();
                    assert!(j["text"].as_str().unwrap().contains(&format!("#{t}")));
                    *tags.entry(t.to_owned()).or_default() += 1;
                }
            }
            Source::Sensors => unreachable!(),
        }
    }
    assert!(signups > 0);
    // Popular tags are far more common than rare ones.
    assert!(tags["iot"] > 4 * tags.get("outage").copied().unwrap_or(0));
}
