//! MAC and request-path parsing: `Mac::parse`, `Mac::parse_plain`, the catalogue's
//! `Catalogue::match_path` over the shipped `models/`, `http::phone::upload_mac`,
//! `model::agent::mac_in` and the User-Agent parser `model::agent::parse`.
//!
//! Input: the first byte picks a mode, the rest is the string (lossy UTF-8).
//! - even: the string goes to every parser as it is;
//! - odd: the string is spliced into a `{mac}` file pattern of a shipped model (the second
//!   byte picks which, and the case of each letter is flipped by the bits that follow), so
//!   the matcher sees near-valid paths, not only noise.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use autoprov::http::phone::upload_mac;
use autoprov::model::catalogue::FileRef;
use autoprov::model::{Catalogue, Mac, agent};
use autoprov::render::Engine;
use libfuzzer_sys::fuzz_target;

struct Shipped {
    catalogue: Catalogue,
    /// Every per-phone file pattern, as declared (`{mac}` or `{MAC}`).
    patterns: Vec<String>,
}

fn shipped() -> &'static Shipped {
    static S: OnceLock<Shipped> = OnceLock::new();
    S.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let engine = Engine::load(&root.join("templates")).expect("templates load");
        let catalogue =
            Catalogue::load(&root.join("models"), &|t| engine.has(t)).expect("models load");
        let mut patterns: Vec<String> = catalogue
            .models()
            .flat_map(|m| m.files.iter())
            .filter(|f| f.per_phone())
            .map(|f| f.name.clone())
            .collect();
        patterns.sort();
        patterns.dedup();
        assert!(!patterns.is_empty());
        Shipped {
            catalogue,
            patterns,
        }
    })
}

/// The MAC's hex digits as the input wrote them, lowercased.
fn hex_digits(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn check_mac(s: &str) {
    match Mac::parse(s) {
        Ok(m) => {
            let lower = m.lower();
            assert_eq!(lower.len(), 12);
            assert_eq!(hex_digits(s), lower, "{s:?}");
            for spelling in [
                lower.clone(),
                m.upper(),
                m.colon(),
                m.colon().replace(':', "-"),
            ] {
                assert_eq!(Mac::parse(&spelling), Ok(m), "{spelling}");
            }
            assert_eq!(Mac::parse_plain(&lower), Ok(m));
            assert_eq!(s.parse::<Mac>(), Ok(m));
            assert_eq!(Mac::from_bytes(m.bytes()), m);
        }
        Err(_) => assert!(s.parse::<Mac>().is_err()),
    }
    if let Ok(m) = Mac::parse_plain(s) {
        assert_eq!(s.len(), 12);
        assert_eq!(Mac::parse(s), Ok(m));
    }
}

fn check_path(file: &str) {
    let s = shipped();
    match s.catalogue.match_path(file) {
        Some(FileRef::Phone { mac, pattern }) => {
            assert_eq!(
                pattern.replace("{mac}", &mac.lower()),
                file.to_ascii_lowercase(),
                "{file:?}"
            );
        }
        Some(FileRef::Common { name, models }) => {
            assert_eq!(name, file.to_ascii_lowercase());
            assert!(!models.is_empty());
            for id in &models {
                assert!(s.catalogue.get(id).is_some());
            }
        }
        None => {}
    }
    if let Some(m) = upload_mac(file) {
        let lower = file.to_ascii_lowercase();
        assert!(
            lower == format!("{}-app.log", m.lower()) || lower == format!("{}-boot.log", m.lower()),
            "{file:?}"
        );
    }
}

/// A MAC found in a User-Agent is written there in one of the forms the parsers take.
fn in_text(ua: &str, m: Mac) -> bool {
    let lower = ua.to_ascii_lowercase();
    lower.contains(&m.lower())
        || lower.contains(&m.colon())
        || lower.contains(&m.colon().replace(':', "-"))
}

fn check_user_agent(ua: &str) {
    if let Some(m) = agent::mac_in(ua) {
        assert!(in_text(ua, m), "{ua:?}");
    }
    if let Some(a) = agent::parse(ua) {
        assert!(!a.vendor.is_empty());
        if let Some(m) = a.mac {
            assert!(in_text(ua, m), "{ua:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let s = String::from_utf8_lossy(rest);
        check_mac(&s);
        check_path(&s);
        check_user_agent(&s);
        return;
    }
    // A shipped pattern with the input in place of the MAC, letters' case flipped by bits.
    let Some((&pick, rest)) = rest.split_first() else {
        return;
    };
    let shipped = shipped();
    let pattern = &shipped.patterns[usize::from(pick) % shipped.patterns.len()];
    let cut = rest.len().min(17);
    let mid = String::from_utf8_lossy(&rest[..cut]);
    let flips = &rest[cut..];
    let file: String = pattern
        .replace("{MAC}", "{mac}")
        .replace("{mac}", &mid)
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let flip = flips.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
            if flip && c.is_ascii_alphabetic() {
                (c as u8 ^ 0x20) as char
            } else {
                c
            }
        })
        .collect();
    check_mac(&mid);
    check_path(&file);
    check_user_agent(&file);
    // Twelve hex digits in a shipped pattern always name a file.
    if mid.len() == 12 && Mac::parse_plain(&mid).is_ok() {
        assert!(
            shipped.catalogue.match_path(&file).is_some(),
            "{file:?} from pattern {pattern:?}"
        );
    }
});
