//! Vendor behaviour over real HTTP: User-Agent identification and the MAC check, the
//! Yealink boot sequence, common files chosen by User-Agent, the unprovisioned list, the
//! fetch audit, Polycom log uploads, and explain.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const T46S_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:a1:b2:c3";

async fn linked() -> TestServer {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account(
        "example.com",
        "1004",
        "1004a",
        "001565a1b2c3",
        "yealink-t46s",
    )
    .await;
    s
}

#[tokio::test]
async fn a_mac_in_the_user_agent_must_match_the_path() {
    let s = linked().await;
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let ok = s.fetch_as("001565a1b2c3.cfg", creds, Some(T46S_UA)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    // Colons or not, the same MAC passes; another MAC is refused, with or without colons.
    let bare = "Yealink SIP-T46S 66.86.0.15 001565a1b2c3";
    assert_eq!(
        s.fetch_as("001565a1b2c3.cfg", creds, Some(bare))
            .await
            .status(),
        StatusCode::OK
    );
    for ua in [
        "Yealink SIP-T46S 66.86.0.15 00:15:65:a1:b2:c4",
        "Yealink SIP-T46S 66.86.0.15 001565a1b2c4",
        "Grandstream Model HW GXP2170 SW 1.0.11.34 DevId 000b82a1b2c3",
    ] {
        let r = s.fetch_as("001565a1b2c3.cfg", creds, Some(ua)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{ua}");
    }
    // A User-Agent without a MAC is not refused.
    let r = s
        .fetch_as("001565a1b2c3.cfg", creds, Some("curl/8.5.0"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn yealink_boot_sequence() {
    let s = linked().await;
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let r = s.fetch_as("001565a1b2c3.boot", creds, Some(T46S_UA)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let boot = r.text().await.unwrap();
    assert!(boot.starts_with("#!version:1.0.0.1\n"), "{boot}");
    let includes: Vec<&str> = boot
        .lines()
        .filter(|l| l.starts_with("include:config"))
        .collect();
    assert_eq!(
        includes,
        [
            "include:config \"y000000000066.cfg\"",
            "include:config \"001565a1b2c3.cfg\""
        ]
    );
    // The common boot file names the common file of the model in the User-Agent.
    for (ua, want) in [
        (
            "Yealink SIP-T48S 66.86.0.15 00:15:65:00:00:01",
            "y000000000065.cfg",
        ),
        (
            "Yealink SIP-T54W 96.86.0.15 001565000002",
            "y000000000096.cfg",
        ),
        (
            "Yealink W60B 77.81.0.35 80:5e:c0:09:ab:dc",
            "y000000000077.cfg",
        ),
    ] {
        let r = s.fetch_as("y000000000000.boot", creds, Some(ua)).await;
        assert_eq!(r.status(), StatusCode::OK, "{ua}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(&format!("include:config \"{want}\"")),
            "{ua}: {text}"
        );
    }
    // Every file of the sequence is case-insensitive; an unlinked MAC's boot file is 404.
    let r = s.fetch_as("001565A1B2C3.boot", creds, Some(T46S_UA)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.fetch_as("001565ffffff.boot", creds, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unprovisioned_lists_unlinked_macs_that_passed_the_server_credentials() {
    let s = linked().await;
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let ua = "Yealink SIP-T48S 66.86.0.15 00:15:65:00:00:aa";
    // Wrong credentials: not recorded.
    let r = s
        .fetch_as("0015650000aa.cfg", Some(("x", "y")), Some(ua))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/unprovisioned").await.1["unprovisioned"], json!([]));
    for _ in 0..3 {
        let r = s.fetch_as("0015650000aa.cfg", creds, Some(ua)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // A common file names the MAC only in the User-Agent.
    let r = s
        .fetch_as(
            "y000000000066.cfg",
            creds,
            Some("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:bb"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (st, body) = s.get("/unprovisioned").await;
    assert_eq!(st, StatusCode::OK);
    let list = body["unprovisioned"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    let aa = list.iter().find(|u| u["mac"] == "0015650000aa").unwrap();
    assert_eq!(aa["vendor"], "yealink");
    assert_eq!(aa["model"], "SIP-T48S");
    assert_eq!(aa["firmware"], "66.86.0.15");
    assert_eq!(aa["ip"], "127.0.0.1");
    assert_eq!(aa["requests"], 3);
    assert!(aa["first-seen"].as_str().unwrap().ends_with('Z'));
    assert!(aa["last-seen"].as_str().is_some());
    // Never auto-created: no phone exists for it.
    assert_eq!(s.get("/phones/0015650000aa").await.0, StatusCode::NOT_FOUND);
    // Linking it takes it off the list.
    s.seed_account(
        "example.com",
        "1005",
        "1005a",
        "0015650000aa",
        "yealink-t48s",
    )
    .await;
    let body = s.get("/unprovisioned").await.1;
    let macs: Vec<&str> = body["unprovisioned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs, ["0015650000bb"]);
    // Admin only.
    let r = s
        .client
        .get(format!("{}/api/v1/unprovisioned", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn last_fetch_records_the_user_agent_identity() {
    let s = linked().await;
    assert_eq!(
        s.get("/phones/001565a1b2c3").await.1["last-fetch"],
        Value::Null
    );
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let r = s.fetch_as("001565a1b2c3.cfg", creds, Some(T46S_UA)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let f = &s.get("/phones/001565a1b2c3").await.1["last-fetch"];
    assert_eq!(f["file"], "001565a1b2c3.cfg");
    assert_eq!(f["status"], 200);
    assert_eq!(f["vendor"], "yealink");
    assert_eq!(f["model"], "SIP-T46S");
    assert_eq!(f["firmware"], "66.86.0.15");
    assert_eq!(f["user-agent"], T46S_UA);
    assert_eq!(f["ip"], "127.0.0.1");
    // A failed attempt is recorded too, and the list carries it.
    let r = s
        .fetch_as("001565a1b2c3.cfg", Some(("a", "b")), Some(T46S_UA))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let list = s.get("/phones").await.1;
    assert_eq!(list["phones"][0]["last-fetch"]["status"], 401);
    // Audit writes never change the phone's revision (the cache stays valid).
    let rev = s.get("/phones/001565a1b2c3").await.1["revision"].clone();
    s.state.fleet.flush(&s.state.store).unwrap();
    assert_eq!(s.get("/phones/001565a1b2c3").await.1["revision"], rev);
    assert_eq!(
        s.get("/phones/001565a1b2c3").await.1["last-fetch"]["status"],
        401
    );
}

#[tokio::test]
async fn polycom_style_log_uploads() {
    let s = linked().await;
    let put = |file: &str, creds: Option<(&str, &str)>, body: Vec<u8>| {
        let mut rb = s.client.put(format!("{}/{file}", s.url)).body(body);
        if let Some((u, p)) = creds {
            rb = rb.basic_auth(u, Some(p));
        }
        rb.send()
    };
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let r = put("001565a1b2c3-app.log", creds, b"boot ok\n".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put("001565a1b2c3-app.log", creds, b"boot ok again\n".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = put("001565A1B2C3-boot.log", creds, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let stored = s
        .dir
        .path()
        .join("data/uploads/001565a1b2c3/001565a1b2c3-app.log");
    assert_eq!(std::fs::read(&stored).unwrap(), b"boot ok again\n");
    // Never served back.
    let r = s.fetch("001565a1b2c3-app.log").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Authenticated like a fetch; unknown MACs like a fetch.
    let r = put("001565a1b2c3-app.log", None, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = put("001565ffffff-app.log", creds, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Size-capped.
    let r = put("001565a1b2c3-app.log", creds, vec![b'a'; (1 << 20) + 1])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(std::fs::read(&stored).unwrap(), b"boot ok again\n");
    // Only log names take a PUT.
    let r = put("001565a1b2c3.cfg", creds, b"x".to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = put("../etc-app.log", creds, b"x".to_vec()).await.unwrap();
    assert!(r.status().is_client_error());
}

#[tokio::test]
async fn grandstream_binary_config_is_404_without_a_challenge() {
    let s = linked().await;
    for file in ["cfg001565a1b2c3", "cfg001565a1b2c3.bin"] {
        let r = s.fetch_as(file, None, None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{file}");
    }
}

#[tokio::test]
async fn explain_names_each_values_layer() {
    let s = linked().await;
    let (st, b) = s
        .put(
            "/domains/example.com/users/1004/devices/1004a",
            json!({"device-sip-registration-expiry-seconds": 120, "recording-configuration": "yes"}),
        )
        .await;
    assert!(st.is_success(), "{b}");
    let (st, b) = s
        .put(
            "/phones/001565a1b2c3",
            json!({
                "device-provisioning-sip-transport-protocol": "tcp",
                "device-provisioning-overrides": {"account.1.label": "Desk", "custom.new.key": "1"}
            }),
        )
        .await;
    assert!(st.is_success(), "{b}");
    let (st, e) = s.get("/phones/001565a1b2c3/explain").await;
    assert_eq!(st, StatusCode::OK, "{e}");
    let cfg = e["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "001565a1b2c3.cfg")
        .unwrap();
    let layer = |key: &str| {
        cfg["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == key)
            .map(|v| {
                (
                    v["value"].as_str().unwrap().to_string(),
                    v["layer"].as_str().unwrap().to_string(),
                )
            })
            .unwrap_or_else(|| panic!("{key} not explained"))
    };
    assert_eq!(
        layer("account.1.sip_server.1.address"),
        ("sip.example.com".into(), "domain".into())
    );
    assert_eq!(
        layer("account.1.sip_server.1.transport_type"),
        ("1".into(), "phone".into())
    );
    assert_eq!(
        layer("account.1.sip_server.1.expires"),
        ("120".into(), "line 1".into())
    );
    assert_eq!(
        layer("account.1.user_name"),
        ("1004a".into(), "line 1".into())
    );
    assert_eq!(layer("account.1.label"), ("Desk".into(), "override".into()));
    assert_eq!(layer("custom.new.key"), ("1".into(), "override".into()));
    assert_eq!(
        layer("local_time.ntp_server1"),
        ("pool.ntp.org".into(), "model".into())
    );
    let ov = cfg["overrides"].as_array().unwrap();
    let added = |k: &str| ov.iter().find(|o| o["key"] == k).unwrap()["added"].clone();
    assert_eq!(added("account.1.label"), json!(false));
    assert_eq!(added("custom.new.key"), json!(true));
    // Recording has no Yealink key: listed as unused, for the line that set it.
    let unused = e["unused"].as_array().unwrap();
    assert!(
        unused
            .iter()
            .any(|u| u["setting"] == "recording-configuration"
                && u["value"] == "yes"
                && u["scope"] == "line 1"),
        "{unused:?}"
    );
    assert!(!unused.iter().any(|u| u["setting"] == "device-srtp-enabled"));
    assert_eq!(
        s.get("/phones/001565ffffff/explain").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/phones/nonsense/explain").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn cisco_profile_rule_sequence() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account(
        "example.com",
        "1004",
        "1004a",
        "00562b043615",
        "cisco-cp8841",
    )
    .await;
    let creds = Some((s.prov.0.as_str(), s.prov.1.as_str()));
    let ua = "Cisco-CP-8841-3PCC/11.0 (00562b043615)";
    // Factory rule: the product-name file, as .xml (6800 guide) or .cfg (8800 guide), any case.
    for file in ["CP-8841-3PCC.xml", "CP-8841-3PCC.cfg", "cp-8841-3pcc.xml"] {
        let r = s.fetch_as(file, creds, Some(ua)).await;
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("<Profile_Rule>$SCHEME://$SERV:$PORT/$MA.xml</Profile_Rule>"),
            "{body}"
        );
        assert!(!body.contains("User_ID_1_"), "no account in a common file");
    }
    // The rule it sets: $MA.xml (lowercase MAC); spa$MA.xml answers the same; MAC case is free.
    let per_mac = s.fetch_as("00562b043615.xml", creds, Some(ua)).await;
    assert_eq!(per_mac.status(), StatusCode::OK);
    let body = per_mac.text().await.unwrap();
    assert!(body.contains("<User_ID_1_>1004a</User_ID_1_>"), "{body}");
    for file in ["spa00562b043615.xml", "00562B043615.xml"] {
        let r = s.fetch_as(file, creds, Some(ua)).await;
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert_eq!(r.text().await.unwrap(), body, "{file}");
    }
    // Another phone's MAC in the User-Agent is refused.
    let other = "Cisco-CP-8841-3PCC/11.0 (00562b043616)";
    let r = s.fetch_as("00562b043615.xml", creds, Some(other)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The SPA112 ATA common file is spa112.cfg and points at spa$MA.xml.
    let r = s
        .fetch_as(
            "spa112.cfg",
            creds,
            Some("Cisco/SPA112-1.4.1(SR5) (88755A000001)"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("/spa$MA.xml</Profile_Rule>")
    );
}
