//! Hostile input matrix: raw HTTP/1.1 requests (odd paths, bad encodings, oversized or
//! malformed headers and bodies, bad credentials) against the real server. Every case
//! answers its expected 4xx (never a 5xx, never a dropped connection), admin errors carry
//! the JSON error shape naming the field, and the stored data is byte-identical afterwards.
//!
//! Requests are written byte for byte over a `TcpStream` (one connection per case,
//! `Connection: close`), because an HTTP client would normalise most of these inputs.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};

/// The linked Yealink of the seeded store.
const MAC: &str = "001565aabbcc";

/// One hostile request and what it must get.
struct Case {
    name: &'static str,
    /// The whole request, as sent.
    raw: Vec<u8>,
    /// The expected status; several only where another branch changes today's answer
    /// (noted at the case).
    want: &'static [u16],
    /// Admin route: the body must be the JSON error shape.
    api: bool,
    /// The `error.field` an admin 400/409 must name.
    field: Option<String>,
}

/// A parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Standard base64 (with padding) of any bytes, so credentials need not be UTF-8.
fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A request: method, target, extra header lines (raw bytes, without CRLF), body. Adds
/// Host, Connection: close and (when there is a body) Content-Length.
fn req(method: &str, target: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: autoprov.test\r\nConnection: close\r\n");
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// Sends `raw` on a fresh connection and reads the whole response (the server closes).
async fn send(addr: &str, raw: Vec<u8>) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (rd, wr) = stream.into_split();
    // Written concurrently with the read: the server may answer (413, 431) before it has
    // read everything, and a write error then is expected.
    let writer = tokio::spawn(async move {
        let mut rest = raw.as_slice();
        while !rest.is_empty() {
            if wr.writable().await.is_err() {
                break;
            }
            match wr.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        // Keep the write half open until the response is read (no half-close).
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(wr);
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 16384];
        loop {
            if rd.readable().await.is_err() {
                break;
            }
            match rd.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A reset after the response (unread request bytes) is fine.
                Err(_) => break,
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "no complete response within 15 s");
    parse(&buf)
}

fn parse(buf: &[u8]) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response head (connection dropped?): {:?}",
                String::from_utf8_lossy(buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case(b"chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// The seeded store: a domain (no provisioning credentials of its own, so the phone path
/// checks the server default), two accounts on a Yealink with labels and an override, and
/// a Polycom, a Grandstream and a Cisco in the domain.
async fn seed(s: &TestServer) {
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    s.seed_account("example.com", "1005", "1005a", MAC, "yealink-t46s")
        .await;
    let (st, b) = s
        .put(
            &format!("/phones/{MAC}/members"),
            json!({"members": [
                {"port": 1, "id": "1004a@example.com", "lineLabel": "Reception", "primaryOwner": true},
                {"port": 2, "id": "1005a@example.com", "lineLabel": "Sales", "lineWeight": 2},
            ]}),
        )
        .await;
    assert!(st.is_success(), "{st} {b}");
    let (st, b) = s
        .put(
            &format!("/phones/{MAC}"),
            json!({"device-provisioning-overrides": {"custom.key": "1"}}),
        )
        .await;
    assert!(st.is_success(), "{st} {b}");
    for (mac, model) in [
        ("0004f2aabbcc", "polycom-vvx450"),
        ("000b82aabbcc", "grandstream-gxp2170"),
        ("c4b36aaabbcc", "cisco-cp8851"),
    ] {
        let (st, b) = s
            .put(
                &format!("/phones/{mac}"),
                json!({"device-models-model": model, "domain": "example.com"}),
            )
            .await;
        assert!(st.is_success(), "{st} {b}");
    }
}

/// The store export (`autoprov export`: every tree but the render cache), less the two trees
/// that phone GETs legitimately write: the fetch audit and the unprovisioned list. Flushed
/// first so that what the audit batches cannot land between the two snapshots.
fn snapshot(s: &TestServer) -> String {
    s.state.fleet.flush(&s.state.store).expect("audit flush");
    let bytes = s.state.store.export().expect("export");
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("export is JSON");
    let trees = v["trees"].as_object_mut().expect("trees");
    assert!(trees.contains_key("phones") && trees.contains_key("meta"));
    trees.remove("fetches");
    trees.remove("unprovisioned");
    serde_json::to_string(&v).expect("json")
}

fn cases(s: &TestServer) -> Vec<Case> {
    let bearer = format!("Authorization: Bearer {}", s.token);
    let basic = format!(
        "Authorization: Basic {}",
        b64(format!("{}:{}", s.prov.0, s.prov.1).as_bytes())
    );
    let bearer = bearer.as_bytes().to_vec();
    let basic = basic.as_bytes().to_vec();
    let json_ct: &[u8] = b"Content-Type: application/json";

    // Builders.
    let phone = |target: &str| req("GET", target.as_bytes(), &[&basic], b"");
    let phone_auth = |auth: &[u8]| req("GET", format!("/{MAC}.cfg").as_bytes(), &[auth], b"");
    let api = |method: &str, path: &str, body: &[u8]| {
        let target = format!("/api/v1{path}");
        if body.is_empty() && !matches!(method, "PUT" | "POST") {
            req(method, target.as_bytes(), &[&bearer], b"")
        } else {
            req(method, target.as_bytes(), &[&bearer, json_ct], body)
        }
    };
    let api_json =
        |method: &str, path: &str, body: Value| api(method, path, body.to_string().as_bytes());
    let members = |m: Value| {
        api_json(
            "PUT",
            &format!("/phones/{MAC}/members"),
            json!({ "members": [m] }),
        )
    };
    let account = "/domains/example.com/users/1004/devices/1004a";
    let acc = |body: Value| api_json("PUT", account, body);
    let phone_put = |body: Value| api_json("PUT", &format!("/phones/{MAC}"), body);
    let domain = |body: Value| api_json("PUT", "/domains/example.com", body);

    let c = |name, raw, want, api, field: Option<&str>| Case {
        name,
        raw,
        want,
        api,
        field: field.map(str::to_string),
    };
    let mut v = vec![
        // ------------------------------------------------ phone path: traversal, encodings
        c("phone: /../etc/passwd", phone("/../etc/passwd"), &[404], false, None),
        c("phone: %2e%2e segments", phone("/%2e%2e/%2e%2e/etc/passwd"), &[404], false, None),
        c("phone: ..%2f encoded slashes", phone("/..%2f..%2fetc%2fpasswd"), &[404], false, None),
        c("phone: encoded slash in a file name", phone(&format!("/yealink%2F{MAC}.cfg")), &[404], false, None),
        c("phone: NUL after the name", phone(&format!("/{MAC}.cfg%00")), &[404], false, None),
        c("phone: leading double slash", phone(&format!("//{MAC}.cfg")), &[404], false, None),
        c("phone: backslash traversal", phone("/..%5c..%5cetc%5cpasswd"), &[404], false, None),
        c("phone: %ff (not UTF-8 once decoded)", phone("/%ff%fe.cfg"), &[400], false, None),
        c("phone: bad percent escape", phone(&format!("/{MAC}%zz.cfg")), &[404], false, None),
        c("phone: 10 KB path", phone(&format!("/{}.cfg", "a".repeat(10 * 1024))), &[414], false, None),
        // Past the 16 KiB header cap hyper answers 431 before routing; between 8 and 16 KiB, 414.
        c("phone: 70 KB path", phone(&format!("/{}.cfg", "a".repeat(70 * 1024))), &[414, 431], false, None),
        c("phone: overlong UTF-8 dot", phone(&format!("/{MAC}%c0%aecfg")), &[400], false, None),
        c(
            "phone: User-Agent names another MAC",
            req("GET", format!("/{MAC}.cfg").as_bytes(), &[&basic, b"User-Agent: Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01"], b""),
            &[403],
            false,
            None,
        ),
        // ------------------------------------------------ phone path: MAC spellings
        c("phone MAC: too short", phone("/001565aabb.cfg"), &[404], false, None),
        c("phone MAC: too long", phone("/001565aabbccdd.cfg"), &[404], false, None),
        c("phone MAC: non-hex", phone("/00156zaabbcc.cfg"), &[404], false, None),
        c("phone MAC: mixed separators", phone("/00:15-65.aa:bb:cc.cfg"), &[404], false, None),
        c("phone MAC: 0x prefix", phone("/0x001565aabbcc.cfg"), &[404], false, None),
        c("phone MAC: empty", phone("/.cfg"), &[404], false, None),
        // ------------------------------------------------ phone path: basic auth
        c("basic: none", req("GET", format!("/{MAC}.cfg").as_bytes(), &[], b""), &[401], false, None),
        c("basic: `Basic ` empty", phone_auth(b"Authorization: Basic "), &[401], false, None),
        c("basic: `Basic` alone", phone_auth(b"Authorization: Basic"), &[401], false, None),
        c(
            "basic: empty password",
            phone_auth(format!("Authorization: Basic {}", b64(format!("{}:", s.prov.0).as_bytes())).as_bytes()),
            &[401],
            false,
            None,
        ),
        c(
            "basic: no colon",
            phone_auth(format!("Authorization: Basic {}", b64(s.prov.0.as_bytes())).as_bytes()),
            &[401],
            false,
            None,
        ),
        c(
            "basic: non-UTF-8 credentials",
            phone_auth(format!("Authorization: Basic {}", b64(b"\xff\xfe:\xe9t\xe9")).as_bytes()),
            &[401],
            false,
            None,
        ),
        c("basic: not base64", phone_auth(b"Authorization: Basic !!!not*base64!!!"), &[401], false, None),
        c("basic: non-UTF-8 header bytes", phone_auth(b"Authorization: Basic \xff\xfe\xfd"), &[401], false, None),
        c(
            "basic: wrong password",
            phone_auth(format!("Authorization: Basic {}", b64(format!("{}:nope", s.prov.0).as_bytes())).as_bytes()),
            &[401],
            false,
            None,
        ),
        c("basic: Bearer on the phone path", phone_auth(&bearer), &[401], false, None),
        c(
            "basic: wrong header first, right one second",
            req(
                "GET",
                format!("/{MAC}.cfg").as_bytes(),
                &[format!("Authorization: Basic {}", b64(b"x:y")).as_bytes(), &basic],
                b"",
            ),
            &[400],
            false,
            None,
        ),
        c(
            "basic: right header first, wrong one second",
            req(
                "GET",
                format!("/{MAC}.cfg").as_bytes(),
                &[&basic, format!("Authorization: Basic {}", b64(b"x:y")).as_bytes()],
                b"",
            ),
            &[400],
            false,
            None,
        ),
        // ------------------------------------------------ phone path: methods, uploads
        c("phone: POST", req("POST", format!("/{MAC}.cfg").as_bytes(), &[&basic], b"x"), &[405], false, None),
        c("phone: DELETE", req("DELETE", format!("/{MAC}.cfg").as_bytes(), &[&basic], b""), &[405], false, None),
        c(
            "upload: no credentials",
            req("PUT", format!("/{MAC}-app.log").as_bytes(), &[], b"log line\n"),
            &[401],
            false,
            None,
        ),
        c(
            "upload: traversal in the name",
            req("PUT", b"/..%2f..%2fetc%2fpasswd-app.log", &[&basic], b"x"),
            &[405],
            false,
            None,
        ),
        // ------------------------------------------------ HTTP framing and headers
        c("http: garbage request line", b"GARBAGE\r\n\r\n".to_vec(), &[400], false, None),
        c(
            "http: header name with non-UTF-8 bytes",
            req("GET", format!("/{MAC}.cfg").as_bytes(), &[b"X-\xff\xfe: 1", &basic], b""),
            &[400],
            false,
            None,
        ),
        c(
            "http: obs-fold header continuation",
            req("GET", format!("/{MAC}.cfg").as_bytes(), &[b"X-A: b", b" folded", &basic], b""),
            &[400],
            false,
            None,
        ),
        c(
            "http: two different Content-Length",
            format!(
                "PUT /api/v1/domains/example.com HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}",
                String::from_utf8_lossy(&bearer)
            )
            .into_bytes(),
            &[400],
            false,
            None,
        ),
        // Past the 16 KiB header cap (src/server.rs), even with valid credentials.
        c(
            "http: 100 KB header",
            req(
                "GET",
                format!("/{MAC}.cfg").as_bytes(),
                &[&basic, format!("X-Filler: {}", "a".repeat(100 * 1024)).as_bytes()],
                b"",
            ),
            &[431],
            false,
            None,
        ),
        c(
            "http: 512 KB header",
            req(
                "GET",
                format!("/{MAC}.cfg").as_bytes(),
                &[format!("X-Filler: {}", "a".repeat(512 * 1024)).as_bytes(), &basic],
                b"",
            ),
            &[431],
            false,
            None,
        ),
        c(
            "http: 200 headers",
            req(
                "GET",
                format!("/{MAC}.cfg").as_bytes(),
                &(0..200)
                    .map(|i| format!("X-H{i}: v").into_bytes())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Vec::as_slice)
                    .chain([basic.as_slice()])
                    .collect::<Vec<_>>(),
                b"",
            ),
            &[431],
            false,
            None,
        ),
        c(
            "http: bare CR in a header value",
            req("GET", format!("/{MAC}.cfg").as_bytes(), &[b"X-A: b\rc", &basic], b""),
            &[400],
            false,
            None,
        ),
        c(
            "http: Content-Length with Transfer-Encoding: gzip",
            format!(
                "PUT /api/v1/domains/example.com HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{{}}",
                String::from_utf8_lossy(&bearer)
            )
            .into_bytes(),
            &[400],
            false,
            None,
        ),
        c(
            "http: malformed chunked body",
            format!(
                "PUT /api/v1/domains/example.com HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
                String::from_utf8_lossy(&bearer)
            )
            .into_bytes(),
            &[400],
            true,
            None,
        ),
        c(
            "http: 2 MiB chunked body",
            {
                let mut r = format!(
                    "PUT /api/v1/domains/example.com HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    String::from_utf8_lossy(&bearer)
                )
                .into_bytes();
                for _ in 0..32 {
                    r.extend_from_slice(format!("{:x}\r\n{}\r\n", 64 << 10, " ".repeat(64 << 10)).as_bytes());
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            },
            &[413],
            true,
            None,
        ),
        c(
            "upload: 2 MiB log",
            req("PUT", format!("/{MAC}-app.log").as_bytes(), &[&basic], &vec![b'x'; 2 << 20]),
            &[413],
            false,
            None,
        ),
        // ------------------------------------------------ admin auth
        c("admin auth: missing", req("GET", b"/api/v1/models", &[], b""), &[401], true, None),
        c("admin auth: wrong token", req("GET", b"/api/v1/models", &[b"Authorization: Bearer wrong"], b""), &[401], true, None),
        c("admin auth: `Bearer ` empty", req("GET", b"/api/v1/models", &[b"Authorization: Bearer "], b""), &[401], true, None),
        c("admin auth: `Bearer` alone", req("GET", b"/api/v1/models", &[b"Authorization: Bearer"], b""), &[401], true, None),
        c("admin auth: non-UTF-8 token", req("GET", b"/api/v1/models", &[b"Authorization: Bearer \xff\xfe\xfd"], b""), &[401], true, None),
        c("admin auth: basic credentials", req("GET", b"/api/v1/models", &[&basic], b""), &[401], true, None),
        c(
            "admin auth: token plus trailing garbage",
            req("GET", b"/api/v1/models", &[format!("Authorization: Bearer {} x", s.token).as_bytes()], b""),
            &[401],
            true,
            None,
        ),
        c(
            "admin auth: the token twice",
            req("GET", b"/api/v1/models", &[&bearer, &bearer], b""),
            &[400],
            true,
            Some("Authorization"),
        ),
        c(
            "admin auth: missing, on a write",
            req("PUT", b"/api/v1/domains/example.com", &[json_ct], b"{\"defaults\":null}"),
            &[401],
            true,
            None,
        ),
        // ------------------------------------------------ admin MAC spellings
        c("admin MAC: too short", api("GET", "/phones/001565aabb", b""), &[400], true, Some("mac")),
        c("admin MAC: too long", api("GET", "/phones/001565aabbccdd", b""), &[400], true, Some("mac")),
        c("admin MAC: non-hex", api("GET", "/phones/00156zaabbcc", b""), &[400], true, Some("mac")),
        c("admin MAC: mixed separators", api("GET", "/phones/00:15-65.aa:bb:cc", b""), &[400], true, Some("mac")),
        c("admin MAC: 0x prefix", api("GET", "/phones/0x001565aabbcc", b""), &[400], true, Some("mac")),
        c("admin MAC: space", api("GET", "/phones/%20", b""), &[400], true, Some("mac")),
        c("admin MAC: CR/LF", api("GET", "/phones/001565aabbcc%0d%0a", b""), &[400], true, Some("mac")),
        c("admin MAC: not UTF-8", api("GET", "/phones/%ff%fe", b""), &[400], true, Some("mac")),
        c("admin MAC: empty", api("GET", "/phones/", b""), &[404], true, None),
        c("admin MAC: on a write", api_json("PUT", "/phones/00156zaabbcc", json!({"device-models-model": "yealink-t46s"})), &[400], true, Some("mac")),
        c("admin MAC: members", api_json("PUT", "/phones/0x001565aabbcc/members", json!({"members": []})), &[400], true, Some("mac")),
        c(
            "admin MAC: in an account body",
            acc(json!({"device-provisioning-mac-address": "00:15-65.aa:bb:cc"})),
            &[400],
            true,
            Some("device-provisioning-mac-address"),
        ),
        c("admin MAC: cursor", api("GET", "/phones?cursor=zz", b""), &[400], true, Some("cursor")),
        // ------------------------------------------------ admin paths
        c("admin path: traversal out of the API", api("GET", "/../../etc/passwd", b""), &[404], true, None),
        c("admin path: encoded traversal in a domain", api("GET", "/domains/..%2f..%2fetc%2fpasswd", b""), &[400], true, Some("domain")),
        c("admin path: CR/LF in a domain", api("GET", "/domains/exa%0d%0ample.com", b""), &[400], true, Some("domain")),
        c(
            "admin path: traversal in a preview file",
            api("GET", &format!("/phones/{MAC}/files/..%2f..%2fetc%2fpasswd"), b""),
            &[404],
            true,
            None,
        ),
        c("admin path: not UTF-8 in a domain", api("GET", "/domains/%ff", b""), &[400], true, Some("domain")),
        c("admin path: wrong method", api("PATCH", &format!("/phones/{MAC}"), b"{}"), &[405], true, None),
        c(
            "admin query: duplicate orgId",
            api("GET", &format!("/phones/{MAC}/members?orgId=a&orgId=b"), b""),
            &[400],
            true,
            Some("query"),
        ),
c(
            "admin path: 9 KB query string",
            api("GET", &format!("/phones?domain={}", "a".repeat(9 * 1024)), b""),
            &[414],
            true,
            None,
        ),
                c("admin query: limit not a number", api("GET", "/phones?limit=abc", b""), &[400], true, Some("query")),
        c("admin path: NUL in a domain", api("GET", "/domains/exa%00mple.com", b""), &[400], true, Some("domain")),
        c("admin path: 65-character domain", api("GET", &format!("/domains/{}", "a".repeat(65)), b""), &[400], true, Some("domain")),
        c("admin path: 17-character user", api("GET", &format!("/domains/example.com/users/{}/devices", "1".repeat(17)), b""), &[400], true, Some("user")),
        c("admin path: ~ with the server token", api("GET", "/domains/~", b""), &[404], true, None),
        c("admin query: limit 0", api("GET", "/phones?limit=0", b""), &[400], true, Some("limit")),
        c("admin query: limit beyond u64", api("GET", "/phones?limit=99999999999999999999999", b""), &[400], true, Some("query")),
        // ------------------------------------------------ content type
        c(
            "content type: text/plain",
            req("PUT", b"/api/v1/domains/example.com", &[&bearer, b"Content-Type: text/plain"], b"{}"),
            &[415],
            true,
            None,
        ),
        c(
            "content type: missing",
            req("PUT", b"/api/v1/domains/example.com", &[&bearer], b"{}"),
            &[415],
            true,
            None,
        ),
        c(
            "content type: application/jsonx",
            req("PUT", b"/api/v1/domains/example.com", &[&bearer, b"Content-Type: application/jsonx"], b"{}"),
            &[415],
            true,
            None,
        ),
        c(
            "content type: charset=utf-16",
            req(
                "PUT",
                b"/api/v1/domains/example.com",
                &[&bearer, b"Content-Type: application/json; charset=utf-16"],
                &"{}".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<_>>(),
            ),
            &[415],
            true,
            None,
        ),
        c(
            "content type: not UTF-8",
            req("PUT", b"/api/v1/domains/example.com", &[&bearer, b"Content-Type: application/\xffjson"], b"{}"),
            &[415],
            true,
            None,
        ),
        c(
            "content type: text/plain, then application/json",
            req("PUT", b"/api/v1/domains/example.com", &[&bearer, b"Content-Type: text/plain", json_ct], b"{}"),
            &[415],
            true,
            None,
        ),
        // ------------------------------------------------ malformed JSON
        c("json: not JSON", api("PUT", "/domains/example.com", b"defaults=1"), &[400], true, None),
        c("json: truncated", api("PUT", "/domains/example.com", b"{\"defaults\": {\"a\": "), &[400], true, None),
        c("json: empty body", api("PUT", "/domains/example.com", b""), &[400], true, None),
        c("json: an array, not an object", api("PUT", "/domains/example.com", b"[]"), &[400], true, None),
        c("json: null", api("PUT", "/domains/example.com", b"null"), &[400], true, None),
        c("json: trailing garbage", api("PUT", "/domains/example.com", b"{} {}"), &[400], true, None),
        c("json: non-UTF-8 in a string", api("PUT", &format!("/phones/{MAC}/members"), b"{\"members\": [{\"port\": 1, \"id\": \"1004a@example.com\", \"lineLabel\": \"\xff\xfe\"}]}"), &[400], true, None),
        c("json: lone surrogate escape", api("PUT", &format!("/phones/{MAC}/members"), b"{\"members\": [{\"port\": 1, \"id\": \"1004a@example.com\", \"lineLabel\": \"\\ud800\"}]}"), &[400], true, None),
        c("json: number out of range", api("PUT", &format!("/phones/{MAC}/members"), b"{\"members\": [{\"port\": 1e400, \"id\": \"1004a@example.com\"}]}"), &[400], true, None),
        c(
            "json: duplicate top-level key",
            api("PUT", "/domains/example.com", b"{\"defaults\": {}, \"defaults\": {\"sip-server-port\": \"5070\"}}"),
            &[400],
            true,
            Some("defaults"),
        ),
        c(
            "json: duplicate nested key",
            api(
                "PUT",
                &format!("/phones/{MAC}/members"),
                b"{\"members\": [{\"port\": 1, \"id\": \"1004a@example.com\", \"lineLabel\": \"a\", \"lineLabel\": \"b\", \"primaryOwner\": true}]}",
            ),
            &[400],
            true,
            Some("members[0].lineLabel"),
        ),
        c(
            "json: 2 MiB body",
            api("PUT", "/domains/example.com", format!("{{\"defaults\": {{\"x\": \"{}\"}}}}", "a".repeat(2 << 20)).as_bytes()),
            &[413],
            true,
            None,
        ),
        c(
            "json: nested 10,000 deep",
            api(
                "PUT",
                "/domains/example.com",
                format!("{{\"defaults\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes(),
            ),
            &[400],
            true,
            None,
        ),
        c("json: byte-order mark", api("PUT", "/domains/example.com", b"\xef\xbb\xbf{}"), &[400], true, None),
        c(
            "json: 900 KB label (under the body limit)",
            members(json!({"port": 1, "id": "1004a@example.com", "lineLabel": "a".repeat(900 * 1024)})),
            &[400],
            true,
            Some("members[0].lineLabel"),
        ),
        c(
            "json: 129-character setting name",
            domain(json!({"defaults": {"a".repeat(129): "1"}})),
            &[400],
            true,
            Some(format!("defaults.{}", "a".repeat(129)).as_str()),
        ),
        // ------------------------------------------------ wrong types
        c("type: string where integer", acc(json!({"device-sip-registration-expiry-seconds": "soon"})), &[400], true, Some("device-sip-registration-expiry-seconds")),
        c("type: string where line number", acc(json!({"device-provisioning-line": "1"})), &[400], true, Some("device-provisioning-line")),
        c("type: float where integer", members(json!({"port": 1.5, "id": "1004a@example.com"})), &[400], true, Some("members[0].port")),
        c("type: negative port", members(json!({"port": -1, "id": "1004a@example.com"})), &[400], true, Some("members[0].port")),
        c("type: integer beyond u64", api("PUT", &format!("/phones/{MAC}/members"), b"{\"members\": [{\"port\": 18446744073709551616, \"id\": \"1004a@example.com\"}]}"), &[400], true, Some("members[0].port")),
        c("type: integer where boolean", members(json!({"port": 1, "id": "1004a@example.com", "primaryOwner": 1})), &[400], true, Some("members[0].primaryOwner")),
        c("type: string where boolean", members(json!({"port": 1, "id": "1004a@example.com", "hotlineEnabled": "true"})), &[400], true, Some("members[0].hotlineEnabled")),
        c("type: integer where string", members(json!({"port": 1, "id": "1004a@example.com", "lineLabel": 5})), &[400], true, Some("members[0].lineLabel")),
        c("type: array where object (defaults)", domain(json!({"defaults": []})), &[400], true, Some("defaults")),
        c("type: object where array (members)", api_json("PUT", &format!("/phones/{MAC}/members"), json!({"members": {"port": 1}})), &[400], true, Some("members")),
        c("type: string where object (member)", members(json!("1004a@example.com")), &[400], true, Some("members[0]")),
        c("type: array where string (model)", phone_put(json!({"device-models-model": ["yealink-t46s"]})), &[400], true, Some("device-models-model")),
        c("type: boolean where string (domain)", phone_put(json!({"domain": true})), &[400], true, Some("domain")),
        c("type: object where override value", phone_put(json!({"device-provisioning-overrides": {"custom.key": {"a": 1}}})), &[400], true, Some("device-provisioning-overrides.custom.key")),
        c("type: number where overrides", acc(json!({"device-provisioning-overrides": 5})), &[400], true, Some("device-provisioning-overrides")),
        c("type: object where enum", acc(json!({"device-srtp-enabled": {}})), &[400], true, Some("device-srtp-enabled")),
        c(
            "type: number where device name",
            api_json("POST", "/domains/example.com/users/1004/devices", json!({"device": 5})),
            &[400],
            true,
            Some("device"),
        ),
        c(
            "type: device name missing",
            api_json("POST", "/domains/example.com/users/1004/devices", json!({})),
            &[400],
            true,
            Some("device"),
        ),
        // ------------------------------------------------ unknown fields
        c("unknown: top-level field", domain(json!({"bogus": 1})), &[400], true, Some("bogus")),
        c("unknown: on a phone", phone_put(json!({"colour": "red"})), &[400], true, Some("colour")),
        c("unknown: on an account", acc(json!({"device-sip-password": "x"})), &[400], true, Some("device-sip-password")),
        c("unknown: in a member", members(json!({"port": 1, "id": "1004a@example.com", "colour": "red"})), &[400], true, Some("members[0].colour")),
        c("unknown: two of them (the first is named)", domain(json!({"zzz": 1, "aaa": 2})), &[400], true, Some("zzz")),
        c("unknown: differs only in case", members(json!({"port": 1, "id": "1004a@example.com", "LineLabel": "x"})), &[400], true, Some("members[0].LineLabel")),
        c("unknown: setting name in defaults", domain(json!({"defaults": {"Not A Setting": "1"}})), &[400], true, Some("defaults.Not A Setting")),
    ];

    // ---------------------------------------------------- CR/LF (and NUL) in every free-text field
    let crlf = "x\r\ny";
    let member_base = json!({"port": 1, "id": "1004a@example.com", "primaryOwner": true});
    let with = |base: &Value, k: &str, val: &str| {
        let mut m = base.clone();
        m[k] = json!(val);
        m
    };
    v.extend([
        c(
            "CR/LF: lineLabel",
            members(with(&member_base, "lineLabel", crlf)),
            &[400],
            true,
            Some("members[0].lineLabel"),
        ),
        c(
            "CR/LF: hotlineDestination",
            members(with(&member_base, "hotlineDestination", crlf)),
            &[400],
            true,
            Some("members[0].hotlineDestination"),
        ),
        c(
            "CR/LF: member id",
            members(json!({"port": 1, "id": "1004a@example.com\r\n"})),
            &[400],
            true,
            Some("members[0].id"),
        ),
        c(
            "NUL: lineLabel",
            members(with(&member_base, "lineLabel", "a\0b")),
            &[400],
            true,
            Some("members[0].lineLabel"),
        ),
        c(
            "CR/LF: SIP password",
            acc(json!({"device-sip-registration-password": crlf})),
            &[400],
            true,
            Some("device-sip-registration-password"),
        ),
        c(
            "CR/LF: emergency caller id",
            acc(json!({"caller-id-number-emergency": crlf})),
            &[400],
            true,
            Some("caller-id-number-emergency"),
        ),
        c(
            "CR/LF: allowed User-Agent",
            acc(json!({"device-sip-allowed-user-agent": crlf})),
            &[400],
            true,
            Some("device-sip-allowed-user-agent"),
        ),
        c(
            "CR/LF: emergency address id",
            acc(json!({"emergency-address-id": crlf})),
            &[400],
            true,
            Some("emergency-address-id"),
        ),
        c(
            "CR/LF: core server",
            acc(json!({"device-provisioning-registration-core-server": "sip.example.com\r\nx"})),
            &[400],
            true,
            Some("device-provisioning-registration-core-server"),
        ),
        c(
            "CR/LF: account provisioning username",
            acc(json!({"device-provisioning-username": crlf, "device-provisioning-password": "p"})),
            &[400],
            true,
            Some("device-provisioning-username"),
        ),
        c(
            "CR/LF: account override value",
            acc(json!({"device-provisioning-overrides": {"custom.key": crlf}})),
            &[400],
            true,
            Some("device-provisioning-overrides.custom.key"),
        ),
        // The string form is `key = value` lines (CR/LF line ends allowed); a CR inside
        // a line is a control character in the value.
        c(
            "CR: inside a line of the overrides string form",
            acc(json!({"device-provisioning-overrides": "custom.key = a\rb\r\nother.key = 1"})),
            &[400],
            true,
            Some("device-provisioning-overrides.custom.key"),
        ),
        c(
            "CR/LF: device name in a POST",
            api_json(
                "POST",
                "/domains/example.com/users/1004/devices",
                json!({"device": crlf}),
            ),
            &[400],
            true,
            Some("device"),
        ),
        c(
            "CR/LF: domain default value",
            domain(json!({"defaults": {"custom-text": crlf}})),
            &[400],
            true,
            Some("defaults.custom-text"),
        ),
        c(
            "CR/LF: domain provisioning password",
            domain(
                json!({"device-provisioning-username": "u", "device-provisioning-password": crlf}),
            ),
            &[400],
            true,
            Some("device-provisioning-password"),
        ),
        c(
            "CR/LF: phone provisioning username",
            phone_put(
                json!({"device-provisioning-username": crlf, "device-provisioning-password": "p"}),
            ),
            &[400],
            true,
            Some("device-provisioning-username"),
        ),
        c(
            "CR/LF: phone override value",
            phone_put(json!({"device-provisioning-overrides": {"custom.key": crlf}})),
            &[400],
            true,
            Some("device-provisioning-overrides.custom.key"),
        ),
        c(
            "CR/LF: phone override key",
            phone_put(json!({"device-provisioning-overrides": {"custom\r\nkey": "1"}})),
            &[400],
            true,
            Some("device-provisioning-overrides.custom\r\nkey"),
        ),
        c(
            "CR/LF: phone model",
            phone_put(json!({"device-models-model": "yealink-t46s\r\n"})),
            &[400],
            true,
            Some("device-models-model"),
        ),
        c(
            "CR/LF: phone domain",
            phone_put(json!({"domain": "example.com\r\n"})),
            &[400],
            true,
            Some("domain"),
        ),
    ]);
    v
}

#[tokio::test]
async fn hostile_input_matrix() {
    let s = TestServer::start().await;
    seed(&s).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    // The seeded phone is served before (and after) the matrix.
    assert_eq!(s.fetch(&format!("{MAC}.cfg")).await.status(), 200);
    let before = snapshot(&s);
    let cases = cases(&s);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    eprintln!("{} hostile cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let r = send(&addr, case.raw).await;
        let body = String::from_utf8_lossy(&r.body).to_string();
        let mut problems = Vec::new();
        if !case.want.contains(&r.status) {
            problems.push(format!("status {} (want {:?})", r.status, case.want));
        }
        if r.status >= 500 {
            problems.push("a 5xx".into());
        }
        if case.api {
            let err = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|j| j.get("error").cloned());
            match err {
                Some(e) if e["code"].is_string() && e["message"].is_string() => {
                    let field = e.get("field").and_then(Value::as_str);
                    if field != case.field.as_deref() {
                        problems.push(format!("error.field {field:?} (want {:?})", case.field));
                    }
                }
                _ => problems.push("not the JSON error shape".into()),
            }
        }
        if r.status == 401 {
            let want: &[u8] = if case.api {
                b"Bearer realm=\"autoprov\""
            } else {
                b"Basic realm=\"autoprov\""
            };
            if r.header("www-authenticate") != Some(want) {
                problems.push("401 without its challenge".into());
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} — body {:.200}",
                case.name,
                problems.join("; "),
                body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing a hostile request sent reached the store or the uploads folder.
    assert_eq!(snapshot(&s), before, "the stored data changed");
    assert!(!s.state.uploads.join(MAC).exists(), "an upload was stored");
    assert_eq!(s.fetch(&format!("{MAC}.cfg")).await.status(), 200);
}

/// Every value an XML file sets, as a conforming parser (roxmltree) reads it: attribute
/// values and each element's own text. A file that is not well-formed (`--` in a comment,
/// `]]>` in text, a bad name, a character XML cannot hold) fails here.
fn xml_values(file: &str, text: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(text)
        .unwrap_or_else(|e| panic!("{file}: not well-formed XML: {e}\n{text}"));
    let mut values = Vec::new();
    for e in doc.descendants().filter(roxmltree::Node::is_element) {
        values.extend(e.attributes().map(|a| a.value().to_string()));
        values.push(e.children().filter_map(|c| c.text()).collect());
    }
    values
}

/// An account `(user, device, password)` of model `(mac, model)` in example.com, linked at
/// port 1 with `label`, the phone holding the override `(key, value)`.
async fn seed_phone(
    s: &TestServer,
    (user, device, password): (String, &str, &str),
    (mac, model): (&str, &str),
    label: &str,
    (key, value): (&str, &str),
) {
    let (st, b) = s
        .put(
            &format!("/domains/example.com/users/{user}/devices/{device}"),
            json!({
                "device-sip-registration-password": password,
                "device-models-model": model,
                "device-provisioning-mac-address": mac,
            }),
        )
        .await;
    assert_eq!(st, 201, "{model}: {b}");
    let (st, b) = s
        .put(
            &format!("/phones/{mac}/members"),
            json!({"members": [{"port": 1, "id": format!("{device}@example.com"),
                   "lineLabel": label, "primaryOwner": true}]}),
        )
        .await;
    assert_eq!(st, 200, "{model}: {b}");
    let (st, b) = s
        .put(
            &format!("/phones/{mac}"),
            json!({"device-provisioning-overrides": {key: value}}),
        )
        .await;
    assert_eq!(st, 200, "{model}: {b}");
    assert_eq!(
        b["device-provisioning-overrides"][key], value,
        "stored as typed"
    );
}

/// XML metacharacters in free-text fields are accepted (they are legal text) and come out
/// escaped: each vendor's XML file stays well-formed to a conforming parser and gives back
/// exactly what was typed. `--` (in the values and in the account id) is accepted too and
/// must not end up inside a comment as is.
#[tokio::test]
async fn accepted_metacharacters_render_escaped() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    let label = r#"L<b>&amp;"q" 'a' ]]> </x> <!-- a--b -->"#;
    let password = r#"P]]><![CDATA[&"'<"#;
    let value = r#"O<&>"' ]]>&#x41;"#;
    for (i, (mac, model, file, key)) in [
        (
            "0004f2aabbcc",
            "polycom-vvx450",
            "0004f2aabbcc-user.cfg",
            "feature.custom.note",
        ),
        (
            "000b82aabbcc",
            "grandstream-gxp2170",
            "cfg000b82aabbcc.xml",
            "P9999",
        ),
        (
            "c4b36aaabbcc",
            "cisco-cp8851",
            "c4b36aaabbcc.xml",
            "Custom_Note",
        ),
        (
            "c4b36aaabbdd",
            "cisco-spa112",
            "spac4b36aaabbdd.xml",
            "Custom_Note",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // `--` in the account id too: Cisco files name it in a comment.
        let device = format!("200{i}--a");
        let account = (format!("200{i}"), device.as_str(), password);
        seed_phone(&s, account, (mac, model), label, (key, value)).await;
        let (st, _, text) = s.fetch_text(file).await;
        assert_eq!(st, 200, "{file}");
        assert!(text.starts_with("<?xml"), "{file}: {text:.80}");
        for raw in [label, password, value] {
            assert!(
                !text.contains(raw),
                "{file}: {raw:?} is in the file unescaped"
            );
        }
        let values = xml_values(file, &text);
        for (what, v) in [
            ("label", label),
            ("password", password),
            ("override", value),
        ] {
            assert!(
                values.iter().any(|x| x == v),
                "{file}: the {what} does not read back as typed:\n{text}"
            );
        }
    }
}
