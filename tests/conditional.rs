//! Conditional GET on the phone path (RFC 9110 §13.1.2): `If-None-Match` with the exact
//! tag, a weak `W/` tag, a list, `*`, several header lines; anything else gets the file.

mod common;

use common::TestServer;
use reqwest::StatusCode;

const MAC: &str = "001565aabbcc";

async fn phone() -> (TestServer, String, String) {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    s.seed_account("example.com", "1001", "1001a", MAC, "yealink-t46s")
        .await;
    let file = format!("{MAC}.cfg");
    let (status, etag, body) = s.fetch_text(&file).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong tag: {etag}"
    );
    (s, file, etag)
}

/// Status, ETag and body length of a fetch sending each of `inm` as its own header line.
async fn conditional(s: &TestServer, file: &str, inm: &[&str]) -> (StatusCode, String, usize) {
    let mut rb = s
        .client
        .get(format!("{}/{file}", s.url))
        .basic_auth(&s.prov.0, Some(&s.prov.1));
    for v in inm {
        rb = rb.header("if-none-match", *v);
    }
    let r = rb.send().await.expect("fetch");
    let status = r.status();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, etag, r.bytes().await.unwrap().len())
}

#[tokio::test]
async fn if_none_match_forms_on_the_phone_path() {
    let (s, file, etag) = phone().await;
    let inner = &etag[1..etag.len() - 1];
    let weak = format!("W/{etag}");
    let list = format!("\"other\", {etag}");
    let weak_in_list = format!("\"a\",W/{etag} , \"b\"");
    let not_modified: Vec<(&str, Vec<&str>)> = vec![
        ("exact", vec![&etag]),
        ("weak", vec![&weak]),
        ("list", vec![&list]),
        ("weak in a list, odd spacing", vec![&weak_in_list]),
        ("star", vec!["*"]),
        ("star in a list", vec!["\"x\", *"]),
        ("second header line", vec!["\"x\"", &etag]),
    ];
    for (what, inm) in not_modified {
        let (status, tag, len) = conditional(&s, &file, &inm).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{what}: {inm:?}");
        assert_eq!(tag, etag, "{what}: a 304 carries the current tag");
        assert_eq!(len, 0, "{what}: a 304 has no body");
    }
    let prefix = format!("\"{}\"", &inner[..inner.len() - 1]);
    let longer = format!("\"{inner}0\"");
    let unquoted = inner.to_string();
    let weak_unquoted = format!("W/{inner}");
    let other_case = format!("w/{etag}");
    let served: Vec<(&str, Vec<&str>)> = vec![
        ("another tag", vec!["\"other\""]),
        ("a prefix of the tag", vec![&prefix]),
        ("the tag and more", vec![&longer]),
        ("unquoted", vec![&unquoted]),
        ("weak, unquoted", vec![&weak_unquoted]),
        ("lowercase w/ is not the weak prefix", vec![&other_case]),
        ("empty", vec![""]),
        ("only commas", vec![", ,"]),
    ];
    for (what, inm) in served {
        let (status, tag, len) = conditional(&s, &file, &inm).await;
        assert_eq!(status, StatusCode::OK, "{what}: {inm:?}");
        assert_eq!(tag, etag, "{what}");
        assert!(len > 0, "{what}: the whole file");
    }
}

#[tokio::test]
async fn a_change_makes_the_old_tag_stale() {
    let (s, file, etag) = phone().await;
    let (st, b) = s
        .put(
            "/domains/example.com/users/1001/devices/1001a",
            serde_json::json!({"device-sip-registration-password": "changed-pw"}),
        )
        .await;
    assert!(st.is_success(), "{st} {b}");
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let (status, tag, len) = conditional(&s, &file, &[&inm]).await;
        assert_eq!(status, StatusCode::OK, "{inm}: the file changed");
        assert_ne!(tag, etag);
        assert!(len > 0);
        let (again, _, _) = conditional(&s, &file, &[&tag]).await;
        assert_eq!(again, StatusCode::NOT_MODIFIED, "the new tag validates");
    }
}
