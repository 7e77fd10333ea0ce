//! How the subcommands reach the admin API: in-process on the data folder (the same axum
//! router the server runs, over a store opened by this process), or over HTTP to a running
//! server (`--url`, `--token`). Either way every rule is the admin API's own.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use axum::http::{Method, header};
use serde_json::Value;

use crate::config::Config;
use crate::store::StoreError;
use crate::{AppState, StartupError, auth};

/// An admin API endpoint.
pub(crate) enum Api {
    /// The data folder, opened by this process.
    Local {
        /// The app.
        router: axum::Router,
        /// A token made for this process only (its hash replaces the stored one in memory).
        token: String,
    },
    /// A running server.
    Remote {
        /// Client.
        http: reqwest::Client,
        /// Base URL without a trailing slash.
        base: String,
        /// Bearer token.
        token: String,
    },
}

/// An answer: status and body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).context("the server's answer is not JSON")
    }
}

/// `true` when the data folder holds a store.
pub(crate) fn store_exists(config: &Config) -> bool {
    config.data.join("store").join("db").exists()
}

/// The error for a data folder with no store.
pub(crate) fn no_store(config: &Config) -> anyhow::Error {
    anyhow!(
        "--data: no store in {} (expected {}); check --data, or create one with `autoprov import` or `autoprov serve`",
        config.data.display(),
        config.data.join("store").display()
    )
}

/// Adds how to reach a running server to a "store is locked" error.
pub(crate) fn locked_hint(e: anyhow::Error) -> anyhow::Error {
    let locked = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<StoreError>(),
            Some(StoreError::Locked { .. })
        ) || matches!(
            c.downcast_ref::<StartupError>(),
            Some(StartupError::Store(StoreError::Locked { .. }))
        )
    });
    if locked {
        e.context(
            "--data: a running autoprov holds this data folder; stop it, or send this command \
             to it with --url http://HOST:PORT and --token TOKEN (or AUTOPROV_TOKEN)",
        )
    } else {
        e
    }
}

/// Opens the data folder like the server does (models, templates, store). With `create`
/// false, a folder without a store is an error instead of a new store.
pub(crate) fn open_local(config: &Config, create: bool) -> anyhow::Result<(AppState, String)> {
    if !create && !store_exists(config) {
        return Err(no_store(config));
    }
    let (state, _) = crate::init(config).map_err(|e| locked_hint(anyhow::Error::new(e)))?;
    let mut inner = Arc::try_unwrap(state.0)
        .map_err(|_| anyhow!("internal: the state is shared before the CLI got it"))?;
    let token = auth::random_secret(40);
    inner.admin_token_hash = auth::hash(&token).to_vec();
    Ok((AppState(Arc::new(inner)), token))
}

impl Api {
    /// The data folder's API.
    pub fn local(config: &Config, create: bool) -> anyhow::Result<Self> {
        let (state, token) = open_local(config, create)?;
        Ok(Api::Local {
            router: crate::http::router(state),
            token,
        })
    }

    /// A running server's API.
    pub fn remote(url: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| anyhow!("--url: {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--url: {url:?} must start with http:// or https://");
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("--token: required with --url (or set AUTOPROV_TOKEN)"))?;
        Ok(Api::Remote {
            http: reqwest::Client::new(),
            base: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Sends `method path` (under `/api/v1`) with an optional body `(content type, bytes)`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Reply> {
        match self {
            Api::Local { router, token, .. } => {
                let mut b = axum::http::Request::builder()
                    .method(method)
                    .uri(format!("/api/v1{path}"))
                    .header(header::AUTHORIZATION, format!("Bearer {token}"));
                let bytes = match body {
                    Some((ct, bytes)) => {
                        b = b.header(header::CONTENT_TYPE, ct);
                        bytes
                    }
                    None => Vec::new(),
                };
                let req = b
                    .body(axum::body::Body::from(bytes))
                    .map_err(|e| anyhow!("internal: building the request: {e}"))?;
                let resp = tower::ServiceExt::oneshot(router.clone(), req)
                    .await
                    .map_err(|e| anyhow!("internal: {e}"))?;
                let status = resp.status().as_u16();
                let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .map_err(|e| anyhow!("internal: reading the answer: {e}"))?;
                Ok(Reply {
                    status,
                    body: body.to_vec(),
                })
            }
            Api::Remote { http, base, token } => {
                let mut rb = http
                    .request(method, format!("{base}/api/v1{path}"))
                    .bearer_auth(token);
                if let Some((ct, bytes)) = body {
                    rb = rb.header(header::CONTENT_TYPE, ct).body(bytes);
                }
                let resp = rb
                    .send()
                    .await
                    .map_err(|e| anyhow!("--url: cannot reach {base}: {}", error_chain(&e)))?;
                let status = resp.status().as_u16();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| anyhow!("--url: reading the answer from {base}: {e}"))?;
                Ok(Reply {
                    status,
                    body: body.to_vec(),
                })
            }
        }
    }

    /// Like [`Api::call`] with a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.call(
            method,
            path,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// One path segment, percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error an answer carries, with the API's field renamed to the CLI argument that
/// gave it (`names`); `None` keeps the API name.
pub(crate) fn api_error(reply: &Reply, names: &dyn Fn(&str) -> Option<String>) -> anyhow::Error {
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let e = &v["error"];
    let message = e["message"]
        .as_str()
        .map(|m| {
            m.replace("see GET /api/v1/models", "see `autoprov models`")
                .replace(
                    "create it with PUT /api/v1/domains/",
                    "create it with PUT /api/v1/domains/ or `autoprov import`: ",
                )
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).trim().to_string());
    if reply.status == 401 {
        return anyhow!("--token: the server refused the token ({message})");
    }
    // A 404 names no field; its message says what was missing.
    let missing = (reply.status == 404).then(|| {
        [
            ("no phone", "mac"),
            ("no domain", "domain"),
            ("no device", "device"),
            ("no token", "id"),
        ]
        .into_iter()
        .find(|(p, _)| message.starts_with(p))
        .map(|(_, f)| f)
    });
    match e["field"].as_str().or(missing.flatten()) {
        Some(f) => {
            let arg = names(f).unwrap_or_else(|| f.to_string());
            anyhow!("{arg}: {message}")
        }
        None if message.is_empty() => anyhow!("the server answered {}", reply.status),
        None => anyhow!("{message}"),
    }
}
