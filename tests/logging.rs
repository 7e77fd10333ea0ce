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
    s.fetch_as(
        "001565aabbcc.cfg",
        Some(("provuser", "WRONG-SECRET-789")),
        None,
    )
    .await;
    let (st, _) = s
        .put(
            "/phones/001565aabbcc",
            json!({"device-provisioning-password": "x\ny"}),
        )
        .await;
    assert_eq!(st, 400);
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("status=200"),
        "request lines are logged: {logs}"
    );
    for secret in [
        "SIP-SECRET-123",
        "PROV-SECRET-456",
        "WRONG-SECRET-789",
        s.token.as_str(),
        s.prov.1.as_str(),
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
