//! Crash simulation: kill the pipeline after every durable action of a small run, recover
//! (restore checkpoint, replay journal, dedupe against output tails), and require the final
//! output topics to equal an uninterrupted run's: no lost input, no double-counted window, no
//! duplicate alert.

mod common;

use std::collections::BTreeSet;

use common::{generate, test_config, World};

fn uninterrupted(seed: u64, checkpoint_every: u64) -> (World, usize) {
    let mut w = World::new(generate(seed, 4, 150), seed, checkpoint_every);
    let actions = w.run_process(&test_config(), None).expect("no crash");
    (w, actions)
}

fn check_outputs_well_formed(w: &World) {
    for (stream, recs) in &w.outputs {
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(
                r.seq,
                u64::try_from(i).unwrap(),
                "{stream}: gap-free sequence"
            );
        }
    }
    let ids: Vec<_> = w
        .outputs
        .values()
        .flatten()
        .filter_map(|r| r.header("runnel.alert.id"))
        .collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "no duplicate alert ids");
}

#[test]
fn crash_after_every_action_recovers_identically() {
    let seed = 7;
    for checkpoint_every in [2, 7] {
        let (reference, total) = uninterrupted(seed, checkpoint_every);
        check_outputs_well_formed(&reference);
        let outputs: usize = reference.outputs.values().map(Vec::len).sum();
        assert!(outputs > 30, "run too small to mean anything: {outputs}");
        for crash_at in 1..total {
            let mut w = World::new(reference.arrivals.clone(), seed, checkpoint_every);
            assert!(w.run_process(&test_config(), Some(crash_at)).is_err());
            w.run_process(&test_config(), None).expect("recovery run");
            assert_eq!(
                w.outputs, reference.outputs,
                "crash after action {crash_at} (checkpoint every {checkpoint_every})"
            );
        }
    }
}

#[test]
fn repeated_crashes_including_during_recovery() {
    let seed = 11;
    let (reference, total) = uninterrupted(seed, 3);
    let mut rng = common::Rng::new(99);
    for _ in 0..40 {
        let mut w = World::new(reference.arrivals.clone(), seed, 3);
        // Up to five crashes at random points of successive lifetimes, then run to the end.
        for _ in 0..5 {
            let at = usize::try_from(rng.below(u64::try_from(total).unwrap() / 3)).unwrap() + 1;
            if w.run_process(&test_config(), Some(at)).is_ok() {
                break;
            }
        }
        w.run_process(&test_config(), None).expect("final run");
        check_outputs_well_formed(&w);
        assert_eq!(w.outputs, reference.outputs);
    }
}

#[test]
fn every_input_is_accounted_for() {
    let (w, _) = uninterrupted(5, 4);
    let restored = runnel_processor::Pipeline::restore(test_config(), &w.store).expect("restore");
    let stats = restored.stats();
    // The last checkpoint precedes the end step; all inputs were consumed by then or after.
    assert!(stats.records <= u64::try_from(w.arrivals.len()).unwrap());
    let dlq: usize = w
        .outputs
        .iter()
        .filter(|(s, _)| s.topic == "sensor_events_dlq")
        .map(|(_, v)| v.len())
        .sum();
    let expected_dlq = w.arrivals.iter().filter(|a| a.malformed.is_some()).count();
    assert_eq!(
        dlq, expected_dlq,
        "every malformed record reaches the DLQ exactly once"
    );
}

/// The durable store: checkpoint into sled mid-run, drop everything in memory, reopen,
/// restore, finish; outputs equal an uninterrupted run's.
#[test]
fn sled_checkpoint_restore_continues_identically() {
    use runnel_processor::state::sled_store::SledStore;
    use runnel_processor::{Pipeline, Step};

    let arrivals = generate(3, 5, 200);
    let steps: Vec<Step> = arrivals
        .iter()
        .map(|a| Step {
            processing_time: a.now,
            records: vec![a.record.clone()],
            end: false,
        })
        .chain(std::iter::once(Step {
            end: true,
            ..Step::default()
        }))
        .collect();
    let mut whole = Pipeline::new(test_config()).unwrap();
    let expected: Vec<_> = steps.iter().flat_map(|s| whole.apply(s)).collect();

    let dir = tempfile::tempdir().unwrap();
    let half = steps.len() / 2;
    let mut got = Vec::new();
    {
        let mut store = SledStore::open(dir.path(), "sensors").unwrap();
        let mut p = Pipeline::new(test_config()).unwrap();
        for s in &steps[..half] {
            got.extend(p.apply(s));
        }
        p.checkpoint(&mut store).unwrap();
    }
    let store = SledStore::open(dir.path(), "sensors").unwrap();
    let mut p = Pipeline::restore(test_config(), &store).unwrap();
    assert_eq!(p.steps_applied(), u64::try_from(half).unwrap());
    for s in &steps[half..] {
        got.extend(p.apply(s));
    }
    assert_eq!(got, expected);
}

/// A handle still open elsewhere in the process (as sled's flusher briefly keeps a dropped
/// one) makes a reopen wait for it, not fail.
#[test]
fn sled_reopen_waits_for_a_handle_still_held_in_the_process() {
    use runnel_processor::state::sled_store::SledStore;

    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(dir.path(), "sensors").unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let second = SledStore::open(dir.path(), "sensors");
    holder.join().unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
}
