//! EMAIL templates over REST: list, set and remove the subject / HTML / text templates the EMAIL sink
//! renders, per report type (or `*` for every type) and locale.
//!
//! The API and the EMAIL sink share one `TemplateStore` (held by the runtime), so a change applies
//! to the next email rendered. A template is checked when it is set (compiled, then rendered against
//! a sample report): a broken one is a 422 naming the part (`subject`, `html` or `text`) and is not
//! stored. Templates are kept in the database (`email_templates`) and survive a restart.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use dataflows::report::ReportDataType;
use serde::{Deserialize, Serialize};
use sinks::email::{EmailTemplate, TemplateError, TemplateKey, ANY_REPORT_TYPE};

use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::runtime::templates::TemplateWriteError;

/// A template's three parts (minijinja). The report is `report` (its `report_data`), the whole event
/// `event`, plus `delivery_id`, `subscriber_id`, `subscription_id`, `attempt` and, when a file is
/// attached or linked, `attachment_name` / `attachment_link`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// One line; whitespace is collapsed after rendering.
    pub subject: String,
    /// HTML body; values are HTML-escaped unless marked `| safe`.
    pub html: String,
    /// Plain-text body.
    pub text: String,
}

/// A configured template and its key.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoredTemplate {
    /// A report type (`PERFORMANCE_REPORT`) or `*` for every type.
    pub report_type: String,
    pub locale: String,
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// Every configured template. Lookup for a report of type T to a subscriber with locale L tries
/// (T, L), (T, default), (*, L), (*, default), then the built-in template.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateList {
    pub default_locale: String,
    /// Whether EMAIL is enabled on this server (templates can be prepared before it is).
    pub email_enabled: bool,
    pub templates: Vec<StoredTemplate>,
}

fn stored(key: TemplateKey, template: EmailTemplate) -> StoredTemplate {
    StoredTemplate {
        report_type: key.report_type,
        locale: key.locale,
        subject: template.subject,
        html: template.html,
        text: template.text,
    }
}

/// The key from the path, naming the path parameter that is wrong.
fn key(report_type: String, locale: String) -> Result<TemplateKey, ApiError> {
    if report_type != ANY_REPORT_TYPE && !ReportDataType::ALL.iter().any(|t| t.as_str() == report_type) {
        return Err(ApiError::invalid(
            "report_type",
            "must be a report type such as PERFORMANCE_REPORT, or * for every type",
        ));
    }
    let locale_ok = !locale.is_empty()
        && locale.len() <= 35
        && locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !locale_ok {
        return Err(ApiError::invalid("locale", "must be a locale such as en or de-AT"));
    }
    Ok(TemplateKey::new(report_type, locale))
}

#[utoipa::path(get, path = "/api/v1/reporting/templates", tag = "templates",
    responses((status = 200, description = "The configured email templates", body = TemplateList)))]
pub async fn list(State(app): State<AppState>) -> Json<TemplateList> {
    let templates = app.runtime.templates().live();
    Json(TemplateList {
        default_locale: templates.default_locale().to_string(),
        email_enabled: app.runtime.enabled_channels().contains(&sinks::EmailSink::CHANNEL),
        templates: templates.list().into_iter().map(|(k, t)| stored(k, t)).collect(),
    })
}

#[utoipa::path(put, path = "/api/v1/reporting/templates/{report_type}/{locale}", tag = "templates",
    params(("report_type" = String, Path, description = "A report type, or `*` for every type"), ("locale" = String, Path)),
    request_body = TemplateBody,
    responses((status = 200, description = "Stored; applies to the next email rendered and survives restarts", body = StoredTemplate),
              (status = 422, description = "A bad key, or a template part (`subject`, `html`, `text`) that does not compile or render", body = ErrorBody)))]
pub async fn put(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    Path((report_type, locale)): Path<(String, String)>,
    JsonBody(body): JsonBody<TemplateBody>,
) -> Result<Json<StoredTemplate>, ApiError> {
    let key = key(report_type, locale)?;
    let template = EmailTemplate { subject: body.subject, html: body.html, text: body.text };
    app.runtime.templates().set(key.clone(), template.clone()).await.map_err(|error| match error {
        TemplateWriteError::Invalid(
            TemplateError::Invalid { part, message, .. } | TemplateError::Render { part, message, .. },
        ) => ApiError::invalid(part.as_str(), message),
        TemplateWriteError::Invalid(error @ TemplateError::InvalidKey { .. }) => {
            ApiError::invalid("locale", error.to_string())
        }
        TemplateWriteError::Store(error) => error.into(),
    })?;
    app.auth.auditor().done(&principal, "template.put", &key.to_string()).await;
    Ok(Json(stored(key, template)))
}

#[utoipa::path(delete, path = "/api/v1/reporting/templates/{report_type}/{locale}", tag = "templates",
    params(("report_type" = String, Path), ("locale" = String, Path)),
    responses((status = 204, description = "Removed; lookup falls back to the next template"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    Path((report_type, locale)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = key(report_type, locale)?;
    match app.runtime.templates().remove(&key).await? {
        true => {
            app.auth.auditor().done(&principal, "template.delete", &key.to_string()).await;
            Ok(StatusCode::NO_CONTENT)
        }
        false => Err(ApiError::not_found("template", &key.to_string())),
    }
}
