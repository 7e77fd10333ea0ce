//! Admin token and phone basic-auth checking: hashed secrets, constant-time comparison,
//! lenient-but-safe header parsing. Never logs credentials.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Constant-time equality of two secrets (compared as hashes, so lengths do not leak).
/// The only comparison of secret material outside [`matches_hash`]: `tests/secrets.rs`
/// fails if this body stops going through `ct_eq` or if `==` appears on a secret.
pub fn secret_eq(a: &str, b: &str) -> bool {
    hash(a).ct_eq(&hash(b)).into()
}

/// A secret a client presented (a password). It has no `PartialEq`: the only comparison is
/// [`Secret::ct_eq`], so `==` on a secret cannot come back (the assertion below stops the
/// build if an impl appears), and `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

static_assertions::assert_not_impl_any!(
    Secret: PartialEq, PartialEq<str>, PartialEq<String>, PartialEq<&'static str>, PartialOrd
);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Constant-time equality with a plaintext (see [`secret_eq`]).
    pub fn ct_eq(&self, other: &str) -> bool {
        secret_eq(&self.0, other)
    }

    /// Constant-time check against a stored SHA-256 (see [`matches_hash`]).
    pub fn matches_hash(&self, stored: &[u8]) -> bool {
        matches_hash(&self.0, stored)
    }

    /// The value itself, for hashing or a length; never for `==`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Constant-time check of `secret` against a stored hash.
pub fn matches_hash(secret: &str, stored: &[u8]) -> bool {
    stored.len() == 32 && bool::from(hash(secret).ct_eq(stored))
}

/// A random secret of `n` characters from an unambiguous alphabet (CSPRNG).
pub fn random_secret(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let b = rand::random::<u8>() as usize;
        if b < limit {
            out.push(ALPHABET[b % ALPHABET.len()] as char);
        }
    }
    out
}

/// The last `Authorization` header value that passed the server-default check, so the
/// thousands of phones sending that same header skip the base64 decode and the hashing.
/// Compared in constant time; replaced whenever another header passes.
#[derive(Default)]
pub struct HeaderMemo(std::sync::RwLock<Option<Box<[u8]>>>);

impl std::fmt::Debug for HeaderMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderMemo(<redacted>)")
    }
}

impl HeaderMemo {
    /// Whether `header` is byte for byte the remembered one.
    pub fn hit(&self, header: &[u8]) -> bool {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        g.as_deref()
            .is_some_and(|v| v.len() == header.len() && bool::from(v.ct_eq(header)))
    }

    /// Remembers `header` as one that passed.
    pub fn remember(&self, header: &[u8]) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        *g = Some(header.into());
    }
}

/// Credentials from an `Authorization: Basic` header. No `PartialEq`: the password is a
/// [`Secret`], compared only through [`BasicCredentials::matches`].
#[derive(Clone)]
pub struct BasicCredentials {
    /// User.
    pub user: String,
    /// Password.
    pub password: Secret,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl BasicCredentials {
    /// Parses a Basic header: scheme case-insensitive, any run of spaces after it (RFC 7235
    /// allows it; http-auth-basic does not), UTF-8, non-empty user and password.
    pub fn parse(header: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(header).ok()?;
        let (scheme, rest) = s.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        // One base64 token: the decoder refuses an empty one and one with a space inside
        // (tested in `basic_variants`).
        let token = rest.trim_start_matches(' ').trim_end();
        let c = http_auth_basic::Credentials::decode(token.to_string()).ok()?;
        if c.user_id.is_empty() || c.password.is_empty() {
            return None;
        }
        Some(BasicCredentials {
            user: c.user_id,
            password: Secret::new(c.password),
        })
    }

    /// Constant-time check against a plaintext pair (both halves always compared).
    pub fn matches(&self, user: &str, password: &str) -> bool {
        secret_eq(&self.user, user) & self.password.ct_eq(password)
    }
}

/// Extracts the token of an `Authorization: Bearer` header.
pub fn bearer(header: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim();
    if t.is_empty() { None } else { Some(t) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The user and whether the password is `password` (constant-time), for assertions.
    fn parsed(header: &[u8], password: &str) -> Option<(String, bool)> {
        BasicCredentials::parse(header).map(|c| (c.user.clone(), c.password.ct_eq(password)))
    }

    #[test]
    fn basic_variants() {
        let ok = Some(("phone".to_string(), true));
        assert_eq!(parsed(b"Basic cGhvbmU6c2VjcmV0", "secret"), ok);
        assert_eq!(parsed(b"basic cGhvbmU6c2VjcmV0", "secret"), ok);
        assert_eq!(parsed(b"Basic  cGhvbmU6c2VjcmV0", "secret"), ok);
        assert_eq!(
            parsed(b"Basic cGhvbmU6c2VjcmV0", "secreT"),
            Some(("phone".to_string(), false))
        );
        assert!(
            BasicCredentials::parse(b"Basic cGhvbmU6").is_none(),
            "empty password"
        );
        assert!(
            BasicCredentials::parse(b"Basic OnNlY3JldA==").is_none(),
            "empty user"
        );
        assert!(BasicCredentials::parse(b"Bearer abc").is_none());
        assert!(BasicCredentials::parse(b"Basic").is_none());
        assert!(BasicCredentials::parse(b"Basic \xff\xfe").is_none());
        assert!(
            BasicCredentials::parse(b"Basic cGhvbmU6c2VjcmV0=").is_none(),
            "bad padding"
        );
        let c = BasicCredentials::parse(b"Basic dXNlcjpwYTpzcw==").unwrap();
        assert_eq!(c.password.expose(), "pa:ss");
        assert!(c.matches("user", "pa:ss") && !c.matches("user", "pa"));
        assert!(!c.matches("usr", "pa:ss") && !c.matches("user", "pa:sS"));
        assert_eq!(
            format!("{c:?}"),
            r#"BasicCredentials { user: "user", password: "<redacted>" }"#
        );
        // One token after the scheme: a space inside it, or none at all, is not Basic.
        for bad in [
            &b"Basic cGhv bmU6c2VjcmV0"[..],
            b"Basic cGhvbmU6c2VjcmV0 x",
            b"Basic ",
            b"Basic  ",
        ] {
            assert!(
                BasicCredentials::parse(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(format!("{:?}", c.password), "Secret(<redacted>)");
    }

    #[test]
    fn secrets_compare_by_value_only() {
        let s = Secret::new("hunter2");
        assert!(s.ct_eq("hunter2"));
        for other in ["", "hunter", "hunter22", "Hunter2", "hunter2\0"] {
            assert!(!s.ct_eq(other), "{other:?}");
        }
        assert!(s.matches_hash(&hash("hunter2")) && !s.matches_hash(&hash("hunter3")));
        assert!(
            !s.matches_hash(&hash("hunter2")[..31]),
            "a truncated hash never matches"
        );
        assert!(secret_eq("", "") && !secret_eq("a", "") && !secret_eq("", "a"));
    }

    /// Every character of the alphabet comes out, equally often: 570,000 draws, 10,000
    /// expected per character (a standard deviation of 1 %); a biased rejection bound
    /// makes some characters 25 % more frequent, far past the 15 % allowed here.
    #[test]
    fn random_secrets_use_the_whole_alphabet_evenly() {
        const ALPHABET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..10_000 {
            let s = random_secret(57);
            assert_eq!(s.len(), 57);
            for c in s.chars() {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        let seen: String = counts.keys().collect();
        let mut want: Vec<char> = ALPHABET.chars().collect();
        want.sort_unstable();
        assert_eq!(seen, want.into_iter().collect::<String>());
        let (min, max) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(max * 100 < min * 115, "uneven: {min} to {max}: {counts:?}");
    }

    #[test]
    fn header_memo_matches_exact_bytes_only() {
        let m = HeaderMemo::default();
        assert!(!m.hit(b"Basic abc"));
        m.remember(b"Basic abc");
        assert!(m.hit(b"Basic abc"));
        assert!(!m.hit(b"Basic abd"));
        assert!(!m.hit(b"Basic abcd"));
        assert!(!m.hit(b""));
        assert_eq!(format!("{m:?}"), "HeaderMemo(<redacted>)");
    }

    #[test]
    fn tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert!(matches_hash("abc", &hash("abc")));
        assert!(!matches_hash("abd", &hash("abc")));
        assert_eq!(random_secret(16).len(), 16);
    }

    proptest! {
        #[test]
        fn parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = BasicCredentials::parse(&b);
            let _ = bearer(&b);
        }
    }
}
