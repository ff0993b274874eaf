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
//!
//! Only under light load, though: once a round ends with the next request already waiting,
//! the partition is saturated and extra fsyncs would only cost CPU and disk: a flusher that
//! ends its round so while another is busy stops, and requests wait for the busy flusher's
//! next round (plain group commit) until a round ends with none waiting.

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
    /// The last round to end found the next request already waiting: while so, a request
    /// that finds a flusher busy waits for it rather than wake or start another.
    saturated: bool,
    /// The partition is gone: the flushers end.
    closed: bool,
}

/// Requests for group-commit rounds, and the idle flushers' wake-up.
#[derive(Debug, Default)]
pub struct FlushSignal {
    state: Mutex<Signal>,
    wake: Condvar,
}

impl Signal {
    /// Flushers inside a round (or started and not yet asking for one).
    fn busy(&self) -> usize {
        self.running.saturating_sub(self.idle)
    }
}

impl FlushSignal {
    fn lock(&self) -> MutexGuard<'_, Signal> {
        // Nothing panics while holding it; the counts are consistent whatever happened.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a round. `true`: the caller must start a flusher (which then counts as
    /// running) — none is idle, fewer than [`MAX_FLUSHERS`] run, and either none is busy or
    /// the partition is not saturated. Otherwise the round already pending covers it, an
    /// idle flusher is woken, or a busy one takes the request when its round ends.
    pub fn request(&self) -> bool {
        let mut s = self.lock();
        if s.closed || (s.wanted && s.running > 0) {
            // Already pending with a flusher to take it (the one woken or started for it, or
            // a busy one at the end of its round): that round covers this request too.
            // Waking another would only have it find nothing to do — an acks=all produce
            // asks twice, after its append and again when it starts to wait. (With none
            // running, a flusher stopped unasked: start one below.)
            return false;
        }
        s.wanted = true;
        if s.busy() > 0 && s.saturated {
            false
        } else if s.idle > 0 {
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
    /// `after_round`: the flusher has just ended a round (not: it has just started), so a
    /// request already pending means the partition is saturated.
    pub fn next_round(&self, linger: Duration, after_round: bool) -> bool {
        let mut s = self.lock();
        if after_round {
            s.saturated = s.wanted;
            let others_busy = s.busy().saturating_sub(1);
            if s.saturated && others_busy > 0 && !s.closed {
                // Saturated with another flusher inside a round: that one takes the pending
                // request when its round ends, and this one stops, so that a saturated
                // partition settles on one flusher and plain group commit.
                s.running = s.running.saturating_sub(1);
                return false;
            }
        }
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

    /// A round was asked for and no flusher has taken it yet.
    pub fn pending(&self) -> bool {
        self.lock().wanted
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
    fn the_first_request_starts_a_flusher_that_stops_when_none_is_pending() {
        let s = FlushSignal::default();
        assert!(s.request(), "nothing runs: start one");
        assert!(
            s.next_round(Duration::ZERO, false),
            "the request is one round"
        );
        assert!(
            !s.next_round(Duration::ZERO, true),
            "nothing pending: the flusher stops"
        );
        assert!(s.request(), "stopped: the next request starts one again");
    }

    #[test]
    fn requests_while_every_flusher_is_busy_start_more_up_to_the_cap() {
        let s = FlushSignal::default();
        assert!(s.request(), "nothing runs: start one");
        assert!(
            s.next_round(Duration::ZERO, false),
            "it takes the request: busy"
        );
        for started in 1..MAX_FLUSHERS {
            assert!(s.request(), "{started} busy, light load: start another");
            assert!(s.next_round(Duration::ZERO, false), "it takes the request");
        }
        assert!(!s.request(), "at the cap: a busy one takes it later");
        for _ in 1..MAX_FLUSHERS {
            assert!(
                !s.next_round(Duration::ZERO, true),
                "saturated while others are busy: this one stops"
            );
        }
        assert!(
            s.next_round(Duration::ZERO, true),
            "the last busy one takes it"
        );
        assert!(!s.request(), "saturated and one busy: wait for it");
        assert!(s.next_round(Duration::ZERO, true), "it takes that too");
        assert!(
            !s.next_round(Duration::ZERO, true),
            "a round ends with none waiting: no longer saturated; nothing left, it stops"
        );
        assert!(s.request(), "all stopped: start one again");
        assert!(s.next_round(Duration::ZERO, false));
        assert!(
            s.request(),
            "light load again: a request finding it busy starts another"
        );
    }

    #[test]
    fn a_request_while_one_is_pending_starts_and_wakes_nothing_more() {
        let s = FlushSignal::default();
        assert!(s.request(), "nothing runs: start one");
        assert!(
            !s.request(),
            "that one has not taken the first yet: it takes both"
        );
        assert!(s.next_round(Duration::ZERO, false), "one round");
        assert!(!s.next_round(Duration::ZERO, true), "for both requests");
        assert_eq!(s.lock().running, 0);
    }

    #[test]
    fn a_request_while_a_round_runs_gets_a_round_of_its_own() {
        let s = FlushSignal::default();
        assert!(s.request());
        assert!(s.next_round(Duration::ZERO, false));
        // The round is running; a request now must not be folded into it.
        assert!(s.request(), "a second flusher starts for it");
        assert!(s.next_round(Duration::ZERO, false), "its round");
        assert!(!s.next_round(Duration::ZERO, true), "one round per request");
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
            let mut after_round = false;
            while sh.signal.next_round(Duration::from_millis(5), after_round) {
                after_round = true;
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
        assert!(s.next_round(Duration::ZERO, false));
        let flusher = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.next_round(Duration::from_secs(60), true))
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
