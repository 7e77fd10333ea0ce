//! `GET /api/v1/phones/{mac}/explain`: where every value of a phone's files comes from.
//!
//! The file is rendered once per layer, each render adding one layer to the previous one:
//! model (lines present but blank) → server → domain → phone → line 1 … line N → overrides.
//! A key's layer is the last one that changed (or introduced) its value. Settings the
//! model's templates never read are found from the template sources, and overrides that
//! matched no generated key are flagged as added.

use serde::Serialize;

use crate::model::settings::{self as st, Settings};
use crate::model::{Account, Domain, FileSpec, Member, Model, Overrides, Phone};

use super::context::{LineInput, PhoneInput, RenderContext};
use super::overlay;
use super::{Engine, RenderError};

/// One effective value of a file.
#[derive(Debug, Clone, Serialize)]
pub struct Value {
    /// The vendor key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// `model`, `server`, `domain`, `phone`, `line N` or `override`.
    pub layer: String,
}

/// An override and whether it replaced a generated key.
#[derive(Debug, Clone, Serialize)]
pub struct OverrideUse {
    /// The vendor key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// True when the template did not generate the key: the override added it.
    pub added: bool,
}

/// One file explained.
#[derive(Debug, Clone, Serialize)]
pub struct FileExplained {
    /// The file name as the phone asks for it.
    pub file: String,
    /// Its overlay format.
    pub format: crate::model::Format,
    /// Every value, in file order.
    pub values: Vec<Value>,
    /// The overrides applied to this file.
    pub overrides: Vec<OverrideUse>,
}

/// A phone setting the model's templates do not read.
#[derive(Debug, Clone, Serialize)]
pub struct Unused {
    /// Setting or member field name.
    pub setting: String,
    /// Its effective value.
    pub value: String,
    /// `phone` or `line N`.
    pub scope: String,
}

/// What explain answers.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// Per file the phone requests.
    pub files: Vec<FileExplained>,
    /// Settings with no key in this model's files.
    pub unused: Vec<Unused>,
}

/// Everything the renders need.
pub struct Inputs<'a> {
    /// The model.
    pub model: &'a Model,
    /// Server defaults.
    pub server: &'a Settings,
    /// The phone's domain.
    pub domain: Option<&'a Domain>,
    /// The phone.
    pub phone: &'a Phone,
    /// Its lines.
    pub lines: Vec<(&'a Member, &'a Account)>,
}

fn blank_member(m: &Member) -> Member {
    let mut b = Member::new(m.port, m.id.clone());
    b.line_weight = m.line_weight;
    b
}

fn blank_account(a: &Account) -> Account {
    Account {
        domain: a.domain.clone(),
        ..Default::default()
    }
}

/// Renders a file for a stage: `lines` in full for the first `full` lines, blank after.
struct Stage<'a> {
    name: String,
    server: &'a Settings,
    domain: Option<&'a Domain>,
    phone: Phone,
    full: usize,
    overrides: bool,
}

/// Explains every per-phone file of `inputs.phone`.
pub fn explain(engine: &Engine, inputs: &Inputs<'_>) -> Result<Explained, RenderError> {
    let empty = Settings::new();
    let stages = stages(inputs, &empty);
    let blanks: Vec<(Member, Account)> = inputs
        .lines
        .iter()
        .map(|(m, a)| (blank_member(m), blank_account(a)))
        .collect();
    let mut files = Vec::new();
    for spec in inputs.model.files.iter().filter(|f| f.per_phone()) {
        files.push(explain_file(engine, inputs, spec, &stages, &blanks)?);
    }
    Ok(Explained {
        files,
        unused: unused(engine, inputs),
    })
}

/// The stages, one layer more each: model (no server defaults, no domain, the phone
/// without its settings and credentials), server, domain, phone, line 1 … line N (the
/// phone's lines in full one by one), then overrides.
fn stages<'a>(inputs: &Inputs<'a>, empty: &'a Settings) -> Vec<Stage<'a>> {
    let mut bare = inputs.phone.clone();
    bare.settings.clear();
    bare.provisioning_username = None;
    bare.provisioning_password = None;
    let mut stages = vec![
        Stage {
            name: "model".into(),
            server: empty,
            domain: None,
            phone: bare.clone(),
            full: 0,
            overrides: false,
        },
        Stage {
            name: "server".into(),
            server: inputs.server,
            domain: None,
            phone: bare.clone(),
            full: 0,
            overrides: false,
        },
        Stage {
            name: "domain".into(),
            server: inputs.server,
            domain: inputs.domain,
            phone: bare,
            full: 0,
            overrides: false,
        },
    ];
    for full in 0..=inputs.lines.len() {
        let name = match full.checked_sub(1).and_then(|i| inputs.lines.get(i)) {
            None => "phone".to_string(),
            Some((m, _)) => format!("line {}", m.port),
        };
        stages.push(Stage {
            name,
            server: inputs.server,
            domain: inputs.domain,
            phone: inputs.phone.clone(),
            full,
            overrides: false,
        });
    }
    stages.push(Stage {
        name: "override".into(),
        server: inputs.server,
        domain: inputs.domain,
        phone: inputs.phone.clone(),
        full: inputs.lines.len(),
        overrides: true,
    });
    stages
}

/// Explains one file: rendered at every stage, each key gets the layer that last changed
/// (or introduced) its value; the phone's overrides are listed when the file takes them,
/// `added` when the templates did not generate the key.
fn explain_file(
    engine: &Engine,
    inputs: &Inputs<'_>,
    spec: &FileSpec,
    stages: &[Stage<'_>],
    blanks: &[(Member, Account)],
) -> Result<FileExplained, RenderError> {
    let mut values: Vec<Value> = Vec::new();
    let mut prev: std::collections::HashMap<String, String> = Default::default();
    let mut generated: std::collections::HashSet<String> = Default::default();
    for stage in stages {
        let pairs = stage.pairs(engine, inputs, spec, blanks)?;
        if !stage.overrides {
            generated = pairs.iter().map(|(k, _)| k.clone()).collect();
        }
        values = layered(&values, &prev, pairs, &stage.name);
        prev = values
            .iter()
            .map(|x| (x.key.clone(), x.value.clone()))
            .collect();
    }
    let overrides = if spec.overrides {
        inputs
            .phone
            .overrides
            .iter()
            .map(|(k, v)| OverrideUse {
                key: k.clone(),
                value: v.clone(),
                added: !generated.contains(k),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(FileExplained {
        file: spec
            .name
            .replace("{mac}", &inputs.phone.mac.lower())
            .replace("{MAC}", &inputs.phone.mac.upper()),
        format: spec.format,
        values,
        overrides,
    })
}

impl Stage<'_> {
    /// Renders `spec` at this stage (the first `full` lines in full, the others blank; the
    /// phone's overrides only at the override stage) and reads its key/value pairs, in
    /// file order.
    fn pairs(
        &self,
        engine: &Engine,
        inputs: &Inputs<'_>,
        spec: &FileSpec,
        blanks: &[(Member, Account)],
    ) -> Result<Vec<(String, String)>, RenderError> {
        let lines: Vec<LineInput<'_>> = inputs
            .lines
            .iter()
            .zip(blanks)
            .enumerate()
            .map(|(i, ((m, a), (bm, ba)))| {
                if i < self.full {
                    LineInput {
                        member: m,
                        account: a,
                    }
                } else {
                    LineInput {
                        member: bm,
                        account: ba,
                    }
                }
            })
            .collect();
        let input = PhoneInput {
            model: inputs.model,
            server: self.server,
            domain: self.domain,
            phone: Some(&self.phone),
            lines,
        };
        let none = Overrides::new();
        let ov = if self.overrides {
            &inputs.phone.overrides
        } else {
            &none
        };
        let out = render_text(engine, spec, &RenderContext::build(&input), ov)?;
        overlay::pairs(spec.format, &out).map_err(|source| RenderError::Xml {
            template: spec.template.clone(),
            source,
        })
    }
}

/// The values of the stage named `stage`, in its file order (`pairs`): a key whose value
/// is the one the previous stage had (`prev`) keeps its layer from `values`, any other
/// takes `stage`.
fn layered(
    values: &[Value],
    prev: &std::collections::HashMap<String, String>,
    pairs: Vec<(String, String)>,
    stage: &str,
) -> Vec<Value> {
    let mut next_values = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let layer = match (prev.get(&k), values.iter().find(|x| x.key == k)) {
            (Some(old), Some(x)) if *old == v => x.layer.clone(),
            _ => stage.to_string(),
        };
        next_values.push(Value {
            key: k,
            value: v,
            layer,
        });
    }
    next_values
}

fn render_text(
    engine: &Engine,
    spec: &FileSpec,
    ctx: &RenderContext,
    ov: &Overrides,
) -> Result<String, RenderError> {
    let bytes = engine.render(spec, ctx, ov)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The template expressions that read a setting or member field (any one is enough).
fn readers(setting: &str) -> Vec<String> {
    let snake = setting.replace(['-', '.'], "_");
    let mut r = vec![
        format!("settings.{snake}"),
        format!("settings[\"{setting}\"]"),
    ];
    let field: &[&str] = match setting {
        st::CORE_SERVER => &["line.server_host", "line.server_port"],
        st::SIP_PORT => &["line.server_port"],
        st::TRANSPORT => &["line.transport"],
        st::EXPIRY => &["line.expiry"],
        st::SRTP => &["line.srtp"],
        st::NAT => &["line.nat"],
        st::EMERGENCY_CID => &["line.emergency_caller_id"],
        st::RECORDING => &["line.recording"],
        "lineLabel" => &["line.label", "line.display_name"],
        "lineType" => &["line.shared", "line.line_type"],
        "lineWeight" => &["line.line_keys", "line.line_weight"],
        "hotlineEnabled" | "hotlineDestination" => &["line.hotline_", "hotline."],
        "allowCallDeclineEnabled" => &["line.allow_call_decline"],
        "t38FaxCompressionEnabled" => &["line.t38"],
        "emergency-address-id" => &["line.emergency_address_id"],
        crate::model::settings::FIRMWARE_URL => &["firmware_url"],
        _ => &[],
    };
    r.extend(field.iter().map(|s| s.to_string()));
    r
}

/// The source of every template the model's files use, with what they include.
fn sources(engine: &Engine, model: &Model) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = model.files.iter().map(|f| f.template.clone()).collect();
    let mut text = String::new();
    while let Some(t) = todo.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        if let Some(src) = engine.source(&t) {
            for kw in ["include", "extends", "import"] {
                for part in src.split(kw).skip(1) {
                    if let Some(name) = part.trim_start().strip_prefix('"')
                        && let Some((name, _)) = name.split_once('"')
                    {
                        todo.push(name.to_string());
                    }
                }
            }
            text.push_str(src);
            text.push('\n');
        }
    }
    text
}

/// The phone's settings, and its lines' settings and member features, that no template of
/// the model reads.
fn unused(engine: &Engine, inputs: &Inputs<'_>) -> Vec<Unused> {
    let src = sources(engine, inputs.model);
    let used = |setting: &str| readers(setting).iter().any(|r| src.contains(r.as_str()));
    let mut out = Vec::new();
    // Phone-level: every merged setting of the phone (its lines' settings are listed per
    // line below). The allowed User-Agent is enforced by the server, not written.
    let ctx = RenderContext::build(&PhoneInput {
        model: inputs.model,
        server: inputs.server,
        domain: inputs.domain,
        phone: Some(inputs.phone),
        lines: Vec::new(),
    });
    let line_level = [
        st::CORE_SERVER,
        st::SIP_PORT,
        st::TRANSPORT,
        st::EXPIRY,
        st::SRTP,
        st::NAT,
        st::EMERGENCY_CID,
        st::RECORDING,
    ];
    for (k, v, _) in ctx.merged.iter() {
        if k == st::ALLOWED_UA || line_level.contains(&k) && !inputs.lines.is_empty() {
            continue;
        }
        if !used(k) && !line_level.iter().any(|l| *l == k && used(l)) {
            out.push(Unused {
                setting: k.to_string(),
                value: v.to_string(),
                scope: "phone".into(),
            });
        }
    }
    for (m, a) in &inputs.lines {
        unused_of_line(&used, &ctx.merged, m, a, &mut out);
    }
    out
}

/// Adds to `out` the settings of the line of member `m` (the phone's `merged` settings
/// with account `a`'s on top) that no template reads, unless listed for the phone with
/// the same value, then its member features set away from their default and not read.
fn unused_of_line(
    used: &dyn Fn(&str) -> bool,
    merged: &crate::model::Merged,
    m: &Member,
    a: &Account,
    out: &mut Vec<Unused>,
) {
    let scope = format!("line {}", m.port);
    let mut merged = crate::model::Merged::clone(merged);
    merged.apply(crate::model::Layer::Line(m.port), &a.settings);
    for (k, v, _) in merged.iter() {
        if k == st::ALLOWED_UA {
            continue;
        }
        let listed_for_phone = out
            .iter()
            .any(|u| u.scope == "phone" && u.setting == k && u.value == v);
        if !used(k) && !listed_for_phone {
            out.push(Unused {
                setting: k.to_string(),
                value: v.to_string(),
                scope: scope.clone(),
            });
        }
    }
    // Member features are listed when set away from their default and not read.
    for (name, value, set) in member_features(m, a) {
        if set && !used(name) {
            out.push(Unused {
                setting: name.to_string(),
                value,
                scope: scope.clone(),
            });
        }
    }
}

/// The member features of a line as (name, value, set away from its default).
fn member_features(m: &Member, a: &Account) -> [(&'static str, String, bool); 6] {
    [
        (
            "lineType",
            format!("{:?}", m.line_type),
            m.line_type != crate::model::LineType::Primary,
        ),
        ("lineWeight", m.line_weight.to_string(), m.line_weight > 1),
        (
            "hotlineEnabled",
            m.hotline_enabled.to_string(),
            m.hotline_enabled,
        ),
        (
            "allowCallDeclineEnabled",
            m.allow_call_decline_enabled.to_string(),
            !m.allow_call_decline_enabled,
        ),
        (
            "t38FaxCompressionEnabled",
            m.t38_fax_compression_enabled.to_string(),
            m.t38_fax_compression_enabled,
        ),
        (
            "emergency-address-id",
            a.emergency_address_id.clone().unwrap_or_default(),
            a.emergency_address_id.is_some(),
        ),
    ]
}
