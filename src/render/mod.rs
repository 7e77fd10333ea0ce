//! The tera side: loading `templates/`, the escaping policy, the purpose-built render
//! context, and turning a merged phone into bytes. Never reads the store, the request or
//! the cache.

pub mod context;
pub mod explain;
pub mod overlay;
pub mod xml;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use context::{LineInput, PhoneInput, RenderContext};

use crate::model::FileSpec;

/// A template that does not load or render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The templates folder could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A template failed to parse or render.
    #[error("template `{template}`")]
    Template {
        /// The template name.
        template: String,
        /// tera's error, with line and column.
        #[source]
        source: Box<tera::Error>,
    },
    /// A template produced XML that does not parse, so overrides cannot be placed.
    #[error("template `{template}` produced malformed XML")]
    Xml {
        /// The template name.
        template: String,
        /// Where and why.
        #[source]
        source: xml::XmlError,
    },
}

/// The loaded templates.
#[derive(Debug)]
pub struct Engine {
    tera: tera::Tera,
    sources: std::collections::HashMap<String, String>,
    digest: [u8; 32],
}

/// XML escaping without rewriting `/` (phone firmware does not decode `&#x2F;`).
fn escape_xml(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut last = 0;
    for (i, b) in input.bytes().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            _ => continue,
        };
        out.write_all(&input.as_bytes()[last..i])?;
        out.write_all(rep)?;
        last = i + 1;
    }
    out.write_all(&input.as_bytes()[last..])
}

/// True for a non-empty string of ASCII digits (`"0"`, `"1440"`; not `""`, `"-1"`, `"1.5"`,
/// `" 1"`, or a number value).
fn is_digits(value: &tera::Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Generic helpers every template may use (nothing model-specific: a new model still needs
/// no recompile). `x is digits`: [`is_digits`], the check templates make before `| int` on a
/// setting typed by an admin (a chain of ten `replace` filters did it before, and each
/// filter call builds its keyword map and a new string: a large share of a render).
fn register_helpers(tera: &mut tera::Tera) {
    tera.register_test(
        "digits",
        |value: &tera::Value, _: tera::Kwargs, _: &tera::State| is_digits(value),
    );
}

impl Engine {
    /// Loads every file under `dir` (recursively) as a template named by its relative path.
    pub fn load(dir: &Path) -> Result<Self, RenderError> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        files.sort();
        let mut sources = Vec::new();
        for (name, path) in files {
            let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Io {
                path: path.clone(),
                source,
            })?;
            sources.push((name, text));
        }
        Self::from_sources(sources)
    }

    /// Builds the engine from (name, source) pairs.
    pub fn from_sources(sources: Vec<(String, String)>) -> Result<Self, RenderError> {
        let mut tera = tera::Tera::new();
        // Escaping policy: XML templates escape with an XML escaper; key=value templates are
        // not escaped (the admin API refuses line breaks in every value a user types).
        tera.set_escape_fn(escape_xml);
        tera.autoescape_on([".xml"]);
        register_helpers(&mut tera);
        let mut h = Sha256::new();
        for (name, text) in &sources {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
            tera.add_raw_template(name, text)
                .map_err(|source| RenderError::Template {
                    template: name.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(Engine {
            tera,
            sources: sources.into_iter().collect(),
            digest: h.finalize().into(),
        })
    }

    /// True when a template of that name is loaded.
    pub fn has(&self, name: &str) -> bool {
        self.tera.contains_template(name)
    }

    /// A template's source text.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.sources.get(name).map(String::as_str)
    }

    /// Every template name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut v: Vec<&str> = self.sources.keys().map(String::as_str).collect();
        v.sort_unstable();
        v.into_iter()
    }

    /// Digest of every template's name and text.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Renders `file` for `ctx`, then overlays `overrides`.
    pub fn render(
        &self,
        file: &FileSpec,
        ctx: &RenderContext,
        overrides: &crate::model::Overrides,
    ) -> Result<Vec<u8>, RenderError> {
        let tctx = ctx.to_tera();
        let text =
            self.tera
                .render(&file.template, &tctx)
                .map_err(|source| RenderError::Template {
                    template: file.template.clone(),
                    source: Box::new(source),
                })?;
        let none = crate::model::Overrides::default();
        let overrides = if file.overrides { overrides } else { &none };
        let out = overlay::apply(
            file.format,
            &text,
            overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|source| RenderError::Xml {
            template: file.template.clone(),
            source,
        })?;
        Ok(out.into_bytes())
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), RenderError> {
    let rd = std::fs::read_dir(dir).map_err(|source| RenderError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| RenderError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if !name.starts_with('.') && !name.contains("/.") {
                out.push((name, path));
            }
        }
    }
    Ok(())
}

/// Prints an error with every source in turn (tera's detail sits in the chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validation the shipped templates made with `replace` chains, and what they make
    /// now with `is digits`: the same verdict for every string up to five characters over an
    /// alphabet of signs, colons, digits, a non-ASCII digit, a letter and spaces.
    #[test]
    fn digits_test_matches_the_replace_chains() {
        const DIGITS_GONE: &str = "| replace(from=\"0\", to=\"\") | replace(from=\"1\", to=\"\") \
            | replace(from=\"2\", to=\"\") | replace(from=\"3\", to=\"\") \
            | replace(from=\"4\", to=\"\") | replace(from=\"5\", to=\"\") \
            | replace(from=\"6\", to=\"\") | replace(from=\"7\", to=\"\") \
            | replace(from=\"8\", to=\"\") | replace(from=\"9\", to=\"\")";
        let head = "{%- set tz = v | trim %}\
            {%- set tz_body = tz | replace(from=\"+\", to=\"\") | replace(from=\"-\", to=\"\") %}\
            {%- set tz_parts = tz_body | split(pat=\":\") %}";
        let old = format!(
            "{head}{{%- set tz_junk = tz_body | replace(from=\":\", to=\"\") {DIGITS_GONE} %}}\
             {{%- set tz_ok = tz_junk == \"\" and tz_body != \"\" and tz_parts | length <= 2 \
             and \"\" not in tz_parts and (tz == tz_body or tz == \"+\" ~ tz_body or tz == \"-\" ~ tz_body) %}}\
             {{%- set junk = tz {DIGITS_GONE} %}}\
             {{{{ tz_ok }}}} {{{{ tz != \"\" and junk == \"\" }}}}"
        );
        let new = format!(
            "{head}{{%- set tz_ok = tz_parts | length <= 2 and (tz_parts | first) is digits \
             and (tz_parts | last) is digits and (tz == tz_body or tz == \"+\" ~ tz_body or tz == \"-\" ~ tz_body) %}}\
             {{{{ tz_ok }}}} {{{{ tz is digits }}}}"
        );
        let mut tera = tera::Tera::new();
        register_helpers(&mut tera);
        tera.add_raw_template("old", &old).unwrap();
        tera.add_raw_template("new", &new).unwrap();
        let alphabet = ['+', '-', ':', '0', '9', 'a', ' ', '\u{661}'];
        let mut inputs = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..5 {
            level = level
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            inputs.extend(level.iter().cloned());
        }
        let mut ok = 0;
        for v in &inputs {
            let mut ctx = tera::Context::new();
            ctx.insert("v", v);
            let want = tera.render("old", &ctx).unwrap();
            let got = tera.render("new", &ctx).unwrap();
            assert_eq!(got, want, "{v:?}");
            ok += usize::from(want.starts_with("true"));
        }
        // The rule accepts some of them ("+5:30", "09", ...), so the comparison means something.
        assert!(ok > 100, "{ok}");
    }

    #[test]
    fn digits_is_ascii_digits_only() {
        for (v, want) in [
            ("0", true),
            ("1440", true),
            ("", false),
            ("-1", false),
            ("1.5", false),
            (" 1", false),
            ("\u{661}", false),
        ] {
            assert_eq!(is_digits(&tera::Value::from(v)), want, "{v:?}");
        }
        assert!(!is_digits(&tera::Value::from(5)));
    }
}
