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
    for secret in [
        "SIP-SECRET-123",
        "PROV-SECRET-456",
        "WRONG-SECRET-789",
        s.token.as_str(),
        s.prov.1.as_str(),
        domain_token.as_str(),
        "BOOT-SECRET-321",
        "SIP-SECRET-654",
        issued.as_str(),
        "account.1.password",
        "Authorization",
        "authorization",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
    assert!(
        !logs.contains(body.lines().nth(4).unwrap()),
        "rendered bodies are not logged"
    );
}
