//! Resource limits against the real server over loopback: header-read timeout (slowloris),
//! request timeout, body caps, the connection cap, the header size cap, and graceful
//! shutdown. Raw `TcpStream`s where a client library would hide the behaviour.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAC: &str = "001565a1b2c3";

/// A generous bound inside which every limit under test must have fired.
const BOUND: Duration = Duration::from_secs(5);

fn addr(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_string()
}

async fn linked(s: &TestServer) {
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
}

/// Standard base64 (with padding) of any bytes, so credentials need not be UTF-8.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn basic(s: &TestServer) -> String {
    format!(
        "Basic {}",
        base64(format!("{}:{}", s.prov.0, s.prov.1).as_bytes())
    )
}

/// Reads until the peer closes (or resets) or `BOUND` passes; returns what arrived and
/// whether the connection ended within the bound.
async fn read_to_close(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), ended)
}

/// Reads one response head (through the blank line) within `BOUND`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1];
    tokio::time::timeout(BOUND, async {
        while !got.ends_with(b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => got.push(buf[0]),
            }
        }
    })
    .await
    .expect("a response head within the bound");
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads one whole response on a keep-alive connection (head, then `Content-Length` bytes).
async fn read_response(stream: &mut TcpStream) -> String {
    let head = read_head(stream).await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(BOUND, stream.read_exact(&mut body))
        .await
        .expect("a response body within the bound")
        .unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// One `Connection: close` request on a fresh connection; the whole response.
async fn one_request(addr: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (text, ended) = read_to_close(&mut c).await;
    assert!(ended, "response not finished: {text}");
    text
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_at_the_header_read_timeout() {
    let s = TestServer::start_with(|c| {
        c.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = addr(&s);

    // Half a request line, then a byte every 200 ms: never a complete head.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"GET /001565a1b2c3.cfg HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = c.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"X").await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    // A byte every 200 ms would keep a per-read timer from ever firing: the close proves
    // the timeout bounds the whole head.
    let closed = tokio::time::timeout(BOUND, async {
        match rd.read(&mut buf).await {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    })
    .await;
    let first = closed.expect("the server closes a slowloris connection within the bound");
    // hyper closes it without a response.
    assert!(first.is_empty(), "{}", String::from_utf8_lossy(&first));
    // Closed by the 1 s timeout, not at once.
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    trickle.abort();

    // A connection that sends nothing at all (idle keep-alive) is closed the same way.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let (text, ended) = read_to_close(&mut idle).await;
    assert!(ended && text.is_empty(), "{text}");

    // An ordinary client is unaffected.
    let text = one_request(&addr, "/api/v1/models").await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}

#[tokio::test]
async fn each_response_restarts_the_keep_alive_clock() {
    let s = TestServer::start_with(|c| {
        c.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    // Four requests 600 ms apart on one connection: 2.4 s in all, more than twice the
    // timeout, yet never 1 s without progress.
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    for _ in 0..4 {
        c.write_all(b"GET /api/v1/models HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let text = read_response(&mut c).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Then idle: closed.
    let (text, ended) = read_to_close(&mut c).await;
    assert!(ended && text.is_empty(), "{text}");
}

#[tokio::test]
async fn a_trickled_upload_body_gets_408_at_the_request_timeout() {
    let s = TestServer::start_with(|c| {
        c.limits.request_timeout = Duration::from_secs(1);
    })
    .await;
    linked(&s).await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    c.write_all(
        format!(
            "PUT /{MAC}-app.log HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\
             Content-Length: 1000\r\n\r\nfirst bytes",
            basic(&s)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = c.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(BOUND, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a response within the bound");
    trickle.abort();
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    // Nothing was stored.
    assert!(
        !s.dir
            .path()
            .join(format!("data/uploads/{MAC}/{MAC}-app.log"))
            .exists()
    );

    // The same upload sent promptly is stored.
    let r = s
        .client
        .put(format!("{}/{MAC}-app.log", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_admin_body_over_1_mib_is_413_with_the_json_error() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    let before = s.dump();
    let filler = "a".repeat(1 << 20);
    let big = format!("{{\"defaults\": {{\"x\": \"{filler}\"}}}}");
    let r = s
        .admin(reqwest::Method::PUT, "/domains/example.com")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(s.dump(), before);
}

#[tokio::test]
async fn an_upload_over_1_mib_is_413_and_1_mib_is_stored() {
    let s = TestServer::start().await;
    linked(&s).await;
    let put = |len: usize| {
        s.client
            .put(format!("{}/{MAC}-app.log", s.url))
            .basic_auth(&s.prov.0, Some(&s.prov.1))
            .body(vec![b'a'; len])
            .send()
    };
    let r = put((1 << 20) + 1).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let stored = s
        .dir
        .path()
        .join(format!("data/uploads/{MAC}/{MAC}-app.log"));
    assert!(!stored.exists());
    let r = put(1 << 20).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), 1 << 20);
}

#[tokio::test]
async fn connections_past_the_cap_get_503_with_retry_after() {
    let s = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let addr = addr(&s);

    // Two keep-alive connections, each known to be accepted (it answered a request).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /api/v1/models HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let text = read_response(&mut c).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        held.push(c);
    }

    // A third that sends nothing is answered at once, without its request being read.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let (text, ended) = read_to_close(&mut third).await;
    assert!(ended, "{text}");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{text}");
    // One that sends a request gets the same.
    let text = one_request(&addr, "/api/v1/models").await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");

    // The held connections still work.
    held[0]
        .write_all(b"GET /api/v1/phones HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let text = read_response(&mut held[0]).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");

    // Release one: a new connection is served (once the server has seen the close).
    drop(held.pop());
    let deadline = Instant::now() + BOUND;
    loop {
        let text = one_request(&addr, "/api/v1/models").await;
        if text.starts_with("HTTP/1.1 401") {
            break;
        }
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(
            Instant::now() < deadline,
            "the released slot was not reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn overlong_headers_get_431_and_the_server_carries_on() {
    let s = TestServer::start().await;
    let addr = addr(&s);
    let c = TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let request = format!(
        "GET /001565a1b2c3.cfg HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    // Written beside the read: the server answers before it has read it all.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(request.as_bytes()).await;
        wr
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server answers and closes within the bound");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let _ = writer.await;

    // Just under the cap is fine.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(
        format!(
            "GET /api/v1/models HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(12 << 10)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (text, _) = read_to_close(&mut c).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");

    // And the next client is served.
    let r = s.fetch(&format!("{MAC}.cfg")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_in(dir.path());
    let (state, startup) = autoprov::init(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(autoprov::serve(listener, state, async move {
        let _ = rx.await;
    }));
    let token = startup.new_admin_token.unwrap();

    // An admin PUT whose body is not yet sent when shutdown starts. `Expect: 100-continue`
    // makes hyper say when the handler has started reading the body: the request is then
    // in flight.
    let body = r#"{"defaults": {}}"#;
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(
        format!(
            "PUT /api/v1/domains/example.com HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    tx.send(()).unwrap();

    // No new connections.
    let deadline = Instant::now() + BOUND;
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The in-flight request completes, then the server returns.
    c.write_all(body.as_bytes()).await.unwrap();
    let (text, ended) = read_to_close(&mut c).await;
    assert!(ended, "{text}");
    assert!(text.starts_with("HTTP/1.1 20"), "{text}");
    tokio::time::timeout(BOUND, server)
        .await
        .expect("serve returns once the connection is done")
        .unwrap()
        .unwrap();
}
