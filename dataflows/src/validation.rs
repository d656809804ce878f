//! Domain validation shared by every entry point (REST today, Kafka later): errors name the field.

use serde::Serialize;

/// A rejected input, naming the offending field with a dotted path (`filters.routing_key`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Checks that go beyond what deserialization enforces.
pub trait Validate {
    fn validate(&self) -> Result<(), FieldError>;
}

/// Identifiers are non-empty, at most [`crate::report::MAX_ID_LEN`] bytes, without control characters.
pub fn identifier(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > crate::report::MAX_ID_LEN {
        return Err(FieldError::new(field, format!("must be at most {} bytes", crate::report::MAX_ID_LEN)));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}
