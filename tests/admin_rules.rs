//! Every client-error rule of the admin API (DESIGN.md §3) and of the phone path (§4),
//! against the real server over HTTP. Each refused request must answer with the exact
//! status, the JSON error body naming the field (400/409), and leave the store unchanged.
//!
//! Tables are checked row by row and every failing row is reported at once, so one run
//! lists every place where the server disagrees with a rule.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DOM: &str = "example.com";
/// yealink-t46s (16 ports) in example.com: 1004a on port 1, primary owner.
const T46S: &str = "001565aabbcc";
/// yealink-t31g (2 ports) in example.com: 2001a on port 1.
const T31G: &str = "001565aabbdd";
/// yealink-t46s in other.org: 9001a on port 1.
const OTHER: &str = "001565ccddee";
/// A MAC nobody has linked.
const NEW_MAC: &str = "001565eeeeee";
/// The account on the T46S.
const ACC: &str = "/domains/example.com/users/1004/devices/1004a";
/// An account of example.com that is on no phone.
const FREE_ACC: &str = "/domains/example.com/users/1005/devices/1005a";

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;
const DELETE: Method = Method::DELETE;

/// Control characters that must never reach a `key = value` file.
const CONTROLS: &[&str] = &[
    "\r\n", "\n", "\r", "\t", "\u{0}", "\u{1b}", "\u{7f}", "\u{85}",
];

/// The server with domains example.com and other.org, the three phones above, and two
/// unlinked accounts 1005a and 1006a in example.com.
async fn fixture() -> TestServer {
    let s = TestServer::start().await;
    s.seed_domain(DOM).await;
    s.seed_domain("other.org").await;
    s.seed_account(DOM, "1004", "1004a", T46S, "yealink-t46s")
        .await;
    s.seed_account(DOM, "2001", "2001a", T31G, "yealink-t31g")
        .await;
    s.seed_account("other.org", "9001", "9001a", OTHER, "yealink-t46s")
        .await;
    for (user, device) in [("1005", "1005a"), ("1006", "1006a")] {
        let (st, b) = s
            .put(
                &format!("/domains/{DOM}/users/{user}/devices/{device}"),
                json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    s
}

fn members_path(mac: &str) -> String {
    format!("/phones/{mac}/members")
}

// ---------------------------------------------------------------- table machinery

/// One request that must be refused. `body` is `Value::Null` for a request without a
/// body; `field` is empty when the error names no field (401, 404, …).
struct Row {
    what: String,
    method: Method,
    path: String,
    body: Value,
    status: u16,
    field: String,
}

fn row(
    what: impl Into<String>,
    method: Method,
    path: impl Into<String>,
    body: Value,
    status: u16,
    field: impl Into<String>,
) -> Row {
    Row {
        what: what.into(),
        method,
        path: path.into(),
        body,
        status,
        field: field.into(),
    }
}

/// The stable error code for a status.
fn code_for(status: u16) -> &'static str {
    match status {
        400 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        415 => "unsupported_media_type",
        _ => "?",
    }
}

/// Checks the JSON error body `{"error":{"code","message","field"?}}`.
fn check_error(body: &Value, status: u16, code: &str, field: &str) -> Result<(), String> {
    let Some(top) = body.as_object() else {
        return Err(format!("body is not a JSON object: {body}"));
    };
    if top.len() != 1 {
        return Err(format!("body has keys besides `error`: {body}"));
    }
    let err = &body["error"];
    if err["code"] != code {
        return Err(format!("code {} instead of {code:?}: {body}", err["code"]));
    }
    if err["message"].as_str().is_none_or(str::is_empty) {
        return Err(format!("no message: {body}"));
    }
    // 400 and 409 name the field; other errors (and unparsable bodies) name none.
    let want = if matches!(status, 400 | 409) && code != "malformed_json" {
        json!(field)
    } else {
        Value::Null
    };
    if err["field"] != want {
        return Err(format!("field {} instead of {want}: {body}", err["field"]));
    }
    Ok(())
}

/// Sends one row and checks status, error body and an unchanged store.
async fn check_row(s: &TestServer, r: &Row) -> Result<(), String> {
    let before = s.dump();
    let body = (!r.body.is_null()).then(|| r.body.clone());
    let (status, b) = s.send(r.method.clone(), &r.path, body).await;
    let changed = s.dump() != before;
    let mut problems = vec![];
    if status.as_u16() != r.status {
        problems.push(format!("status {status} instead of {}: {b}", r.status));
    } else if let Err(e) = check_error(&b, r.status, code_for(r.status), &r.field) {
        problems.push(e);
    }
    if changed {
        problems.push("the store changed".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} ({} {} {}): {}",
            r.what,
            r.method,
            r.path,
            r.body,
            problems.join("; ")
        ))
    }
}

/// Runs every row; fails once with the list of every row that misbehaved.
async fn run(s: &TestServer, rows: Vec<Row>) {
    let mut failures = vec![];
    for r in &rows {
        if let Err(e) = check_row(s, r).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// Every key anywhere in `v`.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn assert_no_password(what: &str, v: &Value, secrets: &[&str]) {
    let mut all = vec![];
    keys(v, &mut all);
    assert!(
        !all.iter().any(|k| k.contains("password")),
        "{what} returns a password field: {v}"
    );
    let text = v.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {v}");
    }
}

// ---------------------------------------------------------------- auth, media type, JSON

#[tokio::test]
async fn admin_requests_need_the_right_bearer_token() {
    let s = fixture().await;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (GET, "/models".into(), None),
        (GET, format!("/domains/{DOM}"), None),
        (
            PUT,
            "/domains/new.org".into(),
            Some(json!({"defaults": {"time-zone": "+1"}})),
        ),
        (DELETE, "/domains/other.org".into(), None),
        (
            POST,
            format!("/domains/{DOM}/users/1007/devices"),
            Some(json!({"device": "1007a"})),
        ),
        (PUT, ACC.into(), Some(json!({"device-srtp-enabled": "yes"}))),
        (GET, ACC.into(), None),
        (DELETE, ACC.into(), None),
        (GET, format!("/domains/{DOM}/users/1004/devices"), None),
        (GET, "/phones".into(), None),
        (
            PUT,
            format!("/phones/{NEW_MAC}"),
            Some(json!({"device-models-model": "yealink-t46s"})),
        ),
        (GET, format!("/phones/{T46S}"), None),
        (DELETE, format!("/phones/{T46S}"), None),
        (GET, members_path(T46S), None),
        (PUT, members_path(T46S), Some(json!({}))),
        (GET, format!("/phones/{T46S}/files/{T46S}.cfg"), None),
    ];
    let wrong = format!("{}x", s.token);
    let auths: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("wrong token", Some(format!("Bearer {wrong}"))),
        ("truncated token", Some(format!("Bearer {}", &s.token[1..]))),
        ("Basic scheme", Some(format!("Basic {}", s.token))),
        ("token without scheme", Some(s.token.clone())),
        ("empty bearer", Some("Bearer ".into())),
    ];
    let mut failures = vec![];
    for (method, path, body) in &routes {
        for (what, auth) in &auths {
            let before = s.dump();
            let mut rb = s
                .client
                .request(method.clone(), format!("{}/api/v1{path}", s.url));
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            if let Some(b) = body {
                rb = rb
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let r = rb.send().await.unwrap();
            let status = r.status();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            let b: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            let ctx = format!("{what}: {method} {path}");
            if status != StatusCode::UNAUTHORIZED {
                failures.push(format!("{ctx}: status {status} instead of 401: {b}"));
            } else if let Err(e) = check_error(&b, 401, "unauthorized", "") {
                failures.push(format!("{ctx}: {e}"));
            }
            if !challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer"))
            {
                failures.push(format!("{ctx}: WWW-Authenticate is {challenge:?}"));
            }
            if s.dump() != before {
                failures.push(format!("{ctx}: the store changed"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The right token still works on the same routes.
    assert_eq!(s.get("/models").await.0, StatusCode::OK);
}

#[tokio::test]
async fn bodies_that_are_not_json_get_415() {
    let s = fixture().await;
    let writes: Vec<(Method, String, Value)> = vec![
        (
            PUT,
            format!("/domains/{DOM}"),
            json!({"defaults": {"time-zone": "+1"}}),
        ),
        (PUT, "/domains/new.org".into(), json!({})),
        (PUT, ACC.into(), json!({"device-srtp-enabled": "yes"})),
        (
            POST,
            format!("/domains/{DOM}/users/1007/devices"),
            json!({"device": "1007a"}),
        ),
        (
            PUT,
            format!("/phones/{NEW_MAC}"),
            json!({"device-models-model": "yealink-t46s"}),
        ),
        (
            PUT,
            members_path(T46S),
            json!({"members": [{"port": 1, "id": "1004a@example.com", "primaryOwner": true}]}),
        ),
    ];
    let mut failures = vec![];
    for (method, path, body) in &writes {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let before = s.dump();
            let mut rb = s.admin(method.clone(), path).body(body.to_string());
            if let Some(ct) = ct {
                rb = rb.header("content-type", ct);
            }
            let r = rb.send().await.unwrap();
            let status = r.status();
            let b: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            let ctx = format!("{method} {path} with Content-Type {ct:?}");
            if status != StatusCode::UNSUPPORTED_MEDIA_TYPE {
                failures.push(format!("{ctx}: status {status} instead of 415: {b}"));
            } else if let Err(e) = check_error(&b, 415, "unsupported_media_type", "") {
                failures.push(format!("{ctx}: {e}"));
            }
            if s.dump() != before {
                failures.push(format!("{ctx}: the store changed"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn malformed_json_and_non_object_bodies_get_400() {
    let s = fixture().await;
    let paths = [
        format!("/domains/{DOM}"),
        ACC.to_string(),
        format!("/phones/{T46S}"),
        members_path(T46S),
    ];
    let mut failures = vec![];
    for path in &paths {
        for (text, malformed) in [
            (r#"{"defaults":"#, true),
            ("{,}", true),
            ("", true),
            ("nul", true),
            (r#"{"a":1}{"b":2}"#, true),
            ("[]", false),
            (r#"[{"defaults":{}}]"#, false),
            (r#""text""#, false),
            ("42", false),
            ("null", false),
        ] {
            let before = s.dump();
            let r = s
                .admin(PUT, path)
                .header("content-type", "application/json")
                .body(text)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let b: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            let ctx = format!("PUT {path} with {text:?}");
            if status != StatusCode::BAD_REQUEST {
                failures.push(format!("{ctx}: status {status} instead of 400: {b}"));
            } else if malformed {
                if let Err(e) = check_error(&b, 400, "malformed_json", "") {
                    failures.push(format!("{ctx}: {e}"));
                }
            } else {
                // A well-formed JSON value that is not an object: a 400 with the usual
                // error body (either code is acceptable).
                let code = b["error"]["code"].as_str().unwrap_or("");
                if !matches!(code, "invalid" | "malformed_json")
                    || !b["error"]["message"].is_string()
                {
                    failures.push(format!("{ctx}: bad error body {b}"));
                }
            }
            if s.dump() != before {
                failures.push(format!("{ctx}: the store changed"));
            }
        }
    }
    // Content types with parameters or the +json suffix are JSON.
    for ct in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let r = s
            .admin(PUT, ACC)
            .header("content-type", ct)
            .body(r#"{"device-srtp-enabled":"no"}"#)
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            failures.push(format!("Content-Type {ct}: status {}", r.status()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------- field-level rules

#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let s = fixture().await;
    let new_acc = format!("/domains/{DOM}/users/1007/devices/1007a");
    let coll = format!("/domains/{DOM}/users/1007/devices");
    let (phone, new_phone) = (format!("/phones/{T46S}"), format!("/phones/{NEW_MAC}"));
    let dom = format!("/domains/{DOM}");
    let mp = members_path(T46S);
    let owner = json!({"port": 1, "id": "1004a@example.com", "primaryOwner": true});
    let second = json!({"port": 2, "id": "1005a@example.com", "lineweight": 1});
    #[rustfmt::skip]
    let rows = vec![
        row("account update", PUT, ACC, json!({"foo": 1}), 400, "foo"),
        row("account create", PUT, &new_acc, json!({"device-srtp-enabled": "yes", "foo": "x"}), 400, "foo"),
        row("account POST", POST, &coll, json!({"device": "1007a", "foo": null}), 400, "foo"),
        row("snake_case spelling", PUT, ACC, json!({"device_srtp_enabled": "yes"}), 400, "device_srtp_enabled"),
        row("account read-only id", PUT, ACC, json!({"id": "1005a@example.com"}), 409, "id"),
        row("account read-only domain", PUT, ACC, json!({"domain": "other.org"}), 409, "domain"),
        row("phone update", PUT, &phone, json!({"foo": 1}), 400, "foo"),
        row("phone create", PUT, &new_phone, json!({"device-models-model": "yealink-t46s", "colour": "red"}), 400, "colour"),
        row("phone read-only mac", PUT, &phone, json!({"mac": NEW_MAC}), 409, "mac"),
        row("phone read-only mac as a number", PUT, &phone, json!({"mac": 1565}), 400, "mac"),
        row("domain update", PUT, &dom, json!({"foo": 1}), 400, "foo"),
        row("domain create", PUT, "/domains/new.org", json!({"defaults": {}, "settings": {}}), 400, "settings"),
        row("domain default with a bad name", PUT, &dom, json!({"defaults": {"Time Zone": "+1"}}), 400, "defaults.Time Zone"),
        row("member", PUT, &mp, json!({"members": [{"port": 1, "id": "1004a@example.com", "foo": true}]}), 400, "members[0].foo"),
        row("second member, wrong case", PUT, &mp, json!({"members": [owner, second]}), 400, "members[1].lineweight"),
        row("members body", PUT, &mp, json!({"members": [owner], "orgId": DOM}), 400, "orgId"),
    ];
    run(&s, rows).await;
}

#[tokio::test]
async fn wrong_types_are_refused_by_name() {
    let s = fixture().await;
    let expiry = "device-sip-registration-expiry-seconds";
    let core = "device-provisioning-registration-core-server";
    let ov = "device-provisioning-overrides";
    let mp = members_path(T46S);
    let phone = format!("/phones/{T46S}");
    let dom = format!("/domains/{DOM}");
    // A 400 naming `field` for a PUT of `body` on the linked account, the phone, the domain.
    let acc = |what: &str, body: Value, field: &str| row(what, PUT, ACC, body, 400, field);
    let ph = |what: &str, body: Value, field: &str| row(what, PUT, &phone, body, 400, field);
    let dm = |what: &str, body: Value, field: &str| row(what, PUT, &dom, body, 400, field);
    // … and for a members list of one member with `extra` fields.
    let mb = |what: &str, extra: Value, field: &str| {
        let mut m = json!({"port": 1, "id": "1004a@example.com", "primaryOwner": true});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        row(what, PUT, &mp, json!({ "members": [m] }), 400, field)
    };
    #[rustfmt::skip]
    let rows = vec![
        acc("expiry text", json!({expiry: "abc"}), expiry),
        acc("expiry zero", json!({expiry: 0}), expiry),
        acc("expiry too big", json!({expiry: 604_801}), expiry),
        acc("expiry fraction", json!({expiry: 1.5}), expiry),
        acc("expiry boolean", json!({expiry: true}), expiry),
        acc("srtp boolean", json!({"device-srtp-enabled": true}), "device-srtp-enabled"),
        acc("allowed UA boolean", json!({"device-sip-allowed-user-agent": false}), "device-sip-allowed-user-agent"),
        acc("allowed UA number", json!({"device-sip-allowed-user-agent": 5}), "device-sip-allowed-user-agent"),
        acc("srtp number", json!({"device-srtp-enabled": 1}), "device-srtp-enabled"),
        acc("core server number", json!({core: 0}), core),
        ph("phone core server number", json!({core: 0}), core),
        ph("phone transport number", json!({"device-provisioning-sip-transport-protocol": 1}),
            "device-provisioning-sip-transport-protocol"),
        acc("emergency cid array", json!({"caller-id-number-emergency": ["911"]}), "caller-id-number-emergency"),
        acc("emergency address number", json!({"emergency-address-id": 5}), "emergency-address-id"),
        acc("password number", json!({"device-sip-registration-password": 12345678}), "device-sip-registration-password"),
        acc("line as text", json!({"device-provisioning-line": "2"}), "device-provisioning-line"),
        row("MAC number", PUT, FREE_ACC, json!({"device-provisioning-mac-address": 1565, "device-models-model": "yealink-t46s"}),
            400, "device-provisioning-mac-address"),
        acc("model boolean", json!({"device-models-model": false}), "device-models-model"),
        acc("core server object", json!({core: {}}), core),
        acc("core server not a host", json!({core: "sip server"}), core),
        acc("overrides number", json!({ov: 5}), ov),
        acc("override value number", json!({ov: {"k": 1}}), &format!("{ov}.k")),
        acc("override text not `key = value`", json!({ov: "just words"}), ov),
        dm("defaults text", json!({"defaults": "x"}), "defaults"),
        dm("default boolean", json!({"defaults": {"time-zone": true}}), "defaults.time-zone"),
        dm("default expiry text", json!({"defaults": {expiry: "abc"}}), &format!("defaults.{expiry}")),
        dm("provisioning username number",
            json!({"device-provisioning-username": 5, "device-provisioning-password": "pw"}), "device-provisioning-username"),
        ph("phone domain number", json!({"domain": 5}), "domain"),
        ph("phone model number", json!({"device-models-model": 46}), "device-models-model"),
        ph("phone overrides array", json!({ov: []}), ov),
        ph("phone override value object", json!({ov: {"k": {}}}), &format!("{ov}.k")),
        ph("phone transport boolean", json!({"device-provisioning-sip-transport-protocol": true}),
            "device-provisioning-sip-transport-protocol"),
        row("members text", PUT, &mp, json!({"members": "x"}), 400, "members"),
        row("member number", PUT, &mp, json!({"members": [1]}), 400, "members[0]"),
        mb("port text", json!({"port": "1"}), "members[0].port"),
        mb("port zero", json!({"port": 0}), "members[0].port"),
        mb("port negative", json!({"port": -1}), "members[0].port"),
        mb("port fraction", json!({"port": 1.5}), "members[0].port"),
        mb("id number", json!({"id": 1004}), "members[0].id"),
        mb("lineWeight zero", json!({"lineWeight": 0}), "members[0].lineWeight"),
        mb("lineWeight text", json!({"lineWeight": "2"}), "members[0].lineWeight"),
        mb("lineLabel number", json!({"lineLabel": 5}), "members[0].lineLabel"),
        mb("primaryOwner text", json!({"primaryOwner": "yes"}), "members[0].primaryOwner"),
        mb("hotlineEnabled number", json!({"hotlineEnabled": 1}), "members[0].hotlineEnabled"),
        mb("allowCallDeclineEnabled text", json!({"allowCallDeclineEnabled": "true"}), "members[0].allowCallDeclineEnabled"),
        mb("hotlineDestination number", json!({"hotlineEnabled": true, "hotlineDestination": 911}),
            "members[0].hotlineDestination"),
        mb("lineType number", json!({"lineType": 1}), "members[0].lineType"),
    ];
    run(&s, rows).await;
}

#[tokio::test]
async fn enum_violations_are_refused_by_name() {
    let s = fixture().await;
    let t = "device-provisioning-sip-transport-protocol";
    let srtp = "device-srtp-enabled";
    // (field, value) on the account; every yes/no flag of the seed refuses anything else.
    let mut bad: Vec<(&str, Value)> = vec![
        (srtp, json!("maybe")),
        (srtp, json!("YES ")),
        (t, json!("sctp")),
        ("device-sip-nat-traversal-enabled", json!("x")),
        ("recording-configuration", json!("x")),
        ("recording-configuration", json!("yes-with-sentiment")),
    ];
    for flag in [
        "device-force-notify-new-voicemails-enabled",
        "device-level-call-recording-enabled",
        "device-push-enabled",
        "device-sip-registration-ignore-for-presence-calculation",
        "device-sip-registration-ignore-report-enabled",
        "device-sip-no-to-tag-in-cancel",
        "auto-answer-enabled",
    ] {
        bad.extend([(flag, json!("perhaps")), (flag, json!(true))]);
    }
    let mut rows: Vec<Row> = bad
        .into_iter()
        .map(|(k, v)| row(format!("{k} = {v}"), PUT, ACC, json!({ k: v }), 400, k))
        .collect();
    let (phone, dom) = (format!("/phones/{T46S}"), format!("/domains/{DOM}"));
    #[rustfmt::skip]
    rows.extend([
        row("phone transport", PUT, &phone, json!({t: "sctp"}), 400, t),
        row("domain default transport", PUT, &dom, json!({"defaults": {t: "sctp"}}), 400, format!("defaults.{t}")),
        row("domain default srtp", PUT, &dom, json!({"defaults": {srtp: "maybe"}}), 400, format!("defaults.{srtp}")),
    ]);
    for lt in ["OWNER", "primary", ""] {
        let member =
            json!({"port": 1, "id": "1004a@example.com", "primaryOwner": true, "lineType": lt});
        rows.push(row(
            format!("lineType {lt:?}"),
            PUT,
            members_path(T46S),
            json!({ "members": [member] }),
            400,
            "members[0].lineType",
        ));
    }
    run(&s, rows).await;
}

#[tokio::test]
async fn control_characters_in_free_text_are_refused_by_name() {
    let s = fixture().await;
    let phone = format!("/phones/{T46S}");
    let dom = format!("/domains/{DOM}");
    let mp = members_path(T46S);
    let ov = "device-provisioning-overrides";
    let (pu, pp) = (
        "device-provisioning-username",
        "device-provisioning-password",
    );
    let mut rows = vec![];
    for c in CONTROLS {
        let v = format!("a{c}b");
        let key = format!("k{c}y");
        let (ov_k, ov_key) = (format!("{ov}.k"), format!("{ov}.{key}"));
        let default_key = format!("defaults.{key}");
        let member = |extra: Value| {
            let mut m = json!({"port": 1, "id": "1004a@example.com", "primaryOwner": true});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            json!({ "members": [m] })
        };
        // (what, path, body, field named)
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Value, &str)> = vec![
            ("registration password", ACC, json!({"device-sip-registration-password": v}), "device-sip-registration-password"),
            ("emergency caller id", ACC, json!({"caller-id-number-emergency": v}), "caller-id-number-emergency"),
            ("allowed User-Agent", ACC, json!({"device-sip-allowed-user-agent": v}), "device-sip-allowed-user-agent"),
            ("emergency address", ACC, json!({"emergency-address-id": v}), "emergency-address-id"),
            ("core server", ACC, json!({"device-provisioning-registration-core-server": v}),
                "device-provisioning-registration-core-server"),
            ("model", ACC, json!({"device-models-model": v}), "device-models-model"),
            ("account provisioning username", ACC, json!({pu: v, pp: "pw"}), pu),
            ("account provisioning password", ACC, json!({pu: "u", pp: v}), pp),
            ("linked account override value", ACC, json!({ov: {"k": v}}), &ov_k),
            ("linked account override key", ACC, json!({ov: {&key: "v"}}), &ov_key),
            ("unlinked account override value", FREE_ACC, json!({ov: {"k": v}}), &ov_k),
            ("unlinked account override key", FREE_ACC, json!({ov: {&key: "v"}}), &ov_key),
            ("phone provisioning username", &phone, json!({pu: v, pp: "pw"}), pu),
            ("phone provisioning password", &phone, json!({pu: "u", pp: v}), pp),
            ("phone override value", &phone, json!({ov: {"k": v}}), &ov_k),
            ("phone override key", &phone, json!({ov: {&key: "v"}}), &ov_key),
            ("domain default value", &dom, json!({"defaults": {"time-zone": v}}), "defaults.time-zone"),
            ("domain default key", &dom, json!({"defaults": {&key: "v"}}), &default_key),
            ("domain provisioning username", &dom, json!({pu: v, pp: "pw"}), pu),
            ("domain provisioning password", &dom, json!({pu: "u", pp: v}), pp),
            ("member lineLabel", &mp, member(json!({"lineLabel": v})), "members[0].lineLabel"),
            ("member hotlineDestination", &mp, member(json!({"hotlineEnabled": true, "hotlineDestination": v})),
                "members[0].hotlineDestination"),
            ("member id", &mp, member(json!({"id": format!("1004a{c}@example.com")})), "members[0].id"),
        ];
        for (what, path, body, field) in cases {
            rows.push(row(format!("{what} {c:?}"), PUT, path, body, 400, field));
        }
        // The `key = value` text form of overrides: a control character that is not a
        // line break stays inside the value.
        if !c.contains(['\r', '\n']) {
            rows.push(row(
                format!("override line {c:?}"),
                PUT,
                ACC,
                json!({ov: format!("k1 = {v}\nk2 = fine")}),
                400,
                format!("{ov}.k1"),
            ));
        }
    }
    // Line breaks in path segments (percent-encoded).
    rows.extend([
        row(
            "CR/LF in device",
            PUT,
            format!("/domains/{DOM}/users/1004/devices/10%0D%0Aa"),
            json!({}),
            400,
            "device",
        ),
        row(
            "LF in user",
            PUT,
            format!("/domains/{DOM}/users/10%0A04/devices/1004z"),
            json!({}),
            400,
            "user",
        ),
        row(
            "LF in domain",
            PUT,
            "/domains/new%0A.org",
            json!({}),
            400,
            "domain",
        ),
    ]);
    run(&s, rows).await;
}

// ---------------------------------------------------------------- MACs

#[tokio::test]
async fn mac_spellings_normalise_or_are_refused() {
    let s = fixture().await;
    let good = [
        "aa:bb:cc:dd:ee:ff",
        "AA-BB-CC-DD-EE-FF",
        "aabb.ccdd.eeff",
        "aabbccddeeff",
        "AABBCCDDEEFF",
    ];
    for (i, mac) in good.iter().enumerate() {
        let (st, b) = s
            .put(
                &format!("/phones/{mac}"),
                json!({"device-models-model": "yealink-t46s"}),
            )
            .await;
        let want = if i == 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        assert_eq!(st, want, "PUT /phones/{mac}: {b}");
        assert_eq!(b["mac"], "aabbccddeeff", "{mac}");
        let (st, b) = s.get(&format!("/phones/{mac}")).await;
        assert_eq!(st, StatusCode::OK, "GET /phones/{mac}");
        assert_eq!(b["mac"], "aabbccddeeff", "{mac}");
    }
    // Accounts accept the same spellings and report the canonical form.
    for (i, mac) in good.iter().enumerate() {
        let (st, b) = s
            .put(
                &format!("/domains/{DOM}/users/30{i}/devices/30{i}a"),
                json!({"device-provisioning-mac-address": mac, "device-models-model": "yealink-t46s"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{mac}: {b}");
        assert_eq!(
            b["device-provisioning-mac-address"], "aabbccddeeff",
            "{mac}"
        );
        assert_eq!(b["device-provisioning-line"], i + 1, "{mac}");
    }

    let bad = [
        "aa:bb:cc:dd:ee",
        "gg:bb:cc:dd:ee:ff",
        "aa:bb-cc:dd:ee:ff",
        "+a:bb:cc:dd:ee:ff",
        "aabbccddeef",
        "aabbccddeeff0",
        "aabb.ccdd.eef",
        "aa:bb:cc:dd:ee:f",
        "aabbccddeeff.cfg",
    ];
    let mut rows = vec![];
    for mac in bad {
        rows.extend([
            row(
                format!("PUT phone {mac}"),
                PUT,
                format!("/phones/{mac}"),
                json!({"device-models-model": "yealink-t46s"}),
                400,
                "mac",
            ),
            row(
                format!("GET phone {mac}"),
                GET,
                format!("/phones/{mac}"),
                Value::Null,
                400,
                "mac",
            ),
            row(
                format!("DELETE phone {mac}"),
                DELETE,
                format!("/phones/{mac}"),
                Value::Null,
                400,
                "mac",
            ),
            row(
                format!("GET members {mac}"),
                GET,
                members_path(mac),
                Value::Null,
                400,
                "mac",
            ),
            row(
                format!("PUT members {mac}"),
                PUT,
                members_path(mac),
                json!({"members": []}),
                400,
                "mac",
            ),
            row(
                format!("account MAC {mac}"),
                PUT,
                FREE_ACC,
                json!({"device-provisioning-mac-address": mac, "device-models-model": "yealink-t46s"}),
                400,
                "device-provisioning-mac-address",
            ),
            row(
                format!("new account MAC {mac}"),
                PUT,
                format!("/domains/{DOM}/users/1007/devices/1007a"),
                json!({"device-provisioning-mac-address": mac, "device-models-model": "yealink-t46s"}),
                400,
                "device-provisioning-mac-address",
            ),
        ]);
    }
    rows.push(row(
        "list cursor",
        GET,
        "/phones?cursor=aa:bb:cc:dd:ee",
        Value::Null,
        400,
        "cursor",
    ));
    run(&s, rows).await;
}

// ---------------------------------------------------------------- members

#[tokio::test]
async fn members_rules_are_refused_by_name() {
    let s = fixture().await;
    let (p46, p31) = (members_path(T46S), members_path(T31G));
    let (a, b, c, t31) = (
        "1004a@example.com",
        "1005a@example.com",
        "1006a@example.com",
        "2001a@example.com",
    );
    let own = |port: u32, id: &str| json!({"port": port, "id": id, "primaryOwner": true});
    let mem = |port: u32, id: &str| json!({"port": port, "id": id});
    // `extra` fields on a member on `port`.
    let with = |port: u32, id: &str, extra: Value| {
        let mut m = mem(port, id);
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    // A 400 for a PUT of `list` on `path`, naming `field` (a list the document refuses).
    let bad = |what: &str, path: &str, list: Vec<Value>, field: &str| {
        row(what, PUT, path, json!({ "members": list }), 400, field)
    };
    // A 409: a list the document allows that conflicts with the model, the stored accounts
    // or another member of the list.
    let clash = |what: &str, path: &str, list: Vec<Value>, field: &str| {
        row(what, PUT, path, json!({ "members": list }), 409, field)
    };
    #[rustfmt::skip]
    let rows = vec![
        clash("port 3 on a 2-port T31G", &p31, vec![own(3, t31)], "members[0].port"),
        clash("port 17 on a 16-port T46S", &p46, vec![own(1, a), mem(17, b)], "members[1].port"),
        bad("port 1025", &p46, vec![own(1025, a)], "members[0].port"),
        bad("empty account id", &p46, vec![json!({"port": 1, "id": "", "primaryOwner": true})], "members[0].id"),
        clash("two members on one port", &p46, vec![own(1, a), mem(1, b)], "members[1].port"),
        clash("lineWeight 2 on port 1 overlaps port 2", &p46,
            vec![with(1, a, json!({"lineWeight": 2})), mem(2, b)], "members[0].lineWeight"),
        clash("the same overlap listed the other way round names the wide member", &p46,
            vec![mem(2, b), with(1, a, json!({"lineWeight": 2}))], "members[1].lineWeight"),
        clash("lineWeight 3 on port 4 overlaps port 6", &p46,
            vec![own(1, a), with(4, b, json!({"lineWeight": 3})), mem(6, c)], "members[1].lineWeight"),
        clash("lineWeight past the T31G's last port", &p31,
            vec![with(2, t31, json!({"lineWeight": 2}))], "members[0].lineWeight"),
        clash("lineWeight past the T46S's last port", &p46,
            vec![with(10, a, json!({"lineWeight": 8}))], "members[0].lineWeight"),
        bad("lineWeight 65", &p46, vec![with(1, a, json!({"lineWeight": 65}))], "members[0].lineWeight"),
        clash("two primary owners", &p46, vec![own(1, a), own(2, b)], "members[1].primaryOwner"),
        bad("hotline without destination", &p46,
            vec![with(1, a, json!({"hotlineEnabled": true}))], "members[0].hotlineDestination"),
        bad("hotline with a blank destination", &p46,
            vec![with(1, a, json!({"hotlineEnabled": true, "hotlineDestination": "  "}))],
            "members[0].hotlineDestination"),
        clash("T.38 on a T46S", &p46,
            vec![with(1, a, json!({"t38FaxCompressionEnabled": true}))], "members[0].t38FaxCompressionEnabled"),
        clash("T.38 on a T31G", &p31,
            vec![with(1, t31, json!({"t38FaxCompressionEnabled": true}))], "members[0].t38FaxCompressionEnabled"),
        clash("unknown account", &p46, vec![own(1, a), mem(2, "nobody@example.com")], "members[1].id"),
        clash("account id without its domain", &p46, vec![own(1, "1005a")], "members[0].id"),
        clash("another domain's account", &p46, vec![own(1, "9001a@other.org")], "members[0].id"),
        bad("empty id", &p46, vec![own(1, "")], "members[0].id"),
        bad("unknown lineType", &p46, vec![with(1, a, json!({"lineType": "BRIDGED"}))], "members[0].lineType"),
        bad("missing port", &p46, vec![json!({"id": a})], "members[0].port"),
        bad("null port", &p46, vec![json!({"port": null, "id": a})], "members[0].port"),
        bad("missing id", &p46, vec![own(1, a), json!({"port": 2})], "members[1].id"),
        row("unknown phone", PUT, members_path(NEW_MAC), json!({"members": [own(1, a)]}), 404, ""),
        row("GET of an unknown phone", GET, members_path(NEW_MAC), Value::Null, 404, ""),
        row("orgId of another domain", PUT, format!("{p46}?orgId=other.org"), json!({"members": [own(1, a)]}), 404, ""),
        row("orgId of no domain", PUT, format!("{p46}?orgId=nowhere.org"), json!({"members": [own(1, a)]}), 404, ""),
        row("GET with another domain's orgId", GET, format!("{p46}?orgId=other.org"), Value::Null, 404, ""),
    ];
    run(&s, rows).await;
}

#[tokio::test]
async fn members_replacement_and_omission() {
    let s = fixture().await;
    let p46 = members_path(T46S);
    // A valid replacement, naming the phone's own domain.
    let (st, b) = s
        .put(
            &format!("{p46}?orgId={DOM}"),
            json!({"members": [
                {"port": 1, "id": "1004a@example.com", "primaryOwner": true, "lineLabel": "Reception"},
                {"port": 3, "id": "1006a@example.com", "lineLabel": "Back office"},
                {"port": 4, "id": "1005a@example.com", "lineType": "SHARED_CALL_APPEARANCE",
                 "lineWeight": 2, "lineLabel": "Shared"},
            ]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, got) = s.get(&format!("{p46}?orgId={DOM}")).await;
    assert_eq!(st, StatusCode::OK);
    let list = got["members"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{got}");
    assert_eq!(list[2]["lineWeight"], 2);
    assert_eq!(list[2]["lineType"], "SHARED_CALL_APPEARANCE");
    let (st, _, file) = s.fetch_text(&format!("{T46S}.cfg")).await;
    assert_eq!(st, StatusCode::OK);
    for line in [
        "account.1.label = Reception\n",
        "account.3.label = Back office\n",
        "account.3.user_name = 1006a\n",
        "account.4.user_name = 1005a\n",
        "account.4.shared_line = 1\n",
        "account.4.number_of_linekey = 2\n",
    ] {
        assert!(file.contains(line), "{line:?} missing from\n{file}");
    }

    // The members list omitted: everyone but the primary owner goes.
    let (st, b) = s.put(&p46, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["members"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["members"][0]["id"], "1004a@example.com");
    let (_, got) = s.get(&p46).await;
    assert_eq!(got["members"], b["members"]);
    let (st, _, file) = s.fetch_text(&format!("{T46S}.cfg")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(file.contains("account.1.user_name = 1004a\n"), "{file}");
    assert!(!file.contains("1005a"), "{file}");
    assert!(!file.contains("1006a"), "{file}");

    // An empty list removes everyone, the primary owner too.
    let (st, b) = s.put(&p46, json!({"members": []})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["members"], json!([]));
}

// ---------------------------------------------------------------- accounts

#[tokio::test]
async fn account_rules_are_refused_by_name() {
    let s = fixture().await;
    let coll = format!("/domains/{DOM}/users/1007/devices");
    let new_acc = format!("/domains/{DOM}/users/1007/devices/1007a");
    let (st, b) = s.post(&coll, json!({"device": "1007a"})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["id"], "1007a@example.com");
    let mac = "device-provisioning-mac-address";
    let model = "device-models-model";
    let line = "device-provisioning-line";
    let none = Value::Null;
    let t2001 = "/domains/example.com/users/2001/devices/2001a";
    let long_device = format!("{coll}/{}", "d".repeat(65));
    let long_user = format!("/domains/{DOM}/users/{}/devices/x", "1".repeat(17));
    #[rustfmt::skip]
    let rows = vec![
        // Creating, and who owns a device.
        row("second POST of a device", POST, &coll, json!({"device": "1007a"}), 409, "device"),
        row("POST of another user's device", POST, format!("/domains/{DOM}/users/1099/devices"),
            json!({"device": "1004a"}), 409, "device"),
        row("PUT of another user's device", PUT, format!("/domains/{DOM}/users/1099/devices/1004a"),
            json!({}), 409, "device"),
        row("POST without device", POST, &coll, json!({"device-srtp-enabled": "yes"}), 400, "device"),
        row("POST with a numeric device", POST, &coll, json!({"device": 1008}), 400, "device"),
        row("POST with a bad device name", POST, &coll, json!({"device": "10 08"}), 400, "device"),
        row("POST with an empty device", POST, &coll, json!({"device": ""}), 400, "device"),
        row("device name too long", PUT, &long_device, json!({}), 400, "device"),
        row("user name too long", PUT, &long_user, json!({}), 400, "user"),
        // Unknown domains and devices.
        row("PUT in an unknown domain", PUT, "/domains/nowhere.org/users/1/devices/1a", json!({}), 404, ""),
        row("POST in an unknown domain", POST, "/domains/nowhere.org/users/1/devices", json!({"device": "1a"}), 404, ""),
        row("GET in an unknown domain", GET, "/domains/nowhere.org/users/1/devices/1a", none.clone(), 404, ""),
        row("list in an unknown domain", GET, "/domains/nowhere.org/users/1/devices", none.clone(), 404, ""),
        row("GET of an unknown device", GET, format!("{coll}/1099a"), none.clone(), 404, ""),
        row("GET under the wrong user", GET, format!("/domains/{DOM}/users/1099/devices/1004a"), none.clone(), 404, ""),
        row("DELETE of an unknown device", DELETE, format!("{coll}/1099a"), none.clone(), 404, ""),
        row("DELETE of an unknown device of another domain", DELETE,
            "/domains/other.org/users/9001/devices/9001b", none.clone(), 404, ""),
        // Linking a phone.
        row("unknown model on a new MAC", PUT, FREE_ACC, json!({mac: NEW_MAC, model: "yealink-t99"}), 409, model),
        row("unknown model on a new account", PUT, format!("{coll}/1008a"),
            json!({mac: NEW_MAC, model: "nokia-3310"}), 409, model),
        row("model without a MAC", PUT, FREE_ACC, json!({model: "yealink-t46s"}), 409, model),
        row("model without a MAC on create", PUT, format!("{coll}/1008a"), json!({model: "yealink-t46s"}), 409, model),
        row("new MAC without a model", PUT, FREE_ACC, json!({mac: NEW_MAC}), 409, model),
        row("MAC of another domain", PUT, FREE_ACC, json!({mac: OTHER}), 409, mac),
        row("MAC of another domain, with its model", PUT, FREE_ACC, json!({mac: OTHER, model: "yealink-t46s"}), 409, mac),
        row("MAC linked under another model", PUT, FREE_ACC, json!({mac: T46S, model: "yealink-t31g"}), 409, model),
        row("line 17 of a T46S", PUT, FREE_ACC, json!({mac: T46S, line: 17}), 409, line),
        row("line 3 of a T31G", PUT, FREE_ACC, json!({mac: T31G, line: 3}), 409, line),
        row("line 3 of a new T31G", PUT, FREE_ACC, json!({mac: NEW_MAC, model: "yealink-t31g", line: 3}), 409, line),
        row("line 0", PUT, FREE_ACC, json!({mac: T46S, line: 0}), 400, line),
        row("line 65", PUT, FREE_ACC, json!({mac: T46S, line: 65}), 400, line),
        row("moving to a line past the end", PUT, ACC, json!({line: 17}), 409, line),
        row("line taken by another account", PUT, FREE_ACC, json!({mac: T46S, line: 1}), 409, line),
        row("moving onto a taken line", PUT, t2001, json!({mac: T46S, line: 1}), 409, line),
        row("line without a MAC", PUT, FREE_ACC, json!({line: 2}), 409, line),
        // `~` needs a domain- or user-bound token; the server-wide one has neither.
        row("~ domain on PUT", PUT, "/domains/~/users/1004/devices/1004a", json!({}), 404, ""),
        row("~ domain on POST", POST, "/domains/~/users/1004/devices", json!({"device": "1004z"}), 404, ""),
        row("~ domain on GET", GET, "/domains/~/users/1004/devices/1004a", none.clone(), 404, ""),
        row("~ domain on DELETE", DELETE, "/domains/~/users/1004/devices/1004a", none.clone(), 404, ""),
        row("~ domain on list", GET, "/domains/~/users/1004/devices", none.clone(), 404, ""),
        row("~ domain itself", GET, "/domains/~", none.clone(), 404, ""),
        row("~ domain PUT itself", PUT, "/domains/~", json!({}), 404, ""),
        row("~ user", PUT, format!("/domains/{DOM}/users/~/devices/1004a"), json!({}), 404, ""),
        // Credentials.
        row("provisioning username without password", PUT, ACC,
            json!({"device-provisioning-username": "u"}), 409, "device-provisioning-password"),
    ];
    run(&s, rows).await;
    // The refused rows left the account created above as it was.
    let (st, b) = s.get(&new_acc).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// An empty password can never be presented (phones refuse to send one and the phone
/// path refuses to accept one), so setting one is refused. Each row touches a different
/// record, so one accepted row cannot mask another.
#[tokio::test]
async fn empty_passwords_are_refused() {
    let s = fixture().await;
    let prov = |pass: &str| json!({"device-provisioning-username": "u", "device-provisioning-password": pass});
    let reg = "device-sip-registration-password";
    let pp = "device-provisioning-password";
    run(
        &s,
        vec![
            row(
                "registration password",
                PUT,
                ACC,
                json!({reg: ""}),
                400,
                reg,
            ),
            row(
                "registration password on create",
                PUT,
                format!("/domains/{DOM}/users/1020/devices/1020a"),
                json!({reg: ""}),
                400,
                reg,
            ),
            row(
                "account provisioning password",
                PUT,
                FREE_ACC,
                prov(""),
                400,
                pp,
            ),
            row(
                "phone provisioning password",
                PUT,
                format!("/phones/{T31G}"),
                prov(""),
                400,
                pp,
            ),
            row(
                "domain provisioning password",
                PUT,
                "/domains/other.org",
                prov(""),
                400,
                pp,
            ),
        ],
    )
    .await;
}

/// An account created without a registration password gets a generated one (16
/// characters), which its phone's file carries; a null password generates a new one.
#[tokio::test]
async fn an_account_created_without_a_password_gets_a_generated_one() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    let path = "/domains/example.com/users/1030/devices/1030a";
    let link = json!({"device-models-model": "yealink-t46s",
                      "device-provisioning-mac-address": "001565a0a0a0"});
    let (st, b) = s.put(path, link).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let password = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("account.1.password = "))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let (_, _, body) = s.fetch_text("001565a0a0a0.cfg").await;
    let first = password(&body);
    assert_eq!(first.len(), 16, "a generated password: {body}");
    assert!(first.chars().all(|c| c.is_ascii_alphanumeric()), "{first}");
    let (st, b) = s
        .put(path, json!({"device-sip-registration-password": null}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, _, body) = s.fetch_text("001565a0a0a0.cfg").await;
    let second = password(&body);
    assert_eq!(second.len(), 16);
    assert_ne!(second, first, "null generates a new one");
}

#[tokio::test]
async fn account_put_creates_then_changes_only_named_fields() {
    let s = fixture().await;
    let path = format!("/domains/{DOM}/users/1010/devices/1010a");
    let body = json!({"device-sip-registration-password": "Secret-1010a", "device-models-model": "yealink-t46s",
                      "device-provisioning-mac-address": NEW_MAC});
    let (st, created) = s.put(&path, body.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    assert_eq!(created["device-srtp-enabled"], "no");
    let (st, again) = s.put(&path, body).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again, created);

    let (_, before) = s.get(&path).await;
    assert_eq!(before, created);
    for (field, value) in [
        ("device-srtp-enabled", json!("yes")),
        ("device-sip-registration-expiry-seconds", json!(3600)),
        ("recording-configuration", json!("yes-with-transcription")),
        ("device-push-enabled", json!("no")),
        ("caller-id-number-emergency", json!("+15551234567")),
        ("emergency-address-id", json!("addr-1")),
        ("device-sip-allowed-user-agent", json!("Yealink")),
    ] {
        let (st, b) = s.put(&path, json!({ field: value })).await;
        assert_eq!(st, StatusCode::OK, "{field}: {b}");
        let (_, after) = s.get(&path).await;
        let mut want = before.clone();
        want[field] = value.clone();
        assert_eq!(after, want, "setting {field} changed other fields");
        assert_eq!(b, after, "{field}: PUT answer and GET differ");
        // `null` resets the field to its default.
        let (st, b) = s.put(&path, json!({ field: null })).await;
        assert_eq!(st, StatusCode::OK, "{field}: {b}");
        let (_, reset) = s.get(&path).await;
        assert_eq!(reset, before, "{field}: null did not reset to the default");
    }
    // The write-only password was left alone by all of that.
    let (st, _, file) = s.fetch_text(&format!("{NEW_MAC}.cfg")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        file.contains("account.1.password = Secret-1010a\n"),
        "{file}"
    );
}

#[tokio::test]
async fn passwords_are_never_returned() {
    let s = fixture().await;
    let secrets = [
        "Reg-Secret-1",
        "Prov-Secret-2",
        "Phone-Secret-3",
        "Dom-Secret-4",
    ];
    let (st, b) = s
        .put(
            ACC,
            json!({"device-sip-registration-password": secrets[0],
                   "device-provisioning-username": "acc-user", "device-provisioning-password": secrets[1]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_no_password("account PUT", &b, &secrets);
    let (st, b) = s
        .post(
            &format!("/domains/{DOM}/users/1011/devices"),
            json!({"device": "1011a", "device-sip-registration-password": "Post-Secret-5"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_no_password("account POST", &b, &["Post-Secret-5"]);
    let (st, b) = s
        .put(
            &format!("/phones/{T31G}"),
            json!({"device-provisioning-username": "ph-user", "device-provisioning-password": secrets[2]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_no_password("phone PUT", &b, &secrets);
    let (st, b) = s
        .put(
            "/domains/other.org",
            json!({"device-provisioning-username": "dom-user", "device-provisioning-password": secrets[3]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_no_password("domain PUT", &b, &secrets);
    for path in [
        ACC.to_string(),
        format!("/domains/{DOM}/users/1004/devices"),
        format!("/domains/{DOM}/users/1011/devices/1011a"),
        format!("/phones/{T46S}"),
        format!("/phones/{T31G}"),
        "/phones".into(),
        format!("/domains/{DOM}"),
        "/domains/other.org".into(),
        members_path(T46S),
    ] {
        let (st, b) = s.get(&path).await;
        assert_eq!(st, StatusCode::OK, "{path}: {b}");
        assert_no_password(&path, &b, &secrets);
        assert_no_password(&path, &b, &["Post-Secret-5"]);
    }
}

// ---------------------------------------------------------------- phones and domains

#[tokio::test]
async fn phone_and_domain_rules_are_refused_by_name() {
    let s = fixture().await;
    // A domain with only an account, and one with only a (memberless) phone.
    s.seed_domain("accounts.org").await;
    let (st, b) = s
        .put("/domains/accounts.org/users/1/devices/1a", json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    s.seed_domain("phones.org").await;
    let (st, b) = s
        .put(
            "/phones/001565ffffff",
            json!({"device-models-model": "yealink-t46s", "domain": "phones.org"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    // A second member on port 5 of the T46S, so a 2-port model no longer fits.
    let (st, b) = s
        .put(
            FREE_ACC,
            json!({"device-provisioning-mac-address": T46S, "device-provisioning-line": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");

    let model = "device-models-model";
    let pp = "device-provisioning-password";
    let new = format!("/phones/{NEW_MAC}");
    let known = format!("/phones/{T46S}");
    let t31 = format!("/phones/{T31G}");
    let none = Value::Null;
    #[rustfmt::skip]
    let rows = vec![
        // Phones.
        row("create without a model", PUT, &new, json!({}), 409, model),
        row("create with only a domain", PUT, &new, json!({"domain": DOM}), 409, model),
        row("create with a null model", PUT, &new, json!({model: null}), 409, model),
        row("null model on update", PUT, &known, json!({model: null}), 400, model),
        row("unknown model on create", PUT, &new, json!({model: "yealink-t99"}), 409, model),
        row("unknown model on update", PUT, &known, json!({model: "cisco-7960"}), 409, model),
        row("empty model", PUT, &new, json!({model: ""}), 409, model),
        row("unknown domain on create", PUT, &new, json!({model: "yealink-t46s", "domain": "nowhere.org"}), 409, "domain"),
        row("unknown domain on update", PUT, &t31, json!({"domain": "nowhere.org"}), 409, "domain"),
        row("bad domain name", PUT, &new, json!({model: "yealink-t46s", "domain": "no where"}), 400, "domain"),
        row("moving a phone away from its members' domain", PUT, &known, json!({"domain": "other.org"}), 409, "domain"),
        row("a model its members do not fit", PUT, &known, json!({model: "yealink-t31g"}), 409, model),
        row("provisioning username without password", PUT, &known, json!({"device-provisioning-username": "u"}), 409, pp),
        row("GET of an unknown phone", GET, &new, none.clone(), 404, ""),
        row("DELETE of an unknown phone", DELETE, &new, none.clone(), 404, ""),
        row("preview of an unknown phone", GET, format!("{new}/files/{NEW_MAC}.cfg"), none.clone(), 404, ""),
        row("preview of a file no model requests", GET, format!("{known}/files/foo.txt"), none.clone(), 404, ""),
        row("preview of another phone's file", GET, format!("{known}/files/{T31G}.cfg"), none.clone(), 404, ""),
        row("list limit 0", GET, "/phones?limit=0", none.clone(), 400, "limit"),
        row("list limit 1001", GET, "/phones?limit=1001", none.clone(), 400, "limit"),
        // Domains.
        row("DELETE of a domain with phones and accounts", DELETE, format!("/domains/{DOM}"), none.clone(), 409, "domain"),
        row("DELETE of a domain with only accounts", DELETE, "/domains/accounts.org", none.clone(), 409, "domain"),
        row("DELETE of a domain with only a phone", DELETE, "/domains/phones.org", none.clone(), 409, "domain"),
        row("DELETE of an unknown domain", DELETE, "/domains/nowhere.org", none.clone(), 404, ""),
        row("GET of an unknown domain", GET, "/domains/nowhere.org", none.clone(), 404, ""),
        row("DELETE of a bad domain name", DELETE, "/domains/no%20where", none.clone(), 400, "domain"),
        row("domain username without password", PUT, "/domains/new.org",
            json!({"device-provisioning-username": "u"}), 409, pp),
        row("unknown admin path", GET, "/nothing", none.clone(), 404, ""),
    ];
    run(&s, rows).await;

    // Once emptied, the domains can go.
    for path in [
        "/phones/001565ffffff",
        "/domains/phones.org",
        "/domains/accounts.org/users/1/devices/1a",
        "/domains/accounts.org",
    ] {
        assert_eq!(s.delete(path).await.0, StatusCode::NO_CONTENT, "{path}");
    }
    assert_eq!(
        s.get("/domains/accounts.org").await.0,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------- phone path

/// A phone-path response reduced to what a client can observe (minus `date`).
async fn observe(r: reqwest::Response) -> (StatusCode, Vec<(String, String)>, String) {
    let status = r.status();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    headers.sort();
    (status, headers, r.text().await.unwrap_or_default())
}

/// The `Authorization` header reqwest builds for `user:pass`.
fn basic_header(s: &TestServer, user: &str, pass: &str) -> String {
    let req = s
        .client
        .get(&s.url)
        .basic_auth(user, Some(pass))
        .build()
        .unwrap();
    req.headers()["authorization"].to_str().unwrap().to_string()
}

async fn fetch_with_header(s: &TestServer, file: &str, auth: &str) -> reqwest::Response {
    s.client
        .get(format!("{}/{file}", s.url))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn phone_fetch_refusals() {
    let s = fixture().await;
    let (user, pass) = (s.prov.0.clone(), s.prov.1.clone());
    let known = format!("{T46S}.cfg");
    let unknown = format!("{NEW_MAC}.cfg");
    let wrong = format!("{pass}x");
    let before = s.dump();

    let mut failures = vec![];
    // (what, file, credentials, expected status)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("no credentials", known.as_str(), None, 401),
        ("wrong password", &known, Some((&user, &wrong)), 401),
        ("wrong user", &known, Some(("someone", &pass)), 401),
        ("empty password", &known, Some((&user, "")), 401),
        (
            "common file without credentials",
            "y000000000066.cfg",
            None,
            401,
        ),
        ("unknown MAC, no credentials", &unknown, None, 401),
        (
            "unknown MAC, wrong password",
            &unknown,
            Some((&user, &wrong)),
            401,
        ),
        (
            "unknown MAC, right credentials",
            &unknown,
            Some((&user, &pass)),
            404,
        ),
        (
            "file no model requests",
            "foo.txt",
            Some((&user, &pass)),
            404,
        ),
        (
            "MAC with a suffix no model uses",
            "001565aabbcc.xml",
            Some((&user, &pass)),
            404,
        ),
        (
            "MAC-like name too short",
            "001565aabbc.cfg",
            Some((&user, &pass)),
            404,
        ),
        (
            "nested path",
            "a/001565aabbcc.cfg",
            Some((&user, &pass)),
            404,
        ),
    ];
    for (what, file, creds, want) in cases {
        let r = s.fetch_as(file, creds, None).await;
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        if status != want {
            failures.push(format!(
                "{what} ({file}): status {status} instead of {want}"
            ));
        }
        if want == 401 && challenge.as_deref() != Some("Basic realm=\"autoprov\"") {
            failures.push(format!("{what}: WWW-Authenticate is {challenge:?}"));
        }
        if want != 401 && challenge.is_some() {
            failures.push(format!("{what}: unexpected challenge {challenge:?}"));
        }
        if s.dump() != before {
            failures.push(format!("{what}: the store changed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // No enumeration: an unknown MAC with wrong credentials looks exactly like a known one.
    for creds in [None, Some((user.as_str(), wrong.as_str()))] {
        let a = observe(s.fetch_as(&known, creds, None).await).await;
        let b = observe(s.fetch_as(&unknown, creds, None).await).await;
        assert_eq!(a, b, "known and unknown MAC answer differently ({creds:?})");
    }
    assert_eq!(s.dump(), before);

    // The right credentials still work, also with two spaces after `Basic` and a
    // lower-case scheme.
    let good = basic_header(&s, &user, &pass);
    for header in [
        good.clone(),
        good.replacen("Basic ", "Basic  ", 1),
        good.replacen("Basic ", "basic ", 1),
    ] {
        let r = fetch_with_header(&s, &known, &header).await;
        assert_eq!(r.status(), StatusCode::OK, "{header:?}");
    }
    // Malformed Basic headers are refused like missing ones.
    for header in [
        "Basic".to_string(),
        "Basic ".to_string(),
        "Basic !!!notbase64".to_string(),
        format!("Bearer {}", s.token),
        basic_header(&s, &user, "").replacen("Basic ", "Basic  ", 1),
        good.replacen("Basic ", "Basic x ", 1),
    ] {
        let r = fetch_with_header(&s, &known, &header).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"autoprov\"");
        assert_eq!(s.dump(), before, "{header:?}");
    }
}

#[tokio::test]
async fn phone_files_are_read_only() {
    let s = fixture().await;
    let url = format!("{}/{T46S}.cfg", s.url);
    let before = s.dump();
    let mut failures = vec![];
    for (method, body) in [
        (POST, None),
        (PUT, None),
        (DELETE, None),
        (Method::PATCH, None),
        (POST, Some("account.1.password = x")),
        (PUT, Some("account.1.password = x")),
    ] {
        let mut rb = s
            .client
            .request(method.clone(), &url)
            .basic_auth(&s.prov.0, Some(&s.prov.1));
        if let Some(b) = body {
            rb = rb.header("content-type", "text/plain").body(b);
        }
        let r = rb.send().await.unwrap();
        let what = format!("{method} with body {body:?}");
        if r.status() != StatusCode::METHOD_NOT_ALLOWED {
            failures.push(format!("{what}: status {} instead of 405", r.status()));
        } else if r.headers().get("allow").is_none_or(|a| a != "GET, HEAD") {
            failures.push(format!("{what}: Allow is {:?}", r.headers().get("allow")));
        }
        if s.dump() != before {
            failures.push(format!("{what}: the store changed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn allowed_user_agent_and_phone_credentials() {
    let s = fixture().await;
    let (st, b) = s
        .put(ACC, json!({"device-sip-allowed-user-agent": "Yealink"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let file = format!("{T46S}.cfg");
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let before = s.dump();
    for ua in [Some("curl/8"), Some("Polycom/5.9"), None] {
        let r = s.fetch_as(&file, creds, ua).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "User-Agent {ua:?}");
        assert_eq!(s.dump(), before, "User-Agent {ua:?}");
    }
    for ua in [
        "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc",
        "yealink SIP-T46S 66.86.0.15",
    ] {
        let r = s.fetch_as(&file, creds, Some(ua)).await;
        assert_eq!(r.status(), StatusCode::OK, "User-Agent {ua:?}");
    }
    // The account restricts only its own phone.
    let r = s
        .fetch_as(&format!("{T31G}.cfg"), creds, Some("curl/8"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Phone credentials replace the server default for that phone.
    let (st, b) = s
        .put(
            &format!("/phones/{T31G}"),
            json!({"device-provisioning-username": "t31g", "device-provisioning-password": "Phone-Pass"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let before = s.dump();
    let r = s.fetch_as(&format!("{T31G}.cfg"), creds, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"autoprov\"");
    let r = s
        .fetch_as(&format!("{T31G}.cfg"), Some(("t31g", "Phone-Pass!")), None)
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.dump(), before);
    let r = s
        .fetch_as(&format!("{T31G}.cfg"), Some(("t31g", "Phone-Pass")), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_body_and_wrong_method_get_json_errors() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    let before = s.dump();
    let big = format!("{{\"defaults\": {{\"x\": \"{}\"}}}}", "a".repeat(1_100_000));
    let r = s
        .admin(reqwest::Method::PUT, "/domains/example.com")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    let r = s
        .admin(reqwest::Method::PATCH, "/domains/example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    let r = s
        .admin(reqwest::Method::GET, "/no/such/path")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(s.dump(), before);
}

// ---------------------------------------------------------------- every entry point
//
// One table of hostile values per bulk column, driven through the admin API, `POST /import`
// (CSV and JSON rows) and `autoprov import` (data folder and `--url`): every entry point
// refuses the same values naming the same field, changes nothing when it refuses, and a
// phone's file never gains a line from a value.

/// Free-text characters the rules refuse: the line breaks a `key = value` file knows, TAB,
/// and other C0/C1 controls (ESC, DEL, NEL, the last C1).
const REFUSED_CHARS: &[&str] = &[
    "\r\n", "\n", "\r", "\u{0}", "\t", "\u{1b}", "\u{7f}", "\u{85}", "\u{9f}",
];
/// Unicode's line and paragraph separators: text, not controls, to the rules (the API
/// accepts them in free text) and to a phone, whose parser ends a line at LF or CR only.
const SEPARATORS: &[&str] = &["\u{2028}", "\u{2029}"];
/// The line a hostile value tries to add to a phone's file.
const INJECTED: &str = "injected.by.test = 1";
/// The override key the value cases use (not in the template: appended as `key = value`).
const OV_KEY: &str = "custom.note";
/// What every entry point starts from: example.com, the T46S with 1004a on port 1.
const SEED_CSV: &str = "mac,model,domain,user,device,line,label,password,transport,server\n\
    001565aabbcc,yealink-t46s,example.com,1004,1004a,1,Desk,pw-1004a,udp,sip.example.com\n";

/// One value for one bulk column, refused or accepted by every entry point alike.
#[derive(Clone, Debug)]
struct Hostile {
    /// The bulk column (`label`, `override:<key>`, …): the field a refusal names.
    col: String,
    value: String,
    refused: bool,
}

fn refuse(col: &str, value: impl Into<String>) -> Hostile {
    Hostile {
        col: col.into(),
        value: value.into(),
        refused: true,
    }
}

fn accept(col: &str, value: impl Into<String>) -> Hostile {
    Hostile {
        refused: false,
        ..refuse(col, value)
    }
}

impl Hostile {
    fn what(&self) -> String {
        let head: String = self.value.chars().take(24).collect();
        let more = if head.len() < self.value.len() {
            "…"
        } else {
            ""
        };
        let verdict = if self.refused { "refused" } else { "accepted" };
        format!(
            "{:?} = {head:?}{more} ({} bytes, {verdict})",
            self.col,
            self.value.len()
        )
    }
}

/// Free text (`label`, `password`, an override value): no control character anywhere,
/// at most 1024 characters (as the API document's `maxLength` counts them, not bytes);
/// quotes, commas and non-ASCII kept.
fn free_text_cases(col: &str) -> Vec<Hostile> {
    let mut v = vec![];
    for c in REFUSED_CHARS {
        v.push(refuse(col, format!("x{c}{INJECTED}")));
        v.push(refuse(col, format!("trailing{c}")));
    }
    for c in SEPARATORS {
        v.push(accept(col, format!("x{c}{INJECTED}")));
    }
    // Not XML characters: free text lands in XML files too (an override's value is held
    // to its file's format instead, and a key/value file can carry them).
    if !col.starts_with("override:") {
        for c in ["\u{FFFE}", "\u{FFFF}"] {
            v.push(refuse(col, format!("x{c}")));
        }
    }
    v.extend([
        accept(col, "a".repeat(1024)),
        refuse(col, "a".repeat(1025)),
        accept(col, "é".repeat(1024)),
        refuse(col, format!("{}a", "é".repeat(1024))),
    ]);
    for ok in [
        r#"Say "hi", it's <b>&amp;</b>"#,
        "\"",
        "\"\"",
        "Empfang Zürich – 受付 ☎",
        "a,b;c#d=e",
    ] {
        v.push(accept(col, ok));
    }
    v
}

/// Names (`domain` ≤ 64, `user` ≤ 16, `device` ≤ 64): A–Z a–z 0–9 `.` `_` `-` only.
fn name_cases() -> Vec<Hostile> {
    let mut v = vec![];
    for (col, max, ch) in [("domain", 64, "d"), ("user", 16, "7"), ("device", 64, "x")] {
        let others = [" ", "/", "@", ":", "ä", "\"", "'", ","];
        for c in REFUSED_CHARS.iter().chain(SEPARATORS).chain(&others) {
            v.push(refuse(col, format!("a{c}b")));
        }
        v.extend([
            refuse(col, ch.repeat(max + 1)),
            accept(col, ch.repeat(max)),
            accept(col, "Ab-_.9"),
        ]);
    }
    v
}

/// Override keys: no control character, space, `=`, leading `#`/`;`; at most 256 characters.
fn override_key_cases() -> Vec<Hostile> {
    let mut v = vec![];
    let others = [" ", "=", "\u{a0}"];
    for c in REFUSED_CHARS.iter().chain(SEPARATORS).chain(&others) {
        v.push(refuse(&format!("override:custom{c}x"), "v"));
    }
    for key in ["#custom", ";custom", &"k".repeat(257)] {
        v.push(refuse(&format!("override:{key}"), "v"));
    }
    for key in ["x;y", "a#b", &"k".repeat(256)] {
        v.push(accept(&format!("override:{key}"), "v"));
    }
    v
}

/// MACs, models, ports, enums and hosts. Accepted cases that change the seeded phone end
/// on the seed's own value (line 1, yealink-t46s), for the entry points that reuse it.
fn code_cases() -> Vec<Hostile> {
    let mut v = vec![];
    #[rustfmt::skip]
    let table: [(&str, &[&str], &[&str]); 5] = [
        ("mac", &["aa:bb:cc:dd:ee", "gg:bb:cc:dd:ee:ff", "aa:bb-cc:dd:ee:ff", "+a:bb:cc:dd:ee:ff",
            "aabbccddeef", "aabbccddeeff0", "aabb.ccdd.eef", "aabbccddeeff.cfg", "00:15:65\n:aa:bb:cc",
            "001565aabbcc\u{0}", "001565aa\u{2028}bbcc"],
            &["00:15:65:0a:00:01", "00-15-65-0A-00-02", "0015.650a.0003", "0015650A0004"]),
        ("model", &["yealink-t99", "yealink\nt46s", "yealink-t46s\u{0}", "../yealink-t46s", ""],
            &["yealink-t48s", "yealink-t46s"]),
        ("line", &["0", "17", "-1", "1.5", "one", "1\u{0}", "1\n2", "99999999999"], &["16", "1"]),
        ("transport", &["sctp", "UDP", "u\ndp", "udp\u{0}", "tls;transport=udp"], &["tcp", "tls", "udp"]),
        ("server", &["sip server", "sip.example.com:0", "sip.example.com:65536", "sip.example.com:x",
            "sip\nexample.com", "sip.example.com\u{0}", "-sip.example.com", "[zz]:5060", &"h".repeat(256)],
            &["[2001:db8::1]:5061", "192.0.2.1", &"h".repeat(255), "sip.example.com"]),
    ];
    for (col, bad, good) in table {
        v.extend(bad.iter().map(|b| refuse(col, *b)));
        v.extend(good.iter().map(|g| accept(col, *g)));
    }
    v
}

/// The whole table; checks that every column has values of both kinds.
fn hostile_table() -> Vec<Hostile> {
    let mut v = free_text_cases("label");
    v.extend(free_text_cases("password"));
    v.extend(free_text_cases(&format!("override:{OV_KEY}")));
    v.extend(override_key_cases());
    v.extend(name_cases());
    v.extend(code_cases());
    for col in autoprov::admin::bulk::COLUMNS {
        for refused in [true, false] {
            assert!(
                v.iter().any(|c| c.col == *col && c.refused == refused),
                "the table has no {} value for {col}",
                if refused { "refused" } else { "accepted" }
            );
        }
    }
    v
}

/// A MAC as the store spells it.
fn canonical(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The bulk row for case `i`: a refused value rewrites 1004a's line on the seeded T46S (a
/// file that exists, so it can be compared); an accepted one is a new phone with a new
/// account, so that each is checked alone (in one file, rows would share the T46S).
fn case_row(c: &Hostile, i: usize) -> Vec<(String, String)> {
    let (mac, user, device, label, pw) = if c.refused {
        (
            T46S.to_string(),
            "1004".into(),
            "1004a".into(),
            "Desk".into(),
            "pw-1004a".into(),
        )
    } else {
        let mac = format!("0015650b{i:04x}");
        (
            mac,
            format!("u{i}"),
            format!("d{i}"),
            format!("L{i}"),
            format!("pw-{i}"),
        )
    };
    let values = [
        mac.as_str(),
        "yealink-t46s",
        DOM,
        &user,
        &device,
        "1",
        &label,
        &pw,
        "udp",
        "sip.example.com",
    ];
    let mut row: Vec<(String, String)> = autoprov::admin::bulk::COLUMNS
        .iter()
        .zip(values)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match row.iter_mut().find(|(k, _)| *k == c.col) {
        Some(slot) => slot.1 = c.value.clone(),
        None => row.push((c.col.clone(), c.value.clone())),
    }
    row
}

/// The phone a bulk row names, as the store spells its MAC.
fn row_phone(row: &[(String, String)]) -> String {
    canonical(&row.iter().find(|(k, _)| k == "mac").expect("mac").1)
}

fn csv_cell(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// Rows as one CSV document (a column for every key any row has; every cell quoted), and
/// the line each row starts on (line breaks inside quotes count, as in the import's report).
fn to_csv(rows: &[Vec<(String, String)>]) -> (String, Vec<usize>) {
    let mut cols: Vec<&str> = vec![];
    for (k, _) in rows.iter().flatten() {
        if !cols.contains(&k.as_str()) {
            cols.push(k);
        }
    }
    let header: Vec<String> = cols.iter().map(|c| csv_cell(c)).collect();
    let mut text = header.join(",") + "\n";
    let mut lines = vec![];
    for r in rows {
        lines.push(1 + text.matches('\n').count());
        let cells: Vec<String> = cols
            .iter()
            .map(|c| {
                r.iter()
                    .find(|(k, _)| k == c)
                    .map_or(String::new(), |(_, v)| csv_cell(v))
            })
            .collect();
        text += &cells.join(",");
        text.push('\n');
    }
    (text, lines)
}

/// Rows as JSON rows: overrides in `"overrides"`, an integer `line` as a number.
fn to_json(rows: &[Vec<(String, String)>]) -> Value {
    let list = rows.iter().map(|r| {
        let mut o = serde_json::Map::new();
        let mut ov = serde_json::Map::new();
        for (k, v) in r {
            if let Some(key) = k.strip_prefix("override:") {
                ov.insert(key.into(), json!(v));
            } else if let (true, Ok(n)) = (k == "line", v.parse::<i64>()) {
                o.insert(k.clone(), json!(n));
            } else {
                o.insert(k.clone(), json!(v));
            }
        }
        if !ov.is_empty() {
            o.insert("overrides".into(), Value::Object(ov));
        }
        Value::Object(o)
    });
    Value::Array(list.collect())
}

/// A path segment, percent-encoded (every byte but the unreserved ones).
fn seg(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Api,
    Csv,
    Json,
}

/// One request and what its refusal must name: `field`, and for bulk rows the `line`.
struct Req {
    method: Method,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    field: String,
    line: usize,
    /// The phone whose file an accepted value reaches, if any.
    phone: Option<String>,
}

/// The admin API's request for case `i`: the same value on the record the column maps to.
fn api_request(c: &Hostile, i: usize) -> Req {
    let v = c.value.as_str();
    let member = |k: &str, val: Value| {
        let mut m = json!({"port": 1, "id": "1004a@example.com", "primaryOwner": true});
        m[k] = val;
        json!({ "members": [m] })
    };
    let port = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
    let (phone, mp) = (format!("/phones/{T46S}"), members_path(T46S));
    let (pw, t, core) = (
        "device-sip-registration-password",
        "device-provisioning-sip-transport-protocol",
        "device-provisioning-registration-core-server",
    );
    let new_acc = |user: &str| format!("/domains/{DOM}/users/{user}/devices/d{i}");
    let mac_body =
        json!({"device-provisioning-mac-address": v, "device-models-model": "yealink-t46s"});
    let (path, body, field) = match c.col.as_str() {
        "label" => (
            mp,
            member("lineLabel", json!(v)),
            "members[0].lineLabel".into(),
        ),
        "line" => (mp, member("port", port), "members[0].port".into()),
        "password" => (ACC.into(), json!({ pw: v }), pw.into()),
        "transport" => (ACC.into(), json!({ t: v }), t.into()),
        "server" => (ACC.into(), json!({ core: v }), core.into()),
        "model" => (
            phone,
            json!({"device-models-model": v}),
            "device-models-model".into(),
        ),
        "mac" => (
            new_acc(&format!("u{i}")),
            mac_body,
            "device-provisioning-mac-address".into(),
        ),
        "domain" => (format!("/domains/{}", seg(v)), json!({}), "domain".into()),
        "user" => (new_acc(&seg(v)), json!({}), "user".into()),
        "device" => (
            format!("/domains/{DOM}/users/1004/devices/{}", seg(v)),
            json!({}),
            "device".into(),
        ),
        col => {
            let key = col.strip_prefix("override:").expect("an override column");
            let ov = "device-provisioning-overrides";
            (phone, json!({ ov: { key: v } }), format!("{ov}.{key}"))
        }
    };
    let phone = match c.col.as_str() {
        "domain" | "user" | "device" => None,
        "mac" => Some(canonical(v)),
        _ => Some(T46S.to_string()),
    };
    let body = body.to_string().into_bytes();
    Req {
        method: PUT,
        path,
        content_type: "application/json",
        body,
        field,
        line: 0,
        phone,
    }
}

/// `POST /import` of case `i` as one CSV or JSON row.
fn import_request(via: Via, c: &Hostile, i: usize) -> Req {
    let rows = vec![case_row(c, i)];
    let (content_type, body, line) = if via == Via::Csv {
        let (text, lines) = to_csv(&rows);
        ("text/csv", text.into_bytes(), lines[0])
    } else {
        (
            "application/json",
            to_json(&rows).to_string().into_bytes(),
            1,
        )
    };
    let phone = Some(row_phone(&rows[0]));
    Req {
        method: POST,
        path: "/import".into(),
        content_type,
        body,
        field: c.col.clone(),
        line,
        phone,
    }
}

/// Checks a bulk refusal: `invalid_rows`, and exactly one bad row, naming `line` and `field`.
fn check_rows_error(body: &Value, line: usize, field: &str) -> Result<(), String> {
    if body["error"]["code"] != "invalid_rows" || body["error"]["field"] != "rows" {
        return Err(format!("not an invalid_rows error: {body}"));
    }
    match body["rows"].as_array().map(Vec::as_slice) {
        Some([r])
            if r["line"] == line
                && r["field"] == field
                && r["message"].as_str().is_some_and(|m| !m.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "rows {} instead of one at line {line} naming {field:?}",
            body["rows"]
        )),
    }
}

/// True when a line of `file`, as a phone splits it (at LF and CR), is one a hostile
/// value tried to add.
fn injected(file: &str) -> bool {
    file.split(['\n', '\r'])
        .any(|l| l.trim_start().starts_with("injected."))
}

/// The line an accepted value must stand on, whole, in its phone's file.
fn expected_line(c: &Hostile) -> Option<String> {
    match c.col.as_str() {
        "label" => Some(format!(".label = {}\n", c.value)),
        "password" => Some(format!(".password = {}\n", c.value)),
        col => col
            .strip_prefix("override:")
            .map(|k| format!("{k} = {}\n", c.value)),
    }
}

/// Checks the file of an accepted value's phone: served, the value on its line, nothing
/// injected.
fn check_accepted_file(c: &Hostile, status: u16, file: &str) -> Vec<String> {
    let mut problems = vec![];
    if status != 200 {
        problems.push(format!("its phone's file answers {status}"));
    }
    if let Some(line) = expected_line(c)
        && !file.contains(&line)
    {
        problems.push(format!("the file lacks {line:?}:\n{file}"));
    }
    if injected(file) {
        problems.push(format!("the file gained a line:\n{file}"));
    }
    problems
}

/// Sends case `i` through `via`: a refusal answers 400 naming the field (bulk: one bad
/// row, its line and column), changes no record and no byte of the T46S's file; an
/// acceptance answers 2xx and its phone's file holds the value on one line.
async fn check_case(s: &TestServer, via: Via, c: &Hostile, i: usize) -> Result<(), String> {
    let req = match via {
        Via::Api => api_request(c, i),
        Via::Csv | Via::Json => import_request(via, c, i),
    };
    let before = s.dump();
    let file_before = s.fetch_text(&format!("{T46S}.cfg")).await.2;
    let r = s
        .admin(req.method.clone(), &req.path)
        .header("content-type", req.content_type)
        .body(req.body.clone())
        .send()
        .await
        .expect("send");
    let status = r.status();
    let body: Value = serde_json::from_str(&r.text().await.expect("body")).unwrap_or(Value::Null);
    let mut problems = vec![];
    if c.refused {
        // The API refuses a value the document allows but the stored state does not (a
        // model not loaded, a port past the model's last) as a conflict (409); a bulk
        // import reports every refusal as a bad row (400).
        let state = match c.col.as_str() {
            "model" => !c.value.chars().any(char::is_control),
            "line" => c
                .value
                .parse::<u32>()
                .is_ok_and(|n| (1..=1024).contains(&n)),
            _ => false,
        };
        let (want, code) = match via {
            Via::Api if state => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::BAD_REQUEST, "invalid"),
        };
        let named = match via {
            Via::Api => check_error(&body, want.as_u16(), code, &req.field),
            _ => check_rows_error(&body, req.line, &req.field),
        };
        if status != want {
            problems.push(format!("status {status} instead of {want}: {body}"));
        } else if let Err(e) = named {
            problems.push(e);
        }
        if s.dump() != before {
            problems.push("the store changed".into());
        }
        let file = s.fetch_text(&format!("{T46S}.cfg")).await.2;
        if file != file_before || injected(&file) {
            problems.push(format!("the T46S's file changed:\n{file}"));
        }
    } else if !status.is_success() {
        problems.push(format!("status {status} instead of success: {body}"));
    } else if let Some(mac) = &req.phone {
        let (st, _, file) = s.fetch_text(&format!("{mac}.cfg")).await;
        problems.extend(check_accepted_file(c, st.as_u16(), &file));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A server holding the seed, imported through `POST /import`.
async fn seeded_server() -> TestServer {
    let s = TestServer::start().await;
    let r = s
        .admin(POST, "/import")
        .header("content-type", "text/csv")
        .body(SEED_CSV)
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let file = s.fetch_text(&format!("{T46S}.cfg")).await.2;
    assert!(file.contains("account.1.label = Desk\n"), "{file}");
    s
}

/// Runs the whole table through `via` on a seeded server; fails once, listing every case
/// that misbehaved.
async fn run_table(via: Via) {
    let s = seeded_server().await;
    let table = hostile_table();
    let mut failures = vec![];
    for (i, c) in table.iter().enumerate() {
        if let Err(e) = check_case(&s, via, c, i).await {
            failures.push(format!("{via:?} {}: {e}", c.what()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn hostile_values_through_the_admin_api() {
    run_table(Via::Api).await;
}

#[tokio::test]
async fn hostile_values_through_csv_import() {
    run_table(Via::Csv).await;
}

#[tokio::test]
async fn hostile_values_through_json_import() {
    run_table(Via::Json).await;
}

// ---------------------------------------------------------------- the same table, `autoprov import`

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Where `autoprov import` runs: on a data folder (server stopped), or with `--url`
/// against a running server.
enum Target<'a> {
    Folder(&'a std::path::Path),
    Server(&'a TestServer),
}

impl Target<'_> {
    /// `args`, then the flags that pick the target.
    fn cmd(&self, args: &[&str]) -> Vec<String> {
        let mut v = strings(args);
        match self {
            Target::Folder(data) => v.extend(strings(&["--data", path_str(data)])),
            Target::Server(s) => v.extend(strings(&["--url", &s.url, "--token", &s.token])),
        }
        v
    }

    /// Every record: the full export of the folder, the server's store dump.
    async fn records(&self) -> String {
        match self {
            Target::Folder(_) => {
                let o = common::autoprov_cli(self.cmd(&["export"])).await;
                assert!(o.ok, "{}", o.stderr);
                o.stdout
            }
            Target::Server(s) => s.dump().to_string(),
        }
    }

    /// The bytes the T46S gets for its file.
    async fn t46s_file(&self) -> String {
        let file = format!("{T46S}.cfg");
        match self {
            Target::Folder(_) => {
                let o = common::autoprov_cli(self.cmd(&["render", T46S, &file])).await;
                assert!(o.ok, "{}", o.stderr);
                o.stdout
            }
            Target::Server(s) => s.fetch_text(&file).await.2,
        }
    }
}

/// Every refused case of the table in one CSV file and one JSON file: `autoprov import`
/// fails, reports each row once with its line and column, and changes nothing.
async fn cli_refuses_every_hostile_row(t: &Target<'_>, dir: &std::path::Path) {
    let table: Vec<(usize, Hostile)> = hostile_table()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.refused)
        .collect();
    let rows: Vec<_> = table.iter().map(|(i, c)| case_row(c, *i)).collect();
    let (csv, csv_lines) = to_csv(&rows);
    let json = to_json(&rows).to_string();
    for (name, text, lines) in [
        ("refused.csv", csv, csv_lines),
        ("refused.json", json, (1..=rows.len()).collect()),
    ] {
        let (before, file_before) = (t.records().await, t.t46s_file().await);
        let path = dir.join(name);
        std::fs::write(&path, &text).expect("write");
        let p = path_str(&path);
        let o = common::autoprov_cli(t.cmd(&["import", p])).await;
        assert!(!o.ok, "{name} was imported:\n{}", o.stderr);
        let mut failures = vec![];
        for ((_, c), line) in table.iter().zip(&lines) {
            if !o.stderr.contains(&format!("{p}: line {line}: {}: ", c.col)) {
                failures.push(format!("line {line}, {}: not reported", c.what()));
            }
        }
        let reported = o.stderr.matches(&format!("{p}: line ")).count();
        assert!(
            failures.is_empty(),
            "{name}:\n{}\n{}",
            failures.join("\n"),
            o.stderr
        );
        assert_eq!(
            reported,
            rows.len(),
            "{name}: one report per row:\n{}",
            o.stderr
        );
        assert!(o.stderr.contains("nothing was imported"), "{}", o.stderr);
        assert!(t.records().await == before, "{name}: the records changed");
        let file = t.t46s_file().await;
        assert!(
            file == file_before && !injected(&file),
            "{name}: the T46S's file changed:\n{file}"
        );
    }
}

/// Every accepted case of the table, each a new phone, in one file of `format`; imported.
/// Returns the cases with their phones.
async fn cli_accepts_every_row(
    t: &Target<'_>,
    dir: &std::path::Path,
    format: Via,
) -> Vec<(Hostile, String)> {
    let table: Vec<(usize, Hostile)> = hostile_table()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| !c.refused)
        .collect();
    let rows: Vec<_> = table.iter().map(|(i, c)| case_row(c, *i)).collect();
    let (name, text) = match format {
        Via::Csv => ("accepted.csv", to_csv(&rows).0),
        _ => ("accepted.json", to_json(&rows).to_string()),
    };
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    let o = common::autoprov_cli(t.cmd(&["import", path_str(&path)])).await;
    assert!(o.ok, "{name}:\n{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("imported {} row(s)", rows.len())),
        "{}",
        o.stderr
    );
    let phones = rows.iter().map(|r| row_phone(r));
    table.into_iter().map(|(_, c)| c).zip(phones).collect()
}

/// Phone files over HTTP with the provisioning credentials.
struct Files {
    client: reqwest::Client,
    url: String,
    user: String,
    pass: String,
}

impl Files {
    fn new(url: &str, prov: &(String, String)) -> Self {
        Files {
            client: reqwest::Client::new(),
            url: url.into(),
            user: prov.0.clone(),
            pass: prov.1.clone(),
        }
    }

    async fn get(&self, mac: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}/{mac}.cfg", self.url))
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await
            .expect("fetch");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// Checks every accepted case's phone file; returns the files.
    async fn check(&self, cases: &[(Hostile, String)]) -> Vec<String> {
        let mut failures = vec![];
        let mut files = vec![];
        for (c, mac) in cases {
            let (status, file) = self.get(mac).await;
            let problems = check_accepted_file(c, status, &file);
            if !problems.is_empty() {
                failures.push(format!("{} ({mac}): {}", c.what(), problems.join("; ")));
            }
            files.push(file);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        files
    }
}

/// `autoprov import --data DATA FILE` with the shipped models and templates.
async fn import_into(data: &std::path::Path, file: &std::path::Path) -> common::Ran {
    common::autoprov_cli(strings(&[
        "import",
        "--data",
        path_str(data),
        path_str(file),
    ]))
    .await
}

/// A data folder holding the seed, imported with `autoprov import --data`.
async fn seeded_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let seed = dir.join("seed.csv");
    std::fs::write(&seed, SEED_CSV).expect("write");
    let o = import_into(&data, &seed).await;
    assert!(o.ok, "{}", o.stderr);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_through_cli_import_on_a_data_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = seeded_folder(dir.path()).await;
    let t = Target::Folder(&data);
    cli_refuses_every_hostile_row(&t, dir.path()).await;
    let cases = cli_accepts_every_row(&t, dir.path(), Via::Csv).await;
    let served = common::Served::start(&data, &data);
    Files::new(&served.url, &served.prov).check(&cases).await;
    served.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_through_cli_import_with_url() {
    let s = seeded_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::Server(&s);
    cli_refuses_every_hostile_row(&t, dir.path()).await;
    let cases = cli_accepts_every_row(&t, dir.path(), Via::Json).await;
    Files::new(&s.url, &s.prov).check(&cases).await;
}

/// The full export carries every accepted value back byte for byte: exported from a folder
/// that took the table's accepted rows, imported into an empty folder, exported again; the
/// phones get the same files, none with a gained line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_survive_the_full_export_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = seeded_folder(dir.path()).await;
    let cases = cli_accepts_every_row(&Target::Folder(&data), dir.path(), Via::Json).await;
    let dump = Target::Folder(&data).records().await;
    let path = dir.path().join("dump.json");
    std::fs::write(&path, &dump).expect("write");
    let data2 = dir.path().join("data2");
    let o = import_into(&data2, &path).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(
        Target::Folder(&data2).records().await == dump,
        "the round trip changed bytes"
    );
    let mut files = vec![];
    for d in [&data, &data2] {
        let served = common::Served::start(d, &data);
        files.push(Files::new(&served.url, &served.prov).check(&cases).await);
        served.stop();
    }
    assert!(
        files[0] == files[1],
        "the imported folder serves other files"
    );
}
/// The record field of the seed's export that a bulk column's value lands in, if it is a
/// string field (names are keys, a port is a number): (tree, key, JSON pointer, field).
fn dump_slot(col: &str) -> Option<(&'static str, &'static str, String, String)> {
    let acc = "1004a@example.com";
    let (t, core) = (
        "device-provisioning-sip-transport-protocol",
        "device-provisioning-registration-core-server",
    );
    Some(match col {
        "label" => (
            "phones",
            T46S,
            "/members/0/lineLabel".into(),
            "lineLabel".into(),
        ),
        "model" => ("phones", T46S, "/model".into(), "model".into()),
        "password" => ("accounts", acc, "/password".into(), "password".into()),
        "transport" => ("accounts", acc, format!("/settings/{t}"), t.into()),
        "server" => ("accounts", acc, format!("/settings/{core}"), core.into()),
        col => {
            let key = col.strip_prefix("override:")?;
            let ptr = format!("/overrides/{}", key.replace('~', "~0").replace('/', "~1"));
            ("phones", T46S, ptr, key.into())
        }
    })
}

/// The seed's export with `c`'s value in its record field.
fn hostile_dump(dump: &Value, c: &Hostile) -> Option<(Value, String)> {
    let (tree, key, ptr, field) = dump_slot(&c.col)?;
    let mut doc = dump.clone();
    let entries = doc["trees"][tree].as_array_mut().expect("tree");
    let e = entries
        .iter_mut()
        .find(|e| e["key"] == key || e["key-hex"] == key)
        .expect("the seed's record");
    let (parent, last) = ptr.rsplit_once('/').expect("pointer");
    let last = last.replace("~1", "/").replace("~0", "~");
    let slot = e["record"].pointer_mut(parent).expect("parent field");
    if slot.is_null() {
        *slot = json!({});
    }
    slot[last.as_str()] = json!(c.value);
    Some((doc, field))
}

/// The full export is an entry point too: a backup edited by hand (or by anyone who can
/// write the file) must not bring in what every other entry point refuses. Each refused
/// value of the table, placed in the record field its column maps to, makes
/// `autoprov import` fail naming that field, leaves the new folder without records, and
/// never reaches a phone's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_in_a_full_export_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = seeded_folder(dir.path()).await;
    let dump: Value = serde_json::from_str(&Target::Folder(&data).records().await).expect("json");
    let mut failures = vec![];
    let mut tried = 0;
    for (i, c) in hostile_table()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.refused)
    {
        let Some((doc, field)) = hostile_dump(&dump, c) else {
            continue;
        };
        tried += 1;
        let (path, into) = (
            dir.path().join(format!("dump{i}.json")),
            dir.path().join(format!("d{i}")),
        );
        std::fs::write(&path, doc.to_string()).expect("write");
        let o = import_into(&into, &path).await;
        let mut problems = vec![];
        if o.ok {
            problems.push("imported".to_string());
            let served = common::Served::start(&into, &data);
            let (_, _, file) = served.fetch(&format!("{T46S}.cfg")).await;
            served.stop();
            if injected(&file) {
                problems.push(format!("the T46S's file gained a line:\n{file}"));
            }
        } else if !o.stderr.contains(&field) {
            problems.push(format!("the error does not name {field:?}: {}", o.stderr));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.what(), problems.join("; ")));
        }
    }
    assert!(tried > 50, "only {tried} cases map to a record field");
    assert!(
        failures.is_empty(),
        "{} of {tried} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A restore on a host without the model folders still holds every rule that does not need
/// the catalogue: a line break in a label or a password is refused naming its field, and a
/// clean export imports, with a warning that model names were checked for their form only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_is_checked_without_a_catalogue_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = seeded_folder(dir.path()).await;
    let dump: Value = serde_json::from_str(&Target::Folder(&data).records().await).expect("json");
    let missing = dir.path().join("no-such-folder");
    let import = |doc: Value, i: usize| {
        let (path, into) = (
            dir.path().join(format!("bare{i}.json")),
            dir.path().join(format!("bare{i}")),
        );
        std::fs::write(&path, doc.to_string()).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
            .arg("import")
            .arg("--data")
            .arg(&into)
            .arg(&path)
            .arg("--models")
            .arg(&missing)
            .arg("--templates")
            .arg(&missing)
            .output()
            .expect("run autoprov");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = import(dump.clone(), 0);
    assert!(ok, "a clean export imports: {stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("form only"),
        "{stderr}"
    );
    let cases = [
        refuse("label", format!("x\r\n{INJECTED}")),
        refuse("password", "pw\u{0}"),
        refuse("model", "../yealink-t46s"),
    ];
    for (i, c) in cases.iter().enumerate() {
        let (doc, field) = hostile_dump(&dump, c).expect("a record field");
        let (ok, stderr) = import(doc, i + 1);
        assert!(!ok && stderr.contains(&field), "{}: {stderr}", c.what());
    }
}

/// An integer field takes any JSON number with no fractional part (`2.0` is the integer 2,
/// as JSON Schema and the API document count them); `1.5` stays refused (tested above).
#[tokio::test]
async fn integral_numbers_are_integers() {
    let s = fixture().await;
    let expiry = "device-sip-registration-expiry-seconds";
    let (st, b) = s.put(ACC, json!({ expiry: 300.0 })).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b[expiry], 300, "{b}");
    let (st, b) = s
        .put(
            &format!("/phones/{T46S}/members"),
            json!({"members": [{"port": 1.0, "id": "1004a@example.com", "primaryOwner": true}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["members"][0]["port"], 1, "{b}");
    let (st, b) = s
        .put(
            &format!("/domains/{DOM}"),
            json!({"defaults": {"custom.level": 7.0}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["defaults"]["custom.level"], "7", "{b}");
}

/// Moving an account to another phone takes it off the first phone and only it: the other
/// members of the first phone stay where they were.
#[tokio::test]
async fn moving_an_account_leaves_the_other_members_in_place() {
    let s = fixture().await;
    let ids = |b: &Value| -> Vec<(String, u64)> {
        b["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["port"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mac = "device-provisioning-mac-address";
    let (st, b) = s.put(FREE_ACC, json!({ mac: T46S })).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, b) = s.get(&members_path(T46S)).await;
    assert_eq!(
        ids(&b),
        [
            ("1004a@example.com".to_string(), 1),
            ("1005a@example.com".to_string(), 2)
        ]
    );
    let (st, b) = s.put(FREE_ACC, json!({ mac: T31G })).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, b) = s.get(&members_path(T46S)).await;
    assert_eq!(ids(&b), [("1004a@example.com".to_string(), 1)]);
    let (_, b) = s.get(&members_path(T31G)).await;
    assert_eq!(
        ids(&b),
        [
            ("2001a@example.com".to_string(), 1),
            ("1005a@example.com".to_string(), 2)
        ]
    );
    // The phone had a primary owner: the newcomer is not a second one.
    assert_eq!(b["members"][0]["primaryOwner"], true, "{b}");
    assert_eq!(b["members"][1]["primaryOwner"], false, "{b}");
}

/// Provisioning credentials set or changed on a linked account reach its phone, whichever
/// half changed: the phone answers to the new pair and no longer to the server default.
#[tokio::test]
async fn account_credentials_reach_the_linked_phone() {
    let s = fixture().await;
    let file = format!("{T46S}.cfg");
    let ua = Some("Yealink SIP-T46S 66.86.0.15");
    let (st, b) = s
        .put(
            ACC,
            json!({"device-provisioning-username": "desk", "device-provisioning-password": "first-pass"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, phone) = s.get(&format!("/phones/{T46S}")).await;
    assert_eq!(phone["device-provisioning-username"], "desk", "{phone}");
    let r = s.fetch_as(&file, Some(("desk", "first-pass")), ua).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Only the password changes.
    let (st, b) = s
        .put(ACC, json!({"device-provisioning-password": "second-pass"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r = s.fetch_as(&file, Some(("desk", "second-pass")), ua).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Only the username changes.
    let (st, b) = s
        .put(ACC, json!({"device-provisioning-username": "desk-2"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, phone) = s.get(&format!("/phones/{T46S}")).await;
    assert_eq!(phone["device-provisioning-username"], "desk-2", "{phone}");
}

/// A model change keeps the members that fit the new model: a port equal to its last port
/// fits; T.38 moves from one ATA to another and not to a desk phone. `lineType` may be
/// given as either documented word.
#[tokio::test]
async fn a_model_change_keeps_members_that_fit() {
    let s = fixture().await;
    let model = "device-models-model";
    let (st, b) = s
        .put(
            &members_path(T46S),
            json!({"members": [
                {"port": 1, "id": "1004a@example.com", "primaryOwner": true, "lineType": "PRIMARY"},
                {"port": 2, "id": "1005a@example.com", "lineType": "SHARED_CALL_APPEARANCE"},
            ]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["members"][0]["lineType"], "PRIMARY", "{b}");
    // Two ports, members on ports 1 and 2: fits exactly.
    let (st, b) = s
        .put(&format!("/phones/{T46S}"), json!({ model: "yealink-t31g" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // An ATA with a T.38 member moves to another ATA, not to a desk phone.
    let ata = ata_with_t38(&s).await;
    let (st, b) = s
        .put(&format!("/phones/{ata}"), json!({ model: "cisco-spa112" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s
        .put(&format!("/phones/{ata}"), json!({ model: "yealink-t46s" }))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["field"], model, "{b}");
}

/// The server-wide token may take a phone out of its domain (`"domain": null`); a domain
/// token may not (tests/tokens.rs).
#[tokio::test]
async fn the_server_token_takes_a_phone_out_of_its_domain() {
    let s = fixture().await;
    let (st, b) = s.put(&members_path(T31G), json!({"members": []})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s
        .put(&format!("/phones/{T31G}"), json!({"domain": null}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["domain"], Value::Null, "{b}");
}

/// An account's overrides reach its phone when the account names them (or links the
/// phone); an edit of another account field leaves overrides set on the phone itself alone.
#[tokio::test]
async fn account_overrides_reach_the_phone_only_when_named() {
    let s = fixture().await;
    let ov = "device-provisioning-overrides";
    let phone = format!("/phones/{T46S}");
    let (st, b) = s.put(ACC, json!({ ov: {"custom.a": "1"} })).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(s.get(&phone).await.1[ov], json!({"custom.a": "1"}));
    let (st, b) = s.put(&phone, json!({ ov: {"custom.a": "2"} })).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s.put(ACC, json!({"device-srtp-enabled": "yes"})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(s.get(&phone).await.1[ov], json!({"custom.a": "2"}));
}

/// An import that changes a phone's model checks the whole phone once every row is in: a
/// member past the new model's ports, T.38 on a desk phone, or a member of another domain
/// is a bad row naming the column, and nothing is imported.
#[tokio::test]
async fn an_import_checks_the_whole_phone_against_its_new_model() {
    let s = fixture().await;
    let (st, b) = s
        .put(
            FREE_ACC,
            json!({"device-provisioning-mac-address": T46S, "device-provisioning-line": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let before = s.dump();
    let r = s
        .admin(POST, "/import")
        .header("content-type", "application/json")
        .body(json!([{"mac": T46S, "model": "yealink-t31g"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_rows", "{b}");
    assert_eq!(b["rows"][0]["field"], "model", "{b}");
    assert_eq!(b["rows"][0]["line"], 1, "{b}");
    assert!(
        b["rows"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1005a@example.com"),
        "{b}"
    );
    assert_eq!(s.dump(), before);
}

/// The other whole-phone rules of an import: T.38 on a model that is not an ATA, an override
/// the new model's format cannot hold; and the summary counts what an import created.
#[tokio::test]
async fn an_import_checks_t38_and_overrides_and_counts_what_it_created() {
    let s = fixture().await;
    let ata = ata_with_t38(&s).await;
    let (st, b) = s
        .put(
            &format!("/phones/{T46S}"),
            json!({"device-provisioning-overrides": {"a/b": "1"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let before = s.dump();
    for (rows, field, needle) in [
        (
            json!([{"mac": ata, "model": "yealink-t31g"}]),
            "model",
            "T.38",
        ),
        (
            json!([{"mac": T46S, "model": "polycom-vvx450"}]),
            "model",
            "a/b",
        ),
    ] {
        let (st, b) = import_rows(&s, rows.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{rows}: {b}");
        assert_eq!(b["rows"].as_array().unwrap().len(), 1, "{rows}: {b}");
        assert_eq!(b["rows"][0]["field"], field, "{rows}: {b}");
        let message = b["rows"][0]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{rows}: {b}");
        assert_eq!(s.dump(), before, "{rows}");
    }
    let (st, b) = import_rows(&s, json!([
        {"mac": NEW_MAC, "model": "yealink-t46s", "domain": "new.example", "user": "1", "device": "1a"},
        {"mac": "001565e0e0e1", "model": "yealink-t46s", "domain": "newer.example", "user": "2", "device": "2a"},
        {"mac": "001565e0e0e2", "model": "yealink-t46s"},
    ]))
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // A row without a domain creates none (no domain named "").
    assert_eq!(
        b["created"],
        json!({"phones": 3, "accounts": 2, "domains": 2}),
        "{b}"
    );
}

/// Rows of one import agree on a phone's domain: two rows may stage one phone in one
/// domain (and a stored phone in its own), not in two.
#[tokio::test]
async fn rows_agree_on_a_phones_domain() {
    let s = fixture().await;
    let before = s.dump();
    let (st, b) = import_rows(
        &s,
        json!([
            {"mac": NEW_MAC, "model": "yealink-t46s", "domain": DOM},
            {"mac": NEW_MAC, "model": "yealink-t46s", "domain": "other.org"},
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["rows"][0]["line"], 2, "{b}");
    assert_eq!(b["rows"][0]["field"], "domain", "{b}");
    let message = b["rows"][0]["message"].as_str().unwrap();
    assert!(message.contains("on line 1"), "{b}");
    assert_eq!(s.dump(), before);
    // A stored phone stays in its domain.
    let (st, b) = import_rows(
        &s,
        json!([{"mac": T31G, "model": "yealink-t31g", "domain": "other.org"}]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["rows"][0]["field"], "domain", "{b}");
    let message = b["rows"][0]["message"].as_str().unwrap();
    assert!(message.contains("belongs to domain example.com"), "{b}");
    assert_eq!(s.dump(), before);
    let (st, b) = import_rows(&s, json!([
        {"mac": NEW_MAC, "model": "yealink-t46s", "domain": DOM, "user": "1007", "device": "1007a"},
        {"mac": NEW_MAC, "model": "yealink-t46s", "domain": DOM, "user": "1008", "device": "1008a"},
        {"mac": T46S, "model": "yealink-t46s", "domain": DOM},
    ]))
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["created"]["accounts"], 2, "{b}");
    // The first member of a new phone is its primary owner, the second is not.
    let (_, m) = s.get(&members_path(NEW_MAC)).await;
    assert_eq!(m["members"][0]["primaryOwner"], true, "{m}");
    assert_eq!(m["members"][1]["primaryOwner"], false, "{m}");
}

/// Rows of one import agree on what they give twice: an override of one phone, a password
/// of one account, the user a device belongs to (in the store or on an earlier row); the
/// same value twice is no conflict.
#[tokio::test]
async fn rows_agree_on_what_they_give_twice() {
    let s = fixture().await;
    let row = |user: &str, device: &str, extra: Value| {
        let mut r = json!({"mac": NEW_MAC, "model": "yealink-t46s", "domain": DOM,
                           "user": user, "device": device});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let before = s.dump();
    for (rows, field, needle) in [
        (
            json!([
                row("1", "1a", json!({"override:custom.x": "1"})),
                row("2", "2a", json!({"override:custom.x": "2"}))
            ]),
            "override:custom.x",
            "on line 1",
        ),
        (
            json!([
                row("1", "1a", json!({"password": "pw-one"})),
                row("1", "1a", json!({"password": "pw-two"}))
            ]),
            "password",
            "on line 1",
        ),
        (
            json!([row("1", "1a", json!({})), row("2", "1a", json!({}))]),
            "user",
            "(on line 1)",
        ),
        (
            json!([row("9999", "1004a", json!({}))]),
            "user",
            "(in the store)",
        ),
        (
            json!([
                row("1", "1a", json!({"line": "3"})),
                row("2", "2a", json!({"line": "3"}))
            ]),
            "line",
            "is given to 1a@example.com on line 1",
        ),
    ] {
        let (st, b) = import_rows(&s, rows.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{rows}: {b}");
        assert_eq!(b["rows"].as_array().unwrap().len(), 1, "{rows}: {b}");
        assert_eq!(b["rows"][0]["field"], field, "{rows}: {b}");
        assert!(
            b["rows"][0]["message"].as_str().unwrap().contains(needle),
            "{rows}: {b}"
        );
        assert_eq!(s.dump(), before, "{rows}");
    }
    let (st, b) = import_rows(
        &s,
        json!([
            row(
                "1",
                "1a",
                json!({"override:custom.x": "1", "password": "pw-one"})
            ),
            row(
                "1",
                "1a",
                json!({"override:custom.x": "1", "password": "pw-one",
                   "transport": "tcp", "server": "sip.example.net"})
            ),
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // A member imported again keeps its port and takes the row's label.
    let (st, b) = import_rows(
        &s,
        json!([{"mac": T46S, "model": "yealink-t46s", "domain": DOM,
                                  "user": "1004", "device": "1004a", "label": "Front desk"}]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, m) = s.get(&members_path(T46S)).await;
    assert_eq!(m["members"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["members"][0]["port"], 1, "{m}");
    assert_eq!(m["members"][0]["lineLabel"], "Front desk", "{m}");
    // Each column lands in its own field.
    let (_, acc) = s.get(&format!("/domains/{DOM}/users/1/devices/1a")).await;
    assert_eq!(
        acc["device-provisioning-sip-transport-protocol"], "tcp",
        "{acc}"
    );
    assert_eq!(
        acc["device-provisioning-registration-core-server"], "sip.example.net",
        "{acc}"
    );
}

/// `POST /import` of JSON `rows`: the status and the body.
async fn import_rows(s: &TestServer, rows: Value) -> (StatusCode, Value) {
    let r = s
        .admin(POST, "/import")
        .header("content-type", "application/json")
        .body(rows.to_string())
        .send()
        .await
        .unwrap();
    (r.status(), r.json::<Value>().await.unwrap())
}

/// A Grandstream HT802 in the fixture's domain whose one member (1006a) uses T.38; its MAC.
async fn ata_with_t38(s: &TestServer) -> &'static str {
    let ata = "001565a7a7a7";
    let (st, b) = s
        .put(
            &format!("/phones/{ata}"),
            json!({"device-models-model": "grandstream-ht802", "domain": DOM}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, b) = s
        .put(
            &members_path(ata),
            json!({"members": [{"port": 1, "id": "1006a@example.com", "primaryOwner": true,
                                "t38FaxCompressionEnabled": true}]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    ata
}
