//! When a partition's group-commit rounds run: a flusher on a blocking thread runs them back
//! to back while requests keep coming and gives its thread back once they stop.
//!
//! An acks=all request used to reach the fsync through a flusher task and a `spawn_blocking`
//! hand-off each round, and come back through both; now the thread that fsyncs is the one
//! that plans the round and answers its waiters. [`FlushSignal`] is the small state machine
//! between the requesters and that thread: a request is never lost (a round starts after
//! every request), and at most one flusher runs per partition.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Default)]
struct Signal {
    /// A round was asked for and has not started yet.
    wanted: bool,
    /// A flusher is running (or about to).
    running: bool,
    /// The partition is gone: the flusher ends.
    closed: bool,
}

/// Requests for group-commit rounds, and the running flusher's wake-up.
#[derive(Debug, Default)]
pub struct FlushSignal {
    state: Mutex<Signal>,
    wake: Condvar,
}

impl FlushSignal {
    fn lock(&self) -> MutexGuard<'_, Signal> {
        // Nothing panics while holding it; the flags are consistent whatever happened.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a round. `true`: no flusher runs, and the caller must start one (which then
    /// counts as running).
    pub fn request(&self) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        s.wanted = true;
        if s.running {
            drop(s);
            self.wake.notify_one();
            false
        } else {
            s.running = true;
            true
        }
    }

    /// The flusher: whether to run another round — `true` once a request is pending
    /// (waiting up to `linger` for one), `false` when none came or the partition is closed;
    /// then the flusher has stopped and the next request starts a new one.
    pub fn next_round(&self, linger: Duration) -> bool {
        let s = self.lock();
        let (mut s, _) = self
            .wake
            .wait_timeout_while(s, linger, |s| !s.wanted && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        if s.wanted && !s.closed {
            s.wanted = false;
            true
        } else {
            s.running = false;
            false
        }
    }

    /// The flusher ends without being asked (its partition is gone, or it unwinds).
    pub fn stopped(&self) {
        self.lock().running = false;
    }

    /// The partition is gone: a waiting flusher ends now, and no new one starts.
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
        assert!(!s.request(), "one runs already");
        assert!(s.next_round(Duration::ZERO), "the requests are one round");
        assert!(
            !s.next_round(Duration::ZERO),
            "nothing pending: the flusher stops"
        );
        assert!(s.request(), "stopped: the next request starts one again");
    }

    #[test]
    fn a_request_while_a_round_runs_gets_a_round_of_its_own() {
        let s = FlushSignal::default();
        assert!(s.request());
        assert!(s.next_round(Duration::ZERO));
        // The round is running; a request now must not be folded into it.
        assert!(!s.request());
        assert!(s.next_round(Duration::ZERO));
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
        std::thread::sleep(Duration::from_millis(20));
        assert!(!s.request(), "it runs: woken, not started again");
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
