//! The `autoprov` binary's admin subcommands, run as a real process: on temp data folders
//! (server stopped), and with `--url` against a server started by the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_autoprov");

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
    bytes: Vec<u8>,
}

fn run_in(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(root)
        .args(args)
        .args([
            "--models",
            &format!("{root}/models"),
            "--templates",
            &format!("{root}/templates"),
        ])
        .env_remove("AUTOPROV_URL")
        .env_remove("AUTOPROV_TOKEN")
        .env_remove("AUTOPROV_DATA")
        .env_remove("RUST_LOG");
    let out = match stdin {
        None => cmd.output().expect("run autoprov"),
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write stdin");
            child.wait_with_output().expect("wait")
        }
    };
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        bytes: out.stdout,
    }
}

fn run(args: &[&str]) -> Out {
    run_in(args, None)
}

/// Runs and asserts success.
fn ok(args: &[&str]) -> Out {
    let o = run(args);
    assert!(
        o.ok,
        "autoprov {args:?} failed:\n{}\n{}",
        o.stdout, o.stderr
    );
    o
}

/// Runs and asserts failure.
fn fails(args: &[&str]) -> Out {
    let o = run(args);
    assert!(!o.ok, "autoprov {args:?} should fail:\n{}", o.stdout);
    o
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const CSV: &str = "\
mac,model,domain,user,device,line,label,password,transport,server,override:account.1.cid_source
0015651234ab,yealink-t46s,example.com,1001,1001a,1,Front,pw-1001a,udp,sip.example.com:5060,
0015651234ab,yealink-t46s,example.com,1002,1002a,2,\"Back, office\",pw-1002a,tcp,,
0015651234ac,yealink-t46s,example.com,1003,1003a,,,pw-1003a,,,2
0015651234ad,polycom-vvx450,,,,,,,,,
";

fn seeded() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let csv = write(dir.path(), "phones.csv", CSV);
    let o = ok(&["import", "--data", s(&data), s(&csv)]);
    assert!(
        o.stderr.contains("4 row(s)") && o.stderr.contains("1 domain(s) (1 created)"),
        "{}",
        o.stderr
    );
    (dir, data)
}

fn export(data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["export", "--data", s(data)];
    args.extend_from_slice(extra);
    String::from_utf8(ok(&args).bytes).expect("utf-8 export")
}

#[test]
fn help_lists_every_subcommand() {
    let o = ok(&["--help"]);
    for sub in [
        "serve", "export", "import", "token", "phone", "members", "account", "render", "models",
    ] {
        assert!(
            o.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lacks {sub}:\n{}",
            o.stdout
        );
    }
    for flag in ["--data", "--url", "--token"] {
        assert!(o.stdout.contains(flag), "--help lacks {flag}");
    }
    let o = ok(&["phone", "--help"]);
    for sub in ["link", "show", "list", "delete"] {
        assert!(o.stdout.contains(sub), "phone --help lacks {sub}");
    }
    let o = ok(&["import", "--help"]);
    assert!(o.stdout.contains("--format") && o.stdout.contains("csv"));
    // A syntax error names the argument (clap).
    let o = fails(&["phone", "link", "0015651234ab"]);
    assert!(o.stderr.contains("--model"), "{}", o.stderr);
}

#[test]
fn data_dir_subcommands() {
    let (dir, data) = seeded();
    let d = s(&data);

    let o = ok(&["phone", "list", "--data", d]);
    assert!(o.stdout.starts_with("MAC"), "{}", o.stdout);
    for mac in ["0015651234ab", "0015651234ac", "0015651234ad"] {
        assert!(o.stdout.contains(mac), "{}", o.stdout);
    }
    let o = ok(&[
        "phone",
        "list",
        "--data",
        d,
        "--model",
        "polycom-vvx450",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(v["phones"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["phones"][0]["mac"], "0015651234ad");

    let o = ok(&["phone", "show", "00:15:65:12:34:ab", "--data", d, "--json"]);
    let v: Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(v["members"][1]["lineLabel"], "Back, office");
    assert_eq!(v["members"][0]["primaryOwner"], true);
    let o = ok(&["phone", "show", "0015651234ab", "--data", d]);
    assert!(o.stdout.contains("1002a@example.com"), "{}", o.stdout);

    // phone link: a new phone in a new domain (created, and said so).
    let o = ok(&[
        "phone",
        "link",
        "0015650000aa",
        "--model",
        "yealink-t48s",
        "--domain",
        "b.example",
        "--data",
        d,
    ]);
    assert!(o.stdout.starts_with("created 0015650000aa"), "{}", o.stdout);
    assert!(
        o.stderr.contains("created domain b.example"),
        "{}",
        o.stderr
    );
    let o = fails(&[
        "phone",
        "link",
        "0015650000ab",
        "--model",
        "foo",
        "--data",
        d,
    ]);
    assert!(
        o.stderr.contains("--model: unknown model \"foo\"")
            && o.stderr.contains("see `autoprov models`"),
        "{}",
        o.stderr
    );
    let o = fails(&[
        "phone",
        "link",
        "nonsense",
        "--model",
        "yealink-t48s",
        "--data",
        d,
    ]);
    assert!(o.stderr.contains("<mac>:"), "{}", o.stderr);

    // account set: links to the phone's line 2.
    let o = ok(&[
        "account",
        "set",
        "b.example",
        "2001",
        "2001a",
        "--password",
        "secret-2001",
        "--mac",
        "0015650000aa",
        "--line",
        "2",
        "--field",
        "device-provisioning-sip-transport-protocol=tls",
        "--data",
        d,
    ]);
    assert!(
        o.stdout
            .contains("created account 2001a@b.example, line 2 of 0015650000aa"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("secret-2001"));
    let o = fails(&[
        "account",
        "set",
        "b.example",
        "2002",
        "2002a",
        "--mac",
        "0015650000aa",
        "--line",
        "99",
        "--data",
        d,
    ]);
    assert!(o.stderr.contains("--line:"), "{}", o.stderr);
    let o = fails(&[
        "account",
        "set",
        "b.example",
        "2002",
        "2002a",
        "--field",
        "device-provisioning-sip-transport-protocol=pigeon",
        "--data",
        d,
    ]);
    assert!(
        o.stderr
            .contains("--field device-provisioning-sip-transport-protocol:"),
        "{}",
        o.stderr
    );

    // members set: from --member, then from a JSON file.
    ok(&["account", "set", "b.example", "2002", "2002a", "--data", d]);
    let o = ok(&[
        "members",
        "set",
        "0015650000aa",
        "--member",
        "port=1,id=2002a@b.example,label=Desk",
        "--member",
        "port=3,id=2001a@b.example",
        "--data",
        d,
    ]);
    assert!(o.stdout.contains("2 member(s)"), "{}", o.stdout);
    let o = fails(&[
        "members",
        "set",
        "0015650000aa",
        "--member",
        "port=1,id=2002a@b.example",
        "--member",
        "port=1,id=2001a@b.example",
        "--data",
        d,
    ]);
    assert!(o.stderr.contains("--member #2 port:"), "{}", o.stderr);
    let f = write(
        dir.path(),
        "m.json",
        r#"[{"port":1,"id":"2001a@b.example"}]"#,
    );
    ok(&[
        "members",
        "set",
        "0015650000aa",
        "--json",
        s(&f),
        "--data",
        d,
    ]);
    let v: Value =
        serde_json::from_str(&ok(&["phone", "show", "0015650000aa", "--json", "--data", d]).stdout)
            .expect("json");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["members"][0]["id"], "2001a@b.example");

    // render: the bytes the phone gets.
    let o = ok(&["render", "0015650000aa", "0015650000aa.cfg", "--data", d]);
    assert!(
        o.stdout.contains("account.1.user_name = 2001a"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("secret-2001"));
    let o = fails(&["render", "0015650000aa", "nothing.cfg", "--data", d]);
    assert!(o.stderr.contains("<file>: nothing.cfg"), "{}", o.stderr);

    // models.
    let o = ok(&["models", "--data", d]);
    assert!(o.stdout.contains("yealink-t46s"));
    let v: Value = serde_json::from_str(&ok(&["models", "--json"]).stdout).expect("json");
    assert!(v["models"].as_array().is_some_and(|l| l.len() > 5));

    // tokens on the data folder.
    let o = ok(&["token", "create", "--domain", "b.example", "--data", d]);
    let id = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("id")
        .to_string();
    assert!(ok(&["token", "list", "--data", d]).stdout.contains(&id));
    ok(&["token", "revoke", &id, "--data", d]);

    // phone delete.
    ok(&["phone", "delete", "0015650000aa", "--data", d]);
    let o = fails(&["phone", "show", "0015650000aa", "--data", d]);
    assert!(o.stderr.contains("<mac>: no phone"), "{}", o.stderr);

    // A data folder without a store.
    let o = fails(&["phone", "list", "--data", s(&dir.path().join("nowhere"))]);
    assert!(o.stderr.contains("--data: no store"), "{}", o.stderr);
}

#[test]
fn full_export_still_round_trips() {
    let (dir, data) = seeded();
    let dump = export(&data, &[]);
    let f = dir.path().join("dump.json");
    std::fs::write(&f, &dump).expect("write");
    let data2 = dir.path().join("data2");
    ok(&["import", "--data", s(&data2), s(&f)]);
    assert_eq!(export(&data2, &[]), dump);
    // From stdin too.
    let data3 = dir.path().join("data3");
    let o = run_in(
        &["import", "--data", s(&data3), "-", "--format", "export"],
        Some(dump.as_bytes()),
    );
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(export(&data3, &[]), dump);
}

#[test]
fn bad_rows_all_reported_and_nothing_changes() {
    let (dir, data) = seeded();
    let before = export(&data, &[]);
    let bad = write(
        dir.path(),
        "bad.csv",
        "mac,model,domain,user,device,line,label\n\
         0015650000b1,yealink-t46s,example.com,3001,3001a,1,fine\n\
         00-zz,yealink-t46s,example.com,3002,3002a,1,x\n\
         0015650000b3,no-such-model,example.com,3003,3003a,1,x\n\
         0015650000b4,yealink-t46s,example.com,3004,3004a,99,x\n\
         0015650000b5,yealink-t46s,bad domain!,3005,,1,x\n\
         0015651234ab,yealink-t46s,example.com,3006,3006a,1,taken\n",
    );
    let o = fails(&["import", "--data", s(&data), s(&bad)]);
    for want in [
        "line 3: mac:",
        "line 4: model:",
        "line 5: line:",
        "line 6: domain:",
        "line 6: device:",
        "line 7: line:",
    ] {
        assert!(
            o.stderr.contains(want),
            "missing {want:?} in:\n{}",
            o.stderr
        );
    }
    assert!(!o.stderr.contains("line 2:"), "{}", o.stderr);
    assert!(o.stderr.contains("nothing was imported"), "{}", o.stderr);
    // All or nothing: the good row is not there either.
    assert_eq!(export(&data, &[]), before);

    // A bad header is reported before any row.
    let bad = write(dir.path(), "hdr.csv", "mac,colour\n0015650000b1,red\n");
    let o = fails(&["import", "--data", s(&data), s(&bad)]);
    assert!(
        o.stderr.contains("line 1: colour: unknown column"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("line 1: model:"), "{}", o.stderr);

    // JSON rows: position and field.
    let bad = write(
        dir.path(),
        "rows.json",
        r#"[{"mac":"0015650000c1","model":"yealink-t46s"},{"mac":"0015650000c2","model":"nope"}]"#,
    );
    let o = fails(&["import", "--data", s(&data), s(&bad)]);
    assert!(o.stderr.contains("line 2: model:"), "{}", o.stderr);
    assert_eq!(export(&data, &[]), before);
}

#[test]
fn json_rows_import() {
    let (dir, data) = seeded();
    let f = write(
        dir.path(),
        "rows.json",
        r#"{"rows":[{"mac":"0015650000c1","model":"yealink-t46s","domain":"example.com",
            "user":"4001","device":"4001a","line":3,"overrides":{"account.1.cid_source":"1"}}]}"#,
    );
    ok(&["import", "--data", s(&data), s(&f)]);
    let v: Value = serde_json::from_str(
        &ok(&[
            "phone",
            "show",
            "0015650000c1",
            "--json",
            "--data",
            s(&data),
        ])
        .stdout,
    )
    .expect("json");
    assert_eq!(v["members"][0]["port"], 3);
    assert_eq!(
        v["device-provisioning-overrides"]["account.1.cid_source"],
        "1"
    );

    // CSV from stdin, and a password from stdin.
    let o = run_in(
        &["import", "--data", s(&data), "-", "--format", "csv"],
        Some(b"mac,model,domain,user,device\n0015650000c2,yealink-t46s,example.com,4002,4002a\n"),
    );
    assert!(o.ok && o.stderr.contains("from stdin"), "{}", o.stderr);
    let o = run_in(
        &[
            "account",
            "set",
            "example.com",
            "4002",
            "4002a",
            "--password",
            "-",
            "--data",
            s(&data),
        ],
        Some(b"from-stdin-pw\n"),
    );
    assert!(o.ok, "{}", o.stderr);
    let csv = export(&data, &["--format", "csv"]);
    assert!(
        csv.contains("0015650000c2,yealink-t46s,example.com,4002,4002a,1,,from-stdin-pw,"),
        "{csv}"
    );
}

#[test]
fn csv_round_trip() {
    let (dir, data) = seeded();
    let csv = export(&data, &["--format", "csv"]);
    let text = csv.clone();
    assert!(
        text.starts_with(
            "mac,model,domain,user,device,line,label,password,transport,server,override:account.1.cid_source\n"
        ),
        "{text}"
    );
    assert!(text.contains(
        "0015651234ab,yealink-t46s,example.com,1002,1002a,2,\"Back, office\",pw-1002a,tcp,,\n"
    ));
    assert!(
        text.contains("0015651234ad,polycom-vvx450,,,,,,,,,\n"),
        "{text}"
    );
    let f = dir.path().join("again.csv");
    std::fs::write(&f, &csv).expect("write");
    let data2 = dir.path().join("data2");
    ok(&["import", "--data", s(&data2), s(&f)]);
    assert_eq!(export(&data2, &["--format", "csv"]), csv);
    // Importing the same rows again changes nothing.
    let before = export(&data2, &[]);
    ok(&["import", "--data", s(&data2), s(&f)]);
    assert_eq!(export(&data2, &[]), before);
}

#[test]
fn ten_thousand_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from("mac,model,domain,user,device,line,label,password\n");
    for i in 0..10_000u32 {
        csv.push_str(&format!(
            "0015{i:08x},yealink-t46s,d{}.example.com,u{i},dev{i},1,L{i},pw{i}\n",
            i % 10
        ));
    }
    let f = write(dir.path(), "big.csv", &csv);
    let data = dir.path().join("data");
    let o = ok(&["import", "--data", s(&data), s(&f)]);
    assert!(
        o.stderr
            .contains("10000 phone(s) (10000 new), 10000 account(s) (10000 new), 10 domain(s)"),
        "{}",
        o.stderr
    );
    let dump: Value = serde_json::from_str(&export(&data, &[])).expect("json");
    assert_eq!(
        dump["trees"]["phones"].as_array().map(Vec::len),
        Some(10_000)
    );
    assert_eq!(
        dump["trees"]["accounts"].as_array().map(Vec::len),
        Some(10_000)
    );
    let out = export(&data, &["--format", "csv"]);
    assert_eq!(out.lines().count(), 10_001);
}

/// Runs the binary off the async workers (the test's server keeps serving meanwhile).
async fn run_async(args: Vec<String>) -> Out {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_mode_against_a_running_server() {
    let srv = common::TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write(dir.path(), "phones.csv", CSV);
    let remote = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        v.extend([
            "--url".into(),
            srv.url.clone(),
            "--token".into(),
            srv.token.clone(),
        ]);
        v
    };

    let o = run_async(remote(&["import", s(&csv)])).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stderr.contains("3 phone(s) (3 new)"), "{}", o.stderr);
    let (status, body) = srv.get("/phones/0015651234ab").await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["members"][1]["lineLabel"], "Back, office");

    let o = run_async(remote(&["phone", "list"])).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("0015651234ac"), "{}", o.stdout);
    let o = run_async(remote(&[
        "phone",
        "list",
        "--json",
        "--domain",
        "example.com",
    ]))
    .await;
    let v: Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(v["phones"].as_array().map(Vec::len), Some(2));

    let o = run_async(remote(&["render", "0015651234ab", "0015651234ab.cfg"])).await;
    assert!(o.ok, "{}", o.stderr);
    let fetched = srv.fetch("0015651234ab.cfg").await;
    assert_eq!(fetched.bytes().await.expect("body").to_vec(), o.bytes);
    let o = run_async(remote(&["render", "0015651234ab", "nothing.cfg"])).await;
    assert!(
        !o.ok && o.stderr.contains("<file>: nothing.cfg"),
        "{}",
        o.stderr
    );

    // Bad rows over HTTP: every one reported, nothing changed.
    let before = srv.dump();
    let bad = write(
        dir.path(),
        "bad.csv",
        "mac,model,line\n0015650000d1,yealink-t46s,\nxx,yealink-t46s,\n0015650000d3,nope,\n",
    );
    let o = run_async(remote(&["import", s(&bad)])).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("line 3: mac:") && o.stderr.contains("line 4: model:"),
        "{}",
        o.stderr
    );
    assert_eq!(srv.dump(), before);

    // The same through the route itself.
    let r = srv
        .admin(reqwest::Method::POST, "/import")
        .header("content-type", "text/csv")
        .body("mac,model\nxx,yealink-t46s\n")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_rows");
    assert_eq!(v["rows"][0]["line"], 2);
    assert_eq!(v["rows"][0]["field"], "mac");

    // A domain token may not import: it spans every domain.
    let (_, t) = srv
        .post("/tokens", serde_json::json!({"domain": "example.com"}))
        .await;
    let domain_token = t["token"].as_str().expect("token").to_string();
    let o = run_async(vec![
        "import".into(),
        s(&csv).to_string(),
        "--url".into(),
        srv.url.clone(),
        "--token".into(),
        domain_token,
    ])
    .await;
    assert!(
        !o.ok && o.stderr.contains("server-wide admin token"),
        "{}",
        o.stderr
    );

    // Export over HTTP equals the store's own.
    let o = run_async(remote(&["export", "--format", "csv"])).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("0015651234ad,polycom-vvx450"),
        "{}",
        o.stdout
    );

    // A wrong token names --token; the running server's data folder names --url.
    let o = run_async(vec![
        "phone".into(),
        "list".into(),
        "--url".into(),
        srv.url.clone(),
        "--token".into(),
        "wrong".into(),
    ])
    .await;
    assert!(!o.ok && o.stderr.contains("--token:"), "{}", o.stderr);
    let data = srv.dir.path().join("data");
    let o = run_async(vec![
        "phone".into(),
        "list".into(),
        "--data".into(),
        s(&data).to_string(),
    ])
    .await;
    assert!(!o.ok && o.stderr.contains("--url"), "{}", o.stderr);
}

#[test]
fn a_refused_command_leaves_no_domain_behind() {
    let (_dir, data) = seeded();
    let d = s(&data);
    let before = export(&data, &[]);
    // The domain would be created first; the account write is refused (unknown model), so
    // the new domain is removed again and the store is as it was.
    let o = fails(&[
        "account",
        "set",
        "new.example",
        "3001",
        "3001a",
        "--mac",
        "001565000301",
        "--model",
        "nosuch",
        "--data",
        d,
    ]);
    assert!(o.stderr.contains("--model"), "{}", o.stderr);
    let o = fails(&[
        "phone",
        "link",
        "001565000302",
        "--model",
        "nosuch",
        "--domain",
        "new.example",
        "--data",
        d,
    ]);
    assert!(o.stderr.contains("--model"), "{}", o.stderr);
    // Every record is as it was; only the store-wide revision counter moved (the domain's
    // create and its removal were two commits).
    let records = |e: &str| {
        let mut v: serde_json::Value = serde_json::from_str(e).unwrap();
        v["trees"]["meta"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["key"] != "revision");
        v
    };
    assert_eq!(records(&export(&data, &[])), records(&before));
    // A command that succeeds keeps the domain it created, and says so.
    let o = ok(&[
        "phone",
        "link",
        "001565000302",
        "--model",
        "yealink-t46s",
        "--domain",
        "new.example",
        "--data",
        d,
    ]);
    assert!(
        o.stderr.contains("created domain new.example"),
        "{}",
        o.stderr
    );
}

#[tokio::test]
async fn an_abandoned_import_writes_nothing() {
    // The blocking half of an import outlives a request the timeout layer answered 408:
    // once abandoned, it must not commit.
    let srv = common::TestServer::start().await;
    let rows =
        autoprov::admin::bulk::parse(CSV.as_bytes(), autoprov::admin::bulk::Format::Csv).unwrap();
    let before = srv.dump();
    let abandoned = std::sync::atomic::AtomicBool::new(true);
    let apply = |abandoned: &std::sync::atomic::AtomicBool| {
        let t = srv.state.templates();
        autoprov::admin::bulk::apply_sync(&srv.state.store, &t, &rows, &|_| {}, abandoned)
    };
    let r = apply(&abandoned);
    assert!(
        matches!(r, Err(autoprov::admin::bulk::BulkError::Abandoned)),
        "{r:?}"
    );
    assert_eq!(srv.dump(), before);
    abandoned.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = apply(&abandoned).unwrap();
    assert_eq!(r.phones, 3);
}

#[tokio::test]
async fn an_import_whose_request_is_dropped_is_abandoned() {
    // The request's future dropped (a client gone, a timeout) while the blocking half waits
    // for the writer lock: when it gets the lock it must not commit. The test holds the lock
    // so the drop comes first; afterwards it gives the blocking half time to finish, so a
    // slow machine can only make this pass without checking, never fail by itself.
    let srv = common::TestServer::start().await;
    let rows =
        autoprov::admin::bulk::parse(CSV.as_bytes(), autoprov::admin::bulk::Format::Csv).unwrap();
    let before = srv.dump();
    // Another thread holds the writer lock until told to let go.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let state = srv.state.clone();
    let holder = std::thread::spawn(move || {
        let _writer = state.store.writer();
        locked_tx.send(()).unwrap();
        release_rx.recv().ok();
    });
    locked_rx.recv().unwrap();
    {
        let import = autoprov::admin::bulk::apply(
            &srv.state,
            srv.state.templates().clone(),
            rows.clone(),
            |_| {},
        );
        tokio::select! {
            r = import => panic!("the import finished while the writer lock was held: {r:?}"),
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(srv.dump(), before);
    // The same import, not dropped, commits.
    let r = autoprov::admin::bulk::apply(&srv.state, srv.state.templates().clone(), rows, |_| {})
        .await
        .unwrap();
    assert_eq!(r.phones, 3);
}
