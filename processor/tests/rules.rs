//! Data-driven rule tests: `testdata/rules.txt` (threshold hysteresis, z-score, silence).

use runnel_processor::config::{PipelineConfig, RuleConfig};
use runnel_processor::message::{Collector, Message, Operator};
use runnel_processor::parse::SensorReading;
use runnel_processor::rules::{alert_id, Alert, RuleEngine};

fn run_case(rules_json: &str, inputs: &[&str]) -> Vec<Alert> {
    let rules: Vec<RuleConfig> = serde_json::from_str(rules_json).expect("rules json");
    let config = PipelineConfig {
        rules,
        ..PipelineConfig::default()
    };
    config.validate().expect("valid config");
    let mut engine = RuleEngine::new(&config);
    let mut out = Collector::new();
    for line in inputs {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["reading", key, t, v] => engine.process(
                Message::Data(SensorReading {
                    key: (*key).into(),
                    event_time: t.parse().expect("time"),
                    values: [("temperature_c".into(), v.parse().expect("value"))]
                        .into_iter()
                        .collect(),
                    partition: 0,
                    offset: 0,
                }),
                &mut out,
            ),
            ["watermark", t] => {
                engine.process(Message::Watermark(t.parse().expect("wm")), &mut out)
            }
            ["now", t] => engine.on_processing_time(t.parse().expect("now"), &mut out),
            _ => panic!("bad input line {line:?}"),
        }
    }
    out.drain_data()
}

#[test]
fn rule_cases() {
    let text = include_str!("../testdata/rules.txt");
    let mut cases = 0;
    for block in text.split("\ncase ").skip(1) {
        let mut lines = block.lines();
        let title = lines.next().unwrap_or_default();
        let rules = lines.next().unwrap_or_default();
        let rest: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
        let sep = rest
            .iter()
            .position(|l| *l == "----")
            .expect("---- separator");
        let got: Vec<String> = run_case(rules, &rest[..sep])
            .iter()
            .map(|a| {
                assert_eq!(a.id, alert_id("sensors", &a.rule, &a.key, a.event_time));
                format!("{} {} {} {}", a.rule, a.key, a.event_time, a.value)
            })
            .collect();
        let want: Vec<String> = rest[sep + 1..].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want, "case: {title}");
        cases += 1;
    }
    assert_eq!(cases, 5);
}

#[test]
fn alert_ids_are_deterministic_and_distinct() {
    let a = alert_id("sensors", "hot", "MTR-1", 1000);
    assert_eq!(a, alert_id("sensors", "hot", "MTR-1", 1000));
    assert_eq!(a.len(), 16);
    assert_ne!(a, alert_id("sensors", "hot", "MTR-1", 1001));
    assert_ne!(a, alert_id("sensors", "cold", "MTR-1", 1000));
    assert_ne!(a, alert_id("sensors", "hot", "MTR-2", 1000));
}
