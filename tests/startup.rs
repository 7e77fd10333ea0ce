//! Startup: bad data files stop it with the file and field named; the real binary prints
//! where it listens and serves; config errors name the key.

mod common;

use std::process::{Command, Stdio};

use autoprov::config::Config;
use common::repo;

fn init_error(edit: impl FnOnce(&std::path::Path, &std::path::Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (models, templates) = (dir.path().join("models"), dir.path().join("templates"));
    common::copy_dir(&repo("models"), &models);
    common::copy_dir(&repo("templates"), &templates);
    edit(&models, &templates);
    let config = Config::for_test(dir.path().join("data"), models, templates);
    let err = autoprov::init(&config).expect_err("startup must fail");
    autoprov::render::error_chain(&err)
}

#[test]
fn bad_model_field_is_named() {
    let e = init_error(|m, _| {
        let p = m.join("yealink-t46s.toml");
        let t = std::fs::read_to_string(&p)
            .unwrap()
            .replace("ports = 16", "ports = 0");
        std::fs::write(p, t).unwrap();
    });
    assert!(
        e.contains("yealink-t46s.toml") && e.contains("`ports`"),
        "{e}"
    );
}

#[test]
fn unknown_model_key_is_named() {
    let e = init_error(|m, _| {
        let p = m.join("yealink-t48s.toml");
        let t = std::fs::read_to_string(&p)
            .unwrap()
            .replace("ports = 16", "ports = 16\nportz = 3");
        std::fs::write(p, t).unwrap();
    });
    assert!(
        e.contains("yealink-t48s.toml") && e.contains("portz"),
        "{e}"
    );
}

#[test]
fn missing_template_is_named() {
    let e = init_error(|m, _| {
        let p = m.join("yealink-t31g.toml");
        let t = std::fs::read_to_string(&p)
            .unwrap()
            .replace("yealink/mac.cfg", "yealink/nope.cfg");
        std::fs::write(p, t).unwrap();
    });
    assert!(
        e.contains("yealink-t31g.toml") && e.contains("yealink/nope.cfg"),
        "{e}"
    );
}

#[test]
fn broken_template_is_named() {
    let e = init_error(|_, t| {
        std::fs::write(t.join("yealink/mac.cfg"), "{% for x in %}").unwrap();
    });
    assert!(e.contains("yealink/mac.cfg"), "{e}");
}

#[test]
fn template_using_an_unknown_variable_is_named() {
    let e = init_error(|_, t| {
        std::fs::write(
            t.join("yealink/common.cfg"),
            "{{ settings.no_such_setting }}\n",
        )
        .unwrap();
    });
    assert!(
        e.contains("yealink/common.cfg") || e.contains("y0000000000"),
        "{e}"
    );
}

#[test]
fn binary_prints_address_and_serves() {
    // One worker is the current-thread runtime; two, the multi-thread one.
    for workers in ["1", "2"] {
        prints_address_and_serves(workers);
    }
}

fn prints_address_and_serves(workers: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, mut lines) = common::spawn_binary(
        common::binary_command(
            &["--workers", workers],
            &dir.path().join("data"),
            &repo("models"),
            &repo("templates"),
        )
        .stderr(Stdio::null()),
    );
    let token_line = lines.next().unwrap().unwrap();
    assert!(token_line.contains("admin-token"), "{token_line}");
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    assert!(
        token_line.contains(token.trim()),
        "the new token is printed once"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/api/v1/models"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, reqwest::StatusCode::OK);
    // SIGTERM: graceful shutdown, exit 0.
    #[cfg(unix)]
    {
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    #[cfg(not(unix))]
    child.kill().unwrap();
}

/// A stop signal sent the moment the address is printed still stops the server
/// gracefully (the handlers are installed before it is printed), for SIGTERM and SIGINT.
#[cfg(unix)]
#[test]
fn a_stop_signal_right_after_start_is_graceful() {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, _url, _lines) = common::spawn_binary(
            common::binary_command(
                &[],
                &dir.path().join("data"),
                &repo("models"),
                &repo("templates"),
            )
            .stderr(Stdio::null()),
        );
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "{signal}: {status:?}");
    }
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("autoprov.toml");
    std::fs::write(&cfg, "listne = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listne"), "{err}");
}

#[test]
fn help_lists_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data",
        "--models",
        "--templates",
        "--config",
        "--workers",
        "AUTOPROV_LISTEN",
        "AUTOPROV_WORKERS",
        "AUTOPROV_DATA",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// The binary's request lines on stderr, in both formats: one per request, with method,
/// path, status and latency, and no credential (the text format's lines bypass tracing's
/// dispatch, so this is what checks them end to end).
#[test]
fn binary_logs_one_line_per_request() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let (child, url, _stdout) = common::spawn_binary(
            common::binary_command(
                &["--log-format", format],
                &dir.path().join("data"),
                &repo("models"),
                &repo("templates"),
            )
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped()),
        );
        let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
        let token = token.trim();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let statuses = rt.block_on(async {
            let c = reqwest::Client::new();
            let models = c
                .get(format!("{url}/api/v1/models"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status();
            let phone = c
                .get(format!("{url}/001565aabbcc.cfg"))
                .basic_auth("someone", Some("NOT-A-LOGGED-SECRET"))
                .send()
                .await
                .unwrap()
                .status();
            (models, phone)
        });
        assert_eq!(statuses.0, 200);
        assert!(statuses.1.is_client_error(), "{}", statuses.1);
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        let requests: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("request") && l.contains("latency_us"))
            .collect();
        assert_eq!(requests.len(), 2, "{err}");
        let phone_status = statuses.1.as_u16().to_string();
        if format == "text" {
            let (stamp, rest) = requests[0].split_at(27);
            assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
            let rest = rest.split(" latency_us=").next().unwrap();
            assert_eq!(
                rest,
                "  INFO request method=GET path=/api/v1/models status=200"
            );
            assert!(
                requests[1][27..].starts_with(&format!(
                    "  INFO request method=GET path=/001565aabbcc.cfg status={phone_status} latency_us="
                )),
                "{}",
                requests[1]
            );
        } else {
            for (line, (path, status)) in requests.iter().zip([
                ("/api/v1/models", "200"),
                ("/001565aabbcc.cfg", phone_status.as_str()),
            ]) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["fields"]["message"], "request", "{line}");
                assert_eq!(v["fields"]["path"], path, "{line}");
                assert_eq!(v["fields"]["status"].to_string(), status, "{line}");
            }
        }
        for secret in [token, "NOT-A-LOGGED-SECRET"] {
            assert!(
                !err.contains(secret),
                "{format}: a secret in the log:\n{err}"
            );
        }
    }
}
