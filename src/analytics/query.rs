//! Operators' read-only SQL: one SELECT (see `guard.rs`), a row limit wrapped around it, a time
//! limit enforced by interrupting DuckDB, and the answer as JSON, an Arrow IPC stream or Parquet.

use std::path::Path;
use std::time::Duration;

use duckdb::Connection;

use crate::analytics::deadline::with_deadline;
use crate::analytics::{guard, AnalyticsError};

/// How the answer is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"columns": [{"name", "type"}], "rows": [{...}], "row_count", "truncated"}`; each row rendered
    /// by DuckDB's `to_json`.
    Json,
    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`): a schema, then record batches.
    ArrowIpc,
    /// A Parquet file, written by DuckDB's own parquet writer.
    Parquet,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct QueryAnswer {
    pub body: Vec<u8>,
    pub rows: usize,
    /// More rows matched than `max_rows`; only the first `max_rows` are in the answer.
    pub truncated: bool,
}

/// Runs `sql` if it is one SELECT. `scratch` is a directory DuckDB may write to (Parquet answers).
pub fn run(conn: &Connection, sql: &str, format: Format, limits: Limits, scratch: &Path) -> Result<QueryAnswer, AnalyticsError> {
    let select = guard::single_select(conn, sql)?;
    let limited = format!("SELECT * FROM (\n{select}\n) AS query_result LIMIT {}", limits.max_rows + 1);
    let interrupt = conn.interrupt_handle();
    with_deadline(limits.timeout, move || interrupt.interrupt(), || match format {
        Format::Json => json(conn, &limited, limits.max_rows),
        Format::ArrowIpc => arrow_ipc(conn, &limited, limits.max_rows),
        Format::Parquet => parquet(conn, &select, limits.max_rows, scratch),
    })
}

fn json(conn: &Connection, limited: &str, max_rows: usize) -> Result<QueryAnswer, AnalyticsError> {
    let mut columns = Vec::new();
    let mut describe = conn.prepare(&format!("DESCRIBE {limited}"))?;
    let mut described = describe.query([])?;
    while let Some(row) = described.next()? {
        let name: String = row.get(0)?;
        let kind: String = row.get(1)?;
        columns.push(serde_json::json!({"name": name, "type": kind}));
    }
    let mut statement = conn.prepare(&format!("SELECT to_json(query_row)::VARCHAR FROM ({limited}) AS query_row"))?;
    let mut rows = statement.query([])?;
    let mut body = String::from("{\"columns\":");
    body.push_str(&serde_json::Value::Array(columns).to_string());
    body.push_str(",\"rows\":[");
    let mut count = 0;
    let mut truncated = false;
    while let Some(row) = rows.next()? {
        if count == max_rows {
            truncated = true;
            break;
        }
        if count > 0 {
            body.push(',');
        }
        let object: String = row.get(0)?;
        body.push_str(&object);
        count += 1;
    }
    body.push_str(&format!("],\"row_count\":{count},\"truncated\":{truncated}}}"));
    Ok(QueryAnswer { body: body.into_bytes(), rows: count, truncated })
}

fn arrow_ipc(conn: &Connection, limited: &str, max_rows: usize) -> Result<QueryAnswer, AnalyticsError> {
    let mut statement = conn.prepare(limited)?;
    let batches = statement.query_arrow([])?;
    let schema = batches.get_schema();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(arrow_error)?;
    let mut count = 0;
    let mut truncated = false;
    for batch in batches {
        let room = max_rows - count;
        if batch.num_rows() > room {
            truncated = true;
            if room > 0 {
                writer.write(&batch.slice(0, room)).map_err(arrow_error)?;
                count += room;
            }
            break;
        }
        count += batch.num_rows();
        writer.write(&batch).map_err(arrow_error)?;
    }
    writer.finish().map_err(arrow_error)?;
    let body = writer.into_inner().map_err(arrow_error)?;
    Ok(QueryAnswer { body, rows: count, truncated })
}

fn parquet(conn: &Connection, select: &str, max_rows: usize, scratch: &Path) -> Result<QueryAnswer, AnalyticsError> {
    let file = scratch.join(format!("query-{}.parquet", uuid::Uuid::new_v4()));
    let quoted = quote_literal(&file.to_string_lossy());
    let copy = |limit: usize| -> Result<usize, AnalyticsError> {
        Ok(conn.execute(
            &format!("COPY (SELECT * FROM (\n{select}\n) AS query_result LIMIT {limit}) TO {quoted} (FORMAT parquet)"),
            [],
        )?)
    };
    let result = (|| {
        let mut rows = copy(max_rows + 1)?;
        let truncated = rows > max_rows;
        if truncated {
            rows = copy(max_rows)?;
        }
        let body = std::fs::read(&file).map_err(|e| AnalyticsError::Write(format!("reading {}: {e}", file.display())))?;
        Ok(QueryAnswer { body, rows, truncated })
    })();
    let _ = std::fs::remove_file(&file);
    result
}

/// A SQL string literal: single quotes doubled.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn arrow_error(e: duckdb::arrow::error::ArrowError) -> AnalyticsError {
    AnalyticsError::Write(format!("encoding Arrow IPC: {e}"))
}
