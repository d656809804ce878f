//! The JSON body extractor: a too-large body is 413, malformed JSON 400, and a body of the wrong
//! shape 422 naming the field (path-aware deserialization), instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct JsonBody<T>(pub T);

/// Query parameters, with a 422 naming the parameter instead of axum's plain-text rejection.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(Params).map_err(|error| {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            ApiError::invalid(parameter_name(&path, &message), message)
        })
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with `content-type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", rejection.body_text())
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Deserializes `bytes`, turning serde's error into one that names the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("malformed JSON: {message}"));
        }
        ApiError::invalid(field_name(&path, &message), strip_position(&message))
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde reports a missing field at its parent's path, naming it only in the message; an unknown
/// field's path already ends with it.
fn field_name(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    if message.starts_with("unknown field `") && !parent.is_empty() {
        return parent.to_string();
    }
    let named = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if parent.is_empty() => name.to_string(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_string(),
        None => parent.to_string(),
    }
}

/// As [`field_name`], for query parameters: a parameter given twice is named (serde reports it at
/// the root), and an error blaming no parameter blames the `query` as a whole, never a `body`.
fn parameter_name(path: &str, message: &str) -> String {
    // Named from the message: serde reports a duplicate at the root, and the path of an unknown
    // parameter named `.` would read as the root.
    for prefix in ["duplicate field `", "unknown field `"] {
        if let Some(name) = message.strip_prefix(prefix).and_then(quoted_name) {
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    match field_name(path, message) {
        name if name == "body" => "query".to_string(),
        name => name,
    }
}

/// The name serde quoted at the start of `rest`: up to the backtick that ends the quote, which the
/// name itself may contain (a parameter called ``a`b``), so it is found by what follows it.
fn quoted_name(rest: &str) -> Option<&str> {
    for end in ["`, expected ", "`, there are no fields"] {
        if let Some(i) = rest.find(end) {
            return Some(&rest[..i]);
        }
    }
    rest.strip_suffix('`')
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn a_quoted_name_may_hold_backticks() {
        assert_eq!(parameter_name(".", "unknown field `0``, expected one of `a`, `b`"), "0`");
        assert_eq!(parameter_name(".", "unknown field `x`, there are no fields"), "x");
        assert_eq!(parameter_name(".", "duplicate field `a`b`"), "a`b");
    }

    #[test]
    fn errors_name_the_field() {
        let wrong_type = parse::<Outer>(br#"{"inner": {"count": "x"}}"#).unwrap_err();
        assert_eq!(wrong_type.field.as_deref(), Some("inner.count"));
        assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
        let missing = parse::<Outer>(br#"{"inner": {}}"#).unwrap_err();
        assert_eq!(missing.field.as_deref(), Some("inner.count"));
        let unknown = parse::<Outer>(br#"{"inner": {"count": 1}, "extra": 2}"#).unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("extra"));
        let malformed = parse::<Outer>(br#"{"inner": "#).unwrap_err();
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    }
}
