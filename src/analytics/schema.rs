//! The analytics database's tables and views. Column order matches the record batches in
//! `rows.rs` (the appender maps columns by position). Timestamps are UTC `TIMESTAMP`s.
//!
//! Tables are only appended to; a delivery's history is its rows across them. `delivery_attempts`
//! has one row per attempt outcome; `attempt_outcomes` adds each attempt's status in the seed's
//! vocabulary (`DELIVERED`, `RETRYING`, `DEAD_LETTERED`), which is what the export writes.

/// Bumped when a table changes shape; a database of another version is refused rather than misread.
pub const SCHEMA_VERSION: i32 = 1;

pub const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id       VARCHAR NOT NULL,
    event_id          VARCHAR NOT NULL,
    report_id         VARCHAR NOT NULL,
    report_type       VARCHAR NOT NULL,
    report_period     VARCHAR NOT NULL,
    portfolio_id      VARCHAR NOT NULL,
    subscription_id   VARCHAR NOT NULL,
    subscriber_id     VARCHAR NOT NULL,
    channel           VARCHAR NOT NULL,
    delivery_priority INTEGER NOT NULL,
    accepted_at       TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id     VARCHAR NOT NULL,
    report_id       VARCHAR NOT NULL,
    report_type     VARCHAR NOT NULL,
    report_period   VARCHAR NOT NULL,
    subscription_id VARCHAR NOT NULL,
    subscriber_id   VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    attempt         INTEGER NOT NULL,
    succeeded       BOOLEAN NOT NULL,
    error_kind      VARCHAR,
    error           VARCHAR,
    accepted_at     TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP NOT NULL,
    latency_ms      DOUBLE NOT NULL,
    attempt_ms      DOUBLE NOT NULL
);

CREATE TABLE IF NOT EXISTS dead_letters (
    delivery_id      VARCHAR NOT NULL,
    report_id        VARCHAR NOT NULL,
    report_type      VARCHAR NOT NULL,
    subscription_id  VARCHAR NOT NULL,
    subscriber_id    VARCHAR NOT NULL,
    channel          VARCHAR NOT NULL,
    attempts         INTEGER NOT NULL,
    reason           VARCHAR NOT NULL,
    accepted_at      TIMESTAMP NOT NULL,
    dead_lettered_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS distribution_stats (
    window_start          TIMESTAMP NOT NULL,
    window_end            TIMESTAMP NOT NULL,
    report_type           VARCHAR NOT NULL,
    channel               VARCHAR NOT NULL,
    deliveries_attempted  BIGINT NOT NULL,
    deliveries_successful BIGINT NOT NULL,
    deliveries_failed     BIGINT NOT NULL,
    avg_delivery_time_ms  DOUBLE,
    p99_delivery_time_ms  DOUBLE,
    PRIMARY KEY (window_start, report_type, channel)
);

-- Rows the service could not hand to the analytics writer (it had fallen behind): how many, and
-- the span of time they covered. Analyses over that span say they are incomplete.
CREATE TABLE IF NOT EXISTS ingest_gaps (
    noted_at     TIMESTAMP NOT NULL,
    rows_dropped BIGINT NOT NULL,
    first_at     TIMESTAMP NOT NULL,
    last_at      TIMESTAMP NOT NULL
);

-- A failed attempt is DEAD_LETTERED when a dead letter of its delivery names it as the last attempt
-- (EXISTS, not a join: a delivery replayed and dead-lettered again must not repeat rows).
CREATE OR REPLACE VIEW attempt_outcomes AS
SELECT a.delivery_id, a.report_id, a.report_type, a.report_period, a.subscription_id, a.subscriber_id,
       a.channel, a.attempt,
       CASE WHEN a.succeeded THEN 'DELIVERED'
            WHEN EXISTS (SELECT 1 FROM dead_letters d
                         WHERE d.delivery_id = a.delivery_id AND d.attempts = a.attempt
                           AND d.dead_lettered_at >= a.finished_at) THEN 'DEAD_LETTERED'
            ELSE 'RETRYING' END AS status,
       a.error_kind, a.error, a.accepted_at, a.finished_at AS delivery_time, a.latency_ms, a.attempt_ms
FROM delivery_attempts a;
"#;

/// Staging for the `distribution_stats` upsert (batches are appended here, then merged by key).
pub const CREATE_STAGING: &str = r#"
CREATE TEMP TABLE IF NOT EXISTS stats_incoming AS SELECT * FROM distribution_stats LIMIT 0;
"#;
