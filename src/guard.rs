//! Phone-path guards: source-address allow-lists (CIDR), the client address behind trusted
//! proxies, failed-authentication throttling per source IP and per MAC (429 with
//! `Retry-After`), and the credential policy (optional bootstrap credential, rotation grace).
//! Nothing here logs a credential.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Deserialize;

use crate::model::Mac;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    t.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR block like 192.0.2.0/24 or an IP address"))
}

/// Whether `ip` is inside any of `list`; an empty list allows everything. IPv4-mapped IPv6
/// addresses (`::ffff:192.0.2.1`, as a dual-stack listener reports them) match IPv4 blocks.
pub fn allowed(list: &[IpNet], ip: IpAddr) -> bool {
    list.is_empty() || allowed_in(list.iter().copied(), ip)
}

/// Whether `ip` is inside any of `nets` (an empty iterator allows nothing).
pub fn allowed_in(nets: impl IntoIterator<Item = IpNet>, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    nets.into_iter().any(|n| n.contains(&ip))
}

/// The client address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !allowed(trusted, peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let mut ip = peer;
    for part in xff.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(a) => {
                ip = a;
                if !allowed(trusted, a) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    ip
}

/// `[security]` in `autoprov.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecurityFile {
    /// Server-wide phone allow-list.
    pub allowed_cidrs: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Server-wide bootstrap username.
    pub bootstrap_username: Option<String>,
    /// Server-wide bootstrap password.
    pub bootstrap_password: Option<String>,
    /// How long a replaced provisioning password keeps working.
    pub credential_grace_secs: Option<u64>,
    /// How long the bootstrap credential keeps working for a MAC after it was exchanged.
    pub bootstrap_grace_secs: Option<u64>,
    /// Failed phone authentications per source IP per window before 429.
    pub auth_failures_per_ip: Option<u32>,
    /// Failed phone authentications per MAC per window before 429.
    pub auth_failures_per_mac: Option<u32>,
    /// The failure-counting window.
    pub auth_failure_window_secs: Option<u64>,
}

/// The validated phone-security settings.
#[derive(Clone)]
pub struct Security {
    /// Server-wide allow-list (empty: any address).
    pub allowed_cidrs: Vec<IpNet>,
    /// Trusted reverse proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// Server-wide bootstrap credential.
    pub bootstrap: Option<(String, String)>,
    /// Rotation grace for replaced provisioning credentials.
    pub credential_grace: Duration,
    /// How long the bootstrap credential keeps working for a MAC after the exchange (the
    /// phone fetches the rest of its boot sequence with it before applying the new one).
    pub bootstrap_grace: Duration,
    /// Failures per IP per window.
    pub failures_per_ip: u32,
    /// Failures per MAC per window.
    pub failures_per_mac: u32,
    /// The window.
    pub failure_window: Duration,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("allowed_cidrs", &self.allowed_cidrs)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "bootstrap",
                &self.bootstrap.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("credential_grace", &self.credential_grace)
            .field("bootstrap_grace", &self.bootstrap_grace)
            .field("failures_per_ip", &self.failures_per_ip)
            .field("failures_per_mac", &self.failures_per_mac)
            .field("failure_window", &self.failure_window)
            .finish()
    }
}

impl Default for Security {
    fn default() -> Self {
        Security {
            allowed_cidrs: Vec::new(),
            trusted_proxies: Vec::new(),
            bootstrap: None,
            credential_grace: Duration::from_secs(DEFAULT_CREDENTIAL_GRACE),
            bootstrap_grace: Duration::from_secs(DEFAULT_BOOTSTRAP_GRACE),
            failures_per_ip: DEFAULT_FAILURES_PER_IP,
            failures_per_mac: DEFAULT_FAILURES_PER_MAC,
            failure_window: Duration::from_secs(DEFAULT_FAILURE_WINDOW),
        }
    }
}

/// Default rotation grace: a day, longer than any vendor's default resync interval.
pub const DEFAULT_CREDENTIAL_GRACE: u64 = 86_400;
/// Default bootstrap grace: 15 minutes for the rest of a boot sequence.
pub const DEFAULT_BOOTSTRAP_GRACE: u64 = 900;
/// Default failures per source IP per window (an office NAT holds many phones).
pub const DEFAULT_FAILURES_PER_IP: u32 = 30;
/// Default failures per MAC per window.
pub const DEFAULT_FAILURES_PER_MAC: u32 = 10;
/// Default counting window in seconds.
pub const DEFAULT_FAILURE_WINDOW: u64 = 60;

impl SecurityFile {
    /// Validates the table; errors are `(key, message)` with the key under `security.`.
    pub fn resolve(self) -> Result<Security, (String, String)> {
        let cidrs = |key: &str, v: Option<Vec<String>>| -> Result<Vec<IpNet>, (String, String)> {
            v.unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, s)| parse_cidr(s).map_err(|m| (format!("security.{key}[{i}]"), m)))
                .collect()
        };
        let bootstrap = match (self.bootstrap_username, self.bootstrap_password) {
            (None, None) => None,
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, p)),
            _ => {
                return Err((
                    "security.bootstrap-password".into(),
                    "bootstrap-username and bootstrap-password are set together, both non-empty"
                        .into(),
                ));
            }
        };
        let positive = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err((format!("security.{key}"), "must be at least 1".to_string())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(Security {
            allowed_cidrs: cidrs("allowed-cidrs", self.allowed_cidrs)?,
            trusted_proxies: cidrs("trusted-proxies", self.trusted_proxies)?,
            bootstrap,
            credential_grace: Duration::from_secs(
                self.credential_grace_secs
                    .unwrap_or(DEFAULT_CREDENTIAL_GRACE),
            ),
            bootstrap_grace: Duration::from_secs(
                self.bootstrap_grace_secs.unwrap_or(DEFAULT_BOOTSTRAP_GRACE),
            ),
            failures_per_ip: positive(
                "auth-failures-per-ip",
                self.auth_failures_per_ip.map(u64::from),
                u64::from(DEFAULT_FAILURES_PER_IP),
            )? as u32,
            failures_per_mac: positive(
                "auth-failures-per-mac",
                self.auth_failures_per_mac.map(u64::from),
                u64::from(DEFAULT_FAILURES_PER_MAC),
            )? as u32,
            failure_window: Duration::from_secs(positive(
                "auth-failure-window-secs",
                self.auth_failure_window_secs,
                DEFAULT_FAILURE_WINDOW,
            )?),
        })
    }
}

/// A fixed-window failure counter.
#[derive(Debug)]
struct Window {
    /// Window start, in seconds since the throttle's epoch.
    start: AtomicU64,
    count: AtomicU32,
}

/// Counts failed phone authentications per source IP and per MAC; past a limit within the
/// window, that IP (or MAC) is refused with 429 until the window ends. Bounded in memory.
pub struct Throttle {
    epoch: Instant,
    window: u64,
    per_ip: u32,
    per_mac: u32,
    ips: moka::sync::Cache<IpAddr, Arc<Window>>,
    macs: moka::sync::Cache<Mac, Arc<Window>>,
    /// 1 + the time of the last failure (0: none yet).
    last_failure: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("window", &self.window)
            .field("per_ip", &self.per_ip)
            .field("per_mac", &self.per_mac)
            .finish_non_exhaustive()
    }
}

/// Most addresses (and MACs) tracked at once.
const TRACKED: u64 = 200_000;

impl Throttle {
    /// A throttle with the limits of `sec`.
    pub fn new(sec: &Security) -> Self {
        let window = sec.failure_window.as_secs().max(1);
        let ttl = Duration::from_secs(window * 2);
        Throttle {
            epoch: Instant::now(),
            window,
            per_ip: sec.failures_per_ip.max(1),
            per_mac: sec.failures_per_mac.max(1),
            ips: moka::sync::Cache::builder()
                .max_capacity(TRACKED)
                .time_to_live(ttl)
                .build(),
            macs: moka::sync::Cache::builder()
                .max_capacity(TRACKED)
                .time_to_live(ttl)
                .build(),
            last_failure: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Moves the throttle's clock `secs` seconds on (tests: a window passing, no sleep).
    #[cfg(test)]
    fn age(&mut self, secs: u64) {
        let back = self.epoch.checked_sub(Duration::from_secs(secs));
        self.epoch = back.expect("the monotonic clock is older than the test's window");
    }

    fn blocked_for(&self, w: Option<Arc<Window>>, limit: u32, now: u64) -> Option<u64> {
        let w = w?;
        let start = w.start.load(Ordering::Relaxed);
        let end = start + self.window;
        (now < end && w.count.load(Ordering::Relaxed) >= limit).then(|| (end - now).max(1))
    }

    /// `Some(seconds)` to wait when `ip` or `mac` is over its limit.
    pub fn check(&self, ip: IpAddr, mac: impl FnOnce() -> Option<Mac>) -> Option<u64> {
        let now = self.now();
        let last = self.last_failure.load(Ordering::Relaxed);
        if last == 0 || now >= last - 1 + self.window {
            // No failure in the last window: nobody can be over a limit (the usual case,
            // one atomic load on the fetch path).
            return None;
        }
        let by_ip = self.blocked_for(self.ips.get(&ip), self.per_ip, now);
        let by_mac = mac().and_then(|m| self.blocked_for(self.macs.get(&m), self.per_mac, now));
        match (by_ip, by_mac) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn bump(&self, w: &Window, now: u64) {
        let start = w.start.load(Ordering::Relaxed);
        if now >= start + self.window {
            // A new window; two racing resets at worst lose one count.
            w.start.store(now, Ordering::Relaxed);
            w.count.store(1, Ordering::Relaxed);
        } else {
            w.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one failed authentication from `ip` for `mac`.
    pub fn failed(&self, ip: IpAddr, mac: Option<Mac>) {
        let now = self.now();
        let fresh = || {
            Arc::new(Window {
                start: AtomicU64::new(now),
                count: AtomicU32::new(0),
            })
        };
        self.bump(&self.ips.get_with(ip, fresh), now);
        if let Some(m) = mac {
            self.bump(&self.macs.get_with(m, fresh), now);
        }
        self.last_failure.store(now + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let list = vec![
            parse_cidr("10.0.0.0/8").unwrap(),
            parse_cidr("2001:db8::/32").unwrap(),
            parse_cidr("192.0.2.7").unwrap(),
        ];
        assert!(allowed(&list, ip("10.1.2.3")));
        assert!(allowed(&list, ip("::ffff:10.1.2.3")));
        assert!(allowed(&list, ip("2001:db8::1")));
        assert!(allowed(&list, ip("192.0.2.7")));
        assert!(!allowed(&list, ip("192.0.2.8")));
        assert!(!allowed(&list, ip("127.0.0.1")));
        assert!(allowed(&[], ip("127.0.0.1")));
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
        assert!(parse_cidr("").is_err());
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = vec![parse_cidr("127.0.0.0/8").unwrap()];
        let xff = Some("203.0.113.9, 127.0.0.5");
        assert_eq!(client_ip(ip("127.0.0.1"), xff, &trusted), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("198.51.100.1"), xff, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), xff, &[]), ip("127.0.0.1"));
        // A forged left-most entry is not believed past an untrusted hop.
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("1.1.1.1, 198.51.100.2"), &trusted),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("garbage"), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn throttle_is_per_ip_and_per_mac() {
        let sec = Security {
            failures_per_ip: 3,
            failures_per_mac: 2,
            ..Default::default()
        };
        let t = Throttle::new(&sec);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let (m1, m2) = (
            Mac::from_bytes([0, 0x15, 0x65, 0, 0, 1]),
            Mac::from_bytes([0, 0x15, 0x65, 0, 0, 2]),
        );
        assert_eq!(t.check(a, || Some(m1)), None);
        t.failed(a, Some(m1));
        assert_eq!(t.check(a, || Some(m1)), None);
        t.failed(a, Some(m1));
        // MAC m1 is over its limit of 2, from any address; m2 from a is still fine.
        assert!(t.check(b, || Some(m1)).is_some());
        assert_eq!(t.check(a, || Some(m2)), None);
        t.failed(a, None);
        // Now a is over its limit of 3 for every MAC; b is unaffected.
        let wait = t.check(a, || Some(m2)).unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(t.check(b, || Some(m2)), None);
        assert_eq!(t.check(b, || None), None);
    }

    /// A window ends: `window` seconds after its first failure an address or MAC over its
    /// limit opens again, and the next failure starts a new count.
    #[test]
    fn a_window_passes() {
        let sec = Security {
            failures_per_ip: 2,
            failures_per_mac: 2,
            failure_window: Duration::from_secs(10),
            ..Default::default()
        };
        let mut t = Throttle::new(&sec);
        let a = ip("192.0.2.1");
        let m = Mac::from_bytes([0, 0x15, 0x65, 0, 0, 1]);
        t.failed(a, Some(m));
        t.failed(a, Some(m));
        let wait = t.check(a, || Some(m)).expect("over the limit");
        assert!((9..=10).contains(&wait), "{wait}");
        t.age(5);
        let wait = t.check(a, || None).expect("still in the window");
        assert!((4..=5).contains(&wait), "{wait}");
        t.age(6);
        assert_eq!(t.check(a, || Some(m)), None, "the window has passed");
        t.failed(a, Some(m));
        assert_eq!(t.check(a, || Some(m)), None, "a new window counts from one");
        t.failed(a, Some(m));
        assert!(t.check(a, || Some(m)).is_some());
        assert_eq!(
            format!("{t:?}"),
            "Throttle { window: 10, per_ip: 2, per_mac: 2, .. }"
        );
    }

    /// A window is `window` seconds long to the second: its last second still blocks, the
    /// next one does not, even while another address's later failure keeps the throttle
    /// from taking its no-recent-failure shortcut.
    #[test]
    fn a_window_ends_on_its_last_second() {
        let sec = Security {
            failures_per_ip: 1,
            failure_window: Duration::from_secs(10),
            ..Default::default()
        };
        let mut t = Throttle::new(&sec);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        t.failed(a, None);
        t.age(5);
        t.failed(b, None);
        t.age(4);
        assert_eq!(t.check(a, || None), Some(1), "the window's last second");
        t.age(1);
        assert_eq!(
            t.check(a, || None),
            None,
            "ten seconds after its first failure"
        );
        assert!(t.check(b, || None).is_some(), "b's window is still open");
    }

    #[test]
    fn security_file_is_validated() {
        let s = SecurityFile {
            allowed_cidrs: Some(vec!["10.0.0.0/8".into(), "nope".into()]),
            ..Default::default()
        };
        assert_eq!(s.resolve().unwrap_err().0, "security.allowed-cidrs[1]");
        let s = SecurityFile {
            bootstrap_username: Some("boot".into()),
            ..Default::default()
        };
        assert_eq!(s.resolve().unwrap_err().0, "security.bootstrap-password");
        let s = SecurityFile {
            auth_failure_window_secs: Some(0),
            ..Default::default()
        };
        assert_eq!(
            s.resolve().unwrap_err().0,
            "security.auth-failure-window-secs"
        );
        let ok = SecurityFile {
            bootstrap_username: Some("boot".into()),
            bootstrap_password: Some("Sekret-99".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(!format!("{ok:?}").contains("Sekret-99"));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,60}", peer in any::<[u8; 4]>()) {
            let _ = parse_cidr(&s);
            let trusted = vec![IpNet::from(IpAddr::from(peer))];
            let _ = client_ip(IpAddr::from(peer), Some(&s), &trusted);
        }
    }
}
