//! The `Authorization` header parsers on arbitrary bytes (a header value may hold any byte
//! but CR/LF/NUL; the parsers get whatever hyper accepted):
//! `autoprov::auth::BasicCredentials::parse`, `autoprov::auth::bearer` and the Digest
//! parser and checks (`autoprov::digest::DigestResponse::parse`, `verify`, `Nonces::check`).
#![no_main]

use autoprov::auth::{self, BasicCredentials};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = BasicCredentials::parse(data) {
        // Documented: non-empty user and password; the user ends at the first `:`.
        let password = c.password.expose();
        assert!(!c.user.is_empty() && !password.is_empty());
        assert!(!c.user.contains(':'));
        assert!(c.matches(&c.user, password));
        // Re-encoding gives a header that parses to the same credentials.
        let again = http_auth_basic::Credentials::new(&c.user, password).as_http_header();
        let back = BasicCredentials::parse(again.as_bytes()).expect("re-encoded header parses");
        assert!(back.user == c.user && back.matches(&c.user, password));
        // The scheme is the first word, case-insensitively.
        assert!(data.len() > 6 && data[..6].eq_ignore_ascii_case(b"basic "));
    }

    if let Some(t) = auth::bearer(data) {
        assert!(!t.is_empty());
        assert_eq!(t, t.trim());
        assert!(data.len() > 7 && data[..7].eq_ignore_ascii_case(b"bearer "));
        assert!(std::str::from_utf8(data).is_ok_and(|s| s.contains(t)));
    }

    if let Some(d) = autoprov::digest::DigestResponse::parse(data) {
        // Required parameters are present and non-empty; the scheme is the first word after
        // optional leading whitespace (accepted, as hyper may hand it over), followed by
        // whitespace.
        assert!(!d.username().is_empty() && !d.nonce().is_empty() && !d.uri().is_empty());
        let start = data.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(0);
        let rest = &data[start..];
        assert!(rest.len() > 7 && rest[..6].eq_ignore_ascii_case(b"digest"));
        assert!(matches!(rest[6], b' ' | b'\t'));
        // Checking never panics, whatever was parsed.
        let _ = d.verify("GET", "password");
        let _ = d.verify_ha1("GET", "00");
        let nonces = autoprov::digest::Nonces::new([7; 32], std::time::Duration::from_secs(300));
        let _ = nonces.check(d.nonce(), d.realm(), std::time::SystemTime::now());
    }
});
