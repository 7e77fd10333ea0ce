//! `autoprov export` / `autoprov import`: every sled tree but the render cache as one
//! deterministic JSON document, and back, byte for byte.
//!
//! The document (format `autoprov-export`, version 1):
//!
//! ```json
//! {
//!   "format": "autoprov-export",
//!   "version": 1,
//!   "schema": 1,
//!   "trees": {
//!     "accounts": [ { "key": "1004a@example.com", "record": { "domain": "example.com", … } } ],
//!     "meta": [ { "key": "prov_user", "text": "prov-x1y2z3" }, { "key": "revision", "hex": "…" } ],
//!     "phones": [ { "key-hex": "001565aabbcc", "record": { … } } ],
//!     …
//!   }
//! }
//! ```
//!
//! Trees are found with `tree_names()` (so trees added later are exported without a change
//! here; this code only ever names trees in UTF-8, and a tree with another name would be
//! left out), sorted by name; entries come in sled's key order. A key is `"key"` (text) when it
//! is UTF-8 without control characters, else `"key-hex"`. A value is the first of:
//! `"record"` (a store record: the schema byte then JSON, embedded as JSON), `"json"`
//! (plain JSON), `"text"` (UTF-8 without control characters), `"hex"`. `record` and `json`
//! are used only when re-serialising the parsed JSON gives the stored bytes back, so
//! import → export is byte-identical. Secrets are in it (SIP passwords, credential hashes):
//! treat an export like the data folder.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use sled::Transactional;

use super::{SCHEMA_VERSION, Store, StoreError, dec};
use crate::model::{Account, Domain, Phone, rules};

/// The `format` header.
pub const FORMAT: &str = "autoprov-export";
/// The `version` header this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// Trees that are caches, not data.
const SKIPPED: &[&str] = &["renders"];

/// Why an export could not be read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not JSON at all.
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Json {
        /// Line (1-based).
        line: usize,
        /// Column (1-based).
        column: usize,
        /// What serde_json said.
        message: String,
    },
    /// A header or structure problem.
    #[error("{field}: {message}")]
    Header {
        /// The field (`format`, `version`, `schema`, `trees`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// One entry is wrong.
    #[error("trees.{tree}[{index}]{key}: {message}")]
    Entry {
        /// Tree name.
        tree: String,
        /// Position in the tree's list.
        index: usize,
        /// ` (key …)` when the key could be read.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A record breaks a rule the admin API enforces.
    #[error("trees.{tree}{key}: {violation}")]
    Record {
        /// Tree name.
        tree: String,
        /// ` (key …)` or ` (key-hex …)`.
        key: String,
        /// The field and the rule.
        violation: crate::model::rules::Violation,
    },
    /// The store holds data and `--replace` was not given.
    #[error(
        "the store already holds data ({what}); nothing was written. Pass --replace to replace everything in it, or import into an empty data folder"
    )]
    NotEmpty {
        /// The first thing found.
        what: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A validated export, ready to write: tree name → (key, value) in key order.
#[derive(Debug, Default)]
pub struct Dump {
    trees: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Dump {
    /// Checks every domain, account and phone record against the rules the admin API
    /// enforces (names, one-line text, settings, credentials, members, overrides, a model
    /// the catalogue knows), so a hand-edited backup brings in nothing the API refuses.
    pub fn check(&self, knows: &rules::Knowledge<'_>) -> Result<(), ImportError> {
        for (tree, entries) in &self.trees {
            for (k, v) in entries {
                let checked = match tree.as_str() {
                    "domains" => dec::<Domain>("domains", v).map(|d| rules::check_domain(&d)),
                    "accounts" => {
                        dec::<Account>("accounts", v).map(|a| rules::check_account(&a, knows))
                    }
                    "phones" => dec::<Phone>("phones", v).map(|p| rules::check_phone(&p, knows)),
                    _ => continue,
                };
                // Decoding was proven by `parse`; a failure here is the store's error.
                if let Err(violation) = checked? {
                    return Err(ImportError::Record {
                        tree: tree.clone(),
                        key: shown_key(k),
                        violation,
                    });
                }
            }
        }
        Ok(())
    }

    /// Number of entries across all trees.
    pub fn entries(&self) -> usize {
        self.trees.values().map(BTreeMap::len).sum()
    }

    /// Number of entries in `tree`.
    pub fn count(&self, tree: &str) -> usize {
        self.trees.get(tree).map_or(0, BTreeMap::len)
    }
}

use crate::auth::hex;

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn plain_text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

/// JSON that re-serialises to exactly `b`.
fn exact_json(b: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(b).ok()?;
    (serde_json::to_vec(&v).ok()? == b).then_some(v)
}

fn entry_json(k: &[u8], v: &[u8]) -> Value {
    let mut e = Map::new();
    match plain_text(k) {
        Some(s) => e.insert("key".into(), Value::String(s.into())),
        None => e.insert("key-hex".into(), Value::String(hex(k))),
    };
    let record = match v.split_first() {
        Some((&SCHEMA_VERSION, body)) => exact_json(body),
        _ => None,
    };
    if let Some(r) = record {
        e.insert("record".into(), r);
    } else if let Some(j) = exact_json(v) {
        e.insert("json".into(), j);
    } else if let Some(s) = plain_text(v) {
        e.insert("text".into(), Value::String(s.into()));
    } else {
        e.insert("hex".into(), Value::String(hex(v)));
    }
    Value::Object(e)
}

/// Checks that a value of a tree with a known record type decodes as that type.
fn check_record(tree: &str, v: &[u8]) -> Result<(), String> {
    let r = match tree {
        "domains" => dec::<Domain>("domains", v).map(drop),
        "accounts" => dec::<Account>("accounts", v).map(drop),
        "phones" => dec::<Phone>("phones", v).map(drop),
        _ => return Ok(()),
    };
    if v.first() != Some(&SCHEMA_VERSION) {
        return Err(format!("a {tree} entry must be a \"record\""));
    }
    r.map_err(|e| match std::error::Error::source(&e) {
        Some(s) => format!("not a valid {tree} record: {s}"),
        None => format!("not a valid {tree} record"),
    })
}

/// A key as an export spells it, for an error: ` (key "…")` or ` (key-hex …)`.
fn shown_key(key: &[u8]) -> String {
    match plain_text(key) {
        Some(s) => format!(" (key {s:?})"),
        None => format!(" (key-hex {})", hex(key)),
    }
}

fn parse_entry(tree: &str, e: &Value) -> Result<(Vec<u8>, Vec<u8>), (String, String)> {
    let Value::Object(o) = e else {
        return Err((String::new(), "must be an object".into()));
    };
    let key = match (o.get("key"), o.get("key-hex")) {
        (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
        (None, Some(Value::String(s))) => unhex(s).ok_or_else(|| {
            (
                String::new(),
                format!("key-hex {s:?} is not an even number of hex digits"),
            )
        })?,
        _ => {
            return Err((
                String::new(),
                "needs exactly one of \"key\" or \"key-hex\" (a string)".into(),
            ));
        }
    };
    let shown = shown_key(&key);
    let fail = |m: String| (shown.clone(), m);
    let kinds: Vec<&String> = o
        .keys()
        .filter(|k| !matches!(k.as_str(), "key" | "key-hex"))
        .collect();
    let [kind] = kinds.as_slice() else {
        return Err(fail(
            "needs exactly one of \"record\", \"json\", \"text\" or \"hex\"".into(),
        ));
    };
    let raw = &o[kind.as_str()];
    let value = match (kind.as_str(), raw) {
        ("record", v) => {
            let mut b = vec![SCHEMA_VERSION];
            b.extend(serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?);
            b
        }
        ("json", v) => serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?,
        ("text", Value::String(s)) => s.as_bytes().to_vec(),
        ("hex", Value::String(s)) => unhex(s)
            .ok_or_else(|| fail(format!("hex {s:?} is not an even number of hex digits")))?,
        ("text" | "hex", _) => return Err(fail(format!("\"{kind}\" must be a string"))),
        (other, _) => return Err(fail(format!("unknown field {other:?}"))),
    };
    check_record(tree, &value).map_err(fail)?;
    Ok((key, value))
}

/// Parses and validates an export completely; nothing is written.
pub fn parse(bytes: &[u8]) -> Result<Dump, ImportError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
        let full = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        ImportError::Json {
            line: e.line(),
            column: e.column(),
            message: full.strip_suffix(&at).unwrap_or(&full).to_string(),
        }
    })?;
    let Value::Object(doc) = doc else {
        return Err(header("document", "must be a JSON object".into()));
    };
    check_header(&doc)?;
    let Some(Value::Object(trees)) = doc.get("trees") else {
        return Err(header(
            "trees",
            "must be an object of tree name → entries".into(),
        ));
    };
    parse_trees(trees)
}

/// A header or structure problem at `field`.
fn header(field: &str, message: String) -> ImportError {
    ImportError::Header {
        field: field.into(),
        message,
    }
}

/// The document's header, checked in this order: `format` names an autoprov export,
/// `version` and `schema` are the ones this build reads, and no field but those and
/// `trees` is there.
fn check_header(doc: &Map<String, Value>) -> Result<(), ImportError> {
    match doc.get("format") {
        Some(Value::String(f)) if f == FORMAT => {}
        other => {
            return Err(header(
                "format",
                format!("is {other:?}, not {FORMAT:?}: this is not an autoprov export"),
            ));
        }
    }
    match doc.get("version").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(header(
                "version",
                format!(
                    "export version {v} is not supported; this autoprov reads version {FORMAT_VERSION}"
                ),
            ));
        }
        None => return Err(header("version", "must be a number".into())),
    }
    match doc.get("schema").and_then(Value::as_u64) {
        Some(s) if s == u64::from(SCHEMA_VERSION) => {}
        Some(s) => {
            return Err(header(
                "schema",
                format!(
                    "records of store schema {s} cannot be loaded by this autoprov (schema {SCHEMA_VERSION})"
                ),
            ));
        }
        None => return Err(header("schema", "must be a number".into())),
    }
    if let Some(k) = doc
        .keys()
        .find(|k| !matches!(k.as_str(), "format" | "version" | "schema" | "trees"))
    {
        return Err(header(k, "unknown field".into()));
    }
    Ok(())
}

/// Reads the `trees` object: each named data tree (never a cache) is a list of entries,
/// each a valid entry ([`parse_entry`]) with a key not given before in that tree; the
/// first bad tree or entry is the error.
fn parse_trees(trees: &Map<String, Value>) -> Result<Dump, ImportError> {
    let mut dump = Dump::default();
    for (name, entries) in trees {
        if name.is_empty() || SKIPPED.contains(&name.as_str()) {
            return Err(header(
                &format!("trees.{name}"),
                "is not a data tree and cannot be imported".into(),
            ));
        }
        let Value::Array(entries) = entries else {
            return Err(header(&format!("trees.{name}"), "must be a list".into()));
        };
        let tree = dump.trees.entry(name.clone()).or_default();
        for (index, e) in entries.iter().enumerate() {
            let entry = |(key, message): (String, String)| ImportError::Entry {
                tree: name.clone(),
                index,
                key,
                message,
            };
            let (k, v) = parse_entry(name, e).map_err(entry)?;
            let shown = shown_key(&k);
            if tree.insert(k, v).is_some() {
                return Err(entry((shown, "duplicate key".into())));
            }
        }
    }
    Ok(dump)
}

impl Store {
    /// The whole store (not the render cache) as an export document.
    pub fn export(&self) -> Result<Vec<u8>, StoreError> {
        let mut names: Vec<Vec<u8>> = self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        names.sort();
        let mut trees = Map::new();
        for name in names {
            let Ok(text) = String::from_utf8(name.clone()) else {
                continue;
            };
            if SKIPPED.contains(&text.as_str()) {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            let mut list = Vec::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                list.push(entry_json(&k, &v));
            }
            trees.insert(text, Value::Array(list));
        }
        let mut doc = Map::new();
        doc.insert("format".into(), FORMAT.into());
        doc.insert("version".into(), FORMAT_VERSION.into());
        doc.insert("schema".into(), u64::from(SCHEMA_VERSION).into());
        doc.insert("trees".into(), Value::Object(trees));
        let mut out = serde_json::to_vec_pretty(&Value::Object(doc)).unwrap_or_default();
        out.push(b'\n');
        Ok(out)
    }

    /// What makes the store non-empty, if anything: an entry of a data tree other than the
    /// `schema` marker and the phone count a fresh store writes.
    pub fn holds_data(&self) -> Result<Option<String>, StoreError> {
        let mut names: Vec<Vec<u8>> = self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        names.sort();
        for name in names {
            let text = String::from_utf8_lossy(&name).into_owned();
            if SKIPPED.contains(&text.as_str()) {
                continue;
            }
            for k in self.db.open_tree(&name)?.iter().keys() {
                let k = k?;
                // A fresh store writes its schema marker and a phone count of zero.
                if !(text == "meta" && (&k[..] == b"schema" || &k[..] == b"phone_count")) {
                    return Ok(Some(format!("tree {text} has entries")));
                }
            }
        }
        Ok(None)
    }

    /// Loads `dump`: refused when the store holds data unless `replace`. With `replace`,
    /// every data tree's content is replaced in one sled transaction (all or nothing, also
    /// across a crash); the render cache is cleared first. Flushed before returning.
    pub fn import(&self, dump: &Dump, replace: bool) -> Result<(), ImportError> {
        if !replace && let Some(what) = self.holds_data()? {
            return Err(ImportError::NotEmpty { what });
        }
        let mut names: BTreeSet<Vec<u8>> =
            self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        names.extend(dump.trees.keys().map(|n| n.as_bytes().to_vec()));
        names.retain(|n| !SKIPPED.iter().any(|s| s.as_bytes() == n.as_slice()));
        let names: Vec<Vec<u8>> = names.into_iter().collect();
        let trees = names
            .iter()
            .map(|n| self.db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)?;
        let empty = BTreeMap::new();
        // Stale keys (in the store, not in the dump) per tree.
        let mut stale: Vec<Vec<sled::IVec>> = Vec::with_capacity(trees.len());
        for (name, tree) in names.iter().zip(&trees) {
            let want = dump
                .trees
                .get(String::from_utf8_lossy(name).as_ref())
                .unwrap_or(&empty);
            let mut s = Vec::new();
            for k in tree.iter().keys() {
                let k = k.map_err(StoreError::from)?;
                if !want.contains_key(k.as_ref()) {
                    s.push(k);
                }
            }
            stale.push(s);
        }
        self.renders.clear().map_err(StoreError::from)?;
        trees
            .as_slice()
            .transaction(|txs| {
                for ((name, tx), stale) in names.iter().zip(txs).zip(&stale) {
                    for k in stale {
                        tx.remove(k)?;
                    }
                    let want = dump
                        .trees
                        .get(String::from_utf8_lossy(name).as_ref())
                        .unwrap_or(&empty);
                    for (k, v) in want {
                        tx.insert(k.as_slice(), v.as_slice())?;
                    }
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Flush("import transaction aborted".into())
                }
            })?;
        self.recount_phones()?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        {
            let _memo = self.memo_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.gates.clear();
            self.hot_domains.clear();
        }
        self.db.flush().map_err(StoreError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mac, Member};
    use crate::store::Change;

    fn seeded() -> Store {
        let s = Store::temporary().unwrap();
        let mac = Mac::from_bytes([0, 0x15, 0x65, 0xaa, 0xbb, 0xcc]);
        let mut p = Phone::new(mac, "yealink-t46s".into());
        p.domain = Some("example.com".into());
        p.members.push(Member::new(1, "1004a@example.com".into()));
        p.overrides.insert("x".into(), "Ünïcode \"q\" \u{7}".into());
        s.commit(&Change {
            domains: vec![(
                "example.com".into(),
                Some(Domain {
                    name: "example.com".into(),
                    ..Default::default()
                }),
            )],
            accounts: vec![(
                "1004a@example.com".into(),
                Some(Account {
                    domain: "example.com".into(),
                    user: "1004".into(),
                    device: "1004a".into(),
                    password: "pw".into(),
                    ..Default::default()
                }),
            )],
            phones: vec![(mac, Some(p))],
            meta: vec![
                ("admin_token_sha256".into(), vec![0, 1, 2, 255]),
                ("prov_user".into(), b"prov-abc".to_vec()),
            ],
            ..Default::default()
        })
        .unwrap();
        s.render_put(b"pxxxxxx", b"cached".to_vec()).unwrap();
        s
    }

    #[test]
    fn round_trip_is_byte_identical_and_skips_the_render_cache() {
        let a = seeded();
        let out = a.export().unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("renders"), "{text}");
        assert!(text.contains("\"prov_user\""), "{text}");
        let dump = parse(&out).unwrap();
        let b = Store::temporary().unwrap();
        b.import(&dump, false).unwrap();
        assert_eq!(b.export().unwrap(), out);
        assert_eq!(a.dump().unwrap(), b.dump().unwrap());
    }

    #[test]
    fn values_pick_the_first_exact_kind() {
        let e = entry_json(b"k", b"\x01{\"a\":1}");
        assert_eq!(e["record"]["a"], 1);
        // Not the compact form serde_json writes: kept as text, still exact.
        let e = entry_json(b"k", b"{ \"a\": 1 }");
        assert_eq!(e["text"], "{ \"a\": 1 }");
        let e = entry_json(b"\0\x01", b"[1,2]");
        assert_eq!(
            (e["key-hex"].as_str(), e["json"][1].as_u64()),
            (Some("0001"), Some(2))
        );
        assert_eq!(entry_json(b"k", b"\xff")["hex"], "ff");
    }

    #[test]
    fn replace_swaps_everything_and_refusal_writes_nothing() {
        let a = seeded();
        let out = a.export().unwrap();
        let b = Store::temporary().unwrap();
        b.commit(&Change {
            domains: vec![(
                "other.org".into(),
                Some(Domain {
                    name: "other.org".into(),
                    ..Default::default()
                }),
            )],
            ..Default::default()
        })
        .unwrap();
        let before = b.export().unwrap();
        let dump = parse(&out).unwrap();
        let e = b.import(&dump, false).unwrap_err().to_string();
        assert!(e.contains("--replace"), "{e}");
        assert_eq!(b.export().unwrap(), before);
        b.import(&dump, true).unwrap();
        assert_eq!(b.export().unwrap(), out);
        assert!(b.domain("other.org").unwrap().is_none());
    }
}
