//! Hot reload of models and templates (`POST /api/v1/reload`, SIGHUP): the new set is
//! validated whole before it is swapped in, only the phones of changed models re-render,
//! and a bad set is refused naming the file (and line) while the old set keeps serving.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{TestServer, repo};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const YEALINK: &str = "001565000001";
const SNOM: &str = "000413000002";

/// The shipped models and templates, copied where a test may edit them.
struct Files {
    _dir: tempfile::TempDir,
    models: PathBuf,
    templates: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (models, templates) = (dir.path().join("models"), dir.path().join("templates"));
        common::copy_dir(&repo("models"), &models);
        common::copy_dir(&repo("templates"), &templates);
        Files {
            _dir: dir,
            models,
            templates,
        }
    }

    fn edit(&self, path: &Path, from: &str, to: &str) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{} has no {from:?}", path.display());
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    fn edit_template(&self, name: &str, from: &str, to: &str) {
        self.edit(&self.templates.join(name), from, to);
    }

    fn edit_model(&self, id: &str, from: &str, to: &str) {
        self.edit(&self.models.join(format!("{id}.toml")), from, to);
    }
}

/// A server on copied files with a Yealink T46S and a Snom D785 phone, both fetched once.
async fn server(files: &Files) -> TestServer {
    let (m, t) = (files.models.clone(), files.templates.clone());
    let s = TestServer::start_with(move |c| {
        c.models = m;
        c.templates = t;
    })
    .await;
    s.seed_domain("a.example").await;
    s.seed_account("a.example", "100", "100a", YEALINK, "yealink-t46s")
        .await;
    s.seed_account("a.example", "200", "200a", SNOM, "snom-d785")
        .await;
    fetch_yealink(&s).await;
    fetch_snom(&s).await;
    s
}

async fn fetch_ok(s: &TestServer, file: &str) -> (String, String) {
    let (st, etag, body) = s.fetch_text(file).await;
    assert_eq!(st, StatusCode::OK, "{file}: {body}");
    (etag, body)
}

async fn fetch_yealink(s: &TestServer) -> (String, String) {
    fetch_ok(s, &format!("{YEALINK}.cfg")).await
}

async fn fetch_snom(s: &TestServer) -> (String, String) {
    fetch_ok(s, &format!("snomD785-{}.htm", SNOM.to_ascii_uppercase())).await
}

async fn reload(s: &TestServer) -> (StatusCode, Value) {
    s.send(Method::POST, "/reload", None).await
}

async fn model_ids(s: &TestServer) -> Vec<String> {
    let (st, b) = s.get("/models").await;
    assert_eq!(st, StatusCode::OK);
    b["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn template_edit_rerenders_only_that_models_phones() {
    let files = Files::new();
    let s = server(&files).await;
    let (y_etag, y_body) = fetch_yealink(&s).await;
    let (s_etag, s_body) = fetch_snom(&s).await;
    let (common_etag, _) = fetch_ok(&s, "snomD785.htm").await;
    assert!(y_body.contains("## autoprov: Yealink SIP-T46S"), "{y_body}");
    let models = model_ids(&s).await.len();

    files.edit_template("yealink/mac.cfg", "## autoprov:", "## autoprov (reloaded):");
    // Nothing changes before the reload.
    assert_eq!(fetch_yealink(&s).await.0, y_etag);
    let n = s.renders();

    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let changed = ids(&b["changed"]);
    assert!(changed.contains(&"yealink-t46s".to_string()), "{b}");
    assert!(changed.iter().all(|id| id.starts_with("yealink-")), "{b}");
    assert!(!changed.contains(&"snom-d785".to_string()), "{b}");
    assert_eq!(b["models"], json!(models));
    assert_eq!(b["unchanged"], json!(models - changed.len()));
    assert_eq!(b["removed"], json!([]));

    let (y2_etag, y2_body) = fetch_yealink(&s).await;
    assert_ne!(y2_etag, y_etag);
    assert!(
        y2_body.contains("## autoprov (reloaded): Yealink SIP-T46S"),
        "{y2_body}"
    );
    assert_eq!(s.renders(), n + 1, "the Yealink phone re-rendered once");
    let (s2_etag, s2_body) = fetch_snom(&s).await;
    assert_eq!(s2_etag, s_etag);
    assert_eq!(s2_body, s_body);
    assert_eq!(s.renders(), n + 1, "the Snom phone was not re-rendered");
    assert_eq!(fetch_ok(&s, "snomD785.htm").await.0, common_etag);
    assert_eq!(s.renders(), n + 1, "nor the Snom common file");
    // Its conditional fetch still answers 304.
    let r = s
        .client
        .get(format!(
            "{}/snomD785-{}.htm",
            s.url,
            SNOM.to_ascii_uppercase()
        ))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .header("if-none-match", &s_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Reloading an unchanged set changes nothing and renders nothing.
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["changed"], json!([]));
    assert_eq!(b["unchanged"], json!(models));
    assert_eq!(fetch_yealink(&s).await.0, y2_etag);
    assert_eq!(s.renders(), n + 1);
}

#[tokio::test]
async fn a_new_model_file_appears_without_restart() {
    let files = Files::new();
    let s = server(&files).await;
    assert!(!model_ids(&s).await.contains(&"yealink-t46x".to_string()));
    let text = std::fs::read_to_string(files.models.join("yealink-t46s.toml")).unwrap();
    std::fs::write(
        files.models.join("yealink-t46x.toml"),
        text.replace("id = \"yealink-t46s\"", "id = \"yealink-t46x\"")
            .replace("name = \"Yealink SIP-T46S\"", "name = \"Yealink SIP-T46X\""),
    )
    .unwrap();
    let n = s.renders();
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["changed"], json!(["yealink-t46x"]));
    assert!(model_ids(&s).await.contains(&"yealink-t46x".to_string()));
    // Usable at once: a phone of the new model is provisioned and served.
    s.seed_account("a.example", "300", "300a", "001565000003", "yealink-t46x")
        .await;
    let (_, body) = fetch_ok(&s, "001565000003.cfg").await;
    assert!(body.contains("Yealink SIP-T46X"), "{body}");
    // The existing phones kept their renders.
    fetch_yealink(&s).await;
    fetch_snom(&s).await;
    assert_eq!(s.renders(), n + 1);

    // And a removed model file is reported as removed.
    std::fs::remove_file(files.models.join("yealink-t46x.toml")).unwrap();
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["removed"], json!(["yealink-t46x"]));
    assert_eq!(b["changed"], json!([]));
}

/// After a refused reload the old set is still served and nothing re-rendered.
async fn assert_old_set(s: &TestServer, etags: (&str, &str), n: u64, models: usize) {
    assert_eq!(fetch_yealink(s).await.0, etags.0);
    assert_eq!(fetch_snom(s).await.0, etags.1);
    assert_eq!(s.renders(), n);
    assert_eq!(model_ids(s).await.len(), models);
}

#[tokio::test]
async fn a_template_syntax_error_is_refused_naming_file_and_line() {
    let files = Files::new();
    let s = server(&files).await;
    let (y, sn) = (fetch_yealink(&s).await.0, fetch_snom(&s).await.0);
    let (n, models) = (s.renders(), model_ids(&s).await.len());
    // Line 3 of the template becomes a broken tag.
    files.edit_template(
        "yealink/mac.cfg",
        "{%- set transport_code",
        "{% for x in %}\n{%- set transport_code",
    );
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let e = &b["error"];
    assert_eq!(e["code"], "invalid_set", "{b}");
    let file = e["file"].as_str().unwrap();
    assert!(file.ends_with("yealink/mac.cfg"), "{b}");
    assert_eq!(e["line"], json!(3), "{b}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("yealink/mac.cfg:3:"), "{b}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert_old_set(&s, (&y, &sn), n, models).await;
}

#[tokio::test]
async fn a_template_that_fails_to_render_is_refused_naming_file_and_line() {
    let files = Files::new();
    let s = server(&files).await;
    let (y, sn) = (fetch_yealink(&s).await.0, fetch_snom(&s).await.0);
    let (n, models) = (s.renders(), model_ids(&s).await.len());
    // Parses, but fails on the sample phone: an undefined variable on line 2.
    files.edit_template("snom/phone.xml", "\n", "\n{{ no_such_thing.x }}\n");
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let e = &b["error"];
    assert!(
        e["file"].as_str().unwrap().ends_with("snom/phone.xml"),
        "{b}"
    );
    assert_eq!(e["line"], json!(2), "{b}");
    assert!(
        e["message"].as_str().unwrap().contains("snom-"),
        "names the model: {b}"
    );
    assert_old_set(&s, (&y, &sn), n, models).await;
}

#[tokio::test]
async fn a_model_with_a_bad_field_is_refused_naming_file_and_field() {
    let files = Files::new();
    let s = server(&files).await;
    let (y, sn) = (fetch_yealink(&s).await.0, fetch_snom(&s).await.0);
    let (n, models) = (s.renders(), model_ids(&s).await.len());
    files.edit_model("snom-d735", "ports = ", "ports = 0 #");
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let e = &b["error"];
    assert!(
        e["file"].as_str().unwrap().ends_with("snom-d735.toml"),
        "{b}"
    );
    assert_eq!(e["field"], "ports", "{b}");
    let text = std::fs::read_to_string(files.models.join("snom-d735.toml")).unwrap();
    let line = text.lines().position(|l| l.starts_with("ports")).unwrap() + 1;
    assert_eq!(e["line"], json!(line), "{b}");
    assert_old_set(&s, (&y, &sn), n, models).await;

    // A TOML syntax error names the line and column.
    files.edit_model("snom-d735", "ports = 0 #", "ports = = ");
    let (st, b) = reload(&s).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        b["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("snom-d735.toml"),
        "{b}"
    );
    assert_eq!(b["error"]["line"], json!(line), "{b}");
    assert_old_set(&s, (&y, &sn), n, models).await;

    // Fixed: the next reload goes through.
    files.edit_model("snom-d735", "ports = = ", "ports = ");
    assert_eq!(reload(&s).await.0, StatusCode::OK);
}

#[tokio::test]
async fn only_the_server_wide_token_may_reload() {
    let files = Files::new();
    let s = server(&files).await;
    let (st, b) = s.post("/tokens", json!({"domain": "a.example"})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let domain_token = b["token"].as_str().unwrap();
    let r = s
        .client
        .post(format!("{}/api/v1/reload", s.url))
        .bearer_auth(domain_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .client
        .post(format!("{}/api/v1/reload", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (st, _) = s.get("/reload").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn concurrent_reloads_run_one_at_a_time() {
    let files = Files::new();
    let s = server(&files).await;
    files.edit_template("snom/phone.xml", "\n", "\n<!-- reloaded -->\n");
    let (a, b) = tokio::join!(reload(&s), reload(&s));
    one_after_the_other(a, b);
}

/// Two reloads after one template edit both succeed and ran one after the other: the
/// second saw the first's set, so exactly one of them reports the change.
fn one_after_the_other(a: (StatusCode, Value), b: (StatusCode, Value)) {
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let mut reported = vec![ids(&a.1["changed"]), ids(&b.1["changed"])];
    reported.sort();
    assert!(reported[0].is_empty(), "{reported:?}");
    assert!(
        reported[1].contains(&"snom-d785".to_string()),
        "{reported:?}"
    );
}

/// A reload that finds another running waits for it: with the lock held by the test, two
/// reloads cannot finish; once it is let go they run one after the other.
#[tokio::test]
async fn a_reload_waits_while_another_holds_the_lock() {
    let files = Files::new();
    let s = server(&files).await;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let state = s.state.clone();
    let holder = std::thread::spawn(move || {
        let _held = state.live.lock.lock().unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    locked_rx.recv().unwrap();
    let mut both = Box::pin(async { tokio::join!(reload(&s), reload(&s)) });
    // Correct code can never finish here; without the lock both reloads would.
    let early = tokio::time::timeout(std::time::Duration::from_secs(2), &mut both).await;
    assert!(
        early.is_err(),
        "a reload ran while another held the lock: {early:?}"
    );
    files.edit_template("snom/phone.xml", "\n", "\n<!-- reloaded -->\n");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let (a, b) = both.await;
    one_after_the_other(a, b);
}

#[test]
fn sighup_reloads_through_the_binary() {
    let files = Files::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, lines) = common::spawn_binary(
        common::binary_command(
            &[],
            &dir.path().join("data"),
            &files.models,
            &files.templates,
        )
        .stderr(Stdio::piped()),
    );
    // The log (stderr), line by line, for the reload line.
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(l);
        }
    });
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let token = token.trim().to_string();
    let creds = std::fs::read_to_string(dir.path().join("data/provisioning-credentials")).unwrap();
    let (user, pass) = creds.trim().split_once(':').unwrap();
    let (user, pass) = (user.to_string(), pass.to_string());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();
    let fetch = || {
        let (c, url, user, pass) = (c.clone(), url.clone(), user.clone(), pass.clone());
        async move {
            let r = c
                .get(format!("{url}/{YEALINK}.cfg"))
                .basic_auth(user, Some(pass))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap()
        }
    };
    rt.block_on(async {
        let put = |path: String, body: Value| {
            c.put(format!("{url}/api/v1{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        let r = put(
            "/domains/a.example".into(),
            json!({"defaults": {"device-provisioning-registration-core-server": "sip.a.example"}}),
        )
        .await
        .unwrap();
        assert!(r.status().is_success());
        let r = put(
            "/domains/a.example/users/100/devices/100a".into(),
            json!({
                "device-sip-registration-password": "pw-100a",
                "device-models-model": "yealink-t46s",
                "device-provisioning-mac-address": YEALINK,
            }),
        )
        .await
        .unwrap();
        assert!(r.status().is_success());
        assert!(fetch().await.contains("## autoprov: Yealink"));
    });

    files.edit_template("yealink/mac.cfg", "## autoprov:", "## autoprov (sighup):");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The reload runs in the background: poll (bounded) until the new template serves.
    let served = rt.block_on(async {
        for _ in 0..200 {
            if fetch().await.contains("## autoprov (sighup): Yealink") {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    });
    assert!(served, "the template change took effect after SIGHUP");
    // One log line for the reload, naming the trigger and the changed models.
    // Collect until 1 s after the first reload line (10 s at most), so a second line would
    // be seen.
    let mut deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut reload_lines = Vec::new();
    while let Ok(l) =
        log_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if l.contains("reloaded") || l.contains("reload failed") {
            if reload_lines.is_empty() {
                deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            }
            reload_lines.push(l);
        }
    }
    assert_eq!(reload_lines.len(), 1, "{reload_lines:?}");
    assert!(reload_lines[0].contains("SIGHUP"), "{reload_lines:?}");
    assert!(reload_lines[0].contains("yealink-t46s"), "{reload_lines:?}");
    // Still alive and still shuts down cleanly.
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// A server on `config` (in-process, like `TestServer`), for tests that restart on one data
/// folder: url, admin token, provisioning credentials, state, shutdown.
async fn start_on(
    config: &autoprov::config::Config,
) -> (
    String,
    String,
    (String, String),
    autoprov::AppState,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    // The previous server's last handles may still be dropping: retry the open briefly.
    let mut tries = 0;
    let (state, _) = loop {
        match autoprov::init(config) {
            Ok(s) => break s,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{}", autoprov::render::error_chain(&e)),
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(autoprov::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    let token = std::fs::read_to_string(config.data.join("admin-token")).unwrap();
    let creds = std::fs::read_to_string(config.data.join("provisioning-credentials")).unwrap();
    let (u, p) = creds.trim().split_once(':').unwrap();
    (
        url,
        token.trim().to_string(),
        (u.to_string(), p.to_string()),
        state,
        tx,
        task,
    )
}

#[tokio::test]
async fn restarts_keep_valid_renders_and_never_serve_stale_ones() {
    let files = Files::new();
    let data = tempfile::tempdir().unwrap();
    let config = autoprov::config::Config::for_test(
        data.path().join("data"),
        files.models.clone(),
        files.templates.clone(),
    );
    let c = reqwest::Client::new();
    let fetch = |url: &str, creds: &(String, String)| {
        c.get(format!("{url}/{YEALINK}.cfg"))
            .basic_auth(&creds.0, Some(&creds.1))
            .send()
    };

    // First run: a phone, fetched once; then a reload of an edited template.
    let (url, token, creds, state, stop, task) = start_on(&config).await;
    for (path, body) in [
        ("/domains/a.example", json!({})),
        (
            "/domains/a.example/users/100/devices/100a",
            json!({"device-sip-registration-password": "pw-100a",
                   "device-models-model": "yealink-t46s",
                   "device-provisioning-mac-address": YEALINK}),
        ),
    ] {
        let r = c
            .put(format!("{url}/api/v1{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}");
    }
    assert_eq!(fetch(&url, &creds).await.unwrap().status(), StatusCode::OK);
    files.edit_template("yealink/mac.cfg", "## autoprov:", "## autoprov (v2):");
    let r = c
        .post(format!("{url}/api/v1/reload"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = fetch(&url, &creds).await.unwrap();
    let v2_etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(r.text().await.unwrap().contains("## autoprov (v2):"));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    drop(state);

    // Restart with the same files: the render made after the reload is still valid.
    let (url, _, creds, state, stop, task) = start_on(&config).await;
    let r = fetch(&url, &creds).await.unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), v2_etag);
    assert_eq!(
        state.cache.render_count(),
        0,
        "served from the stored render"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    drop(state);

    // Restart with a template changed while stopped: the stored render is not served.
    files.edit_template("yealink/mac.cfg", "## autoprov (v2):", "## autoprov (v3):");
    let (url, _, creds, state, stop, task) = start_on(&config).await;
    let r = fetch(&url, &creds).await.unwrap();
    assert_ne!(r.headers()["etag"].to_str().unwrap(), v2_etag);
    assert!(r.text().await.unwrap().contains("## autoprov (v3):"));
    assert_eq!(state.cache.render_count(), 1);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
