//! `distribution_stats` windows kept open until they can no longer change, then handed on once.
//!
//! The dataflow revises a window's figures as attempts finish inside it. A window can still be
//! revised shortly after its end (outcomes reach the dataflow after they finish), so one is
//! closed a grace period after its end. A revision that arrives for a window already closed is
//! handed on again; the store keeps the latest figures per window (an upsert by key).

use std::collections::BTreeMap;

use crate::analytics::rows::{Micros, StatsWindowRow};

#[derive(Debug)]
pub struct OpenWindows {
    grace: Micros,
    open: BTreeMap<(Micros, &'static str, &'static str), StatsWindowRow>,
}

impl OpenWindows {
    /// `grace`: how long after its end a window is still expected to change.
    pub fn new(grace: Micros) -> Self {
        OpenWindows { grace, open: BTreeMap::new() }
    }

    /// The window's latest figures.
    pub fn update(&mut self, row: StatsWindowRow) {
        self.open.insert((row.window_start, row.report_type, row.channel), row);
    }

    /// Windows whose end is at least the grace period before `now`, removed and returned oldest first.
    pub fn close_until(&mut self, now: Micros) -> Vec<StatsWindowRow> {
        let closing: Vec<_> = self
            .open
            .iter()
            .filter(|(_, row)| row.window_end.saturating_add(self.grace) <= now)
            .map(|(key, _)| *key)
            .collect();
        closing.into_iter().filter_map(|key| self.open.remove(&key)).collect()
    }

    /// Every window, at shutdown: nothing revises them any more.
    pub fn close_all(&mut self) -> Vec<StatsWindowRow> {
        std::mem::take(&mut self.open).into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: Micros, channel: &'static str, attempted: i64) -> StatsWindowRow {
        StatsWindowRow {
            window_start: start,
            window_end: start + 60,
            report_type: "RISK_REPORT",
            channel,
            attempted,
            successful: attempted,
            failed: 0,
            avg_delivery_time_ms: None,
            p99_delivery_time_ms: None,
        }
    }

    #[test]
    fn a_window_closes_a_grace_period_after_its_end_with_its_latest_figures() {
        let mut windows = OpenWindows::new(10);
        windows.update(row(0, "EMAIL", 1));
        windows.update(row(0, "EMAIL", 3));
        windows.update(row(60, "EMAIL", 5));
        assert!(windows.close_until(69).is_empty());
        assert_eq!(windows.close_until(70), vec![row(0, "EMAIL", 3)]);
        assert_eq!(windows.len(), 1);
        assert!(windows.close_until(70).is_empty());
        assert_eq!(windows.close_all(), vec![row(60, "EMAIL", 5)]);
        assert!(windows.is_empty());
    }

    #[test]
    fn windows_of_different_channels_are_separate() {
        let mut windows = OpenWindows::new(0);
        windows.update(row(0, "EMAIL", 1));
        windows.update(row(0, "SFTP", 2));
        assert_eq!(windows.close_until(60).len(), 2);
    }
}
