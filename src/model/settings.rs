//! The settings vocabulary shared by every merge layer (built-in floor, model, server,
//! domain, phone, account): names, validation, and the built-in seed defaults.
//!
//! A setting is a string value under a kebab-case key. Known keys are validated by kind;
//! any other key matching `[a-z0-9][a-z0-9._-]*` is accepted as a free template setting.

use std::collections::BTreeMap;

/// A layer of settings: key → value.
pub type Settings = BTreeMap<String, String>;

/// The firmware folder's base URL (the server layer's, from `public-url`).
pub const FIRMWARE_URL: &str = "firmware-url";
/// SIP server host, optionally `host:port`.
pub const CORE_SERVER: &str = "device-provisioning-registration-core-server";
/// SIP server port when the core server names none.
pub const SIP_PORT: &str = "sip-server-port";
/// `udp` | `tcp` | `tls`.
pub const TRANSPORT: &str = "device-provisioning-sip-transport-protocol";
/// Registration expiry in seconds.
pub const EXPIRY: &str = "device-sip-registration-expiry-seconds";
/// `no` | `yes` | `opportunistic`.
pub const SRTP: &str = "device-srtp-enabled";
/// `automatic` | `none` | `never` | `fixed`.
pub const NAT: &str = "device-sip-nat-traversal-enabled";
/// Emergency caller id (`[*]` = inherit the user's).
pub const EMERGENCY_CID: &str = "caller-id-number-emergency";
/// Call recording mode.
pub const RECORDING: &str = "recording-configuration";
/// Allowed User-Agent (partial, case-insensitive match).
pub const ALLOWED_UA: &str = "device-sip-allowed-user-agent";

/// The seed's yes/no flags on an account, with their documented defaults (in the seed's order).
pub const SEED_FLAGS: &[(&str, &str)] = &[
    ("device-force-notify-new-voicemails-enabled", "no"),
    ("device-level-call-recording-enabled", "no"),
    ("device-push-enabled", "yes"),
    (
        "device-sip-registration-ignore-for-presence-calculation",
        "no",
    ),
    ("device-sip-registration-ignore-report-enabled", "no"),
    ("device-sip-no-to-tag-in-cancel", "no"),
    ("auto-answer-enabled", "no"),
];

/// How a known setting's value is checked.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Free text on one line.
    Text,
    /// A host name or IP literal, optionally with `:port`.
    HostPort,
    /// An integer in an inclusive range.
    Int(i64, i64),
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
}

/// Allowed transports.
pub const TRANSPORTS: &[&str] = &["udp", "tcp", "tls"];
/// Allowed SRTP modes.
pub const SRTP_MODES: &[&str] = &["no", "yes", "opportunistic"];
/// Allowed NAT traversal modes.
pub const NAT_MODES: &[&str] = &["automatic", "none", "never", "fixed"];
/// Allowed recording modes.
pub const RECORDING_MODES: &[&str] = &[
    "no",
    "yes",
    "yes-with-transcription",
    "yes-with-transcription-and-sentiment",
];
/// yes/no flags.
pub const YES_NO: &[&str] = &["yes", "no"];

/// The kind of a known setting, or `None` for a free template setting.
pub fn kind_of(key: &str) -> Option<Kind> {
    Some(match key {
        CORE_SERVER => Kind::HostPort,
        SIP_PORT => Kind::Int(1, 65535),
        TRANSPORT => Kind::Enum(TRANSPORTS),
        EXPIRY => Kind::Int(1, 604_800),
        SRTP => Kind::Enum(SRTP_MODES),
        NAT => Kind::Enum(NAT_MODES),
        RECORDING => Kind::Enum(RECORDING_MODES),
        EMERGENCY_CID | ALLOWED_UA => Kind::Text,
        k if SEED_FLAGS.iter().any(|(f, _)| *f == k) => Kind::Enum(YES_NO),
        _ => return None,
    })
}

/// The built-in floor under every other layer: the seed API's documented defaults.
pub fn builtin() -> Settings {
    [
        (TRANSPORT, "udp"),
        (EXPIRY, "60"),
        (SRTP, "no"),
        (NAT, "automatic"),
        (EMERGENCY_CID, "[*]"),
        (RECORDING, "no"),
        (SIP_PORT, "5060"),
    ]
    .into_iter()
    .chain(SEED_FLAGS.iter().copied())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// True when `key` is a well-formed setting name.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Text a user typed may never carry a line break or another control character, nor
/// U+FFFE or U+FFFF: free text lands in XML files too, and XML cannot hold those two. At
/// most 1024 characters.
pub fn check_text(v: &str) -> Result<(), String> {
    if v.chars().any(|c| c.is_control()) {
        return Err("must not contain line breaks or control characters".into());
    }
    if v.contains(['\u{FFFE}', '\u{FFFF}']) {
        return Err("must not contain U+FFFE or U+FFFF (not XML characters)".into());
    }
    // Characters, as the API document's `maxLength` counts them.
    if v.chars().count() > 1024 {
        return Err("must be at most 1024 characters".into());
    }
    Ok(())
}

/// A host name, IPv4 or bracketed IPv6 literal, optionally followed by `:port`.
pub fn check_host_port(v: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{v:?} is not a host name or address with an optional :port"
        ))
    };
    if v.is_empty() || v.len() > 255 {
        return bad();
    }
    let (host, port) = split_host_port(v);
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return bad(),
        }
    }
    let ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
            && !host.starts_with(['-', '.'])
    };
    if ok { Ok(()) } else { bad() }
}

/// Splits `host[:port]` (IPv6 literals in brackets).
pub fn split_host_port(v: &str) -> (&str, Option<&str>) {
    if v.starts_with('[') {
        if let Some(end) = v.find(']') {
            let rest = &v[end + 1..];
            return (&v[..=end], rest.strip_prefix(':'));
        }
        return (v, None);
    }
    match v.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (v, None),
    }
}

/// Validates one setting value for `key`; the error says what is wrong (not where).
pub fn check_value(key: &str, v: &str) -> Result<(), String> {
    check_text(v)?;
    match kind_of(key) {
        None | Some(Kind::Text) => Ok(()),
        Some(Kind::HostPort) => check_host_port(v),
        Some(Kind::Int(lo, hi)) => match v.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(()),
            _ => Err(format!("must be an integer from {lo} to {hi}")),
        },
        Some(Kind::Enum(words)) => {
            if words.contains(&v) {
                Ok(())
            } else {
                Err(format!("must be one of {}", words.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        for ok in [
            "sip.example.com",
            "10.0.0.1:5061",
            "[2001:db8::1]:5060",
            "pbx",
        ] {
            assert!(check_host_port(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sip example",
            "a:b:c",
            "host:0",
            "host:99999",
            "-x",
            "[zz]",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(split_host_port("h:5"), ("h", Some("5")));
        assert_eq!(split_host_port("[::1]:5"), ("[::1]", Some("5")));
    }

    #[test]
    fn values() {
        assert!(check_value(TRANSPORT, "tls").is_ok());
        assert!(check_value(TRANSPORT, "sctp").is_err());
        assert!(check_value(EXPIRY, "0").is_err());
        assert!(check_value("time-zone", "+1").is_ok());
        assert!(check_value("label", "a\nb").is_err());
        assert!(valid_key("local_time.ntp-server1"));
        assert!(!valid_key("Bad Key"));
    }

    /// Every known key has its own kind: a value only that kind refuses is refused, and
    /// one it accepts is accepted.
    #[test]
    fn each_known_key_is_checked_by_its_kind() {
        let cases: &[(&str, &str, &str)] = &[
            (CORE_SERVER, "sip.example.com:5061", "sip example"),
            (SIP_PORT, "5060", "0"),
            (SIP_PORT, "65535", "65536"),
            (TRANSPORT, "udp", "sctp"),
            (EXPIRY, "604800", "604801"),
            (SRTP, "opportunistic", "maybe"),
            (NAT, "fixed", "sometimes"),
            (RECORDING, "yes-with-transcription", "always"),
            ("auto-answer-enabled", "yes", "maybe"),
            ("device-push-enabled", "no", "true"),
        ];
        for (key, good, bad) in cases {
            assert!(check_value(key, good).is_ok(), "{key}={good}");
            assert!(check_value(key, bad).is_err(), "{key}={bad}");
        }
        for key in [EMERGENCY_CID, ALLOWED_UA] {
            assert!(matches!(kind_of(key), Some(Kind::Text)), "{key}");
        }
        assert!(kind_of("time-zone").is_none());
        assert!(kind_of("label").is_none());
    }

    #[test]
    fn builtin_floor_is_the_seed_defaults() {
        let b = builtin();
        assert_eq!(b.len(), 7 + SEED_FLAGS.len());
        assert_eq!(b[TRANSPORT], "udp");
        assert_eq!(b[EXPIRY], "60");
        assert_eq!(b[SIP_PORT], "5060");
        assert_eq!(b[EMERGENCY_CID], "[*]");
        assert_eq!(b["device-push-enabled"], "yes");
        assert_eq!(b["auto-answer-enabled"], "no");
        for (k, v) in &b {
            assert!(check_value(k, v).is_ok(), "{k}={v}");
        }
    }

    #[test]
    fn length_limits_are_inclusive() {
        assert!(check_text(&"a".repeat(1024)).is_ok());
        assert!(check_text(&"a".repeat(1025)).is_err());
        assert!(check_text(&"a".repeat(4000)).is_err());
        let host = |n: usize| format!("{}.example", "a".repeat(n - 8));
        assert!(check_host_port(&host(255)).is_ok());
        assert!(check_host_port(&host(256)).is_err());
        assert!(check_host_port(&host(400)).is_err());
    }

    #[test]
    fn only_the_last_colon_outside_brackets_starts_a_port() {
        assert_eq!(split_host_port("a:b:c"), ("a:b:c", None));
        assert_eq!(split_host_port("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(split_host_port("[2001:db8::1]"), ("[2001:db8::1]", None));
        assert_eq!(split_host_port("pbx"), ("pbx", None));
    }
}
