//! `AppError` (wrapping each layer's error), its mapping to HTTP status in one exhaustive
//! match, and the JSON error body `{"error":{"code","message","field"}}`. Phone-facing
//! errors get small plain-text bodies instead. Source error text never reaches a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::render::RenderError;
use crate::store::StoreError;

/// Every error a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A field is invalid (400).
    #[error("{field}: {message}")]
    Invalid {
        /// JSON path of the field (`members[1].port`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The body is not JSON, or not the expected shape (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is larger than the limit (413).
    #[error("request body too large (at most {0} bytes)")]
    PayloadTooLarge(usize),
    /// The request target is longer than any path the server answers (414).
    #[error("request target too long (at most {0} bytes)")]
    UriTooLong(usize),
    /// Not `application/json` (415).
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// Missing or wrong admin token (401).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Missing or wrong phone credentials (401 with a Basic challenge).
    #[error("authentication required")]
    PhoneUnauthorized,
    /// Refused (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with existing data (409).
    #[error("{field}: {message}")]
    Conflict {
        /// The field in conflict.
        field: String,
        /// What conflicts.
        message: String,
    },
    /// Too many failed authentications from this address or for this MAC (429).
    #[error("too many failed authentications; retry in {retry_after} s")]
    TooManyRequests {
        /// Seconds until the counting window ends (`Retry-After`).
        retry_after: u64,
    },
    /// Method not allowed on this path (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No byte of the requested `Range` lies in the file (416 with `Content-Range: bytes */size`).
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The file's size in bytes.
        size: u64,
    },
    /// Bulk import rows failed validation (400, every bad row listed in `rows`).
    #[error("{} bad row(s); nothing was imported", .0.len())]
    InvalidRows(Vec<crate::admin::bulk::RowError>),
    /// The store failed (500).
    #[error("store")]
    Store(#[from] StoreError),
    /// The render cache failed (500).
    #[error("cache")]
    Cache(#[from] crate::cache::CacheError),
    /// A template failed (500).
    #[error("render")]
    Render(#[from] RenderError),
    /// A reload found the new model/template set invalid (422); the old set stays.
    #[error(transparent)]
    Reload(#[from] crate::reload::ReloadError),
    /// A file in the data folder could not be written (500).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// An admin use case's refusal, as the HTTP answer it gets (the one place it is mapped).
impl From<crate::admin::AdminError> for AppError {
    fn from(e: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError as E;
        match e {
            E::Invalid { field, message } => AppError::Invalid { field, message },
            E::Conflict { field, message } => AppError::Conflict { field, message },
            E::NotFound(m) => AppError::NotFound(m),
            E::Store(e) => AppError::Store(e),
        }
    }
}

impl AppError {
    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// 409 naming `field`.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Status, stable code, and the field when there is one.
    pub fn parts(&self) -> (StatusCode, &'static str, Option<&str>) {
        match self {
            AppError::Invalid { field, .. } => (StatusCode::BAD_REQUEST, "invalid", Some(field)),
            AppError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json", None),
            AppError::InvalidRows(_) => (StatusCode::BAD_REQUEST, "invalid_rows", Some("rows")),
            AppError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            AppError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long", None),
            AppError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            AppError::Unauthorized | AppError::PhoneUnauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized", None)
            }
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            AppError::Conflict { field, .. } => (StatusCode::CONFLICT, "conflict", Some(field)),
            AppError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            AppError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None)
            }
            AppError::Reload(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_set",
                e.field.as_deref(),
            ),
            AppError::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                None,
            ),
            AppError::Store(_) | AppError::Cache(_) | AppError::Render(_) | AppError::Io { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        }
    }

    fn client_message(&self) -> String {
        match self {
            AppError::Invalid { message, .. } | AppError::Conflict { message, .. } => {
                message.clone()
            }
            AppError::Store(_) | AppError::Cache(_) | AppError::Render(_) | AppError::Io { .. } => {
                "internal error; see the server log".into()
            }
            other => other.to_string(),
        }
    }

    fn log(&self) {
        if let AppError::Store(_) | AppError::Cache(_) | AppError::Render(_) | AppError::Io { .. } =
            self
        {
            tracing::error!(error = %crate::render::error_chain(self), "request failed");
        }
    }

    /// The plain-text response phones get.
    pub fn into_phone_response(self) -> Response {
        self.log();
        let (status, _, _) = self.parts();
        let body = match status {
            StatusCode::UNAUTHORIZED => "authentication required\n",
            StatusCode::FORBIDDEN => "forbidden\n",
            StatusCode::NOT_FOUND => "not found\n",
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed\n",
            StatusCode::TOO_MANY_REQUESTS => "too many failed authentications\n",
            StatusCode::URI_TOO_LONG => "request target too long\n",
            StatusCode::RANGE_NOT_SATISFIABLE => "range not satisfiable\n",
            _ if status.is_server_error() => "internal error\n",
            _ => "bad request\n",
        };
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
        add_challenge(&self, &mut r);
        r
    }
}

fn add_challenge(e: &AppError, r: &mut Response) {
    match e {
        AppError::PhoneUnauthorized => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"autoprov\""),
            );
        }
        AppError::Unauthorized => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"autoprov\""),
            );
        }
        AppError::MethodNotAllowed => {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        AppError::TooManyRequests { retry_after } => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        AppError::RangeNotSatisfiable { size } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        _ => {}
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let (status, code, field) = self.parts();
        let mut err = json!({ "code": code, "message": self.client_message() });
        if let Some(f) = field {
            err["field"] = json!(f);
        }
        if let AppError::Reload(e) = &self {
            // Where the operator's own file is wrong (server-wide admin only).
            err["file"] = json!(e.file);
            err["line"] = json!(e.line);
        }
        let mut body = json!({ "error": err });
        if let AppError::InvalidRows(rows) = &self {
            body["rows"] = json!(rows);
        }
        let mut r = (status, axum::Json(body)).into_response();
        if !matches!(self, AppError::MethodNotAllowed) {
            add_challenge(&self, &mut r);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            AppError::invalid("a", "b").parts().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AppError::UnsupportedMediaType.parts().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(AppError::conflict("a", "b").parts().0, StatusCode::CONFLICT);
        let r = AppError::TooManyRequests { retry_after: 7 }.into_phone_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(AppError::UriTooLong(1).parts().0, StatusCode::URI_TOO_LONG);
        let r = AppError::PhoneUnauthorized.into_phone_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"autoprov\""
        );
    }
}
