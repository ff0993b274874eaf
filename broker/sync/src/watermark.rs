//! A log behind a read-write lock and the high watermark published over it.

use crate::sync::{AtomicI64, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A log (any state `S`) and its high watermark (HW).
///
/// The protocol: a writer changes the state under [`write`](Self::write) and only then
/// [`publish`](Self::publish)es a HW covering what it wrote (under the write guard or after
/// releasing it); a reader takes the HW first and then the state under [`read`](Self::read)
/// ([`read_below`](Self::read_below) does both), so every offset below the HW it saw is
/// already there, and it bounds what it serves by that HW. The HW only moves forward.
#[derive(Debug)]
pub struct Watermarked<S> {
    state: RwLock<S>,
    high_watermark: AtomicI64,
}

impl<S> Watermarked<S> {
    pub fn new(state: S, high_watermark: i64) -> Self {
        Self {
            state: RwLock::new(state),
            high_watermark: AtomicI64::new(high_watermark),
        }
    }

    /// The state, shared. A poisoned lock is taken as is: the state's own methods keep it
    /// consistent (a panicking writer leaves a log whose end is where its last append ended).
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, exclusively (appends, truncations, retention).
    pub fn write(&self) -> RwLockWriteGuard<'_, S> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The HW last published.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Raise the HW to `hw` (a lower or equal value changes nothing). Every offset below `hw`
    /// must already be in the state. Returns whether the HW moved.
    pub fn publish(&self, hw: i64) -> bool {
        self.high_watermark.fetch_max(hw, Ordering::AcqRel) < hw
    }

    /// Run `f` on the state (shared) with the bound it may serve up to: the current HW, or
    /// `limit` if lower (a HW the caller read earlier, so that what it serves and the HW it
    /// reports agree).
    pub fn read_below<R>(&self, limit: i64, f: impl FnOnce(&S, i64) -> R) -> R {
        // The HW before the lock: whatever it covers was written before it was published.
        let hw = limit.min(self.high_watermark());
        let state = self.read();
        f(&state, hw)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_never_moves_back() {
        let w = Watermarked::new((), 5);
        assert!(!w.publish(3));
        assert_eq!(w.high_watermark(), 5);
        assert!(!w.publish(5));
        assert!(w.publish(8));
        assert_eq!(w.high_watermark(), 8);
    }

    #[test]
    fn a_read_is_bounded_by_the_lower_of_the_limit_and_the_high_watermark() {
        let w = Watermarked::new(vec![0, 1, 2, 3], 3);
        assert_eq!(w.read_below(i64::MAX, |_, hw| hw), 3);
        assert_eq!(w.read_below(2, |_, hw| hw), 2);
        w.write().push(4);
        w.publish(5);
        assert_eq!(w.read_below(i64::MAX, |log, hw| (log.len(), hw)), (5, 5));
    }
}
