//! Everything sled: tree names, key encoding, versioned record (de)serialisation, and the
//! one multi-tree transaction every admin write goes through, which also gives each
//! affected phone a new revision. sled types never leave this module.

mod export;
mod keys;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::model::records::{PreviousCredentials, rotate};
use crate::model::{Account, Domain, Gate, Mac, Phone, Token};

pub use export::{Dump, FORMAT, FORMAT_VERSION, ImportError, parse as parse_export};
pub use keys::render_key;

/// Meta key of the phone count (see [`Store::phone_count`]).
const PHONE_COUNT: &str = "phone_count";

/// Current on-disk schema version.
pub const SCHEMA_VERSION: u8 = 1;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("storage engine")]
    Sled(#[from] sled::Error),
    /// The store could not be opened.
    #[error(
        "cannot open the store at {path}. If it is corrupt: move it aside (`mv {path} {path}.broken`), then restore your last export with `autoprov import --data {data} EXPORT.json` (or put back a copy of the data folder)",
        data = data_dir(path)
    )]
    Open {
        /// The data folder.
        path: String,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// Another process (a running autoprov) holds the store's lock.
    #[error("the store at {path} is locked: is autoprov running on this data dir? stop it first")]
    Locked {
        /// The store folder.
        path: String,
    },
    /// The store opened without the records its data folder says it had: sled discards a
    /// log it cannot read and starts empty.
    #[error(
        "the store at {path} opened empty, but {data}/admin-token exists: the store was lost or is corrupt. Move it aside (`mv {path} {path}.broken`), then restore your last export with `autoprov import --data {data} EXPORT.json`; to start from scratch on purpose, delete {data}/admin-token too",
        data = data_dir(path)
    )]
    Emptied {
        /// The store folder.
        path: String,
    },
    /// A record did not decode.
    #[error("corrupt {tree} record")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The fetch journal could not be read or written.
    #[error("fetch journal {path}")]
    Journal {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The flush task did not finish.
    #[error("flush task: {0}")]
    Flush(String),
    /// The store was written by a newer autoprov.
    #[error("store schema {found} is newer than this autoprov understands ({SCHEMA_VERSION})")]
    Schema {
        /// The version found.
        found: u8,
    },
}

/// The data folder of a store folder (`<data>/store`), for messages.
fn data_dir(store: &str) -> String {
    Path::new(store)
        .parent()
        .map_or_else(|| ".".into(), |p| p.display().to_string())
}

/// The sled-backed store.
#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    domains: sled::Tree,
    accounts: sled::Tree,
    phones: sled::Tree,
    by_domain: sled::Tree,
    by_account: sled::Tree,
    renders: sled::Tree,
    meta: sled::Tree,
    fetches: sled::Tree,
    unprovisioned: sled::Tree,
    /// Domain-scoped admin tokens keyed by the 32-byte SHA-256 of the secret (one lookup
    /// per admin request).
    tokens: sled::Tree,
    writer: Mutex<()>,
    /// What the fetch path needs of each phone (bounded by bytes); see [`Store::gate`].
    gates: quick_cache::sync::Cache<Mac, Arc<Gate>, GateWeight>,
    /// Decoded domains for the fetch path.
    hot_domains: quick_cache::sync::Cache<String, Arc<Domain>>,
    /// Orders memo fills against commits' invalidations (see [`Store::gate`]).
    memo_lock: Mutex<()>,
    /// Model and domain names shared by the gates.
    names: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Where gates leaving the memo hand back their phones' latest request times (the
    /// fleet's audit applies them).
    folds: Arc<crate::activity::Folds>,
    /// Commits so far (the memo's race guard, and what a flush covers).
    commits: AtomicU64,
    /// Commits known to be on disk.
    flushed: AtomicU64,
    /// One flush at a time: sled 0.34 deadlocks when many `flush_async` calls exhaust its
    /// I/O threads, and one flush covers every commit before it anyway (group commit).
    flush_gate: tokio::sync::Mutex<()>,
    /// Seconds a replaced provisioning credential keeps working (rotation grace).
    credential_grace: AtomicU64,
}

/// A set of record changes committed together.
#[derive(Debug, Default)]
pub struct Change {
    /// Domains to write (`None` deletes).
    pub domains: Vec<(String, Option<Domain>)>,
    /// Accounts to write by id (`None` deletes).
    pub accounts: Vec<(String, Option<Account>)>,
    /// Phones to write (`None` deletes); each written phone gets the new revision.
    pub phones: Vec<(Mac, Option<Phone>)>,
    /// Other phones whose rendered files this change affects.
    pub touch: BTreeSet<Mac>,
    /// Meta entries to write.
    pub meta: Vec<(String, Vec<u8>)>,
    /// Admin tokens to write by secret hash (`None` revokes).
    pub tokens: Vec<([u8; 32], Option<Token>)>,
}

impl Change {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
            && self.accounts.is_empty()
            && self.phones.is_empty()
            && self.touch.is_empty()
            && self.meta.is_empty()
            && self.tokens.is_empty()
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![SCHEMA_VERSION];
    // Serialising these plain records cannot fail (string keys, no custom errors).
    serde_json::to_writer(&mut out, v).unwrap_or_default();
    out
}

fn dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let body = bytes.get(1..).unwrap_or_default();
    serde_json::from_slice(body).map_err(|source| StoreError::Corrupt { tree, source })
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_get<T: DeserializeOwned>(
    t: &TransactionalTree,
    tree: &'static str,
    k: &[u8],
) -> TxResult<Option<T>> {
    match t.get(k)? {
        Some(v) => dec(tree, &v)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// The records of a tree keyed by lowercase MAC text (keys that are not a MAC are skipped).
fn by_mac_text(tree: &sled::Tree) -> Result<Vec<(Mac, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        if let Some(mac) = std::str::from_utf8(&k)
            .ok()
            .and_then(|k| Mac::parse_plain(k).ok())
        {
            out.push((mac, v.to_vec()));
        }
    }
    Ok(out)
}

/// A phone's gate, with the whole record when it was just read from the store.
pub type GateRead = (Arc<Gate>, Option<Phone>);

/// The gate memo's weigher: approximate heap bytes per phone.
#[derive(Debug, Clone, Copy)]
struct GateWeight;

impl quick_cache::Weighter<Mac, Arc<Gate>> for GateWeight {
    fn weight(&self, _: &Mac, g: &Arc<Gate>) -> u64 {
        g.weight()
    }
}

/// Default bytes of the gate memo (about 250 bytes a phone: 100,000 phones in 32 MiB).
pub const DEFAULT_GATE_BYTES: u64 = 32 << 20;

impl Store {
    /// Opens (or creates) the store in `path`, bounding sled's page cache to `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(path, cache_bytes, DEFAULT_GATE_BYTES)
    }

    /// Opens the store with `gate_bytes` for the per-phone gate memo.
    pub fn open_with(path: &Path, cache_bytes: u64, gate_bytes: u64) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
        // sled 0.34 can panic on some damaged files instead of returning an error.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .unwrap_or_else(|_| {
                Err(sled::Error::Unsupported(
                    "sled panicked while reading the store".into(),
                ))
            });
        let db = match opened {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Locked { path: shown });
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: shown,
                    source,
                });
            }
        };
        Self::from_db(db, gate_bytes)
    }

    /// A throw-away store (tests, benches).
    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(
            sled::Config::new().temporary(true).open()?,
            DEFAULT_GATE_BYTES,
        )
    }

    fn from_db(db: sled::Db, gate_bytes: u64) -> Result<Self, StoreError> {
        let s = Store {
            domains: db.open_tree("domains")?,
            accounts: db.open_tree("accounts")?,
            phones: db.open_tree("phones")?,
            by_domain: db.open_tree("phones_by_domain")?,
            by_account: db.open_tree("phones_by_account")?,
            renders: db.open_tree("renders")?,
            meta: db.open_tree("meta")?,
            fetches: db.open_tree("fetches")?,
            unprovisioned: db.open_tree("unprovisioned")?,
            tokens: db.open_tree("tokens")?,
            writer: Mutex::new(()),
            gates: quick_cache::sync::Cache::with_weighter(
                (gate_bytes / 250).clamp(16, 4_000_000) as usize,
                gate_bytes,
                GateWeight,
            ),
            hot_domains: quick_cache::sync::Cache::new(10_000),
            memo_lock: Mutex::new(()),
            names: Mutex::default(),
            folds: Arc::default(),
            commits: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_gate: tokio::sync::Mutex::new(()),
            credential_grace: AtomicU64::new(crate::guard::DEFAULT_CREDENTIAL_GRACE),
            db,
        };
        if s.meta.get(PHONE_COUNT)?.is_none() {
            s.recount_phones()?;
        }
        match s.meta.get("schema")? {
            Some(v) if v.first().copied().unwrap_or(0) > SCHEMA_VERSION => {
                return Err(StoreError::Schema { found: v[0] });
            }
            Some(_) => {}
            None => {
                s.meta.insert("schema", &[SCHEMA_VERSION])?;
            }
        }
        Ok(s)
    }

    /// Whether any stored domain satisfies `pred` (a scan; startup only).
    pub fn any_domain(&self, pred: impl Fn(&Domain) -> bool) -> Result<bool, StoreError> {
        for kv in self.domains.iter() {
            let (_, v) = kv?;
            if pred(&dec::<Domain>("domains", &v)?) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How long a replaced provisioning credential keeps working: every commit that changes
    /// a phone's or domain's credential keeps the old one for this long.
    pub fn set_credential_grace(&self, secs: u64) {
        self.credential_grace.store(secs, Ordering::Relaxed);
    }

    /// Takes the writer lock: every admin write reads, validates and commits under it, so
    /// what it validated against is what it commits on top of.
    pub fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes buffered writes to disk (survives a process crash; see DEPS.md on fsync).
    /// Concurrent callers share one flush: whoever waits for the gate finds its commit
    /// already covered, or flushes for everyone queued behind it.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mine = self.commits.load(Ordering::SeqCst);
        let _gate = self.flush_gate.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= mine && mine > 0 {
            return Ok(());
        }
        let upto = self.commits.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Flush(e.to_string()))??;
        self.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Synchronous flush (shutdown).
    pub fn flush_sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Writes unprovisioned-MAC records outside the record transaction: they never change
    /// a revision, so they never invalidate a cached file. `None` removes.
    pub fn audit_write(
        &self,
        unprovisioned: Vec<(Mac, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (mac, v) in unprovisioned {
            match v {
                Some(v) => b.insert(&mac.lower().into_bytes()[..], v),
                None => b.remove(&mac.lower().into_bytes()[..]),
            }
        }
        self.unprovisioned.apply_batch(b)?;
        Ok(())
    }

    /// Last fetches as autoprov kept them in the store before the fetch journal (JSON by
    /// MAC); read once, to move them into the journal.
    pub fn legacy_fetches(&self) -> Result<Vec<(Mac, Vec<u8>)>, StoreError> {
        by_mac_text(&self.fetches)
    }

    /// Empties the old last-fetch tree (its records are in the journal now).
    pub fn clear_legacy_fetches(&self) -> Result<(), StoreError> {
        self.fetches.clear()?;
        Ok(())
    }

    /// Writes a last-fetch record the way autoprov did before the journal (tests of the
    /// move).
    #[cfg(test)]
    pub fn put_legacy_fetch(&self, mac: Mac, json: Vec<u8>) -> Result<(), StoreError> {
        self.fetches.insert(mac.lower().into_bytes(), json)?;
        Ok(())
    }

    /// Every stored unprovisioned record.
    pub fn unprovisioned(&self) -> Result<Vec<(Mac, Vec<u8>)>, StoreError> {
        by_mac_text(&self.unprovisioned)
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Current store revision.
    pub fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get("revision")?.map_or(0, |v| keys::be_u64(&v)))
    }

    /// A domain by name.
    pub fn domain(&self, name: &str) -> Result<Option<Domain>, StoreError> {
        self.domains
            .get(name)?
            .map(|v| dec("domains", &v))
            .transpose()
    }

    /// An account by id.
    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.accounts
            .get(id)?
            .map(|v| dec("accounts", &v))
            .transpose()
    }

    /// A phone by MAC.
    pub fn phone(&self, mac: Mac) -> Result<Option<Phone>, StoreError> {
        self.phones
            .get(mac.bytes())?
            .map(|v| dec("phones", &v))
            .transpose()
    }

    /// What the fetch path needs of a phone, kept in memory until a commit changes it.
    ///
    /// Race guard: a reader notes the commit count before reading the store, and fills
    /// the memo only if the count is unchanged, checked and inserted under `memo_lock`; a
    /// commit bumps the count, then invalidates under the same lock. Either the reader
    /// sees the bump and leaves the memo alone, or the invalidation comes after its insert:
    /// a stale record is never in the memo, not even for a moment.
    pub fn gate(&self, mac: Mac) -> Result<Option<Arc<Gate>>, StoreError> {
        Ok(self.gate_or_phone(mac)?.map(|(g, _)| g))
    }

    /// The phone's gate if the memo holds it (nothing read, nothing remembered).
    pub fn peek_gate(&self, mac: Mac) -> Option<Arc<Gate>> {
        self.gates.peek(&mac)
    }

    /// Where gates leaving the memo hand back their phones' latest request times.
    pub fn folds(&self) -> Arc<crate::activity::Folds> {
        self.folds.clone()
    }

    /// [`Store::gate`], with the whole phone when the memo missed and it was read from the
    /// store just now (a cold fetch renders from it instead of reading it again).
    pub fn gate_or_phone(&self, mac: Mac) -> Result<Option<GateRead>, StoreError> {
        if let Some(g) = self.gates.get(&mac) {
            return Ok(Some((g, None)));
        }
        let before = self.commits.load(Ordering::SeqCst);
        let Some(p) = self.phone(mac)? else {
            return Ok(None);
        };
        Ok(Some((self.remember_gate(&p, before), Some(p))))
    }

    /// The gate of `p`, put in the memo unless a commit happened since `before` (the commit
    /// count noted before `p` was read).
    fn remember_gate(&self, p: &Phone, before: u64) -> Arc<Gate> {
        let g = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            if names.len() > 100_000 {
                // Names of deleted domains and models accumulate; start over now and then.
                names.clear();
            }
            Arc::new(Gate::of(
                p,
                |n| match names.get(n) {
                    Some(a) => a.clone(),
                    None => {
                        let a: Arc<str> = n.into();
                        names.insert(a.clone());
                        a
                    }
                },
                &self.folds,
            ))
        };
        let _memo = self.memo_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.commits.load(Ordering::SeqCst) == before {
            self.gates.insert(p.mac, g.clone());
        }
        g
    }

    /// Fills the gate memo from the phone tree, in MAC order, giving each gate to `each`
    /// until it returns false or the memo is nine-tenths full (startup warm-up: a fleet
    /// that reboots after the server did is then served from memory).
    pub fn warm_gates(&self, mut each: impl FnMut(&Gate) -> bool) -> Result<u64, StoreError> {
        let mut iter = self.phones.iter();
        let mut n = 0;
        loop {
            if self.gates.weight() >= self.gates.capacity() / 10 * 9 {
                break;
            }
            // Noted before the record is read: the iterator reads lazily.
            let before = self.commits.load(Ordering::SeqCst);
            let Some(kv) = iter.next() else {
                break;
            };
            let (k, v) = kv?;
            let g = match <[u8; 6]>::try_from(&k[..])
                .ok()
                .and_then(|m| self.gates.get(&Mac::from_bytes(m)))
            {
                // Already there (a request was first): nothing to decode.
                Some(g) => g,
                None => {
                    let Ok(p) = dec::<Phone>("phones", &v) else {
                        continue;
                    };
                    self.remember_gate(&p, before)
                }
            };
            n += 1;
            if !each(&g) {
                break;
            }
        }
        Ok(n)
    }

    /// The gate memo: ("gates", bytes weighed, entries).
    pub fn gate_memory(&self) -> (&'static str, u64, u64) {
        ("gates", self.gates.weight(), self.gates.len() as u64)
    }

    /// A domain for the fetch path (same guard as [`Store::gate`]).
    pub fn domain_shared(&self, name: &str) -> Result<Option<Arc<Domain>>, StoreError> {
        if let Some(d) = self.hot_domains.get(name) {
            return Ok(Some(d));
        }
        let before = self.commits.load(Ordering::SeqCst);
        let Some(d) = self.domain(name)? else {
            return Ok(None);
        };
        let d = Arc::new(d);
        let _memo = self.memo_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.commits.load(Ordering::SeqCst) == before {
            self.hot_domains.insert(name.to_string(), d.clone());
        }
        Ok(Some(d))
    }

    /// The admin token whose secret hashes to `hash`.
    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<Token>, StoreError> {
        self.tokens
            .get(hash)?
            .map(|v| dec("tokens", &v))
            .transpose()
    }

    /// Every admin token with its secret hash, in hash order.
    pub fn tokens(&self) -> Result<Vec<([u8; 32], Token)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tokens.iter() {
            let (k, v) = kv?;
            if let Ok(h) = <[u8; 32]>::try_from(&k[..]) {
                out.push((h, dec("tokens", &v)?));
            }
        }
        Ok(out)
    }

    /// Accounts of `user` in `domain`.
    pub fn accounts_of(
        &self,
        domain: &str,
        user: Option<&str>,
    ) -> Result<Vec<Account>, StoreError> {
        let suffix = format!("@{domain}");
        let mut out = Vec::new();
        for kv in self.accounts.iter() {
            let (k, v) = kv?;
            if k.ends_with(suffix.as_bytes()) {
                let a: Account = dec("accounts", &v)?;
                if a.domain == domain && user.is_none_or(|u| a.user == u) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// True when the domain has phones or accounts.
    pub fn domain_in_use(&self, domain: &str) -> Result<bool, StoreError> {
        Ok(self
            .by_domain
            .scan_prefix(keys::prefix(domain))
            .next()
            .is_some()
            || !self.accounts_of(domain, None)?.is_empty())
    }

    /// MACs of the phones in `domain`.
    pub fn phones_in_domain(&self, domain: &str) -> Result<Vec<Mac>, StoreError> {
        keys::macs(self.by_domain.scan_prefix(keys::prefix(domain)))
    }

    /// MACs of the phones `account_id` is a member of.
    pub fn phones_of_account(&self, account_id: &str) -> Result<Vec<Mac>, StoreError> {
        keys::macs(self.by_account.scan_prefix(keys::prefix(account_id)))
    }

    /// Phones in MAC order after `after`, filtered, at most `limit`.
    pub fn phones(
        &self,
        after: Option<Mac>,
        limit: usize,
        filter: &dyn Fn(&Phone) -> bool,
    ) -> Result<Vec<Phone>, StoreError> {
        let iter = match after {
            Some(m) => {
                let mut start = m.bytes().to_vec();
                start.push(0);
                self.phones.range(start..)
            }
            None => self.phones.iter(),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (_, v) = kv?;
            let p: Phone = dec("phones", &v)?;
            if filter(&p) {
                out.push(p);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Number of phones.
    ///
    /// Kept in the meta tree by every commit's transaction (exact, and a scrape does not walk
    /// the phone tree); a store from before the count is counted once when it opens.
    pub fn phone_count(&self) -> usize {
        self.meta
            .get(PHONE_COUNT)
            .ok()
            .flatten()
            .map_or(0, |v| keys::be_u64(&v) as usize)
    }

    /// Sets the phone count from a walk of the phone tree (stores from before the count,
    /// and after an import).
    fn recount_phones(&self) -> Result<(), StoreError> {
        self.meta
            .insert(PHONE_COUNT, &(self.phones.len() as u64).to_be_bytes())?;
        Ok(())
    }

    /// Every record (domains, accounts, phones, indexes, meta, token hashes), not the render cache, as
    /// hex keys → JSON or hex values: equal dumps mean equal stores.
    pub fn dump(&self) -> Result<serde_json::Value, StoreError> {
        let mut out = serde_json::Map::new();
        for (name, tree) in [
            ("domains", &self.domains),
            ("accounts", &self.accounts),
            ("phones", &self.phones),
            ("phones_by_domain", &self.by_domain),
            ("phones_by_account", &self.by_account),
            ("meta", &self.meta),
            ("tokens", &self.tokens),
        ] {
            let mut t = serde_json::Map::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                let key = crate::auth::hex(&k);
                let val = match serde_json::from_slice::<serde_json::Value>(
                    v.get(1..).unwrap_or_default(),
                ) {
                    Ok(j) if name != "meta" => j,
                    _ => serde_json::Value::String(crate::auth::hex(&v)),
                };
                t.insert(key, val);
            }
            out.insert(name.into(), serde_json::Value::Object(t));
        }
        Ok(serde_json::Value::Object(out))
    }

    /// A cached render.
    pub fn render_get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.renders.get(key)?)
    }

    /// Whether no file has been rendered into the store (fresh, or cleared at startup).
    pub fn renders_empty(&self) -> Result<bool, StoreError> {
        Ok(self.renders.first()?.is_none())
    }

    /// Stores a render.
    pub fn render_put(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.renders.insert(key, value)?;
        Ok(())
    }

    /// Stores `value` at `key` unless something is there already; returns what is stored
    /// afterwards (ours, or the one that was first).
    pub fn render_put_absent(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self
            .renders
            .compare_and_swap(key, None as Option<&[u8]>, Some(value.as_slice()))?
        {
            Ok(()) => Ok(value),
            Err(e) => Ok(e.current.map(|v| v.to_vec()).unwrap_or(value)),
        }
    }

    /// Drops every cached render (startup with a changed template/model set).
    pub fn render_clear(&self) -> Result<(), StoreError> {
        self.renders.clear()?;
        Ok(())
    }

    /// Commits `change` in one transaction; returns the new revision (unchanged if empty).
    pub fn commit(&self, change: &Change) -> Result<u64, StoreError> {
        if change.is_empty() {
            return self.revision();
        }
        let trees = (
            &self.domains,
            &self.accounts,
            &self.phones,
            &self.by_domain,
            &self.by_account,
            &self.meta,
            &self.tokens,
        );
        let rev = trees
            .transaction(
                |(domains, accounts, phones, by_domain, by_account, meta, tokens)| {
                    CommitTx {
                        domains,
                        accounts,
                        phones,
                        by_domain,
                        by_account,
                        meta,
                        tokens,
                    }
                    .apply(change, &self.credential_grace)
                },
            )
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
        let rev = rev.0;
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.forget_memos(change);
        self.drop_deleted_renders(change)?;
        Ok(rev)
    }

    /// Drops the memoised gates of every phone and the decoded domains `change` wrote,
    /// under the memo lock, so that no fill racing the commit keeps a stale record.
    fn forget_memos(&self, change: &Change) {
        let _memo = self.memo_lock.lock().unwrap_or_else(|p| p.into_inner());
        for (mac, _) in &change.phones {
            self.gates.remove(mac);
        }
        for mac in &change.touch {
            self.gates.remove(mac);
        }
        for (name, _) in &change.domains {
            self.hot_domains.remove(name);
        }
    }

    /// Drops the cached renders of the phones `change` deleted.
    fn drop_deleted_renders(&self, change: &Change) -> Result<(), StoreError> {
        for (mac, p) in &change.phones {
            if p.is_none() {
                for kv in self.renders.scan_prefix(keys::render_prefix(*mac)).keys() {
                    self.renders.remove(kv?)?;
                }
            }
        }
        Ok(())
    }
}

/// The clock of one commit and the seconds a replaced provisioning credential keeps
/// working from it.
#[derive(Clone, Copy)]
struct Rotation {
    now: u64,
    grace: u64,
}

impl Rotation {
    /// The previous credentials of a record whose credentials go from `old` (the stored
    /// record's, if any) to `new`, given those it `carried` (see [`rotate`]).
    fn previous(
        self,
        old: (&Option<String>, &Option<String>),
        new: (&Option<String>, &Option<String>),
        carried: Option<PreviousCredentials>,
    ) -> Option<PreviousCredentials> {
        rotate(old, new, carried, self.now, self.grace)
    }
}

/// The trees of one run of a commit's transaction (sled runs it again after a conflict,
/// so a run only reads and writes these).
struct CommitTx<'t> {
    domains: &'t TransactionalTree,
    accounts: &'t TransactionalTree,
    phones: &'t TransactionalTree,
    by_domain: &'t TransactionalTree,
    by_account: &'t TransactionalTree,
    meta: &'t TransactionalTree,
    tokens: &'t TransactionalTree,
}

impl CommitTx<'_> {
    /// Writes `change` under the next revision, in record order: revision, meta, tokens,
    /// domains, accounts, phones (with their indexes), then the phone count; returns the
    /// revision and how many phones were added (negative: removed).
    fn apply(&self, change: &Change, grace: &AtomicU64) -> TxResult<(u64, i64)> {
        let rev = self.meta.get("revision")?.map_or(0, |v| keys::be_u64(&v)) + 1;
        self.meta.insert("revision", &rev.to_be_bytes())?;
        for (k, v) in &change.meta {
            self.meta.insert(k.as_bytes(), v.as_slice())?;
        }
        for (hash, t) in &change.tokens {
            match t {
                Some(t) => self.tokens.insert(&hash[..], enc(t))?,
                None => self.tokens.remove(&hash[..])?,
            };
        }
        let rotation = Rotation {
            now: crate::guard::now_secs(),
            grace: grace.load(Ordering::Relaxed),
        };
        self.write_domains(&change.domains, rotation)?;
        for (id, a) in &change.accounts {
            match a {
                Some(a) => self.accounts.insert(id.as_bytes(), enc(a))?,
                None => self.accounts.remove(id.as_bytes())?,
            };
        }
        let added = self.write_phones(change, rev, rotation)?;
        if added != 0 {
            let n = self.meta.get(PHONE_COUNT)?.map_or(0, |v| keys::be_u64(&v));
            let n = n.saturating_add_signed(added);
            self.meta.insert(PHONE_COUNT, &n.to_be_bytes())?;
        }
        Ok((rev, added))
    }

    /// Writes or deletes domains; a domain whose provisioning credentials change keeps the
    /// stored ones as its previous credentials for the grace period.
    fn write_domains(
        &self,
        domains: &[(String, Option<Domain>)],
        rotation: Rotation,
    ) -> TxResult<()> {
        for (name, d) in domains {
            match d {
                Some(d) => {
                    let old: Option<Domain> = tx_get(self.domains, "domains", name.as_bytes())?;
                    let mut d = d.clone();
                    d.previous_credentials = rotation.previous(
                        old.as_ref().map_or((&None, &None), |o| {
                            (&o.provisioning_username, &o.provisioning_password)
                        }),
                        (&d.provisioning_username, &d.provisioning_password),
                        d.previous_credentials.take(),
                    );
                    self.domains.insert(name.as_bytes(), enc(&d))?
                }
                None => self.domains.remove(name.as_bytes())?,
            };
        }
        Ok(())
    }

    /// Writes or deletes the change's phones at revision `rev`, then gives the touched
    /// phones it did not write that revision too (their rendered files change); returns how
    /// many phones were added (negative: removed).
    fn write_phones(&self, change: &Change, rev: u64, rotation: Rotation) -> TxResult<i64> {
        let mut added: i64 = 0;
        let written: BTreeSet<Mac> = change.phones.iter().map(|(m, _)| *m).collect();
        for (mac, p) in &change.phones {
            added += self.write_phone(*mac, p.as_ref(), rev, rotation)?;
        }
        for mac in change.touch.difference(&written) {
            let key = mac.bytes();
            if let Some(mut p) = tx_get::<Phone>(self.phones, "phones", &key)? {
                p.revision = rev;
                self.phones.insert(&key, enc(&p))?;
            }
        }
        Ok(added)
    }

    /// Writes (at revision `rev`) or deletes one phone and moves its domain and member
    /// index entries from the stored phone to the new one; a phone whose provisioning
    /// credentials change keeps the stored ones for the grace period. Returns 1 for a phone
    /// added, -1 for one removed, else 0.
    fn write_phone(
        &self,
        mac: Mac,
        p: Option<&Phone>,
        rev: u64,
        rotation: Rotation,
    ) -> TxResult<i64> {
        let key = mac.bytes();
        let old: Option<Phone> = tx_get(self.phones, "phones", &key)?;
        let added = i64::from(p.is_some()) - i64::from(old.is_some());
        if let Some(old) = &old {
            if let Some(d) = &old.domain {
                self.by_domain.remove(keys::index(d, mac))?;
            }
            for m in &old.members {
                self.by_account.remove(keys::index(&m.id, mac))?;
            }
        }
        match p {
            Some(p) => {
                let mut p = p.clone();
                p.revision = rev;
                p.previous_credentials = rotation.previous(
                    old.as_ref().map_or((&None, &None), |o| {
                        (&o.provisioning_username, &o.provisioning_password)
                    }),
                    (&p.provisioning_username, &p.provisioning_password),
                    p.previous_credentials.take(),
                );
                if let Some(d) = &p.domain {
                    self.by_domain.insert(keys::index(d, mac), &[])?;
                }
                for m in &p.members {
                    self.by_account.insert(keys::index(&m.id, mac), &[])?;
                }
                self.phones.insert(&key, enc(&p))?;
            }
            None => {
                self.phones.remove(&key)?;
            }
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Member;

    fn mac(n: u8) -> Mac {
        Mac::from_bytes([0, 0x15, 0x65, 0, 0, n])
    }

    #[test]
    fn the_gate_memo_never_keeps_a_stale_record() {
        let s = Arc::new(Store::temporary().unwrap());
        let p = Phone::new(mac(2), "m".into());
        s.commit(&Change {
            phones: vec![(mac(2), Some(p.clone()))],
            ..Default::default()
        })
        .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (s, stop) = (s.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = s.gate(mac(2)).unwrap();
                    }
                })
            })
            .collect();
        let mut last = 0;
        for i in 0..300 {
            let mut p = p.clone();
            p.model = format!("m{i}");
            last = s
                .commit(&Change {
                    phones: vec![(mac(2), Some(p))],
                    ..Default::default()
                })
                .unwrap();
            let got = s.gate(mac(2)).unwrap().unwrap();
            assert_eq!(
                (got.revision, &*got.model),
                (last, format!("m{i}").as_str())
            );
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(s.gate(mac(2)).unwrap().unwrap().revision, last);
    }

    #[test]
    fn the_phone_count_is_kept_by_commits_and_recounted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(s.phone_count(), 0);
            let put = |n: u8| (mac(n), Some(Phone::new(mac(n), "m".into())));
            s.commit(&Change {
                phones: vec![put(1), put(2), put(3)],
                ..Default::default()
            })
            .unwrap();
            // Rewriting a phone is not a new one; deleting one that is gone changes nothing.
            s.commit(&Change {
                phones: vec![put(1), (mac(2), None), (mac(9), None)],
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.phone_count(), 2);
            s.flush_sync().unwrap();
        }
        // sled's background thread can hold the file lock a moment after the drop.
        let reopened = (0..100)
            .find_map(|_| match Store::open(dir.path(), 1 << 20) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                }
                other => Some(other),
            })
            .expect("the store's lock is released within 5 s")
            .unwrap();
        assert_eq!(reopened.phone_count(), 2);
    }

    #[test]
    fn commit_bumps_revisions_and_indexes() {
        let s = Store::temporary().unwrap();
        let mut p = Phone::new(mac(1), "m".into());
        p.domain = Some("d".into());
        p.members.push(Member::new(1, "a@d".into()));
        let r1 = s
            .commit(&Change {
                phones: vec![(mac(1), Some(p.clone()))],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s.phone(mac(1)).unwrap().unwrap().revision, r1);
        assert_eq!(s.phones_in_domain("d").unwrap(), vec![mac(1)]);
        assert_eq!(s.phones_of_account("a@d").unwrap(), vec![mac(1)]);
        assert!(s.phones_of_account("a@").unwrap().is_empty());
        let mut touch = BTreeSet::new();
        touch.insert(mac(1));
        let r2 = s
            .commit(&Change {
                touch,
                ..Default::default()
            })
            .unwrap();
        assert!(r2 > r1);
        assert_eq!(s.phone(mac(1)).unwrap().unwrap().revision, r2);
        // An empty change writes nothing and answers the current revision.
        assert_eq!(s.commit(&Change::default()).unwrap(), r2);
        assert_eq!(s.revision().unwrap(), r2);
        p.members.clear();
        p.domain = None;
        s.commit(&Change {
            phones: vec![(mac(1), Some(p))],
            ..Default::default()
        })
        .unwrap();
        assert!(s.phones_in_domain("d").unwrap().is_empty());
        assert!(s.phones_of_account("a@d").unwrap().is_empty());
        // A deleted phone's rendered files go with it; another phone's stay.
        let own = keys::render_key(Some(mac(1)), "m", "{mac}.cfg");
        let other = keys::render_key(Some(mac(2)), "m", "{mac}.cfg");
        s.render_put(&own, b"one".to_vec()).unwrap();
        s.render_put(&other, b"two".to_vec()).unwrap();
        s.commit(&Change {
            phones: vec![(mac(1), None)],
            ..Default::default()
        })
        .unwrap();
        assert!(s.phone(mac(1)).unwrap().is_none());
        assert!(s.render_get(&own).unwrap().is_none());
        assert_eq!(s.render_get(&other).unwrap().as_deref(), Some(&b"two"[..]));
    }
}
