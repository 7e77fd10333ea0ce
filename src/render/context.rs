//! The purpose-built context templates receive (never store records), and its assembly
//! from the merge layers.

use std::collections::BTreeMap;

use serde::Serialize;

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
    /// Every merged setting of this line (keys with `-`/`.` as `_`).
    pub settings: BTreeMap<String, String>,
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
    /// Phone-level merged settings (keys with `-`/`.` as `_`).
    pub settings: BTreeMap<String, String>,
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
    pub merged: Merged,
    /// User-Agent substrings the phone's accounts require.
    #[serde(skip)]
    pub allowed_user_agents: Vec<String>,
}

fn snake(m: &Merged) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v, _)| (k.replace(['-', '.'], "_"), v.to_string()))
        .collect()
}

impl RenderContext {
    /// Assembles the context: built-in → model → server → domain → phone → line.
    pub fn build(input: &PhoneInput<'_>) -> Self {
        let builtin = st::builtin();
        let empty = Settings::new();
        let dom_settings = input.domain.map_or(&empty, |d| &d.settings);
        let phone_settings = input.phone.map_or(&empty, |p| &p.settings);
        let merged = Merged::fold([
            (Layer::Builtin, &builtin),
            (Layer::Model, &input.model.settings),
            (Layer::Server, input.server),
            (Layer::Domain, dom_settings),
            (Layer::Phone, phone_settings),
        ]);
        let m = input.model;
        let mut lines: Vec<LineCtx> = input
            .lines
            .iter()
            .map(|l| line_ctx(&merged, m, l))
            .collect();
        lines.sort_by_key(|l| l.port);
        let hotline = input
            .lines
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
            );
        let mut allowed: Vec<String> = lines
            .iter()
            .map(|l| l.allowed_user_agent.clone())
            .filter(|s| !s.is_empty())
            .collect();
        allowed.sort();
        allowed.dedup();
        let phone = input.phone;
        // The most specific credentials configured: phone, else domain (server-default
        // credentials are stored only as a hash, so they are never written into files).
        let (pu, pp) = match (phone, input.domain) {
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
        let (pu, pp) = (pu.unwrap_or_default(), pp.unwrap_or_default());
        let idle_ports = (1..=m.ports)
            .filter(|p| !lines.iter().any(|l| l.port == *p))
            .collect();
        let idle_line_keys = (1..=m.ports.min(m.line_keys))
            .filter(|k| !lines.iter().any(|l| l.line_keys.contains(k)))
            .collect();
        let firmware_url = match merged.get(crate::config::FIRMWARE_URL_SETTING) {
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
            model: ModelCtx {
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
            },
            domain: input.domain.map(|d| d.name.clone()).unwrap_or_default(),
            settings: snake(&merged),
            provisioning: ProvisioningCtx {
                username: pu,
                password: pp,
            },
            lines,
            hotline,
            merged,
            allowed_user_agents: allowed,
        }
    }
}

fn line_ctx(phone: &Merged, model: &Model, l: &LineInput<'_>) -> LineCtx {
    let (mem, acc) = (l.member, l.account);
    let mut merged = phone.clone();
    merged.apply(Layer::Line(mem.port), &acc.settings);
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
        settings: snake(&merged),
    }
}
