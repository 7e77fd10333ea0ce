//! `GET|HEAD /firmware/{*path}`: files from the firmware folder, authorised exactly like a
//! phone's common file (server-default credentials, or a known phone's own when its MAC is
//! in the User-Agent; same 401 challenge, 429 throttle and allow-lists), streamed from disk
//! with a strong ETag, `Last-Modified`, single-range `Range` (206/416), `If-Range`,
//! `If-None-Match` and `If-Modified-Since` (304).
//!
//! Path safety: every segment must be a plain, non-hidden name (no empty, `.`, `..` or
//! dot-prefixed segment, no backslash, no NUL); the canonical file must lie inside the
//! canonical folder (a symlink may point elsewhere inside it, not out of it, and not at a
//! hidden name) and be a regular file. Anything else is a 404, decided only after
//! authentication, so an outsider learns nothing about the folder.
//!
//! A `Range` with several ranges is answered with the whole file (200), as RFC 9110 allows;
//! a syntactically invalid one is ignored likewise.

use std::io::SeekFrom;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use http_range_header::RangeUnsatisfiableError;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::phone::{
    Presented, admit, authenticate, challenge, client_address, count_failure, ip_text, peer_of,
    server_default_ok, user_agent,
};
use crate::AppState;
use crate::activity::Asked;
use crate::error::AppError;
use crate::model::Gate;
use crate::model::agent::{self, Agent};
use crate::telemetry::RequestFacts;

/// Read buffer of the streamed body.
const CHUNK: usize = 64 << 10;

/// `GET|HEAD /firmware/{*path}`
pub async fn fetch(
    State(st): State<AppState>,
    Path(path): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
) -> Response {
    let headers = request.headers();
    let ip = client_address(&st, peer_of(peer), headers);
    let ua = user_agent(headers);
    let agent = agent::parse(ua);
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let creds = Presented::new(&st, headers, request.method().as_str(), target);
    let file = format!("firmware/{path}");
    // The vendor label of the request metrics, as on the phone route.
    let mut facts = RequestFacts {
        vendor: agent.as_ref().map(|a| a.vendor),
        ..RequestFacts::default()
    };
    let mut known = None;
    let result = match admit(&st, ip, || None) {
        Ok(()) => {
            let access = Access {
                creds: &creds,
                ip,
                ua,
                agent: agent.as_ref(),
                file: &file,
            };
            match authorise(&st, &access, &mut known).await {
                Ok(()) => serve(&st.firmware, &path, request.method(), headers).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if let Some(gate) = &known {
        facts.mac = Some(gate.mac);
    }
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            count_failure(&st, &e, &creds, ip, known.as_ref().map(|g| g.mac));
            let mut r = e.into_phone_response();
            challenge(&st, &mut r, &creds);
            r
        }
    };
    if let Some(gate) = &known {
        st.fleet.fetched_by(
            gate,
            Asked {
                ip: ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                user_agent: ua,
                file: &file,
                status: resp.status().as_u16(),
            },
        );
    }
    resp.extensions_mut().insert(facts);
    resp
}

/// Who asks, for [`authorise`].
struct Access<'r> {
    creds: &'r Presented<'r>,
    ip: Option<std::net::IpAddr>,
    ua: &'r str,
    agent: Option<&'r Agent>,
    file: &'r str,
}

/// The common-file rule: a known phone (MAC in the User-Agent) with its own credentials
/// (its domain's allow-list applies), else the server-default (or bootstrap) credentials.
async fn authorise(
    st: &AppState,
    a: &Access<'_>,
    known: &mut Option<Arc<Gate>>,
) -> Result<(), AppError> {
    let mac = a
        .agent
        .and_then(|ag| ag.mac)
        .or_else(|| agent::mac_in(a.ua));
    let phone = match mac {
        Some(m) => st.store.gate(m)?,
        None => None,
    };
    match &phone {
        Some(p) => {
            *known = Some(p.clone());
            // Like a common file: a bootstrap credential reads it without being exchanged.
            authenticate(st, &st.templates(), p, a.creds, a.ip, false).await?;
        }
        None if server_default_ok(st, a.creds) => {
            if let Some(m) = mac {
                st.fleet
                    .unprovisioned_seen(m, &ip_text(a.ip), a.agent, a.file);
            }
        }
        None => return Err(AppError::PhoneUnauthorized),
    }
    Ok(())
}

fn not_found() -> AppError {
    AppError::NotFound("no such firmware file".into())
}

/// Whether a path segment may be served.
fn plain_segment(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains(['\\', '\0'])
}

/// The file `rel` names inside `root`, or 404.
pub async fn resolve(root: &FsPath, rel: &str) -> Result<PathBuf, AppError> {
    if !rel.split('/').all(plain_segment) {
        return Err(not_found());
    }
    let root = tokio::fs::canonicalize(root)
        .await
        .map_err(|_| not_found())?;
    let file = tokio::fs::canonicalize(root.join(rel))
        .await
        .map_err(|_| not_found())?;
    let inside = file.strip_prefix(&root).map_err(|_| not_found())?;
    let plain = inside.components().all(
        |c| matches!(c, std::path::Component::Normal(n) if n.to_str().is_some_and(plain_segment)),
    );
    if !plain || inside.as_os_str().is_empty() {
        return Err(not_found());
    }
    Ok(file)
}

/// A strong validator from size and modification time (to the nanosecond).
fn etag(size: u64, mtime: SystemTime) -> String {
    let t = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("\"{size:x}-{:x}.{:x}\"", t.as_secs(), t.subsec_nanos())
}

/// `If-None-Match` (weak comparison; `*` matches).
fn none_match(headers: &HeaderMap, etag: &str) -> Option<bool> {
    let mut any = false;
    let mut hit = false;
    for v in headers.get_all(header::IF_NONE_MATCH) {
        any = true;
        if let Ok(s) = v.to_str() {
            hit |= s
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
        }
    }
    any.then_some(hit)
}

/// `If-Modified-Since`: true when the file has not changed since that date.
fn not_modified_since(headers: &HeaderMap, mtime_secs: u64) -> bool {
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|d| mtime_secs <= d.as_secs())
}

/// `If-Range`: the range applies only when the validator is the current one (an ETag by
/// strong comparison, or exactly the `Last-Modified` date).
fn if_range_holds(headers: &HeaderMap, etag: &str, last_modified: &str) -> bool {
    match headers.get(header::IF_RANGE).map(|v| v.to_str()) {
        None => true,
        Some(Ok(v)) => {
            let v = v.trim();
            if v.starts_with('"') {
                v == etag
            } else {
                !v.starts_with("W/") && v == last_modified
            }
        }
        Some(Err(_)) => false,
    }
}

/// The content type for a file name's extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "cfg" | "boot" | "ini" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "json" => "application/json",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "pem" | "crt" | "cer" => "application/x-x509-ca-cert",
        _ => "application/octet-stream",
    }
}

fn io(source: std::io::Error) -> AppError {
    AppError::Io {
        what: "reading a firmware file",
        source,
    }
}

fn built(e: axum::http::Error) -> AppError {
    io(std::io::Error::other(e))
}

/// Answers with the file: 200, 206, 304, or 416.
async fn serve(
    root: &FsPath,
    rel: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let path = resolve(root, rel).await?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    // The opened file's own metadata: size and validators match the bytes served.
    let meta = file.metadata().await.map_err(io)?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let size = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let mtime_secs = mtime
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let tag = etag(size, mtime);
    let last_modified = httpdate::fmt_http_date(mtime);
    let mut b = Response::builder()
        .header(header::ETAG, &tag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::ACCEPT_RANGES, "bytes");
    // If-None-Match, when sent, decides alone (RFC 9110 §13.2.2).
    let unchanged = match none_match(headers, &tag) {
        Some(hit) => hit,
        None => not_modified_since(headers, mtime_secs),
    };
    if unchanged {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(built);
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_holds(headers, &tag, &last_modified))
        .and_then(|r| http_range_header::parse_range_header(r).ok())
        .map(|r| r.validate(size));
    let (status, start, len) = match range {
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let (s, e) = (*ranges[0].start(), *ranges[0].end());
            b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}"));
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        Some(Err(RangeUnsatisfiableError::Unsatisfiable)) => {
            return Err(AppError::RangeNotSatisfiable { size });
        }
        // No Range, several ranges, an invalid or intolerable one: the whole file.
        _ => (StatusCode::OK, 0, size),
    };
    b = b
        .status(status)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(rel)),
        )
        .header(header::CONTENT_LENGTH, len);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await.map_err(io)?;
        }
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            CHUNK,
        ))
    };
    b.body(body).map_err(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        for bad in ["", ".", "..", ".hidden", "a\\b", "a\0"] {
            assert!(!plain_segment(bad), "{bad:?}");
        }
        for good in ["T46S-66.86.0.15.rom", "a..b", "x.", "fw"] {
            assert!(plain_segment(good), "{good:?}");
        }
    }

    #[test]
    fn types() {
        assert_eq!(content_type("a/T46S.rom"), "application/octet-stream");
        assert_eq!(content_type("x.ZIP"), "application/zip");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("ring.wav"), "audio/wav");
    }

    #[test]
    fn if_range() {
        let mut h = HeaderMap::new();
        assert!(if_range_holds(&h, "\"a\"", "d"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"a\""));
        assert!(if_range_holds(&h, "\"a\"", "d"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("W/\"a\""));
        assert!(!if_range_holds(&h, "\"a\"", "d"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"b\""));
        assert!(!if_range_holds(&h, "\"a\"", "d"));
    }
}
