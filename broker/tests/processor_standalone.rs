//! End-to-end exactly-once of the standalone processor (`runnel process --bootstrap`): a
//! second `runnel serve`, its embedded processor off, plays the Kafka cluster, and the
//! processor reaches it only through the Kafka protocol. Over the same seeded sensor input as
//! `processor_crash.rs`:
//! 1. an uninterrupted standalone run writes exactly what the embedded processor writes, and
//!    stops cleanly on SIGTERM;
//! 2. a standalone run SIGKILLed at random points (at least five times), with the cluster
//!    itself SIGKILLed and restarted once under it, still writes exactly that: nothing lost,
//!    nothing duplicated.

mod common;
mod processor_common;

use std::time::Duration;

use common::Client;

use processor_common::*;

const KILLS: usize = 6;
/// Each kill lands a random 1..=WITHIN input records after the previous one (or after the
/// cluster restart): counted in progress, not time, so a fast machine cannot run the whole
/// input between kills.
const WITHIN: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_outputs_equal_the_embedded_ones_across_sigkills_and_a_cluster_restart() {
    let seed = seed();
    let arrivals = golden_input(seed);
    let total = i64::try_from(arrivals.len()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let [input_dir, embedded_dir, ref_dir, crash_dir] =
        data_dirs(root.path(), ["input", "embedded", "ref", "crash"]);
    let [ref_state, crash_state] = data_dirs(root.path(), ["ref-state", "crash-state"]);

    // The input, published with the processor off.
    let addr = free_addr();
    let mut b = spawn_broker(&input_dir, addr, false);
    publish(addr, &arrivals).await;
    b.kill();
    for d in [&embedded_dir, &ref_dir, &crash_dir] {
        copy_dir(&input_dir, d);
    }

    // The embedded processor's outputs: the reference.
    let addr = free_addr();
    let mut b = spawn_broker(&embedded_dir, addr, true);
    let expected = wait_finished(&mut connect(addr).await, total).await;
    b.kill();
    assert_all_nonempty(&expected, "embedded run");

    // 1. Standalone, uninterrupted, against a cluster without a processor of its own.
    let addr = free_addr();
    let mut cluster = spawn_broker(&ref_dir, addr, false);
    let mut c = connect(addr).await;
    let mut p = spawn_process(addr, &ref_state);
    let got = wait_finished(&mut c, total).await;
    let status = p.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "runnel process did not exit cleanly on SIGTERM: {status:?}"
    );
    cluster.kill();
    assert_same_outputs(
        &got,
        &expected,
        "between the standalone and the embedded run",
    );

    // 2. Standalone, SIGKILLed at random points; halfway, the cluster is SIGKILLed and
    //    restarted on the same address under the running processor.
    let addr = free_addr();
    let mut cluster = spawn_broker(&crash_dir, addr, false);
    let mut rng = sensors::Rng::new(seed ^ 0x5eed_cafe);
    let mut kills = 0;
    let mut progress = 0;
    let mut cluster_restarted_mid_run = false;
    let mut progress_of = async |c: &mut Client| consumed(c).await;
    let mut done = async |c: &mut Client| consumed(c).await >= total;
    for i in 0..KILLS {
        let mut p = spawn_process(addr, &crash_state);
        let mut c = connect(addr).await;
        if i == KILLS / 2 {
            let target = progress + 1 + i64::try_from(rng.below(WITHIN)).unwrap();
            let before = wait_progress(&mut c, target, &mut progress_of, &mut done, i + 1).await;
            cluster.kill();
            tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
            cluster = spawn_broker(&crash_dir, addr, false);
            c = connect(addr).await;
            match before {
                Some(now) => {
                    progress = now;
                    cluster_restarted_mid_run = true;
                }
                None => {
                    p.kill();
                    break;
                }
            }
        }
        // The kill lands once the processor (reconnected, after the cluster restart) has
        // gone on by a random 1..=WITHIN input records.
        let target = progress + 1 + i64::try_from(rng.below(WITHIN)).unwrap();
        let reached = wait_progress(&mut c, target, &mut progress_of, &mut done, i + 1).await;
        p.kill();
        let Some(now) = reached else {
            break;
        };
        progress = now;
        kills += 1;
    }
    eprintln!(
        "killed the standalone processor {kills} times mid-run; cluster restarted mid-run: \
         {cluster_restarted_mid_run}"
    );
    assert!(
        kills >= 5,
        "the pipeline finished before the processor could be killed five times"
    );
    assert!(
        cluster_restarted_mid_run,
        "the pipeline finished before the cluster restart"
    );
    let _p = spawn_process(addr, &crash_state);
    let got = wait_finished(&mut connect(addr).await, total).await;
    assert_same_outputs(
        &got,
        &expected,
        &format!("after {kills} processor kills and a cluster restart"),
    );
}
