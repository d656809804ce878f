//! repdist's distribution logic as a timely/differential dataflow, with no I/O and no clock:
//! time is an input, so every behaviour is testable in virtual time.
//!
//! Report events are half-joined against the subscriptions active at each report's time, giving the
//! delivery set; attempt outcomes fed back in drive retries (delayed in dataflow time), dead letters
//! and windowed distribution statistics. Reports for SCHEDULED subscriptions are collected into one
//! digest per subscription, channel and cron tick, due when dataflow time reaches the tick.

pub mod channel_settings;
pub mod content;
pub mod dataflow;
pub mod delivery;
pub mod digest;
pub mod index;
pub mod output;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod stats;
pub mod subscription;
pub mod validation;

/// Dataflow time: microseconds since the Unix epoch, as assigned by the host's sequencer.
pub type Time = u64;
