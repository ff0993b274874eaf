//! Shared test fixtures: a seeded sensor-stream generator with out-of-order, late, silent and
//! malformed events, and a crash-injecting driver for the sans-io pipeline.
#![allow(dead_code)]

use std::collections::BTreeMap;

use runnel_processor::exactly_once::{last_seq_in_tail, StepDescriptor, TailDeduper};
use runnel_processor::state::memory::MemStore;
use runnel_processor::time::{format_rfc3339, Millis};
use runnel_processor::{InputRecord, OutputRecord, Pipeline, PipelineConfig, Step, StreamId};

/// 2025-08-17T12:00:00Z.
pub const T0: Millis = 1_755_432_000_000;
pub const TOPIC: &str = "sensor_events";

/// The workspace's SplitMix64 (`runnel_client::simulate::rng`): tiny, seeded, reproducible
/// (the same streams as before it was shared), with the generator's helpers.
pub struct Rng(runnel_client::simulate::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(runnel_client::simulate::rng::SplitMix64::new(seed))
    }
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, n) (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        f64::from(u32::try_from(self.next() >> 40).unwrap()) / f64::from(1u32 << 24)
    }
    pub fn millis(&mut self, lo: i64, hi: i64) -> Millis {
        lo + i64::try_from(self.below(u64::try_from(hi - lo).unwrap())).unwrap()
    }
}

/// One generated record and the processing time at which it becomes available.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub record: InputRecord,
    pub now: Millis,
    /// Expected DLQ reason, if the generator made it malformed.
    pub malformed: Option<String>,
}

/// A sensor stream: `devices` devices (device i on partition i % 3) reporting ~1 Hz for
/// `seconds`; device 0 hovers around 85 °C, device 1 has vibration spikes, device 2 has
/// z-score outliers, device 3 goes silent after a third of the run. ~3% of readings arrive
/// 15-50 s late (past the 10 s bound), ~1.5% 130-200 s late (past the allowed lateness),
/// ~2% are malformed.
pub fn generate(seed: u64, devices: u32, seconds: i64) -> Vec<Arrival> {
    let mut rng = Rng::new(seed);
    // (arrival, partition, key, value, expected DLQ reason)
    type Raw = (Millis, u32, String, Vec<u8>, Option<String>);
    let mut raw: Vec<Raw> = Vec::new();
    for d in 0..devices {
        let name = format!("MTR-{d:05}");
        let end = if d == 3 { seconds / 3 } else { seconds };
        for k in 0..end {
            let ts = T0 + k * 1000 + rng.millis(0, 1000);
            let mut temp = 50.0 + 10.0 * rng.unit();
            let mut vib = 0.1 * rng.unit();
            match d {
                0 => temp = 83.5 + 3.0 * rng.unit(),
                1 if rng.below(100) < 2 => vib = 0.55 + 0.2 * rng.unit(),
                2 if k % 97 == 96 => temp += 40.0,
                _ => {}
            }
            let delay = match rng.below(1000) {
                0..=14 => rng.millis(130_000, 200_000),
                15..=44 => rng.millis(15_000, 50_000),
                _ => rng.millis(0, 8_000),
            };
            let (value, malformed) = match rng.below(100) {
                0 => (b"{not json".to_vec(), Some("invalid json".to_owned())),
                1 => (
                    format!(r#"{{"device_id":"{name}","ts":"{}","vibration_g":{vib:.3}}}"#, format_rfc3339(ts))
                        .into_bytes(),
                    Some("missing field `temperature_c`".to_owned()),
                ),
                2 if k % 2 == 0 => (
                    format!(r#"{{"device_id":"{name}","ts":"yesterday","temperature_c":{temp:.2},"vibration_g":{vib:.3}}}"#)
                        .into_bytes(),
                    Some("field `ts`: not an RFC 3339 timestamp: expected a digit".to_owned()),
                ),
                _ => (
                    format!(
                        r#"{{"device_id":"{name}","ts":"{}","temperature_c":{temp:.2},"vibration_g":{vib:.3},"status":"OK","site":"fab1"}}"#,
                        format_rfc3339(ts)
                    )
                    .into_bytes(),
                    None,
                ),
            };
            raw.push((ts + delay, d % 3, name.clone(), value, malformed));
        }
    }
    raw.sort_by_key(|r| r.0);
    let mut next_offset: BTreeMap<u32, i64> = BTreeMap::new();
    raw.into_iter()
        .map(|(arrival, partition, key, value, malformed)| {
            let o = next_offset.entry(partition).or_insert(0);
            let offset = *o;
            *o += 1;
            Arrival {
                record: InputRecord {
                    topic: TOPIC.into(),
                    partition,
                    offset,
                    key: Some(key.into_bytes().into()),
                    value: Some(value.into()),
                    timestamp: arrival,
                },
                now: arrival,
                malformed,
            }
        })
        .collect()
}

/// The config the generated stream is checked against: the defaults, with idleness out of
/// the way (it has its own tests) so the reference need not model processing time.
pub fn test_config() -> PipelineConfig {
    let mut c = PipelineConfig::default();
    c.watermark.idle_timeout_ms = 1_000_000_000;
    c
}

/// The durable world a pipeline process lives in: input logs, the step journal, output
/// topics and the state store. Only what survives a crash lives here.
pub struct World {
    pub arrivals: Vec<Arrival>,
    pub by_partition: BTreeMap<u32, Vec<InputRecord>>,
    pub journal: Vec<StepDescriptor>,
    pub outputs: BTreeMap<StreamId, Vec<OutputRecord>>,
    pub store: MemStore,
    pub seed: u64,
    pub checkpoint_every: u64,
}

/// The process was killed after this many durable actions.
#[derive(Debug)]
pub struct Crashed;

impl World {
    pub fn new(arrivals: Vec<Arrival>, seed: u64, checkpoint_every: u64) -> Self {
        let mut by_partition: BTreeMap<u32, Vec<InputRecord>> = BTreeMap::new();
        for a in &arrivals {
            by_partition
                .entry(a.record.partition)
                .or_default()
                .push(a.record.clone());
        }
        Self {
            arrivals,
            by_partition,
            journal: Vec::new(),
            outputs: BTreeMap::new(),
            store: MemStore::new(),
            seed,
            checkpoint_every,
        }
    }

    /// The scheduler's choice for step `index`: a deterministic function of the seed and of
    /// what the journal already consumed, standing in for "whatever was fetched".
    fn schedule(&self, index: u64) -> StepDescriptor {
        let consumed: usize = self
            .journal
            .iter()
            .flat_map(|d| &d.ranges)
            .map(|r| usize::try_from(r.3 - r.2).unwrap())
            .sum();
        if consumed >= self.arrivals.len() {
            return StepDescriptor {
                index,
                processing_time: self.arrivals.last().map_or(0, |a| a.now),
                ranges: Vec::new(),
                end: true,
            };
        }
        let mut rng = Rng::new(self.seed ^ index.wrapping_mul(0x9e37_79b9));
        let size = usize::try_from(rng.below(6) + 1).unwrap();
        let chunk = &self.arrivals[consumed..(consumed + size).min(self.arrivals.len())];
        let mut ranges: Vec<(String, u32, i64, i64)> = Vec::new();
        for a in chunk {
            let r = &a.record;
            match ranges.last_mut() {
                Some(last) if last.1 == r.partition && last.3 == r.offset => last.3 += 1,
                _ => ranges.push((r.topic.to_string(), r.partition, r.offset, r.offset + 1)),
            }
        }
        StepDescriptor {
            index,
            processing_time: chunk.last().map_or(0, |a| a.now),
            ranges,
            end: false,
        }
    }

    fn materialize(&self, d: &StepDescriptor) -> Step {
        let mut records = Vec::new();
        for (_, p, from, to) in &d.ranges {
            let log = &self.by_partition[p];
            for o in *from..*to {
                records.push(log[usize::try_from(o).unwrap()].clone());
            }
        }
        Step {
            processing_time: d.processing_time,
            records,
            end: d.end,
        }
    }

    /// Runs one process lifetime: restore from the last checkpoint, replay the journal,
    /// continue live until the end. Crashes after `crash_after` durable actions (journal
    /// append, output write, checkpoint commit).
    pub fn run_process(
        &mut self,
        config: &PipelineConfig,
        crash_after: Option<usize>,
    ) -> Result<usize, Crashed> {
        let mut actions = 0usize;
        let mut act = || {
            actions += 1;
            if crash_after == Some(actions) {
                Err(Crashed)
            } else {
                Ok(())
            }
        };
        let mut p = Pipeline::restore(config.clone(), &self.store).expect("restore");
        let name = config.name.clone();
        let mut dedupe = TailDeduper::new(self.outputs.iter().map(|(s, recs)| {
            (
                s.clone(),
                last_seq_in_tail(&name, recs.iter().map(|r| r.headers.as_slice())),
            )
        }));
        loop {
            let index = p.steps_applied();
            let desc = match self.journal.get(usize::try_from(index).unwrap()) {
                Some(d) => d.clone(),
                None => {
                    let d = self.schedule(index);
                    // Journal-ahead: the step's choices are durable before any of its outputs.
                    self.journal.push(d.clone());
                    act()?;
                    d
                }
            };
            let outs = p.apply(&self.materialize(&desc));
            for o in outs {
                if dedupe.admit(&o).expect("no sequence gap") {
                    self.outputs.entry(o.stream.clone()).or_default().push(o);
                    act()?;
                }
            }
            if desc.end {
                return Ok(actions);
            }
            if p.steps_applied() % self.checkpoint_every == 0 {
                p.checkpoint(&mut self.store).expect("checkpoint");
                act()?;
            }
        }
    }
}
