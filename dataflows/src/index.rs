//! How subscriptions are indexed for the join, so a report probes a few keys instead of scanning
//! every subscription of its type: (report type, portfolio) for portfolio-filtered subscriptions,
//! (report type, any) for the rest. Each (report, subscription) pair meets under exactly one key.

use crate::report::{ReportDataType, ReportDistribution};
use crate::subscription::ReportSubscription;

/// `None` as the portfolio means "any portfolio".
pub type IndexKey = (ReportDataType, Option<String>);

pub fn subscription_keys(subscription: &ReportSubscription) -> Vec<IndexKey> {
    let mut types = subscription.report_types.clone();
    types.sort();
    types.dedup();
    let mut portfolios = subscription.filters.portfolio_ids.clone();
    portfolios.sort();
    portfolios.dedup();
    let mut keys = Vec::with_capacity(types.len() * portfolios.len().max(1));
    for report_type in types {
        if portfolios.is_empty() {
            keys.push((report_type, None));
        } else {
            keys.extend(portfolios.iter().map(|p| (report_type, Some(p.clone()))));
        }
    }
    keys
}

pub fn report_keys(report: &ReportDistribution) -> [IndexKey; 2] {
    [(report.data_type, Some(report.report_data.portfolio_id.clone())), (report.data_type, None)]
}
