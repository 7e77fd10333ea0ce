//! Rendered-file reuse. An entry is valid only for the phone revision and the
//! template/model-set digest it was rendered at, so stale bytes are unreachable by
//! construction (no TTLs). Concurrent misses for one file render once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::store::Store;

/// A rendered file, ready to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Quoted strong ETag (hash of the bytes).
    pub etag: String,
    /// Content-Type.
    pub content_type: String,
    /// User-Agent substrings the phone's accounts require.
    pub allowed_user_agents: Vec<String>,
    /// The bytes (cheap to clone into a response).
    pub body: Bytes,
    /// `etag` and `content_type` as ready header values (built once, not per response).
    pub headers: [axum::http::HeaderValue; 2],
}

fn header_values(etag: &str, content_type: &str) -> [axum::http::HeaderValue; 2] {
    use axum::http::HeaderValue;
    [
        HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\"")),
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    ]
}

impl Rendered {
    /// Wraps freshly rendered bytes, computing the ETag.
    pub fn new(body: Vec<u8>, content_type: String, allowed_user_agents: Vec<String>) -> Self {
        let h = Sha256::digest(&body);
        let etag = format!(
            "\"{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}\"",
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]
        );
        Rendered {
            headers: header_values(&etag, &content_type),
            etag,
            content_type,
            allowed_user_agents,
            body: Bytes::from(body),
        }
    }

    fn encode(&self, revision: u64, digest: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.body.len() + 128);
        v.extend_from_slice(&revision.to_be_bytes());
        v.extend_from_slice(&digest.to_be_bytes());
        for s in std::iter::once(&self.etag).chain(std::iter::once(&self.content_type)) {
            push_str(&mut v, s);
        }
        v.push(self.allowed_user_agents.len().min(255) as u8);
        for s in self.allowed_user_agents.iter().take(255) {
            push_str(&mut v, s);
        }
        v.extend_from_slice(&self.body);
        v
    }

    fn decode(b: &[u8], revision: u64, digest: u64) -> Option<Self> {
        let rev = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
        let dig = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        if rev != revision || dig != digest {
            return None;
        }
        let mut pos = 16;
        let etag = take_str(b, &mut pos)?;
        let content_type = take_str(b, &mut pos)?;
        let n = *b.get(pos)? as usize;
        pos += 1;
        let mut allowed = Vec::with_capacity(n);
        for _ in 0..n {
            allowed.push(take_str(b, &mut pos)?);
        }
        Some(Rendered {
            headers: header_values(&etag, &content_type),
            etag,
            content_type,
            allowed_user_agents: allowed,
            body: Bytes::copy_from_slice(b.get(pos..)?),
        })
    }
}

fn push_str(v: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    v.extend_from_slice(&(b.len() as u16).to_be_bytes());
    v.extend_from_slice(b);
}

fn take_str(b: &[u8], pos: &mut usize) -> Option<String> {
    let n = u16::from_be_bytes(b.get(*pos..*pos + 2)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(b.get(*pos + 2..*pos + 2 + n)?)
        .ok()?
        .to_string();
    *pos += 2 + n;
    Some(s)
}

/// A rendered file in memory with the validity it was stored under.
#[derive(Debug)]
struct Hot {
    revision: u64,
    digest: u64,
    rendered: Arc<Rendered>,
}

/// The render cache: a bounded in-memory tier (most recently used files, by bytes) over
/// the store's render tree (every file rendered, on disk).
#[derive(Debug)]
pub struct Cache {
    inflight: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
    renders: std::sync::atomic::AtomicU64,
    hot: moka::sync::Cache<Vec<u8>, Arc<Hot>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(24 << 20)
    }
}

/// Whether a response came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache.
    Hit,
    /// Rendered now.
    Miss,
}

impl Cache {
    /// A cache whose memory tier holds at most about `hot_bytes` of files.
    pub fn new(hot_bytes: u64) -> Self {
        Cache {
            inflight: Mutex::default(),
            renders: std::sync::atomic::AtomicU64::default(),
            hot: moka::sync::Cache::builder()
                .max_capacity(hot_bytes)
                .weigher(|k: &Vec<u8>, v: &Arc<Hot>| {
                    let r = &v.rendered;
                    (k.len() + r.body.len() + r.etag.len() + r.content_type.len() + 160)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// How many renders this process has done (tests use it to prove unaffected phones
    /// are not re-rendered).
    pub fn render_count(&self) -> u64 {
        self.renders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The entry at `key` if it is valid for `revision` and `digest`, else renders it once
    /// (other requests for the same key wait and reuse the result) and stores it.
    pub async fn get_or_render(
        &self,
        store: &Store,
        key: &[u8],
        revision: u64,
        digest: u64,
        render: impl FnOnce() -> Result<Rendered, AppError>,
    ) -> Result<(Arc<Rendered>, Outcome), AppError> {
        if let Some(r) = self.lookup(store, key, revision, digest)? {
            return Ok((r, Outcome::Hit));
        }
        let gate = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_vec()).or_default().clone()
        };
        let result = {
            let _turn = gate.lock().await;
            match self.lookup(store, key, revision, digest)? {
                Some(r) => Ok((r, Outcome::Hit)),
                None => {
                    let r = render()?;
                    self.renders
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    store.render_put(key, r.encode(revision, digest))?;
                    let r = Arc::new(r);
                    self.remember(key, revision, digest, r.clone());
                    Ok((r, Outcome::Miss))
                }
            }
        };
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&gate) <= 2 {
            map.remove(key);
        }
        result
    }

    fn remember(&self, key: &[u8], revision: u64, digest: u64, rendered: Arc<Rendered>) {
        self.hot.insert(
            key.to_vec(),
            Arc::new(Hot {
                revision,
                digest,
                rendered,
            }),
        );
    }

    /// Memory first (valid only at `revision` and `digest`), then the store.
    fn lookup(
        &self,
        store: &Store,
        key: &[u8],
        revision: u64,
        digest: u64,
    ) -> Result<Option<Arc<Rendered>>, AppError> {
        if let Some(h) = self.hot.get(key)
            && h.revision == revision
            && h.digest == digest
        {
            return Ok(Some(h.rendered.clone()));
        }
        let found = store
            .render_get(key)?
            .and_then(|v| Rendered::decode(&v, revision, digest))
            .map(Arc::new);
        if let Some(r) = &found {
            self.remember(key, revision, digest, r.clone());
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_checks_validity() {
        let r = Rendered::new(
            b"a = 1\n".to_vec(),
            "text/plain".into(),
            vec!["Yealink".into()],
        );
        let e = r.encode(7, 9);
        assert_eq!(Rendered::decode(&e, 7, 9), Some(r.clone()));
        assert_eq!(Rendered::decode(&e, 8, 9), None);
        assert_eq!(Rendered::decode(&e, 7, 8), None);
        assert_eq!(Rendered::decode(&e[..10], 7, 9), None);
    }

    #[tokio::test]
    async fn concurrent_misses_render_once() {
        let store = Arc::new(Store::temporary().unwrap());
        let cache = Arc::new(Cache::default());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (store, cache) = (store.clone(), cache.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_render(&store, b"k", 1, 1, || {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(Rendered::new(b"x".to_vec(), "text/plain".into(), vec![]))
                    })
                    .await
                    .map(|(r, _)| r.body.clone())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), &b"x"[..]);
        }
        assert_eq!(cache.render_count(), 1);
    }
}
