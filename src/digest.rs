//! HTTP Digest authentication (RFC 7616) for the phone route: MD5 and SHA-256, `qop=auth`
//! only, stateless nonces that expire. Some phones (Gigaset) speak nothing else.
//!
//! # API
//! - [`Nonces`] issues and checks nonces. A nonce is
//!   `base64url(issue time in ms ‖ 8 random bytes ‖ HMAC-SHA256(key, time ‖ random ‖ realm)[..16])`,
//!   so any server holding the key can check any nonce without remembering it.
//!   [`Nonces::check`] says [`NonceState::Fresh`], [`NonceState::Stale`] (ours, but older than
//!   the ttl or dated in the future) or [`NonceState::Invalid`] (forged, mangled, or issued for
//!   another realm).
//! - [`challenge`] builds one `WWW-Authenticate` value; [`challenges`] builds the pair a 401
//!   carries, SHA-256 first and MD5 second (phones take the first algorithm they support).
//! - [`DigestResponse::parse`] reads an `Authorization` value; [`DigestResponse::verify`]
//!   checks it against a password, [`DigestResponse::verify_ha1`] against a stored
//!   [`ha1`] (so a password need not be kept in the clear: store one HA1 per algorithm).
//! - [`ReplayGuard`] (optional) refuses a `(nonce, nc)` pair seen before.
//!
//! Accepted: `algorithm` `MD5` (also when absent) and `SHA-256`, `qop=auth` with `cnonce` and
//! an 8-hex-digit `nc`. Refused (parse gives `None`): the `-sess` variants (never offered),
//! `qop=auth-int`, the RFC 2069 form without `qop`, `userhash=true`, and a `username*`
//! without a plain `username`.
//!
//! # How the route uses it
//! 1. No `Authorization: Digest …` header, or one that does not parse: answer 401 with both
//!    values of [`challenges`]`(realm, &nonces.issue(realm, now), false)`, each added with
//!    `HeaderMap::append` (`insert` would keep only the last), SHA-256 first.
//! 2. Parsed: require `resp.realm() == realm` and `resp.uri()` equal to the request target as
//!    the phone sent it (path and query). A mismatch is refused (401 with a fresh challenge,
//!    or 400).
//! 3. `nonces.check(resp.nonce(), realm, now)`:
//!    - `Invalid`: 401 with a fresh challenge, `stale=false`.
//!    - `Stale`: verify the response anyway. Right password: 401 with a new nonce and
//!      `stale=true`, so the phone retries on its own without asking anyone for the password
//!      (RFC 7616 §3.3: stale only when the response itself was valid). Wrong: `stale=false`.
//!    - `Fresh`: `resp.verify(method, password)`; false gives a fresh 401.
//! 4. Optionally, after a successful verify, [`ReplayGuard::first_use`]`(resp.nonce(),
//!    resp.nc())`; false means a replay: 401 with a new nonce and `stale=true` (the request
//!    was correctly signed, so a real phone just retries).
//!
//! Nothing here logs. [`DigestResponse`]'s `Debug` redacts `response`; [`Nonces`]' redacts
//! the key.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A digest algorithm the server offers and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the default when a response names no algorithm.
    Md5,
    /// `SHA-256`.
    Sha256,
}

/// The algorithms offered in a 401, in the order their challenges should be sent.
pub const OFFERED: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

impl Algorithm {
    /// The name used in `algorithm=`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Length of a digest in bytes.
    const fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha256 => 32,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// H(parts joined by `:`), raw bytes.
    fn h(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// HA1 = H(username:realm:password) as lowercase hex: what [`DigestResponse::verify_ha1`]
/// takes, and what a server may store instead of the password (one per algorithm).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    crate::auth::hex(&algorithm.h(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]))
}

// ---------------------------------------------------------------------------------------
// Nonces

/// What [`Nonces::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceState {
    /// Issued by us for this realm, within the ttl.
    Fresh,
    /// Issued by us for this realm, but older than the ttl (or dated after `now`): answer
    /// with a new nonce and `stale=true` if the response is otherwise right.
    Stale,
    /// Not one of ours: malformed, forged, or issued for another realm.
    Invalid,
}

const NONCE_TIME: usize = 8;
const NONCE_RANDOM: usize = 8;
const NONCE_TAG: usize = 16;
const NONCE_RAW: usize = NONCE_TIME + NONCE_RANDOM + NONCE_TAG;
/// base64url without padding of [`NONCE_RAW`] bytes.
const NONCE_LEN: usize = (NONCE_RAW * 4).div_ceil(3);

/// Issues and checks stateless nonces keyed by a server secret.
#[derive(Clone)]
pub struct Nonces {
    mac: Hmac<Sha256>,
    ttl: Duration,
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("key", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Nonces {
    /// Nonces signed with `key` that stay fresh for `ttl`.
    pub fn new(key: [u8; 32], ttl: Duration) -> Self {
        // HMAC zero-pads a short key to the block size, so keying with the padded block is
        // the same function as keying with `key`, without a fallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        Nonces {
            mac: <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into()),
            ttl,
        }
    }

    fn tag(&self, head: &[u8], realm: &str) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(head);
        m.update(realm.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// A new nonce for `realm`, issued at `now`.
    pub fn issue(&self, realm: &str, now: SystemTime) -> String {
        let mut raw = [0u8; NONCE_RAW];
        raw[..NONCE_TIME].copy_from_slice(&millis(now).to_be_bytes());
        raw[NONCE_TIME..NONCE_TIME + NONCE_RANDOM]
            .copy_from_slice(&rand::random::<u64>().to_ne_bytes());
        let tag = self.tag(&raw[..NONCE_TIME + NONCE_RANDOM], realm);
        raw[NONCE_TIME + NONCE_RANDOM..].copy_from_slice(&tag[..NONCE_TAG]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued by us for `realm`, and whether it is still fresh at `now`.
    pub fn check(&self, nonce: &str, realm: &str, now: SystemTime) -> NonceState {
        if nonce.len() != NONCE_LEN {
            return NonceState::Invalid;
        }
        // The engine refuses padding and non-zero trailing bits, so each nonce has exactly
        // one spelling (the replay guard keys on the string).
        let raw = match URL_SAFE_NO_PAD.decode(nonce) {
            Ok(r) if r.len() == NONCE_RAW => r,
            _ => return NonceState::Invalid,
        };
        let (head, tag) = raw.split_at(NONCE_TIME + NONCE_RANDOM);
        let want = self.tag(head, realm);
        if !bool::from(want[..NONCE_TAG].ct_eq(tag)) {
            return NonceState::Invalid;
        }
        let mut t = [0u8; NONCE_TIME];
        t.copy_from_slice(&head[..NONCE_TIME]);
        let issued = u64::from_be_bytes(t);
        let now = millis(now);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        match now.checked_sub(issued) {
            Some(age) if age <= ttl => NonceState::Fresh,
            _ => NonceState::Stale,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Challenges

/// `s` as an HTTP quoted-string; control characters (never valid in a header) are dropped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `WWW-Authenticate` value:
/// `Digest realm="…", qop="auth", algorithm=SHA-256, nonce="…"`, plus `, stale=true` when
/// `stale`.
pub fn challenge(realm: &str, algorithm: Algorithm, nonce: &str, stale: bool) -> String {
    let mut s = format!(
        "Digest realm={}, qop=\"auth\", algorithm={}, nonce={}",
        quote(realm),
        algorithm.name(),
        quote(nonce)
    );
    if stale {
        s.push_str(", stale=true");
    }
    s
}

/// The `WWW-Authenticate` values of a 401, in [`OFFERED`] order (SHA-256, then MD5), sharing
/// one nonce. Send each as its own header, in this order.
pub fn challenges(realm: &str, nonce: &str, stale: bool) -> [String; 2] {
    OFFERED.map(|a| challenge(realm, a, nonce, stale))
}

// ---------------------------------------------------------------------------------------
// Responses

/// A parsed `Authorization: Digest` value.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestResponse {
    username: String,
    realm: String,
    nonce: String,
    uri: String,
    response: Vec<u8>,
    algorithm: Algorithm,
    cnonce: String,
    nc: String,
    nc_value: u32,
    qop: String,
    opaque: Option<String>,
}

impl fmt::Debug for DigestResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestResponse")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("cnonce", &self.cnonce)
            .field("nc", &self.nc)
            .field("qop", &self.qop)
            .field("opaque", &self.opaque)
            .finish()
    }
}

/// More parameters than any real client sends; bounds the duplicate check.
const MAX_PARAMS: usize = 32;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte cursor over a header value known to be UTF-8. It only stops on ASCII bytes, so
/// every slice it takes is on a char boundary.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A quoted-string (the cursor is on its opening quote), unescaped.
    fn quoted(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek()?;
                    if (e < 0x20 && e != b'\t') || e == 0x7f {
                        return None;
                    }
                    self.i += 1;
                    out.push(e);
                }
                b'\t' | b' '..=0x7e | 0x80..=0xff => out.push(b),
                _ => return None,
            }
        }
        // Only ASCII backslashes were removed, so this is still UTF-8.
        String::from_utf8(out).ok()
    }
}

impl DigestResponse {
    /// Parses an `Authorization` header value. `None` for anything that is not a well-formed
    /// Digest response this server accepts (see the module docs); never panics.
    pub fn parse(header: &[u8]) -> Option<DigestResponse> {
        let s = std::str::from_utf8(header).ok()?;
        let mut c = Cursor { s, i: 0 };
        c.skip_ows();
        if !c.token()?.eq_ignore_ascii_case("digest") || !c.peek().is_some_and(is_ows) {
            return None;
        }
        let mut params: Vec<(String, String)> = Vec::new();
        loop {
            // Empty list elements are allowed (RFC 9110 §5.6.1).
            while c.peek().is_some_and(|b| is_ows(b) || b == b',') {
                c.i += 1;
            }
            if c.peek().is_none() {
                break;
            }
            let name = c.token()?.to_ascii_lowercase();
            c.skip_ows();
            if c.peek() != Some(b'=') {
                return None;
            }
            c.i += 1;
            c.skip_ows();
            let value = if c.peek() == Some(b'"') {
                c.quoted()?
            } else {
                c.token()?.to_string()
            };
            c.skip_ows();
            if c.peek().is_some_and(|b| b != b',') {
                return None;
            }
            if params.len() == MAX_PARAMS || params.iter().any(|(n, _)| *n == name) {
                return None;
            }
            params.push((name, value));
        }
        let mut take = |name: &str| {
            params
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| params.swap_remove(i).1)
        };

        let algorithm = match take("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a)?,
        };
        if take("userhash").is_some_and(|u| !u.eq_ignore_ascii_case("false")) {
            return None;
        }
        let qop = take("qop")?;
        if !qop.eq_ignore_ascii_case("auth") {
            return None;
        }
        let nc = take("nc")?;
        if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let nc_value = u32::from_str_radix(&nc, 16).ok()?;
        let response = from_hex(&take("response")?)?;
        if response.len() != algorithm.digest_len() {
            return None;
        }
        // An empty user, nonce or uri names nothing to check against: malformed, not a
        // failed login.
        let username = take("username").filter(|v| !v.is_empty())?;
        let nonce = take("nonce").filter(|v| !v.is_empty())?;
        let uri = take("uri").filter(|v| !v.is_empty())?;
        Some(DigestResponse {
            username,
            realm: take("realm")?,
            nonce,
            uri,
            cnonce: take("cnonce")?,
            opaque: take("opaque"),
            response,
            algorithm,
            nc,
            nc_value,
            qop,
        })
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The realm the client answered for (must equal ours).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The nonce the client answered (check it with [`Nonces::check`]).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The `uri` parameter (must equal the request target).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The algorithm used.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The nonce count.
    pub fn nc(&self) -> u32 {
        self.nc_value
    }

    /// The client nonce.
    pub fn cnonce(&self) -> &str {
        &self.cnonce
    }

    /// The `opaque` parameter, when sent.
    pub fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }

    /// Whether the response is right for `method` and `password`, compared in constant time.
    /// Checks neither nonce, realm nor uri: see the module docs.
    pub fn verify(&self, method: &str, password: &str) -> bool {
        self.verify_ha1(
            method,
            &ha1(self.algorithm, &self.username, &self.realm, password),
        )
    }

    /// Like [`verify`](Self::verify), from a stored [`ha1`] (hex, for this response's
    /// [`algorithm`](Self::algorithm)) instead of the password.
    pub fn verify_ha1(&self, method: &str, ha1: &str) -> bool {
        let a = self.algorithm;
        let ha1 = ha1.to_ascii_lowercase();
        let ha2 = crate::auth::hex(&a.h(&[method.as_bytes(), self.uri.as_bytes()]));
        let want = a.h(&[
            ha1.as_bytes(),
            self.nonce.as_bytes(),
            self.nc.as_bytes(),
            self.cnonce.as_bytes(),
            self.qop.as_bytes(),
            ha2.as_bytes(),
        ]);
        want.len() == self.response.len() && bool::from(want.ct_eq(&self.response))
    }
}

// ---------------------------------------------------------------------------------------
// Replay guard

/// Remembers the nonce counts used with the most recent `capacity` nonces and refuses a
/// `(nonce, nc)` pair seen before. Per nonce it keeps the highest count and a 64-wide
/// window below it, so requests sent in parallel may arrive out of order; a count more than
/// 63 below the highest is refused. A nonce pushed out by newer ones is forgotten (a replay
/// of it would then pass until its ttl ends), so size `capacity` to the phones that fetch
/// within one ttl. Record only responses that verified, with authentic nonces.
pub struct ReplayGuard {
    capacity: usize,
    inner: Mutex<GuardInner>,
}

#[derive(Default)]
struct GuardInner {
    seen: HashMap<String, (u32, u64)>,
    order: VecDeque<String>,
}

impl fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ReplayGuard {
    /// A guard remembering up to `capacity` nonces (at least one).
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Records `(nonce, nc)`; true when it had not been seen.
    pub fn first_use(&self, nonce: &str, nc: u32) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((high, window)) = g.seen.get_mut(nonce) {
            if nc > *high {
                let shift = nc - *high;
                *window = if shift >= 64 { 0 } else { *window << shift } | 1;
                *high = nc;
                return true;
            }
            let d = *high - nc;
            if d >= 64 || *window & (1 << d) != 0 {
                return false;
            }
            *window |= 1 << d;
            return true;
        }
        if g.order.len() >= self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.seen.remove(&old);
            }
        }
        g.order.push_back(nonce.to_string());
        g.seen.insert(nonce.to_string(), (nc, 1));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::Digest as _;

    const USER: &str = "Mufasa";
    const PASS: &str = "Circle of Life";
    const REALM: &str = "http-auth@example.org";
    const URI: &str = "/dir/index.html";
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const MD5_RESPONSE: &str = "8ca523f5e9506fed4657c9700eebdbec";
    const SHA256_RESPONSE: &str =
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";

    /// The RFC 7616 §3.9.1 Authorization value.
    fn rfc_header(algorithm: &str, response: &str) -> String {
        format!(
            "Digest username=\"{USER}\",\n realm=\"{REALM}\",\n uri=\"{URI}\",\n \
             algorithm={algorithm},\n nonce=\"{NONCE}\",\n nc=00000001,\n \
             cnonce=\"{CNONCE}\",\n qop=auth,\n response=\"{response}\",\n \
             opaque=\"{OPAQUE}\""
        )
        // The RFC folds the example over lines; a real header has none.
        .replace('\n', "")
    }

    fn parse(s: &str) -> Option<DigestResponse> {
        DigestResponse::parse(s.as_bytes())
    }

    /// A minimal valid header with `extra` parameters appended.
    fn minimal(extra: &str) -> String {
        format!(
            "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"/x\", \
             response=\"{MD5_RESPONSE}\", qop=auth, nc=00000001, cnonce=\"c\"{extra}"
        )
    }

    #[test]
    fn rfc7616_md5_example_verifies() {
        let r = parse(&rfc_header("MD5", MD5_RESPONSE)).expect("parses");
        assert_eq!(r.algorithm(), Algorithm::Md5);
        assert_eq!(r.username(), USER);
        assert_eq!(r.realm(), REALM);
        assert_eq!(r.uri(), URI);
        assert_eq!(r.nonce(), NONCE);
        assert_eq!(r.cnonce(), CNONCE);
        assert_eq!(r.nc(), 1);
        assert_eq!(r.opaque(), Some(OPAQUE));
        assert!(r.verify("GET", PASS));
        assert!(!r.verify("GET", "Circle of life"));
        assert!(!r.verify("POST", PASS));
        assert!(r.verify_ha1("GET", &ha1(Algorithm::Md5, USER, REALM, PASS)));
        assert!(r.verify_ha1(
            "GET",
            &ha1(Algorithm::Md5, USER, REALM, PASS).to_ascii_uppercase()
        ));
        assert!(!r.verify_ha1("GET", &ha1(Algorithm::Sha256, USER, REALM, PASS)));
    }

    #[test]
    fn rfc7616_sha256_example_verifies() {
        let r = parse(&rfc_header("SHA-256", SHA256_RESPONSE)).expect("parses");
        assert_eq!(r.algorithm(), Algorithm::Sha256);
        assert!(r.verify("GET", PASS));
        assert!(!r.verify("GET", "Circle Of Life"));
        assert!(r.verify_ha1("GET", &ha1(Algorithm::Sha256, USER, REALM, PASS)));
    }

    #[test]
    fn tampered_fields_fail_verification() {
        let good = rfc_header("SHA-256", SHA256_RESPONSE);
        for (from, to) in [
            (URI, "/dir/other.html"),
            ("nc=00000001", "nc=00000002"),
            (CNONCE, "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZK"),
            (NONCE, "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0w"),
            ("username=\"Mufasa\"", "username=\"mufasa\""),
        ] {
            let r = parse(&good.replace(from, to)).expect("still parses");
            assert!(!r.verify("GET", PASS), "{from} -> {to}");
        }
        // Uppercase hex in the response is the same digest.
        let upper = good.replace(SHA256_RESPONSE, &SHA256_RESPONSE.to_ascii_uppercase());
        assert!(parse(&upper).expect("parses").verify("GET", PASS));
    }

    #[test]
    fn algorithm_defaults_to_md5() {
        let h = rfc_header("MD5", MD5_RESPONSE).replace(" algorithm=MD5,", "");
        let r = parse(&h).expect("parses");
        assert_eq!(r.algorithm(), Algorithm::Md5);
        assert!(r.verify("GET", PASS));
    }

    #[test]
    fn parser_accepts_spacing_case_and_empty_elements() {
        let h = format!(
            "  dIgEsT   UserName = \"u\" ,REALM=\"r\",,\tnonce=\"n\" ,  uri=\"/x\", \
             Response=\"{MD5_RESPONSE}\",QOP=\"AUTH\",nc=0000000A,cnonce=c, Algorithm=md5 ,"
        );
        let r = parse(&h).expect("parses");
        assert_eq!(r.username(), "u");
        assert_eq!(r.realm(), "r");
        assert_eq!(r.nonce(), "n");
        assert_eq!(r.uri(), "/x");
        assert_eq!(r.cnonce(), "c");
        assert_eq!(r.nc(), 10);
        assert_eq!(r.algorithm(), Algorithm::Md5);
        assert_eq!(
            parse(&minimal(", algorithm=sha-256").replace(MD5_RESPONSE, SHA256_RESPONSE))
                .expect("parses")
                .algorithm(),
            Algorithm::Sha256
        );
    }

    #[test]
    fn parser_unescapes_quoted_strings() {
        let h = minimal("").replace(
            "username=\"u\"",
            r#"username="a \"quoted\" back\\slash \x ü""#,
        );
        let r = parse(&h).expect("parses");
        assert_eq!(r.username(), r#"a "quoted" back\slash x ü"#);
        // Commas and equals signs inside quotes are data.
        let r = parse(&minimal("").replace("uri=\"/x\"", "uri=\"/x?a=1,b=2\"")).expect("parses");
        assert_eq!(r.uri(), "/x?a=1,b=2");
    }

    #[test]
    fn parser_refuses_malformed_and_unsupported() {
        assert!(parse(&minimal("")).is_some());
        let bad = [
            // Scheme.
            minimal("").replacen("Digest", "Basic", 1),
            minimal("").replacen("Digest ", "Digest", 1),
            "Digest".to_string(),
            "Digest ".to_string(),
            String::new(),
            // Missing parameters.
            minimal("").replace("username=\"u\", ", ""),
            minimal("").replace("realm=\"r\", ", ""),
            minimal("").replace("nonce=\"n\", ", ""),
            minimal("").replace("uri=\"/x\", ", ""),
            minimal("").replace(&format!("response=\"{MD5_RESPONSE}\", "), ""),
            minimal("").replace(", cnonce=\"c\"", ""),
            minimal("").replace("nc=00000001, ", ""),
            // Required parameters that are empty.
            minimal("").replace("username=\"u\"", "username=\"\""),
            minimal("").replace("nonce=\"n\"", "nonce=\"\""),
            minimal("").replace("uri=\"/x\"", "uri=\"\""),
            // RFC 2069 form (no qop) is refused.
            minimal("").replace("qop=auth, ", ""),
            // Duplicates, also differing only in case.
            minimal(", username=\"v\""),
            minimal(", Realm=\"r\""),
            minimal(", opaque=a, opaque=a"),
            // nc: exactly 8 hex digits.
            minimal("").replace("nc=00000001", "nc=1"),
            minimal("").replace("nc=00000001", "nc=000000001"),
            minimal("").replace("nc=00000001", "nc=0000000g"),
            minimal("").replace("nc=00000001", "nc=\"\""),
            // Algorithms and qops we do not accept.
            minimal(", algorithm=SHA-512-256"),
            minimal(", algorithm=MD5-sess"),
            minimal(", algorithm=SHA-256-sess").replace(MD5_RESPONSE, SHA256_RESPONSE),
            minimal(", algorithm=\"\""),
            minimal("").replace("qop=auth", "qop=auth-int"),
            minimal("").replace("qop=auth", "qop=\"auth,auth-int\""),
            minimal(", userhash=true"),
            // Response of the wrong length for the algorithm, or not hex.
            minimal(", algorithm=SHA-256"),
            minimal("").replace(MD5_RESPONSE, &MD5_RESPONSE[1..]),
            minimal("").replace(MD5_RESPONSE, &MD5_RESPONSE.replace('c', "z")),
            // Syntax.
            minimal(", opaque"),
            minimal(", opaque="),
            minimal(", opaque=\"unterminated"),
            minimal(", opaque=\"trailing backslash\\"),
            minimal(", opaque=\"a\"b"),
            minimal(", opaque=a b"),
            minimal(", opaque=\"ctl\x01\""),
            minimal(", =x"),
            minimal("; x=y"),
            "Digest abc".to_string(),
        ];
        for h in &bad {
            assert!(parse(h).is_none(), "accepted: {h:?}");
        }
        assert!(parse(&minimal(", userhash=false")).is_some());
        // Not UTF-8.
        let mut bytes = minimal("").into_bytes();
        bytes.extend_from_slice(b", opaque=\"\xff\"");
        assert!(DigestResponse::parse(&bytes).is_none());
    }

    #[test]
    fn debug_redacts_the_response() {
        let r = parse(&rfc_header("MD5", MD5_RESPONSE)).expect("parses");
        let d = format!("{r:?}");
        assert!(!d.contains(MD5_RESPONSE), "{d}");
        assert!(d.contains("<redacted>"), "{d}");
        let n = format!("{:?}", Nonces::new([0x5a; 32], Duration::from_secs(1)));
        assert!(n.contains("<redacted>") && !n.contains("90"), "{n}");
    }

    #[test]
    fn challenge_format() {
        assert_eq!(
            challenge(REALM, Algorithm::Sha256, NONCE, false),
            format!("Digest realm=\"{REALM}\", qop=\"auth\", algorithm=SHA-256, nonce=\"{NONCE}\"")
        );
        assert_eq!(
            challenge("a \"b\" \\c\r\n", Algorithm::Md5, "n", true),
            r#"Digest realm="a \"b\" \\c", qop="auth", algorithm=MD5, nonce="n", stale=true"#
        );
        let [first, second] = challenges("r", "n", true);
        assert!(first.contains("algorithm=SHA-256") && first.ends_with("stale=true"));
        assert!(second.contains("algorithm=MD5") && second.ends_with("stale=true"));
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn nonce_fresh_stale_forged_other_realm() {
        let n = Nonces::new([7; 32], Duration::from_secs(300));
        let t0 = 1_800_000_000_000;
        let nonce = n.issue("phones", at(t0));
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(
            nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(nonce, n.issue("phones", at(t0)), "nonces are unique");

        assert_eq!(n.check(&nonce, "phones", at(t0)), NonceState::Fresh);
        assert_eq!(
            n.check(&nonce, "phones", at(t0 + 300_000)),
            NonceState::Fresh
        );
        assert_eq!(
            n.check(&nonce, "phones", at(t0 + 300_001)),
            NonceState::Stale
        );
        // Dated after now (clock stepped back): authentic, but not fresh.
        assert_eq!(n.check(&nonce, "phones", at(t0 - 1)), NonceState::Stale);

        assert_eq!(n.check(&nonce, "Phones", at(t0)), NonceState::Invalid);
        let other_key = Nonces::new([8; 32], Duration::from_secs(300));
        assert_eq!(
            other_key.check(&nonce, "phones", at(t0)),
            NonceState::Invalid
        );
        // Every single-character change is caught (the time, the random part, the tag).
        for i in 0..nonce.len() {
            let mut b = nonce.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(b).expect("ascii");
            assert_eq!(
                n.check(&forged, "phones", at(t0)),
                NonceState::Invalid,
                "{forged}"
            );
        }
        for junk in ["", "abc", NONCE, &format!("{nonce}="), &nonce[1..], "é"] {
            assert_eq!(n.check(junk, "phones", at(t0)), NonceState::Invalid);
        }
        // A forged fresh time with the old tag.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).expect("b64");
        raw[..8].copy_from_slice(&(t0 + 1_000_000).to_be_bytes());
        let forged = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            n.check(&forged, "phones", at(t0 + 1_000_000)),
            NonceState::Invalid
        );
        // Before the epoch does not panic.
        let early = n.issue("phones", UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(
            n.check(&early, "phones", UNIX_EPOCH - Duration::from_secs(5)),
            NonceState::Fresh
        );
    }

    #[test]
    fn replay_guard_window_and_capacity() {
        let g = ReplayGuard::new(2);
        assert!(g.first_use("a", 1));
        assert!(!g.first_use("a", 1));
        assert!(g.first_use("a", 3));
        assert!(
            !g.first_use("a", 1),
            "a count seen before stays seen when the highest moves on"
        );
        assert!(g.first_use("a", 2), "out of order within the window");
        assert!(!g.first_use("a", 2));
        assert!(!g.first_use("a", 3));
        assert!(g.first_use("a", 100));
        assert!(!g.first_use("a", 36), "more than 63 behind");
        assert!(g.first_use("a", 37));
        assert!(g.first_use("b", 1), "per nonce");
        assert!(g.first_use("c", 1));
        // "a" was pushed out by "b" and "c".
        assert!(g.first_use("a", 100));
        assert!(!g.first_use("c", 1));
        // A jump of 64 or more forgets the window below; what was seen at the old highest
        // is then more than 63 behind and refused anyway.
        assert!(g.first_use("c", 65));
        assert!(!g.first_use("c", 1));
        assert!(
            g.first_use("c", 64),
            "the window restarts at the new highest"
        );
        assert_eq!(
            format!("{g:?}"),
            "ReplayGuard { capacity: 2, .. }",
            "no nonce in Debug"
        );
    }

    /// A client written from the RFC, independent of the server code.
    #[allow(clippy::too_many_arguments)]
    fn client_response(
        algorithm: Algorithm,
        user: &str,
        realm: &str,
        password: &str,
        method: &str,
        uri: &str,
        nonce: &str,
        cnonce: &str,
        nc: &str,
    ) -> String {
        let h = |s: String| -> String {
            let bytes: Vec<u8> = match algorithm {
                Algorithm::Md5 => Md5::digest(s.as_bytes()).to_vec(),
                Algorithm::Sha256 => Sha256::digest(s.as_bytes()).to_vec(),
            };
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let ha1 = h(format!("{user}:{realm}:{password}"));
        let ha2 = h(format!("{method}:{uri}"));
        let response = h(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{nonce}\", uri=\"{}\", \
             algorithm={}, qop=auth, nc={nc}, cnonce=\"{}\", response=\"{response}\"",
            q(user),
            q(realm),
            q(uri),
            algorithm.name(),
            q(cnonce),
        )
    }

    #[test]
    fn round_trip_with_issued_nonce() {
        let n = Nonces::new([1; 32], Duration::from_secs(60));
        let now = SystemTime::now();
        let nonce = n.issue("autoprov", now);
        for a in OFFERED {
            let h = client_response(
                a,
                "phone-1",
                "autoprov",
                "s3cret",
                "GET",
                "/0004f2aabbcc.cfg",
                &nonce,
                "abc",
                "00000001",
            );
            let r = parse(&h).expect("parses");
            assert_eq!(r.algorithm(), a);
            assert_eq!(n.check(r.nonce(), r.realm(), now), NonceState::Fresh);
            assert!(r.verify("GET", "s3cret"));
            assert!(!r.verify("GET", "s3cret "));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = DigestResponse::parse(&b);
        }

        #[test]
        fn parse_never_panics_on_near_misses(
            tail in "[ \t,=\"\\\\a-zA-Z0-9\\x00-\\x1f\\x7fé-]{0,80}",
            cut in 0usize..200,
        ) {
            let mut h = minimal("").into_bytes();
            h.truncate(cut);
            h.extend_from_slice(tail.as_bytes());
            let _ = DigestResponse::parse(&h);
        }

        #[test]
        fn client_response_verifies(
            sha in any::<bool>(),
            user in "[ -~äß]{1,16}",
            password in "\\PC{0,24}",
            other in "\\PC{0,24}",
            uri in "/[!-~]{0,30}",
            cnonce in "[ -~]{0,20}",
            nc in 1u32..,
        ) {
            let a = if sha { Algorithm::Sha256 } else { Algorithm::Md5 };
            let nonces = Nonces::new([9; 32], Duration::from_secs(60));
            let now = SystemTime::now();
            let nonce = nonces.issue("realm \"x\"", now);
            let nc = format!("{nc:08x}");
            let h = client_response(a, &user, "realm \"x\"", &password, "GET", &uri, &nonce, &cnonce, &nc);
            let r = DigestResponse::parse(h.as_bytes()).expect("parses");
            prop_assert_eq!(r.username(), user.as_str());
            prop_assert_eq!(r.uri(), uri.as_str());
            prop_assert_eq!(r.cnonce(), cnonce.as_str());
            prop_assert_eq!(nonces.check(r.nonce(), r.realm(), now), NonceState::Fresh);
            prop_assert!(r.verify("GET", &password));
            prop_assert!(r.verify_ha1("GET", &ha1(a, &user, "realm \"x\"", &password)));
            prop_assert_eq!(r.verify("GET", &other), other == password);
            prop_assert!(!r.verify("HEAD", &password));
        }
    }
}
