//! Only one SELECT statement gets through to the operators' SQL endpoint.
//!
//! The text is parsed by DuckDB itself (`json_serialize_sql`, which serializes SELECT statements
//! only and names anything else as an error), so there is no second SQL grammar to get wrong: a
//! `DROP`, `COPY`, `ATTACH`, `INSTALL`, `PRAGMA`, `SET`, `CALL` or `EXPLAIN`, or a SELECT followed
//! by anything, is refused before it runs. What runs is not the caller's text but DuckDB's rendering
//! of the parsed statement (`json_deserialize_sql`), so a trailing comment or semicolon cannot leak
//! out of the subquery the limits wrap around it. Table functions that read files are refused at
//! run time by the database's configuration (external access off; see `lib.rs`).

use duckdb::Connection;

use crate::analytics::AnalyticsError;

/// Checks that `sql` is exactly one SELECT statement and returns it as DuckDB renders it.
pub fn single_select(conn: &Connection, sql: &str) -> Result<String, AnalyticsError> {
    if sql.trim().is_empty() {
        return Err(AnalyticsError::refused("the statement is empty"));
    }
    let serialized: String = conn.query_row("SELECT json_serialize_sql(?::VARCHAR)::VARCHAR", [sql], |row| row.get(0))?;
    let parsed: serde_json::Value =
        serde_json::from_str(&serialized).map_err(|e| AnalyticsError::Write(format!("unreadable parse result: {e}")))?;
    if parsed.get("error").and_then(|e| e.as_bool()).unwrap_or(true) {
        let kind = parsed.get("error_type").and_then(|t| t.as_str()).unwrap_or("");
        let message = parsed.get("error_message").and_then(|m| m.as_str()).unwrap_or("cannot be parsed");
        return Err(if kind == "parser" {
            AnalyticsError::refused(format!("syntax error: {message}"))
        } else {
            AnalyticsError::refused("only SELECT statements are allowed")
        });
    }
    let statements = parsed.get("statements").and_then(|s| s.as_array()).map_or(0, |s| s.len());
    if statements != 1 {
        return Err(AnalyticsError::refused(format!("exactly one SELECT statement is allowed, found {statements}")));
    }
    let rendered: String = conn.query_row("SELECT json_deserialize_sql(?::JSON)", [&serialized], |row| row.get(0))?;
    Ok(rendered.trim().trim_end_matches(';').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> bool {
        let conn = Connection::open_in_memory().unwrap();
        matches!(single_select(&conn, sql), Err(AnalyticsError::Refused(_)))
    }

    #[test]
    fn selects_pass_in_their_forms() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in [
            "SELECT 1",
            "select 1;",
            "WITH a AS (SELECT 1 AS x) SELECT * FROM a -- trailing comment",
            "FROM range(3)",
            "VALUES (1), (2)",
            "SELECT 1 /* c */ ;  ",
        ] {
            let rendered = single_select(&conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            // What comes back runs, wrapped the way the query endpoint wraps it.
            conn.execute_batch(&format!("SELECT * FROM (\n{rendered}\n) AS q LIMIT 1")).unwrap_or_else(|e| panic!("{rendered}: {e}"));
        }
    }

    #[test]
    fn everything_but_one_select_is_refused() {
        for sql in [
            "",
            "  ",
            "DROP TABLE deliveries",
            "SELECT 1; DROP TABLE deliveries",
            "SELECT 1; SELECT 2",
            "COPY deliveries TO '/tmp/x.csv'",
            "COPY (SELECT 1) TO '/tmp/x.parquet' (FORMAT parquet)",
            "ATTACH '/tmp/other.duckdb' AS other",
            "INSTALL httpfs",
            "LOAD httpfs",
            "PRAGMA version",
            "CALL pragma_version()",
            "SET threads = 1",
            "DELETE FROM deliveries",
            "INSERT INTO deliveries SELECT * FROM deliveries",
            "UPDATE deliveries SET channel = 'x'",
            "CREATE TABLE t AS SELECT 1",
            "EXPLAIN SELECT 1",
            "CHECKPOINT",
            "EXPORT DATABASE '/tmp/x'",
            "DETACH other",
            "SELEC 1",
        ] {
            assert!(refused(sql), "{sql:?} was not refused");
        }
    }
}
