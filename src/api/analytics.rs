//! Distribution analytics over the analytics store: named analyses with filters, and operators'
//! read-only SQL (off unless `--enable-sql-analytics`) answered as JSON, Arrow IPC or Parquet.

use std::sync::Arc;

use crate::analytics::{Analysis, AnalyticsError, AnalyticsStore, Filter, Format, Limits, Tuning};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dataflows::delivery::DeliveryChannel;
use dataflows::report::ReportDataType;
use serde::{Deserialize, Serialize};

use super::body::{JsonBody, Params};
use super::error::{ApiError, ErrorBody};
use super::AppState;

/// The media types of the query endpoint's binary answers.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub const PARQUET: &str = "application/vnd.apache.parquet";

#[derive(Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AnalysisQuery {
    /// Start of the time range, inclusive: RFC 3339 (`2025-06-21T10:00:00Z`) or a date (`2025-06-21`, midnight UTC).
    pub from: Option<String>,
    /// End of the time range, exclusive; same forms as `from`.
    pub to: Option<String>,
    /// Only this report type, e.g. `PERFORMANCE_REPORT`.
    pub report_type: Option<String>,
    /// Only this channel, e.g. `API_WEBHOOK`.
    pub channel: Option<String>,
    /// Only this subscriber.
    pub subscriber_id: Option<String>,
    /// failure-classification: error reasons listed per channel (1 to 100, default 5).
    pub top: Option<u32>,
    /// recommendations: attempts a (subscriber, channel) needs before it is judged (default 10).
    pub min_attempts: Option<u32>,
    /// recommendations: failure share from which an endpoint is reported as failing (0 to 1, default 0.25).
    pub failure_rate: Option<f64>,
    /// recommendations: how much higher another channel's attempt success rate must be to suggest it (0 to 1, default 0.3).
    pub min_improvement: Option<f64>,
    /// recommendations: permanent failures from which a destination is reported as needing a fix (default 3).
    pub min_permanent: Option<u32>,
}

/// An analysis' answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AnalysisAnswer {
    pub analysis: String,
    /// The filters and tuning it ran with.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// False when rows of this range were dropped because the analytics writer had fallen behind.
    pub complete: bool,
    pub dropped_rows: u64,
    /// One object per row; the columns are each analysis' own (see the README).
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
}

/// The analyses served, by name.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AnalysisList {
    pub analyses: Vec<String>,
    /// Whether `POST /analytics/query` is enabled on this server.
    pub sql_enabled: bool,
}

#[utoipa::path(get, path = "/api/v1/reporting/analytics", tag = "analytics",
    responses((status = 200, body = AnalysisList)))]
pub async fn list(State(app): State<AppState>) -> axum::Json<AnalysisList> {
    axum::Json(AnalysisList {
        analyses: Analysis::ALL.iter().map(|a| a.name().to_string()).collect(),
        sql_enabled: app.analytics.sql_enabled,
    })
}

#[utoipa::path(get, path = "/api/v1/reporting/analytics/{name}", tag = "analytics",
    params(("name" = String, Path, description = "success-rate-latency, channel-effectiveness, subscriber-engagement, failure-classification, distribution-patterns or recommendations"), AnalysisQuery),
    responses((status = 200, body = AnalysisAnswer), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "Analytics is off or its store could not be opened", body = ErrorBody)))]
pub async fn analysis(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Params(query): Params<AnalysisQuery>,
) -> Result<axum::Json<AnalysisAnswer>, ApiError> {
    let analysis = Analysis::parse(&name).ok_or_else(|| ApiError::not_found("analysis", &name))?;
    let (filter, tuning) = parameters(&query)?;
    let store = store(&app)?;
    let timeout = app.analytics.query_timeout;
    let answer = tokio::task::spawn_blocking(move || store.analysis(analysis, &filter, &tuning, timeout))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(analytics_error)?;
    let rows = answer
        .rows
        .iter()
        .map(|row| serde_json::from_str(row))
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unreadable analysis row: {e}")))?;
    Ok(axum::Json(AnalysisAnswer {
        analysis: analysis.name().to_string(),
        parameters: serde_json::to_value(&query).unwrap_or_default(),
        complete: answer.complete(),
        dropped_rows: answer.dropped_rows,
        rows,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SELECT statement over the analytics tables and views: `deliveries`, `delivery_attempts`,
    /// `dead_letters`, `distribution_stats`, `attempt_outcomes`, `ingest_gaps`.
    pub sql: String,
}

/// The JSON form of a query's answer (Arrow IPC and Parquet answers carry the same rows).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SqlAnswer {
    /// Name and DuckDB type of each column, in order.
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
    pub row_count: usize,
    /// More rows matched than `analytics.max_rows`; only that many are here (header `x-repdist-truncated` on binary answers).
    pub truncated: bool,
}

#[utoipa::path(post, path = "/api/v1/reporting/analytics/query", tag = "analytics", request_body = SqlRequest,
    responses(
        (status = 200, description = "JSON by default; `Accept: application/vnd.apache.arrow.stream` for an Arrow IPC stream, `Accept: application/vnd.apache.parquet` for a Parquet file", body = SqlAnswer),
        (status = 403, description = "Not enabled on this server (`repdist serve --enable-sql-analytics`)", body = ErrorBody),
        (status = 406, description = "Accept names none of the three formats", body = ErrorBody),
        (status = 422, description = "Not a single SELECT, an error in it, or over the time limit (field `sql`)", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn query(State(app): State<AppState>, headers: HeaderMap, JsonBody(request): JsonBody<SqlRequest>) -> Result<Response, ApiError> {
    if !app.analytics.sql_enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sql_analytics_disabled",
            "SQL analytics is off on this server (start it with `repdist serve --enable-sql-analytics`)",
        ));
    }
    let format = negotiate(&headers)?;
    let store = store(&app)?;
    let limits = Limits { max_rows: app.analytics.max_rows, timeout: app.analytics.query_timeout };
    let answer = tokio::task::spawn_blocking(move || store.query(&request.sql, format, limits))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(analytics_error)?;
    let content_type = match format {
        Format::Json => "application/json",
        Format::ArrowIpc => ARROW_STREAM,
        Format::Parquet => PARQUET,
    };
    let mut response = (StatusCode::OK, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-repdist-row-count", HeaderValue::from(answer.rows));
    headers.insert("x-repdist-truncated", HeaderValue::from_static(if answer.truncated { "true" } else { "false" }));
    Ok(response)
}

/// JSON unless `Accept` prefers Arrow IPC or Parquet; 406 if it allows none of them.
fn negotiate(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return Ok(Format::Json) };
    for media in accept.split(',').map(|part| part.split(';').next().unwrap_or("").trim().to_ascii_lowercase()) {
        match media.as_str() {
            "application/json" | "*/*" | "application/*" => return Ok(Format::Json),
            ARROW_STREAM | "application/vnd.apache.arrow.file" => return Ok(Format::ArrowIpc),
            PARQUET | "application/parquet" | "application/x-parquet" => return Ok(Format::Parquet),
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!("answers are application/json, {ARROW_STREAM} or {PARQUET}"),
    ))
}

fn store(app: &AppState) -> Result<Arc<AnalyticsStore>, ApiError> {
    match app.runtime.analytics() {
        Some(feed) => Ok(feed.store().clone()),
        None => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "analytics_unavailable",
                "analytics is off on this server, or its store could not be opened (see the log)",
            );
            error.retry_after = Some(60);
            Err(error)
        }
    }
}

fn analytics_error(error: AnalyticsError) -> ApiError {
    match error {
        AnalyticsError::Refused(message) => {
            let mut error = ApiError::invalid("sql", message);
            error.code = "statement_refused";
            error
        }
        AnalyticsError::Timeout(limit) => {
            let mut error = ApiError::invalid("sql", format!("stopped after the time limit of {} s", limit.as_secs_f64()));
            error.code = "query_timeout";
            error
        }
        // An error DuckDB raised running the statement: the caller's SQL (a missing column, a
        // refused file read), reported as such.
        AnalyticsError::Duckdb(error) => {
            let mut error = ApiError::invalid("sql", error.to_string());
            error.code = "query_failed";
            error
        }
        other => {
            tracing::error!(error = %other, "analytics failed");
            let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "analytics_unavailable", other.to_string());
            error.retry_after = Some(5);
            error
        }
    }
}

fn parameters(query: &AnalysisQuery) -> Result<(Filter, Tuning), ApiError> {
    let defaults = Tuning::default();
    let filter = Filter {
        from: query.from.as_deref().map(|t| instant("from", t)).transpose()?,
        to: query.to.as_deref().map(|t| instant("to", t)).transpose()?,
        report_type: match &query.report_type {
            Some(t) => match ReportDataType::ALL.iter().find(|known| known.as_str() == t) {
                Some(known) => Some(known.as_str().to_string()),
                None => return Err(ApiError::invalid("report_type", format!("unknown report type `{t}`"))),
            },
            None => None,
        },
        channel: match &query.channel {
            Some(c) => match DeliveryChannel::parse(c) {
                Some(known) => Some(known.as_str().to_string()),
                None => return Err(ApiError::invalid("channel", format!("unknown channel `{c}`"))),
            },
            None => None,
        },
        subscriber_id: query.subscriber_id.clone(),
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from >= to {
            return Err(ApiError::invalid("to", "must be after `from`"));
        }
    }
    let fraction = |field: &str, value: Option<f64>, default: f64| match value {
        None => Ok(default),
        Some(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Some(_) => Err(ApiError::invalid(field, "must be between 0 and 1")),
    };
    let tuning = Tuning {
        top: match query.top {
            None => defaults.top,
            Some(top) if (1..=100).contains(&top) => top,
            Some(_) => return Err(ApiError::invalid("top", "must be between 1 and 100")),
        },
        min_attempts: match query.min_attempts {
            None => defaults.min_attempts,
            Some(n) if n >= 1 => n,
            Some(_) => return Err(ApiError::invalid("min_attempts", "must be at least 1")),
        },
        failure_rate: fraction("failure_rate", query.failure_rate, defaults.failure_rate)?,
        min_improvement: fraction("min_improvement", query.min_improvement, defaults.min_improvement)?,
        min_permanent: match query.min_permanent {
            None => defaults.min_permanent,
            Some(n) if n >= 1 => n,
            Some(_) => return Err(ApiError::invalid("min_permanent", "must be at least 1")),
        },
    };
    Ok((filter, tuning))
}

/// Microseconds since the epoch from RFC 3339 or a date (midnight UTC).
fn instant(field: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_micros());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(midnight) = date.and_hms_opt(0, 0, 0) {
            return Ok(midnight.and_utc().timestamp_micros());
        }
    }
    Err(ApiError::invalid(field, "must be an RFC 3339 time (2025-06-21T10:00:00Z) or a date (2025-06-21)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_chooses_the_format() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            negotiate(&headers).map_err(|e| e.status)
        };
        assert_eq!(negotiate(&HeaderMap::new()).map_err(|e| e.status), Ok(Format::Json));
        assert_eq!(with("application/vnd.apache.arrow.stream"), Ok(Format::ArrowIpc));
        assert_eq!(with("application/vnd.apache.parquet"), Ok(Format::Parquet));
        assert_eq!(with("text/html, application/parquet;q=0.9"), Ok(Format::Parquet));
        assert_eq!(with("*/*"), Ok(Format::Json));
        assert_eq!(with("text/csv"), Err(StatusCode::NOT_ACCEPTABLE));
    }

    #[test]
    fn times_are_rfc3339_or_dates() {
        assert_eq!(instant("from", "1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        assert_eq!(instant("from", "1970-01-02").unwrap(), 86_400_000_000);
        assert_eq!(instant("from", "yesterday").unwrap_err().field.as_deref(), Some("from"));
    }
}
