//! `repdist export`: delivery history or stats windows from the analytics database to a Parquet
//! file, written by DuckDB's parquet writer.

use std::path::Path;

use duckdb::Connection;

use crate::analytics::query::quote_literal;
use crate::analytics::rows::Micros;
use crate::analytics::AnalyticsError;

/// What to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// One row per delivery attempt outcome: delivery_id, report_id, subscription_id,
    /// subscriber_id, channel, report_type, report_period, attempt, status (`DELIVERED`, `RETRYING`,
    /// `DEAD_LETTERED`), error_kind, error, accepted_at, delivery_time (when the attempt ended),
    /// latency_ms; oldest first.
    Deliveries,
    /// The closed `distribution_stats` windows, oldest first.
    Stats,
}

/// Writes the rows at or after `since` to `out` (replacing it); returns how many.
pub fn to_parquet(conn: &Connection, what: Export, since: Option<Micros>, out: &Path) -> Result<usize, AnalyticsError> {
    let since = since.unwrap_or(i64::MIN / 2);
    let select = match what {
        Export::Deliveries => format!(
            "SELECT delivery_id, report_id, subscription_id, subscriber_id, channel, report_type, report_period,
                    attempt, status, error_kind, error, accepted_at, delivery_time, latency_ms
             FROM attempt_outcomes WHERE delivery_time >= make_timestamp({since}::BIGINT)
             ORDER BY delivery_time, delivery_id, attempt"
        ),
        Export::Stats => format!(
            "SELECT * FROM distribution_stats WHERE window_start >= make_timestamp({since}::BIGINT)
             ORDER BY window_start, report_type, channel"
        ),
    };
    let target = quote_literal(&out.to_string_lossy());
    Ok(conn.execute(&format!("COPY ({select}) TO {target} (FORMAT parquet)"), [])?)
}
