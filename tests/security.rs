//! Phone credential lifecycle and brute-force limits against the real server: bootstrap
//! exchange (domain and server), rotation grace, CIDR allow-lists (server and domain), and
//! the failed-authentication throttle per source IP and per MAC (clients bound to distinct
//! loopback addresses, 127.0.0.x).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

const MAC: &str = "001565aabbcc";

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn fetch(
    s: &TestServer,
    client: &reqwest::Client,
    file: &str,
    creds: Option<(&str, &str)>,
) -> (StatusCode, String, Option<String>) {
    let mut rb = client.get(format!("{}/{file}", s.url));
    if let Some((u, p)) = creds {
        rb = rb.basic_auth(u, Some(p));
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.text().await.unwrap(), retry)
}

/// The value of `key = value` in a Yealink file.
fn cfg_value(body: &str, key: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(str::to_string)
}

async fn linked(s: &TestServer, domain: &str, mac: &str, device: &str) {
    s.seed_domain(domain).await;
    s.seed_account(domain, "1004", device, mac, "yealink-t46s")
        .await;
}

#[tokio::test]
async fn domain_bootstrap_is_exchanged_for_a_per_device_credential() {
    // The grace is counted on a whole-second clock: 5 s leaves at least 4 s for the checks
    // made during it, even on a loaded machine.
    let s = TestServer::start_with(|c| {
        c.security.bootstrap_grace = Duration::from_secs(5);
    })
    .await;
    linked(&s, "example.com", MAC, "1004a").await;
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-bootstrap-username": "boot",
                   "device-provisioning-bootstrap-password": "Strap-123"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["device-provisioning-bootstrap-username"], "boot");
    assert!(!b.to_string().contains("Strap-123"), "write-only: {b}");

    let c = reqwest::Client::new();
    let file = format!("{MAC}.cfg");
    // The bootstrap credential opens the phone once and the file carries its own.
    let (st, body, _) = fetch(&s, &c, &file, Some(("boot", "Strap-123"))).await;
    assert_eq!(st, StatusCode::OK);
    let user = cfg_value(&body, "static.auto_provision.server.username").unwrap();
    let pass = cfg_value(&body, "static.auto_provision.server.password").unwrap();
    assert_eq!(user, format!("ap{MAC}"));
    assert_eq!(pass.len(), 24);
    assert!(!body.contains("Strap-123"));
    // Stored on the phone, and only the username is shown.
    let (_, p) = s.get(&format!("/phones/{MAC}")).await;
    assert_eq!(p["device-provisioning-username"], user);
    assert!(!p.to_string().contains(&pass));
    assert!(
        p["device-provisioning-previous-valid-until"].is_string(),
        "{p}"
    );

    // The rest of the boot sequence still works with the bootstrap credential, and the
    // generated credential works; the server default no longer opens this phone.
    let (st, body2, _) = fetch(&s, &c, &file, Some(("boot", "Strap-123"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        cfg_value(&body2, "static.auto_provision.server.password").as_deref(),
        Some(pass.as_str()),
        "exchanged once, not on every request"
    );
    assert_eq!(
        fetch(&s, &c, &file, Some((&user, &pass))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        fetch(&s, &c, &file, Some((&s.prov.0, &s.prov.1))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // After the grace, only the per-device credential works for this MAC.
    tokio::time::sleep(Duration::from_millis(6100)).await;
    assert_eq!(
        fetch(&s, &c, &file, Some(("boot", "Strap-123"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fetch(&s, &c, &file, Some((&user, &pass))).await.0,
        StatusCode::OK
    );

    // A second phone of the domain still bootstraps with it, and gets its own credential.
    s.seed_account(
        "example.com",
        "1005",
        "1005a",
        "001565aabbcd",
        "yealink-t46s",
    )
    .await;
    let (st, body, _) = fetch(&s, &c, "001565aabbcd.cfg", Some(("boot", "Strap-123"))).await;
    assert_eq!(st, StatusCode::OK);
    let pass2 = cfg_value(&body, "static.auto_provision.server.password").unwrap();
    assert_ne!(pass2, pass);

    // Bootstrap credentials are set together and not empty.
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-bootstrap-username": null}),
        )
        .await;
    // The stored password would be left without its username: a conflict with the record.
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        b["error"]["field"],
        "device-provisioning-bootstrap-password"
    );
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-bootstrap-password": ""}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["error"]["field"],
        "device-provisioning-bootstrap-password"
    );
}

#[tokio::test]
async fn server_bootstrap_from_config() {
    let s = TestServer::start_with(|c| {
        c.security.bootstrap = Some(("factory".into(), "Boot-Me-1".into()));
    })
    .await;
    linked(&s, "example.com", MAC, "1004a").await;
    let c = reqwest::Client::new();
    // Common files open with it (no secrets in them, nothing is exchanged).
    let (st, _, _) = fetch(&s, &c, "y000000000066.cfg", Some(("factory", "Boot-Me-1"))).await;
    assert_eq!(st, StatusCode::OK);
    let (_, p) = s.get(&format!("/phones/{MAC}")).await;
    assert!(p["device-provisioning-username"].is_null(), "{p}");
    // An unknown MAC with it is an unprovisioned phone (404), like the server default.
    assert_eq!(
        fetch(&s, &c, "001565000001.cfg", Some(("factory", "Boot-Me-1")))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // The per-phone file exchanges it.
    let (st, body, _) = fetch(
        &s,
        &c,
        &format!("{MAC}.cfg"),
        Some(("factory", "Boot-Me-1")),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        cfg_value(&body, "static.auto_provision.server.username").as_deref(),
        Some(format!("ap{MAC}").as_str())
    );
    let (_, p) = s.get(&format!("/phones/{MAC}")).await;
    assert_eq!(p["device-provisioning-username"], format!("ap{MAC}"));
}

/// The credential grace in the rotation test, and a wait that certainly outlasts it.
const GRACE: u64 = 5;
const PAST_GRACE: Duration = Duration::from_millis(GRACE * 1000 + 100);

#[tokio::test]
async fn rotated_credentials_work_for_the_grace_window_then_stop() {
    // The store keeps whole seconds (`until` = the second of the change + grace), so a
    // grace of G leaves at least G - 1 s for the in-window checks and is over for certain
    // G + 0.1 s after the change. G = 5 keeps 4 s for a loaded machine.
    let s = TestServer::start_with(|c| {
        c.security.credential_grace = Duration::from_secs(GRACE);
    })
    .await;
    s.state.store.set_credential_grace(GRACE);
    linked(&s, "example.com", MAC, "1004a").await;
    let set = |u: &'static str, p: &'static str| json!({"device-provisioning-username": u, "device-provisioning-password": p});
    let (st, b) = s
        .put(&format!("/phones/{MAC}"), set("desk", "Old-Pass-1"))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(b["device-provisioning-previous-valid-until"].is_null());
    let (st, b) = s
        .put(&format!("/phones/{MAC}"), set("desk", "New-Pass-2"))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(
        b["device-provisioning-previous-valid-until"].is_string(),
        "{b}"
    );
    let c = reqwest::Client::new();
    let file = format!("{MAC}.cfg");
    let (st, body, _) = fetch(&s, &c, &file, Some(("desk", "Old-Pass-1"))).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "the old password still works in the grace window"
    );
    assert_eq!(
        cfg_value(&body, "static.auto_provision.server.password").as_deref(),
        Some("New-Pass-2"),
        "and the phone is handed the new one"
    );
    assert_eq!(
        fetch(&s, &c, &file, Some(("desk", "New-Pass-2"))).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(PAST_GRACE).await;
    assert_eq!(
        fetch(&s, &c, &file, Some(("desk", "Old-Pass-1"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fetch(&s, &c, &file, Some(("desk", "New-Pass-2"))).await.0,
        StatusCode::OK
    );

    // Domain-wide credentials rotate the same way.
    s.put(
        "/domains/example.com",
        json!({"device-provisioning-username": "dom", "device-provisioning-password": "Dom-1"}),
    )
    .await;
    s.put(
        &format!("/phones/{MAC}"),
        json!({"device-provisioning-username": null, "device-provisioning-password": null}),
    )
    .await;
    tokio::time::sleep(PAST_GRACE).await;
    let (_, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-password": "Dom-2"}),
        )
        .await;
    assert!(
        b["device-provisioning-previous-valid-until"].is_string(),
        "the PUT that rotates shows the grace: {b}"
    );
    assert_eq!(
        fetch(&s, &c, &file, Some(("dom", "Dom-1"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        fetch(&s, &c, &file, Some(("dom", "Dom-2"))).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(PAST_GRACE).await;
    assert_eq!(
        fetch(&s, &c, &file, Some(("dom", "Dom-1"))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn server_allow_list_refuses_other_addresses() {
    let s = TestServer::start_with(|c| {
        c.security.allowed_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    linked(&s, "example.com", MAC, "1004a").await;
    let r = s.fetch(&format!("{MAC}.cfg")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Admins are not phones: the API is not behind the phone allow-list.
    assert_eq!(s.get("/models").await.0, StatusCode::OK);

    let s = TestServer::start_with(|c| {
        c.security.allowed_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    linked(&s, "example.com", MAC, "1004a").await;
    assert_eq!(
        s.fetch(&format!("{MAC}.cfg")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn domain_allow_list_applies_after_authentication() {
    let s = TestServer::start().await;
    linked(&s, "example.com", MAC, "1004a").await;
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-allowed-cidrs": ["10.0.0.0/8", "2001:db8::/32"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        b["device-provisioning-allowed-cidrs"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    let file = format!("{MAC}.cfg");
    assert_eq!(s.fetch(&file).await.status(), StatusCode::FORBIDDEN);
    // Without the right credentials the answer is the ordinary challenge: nothing leaks.
    let r = s.fetch_as(&file, Some(("x", "y")), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Loopback allowed → served.
    let (st, _) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-allowed-cidrs": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.fetch(&file).await.status(), StatusCode::OK);
    // Bad blocks are refused naming the entry, and change nothing.
    let before = s.dump();
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-allowed-cidrs": ["10.0.0.0/8", "10.0.0.0/33"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["field"], "device-provisioning-allowed-cidrs[1]");
    let (st, b) = s
        .put(
            "/domains/example.com",
            json!({"device-provisioning-allowed-cidrs": "10.0.0.0/8"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["field"], "device-provisioning-allowed-cidrs");
    assert_eq!(s.dump(), before);
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_ip_and_per_mac() {
    let s = TestServer::start_with(|c| {
        c.security.failures_per_ip = 5;
        c.security.failures_per_mac = 3;
        c.security.failure_window = Duration::from_secs(60);
    })
    .await;
    linked(&s, "example.com", MAC, "1004a").await;
    s.seed_account(
        "example.com",
        "1005",
        "1005a",
        "001565aabbcd",
        "yealink-t46s",
    )
    .await;
    let attacker = client_from("127.0.0.2");
    let good = client_from("127.0.0.3");
    let prov = (s.prov.0.as_str(), s.prov.1.as_str());
    let known = format!("{MAC}.cfg");
    let unknown = "001565000077.cfg";

    // Requests without credentials are the phones' normal first step: never counted.
    for _ in 0..10 {
        assert_eq!(
            fetch(&s, &attacker, &known, None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Three wrong passwords for the known MAC, then 429 for that MAC from anywhere.
    let mut known_seq = Vec::new();
    let mut unknown_seq = Vec::new();
    for _ in 0..4 {
        known_seq.push(fetch(&s, &attacker, &known, Some(("x", "wrong"))).await.0);
    }
    // The same sequence for an unknown MAC: a probe learns nothing about existence.
    let other = client_from("127.0.0.4");
    for _ in 0..4 {
        unknown_seq.push(fetch(&s, &other, unknown, Some(("x", "wrong"))).await.0);
    }
    let expected = vec![
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
    ];
    assert_eq!(known_seq, expected);
    assert_eq!(unknown_seq, expected);
    let (st, _, retry) = fetch(&s, &good, &known, Some(prov)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "the MAC is locked");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // A good phone elsewhere (another MAC, another address) is unaffected.
    assert_eq!(
        fetch(&s, &good, "001565aabbcd.cfg", Some(prov)).await.0,
        StatusCode::OK
    );
    // The attacker's address has 3 counted failures (the refused 4th is not a guess);
    // two more on other MACs reach its limit of 5, then it gets 429 for every MAC, even
    // with the right credentials, while other addresses are still served.
    for mac in ["001565000088", "001565000089"] {
        assert_eq!(
            fetch(&s, &attacker, &format!("{mac}.cfg"), Some(("x", "wrong")))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        fetch(&s, &attacker, "001565aabbcd.cfg", Some(prov)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        fetch(&s, &attacker, "y000000000066.cfg", Some(prov))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        fetch(&s, &good, "001565aabbcd.cfg", Some(prov)).await.0,
        StatusCode::OK
    );
}

/// The server-default credential opens only as a pair: its user with another password, or
/// its password with another user, is a 401 like any wrong credential; so is any
/// `Authorization` value too short or too odd to be a credential.
#[tokio::test]
async fn the_server_default_credential_matches_only_as_a_pair() {
    let s = TestServer::start().await;
    let (user, pass) = (s.prov.0.clone(), s.prov.1.clone());
    let common = "y000000000066.cfg";
    assert_eq!(s.fetch(common).await.status(), StatusCode::OK);
    for (u, p) in [
        (user.as_str(), "wrong-password"),
        ("wrong-user", pass.as_str()),
    ] {
        let r = s.fetch_as(common, Some((u, p)), None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{u}:{p}");
    }
    for raw in ["", "x", "Basic", "Digest", "digest", "Bearer a"] {
        let r = s
            .client
            .get(format!("{}/{common}", s.url))
            .header("authorization", raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{raw:?}");
    }
}
