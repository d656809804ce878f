//! Report content per subscriber: a tabular report (CSV, Parquet or JSON lines at its `file_path`)
//! narrowed to the rows and columns a subscription asked for, in the format it prefers, produced
//! with Polars lazily (scan, filter, select, sink: the source is streamed, never loaded whole), and
//! the content facts TRIGGERED subscriptions are decided on, computed once when a report is accepted.
//!
//! Personalised files are cached under `{data_dir}/content/`, keyed by the report (id, path, size,
//! modification time) and the digest of the [`ContentSpec`]: identical subscriptions share one file,
//! and a retry reuses it. A text source (CSV, JSON lines) of [`STAGE_MIN_BYTES`] or more is first
//! staged, once per report, as an uncompressed Parquet copy beside them: a report with content goes
//! to many subscribers, and parsing text again for each of them was most of the work, where a
//! Parquet scan reads only the columns a query needs, already typed. The cache holds nothing that
//! cannot be produced again, so [`ContentStore::prune`] may remove any of it.

mod frame;
mod output;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dataflows::content::{ContentFacts, ContentSpec, OutputFormat};
use dataflows::report::ReportDistribution;

pub use frame::SourceFormat;

/// Runs Polars work on a thread of its own, outside the service's tokio runtime: Polars' streaming
/// engine starts async work of its own and refuses to block inside a runtime that is not
/// multi-threaded (as a `#[tokio::test]` is), so it must not find one on its thread. `None` when
/// the work panicked.
pub async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("polars".into()).spawn(move || {
        let _ = done.send(work());
    });
    match spawned {
        Ok(_) => result.await.ok(),
        Err(_) => None,
    }
}

/// Why a report's content could not be personalised or measured.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The subscription asks for something this report does not have (a column): retrying cannot help.
    #[error("{0}")]
    Mismatch(String),
    /// Polars refused the query or could not read the file (a type mismatch, a corrupt file).
    #[error("cannot personalise the report's content: {0}")]
    Query(String),
    /// The file system (a missing source file, a full disk): possibly transient.
    #[error("{0}")]
    Io(String),
}

impl ContentError {
    /// Whether retrying might succeed: a file that is not there yet, a full disk.
    pub fn is_transient(&self) -> bool {
        matches!(self, ContentError::Io(_))
    }
}

impl From<polars::error::PolarsError> for ContentError {
    fn from(error: polars::error::PolarsError) -> Self {
        match error {
            polars::error::PolarsError::IO { error, .. } => ContentError::Io(error.to_string()),
            other => ContentError::Query(other.to_string()),
        }
    }
}

/// A personalised file, ready for a sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Personalised {
    pub path: PathBuf,
    /// The name the subscriber sees: the report file's stem with the output format's extension.
    pub file_name: String,
    pub format: OutputFormat,
}

/// The most a webhook body carries inline (see [`Personalised::inline`]).
pub const INLINE_MAX_BYTES: u64 = 1024 * 1024;

impl Personalised {
    /// The file as a webhook body's `data.content`: `{file_name, format, size_bytes}` plus, when it is
    /// at most [`INLINE_MAX_BYTES`], the content itself: `rows` (JSON objects) for JSON, `text` for
    /// CSV, `base64` for Parquet and XLSX. A larger file is described, not carried (`inline: false`).
    pub fn inline(&self) -> Result<serde_json::Value, ContentError> {
        let io = |e: std::io::Error| ContentError::Io(format!("personalised file {}: {e}", self.path.display()));
        let size = std::fs::metadata(&self.path).map_err(io)?.len();
        let mut value = serde_json::json!({
            "file_name": self.file_name, "format": self.format, "size_bytes": size, "inline": size <= INLINE_MAX_BYTES,
        });
        if size > INLINE_MAX_BYTES {
            return Ok(value);
        }
        let bytes = std::fs::read(&self.path).map_err(io)?;
        match self.format {
            OutputFormat::Json => {
                let rows = bytes
                    .split(|b| *b == b'\n')
                    .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                    .map(serde_json::from_slice)
                    .collect::<Result<Vec<serde_json::Value>, _>>()
                    .map_err(|e| ContentError::Query(format!("reading back JSON lines: {e}")))?;
                value["rows"] = rows.into();
            }
            OutputFormat::Csv => value["text"] = String::from_utf8_lossy(&bytes).into_owned().into(),
            OutputFormat::Parquet | OutputFormat::Xlsx => {
                use base64::Engine as _;
                value["base64"] = base64::engine::general_purpose::STANDARD.encode(&bytes).into();
            }
        }
        Ok(value)
    }
}

/// Text sources of this size or more are staged as Parquet before they are personalised (see the
/// module's documentation); a smaller one is cheaper to parse again than to copy.
pub const STAGE_MIN_BYTES: u64 = 1024 * 1024;

/// What [`ContentStore::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Reports whose cached files (personalised and staged) were removed.
    pub reports: u64,
    pub bytes: u64,
}

/// Produces and caches personalised files; computes content facts.
pub struct ContentStore {
    dir: PathBuf,
    stage_min_bytes: u64,
    /// One lock per cache entry being produced, so concurrent deliveries of the same (report, spec)
    /// produce it once and the others then reuse it. [`ContentStore::prune`] holds the map's own
    /// lock while it removes a report's entries, and skips a report with one being produced.
    producing: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl ContentStore {
    /// A store caching under `dir` (created when first needed).
    pub fn new(dir: impl Into<PathBuf>) -> ContentStore {
        ContentStore { dir: dir.into(), stage_min_bytes: STAGE_MIN_BYTES, producing: Mutex::new(HashMap::new()) }
    }

    /// Stages text sources of `bytes` or more instead of [`STAGE_MIN_BYTES`] (tests use small files).
    pub fn with_staging_threshold(mut self, bytes: u64) -> ContentStore {
        self.stage_min_bytes = bytes;
        self
    }

    /// The report's local tabular file and its format, when it has one (by extension: `.csv`,
    /// `.parquet`, `.jsonl` / `.ndjson`). Other files (PDF, HTML, URLs) are delivered as published.
    pub fn tabular_source(report: &ReportDistribution) -> Option<(PathBuf, SourceFormat)> {
        let path = report.report_data.file_path.trim();
        let lower = path.to_ascii_lowercase();
        if path.is_empty() || lower.starts_with("http://") || lower.starts_with("https://") {
            return None;
        }
        let path = PathBuf::from(path);
        SourceFormat::of(&path).map(|format| (path, format))
    }

    /// The personalised file of `report` for `spec`, produced unless already cached. `None` when the
    /// report has no local tabular file (nothing to personalise). Blocking: call it off the async
    /// runtime's threads.
    pub fn personalise(&self, report: &ReportDistribution, spec: &ContentSpec) -> Result<Option<Personalised>, ContentError> {
        let Some((source, source_format)) = Self::tabular_source(report) else { return Ok(None) };
        let format = spec.format.unwrap_or(source_format.output());
        let meta = std::fs::metadata(&source).map_err(|e| ContentError::Io(format!("report file {}: {e}", source.display())))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let report_key = format!(
            "{:016x}",
            dataflows::dataflow::route_hash(&format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{modified}",
                report.report_data.report_id,
                source.display(),
                meta.len()
            ))
        );
        let stem = source.file_stem().map_or_else(|| "report".to_string(), |s| s.to_string_lossy().into_owned());
        let file_name = format!("{stem}.{}", format.extension());
        let report_dir = self.dir.join(report_key);
        let dir = report_dir.join(spec.digest());
        let path = dir.join(&file_name);
        let personalised = Personalised { path: path.clone(), file_name, format };

        let (source, source_format) = if source_format != SourceFormat::Parquet && meta.len() >= self.stage_min_bytes {
            // No spec digest (hex) can take this name.
            let staged = report_dir.join("source.parquet");
            self.once(&staged, || write_atomically(&report_dir, &staged, |to| output::stage(frame::scan(&source, source_format)?, to)))?;
            (staged, SourceFormat::Parquet)
        } else {
            (source, source_format)
        };
        self.once(&path, || write_atomically(&dir, &path, |to| output::write(frame::select(&source, source_format, spec)?, format, to)))?;
        Ok(Some(personalised))
    }

    /// Runs `produce` unless `path` is there already, once at a time per path: concurrent callers
    /// for the same path wait for the first and then find the file.
    fn once(&self, path: &Path, produce: impl FnOnce() -> Result<(), ContentError>) -> Result<(), ContentError> {
        let lock = {
            let mut producing = self.producing.lock().unwrap_or_else(|p| p.into_inner());
            producing.entry(path.to_path_buf()).or_default().clone()
        };
        let produced = {
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            if path.exists() {
                Ok(())
            } else {
                produce()
            }
        };
        let mut producing = self.producing.lock().unwrap_or_else(|p| p.into_inner());
        if producing.get(path).is_some_and(|l| Arc::strong_count(l) <= 2) {
            producing.remove(path);
        }
        produced
    }

    /// Removes the cached files of every report whose entries were last added `older_than` ago or
    /// more (a directory's modification time is when its last entry was made), skipping any report
    /// with a file being produced. A delivery that needs a removed file produces it again, and one
    /// that was about to read it fails transiently and is retried: nothing depends on the cache but
    /// speed. Blocking: call it off the async runtime's threads.
    pub fn prune(&self, older_than: std::time::Duration) -> Result<Pruned, ContentError> {
        let io = |e: std::io::Error| ContentError::Io(format!("content cache {}: {e}", self.dir.display()));
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pruned::default()),
            Err(e) => return Err(io(e)),
        };
        let now = std::time::SystemTime::now();
        let mut pruned = Pruned::default();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let report_dir = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if !meta.is_dir() || age < older_than {
                continue;
            }
            let producing = self.producing.lock().unwrap_or_else(|p| p.into_inner());
            if producing.keys().any(|path| path.starts_with(&report_dir)) {
                continue;
            }
            let bytes = directory_bytes(&report_dir);
            std::fs::remove_dir_all(&report_dir).map_err(io)?;
            drop(producing);
            pruned.reports += 1;
            pruned.bytes += bytes;
        }
        Ok(pruned)
    }

    /// The content facts of `report` (see [`dataflows::content::ContentFacts`]): empty when it has no
    /// local tabular file. Blocking.
    pub fn facts(report: &ReportDistribution) -> Result<ContentFacts, ContentError> {
        match Self::tabular_source(report) {
            Some((path, format)) => frame::facts(&path, format),
            None => Ok(ContentFacts::new()),
        }
    }
}

/// Creates `path` through `write` at a temporary name beside it, then renames it into place: a
/// reader never sees a partial file, and a crash leaves only a temporary file (removed with its
/// report's entries by [`ContentStore::prune`]).
fn write_atomically(dir: &Path, path: &Path, write: impl FnOnce(&Path) -> Result<(), ContentError>) -> Result<(), ContentError> {
    std::fs::create_dir_all(dir).map_err(|e| ContentError::Io(format!("cache directory {}: {e}", dir.display())))?;
    let extension = path.extension().map_or_else(String::new, |e| e.to_string_lossy().into_owned());
    let temporary = dir.join(format!(".partial-{}-{}.{extension}", std::process::id(), uuid::Uuid::new_v4().simple()));
    if let Err(error) = write(&temporary) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        ContentError::Io(format!("cache file {}: {e}", path.display()))
    })
}

/// The size of the files under `dir`, as far as it can be read.
fn directory_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => directory_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
