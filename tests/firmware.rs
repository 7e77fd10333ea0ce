//! The firmware folder against the real server: phone authentication like a common file
//! (401 challenge, 429, a known phone's own credentials), Range (206, 416, multi-range),
//! ETag / If-None-Match / If-Range / If-Modified-Since, HEAD, path safety (traversal raw
//! and percent-encoded, hidden files, symlinks out of the folder), a 5 MiB file streamed,
//! and `firmware_url` in the Yealink template.

mod common;

use std::path::PathBuf;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAC: &str = "001565aabbcc";

/// Deterministic, non-repeating-looking bytes.
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn firmware_dir(s: &TestServer) -> PathBuf {
    let d = s.state.firmware.clone();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server with `T46S.rom` (1000 bytes) in its firmware folder.
async fn server() -> (TestServer, Vec<u8>) {
    let s = TestServer::start().await;
    let data = bytes(1000);
    std::fs::write(firmware_dir(&s).join("T46S.rom"), &data).unwrap();
    (s, data)
}

fn get(s: &TestServer, path: &str) -> reqwest::RequestBuilder {
    s.client
        .get(format!("{}{path}", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A raw request (the path exactly as written: no client-side dot-segment removal).
async fn raw(s: &TestServer, path: &str, auth: bool) -> String {
    let addr = s.url.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if auth {
        use base64::Engine;
        let b =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.prov.0, s.prov.1));
        req.push_str(&format!("Authorization: Basic {b}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn authentication_is_the_common_file_rule() {
    let (s, data) = server().await;
    let url = format!("{}/firmware/T46S.rom", s.url);
    // No credentials: the phone challenge, and the file's existence is not told.
    for path in ["/firmware/T46S.rom", "/firmware/missing.rom"] {
        let r = s
            .client
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(header(&r, "www-authenticate"), "Basic realm=\"autoprov\"");
    }
    let r = s
        .client
        .get(&url)
        .basic_auth(&s.prov.0, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = get(&s, "/firmware/T46S.rom").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "content-length"), "1000");
    let etag = header(&r, "etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    assert!(!header(&r, "last-modified").is_empty());
    assert_eq!(r.bytes().await.unwrap(), data);

    // A known phone (MAC in the User-Agent) with credentials of its own: those open it,
    // the server default no longer does.
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    let (st, b) = s
        .put(
            &format!("/phones/{MAC}"),
            json!({"device-provisioning-username": "desk", "device-provisioning-password": "Desk-Pass-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
    let as_phone = |u: &str, p: &str| {
        s.client
            .get(&url)
            .header("user-agent", ua)
            .basic_auth(u, Some(p))
    };
    let r = as_phone("desk", "Desk-Pass-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), data);
    let r = as_phone(&s.prov.0, &s.prov.1).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The fetch is in the phone's audit.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (_, p) = s.get(&format!("/phones/{MAC}")).await;
    assert_eq!(p["last-fetch"]["file"], "firmware/T46S.rom", "{p}");

    // Other methods: 405.
    let r = s
        .client
        .post(&url)
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn failed_authentications_are_throttled() {
    let s = TestServer::start_with(|c| c.security.failures_per_ip = 3).await;
    std::fs::write(firmware_dir(&s).join("a.bin"), b"x").unwrap();
    let url = format!("{}/firmware/a.bin", s.url);
    for _ in 0..3 {
        let r = s
            .client
            .get(&url)
            .basic_auth("guess", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = get(&s, "/firmware/a.bin").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!header(&r, "retry-after").is_empty());
}

#[tokio::test]
async fn server_allow_list_applies() {
    let s = TestServer::start_with(|c| {
        c.security.allowed_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    std::fs::write(firmware_dir(&s).join("a.bin"), b"x").unwrap();
    let r = get(&s, "/firmware/a.bin").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ranges() {
    let (s, data) = server().await;
    let range = |r: &'static str| get(&s, "/firmware/T46S.rom").header("range", r);
    for (spec, from, to) in [
        ("bytes=10-19", 10usize, 19usize),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=0-0", 0, 0),
        ("bytes=900-5000", 900, 999),
    ] {
        let r = range(spec).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {from}-{to}/1000"),
            "{spec}"
        );
        assert_eq!(header(&r, "content-length"), (to - from + 1).to_string());
        assert!(!header(&r, "etag").is_empty());
        assert_eq!(r.bytes().await.unwrap(), &data[from..=to], "{spec}");
    }
    // Nothing of the file: 416 with the size.
    let r = range("bytes=1000-").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */1000");
    // Several ranges, or a malformed one: the whole file.
    for spec in ["bytes=0-1,5-6", "bytes=abc", "items=0-1"] {
        let r = range(spec).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{spec}");
        assert_eq!(r.bytes().await.unwrap(), data, "{spec}");
    }
}

#[tokio::test]
async fn conditional_requests() {
    let (s, data) = server().await;
    let r = get(&s, "/firmware/T46S.rom").send().await.unwrap();
    let etag = header(&r, "etag");
    let modified = header(&r, "last-modified");

    let r = get(&s, "/firmware/T46S.rom")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    for inm in [
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".into(),
    ] {
        let r = get(&s, "/firmware/T46S.rom")
            .header("if-none-match", &inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
    }
    let r = get(&s, "/firmware/T46S.rom")
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "If-None-Match decides alone");
    let r = get(&s, "/firmware/T46S.rom")
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // If-Range: the range only while the validator is current.
    let if_range = |v: &str| {
        get(&s, "/firmware/T46S.rom")
            .header("range", "bytes=0-9")
            .header("if-range", v)
    };
    let r = if_range(&etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), &data[..10]);
    let r = if_range(&modified).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    for stale in [
        "\"0-0.0\"",
        &format!("W/{etag}"),
        "Thu, 01 Jan 1970 00:00:00 GMT",
    ] {
        let r = if_range(stale).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{stale}");
        assert_eq!(r.bytes().await.unwrap(), data, "{stale}");
    }

    // A changed file gets a new ETag: the old one no longer matches.
    std::fs::write(firmware_dir(&s).join("T46S.rom"), bytes(1001)).unwrap();
    let r = get(&s, "/firmware/T46S.rom")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(header(&r, "etag"), etag);
    assert_eq!(r.bytes().await.unwrap().len(), 1001);
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let (s, _) = server().await;
    let r = s
        .client
        .head(format!("{}/firmware/T46S.rom", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "1000");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert!(!header(&r, "etag").is_empty());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = s
        .client
        .head(format!("{}/firmware/T46S.rom", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-length"), "100");
}

#[tokio::test]
async fn paths_stay_inside_the_folder() {
    let (s, data) = server().await;
    let fw = firmware_dir(&s);
    std::fs::create_dir_all(fw.join("yealink")).unwrap();
    std::fs::write(fw.join("yealink/T54W.rom"), &data[..10]).unwrap();
    std::fs::write(fw.join(".secret"), b"hidden").unwrap();
    std::fs::create_dir_all(fw.join(".git")).unwrap();
    std::fs::write(fw.join(".git/config"), b"hidden").unwrap();
    let outside = s.dir.path().join("outside.txt");
    std::fs::write(&outside, b"outside").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, fw.join("escape.bin")).unwrap();
        std::os::unix::fs::symlink(s.dir.path(), fw.join("up")).unwrap();
        std::os::unix::fs::symlink(fw.join("T46S.rom"), fw.join("latest.rom")).unwrap();
        std::os::unix::fs::symlink(fw.join(".secret"), fw.join("peek.bin")).unwrap();
    }
    let r = get(&s, "/firmware/yealink/T54W.rom").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), &data[..10]);
    #[cfg(unix)]
    {
        let r = get(&s, "/firmware/latest.rom").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "a symlink inside the folder");
        assert_eq!(r.bytes().await.unwrap(), data);
    }
    for path in [
        "/firmware/.secret",
        "/firmware/.git/config",
        "/firmware/%2esecret",
        "/firmware/escape.bin",
        "/firmware/up/outside.txt",
        "/firmware/peek.bin",
        "/firmware/yealink",
        "/firmware/yealink/",
        "/firmware/missing.rom",
        "/firmware/yealink//T54W.rom",
    ] {
        let r = get(&s, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Sent byte for byte (a URL library would remove the dot segments first).
    for path in [
        "/firmware/../outside.txt",
        "/firmware/../../../../etc/passwd",
        "/firmware/%2e%2e/outside.txt",
        "/firmware/%2E%2E/%2e%2e/etc/passwd",
        "/firmware/yealink/..%2f..%2foutside.txt",
        "/firmware/..%5coutside.txt",
        "/firmware/./T46S.rom",
        "/firmware/T46S.rom%00",
    ] {
        let resp = raw(&s, path, true).await;
        assert!(resp.starts_with("HTTP/1.1 404 "), "{path}: {resp}");
        assert!(
            !resp.contains("outside") && !resp.contains("root:"),
            "{path}"
        );
        // Unauthenticated: the challenge, never a hint about the path.
        let resp = raw(&s, path, false).await;
        assert!(resp.starts_with("HTTP/1.1 401 "), "{path}: {resp}");
    }
    let resp = raw(&s, "/firmware/yealink/T54W.rom", true).await;
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
}

#[tokio::test]
async fn a_missing_folder_is_a_404() {
    let s = TestServer::start().await;
    assert!(!s.state.firmware.exists());
    let r = get(&s, "/firmware/T46S.rom").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_large_file_is_served_whole_and_by_range() {
    let s = TestServer::start().await;
    let data = bytes(5 << 20);
    std::fs::write(firmware_dir(&s).join("big.rom"), &data).unwrap();
    let mut r = get(&s, "/firmware/big.rom").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), (5u64 << 20).to_string());
    let mut got = Vec::with_capacity(data.len());
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(got == data, "5 MiB body differs");
    // The tail as a range.
    let r = get(&s, "/firmware/big.rom")
        .header("range", "bytes=5000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == data[5_000_000..]);
}

#[tokio::test]
async fn yealink_template_points_at_the_firmware_folder() {
    let s = TestServer::start_with(|c| {
        c.defaults.insert(
            autoprov::config::FIRMWARE_URL_SETTING.into(),
            "http://prov.example.com:8080/firmware".into(),
        );
    })
    .await;
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    let file = format!("{MAC}.cfg");
    let (st, _, body) = s.fetch_text(&file).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!body.contains("static.firmware.url"), "unset: {body}");
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"defaults": {"firmware-file": "T46S-66.86.0.15.rom"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, _, body) = s.fetch_text(&file).await;
    assert!(
        body.contains(
            "\nstatic.firmware.url = http://prov.example.com:8080/firmware/T46S-66.86.0.15.rom\n"
        ),
        "{body}"
    );
    // Explain counts both settings as read by the Yealink templates.
    let (st, e) = s.get(&format!("/phones/{MAC}/explain")).await;
    assert_eq!(st, StatusCode::OK, "{e}");
    let unused = e["unused"].to_string();
    assert!(
        !unused.contains("firmware-url") && !unused.contains("firmware-file"),
        "{unused}"
    );
    // A whole URL is written as it is.
    s.put(
        "/domains/example.com",
        json!({"defaults": {"firmware-file": "https://cdn.example/T46S.rom"}}),
    )
    .await;
    let (_, _, body) = s.fetch_text(&file).await;
    assert!(
        body.contains("\nstatic.firmware.url = https://cdn.example/T46S.rom\n"),
        "{body}"
    );
}

#[tokio::test]
async fn firmware_url_defaults_to_the_relative_folder() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    s.put(
        "/domains/example.com",
        json!({"defaults": {"firmware-file": "T46S.rom"}}),
    )
    .await;
    let (_, _, body) = s.fetch_text(&format!("{MAC}.cfg")).await;
    assert!(
        body.contains("\nstatic.firmware.url = /firmware/T46S.rom\n"),
        "{body}"
    );
}
