//! HTTP Digest (RFC 7616) on the phone path against the real server: chosen per domain,
//! SHA-256 and MD5 answers, Basic refused where Digest was chosen, replays and stale nonces,
//! the server-default credentials through Digest, and challenges that are the same for
//! known and unknown MACs.

mod common;

use std::time::{Duration, SystemTime};

use common::TestServer;
use md5::Md5;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

const MAC: &str = "001565aabbcc";

fn h(alg: &str, parts: &[&str]) -> String {
    let joined = parts.join(":");
    let bytes: Vec<u8> = match alg {
        "MD5" => Md5::digest(joined.as_bytes()).to_vec(),
        _ => Sha256::digest(joined.as_bytes()).to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A phone-side Digest answer.
fn answer(alg: &str, user: &str, pass: &str, nonce: &str, uri: &str, nc: u32) -> String {
    let cnonce = "0a4f113b";
    let nc = format!("{nc:08x}");
    let ha1 = h(alg, &[user, "autoprov", pass]);
    let ha2 = h(alg, &["GET", uri]);
    let response = h(alg, &[&ha1, nonce, &nc, cnonce, "auth", &ha2]);
    format!(
        "Digest username=\"{user}\", realm=\"autoprov\", nonce=\"{nonce}\", uri=\"{uri}\", \
         algorithm={alg}, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\""
    )
}

/// Every `WWW-Authenticate` value of a response.
fn challenges(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn nonce_of(challenge: &str) -> String {
    let start = challenge.find("nonce=\"").unwrap() + 7;
    let end = challenge[start..].find('"').unwrap() + start;
    challenge[start..end].to_string()
}

async fn get(s: &TestServer, file: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut rb = s.client.get(format!("{}/{file}", s.url));
    if let Some(a) = authorization {
        rb = rb.header("authorization", a);
    }
    rb.send().await.unwrap()
}

/// Asks without credentials and returns the SHA-256 challenge's nonce.
async fn fresh_nonce(s: &TestServer, file: &str) -> String {
    let r = get(s, file, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    nonce_of(&challenges(&r)[0])
}

#[tokio::test]
async fn digest_chosen_per_domain() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    let file = format!("{MAC}.cfg");
    let uri = format!("/{file}");

    // Nobody uses Digest yet: the challenge is Basic alone, as before.
    let r = get(&s, &file, None).await;
    assert_eq!(challenges(&r), vec!["Basic realm=\"autoprov\"".to_string()]);

    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-auth-scheme": "digest",
                   "device-provisioning-username": "dom",
                   "device-provisioning-password": "Dom-Pass-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["device-provisioning-auth-scheme"], "digest");

    // Now every 401 offers Digest (SHA-256 first, then MD5) and Basic, for a known MAC and
    // an unknown one alike.
    let known = challenges(&get(&s, &file, None).await);
    let unknown = challenges(&get(&s, "001565000001.cfg", None).await);
    let shape = |c: &[String]| {
        c.iter()
            .map(|v| v.split(", nonce=").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&known),
        vec![
            "Digest realm=\"autoprov\", qop=\"auth\", algorithm=SHA-256".to_string(),
            "Digest realm=\"autoprov\", qop=\"auth\", algorithm=MD5".to_string(),
            "Basic realm=\"autoprov\"".to_string(),
        ]
    );
    assert_eq!(shape(&known), shape(&unknown));

    // SHA-256 and MD5 answers both open the phone.
    for (i, alg) in ["SHA-256", "MD5"].into_iter().enumerate() {
        let nonce = fresh_nonce(&s, &file).await;
        let a = answer(alg, "dom", "Dom-Pass-1", &nonce, &uri, i as u32 + 1);
        let r = get(&s, &file, Some(&a)).await;
        assert_eq!(r.status(), StatusCode::OK, "{alg}");
        assert!(r.text().await.unwrap().contains("account.1.enable = 1"));
    }

    // Basic with the right password is refused where Digest was chosen.
    let r = s.fetch_as(&file, Some(("dom", "Dom-Pass-1")), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A wrong password, another URI, a forged nonce: 401, not stale.
    let nonce = fresh_nonce(&s, &file).await;
    for a in [
        answer("SHA-256", "dom", "wrong", &nonce, &uri, 1),
        answer("SHA-256", "dom", "Dom-Pass-1", &nonce, "/other.cfg", 1),
        answer("SHA-256", "dom", "Dom-Pass-1", "AAAAforgedAAAA", &uri, 1),
    ] {
        let r = get(&s, &file, Some(&a)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(!challenges(&r)[0].contains("stale=true"));
    }

    // A replayed answer is refused with stale=true (a real phone simply retries).
    let nonce = fresh_nonce(&s, &file).await;
    let a = answer("SHA-256", "dom", "Dom-Pass-1", &nonce, &uri, 1);
    assert_eq!(get(&s, &file, Some(&a)).await.status(), StatusCode::OK);
    let r = get(&s, &file, Some(&a)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenges(&r)[0].contains("stale=true"));
    // The next count on the same nonce is fine.
    let a2 = answer("SHA-256", "dom", "Dom-Pass-1", &nonce, &uri, 2);
    assert_eq!(get(&s, &file, Some(&a2)).await.status(), StatusCode::OK);

    // An expired nonce: right password → stale=true; wrong password → not stale.
    let old = s
        .state
        .access
        .nonces
        .issue("autoprov", SystemTime::now() - Duration::from_secs(3600));
    let r = get(
        &s,
        &file,
        Some(&answer("SHA-256", "dom", "Dom-Pass-1", &old, &uri, 1)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenges(&r)[0].contains("stale=true"),
        "{:?}",
        challenges(&r)
    );
    let r = get(
        &s,
        &file,
        Some(&answer("SHA-256", "dom", "nope", &old, &uri, 2)),
    )
    .await;
    assert!(!challenges(&r)[0].contains("stale=true"));

    // Bad scheme values are refused naming the field; null goes back to the model's.
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-auth-scheme": "ntlm"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["field"], "device-provisioning-auth-scheme");
    let (st, _) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-auth-scheme": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = s.fetch_as(&file, Some(("dom", "Dom-Pass-1")), None).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "Basic again once Digest is unset"
    );
}

#[tokio::test]
async fn server_default_credentials_through_digest() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.put(
        "/domains/example.com",
        json!({"device-provisioning-auth-scheme": "digest"}),
    )
    .await;
    // A common file, opened with the server-default credentials via Digest (checked
    // against the stored HA1, not a plaintext password).
    let file = "y000000000066.cfg";
    let nonce = fresh_nonce(&s, file).await;
    for (i, alg) in ["SHA-256", "MD5"].into_iter().enumerate() {
        let a = answer(
            alg,
            &s.prov.0,
            &s.prov.1,
            &nonce,
            "/y000000000066.cfg",
            i as u32 + 1,
        );
        assert_eq!(
            get(&s, file, Some(&a)).await.status(),
            StatusCode::OK,
            "{alg}"
        );
    }
    let a = answer("MD5", &s.prov.0, "wrong", &nonce, "/y000000000066.cfg", 9);
    assert_eq!(
        get(&s, file, Some(&a)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // An unknown MAC with the server default via Digest: 404, as with Basic.
    let nonce = fresh_nonce(&s, "001565000002.cfg").await;
    let a = answer(
        "SHA-256",
        &s.prov.0,
        &s.prov.1,
        &nonce,
        "/001565000002.cfg",
        1,
    );
    assert_eq!(
        get(&s, "001565000002.cfg", Some(&a)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn digest_chosen_per_model() {
    // A copy of the shipped models where the T46S asks for Digest (as a Gigaset model would).
    let models = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(common::repo("models")).unwrap() {
        let p = e.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if p.file_name().unwrap() == "yealink-t46s.toml" {
            text = text.replace("ports = 16", "ports = 16\nauth_scheme = \"digest\"");
        }
        std::fs::write(models.path().join(p.file_name().unwrap()), text).unwrap();
    }
    let dir = models.path().to_path_buf();
    let s = TestServer::start_with(move |c| c.models = dir).await;
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    s.seed_account(
        "example.com",
        "1005",
        "1005a",
        "001565aabbcd",
        "yealink-t48s",
    )
    .await;
    let file = format!("{MAC}.cfg");
    // Digest is offered from the start, and Basic no longer opens the T46S; the T48S of the
    // same domain keeps Basic.
    let r = get(&s, &file, None).await;
    assert!(
        challenges(&r)[0].starts_with("Digest "),
        "{:?}",
        challenges(&r)
    );
    assert_eq!(s.fetch(&file).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.fetch("001565aabbcd.cfg").await.status(), StatusCode::OK);
    let nonce = fresh_nonce(&s, &file).await;
    let a = answer(
        "SHA-256",
        &s.prov.0,
        &s.prov.1,
        &nonce,
        &format!("/{file}"),
        1,
    );
    assert_eq!(get(&s, &file, Some(&a)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn bootstrap_exchange_through_digest() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1004", "1004a", MAC, "yealink-t46s")
        .await;
    s.put(
        "/domains/example.com",
        json!({"device-provisioning-auth-scheme": "digest",
               "device-provisioning-bootstrap-username": "boot",
               "device-provisioning-bootstrap-password": "Strap-1"}),
    )
    .await;
    let file = format!("{MAC}.cfg");
    let uri = format!("/{file}");
    // A Digest answer carries no password: the exchange keeps the configured bootstrap
    // pair for the grace, so the rest of the boot sequence still opens with it.
    for nc in 1..=2 {
        let nonce = fresh_nonce(&s, &file).await;
        let r = get(
            &s,
            &file,
            Some(&answer("SHA-256", "boot", "Strap-1", &nonce, &uri, nc)),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "request {nc}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains(&format!("static.auto_provision.server.username = ap{MAC}"))
        );
    }
    let (_, p) = s.get(&format!("/phones/{MAC}")).await;
    assert_eq!(p["device-provisioning-username"], format!("ap{MAC}"));
}
