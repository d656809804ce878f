//! The one writer of the analytics database: a thread fed through a bounded channel, appending
//! what it receives as Arrow record batches, one transaction per flush.
//!
//! The service side ([`Ingest`]) never waits: it offers each commit's rows with `try_send`. When the
//! channel is full (the writer has fallen behind by `queue_capacity` commits), those rows are not
//! written: they are counted (`repdist_analytics_rows_dropped_total`, logged) and the gap (how many
//! rows, which span of time) is recorded in `ingest_gaps` with the next rows that get through, so
//! analyses over that span say they are incomplete. Deliveries are never slowed by analytics.
//! `repdist_analytics_pending_rows` is the writer's lag: rows handed over and not yet written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duckdb::Connection;

use crate::analytics::rows::{self, AttemptRow, DeadLetterRow, DeliveryRow, Micros, StatsWindowRow};
use crate::analytics::AnalyticsError;

/// What one commit of the service adds.
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    pub deliveries: Vec<DeliveryRow>,
    pub attempts: Vec<AttemptRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub stats: Vec<StatsWindowRow>,
}

impl Chunk {
    pub fn rows(&self) -> usize {
        self.deliveries.len() + self.attempts.len() + self.dead_letters.len() + self.stats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    fn extend(&mut self, other: Chunk) {
        self.deliveries.extend(other.deliveries);
        self.attempts.extend(other.attempts);
        self.dead_letters.extend(other.dead_letters);
        self.stats.extend(other.stats);
    }

    /// The earliest and latest event time in the chunk.
    fn span(&self) -> Option<(Micros, Micros)> {
        let times = self
            .deliveries
            .iter()
            .map(|r| r.accepted_at)
            .chain(self.attempts.iter().map(|r| r.finished_at))
            .chain(self.dead_letters.iter().map(|r| r.dead_lettered_at))
            .chain(self.stats.iter().map(|r| r.window_start));
        times.fold(None, |span, t| match span {
            None => Some((t, t)),
            Some((lo, hi)) => Some((lo.min(t), hi.max(t))),
        })
    }
}

/// Rows that were not written, and the span of event time they covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub rows: u64,
    pub first_at: Micros,
    pub last_at: Micros,
}

impl Gap {
    fn merge(self, other: Gap) -> Gap {
        Gap { rows: self.rows + other.rows, first_at: self.first_at.min(other.first_at), last_at: self.last_at.max(other.last_at) }
    }
}

/// Where the writer answers a request: its value, or why it failed.
pub(crate) type Reply<T> = std::sync::mpsc::Sender<Result<T, String>>;

pub(crate) enum Message {
    Chunk { chunk: Chunk, gap: Option<Gap> },
    /// Write everything received so far, then answer.
    Flush(Reply<()>),
    /// Write everything received so far, then delete every row of these deliveries; answer how
    /// many rows went.
    Forget { delivery_ids: Vec<String>, reply: Reply<u64> },
    /// Write everything, then stop.
    Close,
}

#[derive(Default)]
pub(crate) struct Counters {
    pending: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
}

/// The service's end of the channel. Cheap to clone; never blocks in [`Ingest::offer`].
#[derive(Clone)]
pub struct Ingest {
    pub(crate) tx: SyncSender<Message>,
    counters: Arc<Counters>,
    /// Rows refused since the last chunk that got through.
    gap: Arc<Mutex<Option<Gap>>>,
}

impl Ingest {
    pub(crate) fn new(tx: SyncSender<Message>, counters: Arc<Counters>) -> Self {
        Ingest { tx, counters, gap: Arc::default() }
    }

    /// Hands a commit's rows to the writer if it has room; otherwise counts them as dropped and
    /// remembers the gap. Returns whether they were taken.
    pub fn offer(&self, chunk: Chunk) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let rows = chunk.rows() as u64;
        let span = chunk.span();
        let mut gap_slot = self.gap.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let gap = gap_slot.take();
        self.counters.pending.fetch_add(rows, Ordering::Relaxed);
        match self.tx.try_send(Message::Chunk { chunk, gap }) {
            Ok(()) => {
                metrics::gauge!("repdist_analytics_pending_rows").set(self.counters.pending.load(Ordering::Relaxed) as f64);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.pending.fetch_sub(rows, Ordering::Relaxed);
                self.counters.dropped.fetch_add(rows, Ordering::Relaxed);
                metrics::counter!("repdist_analytics_rows_dropped_total").increment(rows);
                let (first_at, last_at) = span.unwrap_or((0, 0));
                let this = Gap { rows, first_at, last_at };
                if gap.is_none() {
                    tracing::warn!(rows, "analytics writer is behind; rows not written to the analytics store (recorded as a gap)");
                }
                *gap_slot = Some(gap.map_or(this, |g| g.merge(this)));
                false
            }
        }
    }

    /// Waits until everything offered before this call is written (blocking; not for the
    /// delivery path). Analyses call it so that they see every outcome already durable.
    pub fn flush(&self, timeout: Duration) -> Result<(), AnalyticsError> {
        self.ask(Message::Flush, timeout)
    }

    /// Deletes every row of `delivery_ids` (deliveries, attempts, dead letters), after writing what
    /// was offered before: the retention purge calls it for the deliveries it purged from the store
    /// of record. Blocking (at most `timeout`); not for the delivery path. Returns the rows deleted.
    pub fn forget(&self, delivery_ids: Vec<String>, timeout: Duration) -> Result<u64, AnalyticsError> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        self.ask(|reply| Message::Forget { delivery_ids, reply }, timeout)
    }

    /// Sends the writer a request and waits for its answer, all within `timeout`: a full queue is
    /// retried (the request is not droppable as rows are), an answer that does not come in time is
    /// a timeout.
    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Message, timeout: Duration) -> Result<T, AnalyticsError> {
        let (reply, answer) = std::sync::mpsc::channel();
        let deadline = Instant::now() + timeout;
        let mut message = request(reply);
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(AnalyticsError::Closed),
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return Err(AnalyticsError::Timeout(timeout));
                    }
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(AnalyticsError::Write(message)),
            Err(RecvTimeoutError::Timeout) => Err(AnalyticsError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(AnalyticsError::Closed),
        }
    }

    pub(crate) fn close(&self) {
        let _ = self.tx.send(Message::Close);
    }

    /// Rows handed over and not yet written (the writer's lag).
    pub fn pending_rows(&self) -> u64 {
        self.counters.pending.load(Ordering::Relaxed)
    }

    /// Rows refused because the writer was behind, since start.
    pub fn dropped_rows(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    pub fn written_rows(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }
}

/// How the writer batches: a flush when this many rows are waiting, or this long after the last.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    pub max_rows: usize,
    pub interval: Duration,
}

pub(crate) fn run(conn: Connection, rx: Receiver<Message>, counters: Arc<Counters>, batching: Batching) {
    let mut waiting = Chunk::default();
    let mut gaps: Vec<Gap> = Vec::new();
    let mut last_flush = Instant::now();
    let write = |waiting: &mut Chunk, gaps: &mut Vec<Gap>| -> Result<(), String> {
        if waiting.is_empty() && gaps.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(waiting);
        let rows = chunk.rows() as u64;
        let started = Instant::now();
        let result = write_chunk(&conn, &chunk, gaps).map_err(|e| e.to_string());
        gaps.clear();
        counters.pending.fetch_sub(rows, Ordering::Relaxed);
        metrics::gauge!("repdist_analytics_pending_rows").set(counters.pending.load(Ordering::Relaxed) as f64);
        metrics::histogram!("repdist_analytics_flush_duration_seconds").record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                counters.written.fetch_add(rows, Ordering::Relaxed);
                metrics::counter!("repdist_analytics_rows_written_total").increment(rows);
            }
            Err(error) => {
                // Not retried: a database that refuses a batch (disk full, corruption) would refuse
                // it again, and the queue must keep moving. Counted like rows refused at the door.
                counters.dropped.fetch_add(rows, Ordering::Relaxed);
                metrics::counter!("repdist_analytics_rows_dropped_total").increment(rows);
                metrics::counter!("repdist_analytics_write_failures_total").increment(1);
                tracing::error!(%error, rows, "writing to the analytics store failed; rows lost from analytics");
                if let Some((first_at, last_at)) = chunk.span() {
                    let _ = record_gaps(&conn, &[Gap { rows, first_at, last_at }]);
                }
            }
        }
        result
    };
    loop {
        let wait = batching.interval.saturating_sub(last_flush.elapsed());
        match rx.recv_timeout(wait) {
            Ok(Message::Chunk { chunk, gap }) => {
                waiting.extend(chunk);
                gaps.extend(gap);
                if waiting.rows() >= batching.max_rows {
                    let _ = write(&mut waiting, &mut gaps);
                    last_flush = Instant::now();
                }
            }
            Ok(Message::Flush(reply)) => {
                let _ = reply.send(write(&mut waiting, &mut gaps));
                last_flush = Instant::now();
            }
            Ok(Message::Forget { delivery_ids, reply }) => {
                let _ = write(&mut waiting, &mut gaps);
                last_flush = Instant::now();
                let _ = reply.send(delete_deliveries(&conn, &delivery_ids).map_err(|e| e.to_string()));
            }
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                let _ = write(&mut waiting, &mut gaps);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = write(&mut waiting, &mut gaps);
                last_flush = Instant::now();
            }
        }
    }
}

/// One transaction: each table's rows as one record batch, stats windows upserted by key.
fn write_chunk(conn: &Connection, chunk: &Chunk, gaps: &[Gap]) -> Result<(), AnalyticsError> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = (|| {
        append(conn, "deliveries", chunk.deliveries.len(), || rows::deliveries_batch(&chunk.deliveries))?;
        append(conn, "delivery_attempts", chunk.attempts.len(), || rows::attempts_batch(&chunk.attempts))?;
        append(conn, "dead_letters", chunk.dead_letters.len(), || rows::dead_letters_batch(&chunk.dead_letters))?;
        if !chunk.stats.is_empty() {
            append(conn, "stats_incoming", chunk.stats.len(), || rows::stats_batch(&chunk.stats))?;
            conn.execute_batch(
                "INSERT OR REPLACE INTO distribution_stats SELECT * FROM stats_incoming; DELETE FROM stats_incoming;",
            )?;
        }
        record_gaps(conn, gaps)
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// Deletes the rows of `delivery_ids` from every per-delivery table, in one transaction. Stats
/// windows stay: they are aggregates and name no delivery.
fn delete_deliveries(conn: &Connection, delivery_ids: &[String]) -> Result<u64, AnalyticsError> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = (|| {
        let mut deleted = 0;
        for ids in delivery_ids.chunks(500) {
            let placeholders = vec!["?"; ids.len()].join(", ");
            for table in ["deliveries", "delivery_attempts", "dead_letters"] {
                let sql = format!("DELETE FROM {table} WHERE delivery_id IN ({placeholders})");
                deleted += conn.execute(&sql, duckdb::params_from_iter(ids.iter()))? as u64;
            }
        }
        Ok(deleted)
    })();
    match result {
        Ok(deleted) => {
            conn.execute_batch("COMMIT")?;
            Ok(deleted)
        }
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn append(
    conn: &Connection,
    table: &str,
    rows: usize,
    batch: impl FnOnce() -> Result<duckdb::arrow::array::RecordBatch, duckdb::arrow::error::ArrowError>,
) -> Result<(), AnalyticsError> {
    if rows == 0 {
        return Ok(());
    }
    let batch = batch().map_err(|e| AnalyticsError::Write(format!("building the {table} batch: {e}")))?;
    let mut appender = conn.appender(table)?;
    appender.append_record_batch(batch)?;
    appender.flush()?;
    Ok(())
}

fn record_gaps(conn: &Connection, gaps: &[Gap]) -> Result<(), AnalyticsError> {
    let noted_at = chrono::Utc::now().timestamp_micros();
    for gap in gaps {
        conn.execute(
            "INSERT INTO ingest_gaps VALUES (make_timestamp(?::BIGINT), ?, make_timestamp(?::BIGINT), make_timestamp(?::BIGINT))",
            duckdb::params![noted_at, gap.rows as i64, gap.first_at, gap.last_at],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts(finished: &[Micros]) -> Chunk {
        let row = |finished_at| AttemptRow {
            delivery_id: "d".into(),
            report_id: "r".into(),
            report_type: "RISK_REPORT",
            report_period: "2025-06".into(),
            subscription_id: "s".into(),
            subscriber_id: "x".into(),
            channel: "EMAIL",
            attempt: 1,
            error: None,
            accepted_at: 0,
            finished_at,
            attempt_micros: 1,
        };
        Chunk { attempts: finished.iter().map(|t| row(*t)).collect(), ..Chunk::default() }
    }

    #[test]
    fn rows_refused_while_the_writer_is_behind_are_counted_and_travel_as_a_gap() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ingest = Ingest::new(tx, Arc::default());
        assert!(ingest.offer(attempts(&[10])));
        // The queue (one commit) is full: these are refused, never waited for.
        assert!(!ingest.offer(attempts(&[20, 30])));
        assert!(!ingest.offer(attempts(&[5])));
        assert_eq!((ingest.dropped_rows(), ingest.pending_rows()), (3, 1));
        let Ok(Message::Chunk { gap: None, .. }) = rx.try_recv() else { panic!("the first chunk, without a gap") };
        assert!(ingest.offer(attempts(&[40])));
        match rx.try_recv() {
            Ok(Message::Chunk { chunk, gap }) => {
                assert_eq!(chunk.rows(), 1);
                assert_eq!(gap, Some(Gap { rows: 3, first_at: 5, last_at: 30 }));
            }
            _ => panic!("the next chunk carries the gap"),
        }
    }

    #[test]
    fn gaps_merge_into_one_span() {
        let a = Gap { rows: 2, first_at: 10, last_at: 20 };
        let b = Gap { rows: 3, first_at: 5, last_at: 15 };
        assert_eq!(a.merge(b), Gap { rows: 5, first_at: 5, last_at: 20 });
    }
}
