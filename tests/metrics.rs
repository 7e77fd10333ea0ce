//! `GET /metrics` against the real server: exact counter values and labels after a known
//! sequence of requests, the `metrics-token` guard, an exposition every line of which
//! parses; and the fetch audit's `not-fetched-since` list filter and recorded status.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const A: &str = "001565000001";
const B: &str = "001565000002";
const UA: &str = "Yealink SIP-T46S 66.86.0.15";

/// Parses an exposition into `name{labels}` → value, checking every line on the way:
/// comments are `# HELP|TYPE|UNIT name …` or the final `# EOF`; every sample is
/// `name{k="v",…} value` of a family declared by a `# TYPE` before it.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families: Vec<String> = Vec::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(c) = line.strip_prefix("# ") {
            let mut w = c.splitn(3, ' ');
            let what = w.next().unwrap();
            assert!(matches!(what, "HELP" | "TYPE" | "UNIT"), "{line}");
            let name = w.next().unwrap();
            assert!(name.starts_with("autoprov_"), "{line}");
            if what == "TYPE" {
                families.push(name.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                        "{line}"
                    );
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{line}"
        );
        assert!(
            families.iter().any(|f| name.starts_with(f.as_str())),
            "{line}: no # TYPE before it"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{line} twice"
        );
    }
    samples
}

async fn scrape(s: &TestServer, token: Option<&str>) -> (StatusCode, String, String) {
    let mut rb = s.client.get(format!("{}/metrics", s.url));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing from {m:#?}"))
}

fn requests(kind: &str, status: u16, vendor: &str) -> String {
    format!("autoprov_requests_total{{kind=\"{kind}\",status=\"{status}\",vendor=\"{vendor}\"}}")
}

async fn linked(tweak: impl FnOnce(&mut autoprov::config::Config)) -> TestServer {
    let s = TestServer::start_with(tweak).await;
    s.seed_domain("a.example").await;
    s.seed_account("a.example", "100", "100a", A, "yealink-t46s")
        .await;
    s
}

#[tokio::test]
async fn counters_after_a_known_sequence() {
    let s = linked(|c| c.security.failures_per_mac = 1).await;
    let prov = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let file = format!("{A}.cfg");
    // A known phone twice: a miss, then a hit.
    for _ in 0..2 {
        let r = s.fetch_as(&file, prov, Some(UA)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // A MAC no phone has, with the server-default credentials.
    let r = s.fetch_as("001565ffffff.cfg", prov, Some(UA)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // No credentials: the challenge every phone asks for first, not a failure.
    let r = s.fetch_as(&file, None, Some(UA)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong password, then (one failure per MAC allowed) the throttle.
    let r = s.fetch_as(&file, Some(("x", "wrong")), Some(UA)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.fetch_as(&file, Some(("x", "wrong")), Some(UA)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A phone of no known vendor asking for a file no model has.
    let r = s.fetch_as("nothing.bin", prov, Some("curl/8")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // An admin call with a bad token.
    let r = s
        .client
        .get(format!("{}/api/v1/phones", s.url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (status, ct, text) = scrape(&s, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let m = parse(&text);
    assert_eq!(get(&m, &requests("phone", 200, "yealink")), 2.0);
    assert_eq!(get(&m, &requests("phone", 404, "yealink")), 1.0);
    assert_eq!(get(&m, &requests("phone", 401, "yealink")), 2.0);
    assert_eq!(get(&m, &requests("phone", 429, "yealink")), 1.0);
    assert_eq!(get(&m, &requests("phone", 404, "unknown")), 1.0);
    assert_eq!(get(&m, &requests("admin", 401, "unknown")), 1.0);
    // Seeding: the domain and the account were created.
    assert_eq!(get(&m, &requests("admin", 201, "unknown")), 2.0);
    let total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("autoprov_requests_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 10.0, "{text}");
    assert_eq!(get(&m, "autoprov_cache_hits_total"), 1.0);
    assert_eq!(get(&m, "autoprov_cache_misses_total"), 1.0);
    assert_eq!(get(&m, "autoprov_render_seconds_count"), 1.0);
    assert_eq!(get(&m, "autoprov_render_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert!(get(&m, "autoprov_render_seconds_sum") > 0.0);
    assert_eq!(get(&m, "autoprov_unknown_mac_requests_total"), 1.0);
    assert_eq!(get(&m, "autoprov_auth_failures_total{kind=\"phone\"}"), 1.0);
    assert_eq!(get(&m, "autoprov_auth_failures_total{kind=\"admin\"}"), 1.0);
    assert_eq!(get(&m, "autoprov_throttled_requests_total"), 1.0);
    assert_eq!(get(&m, "autoprov_phones"), 1.0);
    assert!(get(&m, "autoprov_store_size_bytes") > 0.0);
    // Bounded labels: no MAC, path or User-Agent in any of them.
    assert!(!text.contains("001565"), "{text}");
    assert!(!text.contains(".cfg"), "{text}");
    assert!(!text.contains("SIP-T46S"), "{text}");

    // The scrape itself counts as `other`, not as a phone file; a phone asking for
    // `/metrics` with its credentials gets the exposition too, never a file.
    let r = s.fetch_as("metrics", prov, Some(UA)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    let (_, _, text) = scrape(&s, None).await;
    let m = parse(&text);
    assert_eq!(get(&m, &requests("other", 200, "unknown")), 2.0);
    assert_eq!(get(&m, &requests("phone", 200, "yealink")), 2.0);
    let f = &s.get(&format!("/phones/{A}")).await.1["last-fetch"];
    assert_eq!(f["file"], file.as_str());
}

#[tokio::test]
async fn metrics_token_guards_the_exposition() {
    let s = linked(|c| c.metrics_token = Some("m-secret".into())).await;
    let (status, _, body) = scrape(&s, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("autoprov_"), "{body}");
    assert_eq!(scrape(&s, Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
    // The admin token is not the metrics token.
    let token = s.token.clone();
    assert_eq!(scrape(&s, Some(&token)).await.0, StatusCode::UNAUTHORIZED);
    // Phone credentials neither.
    let prov = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let r = s.fetch_as("metrics", prov, Some(UA)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, _, text) = scrape(&s, Some("m-secret")).await;
    assert_eq!(status, StatusCode::OK);
    let m = parse(&text);
    assert_eq!(get(&m, &requests("other", 401, "unknown")), 4.0);
    // A refused scrape is not an admin authentication failure.
    assert_eq!(get(&m, "autoprov_auth_failures_total{kind=\"admin\"}"), 0.0);
}

fn unix(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The MACs `GET /phones?<query>` lists.
async fn listed(s: &TestServer, query: &str) -> Vec<String> {
    let (status, body) = s.get(&format!("/phones?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["mac"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn not_fetched_since_filter_and_recorded_status() {
    let s = linked(|_| {}).await;
    s.seed_domain("b.example").await;
    s.seed_account("b.example", "200", "200b", B, "yealink-t48s")
        .await;
    let prov = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let file = format!("{A}.cfg");
    let r = s.fetch_as(&file, prov, Some(UA)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();

    // Read through the in-memory path: whether the batch was flushed yet does not matter.
    let f = s.get(&format!("/phones/{A}")).await.1["last-fetch"].clone();
    assert_eq!(f["status"], 200);
    assert_eq!(f["file"], file.as_str());
    assert_eq!(f["user-agent"], UA);
    assert_eq!(f["ip"], "127.0.0.1");
    let t = unix(f["time"].as_str().unwrap());
    let q = |u: u64| format!("not-fetched-since={}", rfc3339(u));

    // Before or at its fetch: A fetched since then and is left out; B never fetched.
    assert_eq!(listed(&s, &q(t - 1)).await, [B]);
    assert_eq!(listed(&s, &q(t)).await, [B]);
    // After it: both.
    assert_eq!(listed(&s, &q(t + 1)).await, [A, B]);
    // An offset, `+` encoded; and a `+` sent unencoded (read as a space) means the same.
    let plus2 = rfc3339(t + 1 + 7200).replace('Z', "%2B02:00");
    assert_eq!(
        listed(&s, &format!("not-fetched-since={plus2}")).await,
        [A, B]
    );
    let plus2 = rfc3339(t + 7200).replace('Z', "+02:00");
    assert_eq!(listed(&s, &format!("not-fetched-since={plus2}")).await, [B]);
    // Combined with the other filters and paging.
    assert_eq!(
        listed(&s, &format!("{}&domain=a.example", q(t + 1))).await,
        [A]
    );
    assert_eq!(
        listed(&s, &format!("{}&model=yealink-t46s", q(t))).await,
        Vec::<String>::new()
    );
    let (_, page) = s.get(&format!("/phones?{}&limit=1", q(t + 1))).await;
    assert_eq!(page["phones"][0]["mac"], A);
    assert_eq!(page["next"], A);
    assert_eq!(
        listed(&s, &format!("{}&limit=1&cursor={A}", q(t + 1))).await,
        [B]
    );
    // The same after the batch reached the store.
    s.state.fleet.flush(&s.state.store).unwrap();
    assert_eq!(listed(&s, &q(t)).await, [B]);
    assert_eq!(listed(&s, &q(t + 1)).await, [A, B]);

    // A bad time names the parameter.
    for bad in ["yesterday", "2026-01-31", "2026-01-31T08:00:00"] {
        let (status, body) = s.get(&format!("/phones?not-fetched-since={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["field"], "not-fetched-since", "{bad}");
    }

    // The status the phone got is recorded: a conditional GET answered 304.
    let r = s
        .client
        .get(format!("{}/{file}", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .header("user-agent", UA)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let f = &s.get(&format!("/phones/{A}")).await.1["last-fetch"];
    assert_eq!(f["status"], 304);
    // A User-Agent whose MAC is not the path's MAC: 403, not an audit of this phone (it
    // did not ask), and the record stays the 304.
    let other_ua = format!("{UA} 00:15:65:00:00:09");
    let r = s.fetch_as(&file, prov, Some(&other_ua)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, list) = s.get("/phones?domain=a.example").await;
    assert_eq!(list["phones"][0]["last-fetch"]["status"], 304);
    // A wrong password is recorded with its 401.
    let r = s.fetch_as(&file, Some(("x", "y")), Some(UA)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, list) = s.get("/phones?domain=a.example").await;
    assert_eq!(list["phones"][0]["last-fetch"]["status"], 401);
}

/// A repeat of the phone's last request is kept in its gate, not the audit's table: the
/// readers still show its time, and it survives the gate being replaced by an admin change.
#[tokio::test]
async fn a_repeated_fetch_moves_the_last_fetch_time() {
    let s = linked(|_| {}).await;
    let prov = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let file = format!("{A}.cfg");
    let time = |f: &Value| unix(f["time"].as_str().unwrap());
    assert_eq!(
        s.fetch_as(&file, prov, Some(UA)).await.status(),
        StatusCode::OK
    );
    let t1 = time(&s.get(&format!("/phones/{A}")).await.1["last-fetch"]);
    // The next second (times are whole seconds).
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= t1
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.fetch_as(&file, prov, Some(UA)).await.status(),
        StatusCode::OK
    );
    let f = s.get(&format!("/phones/{A}")).await.1["last-fetch"].clone();
    let t2 = time(&f);
    assert!(t2 > t1, "{f}");
    assert_eq!(
        (f["status"].as_u64(), f["file"].as_str()),
        (Some(200), Some(file.as_str()))
    );
    let q = |u: u64| format!("not-fetched-since={}", rfc3339(u));
    assert_eq!(listed(&s, &q(t2)).await, Vec::<String>::new());
    assert_eq!(listed(&s, &q(t2 + 1)).await, [A]);
    // An admin change replaces the phone's gate: the time is handed back, not lost.
    let (st, _) = s
        .put(
            &format!("/phones/{A}"),
            json!({"device-provisioning-overrides": {"custom.x": "1"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        time(&s.get(&format!("/phones/{A}")).await.1["last-fetch"]),
        t2
    );
    assert_eq!(listed(&s, &q(t2)).await, Vec::<String>::new());
    s.state.fleet.flush(&s.state.store).unwrap();
    assert_eq!(
        time(&s.get(&format!("/phones/{A}")).await.1["last-fetch"]),
        t2
    );
}

#[tokio::test]
async fn a_log_upload_counts_under_the_vendor_of_its_user_agent() {
    let s = linked(|_| {}).await;
    let r = s
        .client
        .put(format!("{}/{A}-app.log", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .header(
            "user-agent",
            "FileTransport PolycomVVX-VVX_450-UA/6.4.3.1 (SN:001565000001)",
        )
        .body("boot ok\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, _, text) = scrape(&s, None).await;
    let m = parse(&text);
    assert_eq!(get(&m, &requests("phone", 201, "polycom")), 1.0, "{text}");
}
