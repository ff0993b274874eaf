//! Retention never takes what the embedded processor's recovery needs: with every sealed
//! segment past the retention limit (1 KiB segments, `retention_bytes = 0`, checked every
//! 100 ms), the built-in sensor pipeline, SIGKILLed at random points, still consumes all of
//! its input and writes exactly the outputs of an uninterrupted run without retention — what
//! retention kept of each output topic is that run's records at the same offsets — while
//! retention does delete the input, the journal and the outputs behind the checkpoints. And
//! the journal's own short retention (`[processor] journal_retention_ms`) trims the journal
//! alone, with the same outputs after the same kind of crashes.

mod common;
mod processor_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{list_offset, Client};
use processor_common::*;

const KILLS: usize = 5;

/// Small segments, and every topic created with every sealed segment past its retention
/// limit (topics keep the settings they were created with) or, with `journal_only`, only
/// the journal (its own retention, `journal_retention_ms = 0`; the other topics are kept
/// whole); `retention`: whether retention runs (every 100 ms), or only after 11 days.
fn config(dir: &Path, processor: bool, retention: bool, journal_only: bool) -> std::path::PathBuf {
    let interval = if retention { 100 } else { 1_000_000_000 };
    let bytes = if journal_only { -1 } else { 0 };
    let top = format!(
        "retention_check_interval_ms = {interval}\n[topics]\nsegment_bytes = 1024\n\
         retention_ms = -1\nretention_bytes = {bytes}\n"
    );
    let journal = if journal_only {
        "journal_retention_ms = 0\n"
    } else {
        ""
    };
    write_config_full(dir.parent().unwrap(), processor, &top, journal)
}

/// Whether every output topic ends where the uninterrupted run's does.
async fn ends_reached(c: &mut Client, expected: &BTreeMap<&'static str, Vec<Rec>>) -> bool {
    for t in OUTPUTS {
        let (_, end) = list_offset(c, t, 0, -1).await;
        if usize::try_from(end).ok() != Some(expected[t].len()) {
            return false;
        }
    }
    true
}

/// Waits until each output topic ends where the expected run's does and nothing changes for
/// a while; returns (log start, kept records) per output topic.
async fn wait_kept_outputs(
    c: &mut Client,
    expected: &BTreeMap<&'static str, Vec<Rec>>,
) -> Vec<(&'static str, i64, Vec<Rec>)> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = Vec::new();
    loop {
        let mut now = Vec::new();
        for t in OUTPUTS {
            let (start, recs) = read_kept(c, t, 0).await;
            now.push((t, start, recs));
        }
        let ended = now.iter().all(|(t, start, recs)| {
            usize::try_from(*start).unwrap() + recs.len() == expected[t].len()
        });
        if ended && now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "outputs did not reach the uninterrupted run's ends: {:?}",
            now.iter()
                .map(|(t, s, r)| (t, s + i64::try_from(r.len()).unwrap(), expected[t].len()))
                .collect::<Vec<_>>()
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// Log starts after a run: (the input's per partition, the journal's).
struct Starts {
    input: i64,
    journal: i64,
}

/// Publishes the seeded input (1 KiB segments), runs the pipeline uninterrupted without
/// retention, then again with retention as `journal_only` says ([`config`]), SIGKILLed at
/// random points and restarted until it finishes; checks that what retention kept of each
/// output topic is the uninterrupted run's records at the same offsets. Returns the log starts
/// of the input (summed over partitions) and of the journal.
async fn crash_run_with_retention(journal_only: bool) -> Starts {
    let seed = seed();
    let arrivals = golden_input(seed);
    let total = i64::try_from(arrivals.len()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let [input_dir, ref_dir, crash_dir] = data_dirs(root.path(), ["input", "ref", "crash"]);

    // 1. The input in 1 KiB segments, published with the processor off, retention not running.
    let addr = free_addr();
    let mut b = spawn_broker_with(
        &input_dir,
        addr,
        &config(&input_dir, false, false, journal_only),
    );
    publish(addr, &arrivals).await;
    b.kill();
    copy_dir(&input_dir, &ref_dir);
    copy_dir(&input_dir, &crash_dir);

    // 2. Uninterrupted, retention not running.
    let addr = free_addr();
    let mut b = spawn_broker_with(&ref_dir, addr, &config(&ref_dir, true, false, journal_only));
    let mut c = connect(addr).await;
    let expected = wait_finished(&mut c, total).await;
    b.kill();
    assert_all_nonempty(&expected, "uninterrupted run");

    // 3. With retention deleting every sealed segment it may, SIGKILLed at random points.
    let crash_config = config(&crash_dir, true, true, journal_only);
    let mut rng = sensors::Rng::new(seed ^ 0x5eed_7e7e);
    kill_mid_run(
        KILLS,
        &mut rng,
        // Journal entries (of up to 15 records each): retention trims the journal, so the
        // input records it covers cannot be summed from its start.
        60,
        |addr| spawn_broker_with(&crash_dir, addr, &crash_config),
        async |c: &mut Client| list_offset(c, JOURNAL, 0, -1).await.1,
        async |c: &mut Client| ends_reached(c, &expected).await,
    )
    .await;

    let addr = free_addr();
    let mut b = spawn_broker_with(&crash_dir, addr, &crash_config);
    let mut c = connect(addr).await;
    let kept = wait_kept_outputs(&mut c, &expected).await;
    for (t, start, recs) in &kept {
        let from = usize::try_from(*start).unwrap();
        eprintln!(
            "{t}: retention kept {} of {} records",
            recs.len(),
            expected[t].len()
        );
        for (i, (g, e)) in recs.iter().zip(&expected[t][from..]).enumerate() {
            assert!(
                g == e,
                "{t}: record at offset {} differs from the uninterrupted run",
                from + i
            );
        }
        if journal_only {
            assert_eq!(*start, 0, "{t}: the journal's retention deleted output");
        }
    }
    let mut input = 0;
    for p in 0..3 {
        let (err, start) = list_offset(&mut c, SOURCE, p, -2).await;
        assert_eq!(err, 0);
        input += start;
    }
    let (err, journal) = list_offset(&mut c, JOURNAL, 0, -2).await;
    assert_eq!(err, 0);
    eprintln!("retention deleted {input} of {total} input records and the journal below {journal}");
    b.kill();
    Starts { input, journal }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_recovery_needs_and_deletes_the_rest() {
    let starts = crash_run_with_retention(false).await;
    // Retention did run behind the checkpoints: on the input and on the journal.
    assert!(starts.input > 0, "retention deleted no input");
    assert!(starts.journal > 0, "retention deleted none of the journal");
}

/// The journal's own retention (`[processor] journal_retention_ms`) trims the journal alone,
/// behind the checkpoints, and recovery from a trimmed journal (read from the position its
/// checkpoint recorded) writes exactly the uninterrupted run's outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_is_trimmed_by_its_own_retention_and_recovery_is_unchanged() {
    let starts = crash_run_with_retention(true).await;
    assert_eq!(starts.input, 0, "the journal's retention deleted input");
    assert!(starts.journal > 0, "retention deleted none of the journal");
}
