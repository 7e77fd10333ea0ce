//! The swappable model + template set and its hot reload.
//!
//! [`Templates`] is one consistent set: the catalogue, the engine and a digest per model.
//! `AppState` holds it in an `ArcSwap`; a request loads it once (`st.templates()`) and uses
//! that snapshot throughout, so it never mixes an old catalogue with a new engine.
//!
//! A model's digest covers its model file, the templates its files can reach (see
//! [`Templates::build`]) and the server defaults. Cache entries are valid only for the digest
//! of the phone's model, so after a reload only phones of models whose digest changed
//! re-render.
//!
//! [`reload`] (SIGHUP and `POST /api/v1/reload`) builds a whole new set from the configured
//! folders, validates it like startup does (every model parses; every model's files render
//! for the sample phone of [`crate::model::sample_phone`]), then swaps it in. On any failure the old
//! set stays and the error names the file (and line where tera or toml give one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use arc_swap::ArcSwap;

use crate::model::catalogue::CatalogueError;
use crate::model::{AuthScheme, Catalogue, Settings};
use crate::render::{Engine, LineInput, PhoneInput, RenderContext, RenderError};
use crate::store::{Change, Store};

/// Why a model + template set does not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A model file.
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    /// A template.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A model whose template fails on a sample phone.
    #[error("model `{model}`, file `{file}`: template does not render")]
    Sample {
        /// Model id.
        model: String,
        /// File name.
        file: String,
        /// Cause.
        #[source]
        source: Box<RenderError>,
    },
}

/// The set phones are served from and what a reload needs: one of the server state's
/// parts. Requests read it through [`Live::load`] (one atomic load); a reload swaps it
/// whole.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Templates>,
    /// The folders a reload reads.
    pub sources: Sources,
    /// Held while a reload runs (one at a time).
    pub lock: std::sync::Mutex<()>,
}

impl Live {
    /// `templates`, loaded from `sources`.
    pub fn new(templates: Templates, sources: Sources) -> Self {
        Live {
            current: ArcSwap::from_pointee(templates),
            sources,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// The current set: load it once per request and use that snapshot throughout.
    pub fn load(&self) -> arc_swap::Guard<Arc<Templates>> {
        self.current.load()
    }
}

/// One consistent model + template set.
#[derive(Debug)]
pub struct Templates {
    /// Models.
    pub catalogue: Catalogue,
    /// Templates.
    pub engine: Engine,
    /// Digest per model id (model file + reachable templates + server defaults).
    digests: BTreeMap<String, u64>,
}

impl Templates {
    /// Loads templates and models from their folders and checks that every model's files
    /// render for a sample phone.
    pub fn load(templates: &Path, models: &Path, server: &Settings) -> Result<Self, LoadError> {
        let engine = Engine::load(templates)?;
        let catalogue = Catalogue::load(models, &|t| engine.has(t))?;
        check_samples(&catalogue, &engine, server)?;
        Ok(Self::build(catalogue, engine, server))
    }

    /// Computes the per-model digests of an already validated set.
    ///
    /// The templates a model depends on are its files' templates, closed over every template
    /// whose name appears quoted in a dependency's source (`{% include "x" %}`,
    /// `{% extends "x" %}`), plus, conservatively, every template that is no model's file
    /// template (partials) and every template that defines a component (tera 2 components
    /// are global). A change to any of those changes the model's digest.
    pub fn build(catalogue: Catalogue, engine: Engine, server: &Settings) -> Self {
        let names: Vec<&str> = engine.names().collect();
        let direct: BTreeSet<&str> = catalogue
            .models()
            .flat_map(|m| m.files.iter().map(|f| f.template.as_str()))
            .collect();
        let shared: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| {
                !direct.contains(n) || engine.source(n).is_some_and(|s| s.contains("component"))
            })
            .collect();
        let server_json = serde_json::to_vec(server).unwrap_or_default();
        let mut digests = BTreeMap::new();
        for m in catalogue.models() {
            let mut deps: BTreeSet<&str> = BTreeSet::new();
            let mut todo: Vec<&str> = m.files.iter().map(|f| f.template.as_str()).collect();
            todo.extend(shared.iter().copied());
            while let Some(t) = todo.pop() {
                if !deps.insert(t) {
                    continue;
                }
                let Some(src) = engine.source(t) else {
                    continue;
                };
                for n in &names {
                    if !deps.contains(n)
                        && (src.contains(&format!("\"{n}\"")) || src.contains(&format!("'{n}'")))
                    {
                        todo.push(n);
                    }
                }
            }
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(m).unwrap_or_default());
            h.update([0]);
            for t in &deps {
                h.update(t.as_bytes());
                h.update([0]);
                h.update(engine.source(t).unwrap_or_default().as_bytes());
                h.update([0]);
            }
            h.update(&server_json);
            let full: [u8; 32] = h.finalize().into();
            let mut d8 = [0u8; 8];
            d8.copy_from_slice(&full[..8]);
            digests.insert(m.id.clone(), u64::from_be_bytes(d8));
        }
        Templates {
            catalogue,
            engine,
            digests,
        }
    }

    /// The digest cache entries of `model`'s phones (and common files) are valid for.
    pub fn digest(&self, model: &str) -> u64 {
        self.digests.get(model).copied().unwrap_or_default()
    }

    /// Digest of the whole set (kept in the store, to drop stale renders at startup).
    pub fn set_digest(&self) -> [u8; 8] {
        let mut h = Sha256::new();
        for (id, d) in &self.digests {
            h.update(id.as_bytes());
            h.update([0]);
            h.update(d.to_be_bytes());
        }
        let full: [u8; 32] = h.finalize().into();
        let mut d8 = [0u8; 8];
        d8.copy_from_slice(&full[..8]);
        d8
    }
}

/// A new set that failed validation, located: the file, and the line (and the model field)
/// where the parser said.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ReloadError {
    /// The file at fault (a template or model file path).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The model field, for a model file with a bad value.
    pub field: Option<String>,
    /// What is wrong (one line).
    pub message: String,
}

impl ReloadError {
    fn describe(&self) -> String {
        let mut s = self.file.clone();
        if let Some(l) = self.line {
            s.push_str(&format!(":{l}"));
            if let Some(c) = self.column {
                s.push_str(&format!(":{c}"));
            }
        }
        if let Some(f) = &self.field {
            s.push_str(&format!(": field `{f}`"));
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }

    /// Locates a load or validation error (`templates` is the templates folder, to turn a
    /// template name into a path).
    pub fn locate(e: &LoadError, templates: &Path) -> Self {
        match e {
            LoadError::Render(r) => from_render(r, templates, None),
            LoadError::Sample {
                model,
                file,
                source,
            } => from_render(
                source,
                templates,
                Some(format!("(model `{model}`, file `{file}`, sample phone)")),
            ),
            LoadError::Catalogue(c) => from_catalogue(c),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn from_render(r: &RenderError, templates: &Path, context: Option<String>) -> ReloadError {
    let with = |m: String| match &context {
        Some(c) => format!("{m} {c}"),
        None => m,
    };
    let path = |name: &str| templates.join(name).display().to_string();
    match r {
        RenderError::Io { path: p, source } => ReloadError {
            file: p.display().to_string(),
            line: None,
            column: None,
            field: None,
            message: with(format!("cannot read: {source}")),
        },
        RenderError::Template { template, source } => {
            let (file, line, column, message) = match source.kind() {
                tera::ErrorKind::SyntaxError(rep) | tera::ErrorKind::RenderingError(rep) => {
                    let name = if rep.filename().is_empty() {
                        template.as_str()
                    } else {
                        rep.filename()
                    };
                    (
                        path(name),
                        Some(rep.span().start_line),
                        Some(rep.span().start_col + 1),
                        one_line(rep.message()),
                    )
                }
                kind => (path(template), None, None, one_line(&kind.to_string())),
            };
            ReloadError {
                file,
                line,
                column,
                field: None,
                message: with(message),
            }
        }
        RenderError::Xml { template, source } => ReloadError {
            file: path(template),
            line: None,
            column: None,
            field: None,
            message: with(one_line(&format!(
                "produced malformed XML: {}",
                crate::render::error_chain(source)
            ))),
        },
    }
}

fn from_catalogue(c: &CatalogueError) -> ReloadError {
    match c {
        CatalogueError::Io { path, source } => ReloadError {
            file: path.display().to_string(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot read: {source}"),
        },
        CatalogueError::Parse { path, message } => {
            let (line, column) = toml_position(message);
            ReloadError {
                file: path.display().to_string(),
                line,
                column,
                field: None,
                message: message.clone(),
            }
        }
        CatalogueError::Field {
            path,
            field,
            message,
        } => ReloadError {
            file: path.display().to_string(),
            line: field_line(path, field),
            column: None,
            field: Some(field.clone()),
            message: message.clone(),
        },
        CatalogueError::Empty(dir) => ReloadError {
            file: dir.display().to_string(),
            line: None,
            column: None,
            field: None,
            message: "no model files (*.toml)".into(),
        },
    }
}

/// `TOML parse error at line 3, column 9 …` → (3, 9).
fn toml_position(message: &str) -> (Option<usize>, Option<usize>) {
    let num = |key: &str| {
        let rest = &message[message.find(key)? + key.len()..];
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    (num("line "), num("column "))
}

/// The line where a model file sets `field`: plain keys (`ports`) and `defaults.<key>` are
/// found; fields inside `[[files]]` (`files[1].template`) are not located (None).
fn field_line(path: &Path, field: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    let key = field
        .split(['.', '['])
        .next_back()
        .filter(|_| !field.contains('['));
    let key = key?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// What a successful reload changed.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Reloaded {
    /// Models now loaded.
    pub models: usize,
    /// Models new or whose digest changed (their phones re-render on the next fetch).
    pub changed: Vec<String>,
    /// Models whose digest is unchanged (their cached renders stay valid).
    pub unchanged: usize,
    /// Models no longer loaded.
    pub removed: Vec<String>,
}

/// The folders a reload reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The templates folder.
    pub templates: PathBuf,
    /// The models folder.
    pub models: PathBuf,
}

/// Loads and validates a new set from the configured folders and swaps it in; on failure
/// the old set stays. Reloads run one at a time. Blocking (file reads, renders): call it on
/// a blocking thread. `trigger` (`SIGHUP`, `POST /api/v1/reload`) goes into the one log
/// line each reload writes.
/// `digest_in_use` is raised when a model of the new set asks for Digest; the set's digest
/// is recorded in `store` so a restart keeps the cached renders.
pub fn reload(
    live: &Live,
    server: &Settings,
    store: &Store,
    digest_in_use: &AtomicBool,
    trigger: &'static str,
) -> Result<Reloaded, ReloadError> {
    let _one = live.lock.lock().unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let new = match Templates::load(&live.sources.templates, &live.sources.models, server) {
        Ok(t) => t,
        Err(e) => {
            let e = ReloadError::locate(&e, &live.sources.templates);
            tracing::warn!(
                trigger,
                error = %e,
                ms = started.elapsed().as_millis() as u64,
                "reload failed; the previous models and templates stay in use"
            );
            return Err(e);
        }
    };
    let old = live.current.load_full();
    let changed: Vec<String> = new
        .digests
        .iter()
        .filter(|(id, d)| old.digests.get(*id) != Some(*d))
        .map(|(id, _)| id.clone())
        .collect();
    let removed: Vec<String> = old
        .digests
        .keys()
        .filter(|id| !new.digests.contains_key(*id))
        .cloned()
        .collect();
    let summary = Reloaded {
        models: new.digests.len(),
        unchanged: new.digests.len() - changed.len(),
        changed,
        removed,
    };
    if new
        .catalogue
        .models()
        .any(|m| m.auth_scheme == AuthScheme::Digest)
    {
        digest_in_use.store(true, Ordering::Relaxed);
    }
    let set_digest = new.set_digest();
    live.current.store(Arc::new(new));
    // Only so a restart with these files keeps the cached renders; failure costs re-renders.
    let mut change = Change::default();
    change
        .meta
        .push(("render_digest".into(), set_digest.to_vec()));
    if let Err(e) = store.commit(&change) {
        tracing::warn!(error = %crate::render::error_chain(&e), "recording the set digest failed");
    }
    tracing::info!(
        trigger,
        models = summary.models,
        changed = ?summary.changed,
        removed = ?summary.removed,
        unchanged = summary.unchanged,
        ms = started.elapsed().as_millis() as u64,
        "models and templates reloaded"
    );
    Ok(summary)
}

/// Renders every model's files for a sample phone, so a template that cannot render stops
/// startup (or a reload) instead of failing a phone later.
pub fn check_samples(
    catalogue: &Catalogue,
    engine: &Engine,
    server: &Settings,
) -> Result<(), LoadError> {
    for m in catalogue.models() {
        let (phone, accounts) = crate::model::sample_phone(m, "sample.invalid");
        let lines: Vec<LineInput<'_>> = phone
            .members
            .iter()
            .zip(&accounts)
            .map(|(member, account)| LineInput { member, account })
            .collect();
        for f in &m.files {
            let input = PhoneInput {
                model: m,
                server,
                domain: None,
                phone: f.per_phone().then_some(&phone),
                lines: if f.per_phone() {
                    lines.clone()
                } else {
                    Vec::new()
                },
            };
            engine
                .render(f, &RenderContext::build(&input), &Default::default())
                .map_err(|source| LoadError::Sample {
                    model: m.id.clone(),
                    file: f.name.clone(),
                    source: Box::new(source),
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_positions_are_read() {
        assert_eq!(
            toml_position("TOML parse error at line 3, column 9 | 3 | x = | ^"),
            (Some(3), Some(9))
        );
        assert_eq!(toml_position("no position"), (None, None));
    }

    fn set(templates: &[(&str, &str)]) -> Templates {
        let engine = Engine::from_sources(
            templates
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
        )
        .unwrap();
        let model = |id: &str, t: &str| {
            Catalogue::parse_model(
                Path::new("m.toml"),
                id,
                &format!(
                    "id = \"{id}\"\nvendor = \"v\"\nname = \"n\"\nports = 1\nline_keys = 1\n\
                     [[files]]\nname = \"{{mac}}-{id}.cfg\"\ntemplate = \"{t}\"\n\
                     content_type = \"text/plain\"\nformat = \"key-value\"\n"
                ),
                &|_| true,
            )
            .unwrap()
        };
        let cat = Catalogue::from_models(vec![model("a", "a.cfg"), model("b", "b.cfg")]).unwrap();
        Templates::build(cat, engine, &Settings::default())
    }

    // Templates are added in name order and tera 2 checks an include when the including
    // template is added, so an included template must sort first (`_part.cfg`).
    #[test]
    fn a_model_digest_follows_only_the_templates_it_reaches() {
        let base = set(&[
            ("_part.cfg", "p"),
            ("a.cfg", "{% include \"_part.cfg\" %}a"),
            ("b.cfg", "b"),
        ]);
        let a_changed = set(&[
            ("_part.cfg", "p"),
            ("a.cfg", "{% include \"_part.cfg\" %}A"),
            ("b.cfg", "b"),
        ]);
        assert_ne!(base.digest("a"), a_changed.digest("a"));
        assert_eq!(base.digest("b"), a_changed.digest("b"));
        assert_ne!(base.set_digest(), a_changed.set_digest());
        // A partial is shared conservatively: both models change.
        let part_changed = set(&[
            ("_part.cfg", "P"),
            ("a.cfg", "{% include \"_part.cfg\" %}a"),
            ("b.cfg", "b"),
        ]);
        assert_ne!(base.digest("a"), part_changed.digest("a"));
        assert_ne!(base.digest("b"), part_changed.digest("b"));
        // Another model's file template included by this model's template is a dependency;
        // the including model's own template is not one of the included model's.
        let inc = set(&[("a.cfg", "a"), ("b.cfg", "{% include \"a.cfg\" %}")]);
        let inc2 = set(&[("a.cfg", "A"), ("b.cfg", "{% include \"a.cfg\" %}")]);
        assert_ne!(inc.digest("b"), inc2.digest("b"));
        let inc3 = set(&[("a.cfg", "a"), ("b.cfg", "{% include \"a.cfg\" %}B")]);
        assert_eq!(inc.digest("a"), inc3.digest("a"));
    }
}
