//! Golden files: for every shipped model and every scenario that fits it, the exact bytes a
//! phone receives for each file the model requests. Every file is also read in its own
//! format (never a key twice, the scenario's overrides set), and every XML file by a
//! conforming parser (roxmltree: `--` in a comment, `]]>` in text, a bad name or an
//! undeclared prefix is an error).
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the golden files that differ (or are
//! missing) and then FAILS, listing them, so a rewrite never passes silently: review the
//! diff like code, then run again without the variable (when no file differs nothing is
//! written and the run is an ordinary comparison). `UPDATE_GOLDEN` set to anything else
//! (`0`, `true`, empty) is an error naming it, and with `CI` set (non-empty) rewriting is
//! refused.

mod common;

use std::path::PathBuf;

use common::{TestServer, repo};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const MAC: &str = "001565a1b2c3";

fn subst(v: &Value, model: &str, overrides: &Value) -> Value {
    match v {
        Value::String(s) if s == "{overrides}" => overrides.clone(),
        Value::String(s) => Value::String(s.replace("{mac}", MAC).replace("{model}", model)),
        Value::Array(a) => Value::Array(a.iter().map(|x| subst(x, model, overrides)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), subst(x, model, overrides)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The vendor's overrides for the scenarios: one key its file generates, one it does not.
fn vendor_overrides(vendor: &str) -> Value {
    let path = repo("tests/fixtures/overrides").join(format!("{vendor}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A User-Agent as the vendor's firmware sends it (VENDORS.md), for `MAC`.
fn user_agent(vendor: &str, token: &str) -> String {
    let upper = MAC.to_ascii_uppercase();
    let colon: Vec<String> = (0..6).map(|i| MAC[2 * i..2 * i + 2].to_string()).collect();
    match vendor {
        "yealink" => format!("Yealink {token} 66.86.0.15 {}", colon.join(":")),
        "polycom" => {
            let family = if token.starts_with("SPIP") {
                "SoundPointIP"
            } else {
                "VVX"
            };
            format!("FileTransport Polycom{family}-{token}-UA/6.4.3.1 (SN:{MAC}) Type/Application")
        }
        "grandstream" => format!("Grandstream Model HW {token} SW 1.0.5.15 DevId {MAC}"),
        "cisco" if token.starts_with("SPA") => {
            format!("Cisco/{token}-1.4.1(SR5) ({upper})(CBT12345678)")
        }
        "cisco" => format!("Cisco-{token}/12.0.1 ({MAC})"),
        "snom" => format!(
            "Mozilla/4.0 (compatible; {token}-SIP 10.1.33.33 2010.12-00004-g9ba52f5 {upper} SXM:0 UXM:0)"
        ),
        "fanvil" => format!("Fanvil {token} 2.12.16.17 {MAC}"),
        other => panic!("no User-Agent for vendor {other}"),
    }
}

/// The overlay format of each file a model declares, read from its model file.
fn formats(model: &str) -> std::collections::HashMap<String, autoprov::model::Format> {
    let text = std::fs::read_to_string(repo("models").join(format!("{model}.toml"))).unwrap();
    let m = autoprov::model::Catalogue::parse_model(
        std::path::Path::new("m.toml"),
        model,
        &text,
        &|_| true,
    )
    .unwrap();
    m.files.iter().map(|f| (f.name.clone(), f.format)).collect()
}

fn scenarios() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(repo("tests/fixtures/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn golden_path(model: &str, scenario: &str, file: &str) -> PathBuf {
    repo("tests/golden")
        .join(model)
        .join(format!("{scenario}--{file}"))
}

/// Whether this run rewrites the goldens, from `UPDATE_GOLDEN` and `CI`: only
/// `UPDATE_GOLDEN=1` does, and never under CI; any other value is an error.
fn update_mode(
    update: Option<&std::ffi::OsStr>,
    ci: Option<&std::ffi::OsStr>,
) -> Result<bool, String> {
    let Some(v) = update else {
        return Ok(false);
    };
    if v != "1" {
        return Err(format!(
            "UPDATE_GOLDEN={v:?}: only UPDATE_GOLDEN=1 rewrites the golden files; unset \
             UPDATE_GOLDEN to compare against them"
        ));
    }
    if ci.is_some_and(|c| !c.is_empty()) {
        return Err(
            "UPDATE_GOLDEN=1 is refused when CI is set: golden files are rewritten \
                    on a developer's machine and the diff reviewed, never by CI"
                .into(),
        );
    }
    Ok(true)
}

#[test]
fn update_golden_is_1_only_and_never_under_ci() {
    use std::ffi::OsStr;
    let os = |s: &'static str| Some(OsStr::new(s));
    assert_eq!(update_mode(None, None), Ok(false));
    assert_eq!(update_mode(None, os("true")), Ok(false));
    assert_eq!(update_mode(os("1"), None), Ok(true));
    assert_eq!(update_mode(os("1"), os("")), Ok(true));
    for bad in ["0", "", "true", "yes", "1 ", "01"] {
        let e = update_mode(os(bad), None).unwrap_err();
        assert!(e.contains("UPDATE_GOLDEN"), "{bad:?}: {e}");
    }
    let e = update_mode(os("1"), os("true")).unwrap_err();
    assert!(e.contains("UPDATE_GOLDEN") && e.contains("CI"), "{e}");
}

/// What a run found: files compared (or rewritten), and what differed.
#[derive(Default)]
struct Run {
    update: bool,
    checked: usize,
    mismatches: Vec<String>,
    rewritten: Vec<String>,
}

impl Run {
    /// Compares `bytes` with the golden file at `path`; in update mode, rewrites a file
    /// that differs or is missing instead, and records it.
    fn compare(&mut self, path: &std::path::Path, bytes: &[u8]) {
        let problem = match std::fs::read(path) {
            Ok(want) if want == bytes => return,
            Ok(_) => "differs",
            Err(_) => "is missing",
        };
        if self.update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            self.rewritten
                .push(format!("{} (it {problem})", path.display()));
        } else {
            self.mismatches
                .push(format!("{} {problem}", path.display()));
        }
    }
}

/// True when `sc` applies to model `m` (ATA or phone, port counts).
fn fits(sc: &Value, m: &Value) -> bool {
    let is_ata = m["ata"].as_bool().unwrap_or(false);
    let ports = m["ports"].as_u64().unwrap();
    !(sc.get("ata")
        .and_then(Value::as_bool)
        .is_some_and(|a| a != is_ata)
        || sc
            .get("min_ports")
            .and_then(Value::as_u64)
            .is_some_and(|n| ports < n)
        || sc
            .get("max_ports")
            .and_then(Value::as_u64)
            .is_some_and(|n| ports > n))
}

/// Well-formed to a conforming parser (roxmltree), or a panic naming the file.
fn strict_xml(what: &str, text: &str) {
    if let Err(e) = roxmltree::Document::parse(text) {
        panic!("{what}: not well-formed XML: {e}");
    }
}

/// Checks a served file's contents: never a key twice in its own format, XML with a
/// declaration and well-formed to a conforming parser, the scenario's overrides set.
fn check_contents(id: &str, what: &str, pattern: &str, text: &str, ov: Option<&Value>) {
    let format = formats(id)[pattern];
    let pairs =
        autoprov::render::overlay::pairs(format, text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &pairs {
        assert!(seen.insert(k.clone()), "{what}: {k} twice");
    }
    if format.is_xml() {
        assert!(text.starts_with("<?xml"), "{what}: no XML declaration");
        strict_xml(what, text);
    }
    // The scenario's overrides reached the file that takes them.
    if let Some(ov) = ov.filter(|_| pattern_takes_overrides(id, pattern)) {
        let got: std::collections::HashMap<_, _> = pairs.into_iter().collect();
        for (k, v) in ov.as_object().unwrap() {
            assert_eq!(
                got.get(k).map(String::as_str),
                v.as_str(),
                "{what}: override {k}"
            );
        }
    }
}

/// Runs scenario `sc` on a fresh server for model `m`, then fetches every file the model
/// requests as the phone would, compares it with its golden file and checks its contents.
async fn check_scenario(m: &Value, name: &str, sc: &Value, run: &mut Run) {
    let id = m["id"].as_str().unwrap();
    let s = TestServer::start().await;
    let vendor = m["vendor"].as_str().unwrap();
    let ov = vendor_overrides(vendor);
    for step in sc["steps"].as_array().unwrap() {
        let step = subst(step, id, &ov);
        let method = Method::from_bytes(step[0].as_str().unwrap().as_bytes()).unwrap();
        let (st, body) = s
            .send(method, step[1].as_str().unwrap(), Some(step[2].clone()))
            .await;
        assert!(st.is_success(), "{id}/{name}: {step} → {st} {body}");
    }
    let creds = sc.get("credentials").map(|c| subst(c, id, &ov));
    let creds = match &creds {
        Some(c) => (c[0].as_str().unwrap(), c[1].as_str().unwrap()),
        None => (s.prov.0.as_str(), s.prov.1.as_str()),
    };
    let ua = user_agent(vendor, m["userAgentModel"].as_str().unwrap());
    let takes_overrides = sc["steps"].to_string().contains("{overrides}");
    for f in m["files"].as_array().unwrap() {
        let pattern = f.as_str().unwrap();
        let file = pattern
            .replace("{mac}", MAC)
            .replace("{MAC}", &MAC.to_ascii_uppercase());
        let r = s.fetch_as(&file, Some(creds), Some(&ua)).await;
        assert_eq!(r.status(), StatusCode::OK, "{id}/{name}/{file}");
        let bytes = r.bytes().await.unwrap();
        let golden = pattern.replace("{mac}", "MAC").replace("{MAC}", "MAC");
        run.compare(&golden_path(id, name, &golden), &bytes);
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let what = format!("{id}/{name}/{file}");
        check_contents(id, &what, pattern, &text, takes_overrides.then_some(&ov));
        run.checked += 1;
    }
}

#[tokio::test]
async fn every_model_matches_its_golden_files() {
    let update = update_mode(
        std::env::var_os("UPDATE_GOLDEN").as_deref(),
        std::env::var_os("CI").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let probe = TestServer::start().await;
    let models: Vec<Value> = probe.get("/models").await.1["models"]
        .as_array()
        .unwrap()
        .clone();
    drop(probe);
    let mut run = Run {
        update,
        ..Run::default()
    };
    for m in &models {
        let id = m["id"].as_str().unwrap();
        let mut scenarios_for_model = 0;
        for (name, sc) in scenarios().into_iter().filter(|(_, sc)| fits(sc, m)) {
            scenarios_for_model += 1;
            check_scenario(m, &name, &sc, &mut run).await;
        }
        assert!(
            scenarios_for_model >= 2,
            "{id} is covered by only {scenarios_for_model} scenarios"
        );
    }
    assert!(
        run.mismatches.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to rewrite, then review):\n{}",
        run.mismatches.join("\n")
    );
    assert!(run.checked >= models.len() * 2);
    assert!(
        run.rewritten.is_empty(),
        "UPDATE_GOLDEN=1 rewrote {} golden file(s); review the diff, then run again without \
         UPDATE_GOLDEN:\n{}",
        run.rewritten.len(),
        run.rewritten.join("\n")
    );
}

/// Every shipped XML template's golden files, read straight from disk by a conforming
/// parser: a golden file that does not parse fails here even before the server is asked.
#[test]
fn every_xml_golden_file_is_strictly_well_formed() {
    let mut n = 0;
    for dir in std::fs::read_dir(repo("tests/golden")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if text.starts_with("<?xml") {
                strict_xml(&path.display().to_string(), &text);
                n += 1;
            }
        }
    }
    assert!(n >= 20, "only {n} XML golden files");
}

fn pattern_takes_overrides(model: &str, pattern: &str) -> bool {
    let text = std::fs::read_to_string(repo("models").join(format!("{model}.toml"))).unwrap();
    let m = autoprov::model::Catalogue::parse_model(
        std::path::Path::new("m.toml"),
        model,
        &text,
        &|_| true,
    )
    .unwrap();
    m.files
        .iter()
        .any(|f| f.name == pattern && f.overrides && f.per_phone())
}

#[test]
fn every_model_has_golden_files() {
    for entry in std::fs::read_dir(repo("models")).unwrap() {
        let id = entry
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let dir = repo("tests/golden").join(&id);
        let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(
            n >= 2,
            "model {id} has no golden files in {}",
            dir.display()
        );
    }
}
