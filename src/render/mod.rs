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
