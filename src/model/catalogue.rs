//! The model catalogue: loading and validating `models/*.toml`, and matching a phone's
//! request path against the file names the models declare.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use smallvec::SmallVec;

use super::mac::Mac;
use super::records::AuthScheme;
use super::settings::{self, Settings};

/// How a file's overrides are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `key = value` lines (Yealink).
    KeyValue,
    /// XML whose settings are attributes on any element (Polycom).
    XmlAttribute,
    /// XML whose settings are leaf elements (Grandstream P-values, Cisco flat profile,
    /// Snom `<phone-settings>`, Fanvil `<sysConf>`).
    XmlElement,
}

impl Format {
    /// True for the XML formats (their templates are escaped as XML).
    pub fn is_xml(self) -> bool {
        matches!(self, Format::XmlAttribute | Format::XmlElement)
    }
}

/// One file a model requests.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Name pattern; `{mac}` (lowercase) or `{MAC}` (uppercase) stands for the MAC.
    pub name: String,
    /// Template name under `templates/`.
    pub template: String,
    /// Content-Type served.
    pub content_type: String,
    /// Overlay format.
    pub format: Format,
    /// Whether per-MAC overrides are applied to this file (false for boot, master and
    /// index files, which only point at other files).
    #[serde(default = "yes")]
    pub overrides: bool,
}

fn yes() -> bool {
    true
}

impl FileSpec {
    /// True when the file is per-phone (its name holds the MAC).
    pub fn per_phone(&self) -> bool {
        self.name.contains("{mac}") || self.name.contains("{MAC}")
    }

    /// The name as [`Catalogue::match_path`] reports it: lowercase, MAC as `{mac}`.
    pub fn pattern(&self) -> String {
        self.name.replace("{MAC}", "{mac}").to_ascii_lowercase()
    }
}

/// A phone model as declared in `models/<id>.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Identifier, equal to the file stem (`yealink-t46s`).
    pub id: String,
    /// Vendor (`yealink`).
    pub vendor: String,
    /// Human name (`Yealink SIP-T46S`).
    pub name: String,
    /// Number of ports (SIP accounts) members can occupy.
    pub ports: u32,
    /// Number of programmable line keys.
    pub line_keys: u32,
    /// Analog telephone adapter (the only kind that accepts T.38).
    #[serde(default)]
    pub ata: bool,
    /// The model token in the HTTP User-Agent (`SIP-T46S`).
    #[serde(default)]
    pub user_agent_model: Option<String>,
    /// `basic` (default) or `digest` for phones that speak only HTTP Digest (Gigaset).
    #[serde(default, skip_serializing_if = "AuthScheme::is_basic")]
    pub auth_scheme: AuthScheme,
    /// Files the model requests.
    pub files: Vec<FileSpec>,
    /// Model defaults (the lowest contract layer).
    #[serde(default)]
    pub defaults: BTreeMap<String, toml::Value>,
    /// Model defaults as validated strings.
    #[serde(skip)]
    pub settings: Settings,
}

/// A model file that does not load.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The folder or a file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML for a model.
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// What the parser said, with the field.
        message: String,
    },
    /// A field has a bad value.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        /// The path.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No model at all.
    #[error("no model files (*.toml) in {0}")]
    Empty(PathBuf),
}

/// Every loaded model, plus the path matcher.
#[derive(Debug, Default)]
pub struct Catalogue {
    models: BTreeMap<String, Model>,
    /// Exact common-file names (lowercase) → model ids that request them.
    common: HashMap<String, Vec<String>, foldhash::fast::RandomState>,
    /// Per-phone name patterns split at `{mac}`.
    patterns: Patterns,
}

/// Per-phone name patterns split at `{mac}`, longest first. Matching a name runs on every
/// phone request, where the heap strings of each pattern were cache misses: the lengths
/// are scanned first in one small array, so only patterns of the name's length are
/// compared, and their two sides are held inline.
#[derive(Debug, Default)]
struct Patterns {
    /// The length of a name each pattern matches (prefix + 12 + suffix), in `splits` order.
    lens: Vec<usize>,
    splits: Vec<Split>,
}

/// One pattern: the bytes before and after `{mac}`, and the whole pattern.
#[derive(Debug)]
struct Split {
    pre: SmallVec<[u8; 16]>,
    suf: SmallVec<[u8; 16]>,
    pattern: Arc<str>,
}

impl Patterns {
    fn push(&mut self, pre: &str, suf: &str, pattern: &str) {
        if self.splits.iter().any(|s| *s.pattern == *pattern) {
            return;
        }
        self.splits.push(Split {
            pre: SmallVec::from_slice(pre.as_bytes()),
            suf: SmallVec::from_slice(suf.as_bytes()),
            pattern: pattern.into(),
        });
        // Longest first, so `{mac}-local.cfg` wins over `{mac}.cfg`-like overlaps.
        self.splits
            .sort_by_key(|s| std::cmp::Reverse(s.pre.len() + s.suf.len()));
        self.lens = self
            .splits
            .iter()
            .map(|s| s.pre.len() + 12 + s.suf.len())
            .collect();
    }

    /// The first pattern `lower` (lowercase) matches, with the MAC in it.
    fn find(&self, lower: &str) -> Option<(Mac, &Arc<str>)> {
        let b = lower.as_bytes();
        self.lens
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n == b.len())
            .find_map(|(i, _)| {
                let s = self.splits.get(i)?;
                if !(b.starts_with(&s.pre) && b.ends_with(&s.suf)) {
                    return None;
                }
                let mid = lower.get(s.pre.len()..s.pre.len() + 12)?;
                Mac::parse_plain(mid).ok().map(|mac| (mac, &s.pattern))
            })
    }
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// A per-phone file: the MAC and the pattern it matched (`{mac}.cfg`).
    Phone {
        /// The MAC in the name.
        mac: Mac,
        /// The declared pattern (lowercase, MAC as `{mac}`), shared with the catalogue.
        pattern: Arc<str>,
    },
    /// A common file shared by the listed models.
    Common {
        /// The file name as declared.
        name: String,
        /// The models that request it.
        models: Vec<String>,
    },
}

impl Catalogue {
    /// Loads every `*.toml` in `dir`, checking each against `template_exists`.
    pub fn load(
        dir: &Path,
        template_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Self, CatalogueError> {
        let io = |source| CatalogueError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(CatalogueError::Empty(dir.to_path_buf()));
        }
        let mut models = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| CatalogueError::Io {
                path: path.clone(),
                source,
            })?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            models.push(Self::parse_model(&path, &stem, &text, template_exists)?);
        }
        Self::from_models(models)
    }

    /// Parses and validates one model file's text.
    pub fn parse_model(
        path: &Path,
        stem: &str,
        text: &str,
        template_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Model, CatalogueError> {
        let mut m: Model = toml::from_str(text).map_err(|e| CatalogueError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let field = |field: &str, message: String| CatalogueError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        if m.id != stem {
            return Err(field("id", format!("must equal the file name `{stem}`")));
        }
        if !settings::valid_key(&m.id) {
            return Err(field(
                "id",
                "must be lowercase letters, digits, `-`, `.` or `_`".into(),
            ));
        }
        if m.ports == 0 || m.ports > 64 {
            return Err(field("ports", "must be from 1 to 64".into()));
        }
        if m.files.is_empty() {
            return Err(field("files", "must list at least one file".into()));
        }
        for (i, f) in m.files.iter().enumerate() {
            let n = f.name.matches("{mac}").count() + f.name.matches("{MAC}").count();
            if n > 1 || f.name.is_empty() || f.name.contains('/') {
                return Err(field(
                    &format!("files[{i}].name"),
                    "must be a file name with at most one {mac} or {MAC}".into(),
                ));
            }
            if !template_exists(&f.template) {
                return Err(field(
                    &format!("files[{i}].template"),
                    format!("no template `{}` in the templates folder", f.template),
                ));
            }
            if f.format.is_xml() && !f.template.ends_with(".xml") {
                return Err(field(
                    &format!("files[{i}].template"),
                    "an XML file must be rendered from a template whose name ends in .xml \
                     (so values are XML-escaped)"
                        .into(),
                ));
            }
            if f.content_type.parse::<http_content_type::Check>().is_err() {
                return Err(field(
                    &format!("files[{i}].content_type"),
                    "is not a media type".into(),
                ));
            }
        }
        for (k, v) in &m.defaults {
            let key = format!("defaults.{k}");
            if !settings::valid_key(k) {
                return Err(field(&key, "is not a valid setting name".into()));
            }
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => return Err(field(&key, "must be a string, integer or boolean".into())),
            };
            settings::check_value(k, &s).map_err(|msg| field(&key, msg))?;
            m.settings.insert(k.clone(), s);
        }
        Ok(m)
    }

    /// Builds the catalogue and its path matcher.
    pub fn from_models(list: Vec<Model>) -> Result<Self, CatalogueError> {
        let mut cat = Catalogue::default();
        for m in list {
            for f in &m.files {
                if f.per_phone() {
                    let pattern = f.pattern();
                    if let Some((pre, suf)) = pattern.split_once("{mac}") {
                        cat.patterns.push(pre, suf, &pattern);
                    }
                } else {
                    cat.common
                        .entry(f.name.to_ascii_lowercase())
                        .or_default()
                        .push(m.id.clone());
                }
            }
            cat.models.insert(m.id.clone(), m);
        }
        Ok(cat)
    }

    /// A model by id.
    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }

    /// Every model, ordered by id.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// Maps a request path (without the leading `/`) to the file it names, case-insensitively.
    pub fn match_path(&self, file: &str) -> Option<FileRef> {
        if file.len() > 128 || !file.is_ascii() {
            return None;
        }
        // Copied only when it has capitals to lower.
        let lower = if file.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(file.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(file)
        };
        if let Some(models) = self.common.get(lower.as_ref()) {
            return Some(FileRef::Common {
                name: lower.into_owned(),
                models: models.clone(),
            });
        }
        let (mac, pattern) = self.patterns.find(&lower)?;
        Some(FileRef::Phone {
            mac,
            pattern: pattern.clone(),
        })
    }

    /// The spec of `pattern` (lowercased `{mac}` form) or common `name` in model `id`.
    pub fn file_spec(&self, id: &str, name: &str) -> Option<&FileSpec> {
        self.get(id)?
            .files
            .iter()
            // `{MAC}` and `{mac}` are equal ignoring ASCII case, like the rest of the name.
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

/// Minimal media-type syntax check (`type/subtype[; params]`).
mod http_content_type {
    pub struct Check;
    impl std::str::FromStr for Check {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s.split(';').next().unwrap_or("").trim();
            match essence.split_once('/') {
                Some((t, st)) if !t.is_empty() && !st.is_empty() && !s.contains(['\r', '\n']) => {
                    Ok(Check)
                }
                _ => Err(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T46S: &str = r#"
id = "yealink-t46s"
vendor = "yealink"
name = "Yealink SIP-T46S"
ports = 16
line_keys = 27
[[files]]
name = "y000000000066.cfg"
template = "yealink/common.cfg"
content_type = "text/plain"
format = "key-value"
[[files]]
name = "{mac}.cfg"
template = "yealink/mac.cfg"
content_type = "text/plain"
format = "key-value"
[defaults]
"ntp-server" = "pool.ntp.org"
"#;

    fn cat() -> Catalogue {
        let m =
            Catalogue::parse_model(Path::new("m.toml"), "yealink-t46s", T46S, &|_| true).unwrap();
        Catalogue::from_models(vec![m]).unwrap()
    }

    #[test]
    fn matches_paths() {
        let c = cat();
        let mac = Mac::parse("001565aabbcc").unwrap();
        assert_eq!(
            c.match_path("001565AABBCC.cfg"),
            Some(FileRef::Phone {
                mac,
                pattern: "{mac}.cfg".into()
            })
        );
        assert!(matches!(
            c.match_path("y000000000066.cfg"),
            Some(FileRef::Common { .. })
        ));
        assert_eq!(c.match_path("001565aabbc.cfg"), None);
        assert_eq!(c.match_path("../001565aabbcc.cfg"), None);
        assert_eq!(c.match_path("001565aabbcc.xml"), None);
        assert!(c.file_spec("yealink-t46s", "{mac}.cfg").is_some());
    }

    /// The matcher as it was before the lengths were indexed: every pattern in order,
    /// compared in full. The reference for the property test below.
    fn reference(c: &Catalogue, file: &str) -> Option<FileRef> {
        if file.len() > 128 || !file.is_ascii() {
            return None;
        }
        let lower = file.to_ascii_lowercase();
        if let Some(models) = c.common.get(&lower) {
            return Some(FileRef::Common {
                name: lower,
                models: models.clone(),
            });
        }
        c.patterns.splits.iter().find_map(|s| {
            let (pre, suf) = (s.pre.as_slice(), s.suf.as_slice());
            let b = lower.as_bytes();
            if b.len() != pre.len() + 12 + suf.len() || !b.starts_with(pre) || !b.ends_with(suf) {
                return None;
            }
            let mac = Mac::parse_plain(&lower[pre.len()..pre.len() + 12]).ok()?;
            Some(FileRef::Phone {
                mac,
                pattern: s.pattern.clone(),
            })
        })
    }

    fn shipped() -> &'static Catalogue {
        static CAT: std::sync::LazyLock<Catalogue> = std::sync::LazyLock::new(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
            Catalogue::load(&dir, &|_| true).unwrap()
        });
        &CAT
    }

    #[test]
    fn shipped_patterns_are_longest_first_and_indexed() {
        let c = shipped();
        let p = &c.patterns;
        assert!(p.splits.len() >= 6, "{:?}", p.splits);
        assert_eq!(p.lens.len(), p.splits.len());
        for (s, n) in p.splits.iter().zip(&p.lens) {
            assert_eq!(*n, s.pre.len() + 12 + s.suf.len());
        }
        assert!(p.lens.windows(2).all(|w| w[0] >= w[1]), "{:?}", p.lens);
        let mac = Mac::parse("001565aabbcc").unwrap();
        for (name, pattern) in [
            ("001565AABBCC-user.cfg", "{mac}-user.cfg"),
            ("cfg001565aabbcc.xml", "cfg{mac}.xml"),
            ("spa001565aabbcc.xml", "spa{mac}.xml"),
            ("001565aabbcc.boot", "{mac}.boot"),
            ("001565aabbcc.cfg", "{mac}.cfg"),
            ("001565aabbcc.xml", "{mac}.xml"),
        ] {
            assert_eq!(
                c.match_path(name),
                Some(FileRef::Phone {
                    mac,
                    pattern: pattern.into()
                }),
                "{name}"
            );
        }
    }

    proptest::proptest! {
        /// Names built from the shipped patterns (a MAC part of 10 to 14 characters, any
        /// case, a character inserted anywhere), the common names and arbitrary strings
        /// match exactly as the reference does.
        #[test]
        fn matching_agrees_with_the_reference(
            kind in 0u8..5,
            which in 0usize..64,
            mac in "[0-9a-fA-F]{12}",
            cut in 0usize..3,
            extra in "[0-9a-fA-FxX:-]{0,2}",
            insert in proptest::option::weighted(0.3, (0usize..40, proptest::char::any())),
            junk in ".{0,40}",
        ) {
            let c = shipped();
            let splits = &c.patterns.splits;
            let commons: Vec<&String> = c.common.keys().collect();
            let mut name = match kind {
                0 => junk,
                1 => commons[which % commons.len()].clone(),
                _ => {
                    let s = &splits[which % splits.len()];
                    format!(
                        "{}{}{extra}{}",
                        String::from_utf8_lossy(&s.pre),
                        &mac[..12 - cut],
                        String::from_utf8_lossy(&s.suf)
                    )
                }
            };
            if let Some((at, ch)) = insert {
                let at = name
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(at % (name.chars().count() + 1))
                    .unwrap_or(name.len());
                name.insert(at, ch);
            }
            proptest::prop_assert_eq!(c.match_path(&name), reference(c, &name));
            let upper = name.to_uppercase();
            proptest::prop_assert_eq!(c.match_path(&upper), reference(c, &upper));
        }
    }

    #[test]
    fn bad_files_name_the_field() {
        let e = Catalogue::parse_model(Path::new("m.toml"), "other", T46S, &|_| true).unwrap_err();
        assert!(e.to_string().contains("field `id`"), "{e}");
        let e = Catalogue::parse_model(Path::new("m.toml"), "yealink-t46s", T46S, &|t| {
            t != "yealink/mac.cfg"
        })
        .unwrap_err();
        assert!(e.to_string().contains("files[1].template"), "{e}");
        let bad = T46S.replace("ports = 16", "ports = 16\ncolour = 1");
        let e = Catalogue::parse_model(Path::new("m.toml"), "yealink-t46s", &bad, &|_| true)
            .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let digest = T46S.replace("ports = 16", "ports = 16\nauth_scheme = \"digest\"");
        let m = Catalogue::parse_model(Path::new("m.toml"), "yealink-t46s", &digest, &|_| true)
            .unwrap();
        assert_eq!(m.auth_scheme, AuthScheme::Digest);
        let bad = T46S.replace("ports = 16", "ports = 16\nauth_scheme = \"ntlm\"");
        let e = Catalogue::parse_model(Path::new("m.toml"), "yealink-t46s", &bad, &|_| true)
            .unwrap_err();
        assert!(e.to_string().contains("ntlm"), "{e}");
        let bad = T46S.replace("\"pool.ntp.org\"", "\"a\\nb\"");
        let e = Catalogue::parse_model(Path::new("m.toml"), "yealink-t46s", &bad, &|_| true)
            .unwrap_err();
        assert!(e.to_string().contains("defaults.ntp-server"), "{e}");
    }
}
