//! The OpenAPI document (`GET /api/v1/openapi.json`) against the real server: it is 3.1,
//! it is the one generated from the routes, every documented operation is routed, no
//! undocumented method is, no admin route is registered outside `routes!`, and real
//! responses (success and error) validate against their documented schemas.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn document(s: &TestServer) -> Value {
    // No token: the document holds no data.
    let r = s
        .client
        .get(format!("{}/api/v1/openapi.json", s.url))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    r.json().await.expect("json")
}

/// Sample values for path parameters.
fn fill(path: &str) -> String {
    path.replace("{domain}", "example.com")
        .replace("{user}", "100")
        .replace("{device}", "d100")
        .replace("{mac}", "001565aabbcc")
        .replace("{file}", "001565aabbcc.cfg")
        .replace("{id}", "tok_000000000000")
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

#[tokio::test]
async fn document_is_3_1_and_generated_from_the_routes() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    // The served document is the one built from `admin::routes()`.
    let built = serde_json::to_value(autoprov::http::openapi::document()).unwrap();
    assert_eq!(doc, built);
    // Bearer security everywhere but on the document itself.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(
        doc["paths"]["/api/v1/openapi.json"]["get"]["security"],
        json!([{}])
    );
    // Every admin path of docs/API.md is described.
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/models",
        "/api/v1/domains/{domain}",
        "/api/v1/domains/{domain}/users/{user}/devices",
        "/api/v1/domains/{domain}/users/{user}/devices/{device}",
        "/api/v1/phones",
        "/api/v1/phones/{mac}",
        "/api/v1/phones/{mac}/members",
        "/api/v1/phones/{mac}/files/{file}",
        "/api/v1/phones/{mac}/explain",
        "/api/v1/unprovisioned",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/reload",
        "/api/v1/import",
        "/api/v1/export",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // Each operation that takes a token documents 401, and each with a body 413/415.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("414"), "{method} {path}: 414");
            if path != "/api/v1/openapi.json" {
                assert!(responses.contains_key("401"), "{method} {path}: 401");
            }
            if op.get("requestBody").is_some() {
                for c in ["400", "413", "415"] {
                    assert!(responses.contains_key(c), "{method} {path}: {c}");
                }
            }
        }
    }
}

#[tokio::test]
async fn documented_operations_are_routed_and_nothing_else_is() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!("{}{}", s.url, fill(path));
        for m in METHODS {
            let mut rb = s
                .client
                .request(
                    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
                    &url,
                )
                .bearer_auth(&s.token);
            if m == "put" || m == "post" || m == "patch" {
                rb = rb.header("content-type", "application/json").body("{}");
            }
            let r = rb.send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND
                    && body["error"]["message"] == "no such API path");
            if item.get(m).is_some() {
                assert!(
                    !unrouted,
                    "{m} {path} is documented but not routed: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is routed but not documented: {body}"
                );
            }
        }
    }
}

/// Admin routes can only come from `routes!` (which documents them): no `.route(` in the
/// admin modules, and no `/api` path registered with `.route(`/`.nest(` anywhere else.
#[test]
fn admin_routes_are_registered_only_through_routes_macro() {
    let dir = common::repo("src");
    let mut files = vec![];
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let admin_modules = [
        "admin.rs",
        "tokens.rs",
        "openapi.rs",
        "reload.rs",
        "bulk.rs",
    ];
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                let Some(at) = code.find(call) else { continue };
                checked += 1;
                assert!(
                    !admin_modules.contains(&name)
                        || code.contains("routes!")
                        || code.contains("(\"/api/v1\", super::admin::routes())"),
                    "{}:{}: admin route registered without routes!: {line}",
                    f.display(),
                    i + 1
                );
                let arg = code[at + call.len()..].trim_start();
                let api = arg.starts_with("\"/api")
                    && !arg.starts_with("\"/api/v1\", admin)")
                    && !arg.starts_with("\"/api/v1\", super::admin::routes())");
                assert!(
                    !api,
                    "{}:{}: an /api route outside routes!: {line}",
                    f.display(),
                    i + 1
                );
            }
        }
    }
    assert!(checked > 0, "found no route registration at all");
}

/// The documented schema of `method path` answering `status` (JSON body).
fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> jsonschema::Validator {
    let op = &doc["paths"][path][method];
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{method} {path} documents no {status}");
    // A root holding the components, so `#/components/schemas/…` resolves.
    let mut root = schema.clone();
    if let Value::Object(o) = &mut root {
        o.insert("components".into(), doc["components"].clone());
    } else {
        root = json!({"allOf": [schema], "components": doc["components"]});
    }
    jsonschema::validator_for(&root).expect("schema compiles")
}

#[track_caller]
fn check(doc: &Value, path: &str, method: &str, status: StatusCode, body: &Value) {
    let v = response_schema(doc, path, method, status.as_u16());
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body:#}"
    );
}

#[tokio::test]
async fn real_responses_match_their_schemas() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let d = &doc;

    let (st, b) = s.get("/models").await;
    assert_eq!(st, StatusCode::OK);
    check(d, "/api/v1/models", "get", st, &b);

    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"defaults": {"device-provisioning-registration-core-server": "sip.example.com"},
                   "device-provisioning-allowed-cidrs": ["127.0.0.1"],
                   "device-provisioning-auth-scheme": "basic"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    check(d, "/api/v1/domains/{domain}", "put", st, &b);
    // Credentials, then a rotation (sets `…-previous-valid-until`), on another domain.
    let (st, b) = s
        .put(
            "/domains/other.example",
            json!({"device-provisioning-username": "u", "device-provisioning-password": "p",
                   "device-provisioning-bootstrap-username": "b", "device-provisioning-bootstrap-password": "bp"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, b) = s
        .put(
            "/domains/other.example",
            json!({"device-provisioning-username": "u2", "device-provisioning-password": "p2"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    check(d, "/api/v1/domains/{domain}", "put", st, &b);
    let (st, b) = s.get("/domains/other.example").await;
    assert!(
        b["device-provisioning-previous-valid-until"].is_string(),
        "{b}"
    );
    check(d, "/api/v1/domains/{domain}", "get", st, &b);
    let (st, b) = s.get("/domains/example.com").await;
    check(d, "/api/v1/domains/{domain}", "get", st, &b);

    let (st, b) = s
        .post(
            "/domains/example.com/users/100/devices",
            json!({"device": "d100", "device-models-model": "yealink-t46s",
                   "device-provisioning-mac-address": "00:15:65:aa:bb:cc",
                   "device-sip-registration-expiry-seconds": 300,
                   "device-provisioning-overrides": {"account.1.label": "x"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    check(
        d,
        "/api/v1/domains/{domain}/users/{user}/devices",
        "post",
        st,
        &b,
    );
    let (st, b) = s
        .put("/domains/example.com/users/101/devices/d101", json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    check(
        d,
        "/api/v1/domains/{domain}/users/{user}/devices/{device}",
        "put",
        st,
        &b,
    );
    let (st, b) = s.get("/domains/example.com/users/100/devices").await;
    assert_eq!(st, StatusCode::OK);
    check(
        d,
        "/api/v1/domains/{domain}/users/{user}/devices",
        "get",
        st,
        &b,
    );

    // The phone fetches once, so `last-fetch` is an object.
    let r = s.fetch("001565aabbcc.cfg").await;
    assert_eq!(r.status(), StatusCode::OK);
    let (st, b) = s.get("/phones/001565aabbcc").await;
    assert_eq!(st, StatusCode::OK);
    assert!(b["last-fetch"].is_object(), "{b}");
    check(d, "/api/v1/phones/{mac}", "get", st, &b);
    let (st, b) = s.get("/phones?limit=1").await;
    assert_eq!(st, StatusCode::OK);
    assert!(b["next"].is_string());
    check(d, "/api/v1/phones", "get", st, &b);
    let (st, b) = s
        .put(
            "/phones/001565aabbcd",
            json!({"device-models-model": "yealink-t46s", "domain": null,
                   "device-provisioning-overrides": {"account.1.label": "y"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    check(d, "/api/v1/phones/{mac}", "put", st, &b);
    let (st, b) = s.get("/phones/001565aabbcc/members").await;
    check(d, "/api/v1/phones/{mac}/members", "get", st, &b);
    let (st, b) = s
        .put(
            "/phones/001565aabbcc/members",
            json!({"members": [{"port": 1, "id": "d100@example.com", "primaryOwner": true},
                               {"port": 2, "id": "d101@example.com", "lineType": "SHARED_CALL_APPEARANCE"}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    check(d, "/api/v1/phones/{mac}/members", "put", st, &b);
    let (st, b) = s.get("/phones/001565aabbcc/explain").await;
    assert_eq!(st, StatusCode::OK);
    check(d, "/api/v1/phones/{mac}/explain", "get", st, &b);

    // An unknown MAC asking with the default credentials lands in /unprovisioned.
    let r = s.fetch("001565000001.cfg").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (st, b) = s.get("/unprovisioned").await;
    assert_eq!(st, StatusCode::OK);
    assert!(!b["unprovisioned"].as_array().unwrap().is_empty());
    check(d, "/api/v1/unprovisioned", "get", st, &b);

    let (st, b) = s.post("/tokens", json!({"domain": "example.com"})).await;
    assert_eq!(st, StatusCode::CREATED);
    check(d, "/api/v1/tokens", "post", st, &b);
    let (st, b) = s.get("/tokens").await;
    check(d, "/api/v1/tokens", "get", st, &b);

    // Errors: each in the documented error shape.
    let (st, b) = s.get("/phones/not-a-mac").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    check(d, "/api/v1/phones/{mac}", "get", st, &b);
    let (st, b) = s.get("/phones/001565999999").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    check(d, "/api/v1/phones/{mac}", "get", st, &b);
    let (st, b) = s.delete("/domains/example.com").await;
    assert_eq!(st, StatusCode::CONFLICT);
    check(d, "/api/v1/domains/{domain}", "delete", st, &b);
    let r = s
        .client
        .get(format!("{}/api/v1/models", s.url))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    check(d, "/api/v1/models", "get", st, &r.json().await.unwrap());
    let r = s
        .admin(Method::PUT, "/domains/example.com")
        .body("{}")
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    check(
        d,
        "/api/v1/domains/{domain}",
        "put",
        st,
        &r.json().await.unwrap(),
    );
    let (st, b) = s.put("/domains/example.com", json!({"nope": 1})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["field"], "nope");
    check(d, "/api/v1/domains/{domain}", "put", st, &b);
}

/// The request-body schemas accept what the server accepts, and refuse an unknown field
/// like the server does.
#[tokio::test]
async fn request_schemas_match_accepted_bodies() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let body = |path: &str, method: &str| {
        let schema =
            &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
        let root = json!({"allOf": [schema], "components": doc["components"]});
        jsonschema::validator_for(&root).expect("compiles")
    };
    let domain = body("/api/v1/domains/{domain}", "put");
    let ok = json!({"defaults": {"device-provisioning-registration-core-server": "sip.example.com", "sip-server-port": 5060, "x": null},
                    "device-provisioning-allowed-cidrs": null});
    assert!(domain.is_valid(&ok));
    let (st, b) = s.put("/domains/example.com", ok).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert!(!domain.is_valid(&json!({"nope": 1})));
    let account = body(
        "/api/v1/domains/{domain}/users/{user}/devices/{device}",
        "put",
    );
    let ok = json!({"device-provisioning-overrides": "account.1.label = x\n",
                    "device-sip-registration-expiry-seconds": "120", "device-push-enabled": "no"});
    assert!(account.is_valid(&ok));
    let (st, b) = s
        .put("/domains/example.com/users/100/devices/d100", ok)
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let members = body("/api/v1/phones/{mac}/members", "put");
    assert!(members.is_valid(&json!({"members": [{"port": 1, "id": "a@b"}]})));
    assert!(!members.is_valid(&json!({"members": [{"port": 1}]})));
}
