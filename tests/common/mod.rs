//! Test harness: starts the real server in-process on 127.0.0.1:0 with a temp store and
//! the shipped models/templates, through the same `init` + `serve` path as `main`.
#![allow(dead_code)]

use std::path::PathBuf;

use autoprov::AppState;
use autoprov::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub token: String,
    pub prov: (String, String),
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub dir: tempfile::TempDir,
}

pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The real binary listening on 127.0.0.1:0 with its data in `data` and the given models
/// and templates (`repo("models")`, `repo("templates")`: the shipped ones), `args` first;
/// stdout piped (see [`spawn_binary`]), stderr to be set by the caller.
pub fn binary_command(
    args: &[&str],
    data: &std::path::Path,
    models: &std::path::Path,
    templates: &std::path::Path,
) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_autoprov"));
    c.args(args)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--models")
        .arg(models)
        .arg("--templates")
        .arg(templates)
        .stdout(std::process::Stdio::piped());
    c
}

/// The rest of a spawned binary's stdout, line by line.
pub type StdoutLines = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// Spawns `cmd` (from [`binary_command`]) and reads the URL it listens on from its first
/// line: the child, the URL, and the rest of its stdout.
pub fn spawn_binary(cmd: &mut std::process::Command) -> (std::process::Child, String, StdoutLines) {
    use std::io::BufRead;
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    (child, url, lines)
}

/// Copies a folder tree (models and templates a test edits).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// The test configuration with its data folder in `dir` (the shipped models and templates).
pub fn config_in(dir: &std::path::Path) -> Config {
    Config::for_test(dir.join("data"), repo("models"), repo("templates"))
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config =
            Config::for_test(dir.path().join("data"), repo("models"), repo("templates"));
        tweak(&mut config);
        let (state, startup) = autoprov::init(&config).expect("init");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(autoprov::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        let token = startup.new_admin_token.expect("fresh store makes a token");
        let prov = startup
            .new_provisioning_credentials
            .expect("fresh store makes credentials");
        TestServer {
            url,
            state,
            token,
            prov,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            dir,
        }
    }

    /// An admin request with the bearer token.
    pub fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// Sends `body` as JSON; returns status and parsed body (Null when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send_as(&self.token, method, path, body).await
    }

    /// Like [`send`](Self::send) with another bearer token.
    pub async fn send_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .client
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().await.expect("send");
        let status = r.status();
        let text = r.text().await.expect("body");
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// A phone's fetch with the server-default credentials.
    pub async fn fetch(&self, file: &str) -> reqwest::Response {
        self.fetch_as(file, Some((&self.prov.0, &self.prov.1)), None)
            .await
    }

    pub async fn fetch_as(
        &self,
        file: &str,
        creds: Option<(&str, &str)>,
        ua: Option<&str>,
    ) -> reqwest::Response {
        let mut rb = self.client.get(format!("{}/{file}", self.url));
        if let Some((u, p)) = creds {
            rb = rb.basic_auth(u, Some(p));
        }
        if let Some(ua) = ua {
            rb = rb.header("user-agent", ua);
        }
        rb.send().await.expect("fetch")
    }

    /// Fetches and returns (status, etag, body).
    pub async fn fetch_text(&self, file: &str) -> (StatusCode, String, String) {
        let r = self.fetch(file).await;
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        (status, etag, r.text().await.unwrap_or_default())
    }

    /// Every stored record (not the render cache).
    pub fn dump(&self) -> Value {
        self.state.store.dump().expect("dump")
    }

    pub fn renders(&self) -> u64 {
        self.state.cache.render_count()
    }

    /// A domain with a SIP server.
    pub async fn seed_domain(&self, domain: &str) {
        let (s, b) = self
            .put(&format!("/domains/{domain}"), serde_json::json!({"defaults": {"device-provisioning-registration-core-server": format!("sip.{domain}")}}))
            .await;
        assert!(s.is_success(), "{s} {b}");
    }

    /// An account linked to `mac` as `model`.
    pub async fn seed_account(
        &self,
        domain: &str,
        user: &str,
        device: &str,
        mac: &str,
        model: &str,
    ) -> Value {
        let (s, b) = self
            .put(
                &format!("/domains/{domain}/users/{user}/devices/{device}"),
                serde_json::json!({
                    "device-sip-registration-password": format!("pw-{device}"),
                    "device-models-model": model,
                    "device-provisioning-mac-address": mac,
                }),
            )
            .await;
        assert!(s.is_success(), "{s} {b}");
        b
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What a run of the binary gave.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `autoprov args…` with the shipped models and templates (and no `AUTOPROV_*` from
/// the environment), off the async workers.
pub async fn autoprov_cli(args: Vec<String>) -> Ran {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
            .args(&args)
            .arg("--models")
            .arg(repo("models"))
            .arg("--templates")
            .arg(repo("templates"))
            .env_remove("AUTOPROV_URL")
            .env_remove("AUTOPROV_TOKEN")
            .env_remove("AUTOPROV_DATA")
            .env_remove("RUST_LOG")
            .output()
            .expect("run autoprov");
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

/// The real binary serving a data folder (the shipped models and templates), with the
/// provisioning credentials its phones use.
pub struct Served {
    child: std::process::Child,
    _stdout: StdoutLines,
    pub url: String,
    pub prov: (String, String),
}

impl Served {
    /// Serves `data`; the credentials are read from `creds`'s `provisioning-credentials`
    /// (a folder restored from an export has none of its own).
    pub fn start(data: &std::path::Path, creds: &std::path::Path) -> Self {
        let (child, url, stdout) = spawn_binary(
            binary_command(&[], data, &repo("models"), &repo("templates"))
                .stderr(std::process::Stdio::null()),
        );
        let text = std::fs::read_to_string(creds.join("provisioning-credentials")).expect("creds");
        let (user, pass) = text.trim().split_once(':').expect("user:password");
        Served {
            child,
            _stdout: stdout,
            url,
            prov: (user.into(), pass.into()),
        }
    }

    /// A phone's fetch of `file`: status, ETag, body.
    pub async fn fetch(&self, file: &str) -> (StatusCode, String, String) {
        let r = reqwest::Client::new()
            .get(format!("{}/{file}", self.url))
            .basic_auth(&self.prov.0, Some(&self.prov.1))
            .send()
            .await
            .expect("fetch");
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        (r.status(), etag, r.text().await.expect("body"))
    }

    /// SIGTERM, a graceful shutdown (renders written, the store flushed), and a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "the server exited with {status:?}");
    }
}

/// Every `.rs` file under `dir`, for the tests that read the source (architecture, secrets).
pub fn rust_sources(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
