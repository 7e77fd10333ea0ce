//! The router: phone and admin routes, the layer stack, fallbacks. No handler logic.

pub mod admin;
mod body;
pub(crate) use body::is_json_type;
pub mod bulk;
pub mod firmware;
pub mod openapi;
mod params;
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
use crate::telemetry::RequestFacts;

/// Largest admin request body.
pub const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// Longest request target (path and query) answered: no file name or API path comes near
/// it. 8 KiB, like nginx's and Apache's default request-line limits.
pub const URI_LIMIT: usize = 8 << 10;

/// Screens every request before routing: a request target over [`URI_LIMIT`] is a 414; a
/// second `Authorization` header is a 400 (which one counts would be a guess, and a proxy
/// may have checked the other). Answers in the admin or the phone error shape.
fn screen<B>(req: &axum::http::Request<B>) -> Option<Response> {
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

/// The front line of every request, outermost first: the request line (when logged), the
/// request metrics, the request timeout (408 after `limits.request_timeout`, body read
/// included), the screening; then `handle`. One function for the router's layer and for
/// [`Front`]'s direct phone route, so both behave the same.
async fn front_line<B, F, Fut>(st: &AppState, req: axum::http::Request<B>, handle: F) -> Response
where
    F: FnOnce(axum::http::Request<B>) -> Fut,
    Fut: Future<Output = (Response, Option<RequestFacts>)>,
{
    let line = crate::telemetry::RequestLine::start(&req);
    let kind = crate::metrics::kind_of(req.uri().path());
    let (resp, facts) = match screen(&req) {
        Some(refused) => (refused, None),
        // Pinned here and lent to `within`: a future passed on by value is kept in the
        // state of each async fn it passes through, and these are kilobytes.
        None => match within(st.limits.request_timeout, std::pin::pin!(handle(req))).await {
            Some(done) => done,
            None => (StatusCode::REQUEST_TIMEOUT.into_response(), None),
        },
    };
    // Handed on by the direct route, else put on the response by a routed handler.
    let facts = facts.or_else(|| resp.extensions().get::<RequestFacts>().copied());
    crate::metrics::count_request(st, kind, &resp, facts.as_ref());
    if let Some(line) = line {
        line.finish(&resp, facts.as_ref());
    }
    resp
}

/// `work`'s output, or `None` once it has waited `limit`. The first poll runs without a
/// timer: a cached fetch completes there, and needs no timer armed and cancelled (its cost
/// is in docs/PERFORMANCE.md). The limit counts from that first wait, so a request gets
/// its full `limit` of waiting (on a body, a render, a flush) in any case.
async fn within<T>(
    limit: std::time::Duration,
    mut work: std::pin::Pin<&mut impl Future<Output = T>>,
) -> Option<T> {
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(done) => Some(done),
        std::task::Poll::Pending => tokio::time::timeout(limit, work).await.ok(),
    }
}

/// The router's layer: `front_line` in front of the routes.
async fn frontline(State(st): State<AppState>, req: Request, next: Next) -> Response {
    front_line(&st, req, |req| async { (next.run(req).await, None) }).await
}

/// Whether a request can skip the router: `GET` or `HEAD` of a phone file (one segment,
/// as [`crate::metrics::kind_of`] classifies paths) whose name needs no percent-decoding.
/// Everything else (and these too, when the router is used directly) takes the router's
/// `/{file}` route to the same handler.
fn is_direct_phone_file<B>(req: &axum::http::Request<B>) -> bool {
    use axum::http::Method;
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && crate::metrics::kind_of(req.uri().path()) == crate::metrics::Kind::Phone
        && !req.uri().path().contains('%')
}

/// The service each accepted connection runs: a phone's file request goes straight to
/// its handler, anything else through the router (with the peer address as the
/// `ConnectInfo` extension); both behind `front_line`. The router and its boxed layers
/// were a tenth of a cached fetch's time.
#[derive(Clone)]
pub struct Front {
    state: AppState,
    routes: Router,
    peer: std::net::SocketAddr,
    /// The connection's progress for the header-read timeout (none in tests that call
    /// the service directly).
    watch: Option<std::sync::Arc<crate::watchdog::Watch>>,
}

impl Front {
    /// The service for one connection from `peer`; `routes` from [`routes`].
    pub fn new(state: AppState, routes: Router, peer: std::net::SocketAddr) -> Self {
        Front {
            state,
            routes,
            peer,
            watch: None,
        }
    }

    /// The same, with its requests counted as the connection's progress.
    pub fn watched(mut self, watch: std::sync::Arc<crate::watchdog::Watch>) -> Self {
        self.watch = Some(watch);
        self
    }

    async fn handle(self, req: hyper::Request<hyper::body::Incoming>) -> Response {
        let _busy = self.watch.as_ref().map(crate::watchdog::Watch::busy);
        let st = &self.state;
        front_line(st, req, |mut req| async move {
            if is_direct_phone_file(&req) {
                let (parts, _) = req.into_parts();
                let file = parts.uri.path().get(1..).unwrap_or_default();
                let (resp, facts) = phone::fetch_file(st, file, Some(self.peer), &parts).await;
                return (resp, Some(facts));
            }
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(self.peer));
            // Boxed: the router's future is several kilobytes, and an unboxed one made every
            // phone request's future that large (moved on each call).
            let routed = tower::ServiceExt::oneshot(self.routes, req.map(axum::body::Body::new));
            match Box::pin(routed).await {
                Ok(resp) => (resp, None),
                Err(never) => match never {},
            }
        })
        .await
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// Builds the whole app: `front_line` (request log → metrics → timeout → screening) as a
/// layer in front of [`routes`]. What the CLI's local API and the benches call; the server
/// runs [`routes`] behind [`Front`].
pub fn router(state: AppState) -> Router {
    routes(state.clone()).layer(axum::middleware::from_fn_with_state(state, frontline))
}

/// The routes without the front line: phone and admin routes, the admin body limit
/// (1 MiB), the fallbacks.
pub fn routes(state: AppState) -> Router {
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
        .with_state(state)
}
