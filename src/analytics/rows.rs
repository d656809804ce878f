//! What flows into the store, one struct per table, and its Arrow form: rows are collected per
//! table and handed to DuckDB as one record batch per flush, never inserted one by one.

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use duckdb::arrow::error::ArrowError;

/// Microseconds since the Unix epoch (the service's dataflow time follows the wall clock).
pub type Micros = i64;

/// A delivery the dataflow created for a report (one per subscription x channel).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRow {
    pub delivery_id: String,
    pub event_id: String,
    pub report_id: String,
    pub report_type: &'static str,
    pub report_period: String,
    pub portfolio_id: String,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub channel: &'static str,
    pub delivery_priority: i32,
    pub accepted_at: Micros,
}

/// How a failed attempt was classified by its sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retried after a backoff (timeouts, connection errors, 408, 429, 5xx).
    Transient,
    /// Dead-lettered at once (other 4xx, a bad destination).
    Permanent,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "TRANSIENT",
            ErrorKind::Permanent => "PERMANENT",
        }
    }
}

/// The end of one delivery attempt, once it is durable in the service's store.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub report_id: String,
    pub report_type: &'static str,
    pub report_period: String,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub channel: &'static str,
    pub attempt: u32,
    /// `None` for a success.
    pub error: Option<(ErrorKind, String)>,
    /// When the report was accepted: latency is measured from here.
    pub accepted_at: Micros,
    pub finished_at: Micros,
    /// How long the attempt itself took (the sink's call).
    pub attempt_micros: i64,
}

/// A delivery given up on: a permanent failure, or the last attempt failed.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterRow {
    pub delivery_id: String,
    pub report_id: String,
    pub report_type: &'static str,
    pub subscription_id: String,
    pub subscriber_id: String,
    pub channel: &'static str,
    /// The number of the attempt that failed last.
    pub attempts: u32,
    pub reason: String,
    pub accepted_at: Micros,
    pub dead_lettered_at: Micros,
}

/// A closed `distribution_stats` window (the seed's table, per window x report type x channel).
#[derive(Clone, Debug, PartialEq)]
pub struct StatsWindowRow {
    pub window_start: Micros,
    pub window_end: Micros,
    pub report_type: &'static str,
    pub channel: &'static str,
    pub attempted: i64,
    pub successful: i64,
    pub failed: i64,
    pub avg_delivery_time_ms: Option<f64>,
    pub p99_delivery_time_ms: Option<f64>,
}

fn timestamp(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), nullable)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// A column of strings from each row.
fn strings<'a, R: 'a>(rows: &'a [R], f: impl Fn(&'a R) -> &'a str) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * 24);
    for row in rows {
        builder.append_value(f(row));
    }
    Arc::new(builder.finish())
}

fn optional_strings<'a, R: 'a>(rows: &'a [R], f: impl Fn(&'a R) -> Option<&'a str>) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for row in rows {
        builder.append_option(f(row));
    }
    Arc::new(builder.finish())
}

fn timestamps<R>(rows: &[R], f: impl Fn(&R) -> Micros) -> ArrayRef {
    let mut builder = TimestampMicrosecondBuilder::with_capacity(rows.len());
    for row in rows {
        builder.append_value(f(row));
    }
    Arc::new(builder.finish())
}

fn ints<R>(rows: &[R], f: impl Fn(&R) -> i32) -> ArrayRef {
    let mut builder = Int32Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_value(f(row));
    }
    Arc::new(builder.finish())
}

fn bigints<R>(rows: &[R], f: impl Fn(&R) -> i64) -> ArrayRef {
    let mut builder = Int64Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_value(f(row));
    }
    Arc::new(builder.finish())
}

fn doubles<R>(rows: &[R], f: impl Fn(&R) -> Option<f64>) -> ArrayRef {
    let mut builder = Float64Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_option(f(row));
    }
    Arc::new(builder.finish())
}

fn millis(micros: i64) -> f64 {
    micros as f64 / 1000.0
}

/// `deliveries`, in the table's column order.
pub fn deliveries_batch(rows: &[DeliveryRow]) -> Result<RecordBatch, ArrowError> {
    batch(
        vec![
            text("delivery_id", false),
            text("event_id", false),
            text("report_id", false),
            text("report_type", false),
            text("report_period", false),
            text("portfolio_id", false),
            text("subscription_id", false),
            text("subscriber_id", false),
            text("channel", false),
            Field::new("delivery_priority", DataType::Int32, false),
            timestamp("accepted_at", false),
        ],
        vec![
            strings(rows, |r| &r.delivery_id),
            strings(rows, |r| &r.event_id),
            strings(rows, |r| &r.report_id),
            strings(rows, |r| r.report_type),
            strings(rows, |r| &r.report_period),
            strings(rows, |r| &r.portfolio_id),
            strings(rows, |r| &r.subscription_id),
            strings(rows, |r| &r.subscriber_id),
            strings(rows, |r| r.channel),
            ints(rows, |r| r.delivery_priority),
            timestamps(rows, |r| r.accepted_at),
        ],
    )
}

/// `delivery_attempts`, in the table's column order.
pub fn attempts_batch(rows: &[AttemptRow]) -> Result<RecordBatch, ArrowError> {
    let mut succeeded = BooleanBuilder::with_capacity(rows.len());
    for row in rows {
        succeeded.append_value(row.error.is_none());
    }
    batch(
        vec![
            text("delivery_id", false),
            text("report_id", false),
            text("report_type", false),
            text("report_period", false),
            text("subscription_id", false),
            text("subscriber_id", false),
            text("channel", false),
            Field::new("attempt", DataType::Int32, false),
            Field::new("succeeded", DataType::Boolean, false),
            text("error_kind", true),
            text("error", true),
            timestamp("accepted_at", false),
            timestamp("finished_at", false),
            Field::new("latency_ms", DataType::Float64, false),
            Field::new("attempt_ms", DataType::Float64, false),
        ],
        vec![
            strings(rows, |r| &r.delivery_id),
            strings(rows, |r| &r.report_id),
            strings(rows, |r| r.report_type),
            strings(rows, |r| &r.report_period),
            strings(rows, |r| &r.subscription_id),
            strings(rows, |r| &r.subscriber_id),
            strings(rows, |r| r.channel),
            ints(rows, |r| r.attempt as i32),
            Arc::new(succeeded.finish()),
            optional_strings(rows, |r| r.error.as_ref().map(|(kind, _)| kind.as_str())),
            optional_strings(rows, |r| r.error.as_ref().map(|(_, error)| error.as_str())),
            timestamps(rows, |r| r.accepted_at),
            timestamps(rows, |r| r.finished_at),
            doubles(rows, |r| Some(millis(r.finished_at.saturating_sub(r.accepted_at)))),
            doubles(rows, |r| Some(millis(r.attempt_micros))),
        ],
    )
}

/// `dead_letters`, in the table's column order.
pub fn dead_letters_batch(rows: &[DeadLetterRow]) -> Result<RecordBatch, ArrowError> {
    batch(
        vec![
            text("delivery_id", false),
            text("report_id", false),
            text("report_type", false),
            text("subscription_id", false),
            text("subscriber_id", false),
            text("channel", false),
            Field::new("attempts", DataType::Int32, false),
            text("reason", false),
            timestamp("accepted_at", false),
            timestamp("dead_lettered_at", false),
        ],
        vec![
            strings(rows, |r| &r.delivery_id),
            strings(rows, |r| &r.report_id),
            strings(rows, |r| r.report_type),
            strings(rows, |r| &r.subscription_id),
            strings(rows, |r| &r.subscriber_id),
            strings(rows, |r| r.channel),
            ints(rows, |r| r.attempts as i32),
            strings(rows, |r| &r.reason),
            timestamps(rows, |r| r.accepted_at),
            timestamps(rows, |r| r.dead_lettered_at),
        ],
    )
}

/// `distribution_stats` (staged, then upserted by key), in the table's column order.
pub fn stats_batch(rows: &[StatsWindowRow]) -> Result<RecordBatch, ArrowError> {
    batch(
        vec![
            timestamp("window_start", false),
            timestamp("window_end", false),
            text("report_type", false),
            text("channel", false),
            Field::new("deliveries_attempted", DataType::Int64, false),
            Field::new("deliveries_successful", DataType::Int64, false),
            Field::new("deliveries_failed", DataType::Int64, false),
            Field::new("avg_delivery_time_ms", DataType::Float64, true),
            Field::new("p99_delivery_time_ms", DataType::Float64, true),
        ],
        vec![
            timestamps(rows, |r| r.window_start),
            timestamps(rows, |r| r.window_end),
            strings(rows, |r| r.report_type),
            strings(rows, |r| r.channel),
            bigints(rows, |r| r.attempted),
            bigints(rows, |r| r.successful),
            bigints(rows, |r| r.failed),
            doubles(rows, |r| r.avg_delivery_time_ms),
            doubles(rows, |r| r.p99_delivery_time_ms),
        ],
    )
}
