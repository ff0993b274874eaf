//! When a partition's group-commit rounds run: flushers on blocking threads run them while
//! requests keep coming and give their threads back once they stop.
//!
//! An acks=all request used to reach the fsync through a flusher task and a `spawn_blocking`
//! hand-off each round, and come back through both; now the thread that fsyncs is the one
//! that plans the round and answers its waiters. [`FlushSignal`] is the small state machine
//! between the requesters and those threads: a request is never lost (a round starts after
//! every request), and at most [`MAX_FLUSHERS`] flushers run per partition.
//!
//! Why more than one: a request that arrives while the only flusher is inside an fsync waits
//! for the rest of that fsync and then for a whole one of its own. A second flusher starts
//! its fsync at once instead, so the request waits for about one fsync; the two overlap in
//! the kernel. Rounds may then finish out of order, which `runnel_sync::GroupCommit` allows
//! (the flushed offset is the highest any finished round covered).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// At most this many group-commit rounds of one partition run at once.
pub const MAX_FLUSHERS: usize = 2;

#[derive(Debug, Default)]
struct Signal {
    /// A round was asked for and has not started yet.
    wanted: bool,
    /// Flushers running (or about to), busy or idle.
    running: usize,
    /// Of those, the ones idle in [`FlushSignal::next_round`], waiting for a request.
    idle: usize,
    /// The partition is gone: the flushers end.
    closed: bool,
}

/// Requests for group-commit rounds, and the idle flushers' wake-up.
#[derive(Debug, Default)]
pub struct FlushSignal {
    state: Mutex<Signal>,
    wake: Condvar,
}

impl FlushSignal {
    fn lock(&self) -> MutexGuard<'_, Signal> {
        // Nothing panics while holding it; the counts are consistent whatever happened.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a round. `true`: no flusher is idle and fewer than [`MAX_FLUSHERS`] run, so
    /// the caller must start one (which then counts as running). Otherwise an idle flusher
    /// is woken, or a busy one takes the request when its round ends.
    pub fn request(&self) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        s.wanted = true;
        if s.idle > 0 {
            drop(s);
            self.wake.notify_one();
            false
        } else if s.running < MAX_FLUSHERS {
            s.running += 1;
            true
        } else {
            false
        }
    }

    /// A flusher: whether to run another round — `true` once a request is pending
    /// (waiting up to `linger` for one), `false` when none came or the partition is closed;
    /// then this flusher has stopped, and a later request may start a new one.
    pub fn next_round(&self, linger: Duration) -> bool {
        let mut s = self.lock();
        s.idle += 1;
        let (mut s, _) = self
            .wake
            .wait_timeout_while(s, linger, |s| !s.wanted && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        s.idle = s.idle.saturating_sub(1);
        if s.wanted && !s.closed {
            s.wanted = false;
            true
        } else {
            s.running = s.running.saturating_sub(1);
            false
        }
    }

    /// A flusher ends without being asked (its partition is gone, or it unwinds).
    pub fn stopped(&self) {
        let mut s = self.lock();
        s.running = s.running.saturating_sub(1);
    }

    /// The partition is gone: waiting flushers end now, and no new one starts.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_first_request_starts_a_flusher_and_later_ones_only_wake_it() {
        let s = FlushSignal::default();
        assert!(s.request(), "nothing runs: start one");
        assert!(s.next_round(Duration::ZERO), "the request is one round");
        assert!(
            !s.next_round(Duration::ZERO),
            "nothing pending: the flusher stops"
        );
        assert!(s.request(), "stopped: the next request starts one again");
    }

    #[test]
    fn requests_while_every_flusher_is_busy_start_more_up_to_the_cap() {
        let s = FlushSignal::default();
        assert!(s.request(), "nothing runs: start one");
        assert!(s.next_round(Duration::ZERO), "it takes the request: busy");
        for started in 1..MAX_FLUSHERS {
            assert!(s.request(), "{started} busy: start another");
            assert!(s.next_round(Duration::ZERO), "it takes the request: busy");
        }
        assert!(!s.request(), "at the cap: a busy one takes it later");
        assert!(!s.request(), "still at the cap");
        assert!(s.next_round(Duration::ZERO), "the first back takes both");
        for _ in 0..MAX_FLUSHERS {
            assert!(!s.next_round(Duration::ZERO), "nothing left: each stops");
        }
        assert!(s.request(), "all stopped: start one again");
    }

    #[test]
    fn a_request_while_a_round_runs_gets_a_round_of_its_own() {
        let s = FlushSignal::default();
        assert!(s.request());
        assert!(s.next_round(Duration::ZERO));
        // The round is running; a request now must not be folded into it.
        assert!(s.request(), "a second flusher starts for it");
        assert!(s.next_round(Duration::ZERO), "its round");
        assert!(!s.next_round(Duration::ZERO), "one round per request");
    }

    /// Threads requesting rounds against real flusher threads: never more than
    /// [`MAX_FLUSHERS`] rounds at once, and the last request is followed by a round that
    /// started after it.
    #[test]
    fn concurrent_requests_are_all_covered_within_the_cap() {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
        struct Shared {
            signal: FlushSignal,
            requested: AtomicU64,
            covered: AtomicU64,
            in_round: AtomicUsize,
            most_at_once: AtomicUsize,
        }
        fn flusher(sh: Arc<Shared>) {
            while sh.signal.next_round(Duration::from_millis(5)) {
                let now = sh.in_round.fetch_add(1, SeqCst) + 1;
                sh.most_at_once.fetch_max(now, SeqCst);
                sh.covered.fetch_max(sh.requested.load(SeqCst), SeqCst);
                std::thread::sleep(Duration::from_micros(200));
                sh.in_round.fetch_sub(1, SeqCst);
            }
        }
        let sh = Arc::new(Shared {
            signal: FlushSignal::default(),
            requested: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            in_round: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        });
        let flushers = Arc::new(Mutex::new(Vec::new()));
        let requesters: Vec<_> = (0..4)
            .map(|_| {
                let (sh, flushers) = (Arc::clone(&sh), Arc::clone(&flushers));
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        sh.requested.fetch_add(1, SeqCst);
                        if sh.signal.request() {
                            let sh = Arc::clone(&sh);
                            let f = std::thread::spawn(move || flusher(sh));
                            flushers.lock().unwrap().push(f);
                        }
                        std::thread::sleep(Duration::from_micros(50));
                    }
                })
            })
            .collect();
        for r in requesters {
            r.join().unwrap();
        }
        let all: Vec<_> = std::mem::take(&mut *flushers.lock().unwrap());
        for f in all {
            f.join().unwrap();
        }
        assert_eq!(
            sh.covered.load(SeqCst),
            1200,
            "the last request got a round"
        );
        let most = sh.most_at_once.load(SeqCst);
        assert!(most <= MAX_FLUSHERS, "{most} rounds at once");
        assert_eq!(sh.signal.lock().running, 0, "every flusher stopped");
    }

    /// A flusher that has run its round and waits (up to a minute) for the next request, on
    /// a thread of its own: the thread answers whether another round came.
    fn lingering() -> (Arc<FlushSignal>, std::thread::JoinHandle<bool>) {
        let s = Arc::new(FlushSignal::default());
        assert!(s.request());
        assert!(s.next_round(Duration::ZERO));
        let flusher = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.next_round(Duration::from_secs(60)))
        };
        (s, flusher)
    }

    #[test]
    fn closing_ends_a_lingering_flusher_and_refuses_new_ones() {
        let (s, flusher) = lingering();
        s.close();
        assert!(!flusher.join().unwrap(), "closed: no more rounds");
        assert!(!s.request(), "closed: no new flusher");
    }

    #[test]
    fn a_lingering_flusher_is_woken_by_a_request() {
        let (s, flusher) = lingering();
        // Wait until it is idle inside `next_round` (a request before that would start a
        // second flusher, rightly: the first still counts as busy).
        while s.lock().idle == 0 {
            std::thread::yield_now();
        }
        assert!(!s.request(), "one is idle: woken, none started");
        assert!(flusher.join().unwrap());
    }

    #[test]
    fn a_flusher_that_stopped_unasked_is_started_again() {
        let s = FlushSignal::default();
        assert!(s.request());
        s.stopped();
        assert!(s.request());
    }
}
