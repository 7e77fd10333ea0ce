//! HTTPS: the rustls server configuration (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by
//! ALPN) from the PEM files named by `tls-cert` and `tls-key`. Read once at startup; every
//! error names the file at fault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why HTTPS cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{path}: not a PEM {expected}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate chain` or `private key`.
        expected: &'static str,
        /// The parser's reason.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no PEM item of the expected kind.
    #[error("{path}: no {expected} in the file")]
    Missing {
        /// The file.
        path: PathBuf,
        /// `CERTIFICATE` or `PRIVATE KEY`.
        expected: &'static str,
    },
    /// rustls refused the pair (the key does not match the certificate, unsupported key).
    #[error("certificate {cert} with key {key}")]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn missing(path: &Path, expected: &'static str) -> TlsError {
    TlsError::Missing {
        path: path.to_path_buf(),
        expected,
    }
}

/// The certificate chain in `path` (leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            expected: "certificate chain",
            source,
        })?;
    if certs.is_empty() {
        return Err(missing(path, "CERTIFICATE"));
    }
    Ok(certs)
}

/// The private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => missing(path, "PRIVATE KEY"),
        source => TlsError::Pem {
            path: path.to_path_buf(),
            expected: "private key",
            source,
        },
    })
}

/// The acceptor for `cfg`'s certificate and key.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(&cfg.cert)?;
    let key = load_key(&cfg.key)?;
    let pair = |source| TlsError::Pair {
        cert: cfg.cert.clone(),
        key: cfg.key.clone(),
        source,
    };
    // The provider is chosen here, not process-wide, so nothing else in the process (a
    // dependency enabling aws-lc-rs) can make this ambiguous.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(pair)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
