//! Domain-scoped admin tokens against the real server: the `/api/v1/tokens` routes (every
//! success and error status), the token shown only at creation and never stored, 401 after
//! revocation, and isolation: a domain token sees its own domain like the server-wide token
//! does and every other domain's resources like missing ones, changing nothing when
//! refused. Last, the `autoprov token` subcommands run as the real binary on a data folder.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const A: &str = "a.example";
const B: &str = "b.example";
/// yealink-t46s in a.example: 100a on port 1.
const A_PHONE: &str = "001565aa0001";
/// yealink-t46s in b.example: 200a on port 1.
const B_PHONE: &str = "001565bb0001";
/// yealink-t46s in no domain (linked by the server-wide token without one).
const NO_DOMAIN_PHONE: &str = "001565cc0001";
/// A MAC nobody has linked.
const NEW_MAC: &str = "001565dd0001";

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;
const DELETE: Method = Method::DELETE;

/// A request with `token` (not the harness's server-wide one).
async fn call(
    s: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    s.send_as(token, method, path, body).await
}

/// Creates a token for `domain` with the server-wide token; returns (id, secret).
async fn new_token(s: &TestServer, domain: &str) -> (String, String) {
    let (st, b) = s.post("/tokens", json!({ "domain": domain })).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    (
        b["id"].as_str().expect("id").to_string(),
        b["token"].as_str().expect("token").to_string(),
    )
}

/// Domains a.example and b.example, each with one account on a phone and one on none,
/// plus a phone in no domain.
async fn fixture() -> TestServer {
    let s = TestServer::start().await;
    s.seed_domain(A).await;
    s.seed_domain(B).await;
    s.seed_account(A, "100", "100a", A_PHONE, "yealink-t46s")
        .await;
    s.seed_account(B, "200", "200a", B_PHONE, "yealink-t46s")
        .await;
    for (d, u, dev) in [(A, "101", "101a"), (B, "201", "201a")] {
        let (st, b) = s
            .put(&format!("/domains/{d}/users/{u}/devices/{dev}"), json!({}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    let (st, b) = s
        .put(
            &format!("/phones/{NO_DOMAIN_PHONE}"),
            json!({"device-models-model": "yealink-t46s"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    s
}

fn error_field(b: &Value) -> &str {
    b["error"]["field"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------- the routes

#[tokio::test]
async fn token_routes_answer_each_status_and_show_the_token_only_at_creation() {
    let s = fixture().await;

    // 201 with id, token, domain, created.
    let (st, b) = s.post("/tokens", json!({ "domain": A })).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let secret = b["token"].as_str().unwrap().to_string();
    assert_eq!(b["domain"], A);
    assert!(secret.len() >= 40, "{secret}");
    let created = b["created"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(created).is_ok(), "{created}");
    let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created", "domain", "id", "token"]);

    // The token works at once, as a domain token of a.example.
    let (st, b) = call(&s, &secret, GET, "/domains/~", None).await;
    assert_eq!((st, b["domain"].as_str()), (StatusCode::OK, Some(A)), "{b}");

    // Only the hash is stored.
    let dump = s.dump();
    let text = dump.to_string();
    assert!(!text.contains(&secret), "the store holds the token");
    let hash: String = autoprov::auth::hash(&secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        dump["tokens"].as_object().unwrap().contains_key(&hash),
        "tokens are keyed by the secret's hash"
    );

    // GET never returns the token or its hash.
    let (st, b) = s.get("/tokens").await;
    assert_eq!(st, StatusCode::OK);
    let list = b["tokens"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0], json!({"id": id, "domain": A, "created": created}));
    let text = b.to_string();
    assert!(!text.contains(&secret) && !text.contains(&hash), "{text}");

    // Refusals: the field named, nothing written.
    let before = s.dump();
    for (what, body, field) in [
        ("no domain", json!({}), "domain"),
        ("null domain", json!({ "domain": null }), "domain"),
        ("domain not a string", json!({ "domain": 5 }), "domain"),
        (
            "domain not a name",
            json!({ "domain": "a example" }),
            "domain",
        ),
        (
            "domain with a line break",
            json!({ "domain": "a\nb" }),
            "domain",
        ),
        (
            "unknown field",
            json!({ "domain": A, "scope": "all" }),
            "scope",
        ),
    ] {
        let (st, b) = s.post("/tokens", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {b}");
        assert_eq!(error_field(&b), field, "{what}: {b}");
    }
    // A well-formed name of a domain that does not exist: the store decides (409).
    let (st, b) = s
        .post("/tokens", json!({ "domain": "nowhere.example" }))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "unknown domain: {b}");
    assert_eq!(error_field(&b), "domain", "unknown domain: {b}");
    let r = s
        .admin(POST, "/tokens")
        .body(json!({ "domain": A }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s
        .client
        .get(format!("{}/api/v1/tokens", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no token");
    let (st, _) = call(&s, "apt_not-a-token", GET, "/tokens", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "unknown token");
    let (st, b) = s.delete("/tokens/tok_nosuchtoken").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "not_found");
    let (st, _) = s.send(Method::PATCH, "/tokens", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(s.dump(), before, "a refused request changed the store");

    // DELETE → 204; the revoked token is a 401 from its next request on; a second DELETE 404.
    let (st, b) = s.delete(&format!("/tokens/{id}")).await;
    assert_eq!((st, b), (StatusCode::NO_CONTENT, Value::Null));
    let (st, b) = call(&s, &secret, GET, "/models", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(b["error"]["code"], "unauthorized");
    let (st, _) = s.delete(&format!("/tokens/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, b) = s.get("/tokens").await;
    assert_eq!((st, b), (StatusCode::OK, json!({ "tokens": [] })));
    assert!(!s.dump()["tokens"].as_object().unwrap().contains_key(&hash));
}

#[tokio::test]
async fn a_domain_token_manages_only_its_own_domains_tokens() {
    let s = fixture().await;
    let (a_id, a_tok) = new_token(&s, A).await;
    let (b_id, b_tok) = new_token(&s, B).await;

    // It may not create tokens at all, not even for its own domain: a leaked token must not
    // be able to mint spares that outlive its revocation. Nothing is written.
    let before = s.dump();
    for d in [A, B, "nowhere.example"] {
        let (st, b) = call(&s, &a_tok, POST, "/tokens", Some(json!({ "domain": d }))).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{d}: {b}");
    }
    assert_eq!(s.dump(), before);
    let (a2_id, a2_tok) = new_token(&s, A).await;

    // Another domain's token, existing or not, is a 404; nothing written.
    let before = s.dump();
    let (st, b) = call(&s, &a_tok, DELETE, &format!("/tokens/{b_id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    let (_, unknown) = call(&s, &a_tok, DELETE, "/tokens/tok_nosuchtoken", None).await;
    assert_eq!(
        b["error"]["message"].as_str().unwrap().replace(&b_id, "X"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("tok_nosuchtoken", "X"),
        "another domain's token answers like an unknown one"
    );
    assert_eq!(s.dump(), before);

    // The list holds its own domain's tokens only.
    let (st, b) = call(&s, &a_tok, GET, "/tokens", None).await;
    assert_eq!(st, StatusCode::OK);
    let mut ids: Vec<&str> = b["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![a_id.as_str(), a2_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let (_, b) = s.get("/tokens").await;
    assert_eq!(
        b["tokens"].as_array().unwrap().len(),
        3,
        "server-wide sees all"
    );

    // It may revoke its own domain's tokens, itself included.
    let (st, _) = call(&s, &a_tok, DELETE, &format!("/tokens/{a2_id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&s, &a2_tok, GET, "/models", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, _) = call(&s, &a_tok, DELETE, &format!("/tokens/{a_id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&s, &a_tok, GET, "/tokens", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // b's token is untouched.
    assert_eq!(
        call(&s, &b_tok, GET, "/tokens", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn deleting_a_domain_revokes_its_tokens() {
    let s = TestServer::start().await;
    s.seed_domain("c.example").await;
    let (_, tok) = new_token(&s, "c.example").await;
    let (st, b) = call(&s, &tok, DELETE, "/domains/~", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    assert!(s.dump()["tokens"].as_object().unwrap().is_empty());
    // A new domain of the same name is not the old token's.
    s.seed_domain("c.example").await;
    assert_eq!(
        call(&s, &tok, GET, "/domains/c.example", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------- isolation

#[tokio::test]
async fn a_domain_token_gets_404_for_every_resource_of_another_domain_and_changes_nothing() {
    let s = fixture().await;
    let (_, ta) = new_token(&s, A).await;
    let b_acc = format!("/domains/{B}/users/200/devices/200a");
    let b_free = format!("/domains/{B}/users/201/devices/201a");
    let none = None::<Value>;
    let mut rows: Vec<(Method, String, Option<Value>)> = vec![
        (GET, format!("/domains/{B}"), none.clone()),
        (PUT, format!("/domains/{B}"), Some(json!({"defaults": {}}))),
        (DELETE, format!("/domains/{B}"), none.clone()),
        (GET, format!("/domains/{B}/users/200/devices"), none.clone()),
        (
            POST,
            format!("/domains/{B}/users/202/devices"),
            Some(json!({"device": "202a"})),
        ),
        (GET, b_acc.clone(), none.clone()),
        (
            PUT,
            b_acc.clone(),
            Some(json!({"device-sip-registration-password": "x-1234567890"})),
        ),
        (
            PUT,
            format!("/domains/{B}/users/203/devices/203a"),
            Some(json!({})),
        ),
        (DELETE, b_acc.clone(), none.clone()),
        (DELETE, b_free.clone(), none.clone()),
        // A domain that does not exist answers the same (PUT would create it otherwise).
        (GET, "/domains/nowhere.example".into(), none.clone()),
        (PUT, "/domains/nowhere.example".into(), Some(json!({}))),
        (DELETE, "/domains/nowhere.example".into(), none.clone()),
        (
            GET,
            "/domains/nowhere.example/users/1/devices".into(),
            none.clone(),
        ),
        (
            PUT,
            "/domains/nowhere.example/users/1/devices/1a".into(),
            Some(json!({})),
        ),
    ];
    for mac in [B_PHONE, NO_DOMAIN_PHONE] {
        rows.extend([
            (GET, format!("/phones/{mac}"), none.clone()),
            (PUT, format!("/phones/{mac}"), Some(json!({"device-provisioning-overrides": {"a": "b"}}))),
            (PUT, format!("/phones/{mac}"), Some(json!({"domain": A}))),
            (DELETE, format!("/phones/{mac}"), none.clone()),
            (GET, format!("/phones/{mac}/members"), none.clone()),
            (GET, format!("/phones/{mac}/members?orgId={B}"), none.clone()),
            (PUT, format!("/phones/{mac}/members"), Some(json!({"members": []}))),
            (GET, format!("/phones/{mac}/files/{mac}.cfg"), none.clone()),
            (GET, format!("/phones/{mac}/files/y000000000066.cfg"), none.clone()),
            (GET, format!("/phones/{mac}/explain"), none.clone()),
            // Linking an account of its own domain to that phone.
            (
                PUT,
                format!("/domains/{A}/users/101/devices/101a"),
                Some(json!({"device-provisioning-mac-address": mac})),
            ),
            (
                PUT,
                "/domains/~/users/104/devices/104a".to_string(),
                Some(json!({"device-provisioning-mac-address": mac, "device-models-model": "yealink-t46s"})),
            ),
        ]);
    }
    let before = s.dump();
    let mut failures = Vec::new();
    for (method, path, body) in rows {
        let (st, b) = call(&s, &ta, method.clone(), &path, body).await;
        if st != StatusCode::NOT_FOUND || b["error"]["code"] != "not_found" {
            failures.push(format!("{method} {path}: {st} {b}"));
        }
        if s.dump() != before {
            failures.push(format!("{method} {path} changed the store"));
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Another domain's resource answers exactly like a missing one (no existence leak).
    for (other, missing, name_a, name_b) in [
        (
            format!("/domains/{B}"),
            "/domains/nowhere.example".to_string(),
            B,
            "nowhere.example",
        ),
        (
            format!("/phones/{B_PHONE}"),
            format!("/phones/{NEW_MAC}"),
            B_PHONE,
            NEW_MAC,
        ),
        (
            format!("/phones/{B_PHONE}/explain"),
            format!("/phones/{NEW_MAC}/explain"),
            B_PHONE,
            NEW_MAC,
        ),
    ] {
        let (_, x) = call(&s, &ta, GET, &other, None).await;
        let (_, y) = call(&s, &ta, GET, &missing, None).await;
        assert_eq!(
            x.to_string().replace(name_a, "N"),
            y.to_string().replace(name_b, "N"),
            "{other} vs {missing}"
        );
    }
}

#[tokio::test]
async fn body_references_to_another_domain_answer_like_unknown_ones() {
    let s = fixture().await;
    let (_, ta) = new_token(&s, A).await;
    let before = s.dump();
    let ask = |path: String, body: Value| {
        let (s, ta) = (&s, &ta);
        async move { call(s, ta, PUT, &path, Some(body)).await }
    };
    // A member that is b's account vs. an id nobody has: same 409, same field.
    let (st, other) = ask(
        format!("/phones/{A_PHONE}/members"),
        json!({"members": [{"port": 1, "id": "100a@a.example", "primaryOwner": true}, {"port": 2, "id": "200a@b.example"}]}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{other}");
    assert_eq!(error_field(&other), "members[1].id");
    let (_, unknown) = ask(
        format!("/phones/{A_PHONE}/members"),
        json!({"members": [{"port": 1, "id": "100a@a.example", "primaryOwner": true}, {"port": 2, "id": "999a@nowhere.example"}]}),
    )
    .await;
    assert_eq!(
        other.to_string().replace("200a@b.example", "X"),
        unknown.to_string().replace("999a@nowhere.example", "X")
    );
    // A phone's `domain` naming b vs. an unknown domain.
    let (st, other) = ask(
        format!("/phones/{NEW_MAC}"),
        json!({"device-models-model": "yealink-t31g", "domain": B}),
    )
    .await;
    assert_eq!(
        (st, error_field(&other)),
        (StatusCode::CONFLICT, "domain"),
        "{other}"
    );
    let (_, unknown) = ask(
        format!("/phones/{NEW_MAC}"),
        json!({"device-models-model": "yealink-t31g", "domain": "nowhere.example"}),
    )
    .await;
    assert_eq!(
        other.to_string().replace(B, "X"),
        unknown.to_string().replace("nowhere.example", "X")
    );
    // Taking its own phone out of its domain.
    let (st, b) = ask(format!("/phones/{A_PHONE}"), json!({"domain": null})).await;
    assert_eq!(
        (st, error_field(&b)),
        (StatusCode::BAD_REQUEST, "domain"),
        "{b}"
    );
    assert_eq!(s.dump(), before, "a refused request changed the store");
}

#[tokio::test]
async fn a_domain_token_works_in_its_own_domain_and_tilde_is_its_domain() {
    let s = fixture().await;
    let (_, ta) = new_token(&s, A).await;
    let ok = |st: StatusCode, b: &Value, what: &str| {
        assert!(st.is_success(), "{what}: {st} {b}");
    };

    let (st, b) = call(&s, &ta, GET, "/domains/~", None).await;
    assert_eq!((st, b["domain"].as_str()), (StatusCode::OK, Some(A)));
    let (st, b) = call(&s, &ta, GET, "/domains/~/users/100/devices/100a", None).await;
    assert_eq!(
        (st, b["id"].as_str()),
        (StatusCode::OK, Some("100a@a.example")),
        "{b}"
    );
    let (st, b) = call(&s, &ta, GET, "/domains/~/users/100/devices", None).await;
    assert_eq!(
        (st, b.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{b}"
    );
    let (st, b) = call(
        &s,
        &ta,
        PUT,
        "/domains/~",
        Some(json!({"defaults": {"device-provisioning-sip-transport-protocol": "tcp"}})),
    )
    .await;
    ok(st, &b, "PUT own domain");
    let (st, b) = call(&s, &ta, GET, "/models", None).await;
    ok(st, &b, "models");
    for path in [
        format!("/phones/{A_PHONE}"),
        format!("/phones/{A_PHONE}/members"),
        format!("/phones/{A_PHONE}/members?orgId={A}"),
        format!("/phones/{A_PHONE}/files/{A_PHONE}.cfg"),
        format!("/phones/{A_PHONE}/explain"),
    ] {
        let (st, b) = call(&s, &ta, GET, &path, None).await;
        ok(st, &b, &path);
    }
    let (st, b) = call(
        &s,
        &ta,
        PUT,
        &format!("/phones/{A_PHONE}/members"),
        Some(json!({"members": [{"port": 1, "id": "100a@a.example", "primaryOwner": true}, {"port": 2, "id": "101a@a.example"}]})),
    )
    .await;
    ok(st, &b, "PUT members");

    // What it creates lands in its domain.
    let (st, b) = call(
        &s,
        &ta,
        PUT,
        "/domains/~/users/102/devices/102a",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (st, b["domain"].as_str()),
        (StatusCode::CREATED, Some(A)),
        "{b}"
    );
    let (st, b) = call(
        &s,
        &ta,
        PUT,
        &format!("/phones/{NEW_MAC}"),
        Some(json!({"device-models-model": "yealink-t31g"})),
    )
    .await;
    assert_eq!(
        (st, b["domain"].as_str()),
        (StatusCode::CREATED, Some(A)),
        "{b}"
    );
    let linked = "001565dd0002";
    let (st, b) = call(
        &s,
        &ta,
        POST,
        "/domains/~/users/103/devices",
        Some(json!({"device": "103a", "device-provisioning-mac-address": linked, "device-models-model": "yealink-t31g"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (_, b) = s.get(&format!("/phones/{linked}")).await;
    assert_eq!(b["domain"], A);

    // The phone list holds its domain's phones only; naming b filters to nothing.
    let (st, b) = call(&s, &ta, GET, "/phones", None).await;
    assert_eq!(st, StatusCode::OK);
    let mut macs: Vec<&str> = b["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["mac"].as_str().unwrap())
        .collect();
    macs.sort_unstable();
    assert_eq!(macs, [A_PHONE, NEW_MAC, linked]);
    let (_, b) = call(&s, &ta, GET, &format!("/phones?domain={B}"), None).await;
    assert_eq!(b["phones"], json!([]));

    // The cross-tenant list needs the server-wide token.
    let (st, b) = call(&s, &ta, GET, "/unprovisioned", None).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    // Deleting in its own domain works.
    let (st, _) = call(&s, &ta, DELETE, "/domains/~/users/102/devices/102a", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s, &ta, DELETE, &format!("/phones/{NEW_MAC}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // The server-wide token still sees everything.
    let (_, b) = s.get("/phones").await;
    assert_eq!(b["phones"].as_array().unwrap().len(), 4, "{b}");
    for path in [
        format!("/domains/{B}"),
        format!("/domains/{B}/users/200/devices/200a"),
        format!("/phones/{B_PHONE}"),
        format!("/phones/{NO_DOMAIN_PHONE}"),
        "/unprovisioned".to_string(),
    ] {
        let (st, b) = s.get(&path).await;
        ok(st, &b, &path);
    }
    let (st, b) = s.get("/domains/~").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
}

// ---------------------------------------------------------------- CLI

fn cli(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    let cwd = data.parent().expect("data has a parent");
    std::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(args)
        .arg("--data")
        .arg(data)
        .current_dir(cwd)
        .env_remove("AUTOPROV_DATA")
        .env_remove("AUTOPROV_CONFIG")
        .env("RUST_LOG", "off")
        .output()
        .expect("run autoprov")
}

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_subcommands_work_on_the_data_folder_and_the_server_accepts_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No store yet: refused, and none is created.
    let out = cli(&data, &["token", "list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store"),
        "{out:?}"
    );
    assert!(!data.exists());
    {
        let store = autoprov::store::Store::open(&data.join("store"), 8 << 20).unwrap();
        store
            .commit(&autoprov::store::Change {
                domains: vec![(
                    A.into(),
                    Some(autoprov::model::Domain {
                        name: A.into(),
                        ..Default::default()
                    }),
                )],
                ..Default::default()
            })
            .unwrap();
        store.flush_sync().unwrap();
    }

    let out = cli(&data, &["token", "create", "--domain", A]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (id, secret) = (
        line(&text, "id: ").to_string(),
        line(&text, "token: ").to_string(),
    );
    assert_eq!(line(&text, "domain: "), A);
    let out = cli(&data, &["token", "create", "--domain", A]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (id2, secret2) = (
        line(&text, "id: ").to_string(),
        line(&text, "token: ").to_string(),
    );

    let out = cli(&data, &["token", "create", "--domain", "nowhere.example"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("domain") && err.contains("nowhere.example"),
        "{err}"
    );

    let out = cli(&data, &["token", "list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&id) && text.contains(&id2) && text.contains(A),
        "{text}"
    );
    assert!(
        !text.contains(&secret) && !text.contains(&secret2),
        "{text}"
    );

    let out = cli(&data, &["token", "revoke", &id2]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&data, &["token", "revoke", &id2]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&id2));
    let text = String::from_utf8(cli(&data, &["token", "list"]).stdout).unwrap();
    assert!(text.contains(&id) && !text.contains(&id2), "{text}");

    // A server on that folder accepts the token (and not the revoked one).
    let data2 = data.clone();
    let s = TestServer::start_with(move |c| c.data = data2).await;
    assert!(!s.dump().to_string().contains(&secret));
    let (st, b) = call(&s, &secret, GET, "/domains/~", None).await;
    assert_eq!((st, b["domain"].as_str()), (StatusCode::OK, Some(A)), "{b}");
    let (st, _) = call(&s, &secret2, GET, "/domains/~", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, b) = s.get("/tokens").await;
    assert_eq!(b["tokens"][0]["id"], id.as_str());

    // While it runs, the subcommands say so and point at the HTTP API.
    let out = cli(&data, &["token", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("running") && err.contains("/api/v1/tokens"),
        "{err}"
    );
}
