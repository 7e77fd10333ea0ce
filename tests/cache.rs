//! The render cache never serves stale bytes after any kind of admin write, and a write
//! re-renders exactly the phones it affects.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

const A: &str = "001565000001";
const B: &str = "001565000002";
/// The shared-line phone of [`shared_line`].
const C: &str = "001565000003";

/// Two phones in two domains, both fetched once (warm).
async fn two_phones() -> TestServer {
    let s = TestServer::start().await;
    s.seed_domain("a.example").await;
    s.seed_domain("b.example").await;
    s.seed_account("a.example", "100", "100a", A, "yealink-t46s")
        .await;
    s.seed_account("b.example", "200", "200b", B, "yealink-t48s")
        .await;
    for mac in [A, B] {
        assert_eq!(
            s.fetch(&format!("{mac}.cfg")).await.status(),
            StatusCode::OK
        );
    }
    s
}

async fn body(s: &TestServer, mac: &str) -> (String, String) {
    let (st, etag, body) = s.fetch_text(&format!("{mac}.cfg")).await;
    assert_eq!(st, StatusCode::OK);
    (etag, body)
}

#[tokio::test]
async fn hits_do_not_render() {
    let s = two_phones().await;
    let n = s.renders();
    for _ in 0..5 {
        body(&s, A).await;
        body(&s, B).await;
    }
    assert_eq!(s.renders(), n);
}

#[tokio::test]
async fn domain_write_reaches_its_phones_only() {
    let s = two_phones().await;
    let (e1, _) = body(&s, A).await;
    let (eb, _) = body(&s, B).await;
    let n = s.renders();
    let (st, _) = s.put("/domains/a.example", json!({"defaults": {"device-provisioning-registration-core-server": "pbx2.a.example:5080"}})).await;
    assert_eq!(st, StatusCode::OK);
    let (e2, b) = body(&s, A).await;
    assert_ne!(e1, e2);
    assert!(
        b.contains("account.1.sip_server.1.address = pbx2.a.example\n"),
        "{b}"
    );
    assert!(b.contains("account.1.sip_server.1.port = 5080\n"));
    assert_eq!(body(&s, B).await.0, eb);
    assert_eq!(s.renders(), n + 1, "only the affected phone re-renders");
}

/// [`two_phones`], and 100a also a shared line (port 2) of a second phone of a.example,
/// `C`, whose primary owner is 101a; C fetched once too.
async fn shared_line() -> TestServer {
    let s = two_phones().await;
    s.seed_account("a.example", "101", "101a", C, "yealink-t46s")
        .await;
    let (st, b) = s
        .put(
            &format!("/phones/{C}/members"),
            json!({"members": [
                {"port": 1, "id": "101a@a.example", "primaryOwner": true},
                {"port": 2, "id": "100a@a.example", "lineType": "SHARED_CALL_APPEARANCE"}
            ]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(body(&s, C).await.1.contains("account.2.shared_line = 1\n"));
    s
}

#[tokio::test]
async fn account_write_reaches_every_phone_it_is_on() {
    // 100a is also a shared line on a second phone of a.example.
    let s = shared_line().await;
    let (ea, _) = body(&s, A).await;
    let (ec, _) = body(&s, "001565000003").await;
    let (eb, _) = body(&s, B).await;
    let n = s.renders();
    let (st, _) = s
        .put(
            "/domains/a.example/users/100/devices/100a",
            json!({"device-sip-registration-password": "rotated-pw"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (ea2, ba) = body(&s, A).await;
    let (ec2, bc) = body(&s, "001565000003").await;
    assert_ne!(ea, ea2);
    assert_ne!(ec, ec2);
    assert!(ba.contains("account.1.password = rotated-pw\n"));
    assert!(bc.contains("account.2.password = rotated-pw\n"));
    assert!(bc.contains("account.2.shared_line = 1\n"));
    assert_eq!(body(&s, B).await.0, eb);
    assert_eq!(s.renders(), n + 2);
}

#[tokio::test]
async fn phone_member_and_override_writes_are_seen() {
    let s = two_phones().await;
    let (e0, _) = body(&s, A).await;
    let (st, _) = s
        .put(
            &format!("/phones/{A}"),
            json!({"device-provisioning-sip-transport-protocol": "tls"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (e1, b) = body(&s, A).await;
    assert_ne!(e0, e1);
    assert!(b.contains("account.1.sip_server.1.transport_type = 2\n"));
    assert!(
        b.contains("account.1.sip_server.1.port = 5061\n"),
        "TLS default port"
    );

    let (st, _) = s
        .put(&format!("/phones/{A}/members"), json!({"members": [{"port": 1, "id": "100a@a.example", "lineLabel": "Desk", "primaryOwner": true}]}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (e2, b) = body(&s, A).await;
    assert_ne!(e1, e2);
    assert!(b.contains("account.1.label = Desk\n"));

    let (st, _) = s
        .put(&format!("/phones/{A}"), json!({"device-provisioning-overrides": {"account.1.label": "Override", "custom.new_key": "42"}}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (e3, b) = body(&s, A).await;
    assert_ne!(e2, e3);
    assert!(b.contains("account.1.label = Override\n"));
    assert!(b.ends_with("custom.new_key = 42\n"));
    assert_eq!(b.matches("account.1.label =").count(), 1);

    // Removing an override key (merge patch null) brings the generated value back.
    let (st, _) = s
        .put(
            &format!("/phones/{A}"),
            json!({"device-provisioning-overrides": {"account.1.label": null}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, b) = body(&s, A).await;
    assert!(b.contains("account.1.label = Desk\n"));
    assert!(b.contains("custom.new_key = 42\n"));
}

#[tokio::test]
async fn deletes_are_seen() {
    let s = two_phones().await;
    let (st, _) = s.delete("/domains/a.example/users/100/devices/100a").await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, b) = body(&s, A).await;
    assert!(!b.contains("account.1.enable = 1"), "{b}");
    assert!(b.contains("account.1.enable = 0\n"));
    let (st, _) = s.delete(&format!("/phones/{A}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        s.fetch(&format!("{A}.cfg")).await.status(),
        StatusCode::NOT_FOUND
    );
    // Re-created at the same MAC: never the old bytes.
    s.seed_account("a.example", "102", "102a", A, "yealink-t46s")
        .await;
    let (_, b) = body(&s, A).await;
    assert!(b.contains("account.1.user_name = 102a\n"));
}

#[tokio::test]
async fn writes_that_change_nothing_keep_the_etag() {
    let s = two_phones().await;
    let (e0, _) = body(&s, A).await;
    let n = s.renders();
    let (st, _) = s.put("/domains/a.example", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .put(
            "/domains/b.example",
            json!({"defaults": {"time-zone": "+2"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body(&s, A).await.0, e0);
    assert_eq!(s.renders(), n);
}

#[tokio::test]
async fn concurrent_cold_fetches_render_once() {
    let s = two_phones().await;
    let (st, _) = s
        .put(
            "/domains/a.example",
            json!({"defaults": {"time-zone": "+3"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let n = s.renders();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (url, u, p) = (s.url.clone(), s.prov.0.clone(), s.prov.1.clone());
        let c = s.client.clone();
        tasks.push(tokio::spawn(async move {
            c.get(format!("{url}/{A}.cfg"))
                .basic_auth(u, Some(p))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert!(bodies[0].contains("local_time.time_zone = +3\n"));
    assert_eq!(s.renders(), n + 1);
}

/// A T46S with its own provisioning credential `u`/`p`, committed directly.
fn store_phone(state: &autoprov::AppState, mac: autoprov::model::Mac) {
    let mut phone = autoprov::model::Phone::new(mac, "yealink-t46s".into());
    phone.provisioning_username = Some("u".into());
    phone.provisioning_password = Some("p".into());
    state
        .store
        .commit(&autoprov::store::Change {
            phones: vec![(mac, Some(phone))],
            ..Default::default()
        })
        .unwrap();
}

/// Serves `state` on 127.0.0.1:0: the URL, the stop sender and the server's task.
async fn serve_state(
    state: autoprov::AppState,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(autoprov::serve(listener, state, async move {
        let _ = rx.await;
    }));
    (url, tx, task)
}

/// Phone A's file with `store_phone`'s credentials: status, ETag, body.
async fn fetch_a(url: &str, if_none_match: Option<&str>) -> (u16, String, String) {
    let mut rb = reqwest::Client::new()
        .get(format!("{url}/{A}.cfg"))
        .basic_auth("u", Some("p"));
    if let Some(t) = if_none_match {
        rb = rb.header("if-none-match", t);
    }
    let r = rb.send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    (r.status().as_u16(), etag, r.text().await.unwrap())
}

/// After a restart the records are the same, the file a phone holds is still valid (its
/// ETag answers 304, the same bytes come without a render), and a change made after the
/// restart still makes it stale.
#[tokio::test]
async fn restart_keeps_data_and_cache_validity() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_in(dir.path());
    let mac = autoprov::model::Mac::parse(A).unwrap();
    let (before, etag, body) = {
        let (state, _) = autoprov::init(&config).unwrap();
        store_phone(&state, mac);
        let (url, stop, task) = serve_state(state.clone()).await;
        let (status, etag, body) = fetch_a(&url, None).await;
        assert_eq!(status, 200);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        state.store.flush().await.unwrap();
        (state.store.phone(mac).unwrap().unwrap(), etag, body)
    };
    let (state, _) = autoprov::init(&config).unwrap();
    let after = state.store.phone(mac).unwrap().unwrap();
    assert_eq!(after, before, "the record survives as it was");
    let (url, stop, task) = serve_state(state.clone()).await;
    assert_eq!(
        fetch_a(&url, Some(&etag)).await.0,
        304,
        "the old tag is valid"
    );
    assert_eq!(fetch_a(&url, None).await, (200, etag.clone(), body.clone()));
    assert_eq!(
        state.cache.render_count(),
        0,
        "served from the stored render"
    );
    let mut changed = after.clone();
    changed
        .overrides
        .insert("custom.note".into(), "sip.changed.example".into());
    state
        .store
        .commit(&autoprov::store::Change {
            phones: vec![(mac, Some(changed))],
            ..Default::default()
        })
        .unwrap();
    let (status, new_etag, new_body) = fetch_a(&url, Some(&etag)).await;
    assert_eq!(
        status, 200,
        "a change after the restart makes the old tag stale"
    );
    assert_ne!(new_etag, etag);
    assert!(new_body.contains("sip.changed.example"), "{new_body}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_restarted_server_warms_its_memory_tiers_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_in(dir.path());
    let mac = autoprov::model::Mac::parse(A).unwrap();
    let fetch = |url: String| async move {
        let r = reqwest::Client::new()
            .get(format!("{url}/{A}.cfg"))
            .basic_auth("u", Some("p"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let serve = serve_state;
    // First process: the phone's file is rendered and packed into the store.
    let first = {
        let (state, _) = autoprov::init(&config).unwrap();
        store_phone(&state, mac);
        let (url, stop, task) = serve(state.clone()).await;
        let body = fetch(url).await;
        assert_eq!(state.cache.render_count(), 1);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        state.store.flush().await.unwrap();
        body
    };
    // Second process: warmed before any request, then served without rendering.
    let (state, _) = autoprov::init(&config).unwrap();
    assert_eq!(state.cache.memory().2, 0);
    autoprov::warm_up(state.clone()).unwrap().join().unwrap();
    assert_eq!(state.cache.memory().2, 1, "the packed file is in memory");
    assert_eq!(
        state.store.gate_memory().2,
        1,
        "the phone's gate is in memory"
    );
    let (url, stop, task) = serve(state.clone()).await;
    assert_eq!(fetch(url).await, first);
    assert_eq!(state.cache.render_count(), 0);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// A file a live server renders is served from memory at once and reaches the store's
/// render tree once renders pause (not only at shutdown); `/metrics` counts it meanwhile.
#[tokio::test]
async fn a_rendered_file_reaches_the_store_once_renders_pause() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_in(dir.path());
    let mac = autoprov::model::Mac::parse(A).unwrap();
    let (state, _) = autoprov::init(&config).unwrap();
    store_phone(&state, mac);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(autoprov::serve(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{url}/{A}.cfg"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let key = autoprov::store::render_key(Some(mac), "yealink-t46s", "{mac}.cfg");
    let unwritten = || async {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("autoprov_renders_unwritten "))
            .map(str::to_owned)
    };
    // Still queued right after the fetch, as a rule (written only after a 500 ms pause); a
    // machine slow enough to have written it already skips this check, which
    // `cache::tests::renders_reach_the_store_once_renders_pause_the_newest_kept` makes
    // without a clock race.
    if state.store.render_get(&key).unwrap().is_none() {
        assert_eq!(unwritten().await.as_deref(), Some("1"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state.store.render_get(&key).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the file never reached the store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(unwritten().await.as_deref(), Some("0"));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------- the same through bulk import

/// How an account change reaches the store besides the account route.
#[derive(Clone, Copy, Debug)]
enum Import {
    /// `POST /import`, `text/csv`.
    Csv,
    /// `POST /import`, JSON rows.
    Json,
    /// `autoprov import --url` against the running server.
    CliUrl,
}

/// A bulk row that gives 100a the password `pw`, naming only phone A (the row's phone): C
/// must follow because 100a is its member, not because the row names it.
fn rotation_csv(pw: &str) -> String {
    format!("mac,model,domain,user,device,password\n{A},yealink-t46s,a.example,100,100a,{pw}\n")
}

async fn rotate_through(s: &TestServer, via: Import, pw: &str) {
    let (ct, text) = match via {
        Import::Csv => ("text/csv", rotation_csv(pw)),
        Import::Json => (
            "application/json",
            json!([{"mac": A, "model": "yealink-t46s", "domain": "a.example", "user": "100",
                "device": "100a", "password": pw}])
            .to_string(),
        ),
        Import::CliUrl => {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("rotate.csv");
            std::fs::write(&f, rotation_csv(pw)).unwrap();
            let args = [f.to_str().unwrap(), "--url", &s.url, "--token", &s.token];
            let o = common::autoprov_cli(
                ["import"]
                    .iter()
                    .chain(&args)
                    .map(|a| a.to_string())
                    .collect(),
            )
            .await;
            assert!(o.ok, "{}", o.stderr);
            return;
        }
    };
    let r = s
        .admin(reqwest::Method::POST, "/import")
        .header("content-type", ct)
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{via:?}: {}",
        r.text().await.unwrap()
    );
}

/// Rotates 100a's password through `via` on a fresh [`shared_line`] server; what went wrong.
async fn rotation_problems(via: Import) -> Vec<String> {
    let s = shared_line().await;
    let (ea, _) = body(&s, A).await;
    let (ec, _) = body(&s, C).await;
    let (eb, _) = body(&s, B).await;
    let n = s.renders();
    let pw = format!("rotated-{via:?}");
    rotate_through(&s, via, &pw).await;
    let (ea2, ba) = body(&s, A).await;
    let (ec2, bc) = body(&s, C).await;
    let mut problems = vec![];
    let mut want = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{via:?}: {what}"));
        }
    };
    want(
        ec != ec2,
        format!("the shared-line phone kept its ETag {ec}"),
    );
    want(
        bc.contains(&format!("account.2.password = {pw}\n")),
        format!("the shared-line phone kept the old password:\n{bc}"),
    );
    want(
        bc.contains("account.2.shared_line = 1\n"),
        format!("no shared line:\n{bc}"),
    );
    want(ea != ea2, format!("the row's own phone kept its ETag {ea}"));
    want(
        ba.contains(&format!("account.1.password = {pw}\n")),
        format!("the row's own phone kept the old password:\n{ba}"),
    );
    want(
        body(&s, B).await.0 == eb,
        "another domain's phone changed".into(),
    );
    let renders = s.renders() - n;
    want(
        renders == 2,
        format!("{renders} re-renders instead of A's and C's"),
    );
    problems
}

/// An account change made by a bulk import re-renders every phone the account is a member
/// of (here a shared line of a phone the row does not name), through every way in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_account_change_reaches_every_phone_it_is_on() {
    let mut failures = vec![];
    for via in [Import::Csv, Import::Json, Import::CliUrl] {
        failures.extend(rotation_problems(via).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The phones' ETags and files from the real binary serving `data`, stopped gracefully
/// afterwards (so what it rendered is in the store for the next start).
async fn served_files(data: &std::path::Path, macs: &[&str]) -> Vec<(String, String)> {
    let served = common::Served::start(data, data);
    let mut out = vec![];
    for mac in macs {
        let (st, etag, text) = served.fetch(&format!("{mac}.cfg")).await;
        assert_eq!(st, StatusCode::OK, "{mac}: {text}");
        out.push((etag, text));
    }
    served.stop();
    out
}

async fn cli_ok(args: &[&str]) {
    let o = common::autoprov_cli(args.iter().map(|a| a.to_string()).collect()).await;
    assert!(o.ok, "autoprov {args:?}:\n{}", o.stderr);
}

/// The same on a data folder: the server renders and keeps A's and C's files, stops;
/// `autoprov import --data` changes 100a's password naming only A; the next start must not
/// serve C's kept file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_on_a_data_folder_reaches_every_phone_an_account_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let seed = dir.path().join("seed.csv");
    std::fs::write(
        &seed,
        format!(
            "mac,model,domain,user,device,line,password\n\
             {A},yealink-t46s,a.example,100,100a,1,pw-100a\n\
             {C},yealink-t46s,a.example,101,101a,1,pw-101a\n\
             {C},yealink-t46s,a.example,100,100a,2,\n\
             {B},yealink-t48s,b.example,200,200b,1,pw-200b\n"
        ),
    )
    .unwrap();
    cli_ok(&["import", "--data", d, seed.to_str().unwrap()]).await;
    let (own, shared) = (
        "port=1,id=101a@a.example,owner=true",
        "port=2,id=100a@a.example,type=shared",
    );
    cli_ok(&[
        "members", "set", C, "--member", own, "--member", shared, "--data", d,
    ])
    .await;
    let before = served_files(&data, &[A, C, B]).await;
    assert!(
        before[1].1.contains("account.2.password = pw-100a\n"),
        "{}",
        before[1].1
    );
    assert!(
        before[1].1.contains("account.2.shared_line = 1\n"),
        "{}",
        before[1].1
    );

    let rotate = dir.path().join("rotate.csv");
    std::fs::write(&rotate, rotation_csv("rotated-offline")).unwrap();
    cli_ok(&["import", "--data", d, rotate.to_str().unwrap()]).await;
    let after = served_files(&data, &[A, C, B]).await;
    assert_ne!(
        after[1].0, before[1].0,
        "the shared-line phone kept its ETag"
    );
    assert!(
        after[1]
            .1
            .contains("account.2.password = rotated-offline\n"),
        "the shared-line phone kept the old password:\n{}",
        after[1].1
    );
    assert_ne!(after[0].0, before[0].0, "the row's own phone kept its ETag");
    assert!(
        after[0]
            .1
            .contains("account.1.password = rotated-offline\n")
    );
    assert_eq!(after[2], before[2], "another domain's phone changed");
}
