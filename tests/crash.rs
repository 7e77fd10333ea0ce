//! Crash safety and the recovery path, through the real binary: `export` → `import` →
//! `export` is byte-identical and the restored server serves the same files; bad exports
//! are refused naming the problem without touching the store; a damaged store refuses to
//! start and says how to restore; SIGKILL while writes stream loses no acknowledged write.

mod crashkit;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use rand::RngExt;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_autoprov");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn setup(dir: &Path, name: &str) -> crashkit::Setup {
    crashkit::Setup {
        bin: BIN.into(),
        repo: repo(),
        data: dir.join(name),
        log: dir.join(format!("{name}.log")),
    }
}

/// Runs the binary (no autoprov.toml: the cwd is `dir`).
fn run(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut c = std::process::Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let mut child = c.spawn().expect("spawn");
    if let Some(b) = stdin {
        child.stdin.take().unwrap().write_all(b).unwrap();
    }
    child.wait_with_output().expect("wait")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn export(dir: &Path, data: &Path) -> Vec<u8> {
    let o = run(dir, &["export", "--data", data.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    o.stdout
}

async fn send(srv: &crashkit::Server, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", srv.url))
        .bearer_auth(&srv.token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn get_text(srv: &crashkit::Server, path: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1{path}", srv.url))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.text().await.unwrap()
}

/// A store with two domains (one with provisioning credentials), accounts with settings,
/// and phones with members and overrides; the server is SIGKILLed afterwards.
async fn seed(s: &crashkit::Setup) {
    use reqwest::Method;
    let srv = crashkit::start(s).await.unwrap();
    send(&srv, Method::PUT, "/domains/example.com", json!({"defaults": {"device-provisioning-registration-core-server": "sip.example.com"},
        "device-provisioning-username": "dom-user", "device-provisioning-password": "Dom-Secret-1"})).await;
    send(
        &srv,
        Method::PUT,
        "/domains/other.org",
        json!({"defaults": {"device-provisioning-sip-transport-protocol": "tcp"}}),
    )
    .await;
    for (user, dev) in [("1004", "1004a"), ("1005", "1005a"), ("1006", "1006a")] {
        send(&srv, Method::PUT, &format!("/domains/example.com/users/{user}/devices/{dev}"),
            json!({"device-sip-registration-password": format!("Secret-{dev}"), "device-srtp-enabled": "opportunistic",
                   "caller-id-number-emergency": "+4930123456"})).await;
    }
    send(&srv, Method::PUT, "/domains/other.org/users/200/devices/200a",
        json!({"device-sip-registration-password": "Ünïcode-Pässword \"quoted\"", "device-models-model": "yealink-t46s",
               "device-provisioning-mac-address": "00:15:65:00:02:00"})).await;
    send(
        &srv,
        Method::PUT,
        "/phones/001565aabbcc",
        json!({"device-models-model": "yealink-t46s", "domain": "example.com",
        "device-provisioning-overrides": {"account.1.label": "Desk", "custom.new.key": "1"}}),
    )
    .await;
    send(
        &srv,
        Method::PUT,
        "/phones/001565aabbcc/members",
        json!({"members": [
        {"port": 1, "id": "1004a@example.com", "lineLabel": "Reception", "primaryOwner": true},
        {"port": 2, "id": "1005a@example.com", "lineLabel": "Sales"}]}),
    )
    .await;
    send(
        &srv,
        Method::PUT,
        "/phones/001565aabbcd",
        json!({"device-models-model": "yealink-t46s", "domain": "example.com",
        "device-provisioning-username": "ph-user", "device-provisioning-password": "Ph-Secret-2"}),
    )
    .await;
    send(
        &srv,
        Method::PUT,
        "/phones/001565aabbcd/members",
        json!({"members": [{"port": 1, "id": "1006a@example.com", "primaryOwner": true}]}),
    )
    .await;
    srv.kill().await;
}

#[tokio::test]
async fn export_import_export_is_byte_identical_and_the_restored_server_serves_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (setup(dir.path(), "a"), setup(dir.path(), "b"));
    seed(&a).await;

    let file = dir.path().join("dump.json");
    let o = run(
        dir.path(),
        &["export", "--data", "a", "--output", file.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read(&file).unwrap();
    assert_eq!(first, export(dir.path(), &a.data), "file and stdout agree");
    let doc: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        (doc["format"].as_str(), doc["version"].as_u64()),
        (Some("autoprov-export"), Some(1))
    );
    for tree in ["domains", "accounts", "phones", "phones_by_domain", "meta"] {
        assert!(
            doc["trees"][tree].as_array().is_some_and(|t| !t.is_empty()),
            "{tree}"
        );
    }
    assert!(doc["trees"].get("renders").is_none());
    let text = String::from_utf8(first.clone()).unwrap();
    assert!(
        text.contains("\"lineLabel\": \"Reception\""),
        "records are embedded as JSON"
    );
    assert!(text.contains("Ünïcode-Pässword \\\"quoted\\\""));

    // Into an empty data folder (stdin this time), then export again: the same bytes.
    let o = run(dir.path(), &["import", "--data", "b", "-"], Some(&first));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 domains, 4 accounts, 3 phones"),
        "{}",
        stderr(&o)
    );
    assert_eq!(export(dir.path(), &b.data), first);

    // The restored server takes the old admin token and renders the same files.
    std::fs::copy(a.data.join("admin-token"), b.data.join("admin-token")).unwrap();
    let mut files = Vec::new();
    for s in [&a, &b] {
        let srv = crashkit::start(s).await.unwrap();
        let mut got = Vec::new();
        for mac in ["001565aabbcc", "001565aabbcd", "001565000200"] {
            got.push(get_text(&srv, &format!("/phones/{mac}/files/{mac}.cfg")).await);
            got.push(get_text(&srv, &format!("/phones/{mac}")).await);
        }
        got.push(get_text(&srv, "/domains/example.com/users/1005/devices/1005a").await);
        srv.kill().await;
        files.push(got);
    }
    assert!(
        files[0][0].contains("account.2.label = Sales"),
        "{}",
        files[0][0]
    );
    assert_eq!(files[0], files[1]);
}

#[tokio::test]
async fn bad_exports_are_refused_naming_the_problem_and_the_store_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let a = setup(dir.path(), "a");
    seed(&a).await;
    let good = export(dir.path(), &a.data);
    let mut doc: Value = serde_json::from_slice(&good).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, Vec<&str>)> = Vec::new();
    let mut cut = String::from_utf8(good.clone()).unwrap();
    cut.truncate(cut.len() / 2);
    cases.push((
        "truncated",
        cut.into_bytes(),
        vec!["not valid JSON at line", "column"],
    ));
    cases.push((
        "not-json",
        b"{\n  \"format\": autoprov\n}".to_vec(),
        vec!["not valid JSON at line 2"],
    ));
    let mut v2 = doc.clone();
    v2["version"] = json!(2);
    cases.push((
        "version",
        serde_json::to_vec(&v2).unwrap(),
        vec!["version", "export version 2 is not supported"],
    ));
    let mut other = doc.clone();
    other["format"] = json!("something-else");
    cases.push((
        "format",
        serde_json::to_vec(&other).unwrap(),
        vec!["format", "not an autoprov export"],
    ));
    // A phone record whose model is a number: named by tree, index and key.
    let phones = doc["trees"]["phones"].as_array_mut().unwrap();
    phones[1]["record"]["model"] = json!(46);
    let key = phones[1]["key-hex"].as_str().unwrap().to_string();
    cases.push((
        "record",
        serde_json::to_vec(&doc).unwrap(),
        vec![
            "trees.phones[1]",
            key.as_str(),
            "not a valid phones record",
            "invalid type",
        ],
    ));

    let before = export(dir.path(), &a.data);
    for (name, bytes, needles) in &cases {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, bytes).unwrap();
        for target in ["a", "fresh"] {
            let o = run(
                dir.path(),
                &[
                    "import",
                    "--data",
                    target,
                    "--replace",
                    path.to_str().unwrap(),
                ],
                None,
            );
            assert!(!o.status.success(), "{name}");
            let e = stderr(&o);
            assert!(
                e.contains(path.to_str().unwrap()),
                "{name}: names the file: {e}"
            );
            for n in needles {
                assert!(e.contains(n), "{name}: {n:?} in {e}");
            }
        }
        assert_eq!(
            export(dir.path(), &a.data),
            before,
            "{name}: store unchanged"
        );
        assert!(
            !dir.path().join("fresh/store").exists(),
            "{name}: nothing created"
        );
    }
}

#[tokio::test]
async fn import_into_a_store_with_data_needs_replace() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (setup(dir.path(), "a"), setup(dir.path(), "b"));
    seed(&a).await;
    let dump_a = export(dir.path(), &a.data);
    let file = dir.path().join("a.json");
    std::fs::write(&file, &dump_a).unwrap();
    // b: a started server (fresh token, credentials) with one domain of its own.
    let srv = crashkit::start(&b).await.unwrap();
    send(&srv, reqwest::Method::PUT, "/domains/mine.net", json!({})).await;
    // While it runs, the store is locked, and the tools say so.
    let o = run(dir.path(), &["export", "--data", "b"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is autoprov running on this data dir? stop it first"),
        "{}",
        stderr(&o)
    );
    srv.kill().await;

    let before = export(dir.path(), &b.data);
    let o = run(
        dir.path(),
        &["import", "--data", "b", file.to_str().unwrap()],
        None,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already holds data") && stderr(&o).contains("--replace"),
        "{}",
        stderr(&o)
    );
    assert_eq!(export(dir.path(), &b.data), before);

    let o = run(
        dir.path(),
        &["import", "--data", "b", "--replace", file.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let after = export(dir.path(), &b.data);
    assert_eq!(after, dump_a, "replaced, nothing of b left");
    assert!(!String::from_utf8(after).unwrap().contains("mine.net"));
}

#[test]
fn a_damaged_store_refuses_to_start_and_says_how_to_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A store with data, stopped.
    let o = run(
        dir.path(),
        &["import", "--data", "data", "-"],
        Some(
            br#"{"format":"autoprov-export","version":1,"schema":1,
        "trees":{"domains":[{"key":"example.com","record":{"name":"example.com"}}],
        "meta":[{"key":"admin_token_sha256","hex":"00"}]}}"#,
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(data.join("admin-token"), "t\n").unwrap();
    let serve = |d: &str| {
        run(
            dir.path(),
            &[
                "--listen",
                "127.0.0.1:0",
                "--data",
                d,
                "--models",
                repo().join("models").to_str().unwrap(),
                "--templates",
                repo().join("templates").to_str().unwrap(),
            ],
            None,
        )
    };
    let copy = |to: &str| {
        std::fs::create_dir_all(dir.path().join(to).join("store")).unwrap();
        for f in std::fs::read_dir(data.join("store")).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                std::fs::copy(
                    f.path(),
                    dir.path().join(to).join("store").join(f.file_name()),
                )
                .unwrap();
            }
        }
        std::fs::copy(
            data.join("admin-token"),
            dir.path().join(to).join("admin-token"),
        )
        .unwrap();
        dir.path().join(to)
    };

    // A damaged snapshot file: sled refuses to open.
    let d1 = copy("snap");
    std::fs::write(d1.join("store/snap.0000000000000100"), vec![0xa5u8; 300]).unwrap();
    let o = serve("snap");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("cannot open the store at"), "{e}");
    assert!(
        e.contains("autoprov import --data") && e.contains("mv "),
        "{e}"
    );
    assert!(e.contains("corrupt"), "{e}");

    // A log that is garbage: sled opens it empty; the token file gives that away.
    let d2 = copy("garbage");
    let len = std::fs::metadata(d2.join("store/db")).unwrap().len() as usize;
    std::fs::write(d2.join("store/db"), vec![0x5au8; len]).unwrap();
    let o = serve("garbage");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("opened empty") && e.contains("autoprov import --data"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(d2.join("admin-token")).unwrap(),
        "t\n",
        "the token file is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writes_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path(), "data");
    let ledger = Arc::new(Mutex::new(crashkit::Ledger::default()));
    let mut acked = 0;
    for n in 0..3 {
        let ms = rand::rng().random_range(300..=900);
        let (c, lost) = crashkit::cycle(&s, n, ms, 3, &ledger).await.unwrap();
        assert!(lost.is_empty(), "cycle {n}: {lost:#?}");
        acked += c.streamed.acked;
    }
    let l = ledger.lock().unwrap();
    assert_eq!(l.rejected, 0, "{:?}", l.rejected_samples);
    assert!(acked > 0 && l.acked == acked, "{acked}");
    assert!(!l.expect.is_empty());
}
