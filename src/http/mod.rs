//! The router: phone and admin routes, the layer stack, fallbacks. No handler logic.

pub mod admin;
mod body;
pub(crate) use body::{is_json_type, parse_strict};
pub mod bulk;
pub mod firmware;
pub mod openapi;
pub mod phone;
mod reload;
mod schema;
mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::AppError;

/// Largest admin request body.
pub const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// Longest request target (path and query) answered: no file name or API path comes near
/// it. 8 KiB, like nginx's and Apache's default request-line limits.
pub const URI_LIMIT: usize = 8 << 10;

/// Screens every request before routing: a request target over [`URI_LIMIT`] is a 414; a
/// second `Authorization` header is a 400 (which one counts would be a guess, and a proxy
/// may have checked the other). Answers in the admin or the phone error shape.
fn screen(req: &Request) -> Option<Response> {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let e = if len > URI_LIMIT {
        AppError::UriTooLong(URI_LIMIT)
    } else if req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        AppError::invalid("Authorization", "is given more than once")
    } else {
        return None;
    };
    Some(if req.uri().path().starts_with("/api/") {
        e.into_response()
    } else {
        e.into_phone_response()
    })
}

/// The one layer in front of the router, outermost first: the request line (when logged),
/// the request metrics, the request timeout (408 after `limits.request_timeout`, body read
/// included), the screening. One layer, not four: each axum layer boxes a future per
/// request, and four of them took a fifth of a cached fetch's throughput.
async fn frontline(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let line = crate::telemetry::RequestLine::start(&req);
    let kind = crate::metrics::kind_of(req.uri().path());
    let resp = match screen(&req) {
        Some(refused) => refused,
        None => match tokio::time::timeout(st.limits.request_timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
        },
    };
    crate::metrics::count_request(&st, kind, &resp);
    if let Some(line) = line {
        line.finish(&resp);
    }
    resp
}

/// Builds the whole app: [`frontline`] (request log → metrics → timeout → screening), then
/// the router; the admin routes have their body limit (1 MiB).
pub fn router(state: AppState) -> Router {
    // The body limit is enforced by the JSON extractor (DefaultBodyLimit), so a too-large
    // body gets the JSON error shape like every other admin error.
    let (admin, _) = admin::routes().split_for_parts();
    let admin = admin
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
    let firmware = Router::new().route(
        "/firmware/{*path}",
        get(firmware::fetch)
            .fallback(|| async { AppError::MethodNotAllowed.into_phone_response() }),
    );
    Router::new()
        .nest("/api/v1", admin)
        // Before the phone route's `/{file}`: a static path always wins over a parameter.
        .route("/metrics", get(crate::metrics::scrape))
        .merge(phone)
        .merge(firmware)
        .fallback(|| async { AppError::NotFound("not found".into()).into_phone_response() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            frontline,
        ))
        .with_state(state)
}
