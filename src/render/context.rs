//! The purpose-built context templates receive (never store records), and its assembly
//! from the merge layers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;
use tera::Value;

use crate::model::settings::{self as st, Settings};
use crate::model::{Account, Domain, Layer, LineType, Member, Merged, Model, Phone};

/// One line (member + its account) of a phone.
#[derive(Debug, Clone, Copy)]
pub struct LineInput<'a> {
    /// The member.
    pub member: &'a Member,
    /// Its account.
    pub account: &'a Account,
}

/// Everything a phone's render depends on.
#[derive(Debug, Clone)]
pub struct PhoneInput<'a> {
    /// Its model.
    pub model: &'a Model,
    /// Server-wide defaults.
    pub server: &'a Settings,
    /// Its domain, if any.
    pub domain: Option<&'a Domain>,
    /// The phone; `None` renders a model's common file.
    pub phone: Option<&'a Phone>,
    /// Its lines.
    pub lines: Vec<LineInput<'a>>,
}

/// The model as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCtx {
    /// `yealink-t46s`
    pub id: String,
    /// `yealink`
    pub vendor: String,
    /// `Yealink SIP-T46S`
    pub name: String,
    /// Ports (SIP accounts).
    pub ports: u32,
    /// Line keys.
    pub line_keys: u32,
    /// ATA.
    pub ata: bool,
    /// The model's common (MAC-less) file names, as declared (boot files list them).
    pub common_files: Vec<String>,
}

/// Provisioning credentials to write into the file (empty when not set on phone or domain).
#[derive(Debug, Clone, Serialize)]
pub struct ProvisioningCtx {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// The phone's hotline (the first member with one, the primary owner first).
#[derive(Debug, Clone, Serialize)]
pub struct HotlineCtx {
    /// On.
    pub enabled: bool,
    /// Number.
    pub destination: String,
    /// Port it belongs to (0 when off).
    pub port: u32,
}

/// One line as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct LineCtx {
    /// First port (the account index on most phones).
    pub port: u32,
    /// Account id (`1004a@example.com`).
    pub account_id: String,
    /// Extension.
    pub user: String,
    /// SIP user name (the device id).
    pub sip_user: String,
    /// Auth name.
    pub auth_name: String,
    /// SIP password.
    pub password: String,
    /// SIP domain.
    pub domain: String,
    /// Line key label.
    pub label: String,
    /// Display name.
    pub display_name: String,
    /// Registrar host.
    pub server_host: String,
    /// Registrar port.
    pub server_port: u16,
    /// `udp` | `tcp` | `tls`.
    pub transport: String,
    /// Registration expiry (s).
    pub expiry: u32,
    /// `no` | `yes` | `opportunistic`.
    pub srtp: String,
    /// `automatic` | `none` | `never` | `fixed`.
    pub nat: String,
    /// `PRIMARY` | `SHARED_CALL_APPEARANCE`.
    pub line_type: String,
    /// Shared call appearance.
    pub shared: bool,
    /// Ports / line keys occupied.
    pub line_weight: u32,
    /// Line key numbers assigned.
    pub line_keys: Vec<u32>,
    /// Hotline on.
    pub hotline_enabled: bool,
    /// Hotline number.
    pub hotline_destination: String,
    /// Call decline reaches every endpoint.
    pub allow_call_decline: bool,
    /// T.38.
    pub t38: bool,
    /// Owner of the phone.
    pub primary_owner: bool,
    /// Emergency caller id (`[*]` = inherit).
    pub emergency_caller_id: String,
    /// Emergency address id.
    pub emergency_address_id: String,
    /// Recording mode.
    pub recording: String,
    /// Allowed User-Agent.
    pub allowed_user_agent: String,
    /// Every merged setting of this line (keys with `-`/`.` as `_`): a tera map, shared
    /// with the phone's when the account adds no setting.
    pub settings: Value,
}

/// What a template is rendered from.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    /// `001565aabbcc` (empty for common files).
    pub mac: String,
    /// `001565AABBCC`
    pub mac_upper: String,
    /// `00:15:65:aa:bb:cc`
    pub mac_colon: String,
    /// The model.
    pub model: ModelCtx,
    /// The phone's domain (empty when none).
    pub domain: String,
    /// Phone-level merged settings (keys with `-`/`.` as `_`): a tera map, shared by
    /// every phone whose layers below it are alike and that adds no setting of its own.
    pub settings: Value,
    /// Provisioning credentials.
    pub provisioning: ProvisioningCtx,
    /// Lines, by port.
    pub lines: Vec<LineCtx>,
    /// Hotline.
    pub hotline: HotlineCtx,
    /// Ports (account indexes) that hold no line: templates disable them, so a removed
    /// member does not linger on the phone.
    pub idle_ports: Vec<u32>,
    /// Line keys among the managed ones (1..=min(ports, line keys)) that no line uses.
    pub idle_line_keys: Vec<u32>,
    /// Base URL of the firmware folder, no trailing `/`: the merged setting `firmware-url`
    /// (config `public-url` puts `<public-url>/firmware` in the server layer), else the
    /// relative `/firmware` (which most phones cannot use: set `public-url`).
    pub firmware_url: String,
    /// Phone-level merge with origins.
    #[serde(skip)]
    pub merged: Arc<Merged>,
    /// User-Agent substrings the phone's accounts require.
    #[serde(skip)]
    pub allowed_user_agents: Vec<String>,
}

/// The settings map templates read: keys with `-`/`.` as `_`, in key order (two keys that
/// read alike: the later in key order wins).
fn snake(m: &Merged) -> Value {
    let sorted: BTreeMap<String, &str> = m
        .iter()
        .map(|(k, v, _)| (k.replace(['-', '.'], "_"), v))
        .collect();
    Value::from(sorted)
}

/// The layers every phone of a (model, server defaults, domain) has in common, merged and
/// turned into the template map once.
#[derive(Debug)]
struct Base {
    model: Settings,
    server: Settings,
    domain: Settings,
    merged: Arc<Merged>,
    settings: Value,
}

/// Bases kept (a few KiB each): beyond this many distinct (model, domain) pairs in use the
/// memo starts over.
const BASES_KEPT: usize = 1024;

/// Bases by a hash of their layers' content. Keyed by content, never by identity, so an
/// admin change to a domain or a reloaded model simply asks for another entry: nothing
/// here can be stale.
static BASES: LazyLock<Mutex<HashMap<u64, Arc<Base>>>> = LazyLock::new(Mutex::default);

static BUILTIN: LazyLock<Settings> = LazyLock::new(st::builtin);

/// builtin → model → server → domain, from the memo or merged now.
fn base(model: &Settings, server: &Settings, domain: &Settings) -> Arc<Base> {
    use std::hash::BuildHasher;
    let key = foldhash::fast::FixedState::default().hash_one((model, server, domain));
    let alike = |b: &Base| b.model == *model && b.server == *server && b.domain == *domain;
    {
        let kept = BASES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = kept.get(&key).filter(|b| alike(b)) {
            return b.clone();
        }
    }
    let merged = Merged::fold([
        (Layer::Builtin, &*BUILTIN),
        (Layer::Model, model),
        (Layer::Server, server),
        (Layer::Domain, domain),
    ]);
    let b = Arc::new(Base {
        model: model.clone(),
        server: server.clone(),
        domain: domain.clone(),
        settings: snake(&merged),
        merged: Arc::new(merged),
    });
    let mut kept = BASES.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() >= BASES_KEPT {
        kept.clear();
    }
    // A hash shared by two different bases: the newer one takes the slot.
    kept.insert(key, b.clone());
    b
}

impl RenderContext {
    /// Assembles the context: built-in → model → server → domain → phone → line.
    pub fn build(input: &PhoneInput<'_>) -> Self {
        let empty = Settings::new();
        let dom_settings = input.domain.map_or(&empty, |d| &d.settings);
        let phone_settings = input.phone.map_or(&empty, |p| &p.settings);
        let base = base(&input.model.settings, input.server, dom_settings);
        let (merged, settings) = if phone_settings.is_empty() {
            (base.merged.clone(), base.settings.clone())
        } else {
            let mut m = Merged::clone(&base.merged);
            m.apply(Layer::Phone, phone_settings);
            let s = snake(&m);
            (Arc::new(m), s)
        };
        let m = input.model;
        let mut lines: Vec<LineCtx> = input
            .lines
            .iter()
            .map(|l| line_ctx(&merged, &settings, m, l))
            .collect();
        lines.sort_by_key(|l| l.port);
        let hotline = hotline_ctx(&input.lines);
        let mut allowed: Vec<String> = lines
            .iter()
            .map(|l| l.allowed_user_agent.clone())
            .filter(|s| !s.is_empty())
            .collect();
        allowed.sort();
        allowed.dedup();
        let phone = input.phone;
        let provisioning = provisioning_ctx(phone, input.domain);
        let idle_ports = (1..=m.ports)
            .filter(|p| !lines.iter().any(|l| l.port == *p))
            .collect();
        let idle_line_keys = (1..=m.ports.min(m.line_keys))
            .filter(|k| !lines.iter().any(|l| l.line_keys.contains(k)))
            .collect();
        let firmware_url = match merged.get(crate::model::settings::FIRMWARE_URL) {
            Some(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
            _ => "/firmware".to_string(),
        };
        RenderContext {
            firmware_url,
            idle_ports,
            idle_line_keys,
            mac: phone.map(|p| p.mac.lower()).unwrap_or_default(),
            mac_upper: phone.map(|p| p.mac.upper()).unwrap_or_default(),
            mac_colon: phone.map(|p| p.mac.colon()).unwrap_or_default(),
            model: model_ctx(m),
            domain: input.domain.map(|d| d.name.clone()).unwrap_or_default(),
            settings,
            provisioning,
            lines,
            hotline,
            merged,
            allowed_user_agents: allowed,
        }
    }
}

/// What templates read of the model.
fn model_ctx(m: &Model) -> ModelCtx {
    ModelCtx {
        id: m.id.clone(),
        vendor: m.vendor.clone(),
        name: m.name.clone(),
        ports: m.ports,
        line_keys: m.line_keys,
        ata: m.ata,
        common_files: m
            .files
            .iter()
            .filter(|f| !f.per_phone())
            .map(|f| f.name.clone())
            .collect(),
    }
}

/// The phone's hotline: the one of its lines with the hotline on, the primary owner's
/// first, then the lowest port; off when no line has it.
fn hotline_ctx(lines: &[LineInput<'_>]) -> HotlineCtx {
    lines
        .iter()
        .filter(|l| l.member.hotline_enabled)
        .min_by_key(|l| (!l.member.primary_owner, l.member.port))
        .map_or(
            HotlineCtx {
                enabled: false,
                destination: String::new(),
                port: 0,
            },
            |l| HotlineCtx {
                enabled: true,
                destination: l.member.hotline_destination.clone(),
                port: l.member.port,
            },
        )
}

/// The most specific provisioning credentials configured: the phone's, else the domain's
/// (server-default credentials are stored only as a hash, so they are never written into
/// files); empty when there are none.
fn provisioning_ctx(phone: Option<&Phone>, domain: Option<&Domain>) -> ProvisioningCtx {
    let (pu, pp) = match (phone, domain) {
        (Some(p), _) if p.provisioning_username.is_some() => (
            p.provisioning_username.clone(),
            p.provisioning_password.clone(),
        ),
        (_, Some(d)) => (
            d.provisioning_username.clone(),
            d.provisioning_password.clone(),
        ),
        _ => (None, None),
    };
    ProvisioningCtx {
        username: pu.unwrap_or_default(),
        password: pp.unwrap_or_default(),
    }
}

fn line_ctx(phone: &Merged, phone_map: &Value, model: &Model, l: &LineInput<'_>) -> LineCtx {
    let (mem, acc) = (l.member, l.account);
    // An account without settings of its own reads the phone's (most lines).
    let own = (!acc.settings.is_empty()).then(|| {
        let mut m = phone.clone();
        m.apply(Layer::Line(mem.port), &acc.settings);
        m
    });
    let merged = own.as_ref().unwrap_or(phone);
    let get = |k: &str| merged.get(k).unwrap_or_default().to_string();
    let transport = get(st::TRANSPORT);
    let core = get(st::CORE_SERVER);
    let (host, explicit_port) = if core.is_empty() {
        (acc.domain.clone(), None)
    } else {
        let (h, p) = st::split_host_port(&core);
        (h.to_string(), p.and_then(|p| p.parse::<u16>().ok()))
    };
    let server_port = explicit_port.unwrap_or_else(|| {
        if merged.origin(st::SIP_PORT) == Some(Layer::Builtin) && transport == "tls" {
            5061
        } else {
            get(st::SIP_PORT).parse().unwrap_or(5060)
        }
    });
    let label = if mem.line_label.is_empty() {
        acc.user.clone()
    } else {
        mem.line_label.clone()
    };
    LineCtx {
        port: mem.port,
        account_id: acc.id(),
        user: acc.user.clone(),
        sip_user: acc.device.clone(),
        auth_name: acc.device.clone(),
        password: acc.password.clone(),
        domain: acc.domain.clone(),
        display_name: label.clone(),
        label,
        server_host: host,
        server_port,
        transport,
        expiry: get(st::EXPIRY).parse().unwrap_or(60),
        srtp: get(st::SRTP),
        nat: get(st::NAT),
        line_type: match mem.line_type {
            LineType::Primary => "PRIMARY",
            LineType::SharedCallAppearance => "SHARED_CALL_APPEARANCE",
        }
        .into(),
        shared: mem.line_type == LineType::SharedCallAppearance,
        line_weight: mem.line_weight,
        line_keys: mem.ports().filter(|k| *k <= model.line_keys).collect(),
        hotline_enabled: mem.hotline_enabled,
        hotline_destination: mem.hotline_destination.clone(),
        allow_call_decline: mem.allow_call_decline_enabled,
        t38: mem.t38_fax_compression_enabled,
        primary_owner: mem.primary_owner,
        emergency_caller_id: get(st::EMERGENCY_CID),
        emergency_address_id: acc.emergency_address_id.clone().unwrap_or_default(),
        recording: get(st::RECORDING),
        allowed_user_agent: get(st::ALLOWED_UA),
        settings: match &own {
            Some(m) => snake(m),
            None => phone_map.clone(),
        },
    }
}

/// A tera map from (field, value) pairs in the given order.
fn map<const N: usize>(fields: [(&'static str, Value); N]) -> Value {
    let mut m = tera::Map::with_capacity(N);
    for (k, v) in fields {
        m.insert(tera::value::Key::Str(k), v);
    }
    Value::from(m)
}

fn list<T: Copy + Into<Value>>(items: &[T]) -> Value {
    Value::from(items.iter().map(|&i| i.into()).collect::<Vec<Value>>())
}

impl ModelCtx {
    fn to_value(&self) -> Value {
        map([
            ("id", self.id.as_str().into()),
            ("vendor", self.vendor.as_str().into()),
            ("name", self.name.as_str().into()),
            ("ports", self.ports.into()),
            ("line_keys", self.line_keys.into()),
            ("ata", self.ata.into()),
            (
                "common_files",
                Value::from(
                    self.common_files
                        .iter()
                        .map(|f| Value::from(f.as_str()))
                        .collect::<Vec<_>>(),
                ),
            ),
        ])
    }
}

impl LineCtx {
    fn to_value(&self) -> Value {
        map([
            ("port", self.port.into()),
            ("account_id", self.account_id.as_str().into()),
            ("user", self.user.as_str().into()),
            ("sip_user", self.sip_user.as_str().into()),
            ("auth_name", self.auth_name.as_str().into()),
            ("password", self.password.as_str().into()),
            ("domain", self.domain.as_str().into()),
            ("label", self.label.as_str().into()),
            ("display_name", self.display_name.as_str().into()),
            ("server_host", self.server_host.as_str().into()),
            ("server_port", self.server_port.into()),
            ("transport", self.transport.as_str().into()),
            ("expiry", self.expiry.into()),
            ("srtp", self.srtp.as_str().into()),
            ("nat", self.nat.as_str().into()),
            ("line_type", self.line_type.as_str().into()),
            ("shared", self.shared.into()),
            ("line_weight", self.line_weight.into()),
            ("line_keys", list(&self.line_keys)),
            ("hotline_enabled", self.hotline_enabled.into()),
            (
                "hotline_destination",
                self.hotline_destination.as_str().into(),
            ),
            ("allow_call_decline", self.allow_call_decline.into()),
            ("t38", self.t38.into()),
            ("primary_owner", self.primary_owner.into()),
            (
                "emergency_caller_id",
                self.emergency_caller_id.as_str().into(),
            ),
            (
                "emergency_address_id",
                self.emergency_address_id.as_str().into(),
            ),
            ("recording", self.recording.as_str().into()),
            (
                "allowed_user_agent",
                self.allowed_user_agent.as_str().into(),
            ),
            ("settings", self.settings.clone()),
        ])
    }
}

impl RenderContext {
    /// The tera context, built field by field: what `tera::Context::from_serialize` makes
    /// of this struct (a test holds them equal), without a serde round trip and with the
    /// settings maps shared instead of copied.
    pub fn to_tera(&self) -> tera::Context {
        let mut c = tera::Context::new();
        c.insert_value("mac", self.mac.as_str().into());
        c.insert_value("mac_upper", self.mac_upper.as_str().into());
        c.insert_value("mac_colon", self.mac_colon.as_str().into());
        c.insert_value("model", self.model.to_value());
        c.insert_value("domain", self.domain.as_str().into());
        c.insert_value("settings", self.settings.clone());
        c.insert_value(
            "provisioning",
            map([
                ("username", self.provisioning.username.as_str().into()),
                ("password", self.provisioning.password.as_str().into()),
            ]),
        );
        c.insert_value(
            "lines",
            Value::from(self.lines.iter().map(LineCtx::to_value).collect::<Vec<_>>()),
        );
        c.insert_value(
            "hotline",
            map([
                ("enabled", self.hotline.enabled.into()),
                ("destination", self.hotline.destination.as_str().into()),
                ("port", self.hotline.port.into()),
            ]),
        );
        c.insert_value("idle_ports", list(&self.idle_ports));
        c.insert_value("idle_line_keys", list(&self.idle_line_keys));
        c.insert_value("firmware_url", self.firmware_url.as_str().into());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mac, Phone};
    use proptest::prelude::*;

    fn model(settings: Settings) -> Model {
        let mut m: Model = toml::from_str(
            r#"
            id = "test-model"
            vendor = "test"
            name = "Test Model"
            ports = 4
            line_keys = 3
            [[files]]
            name = "{mac}.cfg"
            template = "t.cfg"
            content_type = "text/plain"
            format = "key-value"
            [[files]]
            name = "common.cfg"
            template = "c.cfg"
            content_type = "text/plain"
            format = "key-value"
            "#,
        )
        .expect("test model parses");
        m.settings = settings;
        m
    }

    /// Keys that collide once snake-cased (`a-b`, `a.b`, `a_b`), real ones, and values on
    /// both sides of tera's inline-string limit (21 bytes).
    fn layer() -> impl Strategy<Value = Settings> {
        let key = prop::sample::select(vec![
            "a-b",
            "a.b",
            "a_b",
            "ntp-server",
            st::TRANSPORT,
            st::SIP_PORT,
            st::CORE_SERVER,
            st::ALLOWED_UA,
            st::EXPIRY,
        ]);
        prop::collection::btree_map(key.prop_map(String::from), "[a-z0-9:.]{0,30}", 0..5)
    }

    /// The reference: every layer folded from scratch, snake-cased through serde.
    fn reference(layers: &[(Layer, &Settings)]) -> tera::Value {
        let builtin = st::builtin();
        let m =
            Merged::fold(std::iter::once((Layer::Builtin, &builtin)).chain(layers.iter().copied()));
        let plain: BTreeMap<String, String> = m
            .iter()
            .map(|(k, v, _)| (k.replace(['-', '.'], "_"), v.to_string()))
            .collect();
        tera::Value::from_serializable(&plain)
    }

    proptest! {
        // Each case renders: 200 by default, PROPTEST_CASES when set.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
        ))]

        /// The hand-built tera context is exactly what serde makes of the struct, and the
        /// settings maps are those of a fresh fold: the memo of shared layers (kept across
        /// cases, keyed by content) never answers with another phone's layers.
        #[test]
        fn context_matches_serde_and_a_fresh_fold(
            model_s in layer(),
            server in layer(),
            domain_s in layer(),
            phone_s in layer(),
            acc1 in layer(),
            acc2 in layer(),
            hotline in any::<bool>(),
        ) {
            let model = model(model_s.clone());
            let domain = Domain {
                name: "example.com".into(),
                settings: domain_s.clone(),
                ..Default::default()
            };
            let mut phone = Phone::new(Mac::from_bytes([0, 0x15, 0x65, 1, 2, 3]), model.id.clone());
            phone.settings = phone_s.clone();
            let accounts: Vec<Account> = [acc1, acc2]
                .into_iter()
                .enumerate()
                .map(|(i, s)| Account {
                    domain: "example.com".into(),
                    user: format!("10{i}"),
                    device: format!("10{i}a"),
                    password: "secret-password-longer-than-21".into(),
                    settings: s,
                    ..Default::default()
                })
                .collect();
            let members: Vec<Member> = accounts
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut m = Member::new(i as u32 + 1, a.id());
                    m.hotline_enabled = hotline;
                    m.hotline_destination = "911".into();
                    if i == 0 {
                        m.line_label = "Front desk".into();
                    }
                    m
                })
                .collect();
            let input = PhoneInput {
                model: &model,
                server: &server,
                domain: Some(&domain),
                phone: Some(&phone),
                lines: members
                    .iter()
                    .zip(&accounts)
                    .map(|(member, account)| LineInput { member, account })
                    .collect(),
            };
            let ctx = RenderContext::build(&input);
            let serde = tera::Context::from_serialize(&ctx).expect("serialises");
            prop_assert_eq!(ctx.to_tera(), serde);

            let phone_layers = [
                (Layer::Model, &model_s),
                (Layer::Server, &server),
                (Layer::Domain, &domain_s),
                (Layer::Phone, &phone_s),
            ];
            prop_assert_eq!(&ctx.settings, &reference(&phone_layers));
            for (line, account) in ctx.lines.iter().zip(&accounts) {
                let mut layers = phone_layers.to_vec();
                layers.push((Layer::Line(line.port), &account.settings));
                prop_assert_eq!(&line.settings, &reference(&layers));
            }
        }
    }
}
