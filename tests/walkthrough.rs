//! The README's five-minute walkthrough, against the real server over HTTP.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn walkthrough() {
    let s = TestServer::start().await;
    // Models are listed.
    let (st, models) = s.get("/models").await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "yealink-t46s",
        "yealink-t48s",
        "yealink-t54w",
        "yealink-t57w",
        "yealink-t31g",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    // A domain with its SIP server, then an account on a MAC (any spelling).
    let (st, _) = s.put("/domains/example.com", json!({"defaults": {"device-provisioning-registration-core-server": "sip.example.com"}})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, acc) = s
        .put(
            "/domains/example.com/users/1004/devices/1004a",
            json!({"device-sip-registration-password": "Secret-1004a", "device-models-model": "yealink-t46s",
                   "device-provisioning-mac-address": "00:15:65:AA:BB:CC"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{acc}");
    assert_eq!(acc["id"], "1004a@example.com");
    assert_eq!(acc["device-provisioning-mac-address"], "001565aabbcc");
    assert_eq!(acc["device-provisioning-line"], 1);
    assert!(
        acc.get("device-sip-registration-password").is_none(),
        "passwords are write-only"
    );

    // The phone fetches its file with the server-default credentials.
    let r = s.fetch("001565aabbcc.cfg").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let etag1 = r.headers()["etag"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.starts_with("#!version:1.0.0.1\n"));
    assert!(body.contains("account.1.user_name = 1004a\n"));
    assert!(body.contains("account.1.password = Secret-1004a\n"));
    assert!(body.contains("account.1.sip_server.1.address = sip.example.com\n"));

    // Upper-case spelling in the path works too; the common file is served.
    assert_eq!(s.fetch("001565AABBCC.cfg").await.status(), StatusCode::OK);
    assert_eq!(s.fetch("y000000000066.cfg").await.status(), StatusCode::OK);

    // Unchanged: 304 on If-None-Match.
    let r = s
        .client
        .get(format!("{}/001565aabbcc.cfg", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert!(r.headers().get("content-type").is_none());
    assert!(r.bytes().await.unwrap().is_empty());

    // Change something: a new label through the members API; new bytes, new ETag.
    let (st, _) = s
        .put("/phones/001565aabbcc/members", json!({"members": [{"port": 1, "id": "1004a@example.com", "lineLabel": "Reception", "primaryOwner": true}]}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, etag2, body) = s.fetch_text("001565aabbcc.cfg").await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(etag1, etag2);
    assert!(body.contains("account.1.label = Reception\n"));

    // HEAD answers with headers only.
    let r = s
        .client
        .head(format!("{}/001565aabbcc.cfg", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag2);
    assert_eq!(
        r.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert!(r.text().await.unwrap().is_empty());

    // The admin preview is byte-identical to what the phone gets.
    let r = s
        .admin(
            reqwest::Method::GET,
            "/phones/001565aabbcc/files/001565aabbcc.cfg",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), body);
}

#[tokio::test]
async fn first_start_files_and_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_in(dir.path());
    let (state, first) = autoprov::init(&config).unwrap();
    let token = first.new_admin_token.clone().unwrap();
    let (u, p) = first.new_provisioning_credentials.clone().unwrap();
    let tok_file = std::fs::read_to_string(&first.admin_token_path).unwrap();
    assert_eq!(tok_file.trim(), token);
    let creds = std::fs::read_to_string(&first.provisioning_credentials_path).unwrap();
    assert_eq!(creds, format!("{u}:{p}\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for path in [
            &first.admin_token_path,
            &first.provisioning_credentials_path,
        ] {
            assert_eq!(
                std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
    let stored = state.store.dump().unwrap().to_string();
    assert!(!stored.contains(&token), "only the token's hash is stored");
    assert!(!stored.contains(&p), "only the password's hash is stored");
    drop(state);
    let (_, second) = autoprov::init(&config).unwrap();
    assert!(second.new_admin_token.is_none());
    assert!(second.new_provisioning_credentials.is_none());
}

/// The server answers a plain phone path without the router; a percent-encoded spelling of
/// the same name goes through the router's `/{file}` route. Both must answer alike, for
/// every kind of answer a phone gets.
#[tokio::test]
async fn direct_and_routed_phone_requests_agree() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account(
        "example.com",
        "1004",
        "1004a",
        "001565aabbcc",
        "yealink-t46s",
    )
    .await;
    let direct = "/001565aabbcc.cfg";
    let routed = "/%3001565aabbcc.cfg";
    let etag = s.fetch_text("001565aabbcc.cfg").await.1;
    let wrong = ("nobody", "wrong");
    let prov = (s.prov.0.as_str(), s.prov.1.as_str());
    type Case<'a> = (
        &'a str,
        reqwest::Method,
        Option<(&'a str, &'a str)>,
        Option<&'a str>,
        u16,
    );
    let cases: [Case; 6] = [
        ("ok", reqwest::Method::GET, Some(prov), None, 200),
        ("head", reqwest::Method::HEAD, Some(prov), None, 200),
        ("no credentials", reqwest::Method::GET, None, None, 401),
        (
            "wrong credentials",
            reqwest::Method::GET,
            Some(wrong),
            None,
            401,
        ),
        (
            "not modified",
            reqwest::Method::GET,
            Some(prov),
            Some(&etag),
            304,
        ),
        ("unknown MAC", reqwest::Method::GET, Some(prov), None, 404),
    ];
    for (what, method, creds, tag, status) in cases {
        let mut seen = Vec::new();
        for path in [direct, routed] {
            let path = if what == "unknown MAC" {
                path.replace("aabbcc", "000001")
            } else {
                path.to_string()
            };
            let mut rb = s.client.request(method.clone(), format!("{}{path}", s.url));
            if let Some((u, p)) = creds {
                rb = rb.basic_auth(u, Some(p));
            }
            if let Some(t) = tag {
                rb = rb.header("if-none-match", t);
            }
            let r = rb.send().await.unwrap();
            let mut headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            headers.sort();
            seen.push((r.status(), headers, r.bytes().await.unwrap()));
        }
        assert_eq!(seen[0].0.as_u16(), status, "{what}");
        assert_eq!(seen[0], seen[1], "{what}: direct and routed answers differ");
    }
}
