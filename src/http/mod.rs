//! The router: phone and admin routes, the layer stack, fallbacks. No handler logic.

pub mod admin;
mod body;
pub mod phone;
mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

use crate::AppState;
use crate::error::AppError;

/// Largest admin request body.
pub const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// Builds the whole app. Layer order, outermost first: request log → timeout (408 after
/// `limits.request_timeout`, body read included) → the admin router's body limit (1 MiB).
pub fn router(state: AppState) -> Router {
    // The body limit is enforced by the JSON extractor (DefaultBodyLimit), so a too-large
    // body gets the JSON error shape like every other admin error.
    let admin = admin::routes()
        .fallback(|| async { AppError::NotFound("no such API path".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT));
    // Phones send no body and the handler never reads one; no limit layer here, which
    // would answer a POST with 413 before the method check's 405.
    let phone = Router::new().route(
        "/{file}",
        get(phone::fetch)
            .put(phone::upload.layer(DefaultBodyLimit::max(phone::UPLOAD_LIMIT)))
            .fallback(|| async { AppError::MethodNotAllowed.into_phone_response() }),
    );
    Router::new()
        .nest("/api/v1", admin)
        .merge(phone)
        .fallback(|| async { AppError::NotFound("not found".into()).into_phone_response() })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn(crate::telemetry::log_requests))
        .with_state(state)
}
