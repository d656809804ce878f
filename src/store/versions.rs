//! Which stored subscription versions a restart must feed back: the same rule for every backend.

use std::collections::HashMap;

use dataflows::subscription::{ReportSubscription, SubscriptionStatus};
use dataflows::Time;

/// From each subscription's versions (in the order they were stored, with the time each took
/// effect), the active ones still in effect at or after `earliest` (the oldest report awaiting its
/// delivery set), as `(version, valid_from, valid_until)`, by `valid_from`. Without such a report,
/// only current versions. A version replaced at the very time it took effect (two changes in one
/// commit) was never in effect and is left out.
pub(crate) fn in_effect(
    versions: HashMap<String, Vec<(Time, ReportSubscription)>>,
    earliest: Option<Time>,
) -> Vec<(ReportSubscription, Time, Option<Time>)> {
    let mut out = Vec::new();
    for list in versions.into_values() {
        for (i, (from, version)) in list.iter().enumerate() {
            let until = list.get(i + 1).map(|(t, _)| *t);
            let relevant = match (until, earliest) {
                (None, _) => true,
                (Some(until), _) if until <= *from => false,
                (Some(until), Some(earliest)) => until > earliest,
                (Some(_), None) => false,
            };
            if version.status == SubscriptionStatus::Active && relevant {
                out.push((version.clone(), *from, until));
            }
        }
    }
    out.sort_by(|a, b| (a.1, &a.0.subscription_id).cmp(&(b.1, &b.0.subscription_id)));
    out
}
