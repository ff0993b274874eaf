//! Golden test: a seeded sensor stream (out-of-order, late, very late, silent device,
//! malformed records) through the pipeline, against a deliberately simple reference that
//! recomputes the expected windows, late records, DLQ records and alerts by brute force.

// The reference indexes by position on purpose: it is written to be obviously right, not fast.
#![allow(clippy::needless_range_loop)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{generate, test_config, Arrival};
use runnel_processor::config::RuleConfig;
use runnel_processor::rules::alert_id;
use runnel_processor::time::{parse_rfc3339, Millis};
use runnel_processor::{OutputRecord, Pipeline, Step};
use serde_json::Value;

#[derive(Debug, Clone)]
struct Reading {
    partition: u32,
    offset: i64,
    device: String,
    ts: Millis,
    temp: f64,
    vib: f64,
}

/// (device, window start, revision) → (count, avg, min, max, max vibration, temperatures).
type Windows = BTreeMap<(String, Millis, u32), (u64, f64, f64, f64, f64, Vec<f64>)>;

struct Expected {
    windows: Windows,
    late: BTreeSet<(u32, i64)>,
    dlq: BTreeSet<(u32, i64, String)>,
    /// (id, rule, device, event time, value)
    alerts: BTreeSet<(String, String, String, Millis, String)>,
}

fn valid_readings(arrivals: &[Arrival]) -> Vec<Reading> {
    let mut out = Vec::new();
    for a in arrivals {
        if a.malformed.is_some() {
            continue;
        }
        let v: Value = serde_json::from_slice(a.record.value.as_ref().unwrap()).unwrap();
        out.push(Reading {
            partition: a.record.partition,
            offset: a.record.offset,
            device: v["device_id"].as_str().unwrap().to_owned(),
            ts: parse_rfc3339(v["ts"].as_str().unwrap()).unwrap(),
            temp: v["temperature_c"].as_f64().unwrap(),
            vib: v["vibration_g"].as_f64().unwrap(),
        });
    }
    out
}

/// The reference: brute force, one concern at a time, straight from the definitions.
fn reference(arrivals: &[Arrival]) -> Expected {
    let cfg = test_config();
    let (size, lateness, bound) = (
        cfg.window.size_ms,
        cfg.window.allowed_lateness_ms,
        cfg.watermark.max_out_of_orderness_ms,
    );
    let readings = valid_readings(arrivals);

    // Watermark after reading i: max over time of min over the 3 partitions of (max ts - bound).
    let mut wm_after: Vec<Option<Millis>> = Vec::new();
    for i in 0..readings.len() {
        let candidate = (0..3u32)
            .map(|p| {
                readings[..=i]
                    .iter()
                    .filter(|r| r.partition == p)
                    .map(|r| r.ts)
                    .max()
                    .map(|m| m - bound)
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min());
        let prev = if i == 0 { None } else { wm_after[i - 1] };
        wm_after.push(match (prev, candidate) {
            (Some(p), Some(c)) => Some(p.max(c)),
            (p, c) => p.or(c),
        });
    }
    let wm_before = |i: usize| if i == 0 { None } else { wm_after[i - 1] };

    // Windows: accepted readings per window; revision 0 = on-time ones, then one per late one.
    let mut late = BTreeSet::new();
    let mut per_window: BTreeMap<(String, Millis), Vec<(bool, &Reading)>> = BTreeMap::new();
    for (i, r) in readings.iter().enumerate() {
        let start = r.ts.div_euclid(size) * size;
        let end = start + size;
        let w = wm_before(i);
        if w.is_some_and(|w| end + lateness <= w) {
            late.insert((r.partition, r.offset));
        } else {
            let on_time = w.is_none_or(|w| w < end);
            per_window
                .entry((r.device.clone(), start))
                .or_default()
                .push((on_time, r));
        }
    }
    let mut windows = Windows::new();
    for ((device, start), rs) in &per_window {
        let on_time = rs.iter().filter(|(o, _)| *o).count();
        let mut emit_after: Vec<usize> = Vec::new();
        if on_time > 0 {
            emit_after.push(on_time);
        }
        emit_after.extend((on_time + 1..=rs.len()).filter(|&n| n > 0));
        for (rev, &n) in emit_after.iter().enumerate() {
            let sel: Vec<&Reading> = rs[..n].iter().map(|(_, r)| *r).collect();
            let temps: Vec<f64> = sel.iter().map(|r| r.temp).collect();
            let mut sum = 0.0;
            for t in &temps {
                sum += t;
            }
            let count = u64::try_from(sel.len()).unwrap();
            windows.insert(
                (device.clone(), *start, u32::try_from(rev).unwrap()),
                (
                    count,
                    sum / f64::from(u32::try_from(sel.len()).unwrap()),
                    temps.iter().copied().fold(f64::INFINITY, f64::min),
                    temps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    sel.iter().map(|r| r.vib).fold(f64::NEG_INFINITY, f64::max),
                    temps,
                ),
            );
        }
    }

    let dlq = arrivals
        .iter()
        .filter_map(|a| {
            a.malformed
                .as_ref()
                .map(|m| (a.record.partition, a.record.offset, m.clone()))
        })
        .collect();

    // Alerts.
    let mut alerts = BTreeSet::new();
    let mut push = |rule: &str, device: &str, t: Millis, v: f64| {
        alerts.insert((
            alert_id(&cfg.name, rule, device, t),
            rule.to_owned(),
            device.to_owned(),
            t,
            format!("{v}"),
        ));
    };
    let devices: BTreeSet<String> = readings.iter().map(|r| r.device.clone()).collect();
    for rule in &cfg.rules {
        match rule {
            RuleConfig::Threshold(t) => {
                let value = |r: &Reading| {
                    if t.field == "temperature_c" {
                        r.temp
                    } else {
                        r.vib
                    }
                };
                for d in &devices {
                    let xs: Vec<(f64, &Reading)> = readings
                        .iter()
                        .filter(|r| &r.device == d)
                        .map(|r| (value(r), r))
                        .collect();
                    // active(i): some j <= i went above, and nothing since fell below the band.
                    let active = |i: usize| {
                        (0..=i).any(|j| {
                            xs[j].0 > t.above
                                && xs[j + 1..=i].iter().all(|x| x.0 >= t.above - t.hysteresis)
                        })
                    };
                    for i in 0..xs.len() {
                        if xs[i].0 > t.above && (i == 0 || !active(i - 1)) {
                            push(&t.name, d, xs[i].1.ts, xs[i].0);
                        }
                    }
                }
            }
            RuleConfig::ZScore(z) => {
                for d in &devices {
                    let xs: Vec<&Reading> = readings.iter().filter(|r| &r.device == d).collect();
                    let mut active = false;
                    for i in 0..xs.len() {
                        // Recompute the EWMA over the prefix from scratch.
                        let (mut mean, mut var) = (0.0f64, 0.0f64);
                        for (k, r) in xs[..i].iter().enumerate() {
                            if k == 0 {
                                mean = r.temp;
                            } else {
                                let diff = r.temp - mean;
                                mean += z.alpha * diff;
                                var = (1.0 - z.alpha) * (var + diff * z.alpha * diff);
                            }
                        }
                        if u64::try_from(i).unwrap() < z.warmup {
                            continue;
                        }
                        let sd = var.sqrt();
                        let score = if sd > 0.0 {
                            ((xs[i].temp - mean) / sd).abs()
                        } else {
                            0.0
                        };
                        if active {
                            active = score >= z.clear_below;
                        } else if score > z.threshold {
                            active = true;
                            push(&z.name, d, xs[i].ts, xs[i].temp);
                        }
                    }
                }
            }
            RuleConfig::Silence(s) => {
                // After each reading, scan every device: silent past the watermark → alert once
                // per last-seen time.
                let mut last: BTreeMap<&str, (Millis, bool)> = BTreeMap::new();
                for (i, r) in readings.iter().enumerate() {
                    let w = wm_before(i);
                    let e = last.entry(&r.device).or_insert((r.ts, false));
                    if r.ts > e.0 {
                        let still_silent = w.is_some_and(|w| r.ts + s.after_ms <= w);
                        e.0 = r.ts;
                        if !(e.1 && still_silent) {
                            e.1 = false;
                        }
                    }
                    if let Some(w) = wm_after[i] {
                        for (d, (t, fired)) in last.iter_mut() {
                            if !*fired && *t + s.after_ms <= w {
                                *fired = true;
                                let f = f64::from(u32::try_from(s.after_ms).unwrap());
                                push(&s.name, d, *t + s.after_ms, f);
                            }
                        }
                    }
                }
            }
        }
    }
    Expected {
        windows,
        late,
        dlq,
        alerts,
    }
}

fn by_topic<'a>(out: &'a [OutputRecord], topic: &str) -> Vec<&'a OutputRecord> {
    out.iter().filter(|r| r.stream.topic == topic).collect()
}

fn source(r: &OutputRecord) -> (u32, i64) {
    let s = |h| {
        std::str::from_utf8(r.header(h).unwrap())
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    (
        u32::try_from(s("runnel.source.partition")).unwrap(),
        s("runnel.source.offset"),
    )
}

#[test]
fn golden_run_matches_reference() {
    for seed in [1, 2, 3] {
        let arrivals = generate(seed, 9, 600);
        let expected = reference(&arrivals);
        let mut p = Pipeline::new(test_config()).unwrap();
        let mut out = Vec::new();
        for a in &arrivals {
            out.extend(p.apply(&Step {
                processing_time: a.now,
                records: vec![a.record.clone()],
                end: false,
            }));
        }
        out.extend(p.apply(&Step {
            processing_time: 0,
            records: Vec::new(),
            end: true,
        }));

        // Windows: every revision, exact (percentile within the sketch's 1% guarantee).
        let mut got_windows = BTreeMap::new();
        for r in by_topic(&out, "sensor_aggregates") {
            let v = r.json().unwrap();
            let key = (
                v["device_id"].as_str().unwrap().to_owned(),
                v["window_start_ms"].as_i64().unwrap(),
                u32::try_from(v["revision"].as_u64().unwrap()).unwrap(),
            );
            assert!(
                got_windows.insert(key.clone(), v).is_none(),
                "window emitted twice: {key:?}"
            );
        }
        assert_eq!(
            got_windows.keys().collect::<Vec<_>>(),
            expected.windows.keys().collect::<Vec<_>>(),
            "seed {seed}: window (device, start, revision) set"
        );
        for (k, (count, avg, min, max, vib, temps)) in &expected.windows {
            let v = &got_windows[k];
            assert_eq!(v["count"].as_u64(), Some(*count), "{k:?}");
            assert_eq!(v["temperature_c_avg"].as_f64(), Some(*avg), "{k:?}");
            assert_eq!(v["temperature_c_min"].as_f64(), Some(*min), "{k:?}");
            assert_eq!(v["temperature_c_max"].as_f64(), Some(*max), "{k:?}");
            assert_eq!(v["vibration_g_max"].as_f64(), Some(*vib), "{k:?}");
            let mut sorted = temps.clone();
            sorted.sort_by(f64::total_cmp);
            let rank = (95 * (sorted.len() - 1)) / 100;
            let truth = sorted[rank];
            let p95 = v["temperature_c_p95"].as_f64().unwrap();
            assert!(
                (p95 - truth).abs() <= 0.01 * truth.abs() + 1e-9,
                "{k:?}: p95 {p95} vs {truth}"
            );
        }

        assert!(
            expected.windows.keys().any(|k| k.2 > 0),
            "the generator must produce late-within-lateness revisions"
        );
        let late: BTreeSet<_> = by_topic(&out, "sensor_events_late")
            .into_iter()
            .map(source)
            .collect();
        assert_eq!(late, expected.late, "seed {seed}: late records");
        assert!(!late.is_empty(), "the generator must produce late data");

        let dlq: BTreeSet<_> = by_topic(&out, "sensor_events_dlq")
            .into_iter()
            .map(|r| {
                let (p, o) = source(r);
                let reason =
                    String::from_utf8(r.header("runnel.dlq.reason").unwrap().to_vec()).unwrap();
                // Reasons from serde_json carry a position; compare the stable prefix.
                let reason = if reason.starts_with("invalid json") {
                    "invalid json".to_owned()
                } else {
                    reason
                };
                (p, o, reason)
            })
            .collect();
        assert_eq!(dlq, expected.dlq, "seed {seed}: DLQ records and reasons");

        let alerts: BTreeSet<_> = by_topic(&out, "sensor_alerts")
            .into_iter()
            .map(|r| {
                let v = r.json().unwrap();
                (
                    v["id"].as_str().unwrap().to_owned(),
                    v["rule"].as_str().unwrap().to_owned(),
                    v["device_id"].as_str().unwrap().to_owned(),
                    v["event_time_ms"].as_i64().unwrap(),
                    format!("{}", v["value"].as_f64().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            by_topic(&out, "sensor_alerts").len(),
            alerts.len(),
            "no duplicate alerts"
        );
        assert_eq!(alerts, expected.alerts, "seed {seed}: alerts");
        let rules: BTreeSet<&str> = alerts.iter().map(|a| a.1.as_str()).collect();
        assert_eq!(
            rules,
            BTreeSet::from([
                "device_silent",
                "temperature_high",
                "temperature_zscore",
                "vibration_high"
            ]),
            "every rule fires in the golden run"
        );
        let stats = p.stats();
        assert_eq!(stats.records, u64::try_from(arrivals.len()).unwrap());
        assert_eq!(stats.late, u64::try_from(expected.late.len()).unwrap());
        assert_eq!(stats.dlq, u64::try_from(expected.dlq.len()).unwrap());
    }
}
