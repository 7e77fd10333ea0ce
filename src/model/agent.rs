//! Phone identification from the HTTP User-Agent of provisioning requests (VENDORS.md
//! §1.2, §2.2, §3.2, §4.1, §5.2, §6.2, §7.2, §9, §10): vendor, model token, firmware and
//! the MAC when the firmware sends one. Pure string work, no regexes, never panics.

use serde::Serialize;

use super::mac::Mac;

/// What a User-Agent says about the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    /// Lowercase vendor (`yealink`, `polycom`, `grandstream`, `cisco`, `snom`, `fanvil`,
    /// `htek`, `gigaset`, `panasonic`).
    pub vendor: &'static str,
    /// The model token as the firmware writes it (`SIP-T46S`, `VVX_450`, `GXP2170`,
    /// `CP-8841-3PCC`, `snomD785`, `X6U Pro`); models declare it as `user_agent_model`.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// The MAC, when the User-Agent carries one.
    #[serde(serialize_with = "ser_mac")]
    pub mac: Option<Mac>,
}

fn ser_mac<S: serde::Serializer>(m: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(&m.lower()),
        None => s.serialize_none(),
    }
}

fn is_version(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('.')
}

fn mac_token(t: &str) -> Option<Mac> {
    let t = t.trim_matches(|c| matches!(c, '(' | ')' | ';' | ','));
    let t = t.strip_prefix("SN:").unwrap_or(t);
    if t.len() == 12 || t.len() == 17 {
        Mac::parse(t).ok()
    } else {
        None
    }
}

/// A MAC anywhere in a User-Agent (`… 00:15:65:aa:bb:cc`, `… 001565aabbcc`,
/// `(SN:001565aabbcc)`), whatever the vendor: the one MAC reader of the phone path, for
/// agents [`parse`] does not know.
pub fn mac_in(ua: &str) -> Option<Mac> {
    ua.split(|c: char| c.is_whitespace() || matches!(c, ';' | '(' | ')' | '/' | ','))
        .find_map(mac_token)
}

/// Identifies the phone; `None` for a User-Agent of no known vendor.
pub fn parse(ua: &str) -> Option<Agent> {
    let ua = ua.trim();
    if ua.len() > 512 {
        return None;
    }
    let lower = ua.to_ascii_lowercase();
    if lower.starts_with("yealink") || starts_with_yealink_model(ua) {
        return yealink(ua);
    }
    if lower.starts_with("filetransport poly") || lower.contains(" polycom") {
        return polycom(ua);
    }
    if lower.starts_with("grandstream") {
        return grandstream(ua);
    }
    if lower.starts_with("cisco-") || lower.starts_with("cisco/") || lower.starts_with("linksys/") {
        return cisco(ua);
    }
    if lower.contains("compatible; snom") {
        return snom(ua);
    }
    if lower.starts_with("fanvil ") {
        return vendor_model_fw_mac(ua, "fanvil", "fanvil ");
    }
    if lower.starts_with("htek ") {
        return vendor_model_fw_mac(ua, "htek", "htek ");
    }
    if lower.starts_with("panasonic_") {
        return panasonic(ua);
    }
    if lower.starts_with("gigaset ") || lower.starts_with("n510") || lower.starts_with("n720") {
        return gigaset(ua);
    }
    None
}

/// DECT and video units that send no vendor word (`W52P 25.30.0.2 …`, `VP530P …`).
fn starts_with_yealink_model(ua: &str) -> bool {
    let first = ua.split_whitespace().next().unwrap_or("");
    let second = ua.split_whitespace().nth(1).unwrap_or("");
    (first.starts_with('W') || first.starts_with("VP"))
        && first.len() <= 6
        && first[1..].starts_with(|c: char| c.is_ascii_digit() || c == 'P')
        && is_version(second)
}

/// `Yealink SIP-T46S 66.86.0.15 80:5e:c0:…`, `Yealink SIP VP-T49G …`, `Yealink-T46G 28.71…`.
fn yealink(ua: &str) -> Option<Agent> {
    // `get`, not `[..7]`: byte 7 may fall inside a character (`W1 1.1é`).
    let rest = if ua
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("yealink"))
    {
        ua[7..].trim_start_matches(['-', ' '])
    } else {
        ua
    };
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let fw_at = tokens.iter().position(|t| is_version(t))?;
    if fw_at == 0 {
        return None;
    }
    Some(Agent {
        vendor: "yealink",
        model: tokens[..fw_at].join(" "),
        firmware: tokens[fw_at].to_string(),
        mac: tokens[fw_at + 1..].iter().find_map(|t| mac_token(t)),
    })
}

/// `FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 (SN:0004f2…) Type/Application`.
fn polycom(ua: &str) -> Option<Agent> {
    let ua_at = ua.find("-UA/")?;
    let head = &ua[..ua_at];
    let word = head.rsplit(' ').next()?;
    let (_, model) = word.split_once('-')?;
    let firmware = ua[ua_at + 4..].split_whitespace().next()?.to_string();
    if model.is_empty() {
        return None;
    }
    Some(Agent {
        vendor: "polycom",
        model: model.to_string(),
        firmware,
        mac: ua.split_whitespace().find_map(mac_token),
    })
}

/// `Grandstream Model HW GXP2170 V1.1A SW 1.0.11.34 DevId 000b82…` and the legacy form.
fn grandstream(ua: &str) -> Option<Agent> {
    let tokens: Vec<&str> = ua.split_whitespace().collect();
    let after = |word: &str| {
        tokens
            .iter()
            .position(|t| *t == word)
            .and_then(|i| tokens.get(i + 1))
            .copied()
    };
    let model = match (tokens.get(1), tokens.get(2)) {
        (Some(&"Model"), Some(&"HW")) => tokens.get(3)?,
        (Some(m), _) => m,
        _ => return None,
    };
    Some(Agent {
        vendor: "grandstream",
        model: model.to_string(),
        firmware: after("SW").unwrap_or_default().to_string(),
        mac: after("DevId").and_then(mac_token),
    })
}

/// `Cisco-CP-8841-3PCC/11.0 (00562b043615)`, `Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT…)`,
/// `Linksys/SPA-942-6.1.5(a) (88019FA42805)`.
fn cisco(ua: &str) -> Option<Agent> {
    let (head, tail) = ua.split_once(' ').unwrap_or((ua, ""));
    let (model, firmware) = if let Some(rest) = head.strip_prefix("Cisco-") {
        rest.split_once('/')?
    } else {
        let rest = head.split_once('/')?.1;
        rest.rsplit_once('-')?
    };
    if model.is_empty() {
        return None;
    }
    let mac = tail
        .split(['(', ')'])
        .map(str::trim)
        .find_map(|t| (t.len() == 12).then(|| Mac::parse_plain(t).ok()).flatten());
    Some(Agent {
        vendor: "cisco",
        model: model.to_string(),
        firmware: firmware.to_string(),
        mac,
    })
}

/// `Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-… 000413922D24 SXM:0 UXM:0)`,
/// `Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)`.
fn snom(ua: &str) -> Option<Agent> {
    let at = ua.to_ascii_lowercase().find("compatible; snom")?;
    let rest = ua[at + "compatible; ".len()..].trim_end_matches(')');
    let mut tokens = rest.split_whitespace();
    let first = tokens.next()?;
    let (model, firmware) = match first.strip_suffix("-SIP") {
        Some(m) => (m.to_string(), tokens.next().unwrap_or_default()),
        None => {
            // DECT: `Snom M900 05.20.0001 <mac>`.
            let m = tokens.next()?;
            (m.to_string(), tokens.next().unwrap_or_default())
        }
    };
    Some(Agent {
        vendor: "snom",
        model,
        firmware: firmware.to_string(),
        mac: tokens.find_map(mac_token),
    })
}

/// `<Vendor> <MODEL words> <firmware> <mac>` (Fanvil, Htek).
fn vendor_model_fw_mac(ua: &str, vendor: &'static str, prefix: &str) -> Option<Agent> {
    let rest = ua.get(prefix.len()..)?;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let fw_at = tokens.iter().rposition(|t| is_version(t))?;
    if fw_at == 0 {
        return None;
    }
    Some(Agent {
        vendor,
        model: tokens[..fw_at].join(" "),
        firmware: tokens[fw_at].to_string(),
        mac: tokens[fw_at + 1..].iter().find_map(|t| mac_token(t)),
    })
}

/// `Panasonic_KX-UT113/01.133 (0080f0c8c381)`.
fn panasonic(ua: &str) -> Option<Agent> {
    let rest = ua.get("Panasonic_".len()..)?;
    let (head, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let (model, firmware) = head.split_once('/')?;
    Some(Agent {
        vendor: "panasonic",
        model: model.to_string(),
        firmware: firmware.to_string(),
        mac: mac_token(tail.trim()),
    })
}

/// `Gigaset N720 DM PRO/70.089.00.000.000;7C2F80CA21E4`, `N510 IP PRO/42.245…;7C2F…`.
fn gigaset(ua: &str) -> Option<Agent> {
    let rest = ua.strip_prefix("Gigaset ").unwrap_or(ua);
    let (model, tail) = rest.split_once('/')?;
    let (firmware, mac) = match tail.split_once(';') {
        Some((f, m)) => (f, mac_token(m.trim())),
        None => (tail, None),
    };
    Some(Agent {
        vendor: "gigaset",
        model: model.to_string(),
        firmware: firmware.to_string(),
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ua_macs() {
        let m = Mac::parse("805ec0d57d72").unwrap();
        assert_eq!(
            mac_in("Yealink SIP-T31G 124.85.257.55 80:5e:c0:d5:7d:72"),
            Some(m)
        );
        assert_eq!(mac_in("Yealink SIP-T56A  58.80.0.25 805ec0d57d72"), Some(m));
        assert_eq!(
            mac_in("FileTransport X-UA/4.0 (SN:805ec0d57d72) Type/App"),
            Some(m)
        );
        assert_eq!(mac_in("Yealink-T46G 28.71.0.81 28.1.0.128.0.0.0"), None);
        assert_eq!(mac_in("curl/8.0"), None);
    }
    use proptest::prelude::*;

    /// Real User-Agents (VENDORS.md) → vendor, model, firmware, MAC.
    const TABLE: &[(&str, &str, &str, &str, Option<&str>)] = &[
        (
            "Yealink SIP-T20P 9.72.0.30 00:15:65:5e:16:7c",
            "yealink",
            "SIP-T20P",
            "9.72.0.30",
            Some("0015655e167c"),
        ),
        (
            "yealink SIP-T28P 2.70.0.140 00:15:65:13:ae:0b",
            "yealink",
            "SIP-T28P",
            "2.70.0.140",
            Some("00156513ae0b"),
        ),
        (
            "Yealink SIP-T38G  38.70.0.125 00:15:65:2f:c3:5e",
            "yealink",
            "SIP-T38G",
            "38.70.0.125",
            Some("0015652fc35e"),
        ),
        (
            "Yealink SIP VP-T49G 51.80.0.10 00:15:65:9b:5a:44",
            "yealink",
            "SIP VP-T49G",
            "51.80.0.10",
            Some("0015659b5a44"),
        ),
        (
            "Yealink SIP-T56A  58.80.0.25 001565f429a4",
            "yealink",
            "SIP-T56A",
            "58.80.0.25",
            Some("001565f429a4"),
        ),
        (
            "Yealink SIP-T31G 124.85.257.55 80:5e:c0:d5:7d:72",
            "yealink",
            "SIP-T31G",
            "124.85.257.55",
            Some("805ec0d57d72"),
        ),
        (
            "Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33",
            "yealink",
            "SIP-T46S",
            "66.86.0.15",
            Some("805ec0112233"),
        ),
        (
            "Yealink W60B 77.81.0.35 80:5e:c0:09:ab:dc",
            "yealink",
            "W60B",
            "77.81.0.35",
            Some("805ec009abdc"),
        ),
        (
            "Yealink SIP-W52P 25.73.0.20 00:15:65:40:ae:35",
            "yealink",
            "SIP-W52P",
            "25.73.0.20",
            Some("00156540ae35"),
        ),
        (
            "W52P 25.30.0.2 00:15:65:44:b3:7c",
            "yealink",
            "W52P",
            "25.30.0.2",
            Some("00156544b37c"),
        ),
        (
            "VP530P 23.70.0.40 00:15:65:31:4b:c0",
            "yealink",
            "VP530P",
            "23.70.0.40",
            Some("001565314bc0"),
        ),
        (
            "Yealink-T46G 28.71.0.81 28.1.0.128.0.0.0",
            "yealink",
            "T46G",
            "28.71.0.81",
            None,
        ),
        (
            "FileTransport PolycomSoundPointIP-SPIP_335-UA/3.2.1.0078",
            "polycom",
            "SPIP_335",
            "3.2.1.0078",
            None,
        ),
        (
            "FileTransport PolycomSoundPointIP-SPIP_550-UA/4.0.15.1047 (SN:0004a11a1a1a) Type/Application",
            "polycom",
            "SPIP_550",
            "4.0.15.1047",
            Some("0004a11a1a1a"),
        ),
        (
            "FileTransport PolycomSoundStationIP-SSIP_5000-UA/4.0.3.7562 (SN:0004f2e765da) Type/Application",
            "polycom",
            "SSIP_5000",
            "4.0.3.7562",
            Some("0004f2e765da"),
        ),
        (
            "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application",
            "polycom",
            "VVX_400",
            "4.1.4.7430",
            None,
        ),
        (
            "FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application",
            "polycom",
            "Edge_E450",
            "8.0.0.15602",
            None,
        ),
        (
            "Grandstream Model HW GXP1628 SW 1.0.4.138 DevId c074ad2bd859",
            "grandstream",
            "GXP1628",
            "1.0.4.138",
            Some("c074ad2bd859"),
        ),
        (
            "Grandstream Model HW GXP2200 V2.2A SW 1.0.1.33 DevId 000b82462d97",
            "grandstream",
            "GXP2200",
            "1.0.1.33",
            Some("000b82462d97"),
        ),
        (
            "Grandstream Model HW GXV3350  V1.3A SW 1.0.1.8 DevId c074ad150b88",
            "grandstream",
            "GXV3350",
            "1.0.1.8",
            Some("c074ad150b88"),
        ),
        (
            "Grandstream Model HW HT802V2 V1.0A SW 1.0.5.4 DevId ec74d763e419",
            "grandstream",
            "HT802V2",
            "1.0.5.4",
            Some("ec74d763e419"),
        ),
        (
            "Grandstream Model HW GRP2601W SW 1.0.1.1 DevId EC:74:D7:89:1A:76",
            "grandstream",
            "GRP2601W",
            "1.0.1.1",
            Some("ec74d7891a76"),
        ),
        (
            "Grandstream GXP2000 (gxp2000e.bin:1.2.5.3/boot55e.bin:1.1.6.9) DevId 000b822726c8",
            "grandstream",
            "GXP2000",
            "",
            Some("000b822726c8"),
        ),
        (
            "Cisco-CP-8841-3PCC/11.0 (00562b043615)",
            "cisco",
            "CP-8841-3PCC",
            "11.0",
            Some("00562b043615"),
        ),
        (
            "Cisco-CP-7832-3PCC/11.0.1 (00562b043615)",
            "cisco",
            "CP-7832-3PCC",
            "11.0.1",
            Some("00562b043615"),
        ),
        (
            "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK)",
            "cisco",
            "SPA508G",
            "7.4.4",
            Some("0002fdff2103"),
        ),
        (
            "Cisco/SPA525G-7.4.7 (CBT141900G7)",
            "cisco",
            "SPA525G",
            "7.4.7",
            None,
        ),
        (
            "Cisco/SPA112-1.4.1(SR5) (88755A000001)",
            "cisco",
            "SPA112",
            "1.4.1(SR5)",
            Some("88755a000001"),
        ),
        (
            "Linksys/SPA-942-6.1.5(a) (88019FA42805)",
            "cisco",
            "SPA-942",
            "6.1.5(a)",
            Some("88019fa42805"),
        ),
        (
            "Mozilla/4.0 (compatible; snom320-SIP 8.4.18 1.1.3-s)",
            "snom",
            "snom320",
            "8.4.18",
            None,
        ),
        (
            "Mozilla/4.0 (compatible; snom710-SIP 8.7.5.35 1.1.5-IFX-05.01.12 000413741767)",
            "snom",
            "snom710",
            "8.7.5.35",
            Some("000413741767"),
        ),
        (
            "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)",
            "snom",
            "snomD785",
            "10.1.33.33",
            Some("000413922d24"),
        ),
        (
            "Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 2010.12-00001-gd311851f1 (Feb 25 2019 - 14:19:43) 00041396D9B4 SXM:0 UXM:0 UXMC:0)",
            "snom",
            "snomD785",
            "10.1.169.16",
            Some("00041396d9b4"),
        ),
        (
            "Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)",
            "snom",
            "M900",
            "05.20.0001",
            Some("000413b60680"),
        ),
        (
            "Fanvil X4 2.10.2.6887 0c383e07e16c",
            "fanvil",
            "X4",
            "2.10.2.6887",
            Some("0c383e07e16c"),
        ),
        (
            "Fanvil X6U Pro 0.0.10 0c383e2cd782",
            "fanvil",
            "X6U Pro",
            "0.0.10",
            Some("0c383e2cd782"),
        ),
        (
            "Fanvil X5U-V2 2.12.16.17 0c383e557eb1",
            "fanvil",
            "X5U-V2",
            "2.12.16.17",
            Some("0c383e557eb1"),
        ),
        (
            "Htek UC903 2.0.4.2 00:1f:c1:1c:22:a9",
            "htek",
            "UC903",
            "2.0.4.2",
            Some("001fc11c22a9"),
        ),
        (
            "Panasonic_KX-UT113/01.133 (0080f0c8c381)",
            "panasonic",
            "KX-UT113",
            "01.133",
            Some("0080f0c8c381"),
        ),
        (
            "Gigaset N720 DM PRO/70.089.00.000.000;7C2F80CA21E4",
            "gigaset",
            "N720 DM PRO",
            "70.089.00.000.000",
            Some("7c2f80ca21e4"),
        ),
        (
            "N510 IP PRO/42.245.00.000.000;7C2F804DF9A9",
            "gigaset",
            "N510 IP PRO",
            "42.245.00.000.000",
            Some("7c2f804df9a9"),
        ),
    ];

    #[test]
    fn real_user_agents() {
        for (ua, vendor, model, fw, mac) in TABLE {
            let a = parse(ua).unwrap_or_else(|| panic!("not identified: {ua}"));
            assert_eq!(a.vendor, *vendor, "{ua}");
            assert_eq!(a.model, *model, "{ua}");
            assert_eq!(a.firmware, *fw, "{ua}");
            assert_eq!(a.mac.map(|m| m.lower()), mac.map(str::to_string), "{ua}");
        }
    }

    #[test]
    fn unknown_agents() {
        for ua in [
            "curl/8.5.0",
            "",
            "Mozilla/5.0 (X11; Linux x86_64)",
            "Wget/1.21",
        ] {
            assert_eq!(parse(ua), None, "{ua}");
        }
    }

    /// Found by the `mac_path` fuzz target: a model-only Yealink agent (`W1 …`) with a
    /// character across byte 7 panicked in the `Yealink` prefix check.
    #[test]
    fn multibyte_character_at_byte_seven() {
        assert_eq!(
            parse("W1 1.1é").map(|a| (a.model, a.firmware)),
            Some(("W1".to_string(), "1.1é".to_string()))
        );
        assert!(parse("VP\u{11}\u{b}2\u{fffd}.cfg").is_none_or(|a| a.vendor == "yealink"));
    }

    proptest! {
        #[test]
        fn never_panics(ua in "\\PC{0,80}") {
            let _ = parse(&ua);
        }

        #[test]
        fn never_panics_on_vendor_prefixes(
            prefix in prop_oneof![
                Just("Yealink "), Just("FileTransport Polycom"), Just("Grandstream "),
                Just("Cisco-"), Just("Cisco/"), Just("Mozilla/4.0 (compatible; snom"),
                Just("Fanvil "), Just("Panasonic_"), Just("Gigaset "), Just("W5"),
            ],
            rest in "\\PC{0,40}",
        ) {
            let _ = parse(&format!("{prefix}{rest}"));
        }
    }
}
