//! Which offsets may be committed. Records of one partition are processed concurrently, so they
//! finish out of order; an offset is committable only once it and every offset before it (that this
//! consumer took) has finished. Committing past an unfinished record would lose it on a crash.

use std::collections::{BTreeSet, HashMap};

/// Per-partition bookkeeping of records taken and not finished yet.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    in_flight: BTreeSet<i64>,
    /// Highest offset taken so far.
    highest_taken: Option<i64>,
    /// Lowest offset taken: a commit point below it would be no progress.
    lowest_taken: Option<i64>,
    /// Highest offset already reported as committable, so it is reported once.
    reported: Option<i64>,
}

impl OffsetTracker {
    /// Records that `offset` was taken and is being processed.
    pub fn take(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self.partitions.entry((topic.to_string(), partition)).or_default();
        p.in_flight.insert(offset);
        p.highest_taken = Some(p.highest_taken.map_or(offset, |h| h.max(offset)));
        p.lowest_taken = Some(p.lowest_taken.map_or(offset, |l| l.min(offset)));
    }

    /// Records that `offset` is finished (durable or dead-lettered). Returns the last offset of the
    /// partition that may now be committed (every record up to it is finished), if that moved.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        p.in_flight.remove(&offset);
        let committable = match p.in_flight.first() {
            Some(&oldest) => oldest.checked_sub(1).filter(|o| *o >= 0)?,
            None => p.highest_taken?,
        };
        if p.reported.is_some_and(|r| r >= committable) || p.lowest_taken.is_some_and(|l| committable < l) {
            return None;
        }
        p.reported = Some(committable);
        Some(committable)
    }

    /// Forgets a partition this consumer no longer owns (after a rebalance); its unfinished
    /// records will be read again by the new owner.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
    }

    /// Records taken and not finished, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_moves_the_commit_point_each_time() {
        let mut t = OffsetTracker::default();
        for o in 10..13 {
            t.take("r", 0, o);
        }
        assert_eq!(t.finish("r", 0, 10), Some(10));
        assert_eq!(t.finish("r", 0, 11), Some(11));
        assert_eq!(t.finish("r", 0, 12), Some(12));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_later_record_finishing_first_commits_nothing_past_the_unfinished_one() {
        let mut t = OffsetTracker::default();
        for o in 0..4 {
            t.take("r", 0, o);
        }
        assert_eq!(t.finish("r", 0, 2), None, "offset 0 is still in flight");
        assert_eq!(t.finish("r", 0, 3), None);
        assert_eq!(t.finish("r", 0, 0), Some(0), "1 is still in flight");
        assert_eq!(t.finish("r", 0, 1), Some(3), "everything up to 3 is done");
    }

    #[test]
    fn partitions_are_independent_and_forgettable() {
        let mut t = OffsetTracker::default();
        t.take("r", 0, 5);
        t.take("r", 1, 7);
        t.take("r", 1, 8);
        assert_eq!(t.finish("r", 1, 8), None);
        assert_eq!(t.finish("r", 0, 5), Some(5));
        t.forget("r", 1);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.finish("r", 1, 7), None, "a forgotten partition reports nothing");
    }

    #[test]
    fn gaps_in_offsets_such_as_compacted_or_transaction_markers_do_not_block() {
        let mut t = OffsetTracker::default();
        t.take("r", 0, 3);
        t.take("r", 0, 9);
        assert_eq!(t.finish("r", 0, 9), None);
        assert_eq!(t.finish("r", 0, 3), Some(9));
    }
}
