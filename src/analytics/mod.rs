//! The analytics store: an embedded DuckDB database (`analytics.duckdb` under the service's data
//! directory) fed with delivery outcomes in Arrow record batches, queried by named analyses and,
//! for operators, by guarded read-only SQL; exported to Parquet.
//!
//! Independent of the service's runtime: rows come in as plain structs (`rows.rs`) through an
//! [`Ingest`] handle that never blocks; one writer thread owns the appends. Everything here is
//! blocking (DuckDB is); async callers use `spawn_blocking`.
//!
//! The database runs with external access off: SQL can read and write only the database itself and
//! the scratch directory (where Parquet answers are written), never other files, and the
//! configuration is locked so no statement can turn that back on.

pub mod analyses;
mod deadline;
pub mod export;
mod guard;
pub mod query;
pub mod rows;
mod schema;
pub mod windows;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duckdb::{AccessMode, Config, Connection};

/// The DuckDB and Arrow IPC crates this store is built on, for callers that read its answers back.
pub use {arrow_ipc, duckdb};

pub use analyses::{Analysis, AnalysisRows, Filter, Tuning};
pub use export::Export;
pub use query::{Format, Limits, QueryAnswer};
pub use writer::{Batching, Chunk, Ingest};

/// The database file's name under the data directory.
pub const FILE_NAME: &str = "analytics.duckdb";

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("DuckDB: {0}")]
    Duckdb(#[from] duckdb::Error),
    /// The statement is not a single SELECT (or does not parse); the message says why.
    #[error("{0}")]
    Refused(String),
    #[error("exceeded the time limit of {0:?}")]
    Timeout(Duration),
    #[error("the analytics database {path} is in use by another process (a running server?): {message}")]
    Locked { path: PathBuf, message: String },
    #[error("the analytics database {path} was written by another version of repdist (schema {found}, expected {expected})")]
    Schema { path: PathBuf, found: i32, expected: i32 },
    #[error("no analytics database at {0}")]
    Missing(PathBuf),
    #[error("writing analytics: {0}")]
    Write(String),
    #[error("the analytics store is closed")]
    Closed,
    #[error("I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl AnalyticsError {
    fn refused(message: impl Into<String>) -> Self {
        AnalyticsError::Refused(message.into())
    }
}

/// How the store is opened and run.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The directory holding `analytics.duckdb` (the service's data directory).
    pub dir: PathBuf,
    /// DuckDB worker threads (queries and writes).
    pub threads: u32,
    /// DuckDB's memory limit, e.g. `512MB`.
    pub memory_limit: String,
    /// Commits' worth of rows the writer may be behind before new rows are refused.
    pub queue_capacity: usize,
    pub batching: Batching,
}

/// The open store. Dropping it (and every [`Ingest`] clone) without [`AnalyticsStore::close`]
/// still stops the writer, which writes what it holds first, but nothing waits for it.
pub struct AnalyticsStore {
    db: Arc<Database>,
    ingest: Ingest,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The database and a connection to clone per query. Its registration in this process ends when
/// the last holder (store, writer, running query) lets go, i.e. when DuckDB has closed the file.
struct Database {
    base: Mutex<Connection>,
    path: PathBuf,
    scratch: PathBuf,
    _registration: Registration,
}

impl AnalyticsStore {
    /// Opens (creating if needed) `dir/analytics.duckdb` and starts its writer.
    ///
    /// DuckDB's file lock is per process, so a second instance in this process (a test restarting
    /// a server on the same directory while the first is still closing) is waited for, up to
    /// `wait`, instead of opening the file twice.
    pub fn open(options: StoreOptions, wait: Duration) -> Result<AnalyticsStore, AnalyticsError> {
        std::fs::create_dir_all(&options.dir).map_err(|source| AnalyticsError::Io { path: options.dir.clone(), source })?;
        let path = options.dir.join(FILE_NAME);
        let scratch = options.dir.join("analytics-scratch");
        std::fs::create_dir_all(&scratch).map_err(|source| AnalyticsError::Io { path: scratch.clone(), source })?;
        let registration = Registration::acquire(&path, wait)?;
        let config = Config::default()
            .threads(options.threads.max(1) as i64)?
            .max_memory(&options.memory_limit)?
            .enable_autoload_extension(false)?;
        let conn = Connection::open_with_flags(&path, config).map_err(|e| locked_or(e, &path))?;
        conn.execute_batch(schema::CREATE)?;
        check_schema_version(&conn, &path, true)?;
        // The writer's connection gets the staging table (temp tables are per connection).
        let writer_conn = conn.try_clone()?;
        writer_conn.execute_batch(schema::CREATE_STAGING)?;
        let scratch_dir = format!("{}/", scratch.to_string_lossy().trim_end_matches('/'));
        conn.execute_batch(&format!(
            "SET allowed_directories = [{}];
             SET enable_external_access = false;
             SET autoinstall_known_extensions = false;
             SET lock_configuration = true;",
            query::quote_literal(&scratch_dir)
        ))?;
        let db = Arc::new(Database { base: Mutex::new(conn), path, scratch, _registration: registration });
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_capacity.max(1));
        let counters = Arc::new(writer::Counters::default());
        let ingest = Ingest::new(tx, counters.clone());
        let writer = {
            let held = db.clone();
            let batching = options.batching;
            std::thread::Builder::new()
                .name("analytics-writer".into())
                .spawn(move || {
                    writer::run(writer_conn, rx, counters, batching);
                    drop(held);
                })
                .map_err(|source| AnalyticsError::Io { path: db.path.clone(), source })?
        };
        Ok(AnalyticsStore { db, ingest, writer: Mutex::new(Some(writer)) })
    }

    /// Where rows go in. Clone it for the service's commit path.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Runs a named analysis over everything handed to the writer so far.
    pub fn analysis(&self, analysis: Analysis, filter: &Filter, tuning: &Tuning, timeout: Duration) -> Result<AnalysisRows, AnalyticsError> {
        let started = Instant::now();
        self.ingest.flush(timeout)?;
        let conn = self.connection()?;
        let left = timeout.saturating_sub(started.elapsed());
        let interrupt = conn.interrupt_handle();
        deadline::with_deadline(left, move || interrupt.interrupt(), || analyses::run(&conn, analysis, filter, tuning))
    }

    /// Runs an operator's SQL (one SELECT) within `limits`.
    pub fn query(&self, sql: &str, format: Format, limits: Limits) -> Result<QueryAnswer, AnalyticsError> {
        let started = Instant::now();
        self.ingest.flush(limits.timeout)?;
        let conn = self.connection()?;
        let limits = Limits { timeout: limits.timeout.saturating_sub(started.elapsed()), ..limits };
        query::run(&conn, sql, format, limits, &self.db.scratch)
    }

    /// Writes what the writer holds, then stops it and waits for it.
    pub fn close(&self) {
        self.ingest.close();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    fn connection(&self) -> Result<Connection, AnalyticsError> {
        let base = self.db.base.lock().unwrap_or_else(|p| p.into_inner());
        Ok(base.try_clone()?)
    }
}

/// Opens `dir/analytics.duckdb` read-only (for `repdist export`); fails if a running server holds
/// it.
pub fn open_read_only(dir: &Path) -> Result<Connection, AnalyticsError> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Err(AnalyticsError::Missing(path));
    }
    let config = Config::default().access_mode(AccessMode::ReadOnly)?.enable_autoload_extension(false)?;
    let conn = Connection::open_with_flags(&path, config).map_err(|e| locked_or(e, &path))?;
    check_schema_version(&conn, &path, false)?;
    Ok(conn)
}

fn locked_or(error: duckdb::Error, path: &Path) -> AnalyticsError {
    let message = error.to_string();
    if message.contains("lock") {
        AnalyticsError::Locked { path: path.to_path_buf(), message }
    } else {
        AnalyticsError::Duckdb(error)
    }
}

fn check_schema_version(conn: &Connection, path: &Path, stamp: bool) -> Result<(), AnalyticsError> {
    let found: Option<i32> = conn.query_row("SELECT max(version) FROM schema_version", [], |row| row.get(0))?;
    match found {
        None if stamp => {
            conn.execute("INSERT INTO schema_version VALUES (?)", [schema::SCHEMA_VERSION])?;
            Ok(())
        }
        Some(found) if found != schema::SCHEMA_VERSION => {
            Err(AnalyticsError::Schema { path: path.to_path_buf(), found, expected: schema::SCHEMA_VERSION })
        }
        _ => Ok(()),
    }
}

/// This process's open analytics databases (see [`AnalyticsStore::open`]).
struct Registration(PathBuf);

fn registry() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Mutex::default)
}

impl Registration {
    fn acquire(path: &Path, wait: Duration) -> Result<Registration, AnalyticsError> {
        let key = std::fs::canonicalize(path.parent().unwrap_or(path))
            .map(|dir| dir.join(FILE_NAME))
            .unwrap_or_else(|_| path.to_path_buf());
        let deadline = Instant::now() + wait;
        loop {
            {
                let mut open = registry().lock().unwrap_or_else(|p| p.into_inner());
                if open.insert(key.clone()) {
                    return Ok(Registration(key));
                }
            }
            if Instant::now() >= deadline {
                return Err(AnalyticsError::Locked {
                    path: path.to_path_buf(),
                    message: "still open in this process".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyses_over_a_span_with_dropped_rows_say_they_are_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            dir: dir.path().to_path_buf(),
            threads: 1,
            memory_limit: "128MB".into(),
            queue_capacity: 4,
            batching: Batching { max_rows: 100, interval: Duration::from_secs(60) },
        };
        let store = AnalyticsStore::open(options, Duration::from_secs(5)).unwrap();
        let gap = writer::Gap { rows: 7, first_at: 1_000, last_at: 2_000 };
        store.ingest().tx.send(writer::Message::Chunk { chunk: Chunk::default(), gap: Some(gap) }).unwrap();
        let run = |from: i64, to: i64| {
            let filter = Filter { from: Some(from), to: Some(to), ..Filter::default() };
            store.analysis(Analysis::ChannelEffectiveness, &filter, &Tuning::default(), Duration::from_secs(10)).unwrap()
        };
        let overlapping = run(1_500, 10_000);
        assert_eq!((overlapping.complete(), overlapping.dropped_rows), (false, 7));
        let after = run(3_000, 10_000);
        assert!(after.complete());
        store.close();
    }
}
