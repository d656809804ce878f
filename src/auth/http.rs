//! The REST and WebSocket side: a middleware on every `/api/v1/reporting` route that finds the
//! caller ([`Principal`], put in the request's extensions for the handlers) or answers 401, and
//! answers 403 to a role the route is not for. WebSocket clients that cannot set headers may pass
//! the credential as the `token` query parameter of `/stream`.

use axum::extract::{MatchedPath, OriginalUri, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{bearer, policy, AuthError, Principal};
use crate::api::error::ApiError;
use crate::api::AppState;

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Missing | AuthError::Invalid(_) | AuthError::Revoked => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", error.to_string())
            }
            AuthError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", error.to_string()),
            AuthError::Store(e) => e.into(),
        }
    }
}

fn refusal(error: AuthError) -> Response {
    let unauthenticated = error.outcome() == "unauthenticated";
    let mut response = ApiError::from(error).into_response();
    if unauthenticated {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The credential of a request: the `Authorization` header, else (for `/stream`) `?token=`.
fn credential(request: &Request, route: &str) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        // A header that is there but not a bearer credential is a bad credential, not a missing one.
        return Some(value.to_str().ok().and_then(bearer).unwrap_or("\u{0}").to_string());
    }
    // Only the WebSocket takes it in the URL (browsers cannot set headers on the handshake); URLs
    // end up in logs, so nowhere else.
    if !route.ends_with("/stream") {
        return None;
    }
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

pub async fn require(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_string();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| request.uri().path().to_string());
    // The path as the client sent it (inside the nested router `uri()` lacks the prefix).
    let path = request.extensions().get::<OriginalUri>().map(|u| u.path().to_string()).unwrap_or_else(|| request.uri().path().to_string());
    let target = format!("{method} {path}");
    let auth = &app.auth;
    let principal = match auth.authenticate(credential(&request, &route).as_deref()).await {
        Ok(principal) => principal,
        Err(error) => {
            if !matches!(error, AuthError::Store(_)) {
                auth.auditor().denied(None, target, &error);
            }
            return refusal(error);
        }
    };
    if !policy::rest_allows(principal.role, &method, &route) {
        let error = AuthError::Forbidden(format!("call {method} {route} (role {})", principal.role.as_str()));
        auth.auditor().denied(Some(&principal), target, &error);
        return refusal(error);
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// For handlers: 404 (as if it did not exist) when `principal` may not see `subscriber_id`'s data.
pub fn ensure_owner(principal: &Principal, subscriber_id: &str, what: &str, id: &str) -> Result<(), ApiError> {
    if principal.owns(subscriber_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(what, id))
    }
}
