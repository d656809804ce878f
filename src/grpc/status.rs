//! gRPC statuses from the API's one error type ([`ApiError`]), so that REST and gRPC answer the
//! same mistake the same way: a field error is `INVALID_ARGUMENT` naming the field (in the message
//! and in a `field` metadata entry), an unknown id `NOT_FOUND`, saturation `RESOURCE_EXHAUSTED`,
//! shutdown or storage trouble `UNAVAILABLE` (with `retry-after` seconds when a retry makes sense).

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::api::error::ApiError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let code = match (error.code, error.status.as_u16()) {
            ("overloaded", _) => Code::ResourceExhausted,
            (_, 400 | 413 | 415 | 422) => Code::InvalidArgument,
            (_, 404) => Code::NotFound,
            (_, 409) => Code::AlreadyExists,
            (_, 503) => Code::Unavailable,
            _ => Code::Internal,
        };
        let mut status = Status::new(code, error.message);
        if let Some(field) = error.field {
            // Field paths are ASCII (`delivery_preferences.channels[0]`); anything else is left out
            // of the metadata rather than failing the answer.
            if let Ok(value) = MetadataValue::try_from(field.as_str()) {
                status.metadata_mut().insert("field", value);
            }
        }
        if let Some(seconds) = error.retry_after {
            status.metadata_mut().insert("retry-after", MetadataValue::from(seconds));
        }
        status
    }
}

/// `INVALID_ARGUMENT` blaming `field` (a request field, or a path inside `subscription_json`).
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Status {
    ApiError::invalid(field, message).into()
}

pub fn not_found(what: &str, id: &str) -> Status {
    ApiError::not_found(what, id).into()
}

impl From<RuntimeError> for Status {
    fn from(error: RuntimeError) -> Status {
        ApiError::from(error).into()
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        ApiError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_kind_has_its_code() {
        let status = invalid("delivery_preferences.channels[0]", "unknown channel");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("delivery_preferences.channels[0]"));
        assert_eq!(status.metadata().get("field").unwrap(), "delivery_preferences.channels[0]");
        assert_eq!(not_found("delivery", "d1").code(), Code::NotFound);
        let overloaded = Status::from(RuntimeError::Overloaded);
        assert_eq!(overloaded.code(), Code::ResourceExhausted);
        assert_eq!(overloaded.metadata().get("retry-after").unwrap(), "1");
        assert_eq!(Status::from(RuntimeError::ShuttingDown).code(), Code::Unavailable);
    }
}
