//! The named analyses served at `GET /api/v1/reporting/analytics/{name}`: each one SQL query over
//! the delivery tables, filtered by the same parameters (time range, report type, channel,
//! subscriber), answering rows as JSON objects rendered by DuckDB (`to_json`, columns in order).
//!
//! Definitions (so figures can be checked by hand):
//! - an attempt counts in the hour / range its `finished_at` falls in; a dead letter by its
//!   `dead_lettered_at`; a created delivery by its report's `accepted_at`;
//! - `success_rate` = delivered / (delivered + dead-lettered): deliveries that ended, and how many
//!   ended well; `attempt_success_rate` = successful attempts / attempts;
//! - latency (`*_latency_ms`, `*_time_to_deliver_ms`) = report accepted -> receiver answered, over
//!   successful attempts; percentiles are `quantile_disc` (an actual observed value: the smallest
//!   with at least the fraction at or below it);
//! - time buckets and `hour_of_day` are UTC.

use duckdb::types::Value;
use duckdb::Connection;

use crate::analytics::rows::Micros;
use crate::analytics::AnalyticsError;

/// Which analysis; the names are the URL's `{name}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Analysis {
    /// Delivery success rate and latency percentiles by channel and hour.
    SuccessRateLatency,
    /// Per channel: success, first-attempt success, retries, time to deliver.
    ChannelEffectiveness,
    /// Per subscriber: deliveries, failures, dead letters, dashboard notifications delivered,
    /// webhook acknowledgements (2xx answers), channels used.
    SubscriberEngagement,
    /// Top error reasons per channel, each with an error class and its share of the channel's failures.
    FailureClassification,
    /// Volume (reports, deliveries) by report type, report period and hour of day.
    DistributionPatterns,
    /// Suggestions drawn from the above: failing endpoints, subscribers better served by another
    /// channel, destinations that fail permanently.
    Recommendations,
}

impl Analysis {
    pub const ALL: [Analysis; 6] = [
        Analysis::SuccessRateLatency,
        Analysis::ChannelEffectiveness,
        Analysis::SubscriberEngagement,
        Analysis::FailureClassification,
        Analysis::DistributionPatterns,
        Analysis::Recommendations,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Analysis::SuccessRateLatency => "success-rate-latency",
            Analysis::ChannelEffectiveness => "channel-effectiveness",
            Analysis::SubscriberEngagement => "subscriber-engagement",
            Analysis::FailureClassification => "failure-classification",
            Analysis::DistributionPatterns => "distribution-patterns",
            Analysis::Recommendations => "recommendations",
        }
    }

    pub fn parse(name: &str) -> Option<Analysis> {
        Analysis::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Which rows an analysis looks at. Times are microseconds since the epoch, `[from, to)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    pub report_type: Option<String>,
    pub channel: Option<String>,
    pub subscriber_id: Option<String>,
}

impl Filter {
    /// A WHERE condition over a delivery table whose event time is `time_column`; its values are
    /// pushed to `params` in placeholder order.
    fn condition(&self, time_column: &str, params: &mut Vec<Value>) -> String {
        let mut parts = vec!["TRUE".to_string()];
        if let Some(from) = self.from {
            parts.push(format!("{time_column} >= make_timestamp(?::BIGINT)"));
            params.push(Value::BigInt(from));
        }
        if let Some(to) = self.to {
            parts.push(format!("{time_column} < make_timestamp(?::BIGINT)"));
            params.push(Value::BigInt(to));
        }
        for (column, value) in
            [("report_type", &self.report_type), ("channel", &self.channel), ("subscriber_id", &self.subscriber_id)]
        {
            if let Some(value) = value {
                parts.push(format!("{column} = ?"));
                params.push(Value::Text(value.clone()));
            }
        }
        parts.join(" AND ")
    }
}

/// Thresholds of the recommendations and the size of the failure ranking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tuning {
    /// Error reasons listed per channel (failure-classification).
    pub top: u32,
    /// Attempts a (subscriber, channel) pair needs before it is judged.
    pub min_attempts: u32,
    /// Failure share from which an endpoint counts as failing often.
    pub failure_rate: f64,
    /// How much better (in attempt success rate) another channel must do to be suggested.
    pub min_improvement: f64,
    /// Permanent failures from which a destination is reported as needing a fix.
    pub min_permanent: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { top: 5, min_attempts: 10, failure_rate: 0.25, min_improvement: 0.3, min_permanent: 3 }
    }
}

/// An analysis' answer: rows as JSON object texts, and whether the store holds every row of the
/// range (rows refused while the writer was behind make it incomplete).
#[derive(Clone, Debug)]
pub struct AnalysisRows {
    pub rows: Vec<String>,
    pub dropped_rows: u64,
}

impl AnalysisRows {
    pub fn complete(&self) -> bool {
        self.dropped_rows == 0
    }
}

pub fn run(conn: &Connection, analysis: Analysis, filter: &Filter, tuning: &Tuning) -> Result<AnalysisRows, AnalyticsError> {
    let mut params = Vec::new();
    let sql = match analysis {
        Analysis::SuccessRateLatency => success_rate_latency(filter, &mut params),
        Analysis::ChannelEffectiveness => channel_effectiveness(filter, &mut params),
        Analysis::SubscriberEngagement => subscriber_engagement(filter, &mut params),
        Analysis::FailureClassification => failure_classification(filter, tuning, &mut params),
        Analysis::DistributionPatterns => distribution_patterns(filter, &mut params),
        Analysis::Recommendations => recommendations(filter, tuning, &mut params),
    };
    let wrapped = format!("SELECT to_json(analysis_row)::VARCHAR FROM ({sql}) AS analysis_row");
    let mut statement = conn.prepare(&wrapped)?;
    let rows = statement
        .query_map(duckdb::params_from_iter(params), |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AnalysisRows { rows, dropped_rows: dropped_rows(conn, filter)? })
}

/// Rows refused while the writer was behind, within the filter's time range.
fn dropped_rows(conn: &Connection, filter: &Filter) -> Result<u64, AnalyticsError> {
    let dropped: i64 = conn.query_row(
        "SELECT coalesce(sum(rows_dropped), 0)::BIGINT FROM ingest_gaps
         WHERE last_at >= make_timestamp(?::BIGINT) AND first_at < make_timestamp(?::BIGINT)",
        duckdb::params![filter.from.unwrap_or(i64::MIN / 2), filter.to.unwrap_or(i64::MAX / 2)],
        |row| row.get(0),
    )?;
    Ok(dropped.max(0) as u64)
}

const HOUR: &str = "'%Y-%m-%dT%H:%M:%SZ'";

fn success_rate_latency(filter: &Filter, params: &mut Vec<Value>) -> String {
    let attempts = filter.condition("finished_at", params);
    let dead = filter.condition("dead_lettered_at", params);
    format!(
        "WITH s AS (
            SELECT channel, date_trunc('hour', finished_at) AS hour,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE succeeded) AS delivered,
                   count(*) FILTER (WHERE NOT succeeded) AS failed_attempts,
                   quantile_disc(latency_ms, 0.5) FILTER (WHERE succeeded) AS p50,
                   quantile_disc(latency_ms, 0.95) FILTER (WHERE succeeded) AS p95,
                   quantile_disc(latency_ms, 0.99) FILTER (WHERE succeeded) AS p99
            FROM delivery_attempts WHERE {attempts} GROUP BY ALL),
        d AS (
            SELECT channel, date_trunc('hour', dead_lettered_at) AS hour, count(*) AS dead_lettered
            FROM dead_letters WHERE {dead} GROUP BY ALL),
        j AS (
            SELECT channel, hour, coalesce(attempts, 0) AS attempts, coalesce(delivered, 0) AS delivered,
                   coalesce(failed_attempts, 0) AS failed_attempts, coalesce(dead_lettered, 0) AS dead_lettered,
                   p50, p95, p99
            FROM s FULL OUTER JOIN d USING (channel, hour))
        SELECT channel, strftime(hour, {HOUR}) AS hour, attempts, delivered, failed_attempts, dead_lettered,
               CASE WHEN delivered + dead_lettered > 0 THEN round(delivered / (delivered + dead_lettered), 4) END AS success_rate,
               CASE WHEN attempts > 0 THEN round(delivered / attempts, 4) END AS attempt_success_rate,
               p50 AS p50_latency_ms, p95 AS p95_latency_ms, p99 AS p99_latency_ms
        FROM j ORDER BY channel, hour"
    )
}

fn channel_effectiveness(filter: &Filter, params: &mut Vec<Value>) -> String {
    let attempts = filter.condition("finished_at", params);
    let dead = filter.condition("dead_lettered_at", params);
    format!(
        "WITH s AS (
            SELECT channel,
                   count(DISTINCT delivery_id) AS deliveries_attempted,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE succeeded) AS delivered,
                   count(*) FILTER (WHERE attempt = 1) AS first_attempts,
                   count(*) FILTER (WHERE attempt = 1 AND succeeded) AS delivered_first_attempt,
                   count(*) FILTER (WHERE attempt > 1) AS retries,
                   avg(attempt) FILTER (WHERE succeeded) AS avg_attempts_to_deliver,
                   avg(latency_ms) FILTER (WHERE succeeded) AS avg_time_to_deliver_ms,
                   quantile_disc(latency_ms, 0.95) FILTER (WHERE succeeded) AS p95_time_to_deliver_ms,
                   avg(attempt_ms) AS avg_attempt_ms
            FROM delivery_attempts WHERE {attempts} GROUP BY channel),
        d AS (SELECT channel, count(*) AS dead_lettered FROM dead_letters WHERE {dead} GROUP BY channel),
        j AS (SELECT * REPLACE (coalesce(delivered, 0) AS delivered), coalesce(dead_lettered, 0) AS dead
              FROM s FULL OUTER JOIN d USING (channel))
        SELECT channel,
               coalesce(deliveries_attempted, 0) AS deliveries_attempted,
               coalesce(attempts, 0) AS attempts,
               delivered,
               dead AS dead_lettered,
               CASE WHEN delivered + dead > 0 THEN round(delivered / (delivered + dead), 4) END AS success_rate,
               CASE WHEN first_attempts > 0 THEN round(delivered_first_attempt / first_attempts, 4) END AS first_attempt_success_rate,
               coalesce(retries, 0) AS retries,
               round(avg_attempts_to_deliver, 3) AS avg_attempts_to_deliver,
               round(avg_time_to_deliver_ms, 3) AS avg_time_to_deliver_ms,
               p95_time_to_deliver_ms,
               round(avg_attempt_ms, 3) AS avg_attempt_ms
        FROM j ORDER BY channel"
    )
}

fn subscriber_engagement(filter: &Filter, params: &mut Vec<Value>) -> String {
    let created = filter.condition("accepted_at", params);
    let attempts = filter.condition("finished_at", params);
    let dead = filter.condition("dead_lettered_at", params);
    format!(
        "WITH c AS (
            SELECT subscriber_id, count(*) AS deliveries, list_sort(list_distinct(list(channel))) AS channels
            FROM deliveries WHERE {created} GROUP BY subscriber_id),
        s AS (
            SELECT subscriber_id,
                   count(*) FILTER (WHERE succeeded) AS delivered,
                   count(*) FILTER (WHERE NOT succeeded) AS failed_attempts,
                   count(*) FILTER (WHERE succeeded AND channel = 'DASHBOARD_NOTIFICATION') AS dashboard_notifications,
                   count(*) FILTER (WHERE succeeded AND channel = 'API_WEBHOOK') AS webhook_acknowledgements,
                   max(finished_at) FILTER (WHERE succeeded) AS last_delivered_at
            FROM delivery_attempts WHERE {attempts} GROUP BY subscriber_id),
        d AS (SELECT subscriber_id, count(*) AS dead_lettered FROM dead_letters WHERE {dead} GROUP BY subscriber_id)
        SELECT subscriber_id,
               coalesce(deliveries, 0) AS deliveries,
               coalesce(delivered, 0) AS delivered,
               coalesce(failed_attempts, 0) AS failed_attempts,
               coalesce(dead_lettered, 0) AS dead_lettered,
               coalesce(dashboard_notifications, 0) AS dashboard_notifications,
               coalesce(webhook_acknowledgements, 0) AS webhook_acknowledgements,
               coalesce(channels, []) AS channels,
               strftime(last_delivered_at, {HOUR}) AS last_delivered_at
        FROM c FULL OUTER JOIN s USING (subscriber_id) FULL OUTER JOIN d USING (subscriber_id)
        ORDER BY subscriber_id"
    )
}

/// The error classes, from the reasons the sinks write (`HTTP 503: ...`, `timed out ...`, ...).
const ERROR_CLASS: &str = "CASE
    WHEN regexp_matches(error, 'HTTP 429') THEN 'RATE_LIMITED'
    WHEN regexp_matches(error, 'HTTP 5[0-9][0-9]') THEN 'HTTP_5XX'
    WHEN regexp_matches(error, 'HTTP 4[0-9][0-9]') THEN 'HTTP_4XX'
    WHEN regexp_matches(lower(error), 'timed out|timeout|no answer in time') THEN 'TIMEOUT'
    WHEN regexp_matches(lower(error), 'host key') THEN 'HOST_KEY'
    WHEN regexp_matches(lower(error), 'unregistered|device token') THEN 'DEAD_DEVICE_TOKEN'
    WHEN regexp_matches(lower(error), 'connect|connection|refused|reset|resolve|dns') THEN 'CONNECTION'
    ELSE 'OTHER' END";

fn failure_classification(filter: &Filter, tuning: &Tuning, params: &mut Vec<Value>) -> String {
    let attempts = filter.condition("finished_at", params);
    params.push(Value::Int(tuning.top as i32));
    format!(
        "WITH f AS (
            SELECT channel, error_kind, left(coalesce(error, ''), 200) AS reason, {ERROR_CLASS} AS error_class
            FROM delivery_attempts WHERE NOT succeeded AND {attempts}),
        g AS (SELECT channel, error_class, error_kind, reason, count(*) AS failures FROM f GROUP BY ALL),
        t AS (SELECT channel, sum(failures) AS channel_failures FROM g GROUP BY channel)
        SELECT channel,
               row_number() OVER (PARTITION BY channel ORDER BY failures DESC, reason, error_kind) AS rank,
               error_class, error_kind, reason, failures,
               round(failures / channel_failures, 4) AS share_of_channel_failures
        FROM g JOIN t USING (channel)
        QUALIFY rank <= ?
        ORDER BY channel, rank"
    )
}

fn distribution_patterns(filter: &Filter, params: &mut Vec<Value>) -> String {
    let created = filter.condition("accepted_at", params);
    format!(
        "WITH d AS (SELECT * FROM deliveries WHERE {created})
        SELECT * FROM (
            SELECT 'report_type' AS dimension, report_type AS value,
                   count(DISTINCT report_id) AS reports, count(*) AS deliveries FROM d GROUP BY report_type
            UNION ALL
            SELECT 'report_period', report_period, count(DISTINCT report_id), count(*) FROM d GROUP BY report_period
            UNION ALL
            SELECT 'hour_of_day', lpad(hour(accepted_at)::VARCHAR, 2, '0'), count(DISTINCT report_id), count(*)
            FROM d GROUP BY hour(accepted_at))
        ORDER BY dimension, value"
    )
}

fn recommendations(filter: &Filter, tuning: &Tuning, params: &mut Vec<Value>) -> String {
    let attempts = filter.condition("finished_at", params);
    let min_attempts = tuning.min_attempts as i64;
    let failure_rate = tuning.failure_rate;
    let min_improvement = tuning.min_improvement;
    let min_permanent = tuning.min_permanent as i64;
    // Thresholds are numbers from typed parameters, formatted into the text (never caller text).
    format!(
        "WITH a AS (SELECT * FROM delivery_attempts WHERE {attempts}),
        sc AS (
            SELECT subscriber_id, channel, count(*) AS attempts,
                   count(*) FILTER (WHERE NOT succeeded) AS failed,
                   count(*) FILTER (WHERE error_kind = 'PERMANENT') AS permanent,
                   count(*) FILTER (WHERE succeeded) / count(*) AS attempt_success_rate
            FROM a GROUP BY subscriber_id, channel),
        top_error AS (
            SELECT subscriber_id, channel, error FROM (
                SELECT subscriber_id, channel, error, count(*) AS n FROM a WHERE NOT succeeded GROUP BY ALL)
            QUALIFY row_number() OVER (PARTITION BY subscriber_id, channel ORDER BY n DESC, error) = 1),
        failing AS (
            SELECT 'ENDPOINT_FAILING' AS kind, sc.subscriber_id, sc.channel,
                   printf('%s deliveries to %s fail often: %d of %d attempts failed; most common error: %s',
                          sc.channel, sc.subscriber_id, failed, attempts, e.error) AS message,
                   to_json({{'attempts': attempts, 'failed': failed, 'failure_rate': round(failed / attempts, 4),
                             'top_error': e.error}}) AS evidence
            FROM sc LEFT JOIN top_error e USING (subscriber_id, channel)
            WHERE attempts >= {min_attempts} AND failed / attempts >= {failure_rate}),
        better AS (
            SELECT 'SWITCH_CHANNEL' AS kind, w.subscriber_id, w.channel,
                   printf('%s is served better by %s (%.1f%% of attempts succeed) than by %s (%.1f%%)',
                          w.subscriber_id, b.channel, 100 * b.attempt_success_rate, w.channel,
                          100 * w.attempt_success_rate) AS message,
                   to_json({{'better_channel': b.channel, 'attempt_success_rate': round(w.attempt_success_rate, 4),
                             'better_attempt_success_rate': round(b.attempt_success_rate, 4),
                             'attempts': w.attempts, 'better_channel_attempts': b.attempts}}) AS evidence
            FROM sc w JOIN sc b ON w.subscriber_id = b.subscriber_id AND w.channel <> b.channel
            WHERE w.attempts >= {min_attempts} AND b.attempts >= {min_attempts}
              AND b.attempt_success_rate - w.attempt_success_rate >= {min_improvement}
            QUALIFY row_number() OVER (PARTITION BY w.subscriber_id, w.channel
                                       ORDER BY b.attempt_success_rate DESC, b.channel) = 1),
        broken AS (
            SELECT 'FIX_DESTINATION' AS kind, subscriber_id, channel,
                   printf('%d attempts to %s over %s failed permanently (they are dead-lettered, not retried): fix or remove the destination',
                          permanent, subscriber_id, channel) AS message,
                   to_json({{'permanent_failures': permanent, 'attempts': attempts}}) AS evidence
            FROM sc WHERE permanent >= {min_permanent})
        SELECT * FROM (SELECT * FROM failing UNION ALL SELECT * FROM better UNION ALL SELECT * FROM broken)
        ORDER BY kind, subscriber_id, channel"
    )
}
