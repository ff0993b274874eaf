//! CPU per reading of the processor core alone (`Pipeline::apply` + checkpoints), no broker.
//!
//! Feeds the default sensor pipeline the readings `benches/src/bin/processor_bench.rs`
//! preloads (event second s holds one JSON reading of every device, spread over the second,
//! starting on a minute; device d on partition d % 3; 1 in 1000 over the threshold) in steps
//! of 500 records, checkpointing every 100 steps like the driver's defaults, into sled in a
//! temporary directory (or memory with `--mem`). Prints events per CPU-second of this process
//! (utime + stime from /proc/self/stat) and a hash of every output record, so two builds can
//! be checked for byte-identical outputs on the same input.
//!
//! `cargo bench -p runnel-processor --bench pipeline_core -- [EVENTS] [DEVICES] [--mem]`

use std::time::Instant;

use anyhow::{Context, Result};
use runnel_processor::num::Fnv64;
use runnel_processor::state::memory::MemStore;
use runnel_processor::state::sled_store::SledStore;
use runnel_processor::state::StateStore;
use runnel_processor::{InputRecord, Pipeline, PipelineConfig, Step};

/// Records per step and steps per checkpoint (the driver's defaults).
const STEP_RECORDS: usize = 500;
const CHECKPOINT_EVERY: usize = 100;
/// A minute-aligned event time for the first reading.
const START_TS: i64 = 1_700_000_040_000;

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat
        .rsplit_once(')')
        .context("malformed /proc/self/stat")?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The input of `processor_bench throughput` for `events` readings of `devices` devices.
fn inputs(events: u64, devices: u64) -> Vec<InputRecord> {
    let mut next_offset = [0i64; 3];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut unit = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..events)
        .map(|k| {
            let d = k % devices;
            let s = i64::try_from(k / devices).unwrap_or(0);
            let ts = START_TS + s * 1000 + i64::try_from(d * 1000 / devices).unwrap_or(0);
            let spike = k % 1000 == 999;
            let temp = if spike { 95.0 + unit() * 5.0 } else { 60.0 + unit() * 10.0 };
            let temp = (temp * 100.0).round() / 100.0;
            let vib = ((0.05 + unit() * 0.1) * 1000.0).round() / 1000.0;
            let status = if spike { "WARN" } else { "OK" };
            let site = ["fab1", "fab2", "fab3"][usize::try_from(d % 3).unwrap_or(0)];
            let line = format!("L{:02}", 1 + (d / 3) % 8);
            let id = format!("MTR-{d:06}");
            let value = format!(
                "{{\"device_id\":\"{id}\",\"ts\":{ts},\"temperature_c\":{temp},\"vibration_g\":{vib},\"status\":\"{status}\",\"site\":\"{site}\",\"line\":\"{line}\"}}"
            );
            let p = usize::try_from(d % 3).unwrap_or(0);
            let offset = next_offset[p];
            next_offset[p] += 1;
            InputRecord {
                topic: "sensor_events".into(),
                partition: u32::try_from(p).unwrap_or(0),
                offset,
                key: Some(id.into_bytes().into()),
                value: Some(value.into_bytes().into()),
                timestamp: ts,
            }
        })
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mem = args.iter().any(|a| a == "--mem");
    let mut nums = args.iter().filter_map(|a| a.parse::<u64>().ok());
    let events = nums.next().unwrap_or(300_000);
    let devices = nums.next().unwrap_or(10_000).max(1);
    let records = inputs(events, devices);
    let dir = tempfile::tempdir()?;
    let mut store: Box<dyn StateStore> = if mem {
        Box::new(MemStore::new())
    } else {
        Box::new(SledStore::open(dir.path(), "sensors")?)
    };
    let config = PipelineConfig::default();
    let mut p = Pipeline::new(config.clone())?;
    let mut hash = Fnv64::default();
    let (mut outputs, mut checkpoints, mut checkpoint_s) = (0u64, 0u32, 0.0f64);
    let (cpu0, wall0) = (cpu_seconds()?, Instant::now());
    for (i, chunk) in records.chunks(STEP_RECORDS).enumerate() {
        let step = Step {
            processing_time: START_TS + i64::try_from(i)? * 10,
            records: chunk.to_vec(),
            end: false,
        };
        for o in p.apply(&step) {
            outputs += 1;
            hash.field(o.stream.topic.as_bytes())
                .field(&o.seq.to_le_bytes())
                .field(o.key.as_deref().unwrap_or_default())
                .field(&o.value)
                .field(&o.timestamp.to_le_bytes());
            for (n, v) in &o.headers {
                hash.field(n.as_bytes()).field(v);
            }
        }
        if (i + 1) % CHECKPOINT_EVERY == 0 {
            let t = Instant::now();
            p.checkpoint(store.as_mut())?;
            checkpoint_s += t.elapsed().as_secs_f64();
            checkpoints += 1;
        }
    }
    // A last checkpoint, so the restore below must give back exactly the live state.
    let t = Instant::now();
    p.checkpoint(store.as_mut())?;
    checkpoint_s += t.elapsed().as_secs_f64();
    checkpoints += 1;
    let (cpu, wall) = (cpu_seconds()? - cpu0, wall0.elapsed().as_secs_f64());
    let restored = Pipeline::restore(config, store.as_ref())?;
    anyhow::ensure!(
        restored.open_windows().eq(p.open_windows()),
        "restored windows differ from the live ones"
    );
    let state_bytes: usize = store
        .scan_prefix(b"s/")?
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    println!(
        "events {events} devices {devices} store {}: {cpu:.2} CPU-s, {wall:.2} s wall, {:.0} events per CPU-second; \
         {checkpoints} checkpoints, mean {:.1} ms; state {state_bytes} bytes; outputs {outputs}, hash {:016x}",
        if mem { "mem" } else { "sled" },
        events as f64 / cpu,
        checkpoint_s * 1000.0 / f64::from(checkpoints.max(1)),
        hash.finish()
    );
    Ok(())
}
