//! Format-aware overlay of per-MAC overrides onto a rendered file.
//!
//! Invariant (property-tested): the result never holds a key twice, and every override's
//! key carries the override's value. An override replaces the generated value in place, or
//! is appended when the template did not generate the key.

use crate::model::Format;

/// Applies `overrides` to `text` in the given format.
pub fn apply<'a>(
    format: Format,
    text: &str,
    overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    match format {
        Format::KeyValue => key_value(text, overrides),
    }
}

/// Why an override key or value cannot be used in a format.
pub fn check_override(format: Format, key: &str, value: &str) -> Result<(), String> {
    match format {
        Format::KeyValue => {
            if key.is_empty() || key.len() > 256 {
                return Err("key must be 1 to 256 characters".into());
            }
            if key.starts_with('#')
                || key.contains(['=', ' ', '\t'])
                || key.chars().any(char::is_control)
            {
                return Err(
                    "key must not start with # or contain =, spaces or control characters".into(),
                );
            }
            if value.chars().any(char::is_control) {
                return Err("value must not contain line breaks or control characters".into());
            }
            Ok(())
        }
    }
}

/// The key of a `key = value` line, if it is one (comments and blank lines are not).
pub fn kv_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    let k = k.trim_end();
    if k.is_empty() { None } else { Some(k) }
}

fn key_value<'a>(text: &str, overrides: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<Option<String>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in text.lines() {
        match kv_key(line) {
            Some(k) => match index.get(k) {
                // A key generated twice: the later value wins, at the first position.
                Some(&i) => {
                    lines[i] = Some(line.to_string());
                }
                None => {
                    index.insert(k.to_string(), lines.len());
                    lines.push(Some(line.to_string()));
                }
            },
            None => lines.push(Some(line.to_string())),
        }
    }
    let mut appended = Vec::new();
    for (k, v) in overrides {
        let line = format!("{k} = {v}");
        match index.get(k) {
            Some(&i) => lines[i] = Some(line),
            None => {
                index.insert(k.to_string(), lines.len() + appended.len());
                appended.push(line);
            }
        }
    }
    let mut out = String::with_capacity(text.len() + 64);
    for l in lines.into_iter().flatten().chain(appended) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn parse(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| {
                let k = kv_key(l)?;
                let v = l.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }

    #[test]
    fn replaces_in_place_and_appends() {
        let text = "#!version:1.0.0.1\na = 1\n# c = 9\nb = 2\n";
        let out = apply(Format::KeyValue, text, [("b", "x"), ("z", "y")]);
        assert_eq!(out, "#!version:1.0.0.1\na = 1\n# c = 9\nb = x\nz = y\n");
    }

    #[test]
    fn generated_duplicates_collapse() {
        let out = apply(Format::KeyValue, "a = 1\nb = 2\na = 3\n", []);
        assert_eq!(out, "a = 3\nb = 2\n");
    }

    proptest! {
        #[test]
        fn never_a_key_twice_and_overrides_win(
            generated in proptest::collection::vec(("[a-e]{1,2}", "[a-z0-9 ]{0,4}"), 0..12),
            comments in proptest::collection::vec("#[ -~]{0,8}", 0..3),
            overrides in proptest::collection::btree_map("[a-g]{1,2}", "[ -~&&[^\\n]]{0,6}", 0..6),
        ) {
            let mut text = String::from("#!version:1.0.0.1\n");
            for c in &comments { text.push_str(c); text.push('\n'); }
            for (k, v) in &generated { text.push_str(&format!("{k} = {v}\n")); }
            let ov: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = apply(Format::KeyValue, &text, ov.iter().copied());
            let pairs = parse(&out);
            let mut seen = std::collections::HashSet::new();
            for (k, _) in &pairs { prop_assert!(seen.insert(k.clone()), "{} twice in {}", k, out); }
            let got: BTreeMap<_, _> = pairs.into_iter().collect();
            for (k, v) in &overrides { prop_assert_eq!(got.get(k).map(String::as_str), Some(v.trim())); }
            for (k, v) in &generated {
                if !overrides.contains_key(k) {
                    let last = generated.iter().rev().find(|(k2, _)| k2 == k).map(|(_, v)| v.trim());
                    prop_assert_eq!(got.get(k).map(String::as_str), last, "{} {}", k, v);
                }
            }
            prop_assert!(out.starts_with("#!version:1.0.0.1\n"));
        }

        #[test]
        fn checked_user_text_never_adds_a_line(key in "\\PC{0,10}", value in "\\PC{0,20}") {
            if check_override(Format::KeyValue, &key, &value).is_ok() {
                let out = apply(Format::KeyValue, "a = 1\n", [(key.as_str(), value.as_str())]);
                prop_assert!(out.lines().count() <= 2);
            }
        }
    }
}
