//! Load-harness helper for `scripts/bench-load.sh` (not part of the server).
//!
//! ```text
//! loadtool seed   URL TOKEN N MODEL            # domain + N accounts linked to N phones
//! loadtool storm  URL USER:PASS N OUTDIR       # fetch every phone's {mac}.cfg once, save it
//! loadtool admin  URL TOKEN N SECONDS RATE     # admin writes at RATE/s, print p50/p99 (ms)
//! loadtool macs   N                            # print the N MACs, one per line
//! ```
//! MACs are `0015650` + the index in 5 hex digits, so every tool agrees on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::json;

const CONCURRENCY: usize = 64;

fn mac(i: usize) -> String {
    format!("0015650{i:05x}")
}

fn die(msg: &str) -> ! {
    eprintln!("loadtool: {msg}");
    std::process::exit(2)
}

fn arg(args: &[String], i: usize, what: &str) -> String {
    args.get(i)
        .cloned()
        .unwrap_or_else(|| die(&format!("missing {what}")))
}

fn num(args: &[String], i: usize, what: &str) -> usize {
    arg(args, i, what)
        .parse()
        .unwrap_or_else(|_| die(&format!("{what} must be a number")))
}

/// Runs `job(i)` for i in 0..n on CONCURRENCY tasks; returns the elapsed time.
async fn fan_out<F, Fut>(n: usize, job: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    job(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed()
}

async fn seed(url: String, token: String, n: usize, model: String) {
    let c = Client::new();
    let r = c
        .put(format!("{url}/api/v1/domains/bench.example"))
        .bearer_auth(&token)
        .json(&json!({"defaults": {"device-provisioning-registration-core-server": "sip.bench.example"}}))
        .send()
        .await
        .unwrap_or_else(|e| die(&e.to_string()));
    if !r.status().is_success() {
        die(&format!("domain: {}", r.status()));
    }
    let failures = Arc::new(AtomicUsize::new(0));
    let f2 = failures.clone();
    let took = fan_out(n, move |i| {
        let (c, url, token, model, failures) = (
            c.clone(),
            url.clone(),
            token.clone(),
            model.clone(),
            f2.clone(),
        );
        async move {
            let r = c
                .put(format!(
                    "{url}/api/v1/domains/bench.example/users/{}/devices/{}a",
                    10000 + i,
                    10000 + i
                ))
                .bearer_auth(&token)
                .json(&json!({
                    "device-sip-registration-password": format!("Bench-Pass-{i}"),
                    "device-models-model": model,
                    "device-provisioning-mac-address": mac(i),
                }))
                .send()
                .await;
            if !r.is_ok_and(|r| r.status().is_success()) {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    let bad = failures.load(Ordering::Relaxed);
    println!(
        "seeded {n} phones in {:.1} s ({:.0} writes/s), {bad} failures",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    if bad > 0 {
        std::process::exit(1);
    }
}

async fn storm(url: String, creds: String, n: usize, out: String) {
    let (user, pass) = creds
        .split_once(':')
        .unwrap_or_else(|| die("credentials must be user:pass"));
    let (user, pass) = (user.to_string(), pass.to_string());
    std::fs::create_dir_all(&out).unwrap_or_else(|e| die(&e.to_string()));
    let c = Client::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let f2 = failures.clone();
    // Bodies are kept in memory and written after the clock stops: creating 100,000 files
    // on the client's runtime thread made the client, not the server, the bottleneck
    // (4–10k configs/s depending on the disk).
    let bodies: Arc<std::sync::Mutex<Vec<(String, axum::body::Bytes)>>> = Arc::default();
    let b2 = bodies.clone();
    let took = fan_out(n, move |i| {
        let (c, url, user, pass, bodies, failures) = (
            c.clone(),
            url.clone(),
            user.clone(),
            pass.clone(),
            b2.clone(),
            f2.clone(),
        );
        async move {
            let file = format!("{}.cfg", mac(i));
            let r = c
                .get(format!("{url}/{file}"))
                .basic_auth(&user, Some(&pass))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => bodies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((file, b)),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                },
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    for (file, b) in bodies.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        if let Err(e) = std::fs::write(format!("{out}/{file}"), &b) {
            die(&format!("writing {out}/{file}: {e}"));
        }
    }
    println!(
        "storm: {n} configs in {:.2} s = {:.0} configs/s, {} failures",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );
}

async fn admin(url: String, token: String, n: usize, seconds: u64, rate: u64) {
    let c = Client::new();
    let mut lat = Vec::new();
    let start = Instant::now();
    let gap = Duration::from_micros(1_000_000 / rate.max(1));
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        let r = c
            .put(format!(
                "{url}/api/v1/domains/bench.example/users/{}/devices/{}a",
                10000 + i % n,
                10000 + i % n
            ))
            .bearer_auth(&token)
            .json(&json!({"device-sip-registration-expiry-seconds": 60 + (i % 3000) as u64}))
            .send()
            .await;
        if !r.is_ok_and(|r| r.status().is_success()) {
            die("admin write failed");
        }
        lat.push(t.elapsed());
        i += 1;
        if let Some(rest) = gap.checked_sub(t.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    if lat.is_empty() {
        die("no admin write finished in the time given");
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "admin writes: {} in {seconds} s, p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("seed") => {
            seed(
                arg(&args, 2, "URL"),
                arg(&args, 3, "TOKEN"),
                num(&args, 4, "N"),
                arg(&args, 5, "MODEL"),
            )
            .await
        }
        Some("storm") => {
            storm(
                arg(&args, 2, "URL"),
                arg(&args, 3, "USER:PASS"),
                num(&args, 4, "N"),
                arg(&args, 5, "OUTDIR"),
            )
            .await
        }
        Some("admin") => {
            admin(
                arg(&args, 2, "URL"),
                arg(&args, 3, "TOKEN"),
                num(&args, 4, "N"),
                num(&args, 5, "SECONDS") as u64,
                num(&args, 6, "RATE") as u64,
            )
            .await
        }
        Some("macs") => {
            for i in 0..num(&args, 2, "N") {
                println!("{}", mac(i));
            }
        }
        _ => die("usage: loadtool seed|storm|admin|macs … (see the source header)"),
    }
}
