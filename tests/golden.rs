//! Golden files: for every shipped model and every scenario that fits it, the exact bytes a
//! phone receives for each file the model requests. `UPDATE_GOLDEN=1 cargo test --test
//! golden` rewrites them; review the diff like code.

mod common;

use std::path::PathBuf;

use common::{TestServer, repo};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const MAC: &str = "001565a1b2c3";

fn subst(v: &Value, model: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{mac}", MAC).replace("{model}", model)),
        Value::Array(a) => Value::Array(a.iter().map(|x| subst(x, model)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), subst(x, model)))
                .collect(),
        ),
        other => other.clone(),
    }
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
            if sc
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
            for step in sc["steps"].as_array().unwrap() {
                let step = subst(step, id);
                let method = Method::from_bytes(step[0].as_str().unwrap().as_bytes()).unwrap();
                let (st, body) = s
                    .send(method, step[1].as_str().unwrap(), Some(step[2].clone()))
                    .await;
                assert!(st.is_success(), "{id}/{name}: {step} → {st} {body}");
            }
            let creds = sc.get("credentials").map(|c| subst(c, id));
            // As the phone sends it: `Yealink SIP-T46S 66.86.0.15 00:15:65:a1:b2:c3`.
            let ua = format!(
                "{} {} 66.86.0.15 00:15:65:a1:b2:c3",
                m["vendor"].as_str().unwrap(),
                m["userAgentModel"].as_str().unwrap()
            );
            for f in m["files"].as_array().unwrap() {
                let file = f.as_str().unwrap().replace("{mac}", MAC);
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
                let path = golden_path(id, &name, &f.as_str().unwrap().replace("{mac}", "MAC"));
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
                // key = value files: never a key twice.
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                let mut seen = std::collections::HashSet::new();
                for line in text.lines() {
                    if let Some(k) = autoprov::render::overlay::kv_key(line) {
                        assert!(seen.insert(k.to_string()), "{id}/{name}/{file}: {k} twice");
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
