//! The disk's floor for acks=all produce latency (issue 2): what an ideal broker on this disk
//! could answer, with no network, protocol, async runtime or thread hand-off to the socket.
//! Records of `--size` bytes are written at `--rate` into a file zeroed and fsynced
//! beforehand (as Runnel's active segment is, ahead of its appends), and group-committed by
//! up to `--flushers` threads: whenever a record is written past what the flushers have
//! taken, an idle flusher takes everything written so far and `fdatasync`s it. A record's
//! latency runs from when it was *due* to when an fdatasync covering it returned, so a slow
//! fsync counts against every record that waits behind it.
//!
//! `fsync_floor --dir D --rate 2000 --seconds 10 --size 1024` prints one line in the
//! format of `produce_latency`, plus the fdatasync durations and how many took over 0.8 and
//! 1.6 ms (the broker's histogram buckets that `benches/kafka_throughput.sh` reports).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use runnel_benches::{due, latency_summary, ms, percentile};

#[derive(Parser)]
#[command(
    about = "acks=all latency floor of the disk under --dir: paced writes, group-commit fdatasync"
)]
struct Args {
    /// Directory for the scratch file (on the disk to measure; removed afterwards).
    #[arg(long)]
    dir: PathBuf,
    /// Records per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes per record (a 1 KiB Kafka record is about 1,100 bytes in its batch).
    #[arg(long, default_value_t = 1100)]
    size: u64,
    /// At most this many fdatasyncs at once (Runnel runs up to 2 per partition).
    #[arg(long, default_value_t = 2)]
    flushers: usize,
    /// Records at the start left out of the figures.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
}

#[derive(Default)]
struct State {
    /// Records written to the file so far.
    written: u64,
    /// Records some flusher has taken (its fdatasync covers them once it returns).
    taken: u64,
    /// When each record's covering fdatasync returned, by record.
    done: Vec<Option<Instant>>,
    /// Every fdatasync's duration.
    syncs: Vec<Duration>,
    /// The writer has finished: flushers end once nothing is left to take.
    closed: bool,
    /// The first fdatasync error, which ends the run.
    failed: Option<String>,
}

struct Shared {
    file: File,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One flusher: take everything written and not yet taken, fdatasync, mark it done.
fn flusher(sh: &Shared) {
    loop {
        let upto = {
            let s = sh.lock();
            let mut s = sh
                .wake
                .wait_while(s, |s| s.taken == s.written && !s.closed)
                .unwrap_or_else(|e| e.into_inner());
            if s.taken == s.written || s.failed.is_some() {
                return; // closed with nothing left, or the run failed
            }
            s.taken = s.written;
            s.taken
        };
        let started = Instant::now();
        let synced = sh.file.sync_data();
        let finished = Instant::now();
        let mut s = sh.lock();
        s.syncs.push(finished.saturating_duration_since(started));
        if let Err(e) = synced {
            s.failed.get_or_insert_with(|| format!("fdatasync: {e}"));
            sh.wake.notify_all();
            return;
        }
        mark_done(&mut s.done, upto, finished);
    }
}

/// An fdatasync that started once `upto` records were written returned `at`: it covers every
/// record before `upto` that no earlier-returning one did. Rounds may return out of order.
fn mark_done(done: &mut [Option<Instant>], upto: u64, at: Instant) {
    let end = usize::try_from(upto).unwrap_or(usize::MAX).min(done.len());
    for slot in done[..end].iter_mut().rev() {
        if slot.is_some() {
            break; // a round that returned earlier covered the rest
        }
        *slot = Some(at);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate == 0 || args.seconds == 0 || args.size == 0 || args.flushers == 0 {
        bail!("--rate, --seconds, --size and --flushers must be positive");
    }
    let total = args.rate.saturating_mul(args.seconds);
    let bytes = total.saturating_mul(args.size);
    let path = args
        .dir
        .join(format!("fsync-floor-{}.tmp", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = run(&args, file, total, bytes);
    let _ = std::fs::remove_file(&path);
    result
}

fn run(args: &Args, file: File, total: u64, bytes: u64) -> Result<()> {
    // Zeros over the whole run, written and fsynced first: every record then lands in
    // written blocks and its fdatasync writes data only.
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        file.write_all_at(&zeros, at).context("zeroing the file")?;
        at = at.saturating_add(1 << 20);
    }
    file.sync_all().context("fsyncing the zeros")?;
    let n = usize::try_from(total).context("too many records")?;
    let sh = Arc::new(Shared {
        file,
        state: Mutex::new(State {
            done: vec![None; n],
            ..State::default()
        }),
        wake: Condvar::new(),
    });
    let flushers: Vec<_> = (0..args.flushers)
        .map(|_| {
            let sh = Arc::clone(&sh);
            std::thread::spawn(move || flusher(&sh))
        })
        .collect();
    let record = vec![b'x'; usize::try_from(args.size).context("--size too large")?];
    let mut dues = Vec::with_capacity(n);
    let start = Instant::now();
    let mut write_error = None;
    for i in 0..total {
        let due_at = start + due(i, args.rate);
        if let Some(wait) = due_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        dues.push(due_at);
        if let Err(e) = sh.file.write_all_at(&record, i.saturating_mul(args.size)) {
            write_error = Some(e);
            break;
        }
        let mut s = sh.lock();
        if s.failed.is_some() {
            break;
        }
        s.written = i + 1;
        drop(s);
        sh.wake.notify_one();
    }
    sh.lock().closed = true;
    sh.wake.notify_all();
    for f in flushers {
        f.join()
            .map_err(|_| anyhow::anyhow!("a flusher panicked"))?;
    }
    if let Some(e) = write_error {
        bail!("writing a record: {e}");
    }
    let mut s = sh.lock();
    if let Some(e) = &s.failed {
        bail!("{e}");
    }
    let skip = usize::try_from(args.warmup).unwrap_or(usize::MAX);
    let mut from_due: Vec<Duration> = dues
        .iter()
        .zip(&s.done)
        .skip(skip)
        .filter_map(|(due, done)| done.map(|d| d.saturating_duration_since(*due)))
        .collect();
    if from_due.len() + skip.min(dues.len()) != dues.len() {
        bail!("some written records were never covered by an fdatasync");
    }
    from_due.sort_unstable();
    let mut syncs = std::mem::take(&mut s.syncs);
    syncs.sort_unstable();
    let over = |limit_us: u64| {
        syncs
            .iter()
            .filter(|d| **d > Duration::from_micros(limit_us))
            .count()
    };
    let p = |v: &[Duration], pct| percentile(v, pct).map_or(f64::NAN, ms);
    println!(
        "n={} rate={}/s size={} flushers<={} | {} | fdatasync: n={} p50={:.3}ms p99={:.3}ms max={:.3}ms over0.8ms={} over1.6ms={}",
        from_due.len(),
        args.rate,
        args.size,
        args.flushers,
        latency_summary("from due", &from_due),
        syncs.len(),
        p(&syncs, 50),
        p(&syncs, 99),
        syncs.last().map_or(f64::NAN, |d| ms(*d)),
        over(800),
        over(1600),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_covers_what_no_earlier_returning_round_did() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_millis(1), t0 + Duration::from_millis(2));
        let mut done = vec![None; 5];
        mark_done(&mut done, 2, t0);
        assert_eq!(done, [Some(t0), Some(t0), None, None, None]);
        // A later round, returning next, covers the records written since.
        mark_done(&mut done, 4, t1);
        assert_eq!(done, [Some(t0), Some(t0), Some(t1), Some(t1), None]);
        // A round that started before the last one but returned after it covers nothing new.
        mark_done(&mut done, 3, t2);
        assert_eq!(done, [Some(t0), Some(t0), Some(t1), Some(t1), None]);
        // Past the end is clamped.
        mark_done(&mut done, 9, t2);
        assert_eq!(done[4], Some(t2));
    }

    #[test]
    fn a_round_that_returns_first_covers_everything_before_it() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let mut done = vec![None; 4];
        // The round over 4 records returns before the one over 2 that started earlier.
        mark_done(&mut done, 4, t0);
        mark_done(&mut done, 2, t1);
        assert_eq!(done, [Some(t0); 4]);
    }
}
