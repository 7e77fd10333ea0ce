//! Turns built-in defaults, `autoprov.toml`, `AUTOPROV_*` env vars and CLI flags (in that
//! rising precedence) into one validated `Config`, with errors naming the key. Reads no
//! environment itself: clap does that for flags, and the file text is passed in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::args::Cli;
use crate::model::settings::{self, Settings};

/// `autoprov.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<String>,
    /// Data folder.
    pub data: Option<PathBuf>,
    /// Models folder.
    pub models: Option<PathBuf>,
    /// Templates folder.
    pub templates: Option<PathBuf>,
    /// Log format.
    pub log_format: Option<String>,
    /// sled page cache in MiB.
    pub store_cache_mb: Option<u64>,
    /// Memory tier of the fetch path in MiB (packed files and per-phone gates).
    pub memory_cache_mb: Option<u64>,
    /// Header-read timeout in seconds.
    pub header_read_timeout_secs: Option<u64>,
    /// Request timeout in seconds.
    pub request_timeout_secs: Option<u64>,
    /// Connection cap.
    pub max_connections: Option<u64>,
    /// Request-serving threads.
    pub workers: Option<u64>,
    /// Server-wide defaults (settings layer).
    pub defaults: Option<toml::Table>,
    /// Phone-path security: allow-lists, bootstrap credential, rotation, throttling.
    pub security: Option<crate::guard::SecurityFile>,
    /// Bearer token for `GET /metrics`.
    pub metrics_token: Option<String>,
    /// Firmware folder.
    pub firmware: Option<PathBuf>,
    /// Base URL phones reach the server at.
    pub public_url: Option<String>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// HTTPS listen address.
    pub https_listen: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data folder.
    pub data: PathBuf,
    /// Models folder.
    pub models: PathBuf,
    /// Templates folder.
    pub templates: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// sled page cache in bytes.
    pub store_cache_bytes: u64,
    /// Memory tier of the fetch path in bytes: two thirds for packed files, one third for
    /// the per-phone gates.
    pub memory_cache_bytes: u64,
    /// Server-wide defaults.
    pub defaults: Settings,
    /// Phone-path security.
    pub security: crate::guard::Security,
    /// Connection and request limits.
    pub limits: Limits,
    /// Threads serving requests (1: a current-thread runtime, see `main.rs`).
    pub workers: usize,
    /// Bearer token `GET /metrics` requires (open when `None`).
    pub metrics_token: Option<String>,
    /// Firmware folder (served at `/firmware/{*path}`).
    pub firmware: PathBuf,
    /// Base URL phones reach the server at, without a trailing `/`.
    pub public_url: Option<String>,
    /// Whether the plain-HTTP listener runs (`listen = "off"` turns it off: HTTPS alone).
    pub listen_http: bool,
    /// HTTPS, when a certificate and key are configured.
    pub tls: Option<TlsConfig>,
}

/// HTTPS settings (the files are read by [`crate::tls::acceptor`] at startup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
}

/// The server-layer setting `public-url` fills (defined with the other setting keys).
pub use crate::model::settings::FIRMWARE_URL as FIRMWARE_URL_SETTING;

/// Connection and request limits (enforced in [`crate::server`] and the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to receive a request's line and headers (slowloris guard; also the keep-alive
    /// idle time).
    pub header_read_timeout: Duration,
    /// Time for a whole request, body read included (408 past it).
    pub request_timeout: Duration,
    /// Open connections at most (503 past it).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

impl Limits {
    /// Flag/env over file over default, each checked against its range.
    fn resolve(cli: &Cli, fc: &FileConfig) -> Result<Self, ConfigError> {
        let d = Limits::default();
        Ok(Limits {
            header_read_timeout: Duration::from_secs(pick(
                "header-read-timeout-secs",
                cli.header_read_timeout_secs,
                fc.header_read_timeout_secs,
                d.header_read_timeout.as_secs(),
                3600,
            )?),
            request_timeout: Duration::from_secs(pick(
                "request-timeout-secs",
                cli.request_timeout_secs,
                fc.request_timeout_secs,
                d.request_timeout.as_secs(),
                3600,
            )?),
            max_connections: pick(
                "max-connections",
                cli.max_connections,
                fc.max_connections,
                d.max_connections as u64,
                1 << 20,
            )? as usize,
        })
    }
}

/// Flag/env over file over default, from 1 to `max`; a value out of range names `key`.
fn pick(
    key: &str,
    flag: Option<u64>,
    file: Option<u64>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = flag.or(file).unwrap_or(default);
    if v == 0 || v > max {
        return Err(ConfigError::Value {
            key: key.into(),
            message: format!("{v} is not from 1 to {max}"),
        });
    }
    Ok(v)
}

/// A configuration error naming the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid (unknown key, wrong type).
    #[error("config file {path}: {message}")]
    File {
        /// Path.
        path: PathBuf,
        /// What toml said, naming the key.
        message: String,
    },
    /// A value is invalid.
    #[error("{key}: {message}")]
    Value {
        /// The key, with its source (`--listen`, `autoprov.toml: defaults.x`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Defaults for tests: listen on 127.0.0.1:0, folders as given.
    pub fn for_test(data: PathBuf, models: PathBuf, templates: PathBuf) -> Self {
        let firmware = data.with_file_name("firmware");
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data,
            models,
            templates,
            log_format: LogFormat::Text,
            store_cache_bytes: 4 << 20,
            memory_cache_bytes: 64 << 20,
            defaults: Settings::new(),
            security: crate::guard::Security::default(),
            limits: Limits::default(),
            workers: 1,
            metrics_token: None,
            firmware,
            public_url: None,
            listen_http: true,
            tls: None,
        }
    }

    /// Resolves the CLI (flags + env, already merged by clap) over the file text.
    pub fn resolve(cli: &Cli, file: Option<(PathBuf, String)>) -> Result<Self, ConfigError> {
        let (path, fc) = parse_file(file)?;
        let limits = Limits::resolve(cli, &fc)?;
        let (listen, listen_http) = resolve_listen(cli, &fc)?;
        let tls = resolve_tls(cli, &fc, listen_http)?;
        let public_url = resolve_public_url(cli, &fc)?;
        let log_format = resolve_log_format(cli.log_format.clone().or(fc.log_format))?;
        let defaults = resolve_defaults(
            &path,
            fc.defaults.unwrap_or_default(),
            public_url.as_deref(),
        )?;
        let security = fc
            .security
            .unwrap_or_default()
            .resolve()
            .map_err(|(key, message)| ConfigError::Value {
                key: format!("{}: {key}", path.display()),
                message,
            })?;
        let mb = fc.store_cache_mb.unwrap_or(4);
        if mb == 0 || mb > 65536 {
            return Err(ConfigError::Value {
                key: "store-cache-mb".into(),
                message: "must be from 1 to 65536".into(),
            });
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let workers = pick("workers", cli.workers, fc.workers, cpus.min(1024), 1024)?;
        let memory_mb = fc.memory_cache_mb.unwrap_or(64);
        if !(2..=65536).contains(&memory_mb) {
            return Err(ConfigError::Value {
                key: "memory-cache-mb".into(),
                message: "must be from 2 to 65536".into(),
            });
        }
        Ok(Config {
            listen,
            data: cli
                .data
                .clone()
                .or(fc.data)
                .unwrap_or_else(|| "./data".into()),
            models: cli
                .models
                .clone()
                .or(fc.models)
                .unwrap_or_else(|| "./models".into()),
            templates: cli
                .templates
                .clone()
                .or(fc.templates)
                .unwrap_or_else(|| "./templates".into()),
            log_format,
            store_cache_bytes: mb << 20,
            memory_cache_bytes: memory_mb << 20,
            defaults,
            security,
            limits,
            workers: workers as usize,
            metrics_token: resolve_metrics_token(cli.metrics_token.clone().or(fc.metrics_token))?,
            firmware: cli
                .firmware
                .clone()
                .or(fc.firmware)
                .unwrap_or_else(|| "./firmware".into()),
            public_url,
            listen_http,
            tls,
        })
    }

    /// Reads the config file named by `--config`, else `./autoprov.toml` if it exists.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(p) => Some(p.clone()),
            None => {
                let p = PathBuf::from("autoprov.toml");
                p.exists().then_some(p)
            }
        };
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some((path, text))
            }
            None => None,
        };
        Self::resolve(cli, file)
    }
}

/// The config file's text parsed (unknown keys and wrong types refused, naming the file),
/// with the path its errors name; no file is an empty one named `autoprov.toml`.
fn parse_file(file: Option<(PathBuf, String)>) -> Result<(PathBuf, FileConfig), ConfigError> {
    match file {
        Some((path, text)) => {
            let fc: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.message().to_string(),
            })?;
            Ok((path, fc))
        }
        None => Ok((PathBuf::from("autoprov.toml"), FileConfig::default())),
    }
}

/// `listen`: the plain-HTTP address and whether that listener runs (`off` turns it off,
/// the address then being the unused default).
fn resolve_listen(cli: &Cli, fc: &FileConfig) -> Result<(SocketAddr, bool), ConfigError> {
    let listen_raw = cli
        .listen
        .clone()
        .or(fc.listen.clone())
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    let listen_http = listen_raw != "off";
    let listen = if listen_http {
        listen_raw.parse::<SocketAddr>()
    } else {
        "0.0.0.0:8080".parse::<SocketAddr>()
    }
    .map_err(|_| ConfigError::Value {
        key: "listen".into(),
        message: format!("{listen_raw:?} is not an address like 0.0.0.0:8080, or off"),
    })?;
    Ok((listen, listen_http))
}

/// `log-format`: `text` (the default) or `json`.
fn resolve_log_format(raw: Option<String>) -> Result<LogFormat, ConfigError> {
    match raw.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::Value {
            key: "log-format".into(),
            message: format!("{other:?} is not text or json"),
        }),
    }
}

/// The file's `[defaults]`: each key a valid setting name, each value a string or an
/// integer the setting accepts (errors name `path: defaults.key`). `public_url` fills the
/// firmware URL setting unless the table sets it.
fn resolve_defaults(
    path: &std::path::Path,
    table: toml::Table,
    public_url: Option<&str>,
) -> Result<Settings, ConfigError> {
    let mut defaults = Settings::new();
    for (k, v) in table {
        let key = format!("{}: defaults.{k}", path.display());
        if !settings::valid_key(&k) {
            return Err(ConfigError::Value {
                key,
                message: "is not a valid setting name".into(),
            });
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            _ => {
                return Err(ConfigError::Value {
                    key,
                    message: "must be a string or an integer".into(),
                });
            }
        };
        settings::check_value(&k, &s).map_err(|message| ConfigError::Value { key, message })?;
        defaults.insert(k, s);
    }
    if let Some(u) = public_url
        && !defaults.contains_key(FIRMWARE_URL_SETTING)
    {
        defaults.insert(FIRMWARE_URL_SETTING.into(), format!("{u}/firmware"));
    }
    Ok(defaults)
}

/// `metrics-token`: an empty (or blank) token is refused rather than taken as open metrics.
fn resolve_metrics_token(token: Option<String>) -> Result<Option<String>, ConfigError> {
    match token {
        Some(t) if t.trim().is_empty() => Err(ConfigError::Value {
            key: "metrics-token".into(),
            message: "is empty; leave it out for open metrics".into(),
        }),
        t => Ok(t),
    }
}

/// `tls-cert` + `tls-key` (both or neither) and `https-listen`; `listen = "off"` needs TLS.
fn resolve_tls(cli: &Cli, fc: &FileConfig, http: bool) -> Result<Option<TlsConfig>, ConfigError> {
    let cert = cli.tls_cert.clone().or(fc.tls_cert.clone());
    let key = cli.tls_key.clone().or(fc.tls_key.clone());
    let https_listen = cli.https_listen.clone().or(fc.https_listen.clone());
    let value = |key: &str, message: &str| ConfigError::Value {
        key: key.into(),
        message: message.into(),
    };
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => return Err(value("tls-key", "is needed with tls-cert")),
        (None, Some(_)) => return Err(value("tls-cert", "is needed with tls-key")),
        (None, None) => {
            if https_listen.is_some() {
                return Err(value("https-listen", "needs tls-cert and tls-key"));
            }
            if !http {
                return Err(value(
                    "listen",
                    "is off, but no HTTPS is configured (tls-cert, tls-key)",
                ));
            }
            return Ok(None);
        }
    };
    let raw = https_listen.unwrap_or_else(|| "0.0.0.0:8443".into());
    let listen = raw.parse::<SocketAddr>().map_err(|_| ConfigError::Value {
        key: "https-listen".into(),
        message: format!("{raw:?} is not an address like 0.0.0.0:8443"),
    })?;
    Ok(Some(TlsConfig { cert, key, listen }))
}

/// `public-url`: `http(s)://host[:port][/prefix]`, kept without a trailing `/`.
fn resolve_public_url(cli: &Cli, fc: &FileConfig) -> Result<Option<String>, ConfigError> {
    let Some(raw) = cli.public_url.clone().or(fc.public_url.clone()) else {
        return Ok(None);
    };
    let url = raw.trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', '"', '<', '>', '\\'])
    }) && url.len() <= 512
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if !ok {
        return Err(ConfigError::Value {
            key: "public-url".into(),
            message: format!("{raw:?} is not a URL like http://prov.example.com:8080"),
        });
    }
    Ok(Some(url.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Command, TokenCommand};
    use clap::CommandFactory;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["autoprov"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    #[test]
    fn clap_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(&cli(&[]), None).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.data, PathBuf::from("./data"));
        assert_eq!(c.models, PathBuf::from("./models"));
        assert_eq!(c.templates, PathBuf::from("./templates"));
    }

    #[test]
    fn flag_beats_file() {
        let file = Some((
            "a.toml".into(),
            "listen = \"127.0.0.1:9000\"\ndata = \"/x\"".to_string(),
        ));
        let c = Config::resolve(&cli(&["--listen", "127.0.0.1:9001"]), file).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.data, PathBuf::from("/x"));
    }

    #[test]
    fn unknown_key_is_named() {
        let file = Some(("a.toml".into(), "lisen = \"x\"".to_string()));
        let e = Config::resolve(&cli(&[]), file).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::resolve(&cli(&["--listen", "nope"]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let file = Some((
            "a.toml".into(),
            "[defaults]\ndevice-provisioning-sip-transport-protocol = \"sctp\"".to_string(),
        ));
        let e = Config::resolve(&cli(&[]), file).unwrap_err().to_string();
        assert!(
            e.contains("defaults.device-provisioning-sip-transport-protocol"),
            "{e}"
        );
    }

    #[test]
    fn security_table() {
        let file = Some((
            "a.toml".into(),
            "[security]\nallowed-cidrs = [\"10.0.0.0/8\"]\nauth-failures-per-ip = 5".to_string(),
        ));
        let c = Config::resolve(&cli(&[]), file).unwrap();
        assert_eq!(c.security.allowed_cidrs.len(), 1);
        assert_eq!(c.security.failures_per_ip, 5);
        let file = Some((
            "a.toml".into(),
            "[security]\nallowed-cidrs = [\"10.0.0.0/33\"]".to_string(),
        ));
        let e = Config::resolve(&cli(&[]), file).unwrap_err().to_string();
        assert!(e.contains("security.allowed-cidrs[0]"), "{e}");
        let file = Some(("a.toml".into(), "[security]\nallowed = 1".to_string()));
        let e = Config::resolve(&cli(&[]), file).unwrap_err().to_string();
        assert!(e.contains("allowed"), "{e}");
    }

    #[test]
    fn token_subcommands_take_the_global_data_flag() {
        let c = cli(&["token", "create", "--domain", "a.example", "--data", "/d"]);
        assert!(matches!(
            &c.command,
            Some(Command::Token(TokenCommand::Create { domain })) if domain == "a.example"
        ));
        assert_eq!(Config::resolve(&c, None).unwrap().data, PathBuf::from("/d"));
        assert!(matches!(
            cli(&["--data", "/d", "token", "revoke", "tok_x"]).command,
            Some(Command::Token(TokenCommand::Revoke { id })) if id == "tok_x"
        ));
    }

    #[test]
    fn limits_flow_file_then_flag() {
        let c = Config::resolve(&cli(&[]), None).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        let file = Some((
            "a.toml".into(),
            "header-read-timeout-secs = 5\nrequest-timeout-secs = 20\nmax-connections = 100"
                .to_string(),
        ));
        let c = Config::resolve(&cli(&["--max-connections", "7"]), file).unwrap();
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.request_timeout, Duration::from_secs(20));
        assert_eq!(c.limits.max_connections, 7);
        let e = Config::resolve(&cli(&["--header-read-timeout-secs", "0"]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("header-read-timeout-secs"), "{e}");
    }

    #[test]
    fn workers_default_to_the_cpus_and_flow_file_then_flag() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Config::resolve(&cli(&[]), None).unwrap().workers, cpus);
        let file = || Some(("a.toml".into(), "workers = 3".to_string()));
        assert_eq!(Config::resolve(&cli(&[]), file()).unwrap().workers, 3);
        let c = Config::resolve(&cli(&["--workers", "1"]), file()).unwrap();
        assert_eq!(c.workers, 1);
        for bad in ["0", "1025"] {
            let e = Config::resolve(&cli(&["--workers", bad]), None)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("workers: ") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn firmware_public_url_and_tls() {
        let c = Config::resolve(&cli(&[]), None).unwrap();
        assert_eq!(c.firmware, PathBuf::from("./firmware"));
        assert!(c.listen_http && c.tls.is_none() && c.public_url.is_none());
        assert!(!c.defaults.contains_key(FIRMWARE_URL_SETTING));
        let file = Some((
            "a.toml".into(),
            "firmware = \"/srv/fw\"\npublic-url = \"http://prov.example.com:8080/\"\n\
             tls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\nlisten = \"off\""
                .to_string(),
        ));
        let c = Config::resolve(&cli(&["--firmware", "/x/fw"]), file).unwrap();
        assert_eq!(c.firmware, PathBuf::from("/x/fw"));
        assert_eq!(
            c.public_url.as_deref(),
            Some("http://prov.example.com:8080")
        );
        assert_eq!(
            c.defaults[FIRMWARE_URL_SETTING],
            "http://prov.example.com:8080/firmware"
        );
        assert!(!c.listen_http);
        let tls = c.tls.unwrap();
        assert_eq!(tls.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(tls.cert, PathBuf::from("/c.pem"));
        // An explicit [defaults] firmware-url wins over public-url.
        let file = Some((
            "a.toml".into(),
            "public-url = \"https://p.example\"\n[defaults]\nfirmware-url = \"http://cdn.example/fw\""
                .to_string(),
        ));
        let c = Config::resolve(&cli(&[]), file).unwrap();
        assert_eq!(c.defaults[FIRMWARE_URL_SETTING], "http://cdn.example/fw");
        for (args, key) in [
            (&["--tls-cert", "/c.pem"][..], "tls-key"),
            (&["--tls-key", "/k.pem"][..], "tls-cert"),
            (&["--https-listen", "0.0.0.0:1"][..], "https-listen"),
            (&["--listen", "off"][..], "listen"),
            (&["--public-url", "ftp://x"][..], "public-url"),
            (&["--public-url", "http://a b"][..], "public-url"),
            (
                &["--tls-cert", "/c", "--tls-key", "/k", "--https-listen", "x"][..],
                "https-listen",
            ),
        ] {
            let e = Config::resolve(&cli(args), None).unwrap_err().to_string();
            assert!(e.starts_with(key), "{args:?}: {e}");
        }
    }

    #[test]
    fn serve_is_a_subcommand() {
        assert!(matches!(
            cli(&["serve", "--listen", "127.0.0.1:1"]).command,
            Some(Command::Serve)
        ));
    }

    #[test]
    fn metrics_token_flag_beats_file() {
        let file = || Some(("a.toml".into(), "metrics-token = \"from-file\"".to_string()));
        let c = Config::resolve(&cli(&[]), file()).unwrap();
        assert_eq!(c.metrics_token.as_deref(), Some("from-file"));
        let c = Config::resolve(&cli(&["--metrics-token", "from-flag"]), file()).unwrap();
        assert_eq!(c.metrics_token.as_deref(), Some("from-flag"));
        let blank = Some(("a.toml".into(), "metrics-token = \" \"".to_string()));
        let e = Config::resolve(&cli(&[]), blank).unwrap_err();
        assert!(e.to_string().contains("metrics-token"), "{e}");
    }
}
