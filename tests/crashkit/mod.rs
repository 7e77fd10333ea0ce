//! Kill-and-restart harness shared by `tests/crash.rs` (3 cycles) and
//! `examples/crashloop.rs` (the long loop behind `scripts/crash-loop.sh`).
//!
//! One cycle: start the real binary on a data folder, stream admin writes from a few
//! concurrent workers, SIGKILL it after a random delay, start it again on the same folder,
//! and read back every write ever acknowledged with a 2xx. Each worker writes its own,
//! fresh resources in sequence (domain → accounts → phone → members → domain again), so
//! every acknowledged write has one expected value and a later write to the same resource
//! wins by construction.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use std::process::Command;

const CORE: &str = "device-provisioning-registration-core-server";

/// A running server.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token (from `<data>/admin-token`).
    pub token: String,
}

/// Paths a cycle needs.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The autoprov binary.
    pub bin: PathBuf,
    /// The repository (models/ and templates/).
    pub repo: PathBuf,
    /// The data folder, kept across cycles.
    pub data: PathBuf,
    /// Where the servers' stderr goes (appended).
    pub log: PathBuf,
}

/// Starts the binary and waits for its `listening on http://ADDR` line.
pub async fn start(s: &Setup) -> Result<Server, String> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || start_blocking(&s))
        .await
        .map_err(|e| e.to_string())?
}

fn start_blocking(s: &Setup) -> Result<Server, String> {
    use std::io::BufRead;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .map_err(|e| format!("{}: {e}", s.log.display()))?;
    let cwd = s.data.parent().unwrap_or(Path::new("."));
    let mut child = Command::new(&s.bin)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data")
        .arg(&s.data)
        .arg("--models")
        .arg(s.repo.join("models"))
        .arg("--templates")
        .arg(s.repo.join("templates"))
        .current_dir(cwd)
        .env("RUST_LOG", "autoprov=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", s.bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // A thread reads stdout to its end (so a late line never meets a closed pipe) and
    // hands over the address; EOF before it means the server exited.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        let tail = std::fs::read_to_string(&s.log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        return Err(format!(
            "the server did not start: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    };
    let token = std::fs::read_to_string(s.data.join("admin-token"))
        .map_err(|e| format!("admin-token: {e}"))?
        .trim()
        .to_string();
    Ok(Server { child, url, token })
}

impl Server {
    /// SIGKILL (no shutdown, no flush) and reap.
    pub async fn kill(mut self) {
        let _ = tokio::task::spawn_blocking(move || {
            let _ = self.child.kill();
            let _ = self.child.wait();
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a write promised: `GET path` has `value` at JSON `pointer`.
#[derive(Clone, Debug)]
pub struct Expect {
    /// Kind of write, for the counts.
    pub kind: &'static str,
    /// The value written.
    pub value: Value,
    /// A later write to the same resource that the kill cut off: it may or may not have
    /// landed (it was never acknowledged), so either value is right.
    pub or: Option<Value>,
}

/// Every acknowledged write so far: (GET path, pointer) → the latest acknowledged value.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The expectations.
    pub expect: BTreeMap<(String, String), Expect>,
    /// Writes acknowledged with a 2xx, over all cycles.
    pub acked: usize,
    /// Writes answered with something other than a 2xx while the server was up (a bug in
    /// the harness or the server).
    pub rejected: usize,
    /// The first few of those answers.
    pub rejected_samples: Vec<String>,
}

/// Counts of one cycle's writes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Streamed {
    /// Requests sent.
    pub sent: usize,
    /// Acknowledged with a 2xx.
    pub acked: usize,
    /// Cut off by the kill (no answer).
    pub cut: usize,
}

struct Write {
    method: reqwest::Method,
    path: String,
    body: Value,
    check: (String, String, Value),
    kind: &'static str,
}

fn plan(cycle: u32, w: u32, n: u32) -> Vec<Write> {
    let tag = format!("c{cycle}w{w}i{n}");
    let d = format!("{tag}.test");
    let user = format!("u{n}");
    // Locally administered, unique per (cycle, worker, iteration).
    let mac = format!("02{:02x}{:02x}{:06x}", cycle % 256, w % 256, n % (1 << 24));
    let put = reqwest::Method::PUT;
    vec![
        Write {
            method: put.clone(),
            path: format!("/domains/{d}"),
            body: json!({"defaults": {CORE: format!("sip-{tag}.test")}}),
            check: (
                format!("/domains/{d}"),
                format!("/defaults/{CORE}"),
                json!(format!("sip-{tag}.test")),
            ),
            kind: "PUT domain",
        },
        Write {
            method: reqwest::Method::POST,
            path: format!("/domains/{d}/users/{user}/devices"),
            body: json!({"device": format!("a{n}"), CORE: format!("acc-{tag}.test")}),
            check: (
                format!("/domains/{d}/users/{user}/devices/a{n}"),
                format!("/{CORE}"),
                json!(format!("acc-{tag}.test")),
            ),
            kind: "POST account",
        },
        Write {
            method: put.clone(),
            path: format!("/domains/{d}/users/{user}/devices/b{n}"),
            body: json!({"device-sip-registration-password": format!("Pw-{tag}-b"), CORE: format!("b-{tag}.test")}),
            check: (
                format!("/domains/{d}/users/{user}/devices/b{n}"),
                format!("/{CORE}"),
                json!(format!("b-{tag}.test")),
            ),
            kind: "PUT account",
        },
        Write {
            method: put.clone(),
            path: format!("/phones/{mac}"),
            body: json!({"device-models-model": "yealink-t46s", "domain": d, CORE: format!("ph-{tag}.test")}),
            check: (
                format!("/phones/{mac}"),
                format!("/{CORE}"),
                json!(format!("ph-{tag}.test")),
            ),
            kind: "PUT phone",
        },
        Write {
            method: put.clone(),
            path: format!("/phones/{mac}/members"),
            body: json!({"members": [{"port": 1, "id": format!("a{n}@{d}"), "lineLabel": format!("L-{tag}"), "primaryOwner": true},
                                      {"port": 2, "id": format!("b{n}@{d}"), "lineLabel": format!("M-{tag}")}]}),
            check: (
                format!("/phones/{mac}/members"),
                "/members/1/lineLabel".into(),
                json!(format!("M-{tag}")),
            ),
            kind: "PUT members",
        },
        Write {
            method: put,
            path: format!("/domains/{d}"),
            body: json!({"defaults": {CORE: format!("sip2-{tag}.test")}}),
            check: (
                format!("/domains/{d}"),
                format!("/defaults/{CORE}"),
                json!(format!("sip2-{tag}.test")),
            ),
            kind: "PUT domain again",
        },
    ]
}

/// A small stable hash, to spread MACs.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn admin(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    m: reqwest::Method,
    p: &str,
) -> reqwest::RequestBuilder {
    c.request(m, format!("{url}/api/v1{p}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
}

/// Streams writes from `workers` tasks until the server dies; every 2xx goes into `ledger`.
/// Returns once `killed` is set and every worker has stopped.
pub async fn stream(
    srv_url: String,
    token: String,
    cycle: u32,
    workers: u32,
    ledger: Arc<Mutex<Ledger>>,
    killed: Arc<AtomicBool>,
) -> Streamed {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (url, token, ledger, killed) = (
            srv_url.clone(),
            token.clone(),
            ledger.clone(),
            killed.clone(),
        );
        set.spawn(async move {
            let client = reqwest::Client::new();
            let mut st = Streamed::default();
            let mut i = 0u32;
            'outer: while !killed.load(Ordering::SeqCst) {
                for wr in plan(cycle, w, i) {
                    st.sent += 1;
                    let r = admin(&client, &url, &token, wr.method, &wr.path)
                        .header("content-type", "application/json")
                        .body(wr.body.to_string())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            st.acked += 1;
                            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                            l.acked += 1;
                            l.expect.insert(
                                (wr.check.0, wr.check.1),
                                Expect {
                                    kind: wr.kind,
                                    value: wr.check.2,
                                    or: None,
                                },
                            );
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            if !killed.load(Ordering::SeqCst) {
                                let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                                l.rejected += 1;
                                if l.rejected_samples.len() < 5 {
                                    l.rejected_samples
                                        .push(format!("{} {status}: {body}", wr.path));
                                }
                            }
                            // The rest of this chain depends on this write.
                            i += 1;
                            continue 'outer;
                        }
                        Err(_) => {
                            // The server is gone (killed mid-request); the write may
                            // still have landed.
                            st.cut += 1;
                            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(e) = l.expect.get_mut(&(wr.check.0, wr.check.1)) {
                                e.or = Some(wr.check.2);
                            }
                            break 'outer;
                        }
                    }
                }
                i += 1;
            }
            st
        });
    }
    let mut total = Streamed::default();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            total.sent += s.sent;
            total.acked += s.acked;
            total.cut += s.cut;
        }
    }
    total
}

/// Reads back every expectation; returns (checked, the losses described).
pub async fn verify(srv: &Server, ledger: &Ledger) -> (usize, Vec<String>) {
    let items: Vec<((String, String), Expect)> = ledger
        .expect
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let chunks: Vec<Vec<((String, String), Expect)>> =
        items.chunks(64).map(<[_]>::to_vec).collect();
    let client = reqwest::Client::new();
    let mut set = tokio::task::JoinSet::new();
    let per = chunks.len().div_ceil(8).max(1);
    for group in chunks.chunks(per).map(<[_]>::to_vec) {
        let (client, url, token) = (client.clone(), srv.url.clone(), srv.token.clone());
        set.spawn(async move {
            let mut lost = Vec::new();
            for ((path, pointer), e) in group.into_iter().flatten() {
                let got = match admin(&client, &url, &token, reqwest::Method::GET, &path)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v.pointer(&pointer).cloned()),
                    Ok(r) => Some(json!(format!("HTTP {}", r.status()))),
                    Err(err) => Some(json!(format!("request failed: {err}"))),
                };
                if got.as_ref() != Some(&e.value) && (got.is_none() || got != e.or) {
                    lost.push(format!(
                        "{} {path}{pointer}: expected {}, got {}",
                        e.kind,
                        e.value,
                        got.unwrap_or(Value::Null)
                    ));
                }
            }
            lost
        });
    }
    let mut lost = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(l) => lost.extend(l),
            Err(e) => lost.push(format!("verifier task: {e}")),
        }
    }
    (items.len(), lost)
}

/// The result of one cycle.
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    /// Milliseconds between start and SIGKILL.
    pub kill_after_ms: u64,
    /// The cycle's writes.
    pub streamed: Streamed,
    /// Expectations read back after the restart (all cycles so far).
    pub checked: usize,
    /// How many of them were missing or wrong.
    pub lost: usize,
}

/// One cycle on `setup.data`: start, stream, SIGKILL after `kill_after_ms`, restart,
/// verify everything acknowledged so far. Returns the restarted server (for the next
/// cycle to kill or the caller to stop) and the loss descriptions.
pub async fn cycle(
    setup: &Setup,
    n: u32,
    kill_after_ms: u64,
    workers: u32,
    ledger: &Arc<Mutex<Ledger>>,
) -> Result<(Cycle, Vec<String>), String> {
    let srv = start(setup).await.map_err(|e| format!("cycle {n}: {e}"))?;
    let killed = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream(
        srv.url.clone(),
        srv.token.clone(),
        n,
        workers,
        ledger.clone(),
        killed.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
    killed.store(true, Ordering::SeqCst);
    srv.kill().await;
    let streamed = writer.await.map_err(|e| format!("writer: {e}"))?;
    let srv = start(setup)
        .await
        .map_err(|e| format!("cycle {n}: restart after SIGKILL: {e}"))?;
    let snapshot = Ledger {
        expect: ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expect
            .clone(),
        ..Default::default()
    };
    let (checked, lost) = verify(&srv, &snapshot).await;
    srv.kill().await;
    Ok((
        Cycle {
            kill_after_ms,
            streamed,
            checked,
            lost: lost.len(),
        },
        lost,
    ))
}
