//! Secrets are compared in constant time only. A timing difference is not something a
//! functional test can observe (and tests make no timing assertions), so this reads the
//! source instead: the one comparison function goes through `subtle`, and no `==`/`!=`
//! outside tests has an operand that names a secret. `auth::Secret` has no `PartialEq`
//! (a static assertion in src/auth.rs stops the build if one appears).

mod common;

use std::path::PathBuf;

/// Words that make an operand a secret.
const SECRET_WORDS: &[&str] = &["password", "passwd", "secret", "token", "ha1", "nonce_key"];

/// The file's lines before its `#[cfg(test)]` module (tests compare on purpose), a
/// comparison broken over lines joined into one (`a\n    != b` reads as `a != b`), each
/// with the number of its first line.
fn production(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
        .collect();
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut joining = false;
    for (n, l) in lines {
        let t = l.trim();
        let continues = t.starts_with("==") || t.starts_with("!=");
        match out.last_mut() {
            Some((_, prev)) if joining || continues => {
                prev.push(' ');
                prev.push_str(t);
            }
            _ => out.push((n, l.to_string())),
        }
        joining = t.ends_with("==") || t.ends_with("!=");
    }
    out
}

/// The operand next to each `==`/`!=` of a line: the identifier path just before and just
/// after the operator (through `.`, `::`, `&`, `*` and a trailing `()`).
fn operands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || b"_.:&*()".contains(&c);
    for (i, w) in b.windows(2).enumerate() {
        if (w == b"==" || w == b"!=") && b.get(i + 2) != Some(&b'=') && (i == 0 || b[i - 1] != b'=')
        {
            let before = line[..i].trim_end();
            let start = before.bytes().rposition(|c| !ident(c)).map_or(0, |p| p + 1);
            out.push(before[start..].to_string());
            let after = line[i + 2..].trim_start();
            let end = after.bytes().position(|c| !ident(c)).unwrap_or(after.len());
            out.push(after[..end].to_string());
        }
    }
    out
}

fn names_a_secret(operand: &str) -> bool {
    let lower = operand.to_ascii_lowercase();
    // `x.is_some()`, `x.len()`, `x.is_empty()` say nothing about the secret's value.
    let about_value = !["is_some()", "is_none()", "len()", "is_empty()"]
        .iter()
        .any(|m| lower.ends_with(m));
    about_value && SECRET_WORDS.iter().any(|w| lower.contains(w))
}

#[test]
fn no_secret_is_compared_with_eq() {
    let files = common::rust_sources(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(files.len() > 20, "read the sources: {files:?}");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in production(&text) {
            for op in operands(&line).into_iter().filter(|o| names_a_secret(o)) {
                found.push(format!("{}:{n}: `{op}` in `{}`", f.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "compare secrets with auth::secret_eq / Secret::ct_eq:\n{}",
        found.join("\n")
    );
}

#[test]
fn secret_eq_goes_through_subtle() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/auth.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("pub fn secret_eq(")
        .expect("auth::secret_eq exists");
    let body = &text[start..start + text[start..].find("\n}\n").expect("its end")];
    assert!(
        body.contains(".ct_eq("),
        "secret_eq must use subtle's ct_eq:\n{body}"
    );
    assert!(
        body.contains("hash("),
        "secret_eq compares hashes, so lengths do not leak:\n{body}"
    );
    assert!(
        !body.contains("==") && !body.contains("!="),
        "no == in secret_eq:\n{body}"
    );
}

#[test]
fn the_checker_sees_what_it_looks_for() {
    let hits = |l: &str| {
        operands(l)
            .into_iter()
            .filter(|o| names_a_secret(o))
            .count()
    };
    assert_eq!(hits("    a == b"), 0);
    assert_eq!(hits("    if c.password == password {"), 2);
    assert_eq!(hits("    ok = token.as_bytes() != stored;"), 1);
    assert_eq!(hits("    self.password.expose() == other"), 1);
    assert_eq!(
        hits("    if x.password.is_some() != y.token.is_some() {"),
        0
    );
    assert_eq!(hits("    let n = a.len() == b.len();"), 0);
    assert_eq!(hits("    x <= secret_len"), 0, "not an equality");
    // A comparison broken over lines (as rustfmt breaks long ones) is read whole.
    let joined =
        production("let a = x.password\n    != y;\nlet b = t ==\n    token;\nlet c = 1;\n");
    assert_eq!(joined.len(), 3, "{joined:?}");
    assert_eq!((joined[0].0, hits(&joined[0].1)), (1, 1));
    assert_eq!((joined[1].0, hits(&joined[1].1)), (3, 1));
}
