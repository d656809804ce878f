//! What leaves the dataflow for the host: each item is stamped with the dataflow time it occurs at.

use crate::delivery::DeliveryTask;
use crate::digest::DigestMember;
use crate::stats::{StatsKey, StatsRow};
use crate::Time;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// An attempt is due now: a new delivery (attempt 1), a retry whose backoff elapsed, or a
    /// resumed / replayed delivery. Emitted only once the dataflow's frontier has reached its time.
    Dispatch(DeliveryTask),
    /// A transient failure will be retried: `task.attempt` is the next attempt, run at `due`.
    RetryScheduled { task: DeliveryTask, due: Time, error: String },
    /// Permanent failure or attempts exhausted; `reason` says which, with the last error.
    DeadLettered { task: DeliveryTask, reason: String },
    /// A report matched a SCHEDULED subscription: it joins this digest. Emitted at the report's
    /// time, with the report's delivery set; the host makes it durable with that set.
    DigestMember(DigestMember),
    /// A digest's tick has come: its first attempt is due (at the tick's time). Retries and resumes
    /// of a digest come as [`Output::Dispatch`] like any delivery's.
    DigestDue(DeliveryTask),
    /// A stats window changed; `None` when the window left the retention horizon.
    Stats(StatsKey, Option<StatsRow>),
}
