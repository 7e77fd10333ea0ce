//! Shared pieces of the autoprov fuzz targets: the overlay input encoding and its checks.
//!
//! Overlay input bytes: `base text` `\0` `key` `\1` `value` `\0` `key` `\1` `value` ...
//! A file with no `\0` is a base text with no overrides, so any rendered file (the
//! goldens under `tests/golden/`) is a valid seed as it is.

use std::collections::{BTreeMap, HashSet};

use autoprov::model::Format;
use autoprov::render::overlay;
use autoprov::render::xml::Doc;

/// At most this many overrides per input (the admin API takes a handful per phone).
const MAX_OVERRIDES: usize = 32;

/// Splits fuzz bytes into a base text and (key, value) overrides, in input order.
pub fn decode(data: &[u8]) -> (String, Vec<(String, String)>) {
    let mut parts = data.split(|&b| b == 0);
    let base = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let overrides = parts
        .take(MAX_OVERRIDES)
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == 1) {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    (base, overrides)
}

/// Well-formedness to a conforming XML parser (comments without `--`, no `]]>` in text,
/// declared namespace prefixes, XML characters only).
fn strict_xml(text: &str) -> Result<(), roxmltree::Error> {
    roxmltree::Document::parse(text).map(drop)
}

/// Runs one overlay input through `format` and checks the overlay's invariants:
///
/// 1. `apply` never panics, whatever the overrides (also unchecked ones, duplicates).
/// 2. With the overrides the admin API would accept (`check_override`), deduplicated the
///    way the caller's `BTreeMap` does: every override's key is in the output exactly once,
///    carrying the override's value; no key is in the output twice.
/// 3. XML: when the base text parses, the output parses too with the overlay's own
///    parser; and when the base is strictly well-formed, so is the output.
pub fn check_overlay(format: Format, data: &[u8]) {
    let (base, raw) = decode(data);

    // 1. Anything goes, nothing panics.
    let _ = overlay::apply(
        format,
        &base,
        raw.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let _ = overlay::pairs(format, &base);

    // 2. What the API lets through, as the renderer passes it (a BTreeMap).
    let accepted: BTreeMap<&str, &str> = raw
        .iter()
        .filter(|(k, v)| overlay::check_override(format, k, v).is_ok())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let base_parses = format.is_xml() && Doc::parse(&base).is_ok();
    let base_strict = base_parses && strict_xml(&base).is_ok();
    let out = match overlay::apply(format, &base, accepted.iter().map(|(k, v)| (*k, *v))) {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !base_parses,
                "the base parses but apply refused it: {e}\nbase: {base:?}"
            );
            return;
        }
    };

    // 3. XML stays XML.
    if base_parses {
        if let Err(e) = Doc::parse(&out) {
            panic!(
                "output does not parse: {e}\nbase: {base:?}\naccepted: {accepted:?}\nout: {out:?}"
            );
        }
        if base_strict && let Err(e) = strict_xml(&out) {
            panic!(
                "the base is strict XML, the output is not: {e}\nbase: {base:?}\naccepted: {accepted:?}\nout: {out:?}"
            );
        }
    } else if format.is_xml() {
        // apply returned Ok on text Doc::parse refuses: only possible for a document with
        // no root, which Doc::parse refuses anyway.
        return;
    }

    let pairs = match overlay::pairs(format, &out) {
        Ok(p) => p,
        Err(e) => panic!("pairs() refuses the output: {e}\nout: {out:?}"),
    };
    let mut seen = HashSet::new();
    for (k, _) in &pairs {
        assert!(
            seen.insert(k.as_str()),
            "key {k:?} twice in the output\nbase: {base:?}\naccepted: {accepted:?}\nout: {out:?}"
        );
    }
    for (k, v) in &accepted {
        let want = match format {
            Format::KeyValue => v.trim(),
            Format::XmlAttribute | Format::XmlElement => v,
        };
        let got: Vec<&str> = pairs
            .iter()
            .filter(|(pk, _)| pk == k)
            .map(|(_, pv)| pv.as_str())
            .collect();
        assert_eq!(
            got,
            [want],
            "override {k:?} not in the output once with its value\nbase: {base:?}\naccepted: {accepted:?}\nout: {out:?}"
        );
    }
}
