//! The module layers (docs/ARCHITECTURE.md): a module imports only from its own layer or
//! the layers below it, and no two top-level modules import each other, directly or
//! through others. Read from the `crate::…` paths under `src/` (tests excluded).
//!
//! The layout is being moved onto these layers (issue 29). Until it is, the edges that
//! break a rule today are listed in `KNOWN`: a new one fails this test, and so does a
//! listed one that is gone (take it off the list, so it cannot come back unnoticed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each top-level module of `src/`, lowest first. `lib` is the crate root.
const LAYERS: &[(&str, u8)] = &[
    // Pure domain: MAC, User-Agent, catalogue, records, settings, merge, rules.
    ("model", 0),
    // Credential and address primitives on domain types.
    ("auth", 1),
    ("digest", 1),
    ("guard", 1),
    // Rendering and persistence, each on the domain only.
    ("render", 2),
    ("store", 2),
    // The phone pipeline's state and the activity record (fetch audit, journal,
    // unprovisioned list).
    ("cache", 3),
    ("activity", 3),
    // Admin use cases.
    ("admin", 4),
    ("reload", 4),
    // Adapters and wiring.
    ("args", 5),
    ("error", 5),
    ("http", 5),
    ("cli", 5),
    ("config", 5),
    ("server", 5),
    ("tls", 5),
    ("watchdog", 5),
    ("telemetry", 5),
    ("metrics", 5),
    ("lib", 5),
    ("main", 6),
];

/// Edges that break a rule today, `from -> to`, each to be removed by issue 29.
const KNOWN: &[&str] = &[
    // Upward imports.
    "model -> cache",
    "model -> activity",
    "store -> activity",
];

fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `from -> to` for every `crate::x` path outside tests; `crate::Item` is the root (`lib`).
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let list = common::rust_sources(src);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in list {
        let from = top_module(src, &f);
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        // Code only: a doc link names a module without importing it.
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("crate::") {
            if i > 0 && code.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let rest = &code[i + 7..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let to = if modules.contains(name) { name } else { "lib" };
            if to != from && !(from == "main" || name.is_empty()) {
                out.entry(from.clone()).or_default().insert(to.to_string());
            }
        }
    }
    out
}

fn layer(m: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == m)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module {m} has no layer in tests/architecture.rs"))
}

/// Whether `to` reaches `from` through modules of one layer (so `from -> to` closes a cycle
/// inside that layer; a cycle across layers has an upward edge, reported as such).
fn reaches(g: &BTreeMap<String, BTreeSet<String>>, to: &str, from: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![to.to_string()];
    while let Some(m) = stack.pop() {
        if m == from {
            return true;
        }
        if seen.insert(m.clone()) {
            let same = g.get(&m).into_iter().flatten();
            stack.extend(same.filter(|n| layer(n) == layer(from)).cloned());
        }
    }
    false
}

#[test]
fn imports_point_down_and_never_round() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = edges(&src);
    assert!(g.len() > 10, "read the module graph: {g:?}");
    let mut broken = BTreeSet::new();
    for (from, tos) in &g {
        for to in tos {
            let round = layer(to) == layer(from) && reaches(&g, to, from);
            if layer(to) > layer(from) || round {
                broken.insert(format!("{from} -> {to}"));
            }
        }
    }
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = broken.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&broken).collect();
    assert!(
        new.is_empty(),
        "imports that point up or close a cycle (docs/ARCHITECTURE.md): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "fixed, take them off KNOWN in tests/architecture.rs: {gone:?}"
    );
}

#[test]
fn the_checker_sees_cycles_and_upward_imports() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("http".into()).or_default().insert("cli".into());
    g.entry("cli".into()).or_default().insert("server".into());
    assert!(!reaches(&g, "cli", "http"));
    g.entry("server".into()).or_default().insert("http".into());
    assert!(reaches(&g, "cli", "http"), "http -> cli -> server -> http");
    assert!(layer("http") > layer("model") && layer("model") == 0);
}

/// Files of `src/` that still carry `#![allow(dead_code)]` (issue 29 rule 4): only shrinks.
const DEAD_CODE_ALLOWED: &[&str] = &["http/schema.rs"];

/// Issue 29 rules 2 and 4: the too-many-lines lint is on for the library and the binary
/// (threshold 80 in clippy.toml, so `cargo clippy -D warnings` fails on a longer
/// function), no source file allows it, and no file allows dead code beyond the list.
#[test]
fn long_functions_and_dead_code_are_not_allowed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clippy = std::fs::read_to_string(root.join("clippy.toml")).unwrap();
    assert!(
        clippy
            .lines()
            .any(|l| l.replace(' ', "") == "too-many-lines-threshold=80"),
        "clippy.toml must set too-many-lines-threshold = 80"
    );
    let src = root.join("src");
    for file in ["lib.rs", "main.rs"] {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        assert!(
            text.contains("#![warn(clippy::too_many_lines)]"),
            "src/{file} must switch the too_many_lines lint on"
        );
    }
    let mut dead = Vec::new();
    for file in common::rust_sources(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for (n, line) in text.lines().enumerate() {
            let l = line.replace(' ', "");
            assert!(
                !(l.contains("allow(clippy::too_many_lines") || l.contains("allow(clippy::all")),
                "src/{rel}:{}: the line-count lint may not be allowed",
                n + 1
            );
            if l.starts_with("#![allow(dead_code") {
                dead.push(rel.clone());
            }
        }
    }
    dead.sort();
    let mut known: Vec<String> = DEAD_CODE_ALLOWED.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(
        dead, known,
        "files with #![allow(dead_code)] differ from DEAD_CODE_ALLOWED (a fixed one must be taken off)"
    );
}
