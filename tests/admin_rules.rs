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
        row("account read-only id", PUT, ACC, json!({"id": "1005a@example.com"}), 400, "id"),
        row("account read-only domain", PUT, ACC, json!({"domain": "other.org"}), 400, "domain"),
        row("phone update", PUT, &phone, json!({"foo": 1}), 400, "foo"),
        row("phone create", PUT, &new_phone, json!({"device-models-model": "yealink-t46s", "colour": "red"}), 400, "colour"),
        row("phone read-only mac", PUT, &phone, json!({"mac": NEW_MAC}), 400, "mac"),
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
    // A 400 for a PUT of `list` on `path`, naming `field`.
    let bad = |what: &str, path: &str, list: Vec<Value>, field: &str| {
        row(what, PUT, path, json!({ "members": list }), 400, field)
    };
    #[rustfmt::skip]
    let rows = vec![
        bad("port 3 on a 2-port T31G", &p31, vec![own(3, t31)], "members[0].port"),
        bad("port 17 on a 16-port T46S", &p46, vec![own(1, a), mem(17, b)], "members[1].port"),
        bad("port 1025", &p46, vec![own(1025, a)], "members[0].port"),
        bad("two members on one port", &p46, vec![own(1, a), mem(1, b)], "members[1].port"),
        bad("lineWeight 2 on port 1 overlaps port 2", &p46,
            vec![with(1, a, json!({"lineWeight": 2})), mem(2, b)], "members[0].lineWeight"),
        bad("the same overlap listed the other way round names the wide member", &p46,
            vec![mem(2, b), with(1, a, json!({"lineWeight": 2}))], "members[1].lineWeight"),
        bad("lineWeight 3 on port 4 overlaps port 6", &p46,
            vec![own(1, a), with(4, b, json!({"lineWeight": 3})), mem(6, c)], "members[1].lineWeight"),
        bad("lineWeight past the T31G's last port", &p31,
            vec![with(2, t31, json!({"lineWeight": 2}))], "members[0].lineWeight"),
        bad("lineWeight past the T46S's last port", &p46,
            vec![with(10, a, json!({"lineWeight": 8}))], "members[0].lineWeight"),
        bad("lineWeight 65", &p46, vec![with(1, a, json!({"lineWeight": 65}))], "members[0].lineWeight"),
        bad("two primary owners", &p46, vec![own(1, a), own(2, b)], "members[1].primaryOwner"),
        bad("hotline without destination", &p46,
            vec![with(1, a, json!({"hotlineEnabled": true}))], "members[0].hotlineDestination"),
        bad("hotline with a blank destination", &p46,
            vec![with(1, a, json!({"hotlineEnabled": true, "hotlineDestination": "  "}))],
            "members[0].hotlineDestination"),
        bad("T.38 on a T46S", &p46,
            vec![with(1, a, json!({"t38FaxCompressionEnabled": true}))], "members[0].t38FaxCompressionEnabled"),
        bad("T.38 on a T31G", &p31,
            vec![with(1, t31, json!({"t38FaxCompressionEnabled": true}))], "members[0].t38FaxCompressionEnabled"),
        bad("unknown account", &p46, vec![own(1, a), mem(2, "nobody@example.com")], "members[1].id"),
        bad("account id without its domain", &p46, vec![own(1, "1005a")], "members[0].id"),
        bad("another domain's account", &p46, vec![own(1, "9001a@other.org")], "members[0].id"),
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
        row("unknown model on a new MAC", PUT, FREE_ACC, json!({mac: NEW_MAC, model: "yealink-t99"}), 400, model),
        row("unknown model on a new account", PUT, format!("{coll}/1008a"),
            json!({mac: NEW_MAC, model: "nokia-3310"}), 400, model),
        row("model without a MAC", PUT, FREE_ACC, json!({model: "yealink-t46s"}), 400, model),
        row("model without a MAC on create", PUT, format!("{coll}/1008a"), json!({model: "yealink-t46s"}), 400, model),
        row("new MAC without a model", PUT, FREE_ACC, json!({mac: NEW_MAC}), 400, model),
        row("MAC of another domain", PUT, FREE_ACC, json!({mac: OTHER}), 409, mac),
        row("MAC of another domain, with its model", PUT, FREE_ACC, json!({mac: OTHER, model: "yealink-t46s"}), 409, mac),
        row("MAC linked under another model", PUT, FREE_ACC, json!({mac: T46S, model: "yealink-t31g"}), 409, model),
        row("line 17 of a T46S", PUT, FREE_ACC, json!({mac: T46S, line: 17}), 400, line),
        row("line 3 of a T31G", PUT, FREE_ACC, json!({mac: T31G, line: 3}), 400, line),
        row("line 3 of a new T31G", PUT, FREE_ACC, json!({mac: NEW_MAC, model: "yealink-t31g", line: 3}), 400, line),
        row("line 0", PUT, FREE_ACC, json!({mac: T46S, line: 0}), 400, line),
        row("line 65", PUT, FREE_ACC, json!({mac: T46S, line: 65}), 400, line),
        row("moving to a line past the end", PUT, ACC, json!({line: 17}), 400, line),
        row("line taken by another account", PUT, FREE_ACC, json!({mac: T46S, line: 1}), 409, line),
        row("moving onto a taken line", PUT, t2001, json!({mac: T46S, line: 1}), 409, line),
        row("line without a MAC", PUT, FREE_ACC, json!({line: 2}), 400, line),
        // `~` needs a domain- or user-bound token; the server-wide one has neither.
        row("~ domain on PUT", PUT, "/domains/~/users/1004/devices/1004a", json!({}), 400, "domain"),
        row("~ domain on POST", POST, "/domains/~/users/1004/devices", json!({"device": "1004z"}), 400, "domain"),
        row("~ domain on GET", GET, "/domains/~/users/1004/devices/1004a", none.clone(), 400, "domain"),
        row("~ domain on DELETE", DELETE, "/domains/~/users/1004/devices/1004a", none.clone(), 400, "domain"),
        row("~ domain on list", GET, "/domains/~/users/1004/devices", none.clone(), 400, "domain"),
        row("~ domain itself", GET, "/domains/~", none.clone(), 400, "domain"),
        row("~ domain PUT itself", PUT, "/domains/~", json!({}), 400, "domain"),
        row("~ user", PUT, format!("/domains/{DOM}/users/~/devices/1004a"), json!({}), 400, "user"),
        // Credentials.
        row("provisioning username without password", PUT, ACC,
            json!({"device-provisioning-username": "u"}), 400, "device-provisioning-password"),
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
        row("create without a model", PUT, &new, json!({}), 400, model),
        row("create with only a domain", PUT, &new, json!({"domain": DOM}), 400, model),
        row("create with a null model", PUT, &new, json!({model: null}), 400, model),
        row("null model on update", PUT, &known, json!({model: null}), 400, model),
        row("unknown model on create", PUT, &new, json!({model: "yealink-t99"}), 400, model),
        row("unknown model on update", PUT, &known, json!({model: "cisco-7960"}), 400, model),
        row("empty model", PUT, &new, json!({model: ""}), 400, model),
        row("unknown domain on create", PUT, &new, json!({model: "yealink-t46s", "domain": "nowhere.org"}), 400, "domain"),
        row("unknown domain on update", PUT, &t31, json!({"domain": "nowhere.org"}), 400, "domain"),
        row("bad domain name", PUT, &new, json!({model: "yealink-t46s", "domain": "no where"}), 400, "domain"),
        row("moving a phone away from its members' domain", PUT, &known, json!({"domain": "other.org"}), 409, "domain"),
        row("a model its members do not fit", PUT, &known, json!({model: "yealink-t31g"}), 409, model),
        row("provisioning username without password", PUT, &known, json!({"device-provisioning-username": "u"}), 400, pp),
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
            json!({"device-provisioning-username": "u"}), 400, pp),
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
