//! No secret in any log line: captures every log line of a full walkthrough (in its own test
//! binary, since it installs the global subscriber) and looks for passwords, tokens and
//! rendered bodies.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestServer;
use serde_json::json;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form a secret could take on its way to a log: as it is, base64 (standard, URL-safe,
/// padded or not) of it and of `user:secret` (a Basic `Authorization` value), percent- and
/// JSON-escaped, hex, and its SHA-256 in hex.
fn encodings(user: &str, secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use sha2::Digest as _;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = vec![secret.to_string(), hex(secret.as_bytes())];
    out.push(hex(&sha2::Sha256::digest(secret.as_bytes())));
    let basic = format!("{user}:{secret}");
    for raw in [secret, basic.as_str()] {
        for e in [STANDARD, URL_SAFE] {
            out.push(e.encode(raw));
        }
        for e in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            out.push(e.encode(raw));
        }
    }
    let percent: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    out.push(percent);
    out.push(serde_json::to_string(secret).unwrap());
    out
}

/// Opens a common file with the server-default credentials through Digest (SHA-256, then
/// MD5) and returns what a log must never show: each `response=` value and each HA1.
async fn digest_answers(s: &TestServer) -> Vec<String> {
    use md5::Digest as _;
    fn h(md5: bool, text: &str) -> String {
        let b: Vec<u8> = if md5 {
            md5::Md5::digest(text.as_bytes()).to_vec()
        } else {
            sha2::Sha256::digest(text.as_bytes()).to_vec()
        };
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    // A domain on Digest makes the server challenge with it.
    let (st, b) = s
        .put(
            "/domains/digest.example",
            serde_json::json!({"device-provisioning-auth-scheme": "digest"}),
        )
        .await;
    assert!(st.is_success(), "{b}");
    let uri = "/y000000000066.cfg";
    let r = s.fetch_as(&uri[1..], None, None).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut secrets = Vec::new();
    for (md5, alg) in [(false, "SHA-256"), (true, "MD5")] {
        let ha1 = h(md5, &format!("{}:autoprov:{}", s.prov.0, s.prov.1));
        let ha2 = h(md5, &format!("GET:{uri}"));
        let nc = if md5 { "00000002" } else { "00000001" };
        let response = h(md5, &format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"));
        let header = format!(
            "Digest username=\"{}\", realm=\"autoprov\", nonce=\"{nonce}\", uri=\"{uri}\", \
             algorithm={alg}, qop=auth, nc={nc}, cnonce=\"0a4f113b\", response=\"{response}\"",
            s.prov.0
        );
        let r = s
            .client
            .get(format!("{}{uri}", s.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{alg} answer");
        secrets.extend([ha1, response]);
    }
    secrets
}

#[tokio::test]
async fn logs_carry_no_secrets() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_env_filter("autoprov=trace")
        .with_ansi(false)
        .event_format(autoprov::telemetry::TextLine)
        .with_writer(move || writer.clone())
        .init();
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    let (st, _) = s
        .put(
            "/domains/example.com/users/1004/devices/1004a",
            json!({"device-sip-registration-password": "SIP-SECRET-123", "device-models-model": "yealink-t46s",
                   "device-provisioning-mac-address": "001565aabbcc", "device-provisioning-username": "provuser",
                   "device-provisioning-password": "PROV-SECRET-456"}),
        )
        .await;
    assert!(st.is_success());
    let r = s
        .fetch_as(
            "001565aabbcc.cfg",
            Some(("provuser", "PROV-SECRET-456")),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let r = s
        .fetch_as(
            "001565aabbcc.cfg",
            Some(("provuser", "WRONG-SECRET-789")),
            None,
        )
        .await;
    assert_eq!(r.status(), 401, "the wrong password reached the server");
    let (st, _) = s
        .put(
            "/phones/001565aabbcc",
            json!({"device-provisioning-password": "x\ny"}),
        )
        .await;
    assert_eq!(st, 400);

    // Domain tokens: the token is shown once, in the response body only.
    let (st, t) = s.post("/tokens", json!({"domain": "example.com"})).await;
    assert_eq!(st, 201, "{t}");
    let domain_token = t["token"].as_str().unwrap().to_string();
    let r = s
        .client
        .get(format!("{}/api/v1/domains/example.com", s.url))
        .bearer_auth(&domain_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A bootstrap exchange: neither the bootstrap password nor the generated one is logged.
    let (st, _) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-bootstrap-username": "boot",
                   "device-provisioning-bootstrap-password": "BOOT-SECRET-321",
                   "device-provisioning-auth-scheme": "basic"}),
        )
        .await;
    assert_eq!(st, 200);
    s.put(
        "/domains/example.com/users/1005/devices/1005a",
        json!({"device-sip-registration-password": "SIP-SECRET-654", "device-models-model": "yealink-t46s",
               "device-provisioning-mac-address": "001565aabbcd"}),
    )
    .await;
    let r = s
        .fetch_as("001565aabbcd.cfg", Some(("boot", "BOOT-SECRET-321")), None)
        .await;
    assert_eq!(r.status(), 200);
    let issued = r
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("static.auto_provision.server.password = "))
        .unwrap()
        .to_string();

    let digest = digest_answers(&s).await;
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("status=200"),
        "request lines are logged: {logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("path=/001565aabbcc.cfg") && l.contains("mac=001565aabbcc")),
        "a phone's request line names its MAC: {logs}"
    );
    let pairs = [
        ("", "SIP-SECRET-123"),
        ("provuser", "PROV-SECRET-456"),
        ("provuser", "WRONG-SECRET-789"),
        ("", s.token.as_str()),
        (s.prov.0.as_str(), s.prov.1.as_str()),
        ("", domain_token.as_str()),
        ("boot", "BOOT-SECRET-321"),
        ("", "SIP-SECRET-654"),
        ("", issued.as_str()),
    ];
    for (user, secret) in pairs {
        for form in encodings(user, secret) {
            assert!(
                !logs.contains(&form),
                "{form} (a form of {secret}) is in the logs"
            );
        }
    }
    for value in digest.iter().chain(&[
        "account.1.password".to_string(),
        "Authorization".to_string(),
        "authorization".to_string(),
    ]) {
        assert!(
            !logs.contains(value.as_str()),
            "{value} appears in the logs"
        );
    }
    assert!(
        !logs.contains(body.lines().nth(4).unwrap()),
        "rendered bodies are not logged"
    );
}
