//! End-to-end exactly-once of the embedded processor: a seeded sensor stream (out-of-order,
//! late, silent-device and malformed events) is published with an idempotent producer; the
//! real `runnel` binary then runs the built-in sensor pipeline over it, once uninterrupted and
//! once SIGKILLed at random points several times. The output topics (aggregates, alerts, late,
//! DLQ) must be equal record for record (key, value, headers, timestamp).
//!
//! The input is published before the pipeline starts, so the pipeline's time-ordered merge of
//! partitions sees the same interleaving in both runs (see `driver.rs`: with all input present
//! the order does not depend on fetch timing).

mod common;
mod processor_common;

use common::Client;
use processor_common::*;

const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_after_random_sigkills_equal_the_uninterrupted_run() {
    let seed = seed();
    let arrivals = golden_input(seed);
    let total = i64::try_from(arrivals.len()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let [input_dir, ref_dir, crash_dir] = data_dirs(root.path(), ["input", "ref", "crash"]);

    // 1. The input, published with the processor off.
    let addr = free_addr();
    let mut b = spawn_broker(&input_dir, addr, false);
    publish(addr, &arrivals).await;
    b.kill();
    copy_dir(&input_dir, &ref_dir);
    copy_dir(&input_dir, &crash_dir);

    // 2. Uninterrupted run.
    let addr = free_addr();
    let mut b = spawn_broker(&ref_dir, addr, true);
    let mut c = connect(addr).await;
    let expected = wait_finished(&mut c, total).await;
    b.kill();
    assert_all_nonempty(&expected, "uninterrupted run");

    // 3. The same, SIGKILLed at random points while the pipeline runs.
    let mut rng = sensors::Rng::new(seed ^ 0xdead_beef);
    let kills = kill_mid_run(
        KILLS,
        &mut rng,
        400,
        |addr| spawn_broker(&crash_dir, addr, true),
        async |c: &mut Client| consumed(c).await,
        async |c: &mut Client| consumed(c).await >= total,
    )
    .await;
    let addr = free_addr();
    let mut b = spawn_broker(&crash_dir, addr, true);
    let mut c = connect(addr).await;
    let got = wait_finished(&mut c, total).await;
    b.kill();
    assert_same_outputs(&got, &expected, &format!("after {kills} kills"));
}
