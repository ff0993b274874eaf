//! Retention holds: the offsets from which a reader on this node still needs a partition's
//! records, so that retention never deletes a segment holding one of them.
//!
//! The embedded processor is the holder: its recovery replays the journal since its last
//! checkpoint, re-reads the input ranges that journal names and scans each output stream's
//! tail for its last sequence number, so all of that must outlive retention
//! (`processing::RecoveryHolds`). Plain data, no I/O: the retention loop asks
//! [`RetentionHolds::floor`] for each partition and keeps every segment at or above it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What one holder keeps of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicHold {
    /// Every record (the holder does not know its positions yet).
    Everything,
    /// Each listed partition from its offset on; a partition not listed is kept whole.
    From(BTreeMap<i32, i64>),
}

impl TopicHold {
    fn floor(&self, partition: i32) -> i64 {
        match self {
            TopicHold::Everything => 0,
            TopicHold::From(at) => at.get(&partition).copied().unwrap_or(0),
        }
    }
}

/// Every hold on this node, by holder name, then topic.
#[derive(Debug, Default)]
pub struct RetentionHolds {
    holders: Mutex<BTreeMap<String, BTreeMap<String, TopicHold>>>,
}

impl RetentionHolds {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeMap<String, TopicHold>>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `holder` needs every record of these topics (replaces its holds on them).
    pub fn hold_everything<'a>(&self, holder: &str, topics: impl IntoIterator<Item = &'a str>) {
        let mut holders = self.lock();
        let held = holders.entry(holder.to_owned()).or_default();
        for t in topics {
            held.insert(t.to_owned(), TopicHold::Everything);
        }
    }

    /// `holder` needs `topic`'s listed partitions from the given offsets on, and its other
    /// partitions whole (replaces its hold on `topic`).
    pub fn hold_from(&self, holder: &str, topic: &str, from: impl IntoIterator<Item = (i32, i64)>) {
        let at: BTreeMap<i32, i64> = from.into_iter().collect();
        self.lock()
            .entry(holder.to_owned())
            .or_default()
            .insert(topic.to_owned(), TopicHold::From(at));
    }

    /// Drops every hold of `holder`.
    pub fn release(&self, holder: &str) {
        self.lock().remove(holder);
    }

    /// The lowest offset any holder needs of this partition (retention keeps every segment
    /// holding an offset at or above it), or `None` if nothing holds it.
    pub fn floor(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .values()
            .filter_map(|held| held.get(topic))
            .map(|h| h.floor(partition))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_held_has_no_floor() {
        let h = RetentionHolds::default();
        assert_eq!(h.floor("t", 0), None);
        h.hold_from("p", "other", [(0, 5)]);
        assert_eq!(h.floor("t", 0), None);
    }

    #[test]
    fn everything_holds_from_zero_until_positions_replace_it() {
        let h = RetentionHolds::default();
        h.hold_everything("p", ["t", "j"]);
        assert_eq!(h.floor("t", 2), Some(0));
        h.hold_from("p", "t", [(0, 10), (1, 20)]);
        assert_eq!(h.floor("t", 0), Some(10));
        assert_eq!(h.floor("t", 1), Some(20));
        // A partition with no known position is kept whole.
        assert_eq!(h.floor("t", 2), Some(0));
        assert_eq!(h.floor("j", 0), Some(0));
    }

    #[test]
    fn the_lowest_hold_of_all_holders_wins_and_release_drops_one() {
        let h = RetentionHolds::default();
        h.hold_from("a", "t", [(0, 10)]);
        h.hold_from("b", "t", [(0, 4)]);
        assert_eq!(h.floor("t", 0), Some(4));
        h.release("b");
        assert_eq!(h.floor("t", 0), Some(10));
        h.release("a");
        assert_eq!(h.floor("t", 0), None);
    }

    #[test]
    fn a_newer_hold_replaces_the_holders_older_one() {
        let h = RetentionHolds::default();
        h.hold_from("a", "t", [(0, 10)]);
        h.hold_from("a", "t", [(0, 30)]);
        assert_eq!(h.floor("t", 0), Some(30));
    }
}
