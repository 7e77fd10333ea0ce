//! HTTPS with a certificate made in the test (rcgen): a phone file and an admin route over
//! TLS, HTTPS alone and beside HTTP, the handshake timeout and connection cap, the binary
//! with `--listen off`, and startup errors naming the bad certificate or key file.
//!
//! The client is hyper over tokio-rustls (ring), trusting only the test certificate.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use autoprov::config::{Config, TlsConfig};
use common::repo;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn make_cert(dir: &Path) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Cert {
        cert,
        key,
        der: ck.cert.der().clone(),
    }
}

struct Running {
    https: SocketAddr,
    http: Option<String>,
    token: String,
    prov: (String, String),
    cert: CertificateDer<'static>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// The server in-process, as `main` runs it: HTTPS, and plain HTTP when `http`.
async fn start(http: bool, tweak: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let c = make_cert(dir.path());
    let mut config = Config::for_test(dir.path().join("data"), repo("models"), repo("templates"));
    config.listen_http = http;
    config.tls = Some(TlsConfig {
        cert: c.cert.clone(),
        key: c.key.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
    });
    tweak(&mut config);
    let acceptor = autoprov::tls::acceptor(config.tls.as_ref().unwrap()).unwrap();
    let (state, startup) = autoprov::init(&config).unwrap();
    let mut listeners = autoprov::Listeners::default();
    let mut http_url = None;
    if http {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        http_url = Some(format!("http://{}", l.local_addr().unwrap()));
        listeners.http = Some(l);
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = l.local_addr().unwrap();
    listeners.https = Some((l, acceptor));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(autoprov::serve_listeners(listeners, state, async move {
        let _ = rx.await;
    }));
    Running {
        https,
        http: http_url,
        token: startup.new_admin_token.unwrap(),
        prov: startup.new_provisioning_credentials.unwrap(),
        cert: c.der,
        _shutdown: tx,
        _dir: dir,
    }
}

fn connector(root: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A GET over TLS (server name `name`), trusting only `root`.
async fn https_get(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
    path: &str,
    auth: Option<String>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector(root)
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", name);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = sender
        .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, body))
}

fn basic(u: &str, p: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

#[tokio::test]
async fn https_alone_serves_phones_and_admins() {
    let s = start(false, |_| {}).await;
    // A phone's common file with the server-default credentials.
    let (status, headers, body) = https_get(
        s.https,
        &s.cert,
        "localhost",
        "/y000000000000.boot",
        Some(basic(&s.prov.0, &s.prov.1)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains_key("etag"));
    assert!(!body.is_empty());
    // Without credentials: the same challenge as over HTTP.
    let (status, headers, _) =
        https_get(s.https, &s.cert, "127.0.0.1", "/y000000000000.boot", None)
            .await
            .unwrap();
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Basic realm=\"autoprov\"");
    // An admin route, by IP address name this time.
    let (status, _, body) = https_get(
        s.https,
        &s.cert,
        "127.0.0.1",
        "/api/v1/models",
        Some(format!("Bearer {}", s.token)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v.to_string().contains("yealink-t46s"), "{v}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let s = start(false, |_| {}).await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let e = https_get(
        s.https,
        other.cert.der(),
        "localhost",
        "/api/v1/models",
        None,
    )
    .await
    .unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // The server is fine afterwards.
    let (status, _, _) = https_get(s.https, &s.cert, "localhost", "/api/v1/models", None)
        .await
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn http_and_https_together() {
    let s = start(true, |_| {}).await;
    let http = s.http.clone().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{http}/api/v1/models"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let plain = r.bytes().await.unwrap();
    let (status, _, body) = https_get(
        s.https,
        &s.cert,
        "localhost",
        "/api/v1/models",
        Some(format!("Bearer {}", s.token)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, plain, "the same app on both");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/models", s.https))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let s = start(false, |c| {
        c.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(s.https).await.unwrap();
    let mut buf = [0u8; 16];
    // Generous bound: the server closes after about 1 s.
    let t0 = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf)).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "not closed before the timeout"
    );
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the server: {read:?}"
    );
    let (status, _, _) = https_get(s.https, &s.cert, "localhost", "/api/v1/models", None)
        .await
        .unwrap();
    assert_eq!(status, 401, "still serving");
}

#[tokio::test]
async fn tls_connections_count_against_the_cap() {
    let s = start(true, |c| c.limits.max_connections = 1).await;
    // One TLS connection holds the only slot.
    let tcp = tokio::net::TcpStream::connect(s.https).await.unwrap();
    let tls = connector(&s.cert)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // A second TLS connection is closed without a handshake.
    let tcp = tokio::net::TcpStream::connect(s.https).await.unwrap();
    let second = connector(&s.cert)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(second.is_err(), "past the cap");
    // A plain connection past the shared cap gets the 503.
    let http = s.http.clone().unwrap();
    let mut plain = tokio::net::TcpStream::connect(http.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    drop(tls);
    // The slot is free again once the first connection is gone.
    let mut ok = false;
    for _ in 0..100 {
        if let Ok((401, _, _)) =
            https_get(s.https, &s.cert, "localhost", "/api/v1/models", None).await
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "served again after the first connection closed");
}

#[test]
fn startup_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = make_cert(dir.path());
    let missing = dir.path().join("nope/cert.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let cfg = |cert: &Path, key: &Path| TlsConfig {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    for (cert, key, named) in [
        (&missing, &c.key, &missing),
        (&c.cert, &missing, &missing),
        (&garbage, &c.key, &garbage),
        (&c.cert, &garbage, &garbage),
        (&c.key, &c.key, &c.key),
        (&c.cert, &c.cert, &c.cert),
        (&c.cert, &other_key, &other_key),
    ] {
        let e = match autoprov::tls::acceptor(&cfg(cert, key)) {
            Ok(_) => panic!("{} / {} accepted", cert.display(), key.display()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&named.display().to_string()), "{e}");
    }
    assert!(autoprov::tls::acceptor(&cfg(&c.cert, &c.key)).is_ok());
}

#[test]
fn binary_with_listen_off_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let c = make_cert(dir.path());
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(["--listen", "off", "--https-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&c.cert)
        .arg("--tls-key")
        .arg(&c.key)
        .arg("--data")
        .arg(&data)
        .arg("--models")
        .arg(repo("models"))
        .arg("--templates")
        .arg(repo("templates"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(!first.contains("http://"), "{first}");
    let addr: SocketAddr = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("https://"))
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(https_get(
        addr,
        &c.der,
        "localhost",
        "/api/v1/models",
        Some(format!("Bearer {}", token.trim())),
    ));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.unwrap().0, 200);
}

#[test]
fn binary_refuses_a_bad_certificate_path_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = make_cert(dir.path());
    let missing = dir.path().join("missing-cert.pem");
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(["--listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&c.key)
        .arg("--data")
        .arg(&data)
        .arg("--models")
        .arg(repo("models"))
        .arg("--templates")
        .arg(repo("templates"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(
        !data.exists(),
        "nothing created before the certificate is checked"
    );
    // Only a certificate, no key: a config error naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("--tls-cert")
        .arg(&c.cert)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls-key"), "{err}");
}
