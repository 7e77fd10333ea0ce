//! Admin use cases shared by the HTTP handlers (`http::…`) and the CLI's data-folder mode
//! (`cli::…`): they work on the store and the domain rules, know nothing of axum, and
//! report [`AdminError`], which `error::AppError` maps to HTTP in one place.

pub mod bulk;
pub mod tokens;

use crate::store::StoreError;

/// Why an admin use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A field is invalid (HTTP 400 naming the field).
    #[error("{field}: {message}")]
    Invalid {
        /// JSON path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Conflicts with stored data (HTTP 409 naming the field).
    #[error("{field}: {message}")]
    Conflict {
        /// The field in conflict.
        field: String,
        /// What conflicts.
        message: String,
    },
    /// No such record, or one the caller's scope may not see (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The store failed (HTTP 500; the CLI prints the cause).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    /// Invalid `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `field` conflicts with stored data.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }
}
