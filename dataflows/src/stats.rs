//! Windowed `distribution_stats`: per tumbling window x report type x channel.

use serde::{Deserialize, Serialize};

use crate::delivery::DeliveryChannel;
use crate::report::ReportDataType;
use crate::Time;

/// Identifies one stats window row. `window_start` is a multiple of the window length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatsKey {
    pub window_start: Time,
    pub report_type: ReportDataType,
    pub channel: DeliveryChannel,
}

/// The figures of one window. Delivery time is report acceptance to the receiver's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatsRow {
    /// Attempts that ended in the window (successes and failures).
    pub attempted: u64,
    pub successful: u64,
    pub failed: u64,
    /// Over successful attempts; `None` when there were none.
    pub avg_delivery_time_us: Option<u64>,
    pub p99_delivery_time_us: Option<u64>,
}
