//! Rendered-file reuse. An entry is valid only for the phone revision and the
//! template/model-set digest it was rendered at, so stale bytes are unreachable by
//! construction (no TTLs). Concurrent misses for one file render once.
//!
//! Files are kept compressed, in memory and in the store: LZ4 against a dictionary per
//! (model, file, digest), which is that file rendered from the model and server defaults
//! alone (no phone data, so no secrets). A phone's file differs from it in a few lines,
//! so it packs to a tenth of its size and a whole fleet's files fit in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// Why the cache could not serve or keep a file: the store failed, or a packed file did
/// not unpack (the HTTP layer answers 500 for both, in `error`).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be packed or unpacked.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A file just rendered, before it is packed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The strong ETag's 10 bytes (the first 10 of the SHA-256 of the body).
    pub etag: [u8; 10],
    /// Content-Type.
    pub content_type: String,
    /// User-Agent substrings the phone's accounts require.
    pub allowed_user_agents: Vec<String>,
    /// The bytes.
    pub body: Bytes,
}

impl Rendered {
    /// Wraps freshly rendered bytes, computing the ETag.
    pub fn new(body: Vec<u8>, content_type: String, allowed_user_agents: Vec<String>) -> Self {
        let h = Sha256::digest(&body);
        let mut etag = [0u8; 10];
        etag.copy_from_slice(&h[..10]);
        Rendered {
            etag,
            content_type,
            allowed_user_agents,
            body: Bytes::from(body),
        }
    }
}

/// A rendered file as kept and served: headers ready, body compressed against its
/// dictionary (or as is, when that does not pay).
#[derive(Debug)]
pub struct Packed {
    /// Phone revision it was rendered at (0 for common files).
    revision: u64,
    /// Template/model digest it was rendered at.
    digest: u64,
    /// The strong tag's 10 bytes (shown as 20 hex digits in quotes).
    etag: [u8; 10],
    /// Index of the Content-Type in the cache's table of them.
    content_type: u8,
    /// User-Agent substrings the phone's accounts require (`None`: any).
    allowed: Option<Arc<[String]>>,
    /// Length of the file.
    raw_len: u32,
    /// The dictionary `data` is compressed against; `None`: `data` is the file.
    dict: Option<Arc<Dict>>,
    data: Box<[u8]>,
}

/// Length of a quoted ETag: `"` + 20 hex digits + `"`.
const ETAG_LEN: usize = 22;

/// The 10 bytes of a quoted ETag as stored (`None` for anything else).
fn etag_bytes(quoted: &[u8]) -> Option<[u8; 10]> {
    let hex = quoted.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if hex.len() != 20 {
        return None;
    }
    let mut out = [0u8; 10];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The quoted ETag of 10 bytes.
fn etag_quoted(b: &[u8; 10]) -> [u8; ETAG_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; ETAG_LEN];
    for (i, v) in b.iter().enumerate() {
        out[1 + 2 * i] = HEX[(v >> 4) as usize];
        out[2 + 2 * i] = HEX[(v & 15) as usize];
    }
    out
}

/// An LZ4 dictionary: a file rendered without phone data.
#[derive(Debug)]
struct Dict {
    /// First four bytes of the SHA-256 of `bytes`: an entry names the dictionary it needs.
    id: u32,
    bytes: Box<[u8]>,
}

impl Dict {
    fn new(bytes: &[u8]) -> Self {
        let h = Sha256::digest(bytes);
        Dict {
            id: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            bytes: bytes.into(),
        }
    }
}

/// Largest file length an entry may claim (rendered files are a few KiB).
const MAX_FILE: u32 = 16 << 20;

/// Marks the stored entry format (an older layout starts with a revision's zero byte).
const FORMAT: u8 = 0xA2;

impl Packed {
    fn pack(
        r: &Rendered,
        revision: u64,
        digest: u64,
        dict: Option<Arc<Dict>>,
        content_type: u8,
    ) -> Self {
        let compressed = dict.as_ref().and_then(|d| {
            let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(r.body.len())];
            let n = lz4_flex::block::compress_into_with_dict(&r.body, &mut out, &d.bytes).ok()?;
            // Only worth it when it saves a quarter.
            (n < r.body.len() * 3 / 4).then(|| {
                out.truncate(n);
                out.into_boxed_slice()
            })
        });
        let (dict, data) = match compressed {
            Some(c) => (dict, c),
            None => (None, r.body.to_vec().into_boxed_slice()),
        };
        Packed {
            revision,
            digest,
            etag: r.etag,
            content_type,
            allowed: (!r.allowed_user_agents.is_empty())
                .then(|| r.allowed_user_agents.clone().into()),
            raw_len: u32::try_from(r.body.len()).unwrap_or(u32::MAX),
            dict,
            data,
        }
    }

    /// The file's bytes.
    pub fn body(&self) -> Result<Bytes, CacheError> {
        let Some(d) = &self.dict else {
            return Ok(Bytes::copy_from_slice(&self.data));
        };
        let len = self.raw_len as usize;
        match lz4_flex::block::decompress_with_dict(&self.data, len, &d.bytes) {
            Ok(out) if out.len() == len => Ok(Bytes::from(out)),
            _ => Err(CacheError::Io {
                what: "unpacking a cached file",
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "lz4"),
            }),
        }
    }

    /// Whether this file may be served for a phone at `revision` under templates at
    /// `digest` (the one validity rule of the memory tier and [`LastServed`]).
    fn valid_at(&self, revision: u64, digest: u64) -> bool {
        self.revision == revision && self.digest == digest
    }

    /// The quoted ETag.
    pub fn etag(&self) -> [u8; ETAG_LEN] {
        etag_quoted(&self.etag)
    }

    /// The `ETag` header value.
    pub fn etag_header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.etag()).unwrap_or(HeaderValue::from_static("\"\""))
    }

    /// User-Agent substrings the phone's accounts require (all of them must appear).
    pub fn allowed_user_agents(&self) -> &[String] {
        self.allowed.as_deref().unwrap_or_default()
    }

    /// Bytes this entry holds in memory (the tier's weigher): the struct and its `Arc`, the
    /// tier's entry and key, the packed body.
    fn weight(&self) -> u64 {
        let uas: usize = self
            .allowed_user_agents()
            .iter()
            .map(|s| s.len() + 24)
            .sum();
        (self.data.len() + uas + 144) as u64
    }

    fn encode(&self, content_type: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.data.len() + 96);
        v.push(FORMAT);
        v.extend_from_slice(&self.revision.to_be_bytes());
        v.extend_from_slice(&self.digest.to_be_bytes());
        v.extend_from_slice(&self.dict.as_ref().map_or(0, |d| d.id).to_be_bytes());
        v.push(u8::from(self.dict.is_some()));
        v.extend_from_slice(&self.raw_len.to_be_bytes());
        push_str(&mut v, &self.etag());
        push_str(&mut v, content_type);
        v.push(self.allowed_user_agents().len().min(255) as u8);
        for s in self.allowed_user_agents().iter().take(255) {
            push_str(&mut v, s.as_bytes());
        }
        v.extend_from_slice(&self.data);
        v
    }

    /// Decodes a stored entry valid at `revision` and `digest`; `dict` finds the dictionary
    /// it names. `None` for anything else (older layout, other revision, missing or other
    /// dictionary, damage): the caller renders again.
    fn decode(
        b: &[u8],
        revision: u64,
        digest: u64,
        dict: impl FnOnce() -> Option<Arc<Dict>>,
        content_type: impl FnOnce(&[u8]) -> Option<u8>,
    ) -> Option<Self> {
        if *b.first()? != FORMAT {
            return None;
        }
        let u64_at = |i: usize| Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?));
        let u32_at = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
        if u64_at(1)? != revision || u64_at(9)? != digest {
            return None;
        }
        let dict_id = u32_at(17)?;
        let dict = match *b.get(21)? {
            0 => None,
            1 => Some(dict().filter(|d| d.id == dict_id)?),
            _ => return None,
        };
        let raw_len = u32_at(22)?;
        if raw_len > MAX_FILE {
            // A damaged length must not become a huge allocation.
            return None;
        }
        let mut pos = 26;
        let etag = etag_bytes(take(b, &mut pos)?)?;
        let content_type = content_type(take(b, &mut pos)?)?;
        let n = *b.get(pos)? as usize;
        pos += 1;
        let mut allowed = Vec::with_capacity(n);
        for _ in 0..n {
            allowed.push(std::str::from_utf8(take(b, &mut pos)?).ok()?.to_string());
        }
        let p = Packed {
            revision,
            digest,
            etag,
            content_type,
            allowed: (!allowed.is_empty()).then(|| allowed.into()),
            raw_len,
            dict,
            data: b.get(pos..)?.into(),
        };
        // A damaged body is a miss, not an error served to a phone.
        p.body().ok().map(|_| p)
    }
}

fn push_str(v: &mut Vec<u8>, s: &[u8]) {
    let b = &s[..s.len().min(u16::MAX as usize)];
    v.extend_from_slice(&(b.len() as u16).to_be_bytes());
    v.extend_from_slice(b);
}

fn take<'b>(b: &'b [u8], pos: &mut usize) -> Option<&'b [u8]> {
    let n = u16::from_be_bytes(b.get(*pos..*pos + 2)?.try_into().ok()?) as usize;
    let s = b.get(*pos + 2..*pos + 2 + n)?;
    *pos += 2 + n;
    Some(s)
}

/// The per-phone file a phone was last served, kept with its gate: a repeat fetch of it
/// takes it from there instead of looking it up in the memory tier (one probe fewer into
/// a table of every phone's file; docs/PERFORMANCE.md has its cost). It holds a
/// [`Weak`]: the memory tier alone keeps files alive, so
/// its byte bound holds; a file the tier let go of is looked up again. Valid under the same
/// rule as the tier's entries (the gate's revision, the model's digest), for the one file
/// name it was served as (the gate fixes the MAC and model).
#[derive(Debug, Default)]
pub struct LastServed(Mutex<Option<(SlotName, Weak<Packed>)>>);

/// A file name in a [`LastServed`] slot: held in the slot itself up to 24 bytes (every
/// shipped pattern), so checking it follows no pointer.
type SlotName = smallvec::SmallVec<[u8; 24]>;

impl LastServed {
    /// Bytes a slot adds to its gate (a file the tier let go of keeps its ~100-byte header
    /// allocated until the slot is overwritten or dropped).
    pub const WEIGHT: usize = 56;

    /// The file last served as `file`, if the tier still holds it and it is valid at
    /// `revision` and `digest`.
    pub fn get(&self, file: &str, revision: u64, digest: u64) -> Option<Arc<Packed>> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (name, weak) = slot.as_ref()?;
        if name.as_slice() != file.as_bytes() {
            return None;
        }
        weak.upgrade().filter(|p| p.valid_at(revision, digest))
    }

    /// Remembers `p` as the file served as `file`.
    pub fn set(&self, file: &str, p: &Arc<Packed>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((SlotName::from_slice(file.as_bytes()), Arc::downgrade(p)));
    }
}

/// Which file a request is for and what it must be valid for.
#[derive(Debug, Clone, Copy)]
pub struct FileKey<'a> {
    /// The render key (`store::render_key`).
    pub key: &'a [u8],
    /// The model id.
    pub model: &'a str,
    /// The file pattern (per-phone files) or name (common files).
    pub file: &'a str,
    /// The phone revision (0 for common files).
    pub revision: u64,
    /// The model's template digest.
    pub digest: u64,
}

impl FileKey<'_> {
    /// The dictionary's key in the store: `d<digest><model>\0<file>`.
    fn dict_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(10 + self.model.len() + self.file.len());
        k.push(b'd');
        k.extend_from_slice(&self.digest.to_be_bytes());
        k.extend_from_slice(self.model.as_bytes());
        k.push(0);
        k.extend_from_slice(self.file.as_bytes());
        k
    }
}

/// A render key in the memory tier: up to 30 bytes (every per-phone key) held in the
/// table's own slot, so a lookup follows no pointer to compare it; longer ones on the heap.
/// It hashes and compares as its bytes, so a lookup passes the `&[u8]` key.
type HotKey = smallvec::SmallVec<[u8; 30]>;

#[derive(Debug, Clone, Copy)]
struct PackedWeight;

impl quick_cache::Weighter<HotKey, Arc<Packed>> for PackedWeight {
    fn weight(&self, k: &HotKey, v: &Arc<Packed>) -> u64 {
        k.len() as u64 + v.weight()
    }
}

/// Raises its flag when the memory tier lets go of a file it was given (evicted, or
/// refused as too heavy).
#[derive(Debug, Clone, Default)]
struct LetGo(Arc<AtomicBool>);

impl quick_cache::Lifecycle<HotKey, Arc<Packed>> for LetGo {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: HotKey, _: Arc<Packed>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

type Hot = quick_cache::sync::Cache<
    HotKey,
    Arc<Packed>,
    PackedWeight,
    quick_cache::DefaultHashBuilder,
    LetGo,
>;

/// The render cache: a bounded in-memory tier of packed files over the store's render
/// tree (every file rendered, packed the same way, on disk).
#[derive(Debug)]
pub struct Cache {
    inflight: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
    renders: std::sync::atomic::AtomicU64,
    hot: Hot,
    /// False while memory holds every file the store does: the render tree was empty
    /// when this process started ([`Cache::store_starts_empty`]), every file stored since
    /// went to memory too, and memory has let go of none. A miss in memory is then a miss,
    /// without asking the store (a cold storm's every request would). True from the start,
    /// and for good after the first eviction.
    store_may_hold_more: Arc<AtomicBool>,
    /// Dictionaries by their store key (a few per model).
    dicts: RwLock<HashMap<Vec<u8>, Arc<Dict>>>,
    /// Content-Type header values, one shared by every file of that type; entries name
    /// theirs by index (at most 256).
    content_types: RwLock<Vec<HeaderValue>>,
    /// Files rendered but not yet in the store (see [`Cache::write_behind`]); at most the
    /// memory tier's capacity in packed bytes, past which a render is written to the store
    /// by its request.
    behind: Mutex<Behind>,
}

/// Rendered files waiting to be written to the store's render tree: written when renders
/// pause, so that a reboot storm's phones do not wait for the disk cache to be filled.
/// Ordered by key, so that they reach sled's B-tree in order: written in a hash table's
/// order, 100,000 files took the process's RSS 40 MB higher than the same files written
/// as a storm in MAC order rendered them.
#[derive(Debug, Default)]
struct Behind {
    files: std::collections::BTreeMap<HotKey, Arc<Packed>>,
    /// Packed weight of `files`.
    bytes: u64,
    /// When `files` last went from empty to not (`None` while empty).
    since: Option<Instant>,
    /// When a file was last added.
    last: Option<Instant>,
}

/// The render writer waits for renders to pause this long before writing deferred files.
pub const WRITE_BEHIND_QUIET: Duration = Duration::from_millis(500);
/// ...or until the oldest deferred file has waited this long.
pub const WRITE_BEHIND_MAX_AGE: Duration = Duration::from_secs(30);
/// Files written at a time (the lock is not held while writing).
const WRITE_BEHIND_CHUNK: usize = 256;

/// Default bytes of the memory tier (about 320 bytes a packed phone file: 100,000 phones
/// in 32 MiB).
pub const DEFAULT_HOT_BYTES: u64 = 32 << 20;

impl Default for Cache {
    fn default() -> Self {
        Cache::new(DEFAULT_HOT_BYTES)
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
    /// A cache whose memory tier holds at most about `hot_bytes` of packed files.
    pub fn new(hot_bytes: u64) -> Self {
        let let_go = LetGo(Arc::new(AtomicBool::new(true)));
        Cache {
            behind: Mutex::default(),
            inflight: Mutex::default(),
            renders: std::sync::atomic::AtomicU64::default(),
            store_may_hold_more: let_go.0.clone(),
            hot: quick_cache::sync::Cache::with(
                (hot_bytes / 320).clamp(16, 4_000_000) as usize,
                hot_bytes,
                PackedWeight,
                quick_cache::DefaultHashBuilder::default(),
                let_go,
            ),
            dicts: RwLock::default(),
            content_types: RwLock::default(),
        }
    }

    /// The index of a content type in the table (added when new; `None` when the table is
    /// full or the value is not a valid header value).
    fn content_type_index(&self, v: &[u8]) -> Option<u8> {
        let find = |known: &[HeaderValue]| known.iter().position(|h| h.as_bytes() == v);
        if let Some(i) = find(&self.content_types.read().unwrap_or_else(|p| p.into_inner())) {
            return u8::try_from(i).ok();
        }
        let mut known = self
            .content_types
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(i) = find(&known) {
            return u8::try_from(i).ok();
        }
        let h = HeaderValue::from_bytes(v).ok()?;
        let i = u8::try_from(known.len()).ok()?;
        known.push(h);
        Some(i)
    }

    /// The Content-Type header value of an entry.
    pub fn content_type(&self, p: &Packed) -> HeaderValue {
        self.content_types
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(p.content_type as usize)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/octet-stream"))
    }

    /// Whether the store may hold a file memory does not (the field of that name); false
    /// tells startup's warm-up there is nothing to load.
    pub fn store_may_hold_more(&self) -> bool {
        self.store_may_hold_more.load(Ordering::Relaxed)
    }

    /// Tells the cache the store's render tree is empty and only this cache writes to it
    /// (startup, before serving): until memory first lets go of a file, a file memory
    /// does not hold is not looked for in the store.
    pub fn store_starts_empty(&self) {
        self.store_may_hold_more.store(false, Ordering::Relaxed);
    }

    /// The memory tier: ("files", bytes weighed, entries).
    pub fn memory(&self) -> (&'static str, u64, u64) {
        ("files", self.hot.weight(), self.hot.len() as u64)
    }

    /// How many renders this process has done (tests use it to prove unaffected phones
    /// are not re-rendered).
    pub fn render_count(&self) -> u64 {
        self.renders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The entry for `file` if it is valid for its revision and digest, else renders it
    /// once (other requests for the same key wait and reuse the result) and stores it.
    /// `render` returns the file and the revision of the records it was rendered from;
    /// `dictionary` renders the file without phone data, when its dictionary is not known
    /// yet.
    pub async fn get_or_render<E: From<CacheError>>(
        &self,
        store: &Store,
        file: FileKey<'_>,
        render: impl FnOnce() -> Result<(Rendered, u64), E>,
        dictionary: impl FnOnce() -> Option<Rendered>,
    ) -> Result<(Arc<Packed>, Outcome), E> {
        if let Some(r) = self.lookup(store, &file)? {
            return Ok((r, Outcome::Hit));
        }
        let key = file.key;
        let gate = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_vec()).or_default().clone()
        };
        let result = {
            let _turn = gate.lock().await;
            // Whoever held the turn before us put its file in memory before letting go;
            // the store was read a moment ago, so memory alone is asked again.
            match self.hot_valid(&file) {
                Some(r) => Ok((r, Outcome::Hit)),
                None => {
                    let (r, revision) = render()?;
                    self.renders
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let dict = self.dict(store, &file, Some(dictionary))?;
                    let ct = self
                        .content_type_index(r.content_type.as_bytes())
                        .ok_or_else(|| CacheError::Io {
                            what: "caching a file",
                            source: std::io::Error::other("more than 256 content types"),
                        })?;
                    let p = Arc::new(Packed::pack(&r, revision, file.digest, dict, ct));
                    self.hot.insert(HotKey::from_slice(key), p.clone());
                    if !self.defer(key, &p) {
                        store
                            .render_put(key, p.encode(r.content_type.as_bytes()))
                            .map_err(CacheError::from)?;
                    }
                    Ok((p, Outcome::Miss))
                }
            }
        };
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&gate) <= 2 {
            map.remove(key);
        }
        result
    }

    /// Queues a file just rendered for the store (the render writer writes it when renders
    /// pause); false when the queue is full, for the caller to write it now.
    fn defer(&self, key: &[u8], p: &Arc<Packed>) -> bool {
        let mut b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        let w = p.weight();
        let replaced = b.files.get(key).map(|old| old.weight());
        if replaced.is_none() && b.bytes + w > self.hot.capacity() {
            return false;
        }
        let now = Instant::now();
        b.since.get_or_insert(now);
        b.last = Some(now);
        b.bytes = b.bytes - replaced.unwrap_or(0) + w;
        b.files.insert(HotKey::from_slice(key), p.clone());
        true
    }

    /// A file waiting to be written to the store.
    fn deferred(&self, key: &[u8]) -> Option<Arc<Packed>> {
        let b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        b.files.get(key).cloned()
    }

    /// Files rendered and not yet written to the store, and their packed bytes.
    pub fn behind(&self) -> (u64, u64) {
        let b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        (b.files.len() as u64, b.bytes)
    }

    /// Writes the files renders left for the store, a chunk at a time, when renders have
    /// paused for [`WRITE_BEHIND_QUIET`], when the oldest has waited
    /// [`WRITE_BEHIND_MAX_AGE`], or always with `now` (shutdown). Stops when renders
    /// resume (unless `now`). Returns how many files it wrote.
    ///
    /// The render tree is a cache of what the records say: a file that waits here is
    /// served from memory meanwhile (or from here, after memory let go of it), and one
    /// lost with the process is rendered again. A file is taken off the queue only after
    /// it is written, and only if no newer render of it replaced it meanwhile, so the
    /// store never ends up with an older render than the queue had.
    pub fn write_behind(&self, store: &Store, now: bool, max: usize) -> Result<usize, CacheError> {
        let mut written = 0;
        while written < max {
            let chunk: Vec<(HotKey, Arc<Packed>)> = {
                let b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
                if b.files.is_empty() {
                    return Ok(written);
                }
                let waited = |t: Option<Instant>, d| t.is_none_or(|t| t.elapsed() >= d);
                if !(now
                    || waited(b.last, WRITE_BEHIND_QUIET)
                    || waited(b.since, WRITE_BEHIND_MAX_AGE))
                {
                    return Ok(written);
                }
                b.files
                    .iter()
                    .take(WRITE_BEHIND_CHUNK.min(max - written))
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect()
            };
            for (k, p) in &chunk {
                let ct = self.content_type(p);
                store.render_put(k, p.encode(ct.as_bytes()))?;
            }
            let mut b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
            for (k, p) in &chunk {
                if b.files.get(k).is_some_and(|q| Arc::ptr_eq(q, p)) {
                    b.files.remove(k);
                    b.bytes -= p.weight();
                }
            }
            if b.files.is_empty() {
                // The next file starts the oldest-file clock afresh.
                b.since = None;
            }
            written += chunk.len();
        }
        Ok(written)
    }

    /// The dictionary of `file`'s model, file and digest: memory, then the store, then (with
    /// `make`) rendered now and stored unless another process stored one first.
    fn dict(
        &self,
        store: &Store,
        file: &FileKey<'_>,
        make: Option<impl FnOnce() -> Option<Rendered>>,
    ) -> Result<Option<Arc<Dict>>, CacheError> {
        let k = file.dict_key();
        if let Some(d) = self.dicts.read().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return Ok(Some(d.clone()));
        }
        let stored = match store.render_get(&k)? {
            Some(v) => Some(v.to_vec()),
            None => match make.and_then(|m| m()) {
                Some(r) => Some(store.render_put_absent(&k, r.body.to_vec())?),
                None => None,
            },
        };
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let d = Arc::new(Dict::new(&bytes));
        self.dicts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, d.clone());
        Ok(Some(d))
    }

    /// Loads `file` from the store into the memory tier if it is there and valid (startup
    /// warm-up): whether it was; `None` when the tier is nine-tenths full, to stop.
    pub fn warm(&self, store: &Store, file: &FileKey<'_>) -> Result<Option<bool>, CacheError> {
        if self.hot.weight() >= self.hot.capacity() / 10 * 9 {
            return Ok(None);
        }
        Ok(Some(self.lookup(store, file)?.is_some()))
    }

    /// The memory tier's entry for `file` if it is valid at its revision and digest.
    fn hot_valid(&self, file: &FileKey<'_>) -> Option<Arc<Packed>> {
        self.hot
            .get(file.key)
            .filter(|h| h.valid_at(file.revision, file.digest))
    }

    /// Memory first (valid only at the revision and digest), then the store.
    fn lookup(&self, store: &Store, file: &FileKey<'_>) -> Result<Option<Arc<Packed>>, CacheError> {
        if let Some(h) = self.hot_valid(file) {
            return Ok(Some(h));
        }
        if !self.store_may_hold_more() {
            return Ok(None);
        }
        if let Some(p) = self.deferred(file.key) {
            if p.valid_at(file.revision, file.digest) {
                self.hot.insert(HotKey::from_slice(file.key), p.clone());
                return Ok(Some(p));
            }
        }
        let Some(v) = store.render_get(file.key)? else {
            return Ok(None);
        };
        let no_make: Option<fn() -> Option<Rendered>> = None;
        let mut dict_err = None;
        let found = Packed::decode(
            &v,
            file.revision,
            file.digest,
            || {
                self.dict(store, file, no_make)
                    .map_err(|e| dict_err = Some(e))
                    .ok()
                    .flatten()
            },
            |ct| self.content_type_index(ct),
        )
        .map(Arc::new);
        if let Some(e) = dict_err {
            return Err(e);
        }
        if let Some(p) = &found {
            self.hot.insert(HotKey::from_slice(file.key), p.clone());
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &[u8], revision: u64) -> FileKey<'_> {
        FileKey {
            key,
            model: "m",
            file: "{mac}.cfg",
            revision,
            digest: 9,
        }
    }

    fn rendered(body: &str) -> Rendered {
        Rendered::new(
            body.as_bytes().to_vec(),
            "text/plain".into(),
            vec!["Yealink".into()],
        )
    }

    fn ct(v: &[u8]) -> Option<u8> {
        (v == b"text/plain").then_some(0)
    }

    const BASE: &str = "#!version:1.0.0.1\naccount.1.enable = 0\naccount.1.label = \naccount.1.user_name = \nlocal_time.time_zone = +1\nsip.trust_ctrl = 1\nphone_setting.backlight_time = 60\n";

    /// The damaged-length guard is exact: a stored file of the largest size decodes, a
    /// length one byte over it is refused (nothing is allocated for it).
    #[test]
    fn the_largest_file_decodes_and_one_byte_more_does_not() {
        let body = "x".repeat(MAX_FILE as usize);
        let e = Packed::pack(&rendered(&body), 1, 2, None, 0).encode(b"text/plain");
        let back = Packed::decode(&e, 1, 2, || None, ct).expect("exactly MAX_FILE bytes");
        assert_eq!(back.body().unwrap().len(), body.len());
        let mut over = e.clone();
        over[22..26].copy_from_slice(&(MAX_FILE + 1).to_be_bytes());
        assert!(Packed::decode(&over, 1, 2, || None, ct).is_none());
    }

    #[test]
    fn entry_round_trips_and_checks_validity() {
        let body = BASE
            .replace("enable = 0", "enable = 1")
            .replace("label = ", "label = 201");
        let r = rendered(&body);
        let d = Arc::new(Dict::new(BASE.as_bytes()));
        let p = Packed::pack(&r, 7, 9, Some(d.clone()), 0);
        assert!(
            p.dict.is_some(),
            "a file close to its dictionary is compressed"
        );
        assert!(
            p.data.len() * 4 < body.len(),
            "{} of {}",
            p.data.len(),
            body.len()
        );
        assert_eq!(p.body().unwrap(), body.as_bytes());
        let e = p.encode(b"text/plain");
        let back = Packed::decode(&e, 7, 9, || Some(d.clone()), ct).unwrap();
        assert_eq!(back.body().unwrap(), body.as_bytes());
        assert_eq!(back.etag, r.etag);
        assert_eq!(
            back.etag_header(),
            HeaderValue::from_bytes(&etag_quoted(&r.etag)).unwrap()
        );
        assert_eq!(back.content_type, 0);
        assert_eq!(back.allowed_user_agents(), &["Yealink".to_string()]);
        assert!(Packed::decode(&e, 8, 9, || Some(d.clone()), ct).is_none());
        assert!(Packed::decode(&e, 7, 8, || Some(d.clone()), ct).is_none());
        assert!(Packed::decode(&e[..10], 7, 9, || Some(d.clone()), ct).is_none());
        // The dictionary it was packed against, or nothing.
        assert!(Packed::decode(&e, 7, 9, || None, ct).is_none());
        let other = Arc::new(Dict::new(b"something else"));
        assert!(Packed::decode(&e, 7, 9, || Some(other), ct).is_none());
        // A damaged body is a miss.
        let mut bad = e.clone();
        let n = bad.len();
        bad.truncate(n - 3);
        assert!(Packed::decode(&bad, 7, 9, || Some(d.clone()), ct).is_none());
        // A damaged length is refused before anything is allocated for it.
        let mut huge = e.clone();
        huge[22..26].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Packed::decode(&huge, 7, 9, || Some(d.clone()), ct).is_none());
        // The layout before packing (revision first) is not read as this one.
        let mut old = 7u64.to_be_bytes().to_vec();
        old.extend_from_slice(&e[9..]);
        assert!(Packed::decode(&old, 7, 9, || Some(d.clone()), ct).is_none());
    }

    #[test]
    fn last_served_answers_only_for_its_name_revision_digest_and_while_held() {
        let slot = LastServed::default();
        assert!(slot.get("{mac}.cfg", 7, 9).is_none(), "empty");
        let p = Arc::new(Packed::pack(&rendered(BASE), 7, 9, None, 0));
        slot.set("{mac}.cfg", &p);
        let got = slot.get("{mac}.cfg", 7, 9).unwrap();
        assert!(Arc::ptr_eq(&got, &p));
        drop(got);
        assert!(slot.get("{mac}-local.cfg", 7, 9).is_none(), "another name");
        assert!(slot.get("{mac}.cfg", 8, 9).is_none(), "another revision");
        assert!(slot.get("{mac}.cfg", 7, 10).is_none(), "another digest");
        // Another name takes the slot; the first is then looked up elsewhere.
        let q = Arc::new(Packed::pack(&rendered("x"), 7, 9, None, 0));
        let long = "a-file-name-longer-than-24-bytes-{mac}.cfg";
        slot.set(long, &q);
        assert!(slot.get("{mac}.cfg", 7, 9).is_none());
        assert!(Arc::ptr_eq(&slot.get(long, 7, 9).unwrap(), &q));
        // The same name again: the newer file.
        slot.set(long, &p);
        assert!(Arc::ptr_eq(&slot.get(long, 7, 9).unwrap(), &p));
        // The slot does not keep a file alive: once the tier (here `p`) lets go, it misses.
        drop(p);
        assert!(slot.get(long, 7, 9).is_none());
        // What the gate's weight counts for it.
        assert!(std::mem::size_of::<LastServed>() <= LastServed::WEIGHT);
    }

    #[test]
    fn etags_pack_to_ten_bytes_and_back() {
        let r = rendered("x");
        let quoted = etag_quoted(&r.etag);
        assert_eq!(quoted[0], b'"');
        assert!(quoted[1..21].iter().all(u8::is_ascii_hexdigit));
        assert_eq!(etag_bytes(&quoted), Some(r.etag));
        assert_eq!(etag_bytes(b"\"abc\""), None);
        assert_eq!(etag_bytes(b"\"zz345678901234567890\""), None);
    }

    #[test]
    fn a_file_unlike_its_dictionary_is_kept_as_is() {
        let r = rendered("short and unrelated");
        let p = Packed::pack(&r, 1, 9, Some(Arc::new(Dict::new(BASE.as_bytes()))), 0);
        assert!(p.dict.is_none());
        assert_eq!(p.body().unwrap(), "short and unrelated".as_bytes());
        let back = Packed::decode(&p.encode(b"text/plain"), 1, 9, || None, ct).unwrap();
        assert_eq!(back.body().unwrap(), "short and unrelated".as_bytes());
    }

    #[tokio::test]
    async fn a_restarted_process_reads_what_the_last_one_packed() {
        let store = Store::temporary().unwrap();
        let body = BASE.replace("label = ", "label = 301");
        {
            // The first process.
            let cache = Cache::default();
            let (p, o) = cache
                .get_or_render(
                    &store,
                    file(b"k", 3),
                    || Ok::<_, CacheError>((rendered(&body), 3)),
                    || Some(rendered(BASE)),
                )
                .await
                .unwrap();
            assert_eq!((o, p.body().unwrap()), (Outcome::Miss, body.clone().into()));
            assert!(p.dict.is_some());
            // Its shutdown writes what renders left for the store.
            assert_eq!(cache.write_behind(&store, true, usize::MAX).unwrap(), 1);
        }
        // The next one: nothing in memory, entry and dictionary in the store.
        let cache = Cache::default();
        let (p, o) = cache
            .get_or_render(
                &store,
                file(b"k", 3),
                || -> Result<(Rendered, u64), CacheError> { panic!("must not render again") },
                || panic!("the dictionary is in the store"),
            )
            .await
            .unwrap();
        assert_eq!((o, p.body().unwrap()), (Outcome::Hit, body.into()));
        // Another revision renders again.
        let (_, o) = cache
            .get_or_render(
                &store,
                file(b"k", 4),
                || Ok::<_, CacheError>((rendered("new"), 4)),
                || None,
            )
            .await
            .unwrap();
        assert_eq!(o, Outcome::Miss);
    }

    proptest::proptest! {
        /// Damaged packed bytes unpack to an error or to something, never a panic; undamaged
        /// ones (no flip, a "cut" at the full length) to the file.
        #[test]
        fn damaged_packed_bytes_never_panic(
            flips in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), 1u8..=255),
                0..8,
            ),
            cut in proptest::option::of(proptest::prelude::any::<usize>()),
        ) {
            let body = BASE.replace("label = ", "label = 401");
            let d = Arc::new(Dict::new(BASE.as_bytes()));
            let mut p = Packed::pack(&rendered(&body), 7, 9, Some(d), 0);
            proptest::prop_assert!(p.dict.is_some());
            let mut data = p.data.to_vec();
            for (i, x) in &flips {
                let k = i % data.len();
                data[k] ^= x;
            }
            if let Some(c) = cut {
                data.truncate(c % (data.len() + 1));
            }
            let intact = *data == *p.data;
            p.data = data.into_boxed_slice();
            let got = p.body();
            if intact {
                proptest::prop_assert_eq!(got.ok(), Some(Bytes::from(body)));
            }
        }
    }

    /// `key` at revision 1 through `cache`, rendering `body` on a miss.
    async fn render_through(
        cache: &Cache,
        store: &Store,
        key: &[u8],
        body: &str,
    ) -> (Arc<Packed>, Outcome) {
        cache
            .get_or_render(
                store,
                file(key, 1),
                || Ok::<_, CacheError>((rendered(body), 1)),
                || None,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn memory_answers_alone_until_it_lets_go_of_a_file() {
        let store = Store::temporary().unwrap();
        // Another writer (what startup rules out) leaves a file in the store...
        let other = Cache::default();
        render_through(&other, &store, b"other", "old").await;
        other.write_behind(&store, true, usize::MAX).unwrap();
        // ...that a cache told the store started empty does not look for.
        let cache = Cache::new(4096);
        cache.store_starts_empty();
        let (p, o) = render_through(&cache, &store, b"other", "new").await;
        assert_eq!((o, p.body().unwrap()), (Outcome::Miss, "new".into()));
        // Files it rendered itself are served from memory.
        let (_, o) = cache
            .get_or_render(
                &store,
                file(b"other", 1),
                || -> Result<(Rendered, u64), CacheError> { panic!("in memory") },
                || None,
            )
            .await
            .unwrap();
        assert_eq!(o, Outcome::Hit);
        // Past its capacity it evicts, and from then on the store is asked again: the
        // first files are gone from memory but found on disk, not rendered again.
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
        for k in &keys {
            let body = format!("{BASE}# {}", String::from_utf8_lossy(k));
            render_through(&cache, &store, k, &body).await;
        }
        assert!(cache.store_may_hold_more());
        let evicted = keys
            .iter()
            .find(|k| cache.hot.get(k.as_slice()).is_none())
            .expect("a 4 KiB tier cannot hold 200 files");
        let (p, o) = cache
            .get_or_render(
                &store,
                file(evicted, 1),
                || -> Result<(Rendered, u64), CacheError> { panic!("on disk") },
                || None,
            )
            .await
            .unwrap();
        assert_eq!(o, Outcome::Hit);
        assert!(p.body().unwrap().ends_with(evicted));
    }

    /// The body of what the store holds at `key`, if it is valid at `revision`.
    fn stored(store: &Store, key: &[u8], revision: u64) -> Option<Bytes> {
        let v = store.render_get(key).unwrap()?;
        Packed::decode(&v, revision, 9, || None, ct)?.body().ok()
    }

    #[tokio::test]
    async fn renders_reach_the_store_once_renders_pause_the_newest_kept() {
        let store = Store::temporary().unwrap();
        let cache = Cache::default();
        render_through(&cache, &store, b"a", "one").await;
        // Queued, not written: renders are recent.
        assert_eq!(cache.behind().0, 1);
        assert!(store.render_get(b"a").unwrap().is_none());
        assert_eq!(cache.write_behind(&store, false, usize::MAX).unwrap(), 0);
        // A newer render of the same file takes its place in the queue.
        let (_, o) = cache
            .get_or_render(
                &store,
                file(b"a", 2),
                || Ok::<_, CacheError>((rendered("two"), 2)),
                || None,
            )
            .await
            .unwrap();
        assert_eq!(o, Outcome::Miss);
        assert_eq!(cache.behind().0, 1);
        std::thread::sleep(WRITE_BEHIND_QUIET);
        // Allowed exactly the one file: the queue empties as the call ends, and the next
        // render starts the oldest-file clock afresh (else a stale clock would have the
        // writer write in the middle of the next storm).
        assert_eq!(cache.write_behind(&store, false, 1).unwrap(), 1);
        assert_eq!(cache.behind(), (0, 0));
        assert!(cache.behind.lock().unwrap().since.is_none());
        assert_eq!(stored(&store, b"a", 2), Some(Bytes::from("two")));
        assert_eq!(stored(&store, b"a", 1), None);
    }

    #[tokio::test]
    async fn a_full_queue_writes_through_and_nothing_is_lost() {
        let store = Store::temporary().unwrap();
        // Memory and the queue hold 4 KiB each: most of 200 files go straight to the store.
        let cache = Cache::new(4096);
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
        for k in &keys {
            render_through(&cache, &store, k, &String::from_utf8_lossy(k)).await;
            assert!(cache.behind().1 <= 4096);
        }
        let (queued, _) = cache.behind();
        assert!(queued > 0 && queued < 200, "{queued} queued");
        let in_store = keys
            .iter()
            .filter(|k| stored(&store, k, 1).is_some())
            .count();
        assert_eq!(in_store as u64, 200 - queued);
        // A queued file memory let go of is served from the queue, not rendered again.
        let evicted = keys
            .iter()
            .find(|k| cache.hot.get(k.as_slice()).is_none() && cache.deferred(k).is_some())
            .expect("a queued file memory let go of");
        let (p, o) = cache
            .get_or_render(
                &store,
                file(evicted, 1),
                || -> Result<(Rendered, u64), CacheError> { panic!("queued") },
                || None,
            )
            .await
            .unwrap();
        assert_eq!(
            (o, p.body().unwrap()),
            (Outcome::Hit, Bytes::from(evicted.clone()))
        );
        // Shutdown writes the rest.
        assert_eq!(
            cache.write_behind(&store, true, usize::MAX).unwrap() as u64,
            queued
        );
        for k in &keys {
            assert_eq!(stored(&store, k, 1), Some(Bytes::from(k.clone())));
        }
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
                    .get_or_render(
                        &store,
                        file(b"k", 1),
                        || {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok::<_, CacheError>((rendered("x"), 1))
                        },
                        || None,
                    )
                    .await
                    .map(|(r, _)| r.body().unwrap())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), &b"x"[..]);
        }
        assert_eq!(cache.render_count(), 1);
    }
}
