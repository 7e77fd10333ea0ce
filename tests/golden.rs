//! Golden files: for every shipped model and every scenario that fits it, the exact bytes a
//! phone receives for each file the model requests. `UPDATE_GOLDEN=1 cargo test --test
//! golden` rewrites them; review the diff like code.

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

#[tokio::test]
async fn every_model_matches_its_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let probe = TestServer::start().await;
    let models: Vec<Value> = probe.get("/models").await.1["models"]
        .as_array()
        .unwrap()
        .clone();
    drop(probe);
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for m in &models {
        let id = m["id"].as_str().unwrap();
        let ports = m["ports"].as_u64().unwrap();
        let mut scenarios_for_model = 0;
        for (name, sc) in scenarios() {
            let is_ata = m["ata"].as_bool().unwrap_or(false);
            if sc
                .get("ata")
                .and_then(Value::as_bool)
                .is_some_and(|a| a != is_ata)
                || sc
                    .get("min_ports")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| ports < n)
                || sc
                    .get("max_ports")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| ports > n)
            {
                continue;
            }
            scenarios_for_model += 1;
            let s = TestServer::start().await;
            let vendor = m["vendor"].as_str().unwrap();
            let ov = vendor_overrides(vendor);
            let fmts = formats(id);
            for step in sc["steps"].as_array().unwrap() {
                let step = subst(step, id, &ov);
                let method = Method::from_bytes(step[0].as_str().unwrap().as_bytes()).unwrap();
                let (st, body) = s
                    .send(method, step[1].as_str().unwrap(), Some(step[2].clone()))
                    .await;
                assert!(st.is_success(), "{id}/{name}: {step} → {st} {body}");
            }
            let creds = sc.get("credentials").map(|c| subst(c, id, &ov));
            let ua = user_agent(vendor, m["userAgentModel"].as_str().unwrap());
            for f in m["files"].as_array().unwrap() {
                let pattern = f.as_str().unwrap();
                let file = pattern
                    .replace("{mac}", MAC)
                    .replace("{MAC}", &MAC.to_ascii_uppercase());
                let r = match &creds {
                    Some(c) => {
                        s.fetch_as(
                            &file,
                            Some((c[0].as_str().unwrap(), c[1].as_str().unwrap())),
                            Some(&ua),
                        )
                        .await
                    }
                    None => {
                        s.fetch_as(&file, Some((&s.prov.0, &s.prov.1)), Some(&ua))
                            .await
                    }
                };
                assert_eq!(r.status(), StatusCode::OK, "{id}/{name}/{file}");
                let bytes = r.bytes().await.unwrap();
                let path = golden_path(
                    id,
                    &name,
                    &pattern.replace("{mac}", "MAC").replace("{MAC}", "MAC"),
                );
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &bytes).unwrap();
                } else {
                    match std::fs::read(&path) {
                        Ok(want) if want == bytes.as_ref() => {}
                        Ok(_) => mismatches.push(format!("{} differs", path.display())),
                        Err(_) => mismatches.push(format!("{} is missing", path.display())),
                    }
                }
                // Never a key twice, in the file's own format; XML parses (quick-xml).
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                let format = fmts[pattern];
                let pairs = autoprov::render::overlay::pairs(format, &text)
                    .unwrap_or_else(|e| panic!("{id}/{name}/{file}: {e}"));
                let mut seen = std::collections::HashSet::new();
                for (k, _) in &pairs {
                    assert!(seen.insert(k.clone()), "{id}/{name}/{file}: {k} twice");
                }
                if format.is_xml() {
                    assert!(
                        text.starts_with("<?xml"),
                        "{id}/{name}/{file}: no XML declaration"
                    );
                    let mut reader = quick_xml::Reader::from_str(&text);
                    loop {
                        match reader.read_event() {
                            Ok(quick_xml::events::Event::Eof) => break,
                            Ok(_) => {}
                            Err(e) => panic!("{id}/{name}/{file}: malformed XML: {e}"),
                        }
                    }
                }
                // The scenario's overrides reached the file that takes them.
                if sc["steps"].to_string().contains("{overrides}")
                    && pattern_takes_overrides(id, pattern)
                {
                    let got: std::collections::HashMap<_, _> = pairs.into_iter().collect();
                    for (k, v) in ov.as_object().unwrap() {
                        assert_eq!(
                            got.get(k).map(String::as_str),
                            v.as_str(),
                            "{id}/{name}/{file}: override {k}"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(
            scenarios_for_model >= 2,
            "{id} is covered by only {scenarios_for_model} scenarios"
        );
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to rewrite, then review):\n{}",
        mismatches.join("\n")
    );
    assert!(checked >= models.len() * 2);
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
