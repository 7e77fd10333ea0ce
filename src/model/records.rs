//! The stored entities: domains, accounts (SIP registrations), phones and their members.
//! Plain serde data, versioned by the store; no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mac::Mac;
use super::settings::Settings;

/// Per-MAC overrides: vendor key → value, applied last by the format-aware overlay.
pub type Overrides = BTreeMap<String, String>;

/// A tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    /// Domain name (`example.com`).
    pub name: String,
    /// Domain defaults (settings layer).
    #[serde(default)]
    pub settings: Settings,
    /// Provisioning username shared by the domain's phones.
    #[serde(default)]
    pub provisioning_username: Option<String>,
    /// Provisioning password shared by the domain's phones.
    #[serde(default)]
    pub provisioning_password: Option<String>,
    /// The replaced shared credential, still accepted until its time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_credentials: Option<PreviousCredentials>,
    /// One-time bootstrap credential: a phone of this domain without its own credential
    /// that authenticates with it is given a generated per-device credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_username: Option<String>,
    /// Bootstrap password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_password: Option<String>,
    /// Addresses (CIDR blocks) the domain's phones may fetch from; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// The authentication scheme the domain's phones must use (`None`: the model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<AuthScheme>,
}

/// How phones prove their provisioning credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// HTTP Basic (and Digest, which is accepted wherever it is offered).
    #[default]
    Basic,
    /// HTTP Digest only (RFC 7616): Basic credentials are refused.
    Digest,
}

impl AuthScheme {
    /// True for the default, so it is left out of serialised records.
    pub fn is_basic(&self) -> bool {
        *self == AuthScheme::Basic
    }
}

/// A replaced provisioning credential and until when it is still accepted (rotation grace,
/// or the bootstrap credential right after a phone exchanged it).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousCredentials {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
    /// Unix seconds after which it no longer works.
    pub until: u64,
}

impl std::fmt::Debug for PreviousCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("until", &self.until)
            .finish()
    }
}

impl PreviousCredentials {
    /// Still accepted at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64) -> bool {
        now < self.until
    }
}

/// The credential that `old` held and `new` no longer does, kept for `grace_secs` from
/// `now`; otherwise what `new` carries, dropped once expired.
pub fn rotate(
    old: (&Option<String>, &Option<String>),
    new: (&Option<String>, &Option<String>),
    carried: Option<PreviousCredentials>,
    now: u64,
    grace_secs: u64,
) -> Option<PreviousCredentials> {
    if let (Some(u), Some(p)) = old
        && (old.0 != new.0 || old.1 != new.1)
    {
        return Some(PreviousCredentials {
            username: u.clone(),
            password: p.clone(),
            until: now.saturating_add(grace_secs),
        });
    }
    carried.filter(|c| c.valid_at(now))
}

/// A SIP registration (the NetSapiens "device" of a user).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Owning domain.
    pub domain: String,
    /// Owning user (extension).
    pub user: String,
    /// Device id: the SIP user and auth name.
    pub device: String,
    /// SIP registration password.
    pub password: String,
    /// Settings set explicitly on this account (unset ones inherit).
    #[serde(default)]
    pub settings: Settings,
    /// `emergency-address-id`.
    #[serde(default)]
    pub emergency_address_id: Option<String>,
    /// Provisioning username pushed to the linked phone.
    #[serde(default)]
    pub provisioning_username: Option<String>,
    /// Provisioning password pushed to the linked phone.
    #[serde(default)]
    pub provisioning_password: Option<String>,
    /// Overrides pushed to the linked phone.
    #[serde(default)]
    pub overrides: Option<Overrides>,
}

impl Account {
    /// The account id members reference: `device@domain`, the SIP identity.
    pub fn id(&self) -> String {
        account_id(&self.domain, &self.device)
    }
}

/// The id of the account `device` in `domain`.
pub fn account_id(domain: &str, device: &str) -> String {
    format!("{device}@{domain}")
}

/// Primary line or shared call appearance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineType {
    /// The account's own line.
    #[default]
    Primary,
    /// A shared call appearance of another user's line.
    SharedCallAppearance,
}

/// A port of a phone holding an account (the Webex "member").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// First port occupied.
    pub port: u32,
    /// Account id.
    pub id: String,
    /// Line type.
    pub line_type: LineType,
    /// Number of consecutive ports (line keys) occupied.
    pub line_weight: u32,
    /// Line key label (empty: the account's user).
    pub line_label: String,
    /// Owner of the phone.
    pub primary_owner: bool,
    /// Hotline on.
    pub hotline_enabled: bool,
    /// Hotline number.
    pub hotline_destination: String,
    /// Call decline reaches every endpoint.
    pub allow_call_decline_enabled: bool,
    /// T.38 fax compression (ATAs only).
    pub t38_fax_compression_enabled: bool,
}

impl Member {
    /// A member with the documented defaults.
    pub fn new(port: u32, id: String) -> Self {
        Member {
            port,
            id,
            line_type: LineType::Primary,
            line_weight: 1,
            line_label: String::new(),
            primary_owner: false,
            hotline_enabled: false,
            hotline_destination: String::new(),
            allow_call_decline_enabled: true,
            t38_fax_compression_enabled: false,
        }
    }

    /// The ports this member occupies.
    pub fn ports(&self) -> std::ops::RangeInclusive<u32> {
        self.port..=self.port.saturating_add(self.line_weight.max(1) - 1)
    }
}

/// A physical phone, keyed by MAC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phone {
    /// The MAC.
    pub mac: Mac,
    /// Tenant, if any.
    #[serde(default)]
    pub domain: Option<String>,
    /// Model id.
    pub model: String,
    /// Provisioning username for this phone.
    #[serde(default)]
    pub provisioning_username: Option<String>,
    /// Provisioning password for this phone.
    #[serde(default)]
    pub provisioning_password: Option<String>,
    /// The replaced credential (or the exchanged bootstrap one), accepted until its time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_credentials: Option<PreviousCredentials>,
    /// Phone-level settings (core server, transport).
    #[serde(default)]
    pub settings: Settings,
    /// Per-MAC overrides.
    #[serde(default)]
    pub overrides: Overrides,
    /// Members, ordered by port.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Store revision at which this phone's rendered files last changed.
    #[serde(default)]
    pub revision: u64,
}

impl Phone {
    /// A new phone of `model` with nothing else set.
    pub fn new(mac: Mac, model: String) -> Self {
        Phone {
            mac,
            domain: None,
            model,
            provisioning_username: None,
            provisioning_password: None,
            previous_credentials: None,
            settings: Settings::new(),
            overrides: Overrides::new(),
            members: Vec::new(),
            revision: 0,
        }
    }

    /// The first port not occupied by any member, up to `ports`.
    pub fn first_free_port(&self, ports: u32) -> Option<u32> {
        (1..=ports).find(|p| !self.members.iter().any(|m| m.ports().contains(p)))
    }
}

/// What serving a phone's cached file needs of the phone: who it is, which revision its
/// files are at, and which credentials open it. About a hundred bytes instead of the
/// decoded phone (settings, overrides, members), so the fetch path can keep every phone of
/// a large fleet in memory; the whole record is read only to render. Model and domain
/// names are shared between the gates of one store (see `Store::gate`).
pub struct Gate {
    /// The MAC.
    pub mac: Mac,
    /// Store revision at which this phone's rendered files last changed.
    pub revision: u64,
    /// Model id.
    pub model: std::sync::Arc<str>,
    /// Tenant, if any.
    pub domain: Option<std::sync::Arc<str>>,
    /// The phone's own provisioning credential (username, password), when it has both.
    pub provisioning: Option<Box<(String, String)>>,
    /// The replaced credential, accepted until its time.
    pub previous_credentials: Option<Box<PreviousCredentials>>,
    /// The file last served to this phone, so a repeat fetch needs no second lookup (the
    /// memory tier holds the file; this only points at it).
    pub last_served: crate::cache::LastServed,
    /// The phone's last request as recorded through this gate (see [`crate::activity`]).
    pub seen: crate::activity::Seen,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.seen.fold(self.mac);
    }
}

impl Gate {
    /// The gate of `p`; `intern` shares the model and domain names; repeats' times go to
    /// `folds` when the gate is dropped.
    pub fn of(
        p: &Phone,
        mut intern: impl FnMut(&str) -> std::sync::Arc<str>,
        folds: &std::sync::Arc<crate::activity::Folds>,
    ) -> Self {
        let provisioning = match (&p.provisioning_username, &p.provisioning_password) {
            (Some(u), Some(pw)) => Some(Box::new((u.clone(), pw.clone()))),
            _ => None,
        };
        Gate {
            mac: p.mac,
            revision: p.revision,
            model: intern(&p.model),
            domain: p.domain.as_deref().map(&mut intern),
            provisioning,
            previous_credentials: p.previous_credentials.clone().map(Box::new),
            last_served: crate::cache::LastServed::default(),
            seen: crate::activity::Seen::new(folds.clone()),
        }
    }

    /// Approximate bytes held per gate in memory (the memory tier's weigher): the struct,
    /// its `Arc`, the tier's entry, the boxed credentials, the last-served slot and what it
    /// has seen.
    pub fn weight(&self) -> u64 {
        let own = self
            .provisioning
            .as_ref()
            .map_or(0, |b| b.0.len() + b.1.len() + 64);
        let prev = self
            .previous_credentials
            .as_ref()
            .map_or(0, |p| p.username.len() + p.password.len() + 72);
        (128 + crate::cache::LastServed::WEIGHT + crate::activity::Seen::WEIGHT + own + prev) as u64
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("mac", &self.mac)
            .field("revision", &self.revision)
            .field("model", &self.model)
            .field("domain", &self.domain)
            .field(
                "provisioning_username",
                &self.provisioning.as_ref().map(|b| &b.0),
            )
            .field("previous_credentials", &self.previous_credentials)
            .finish()
    }
}

/// A phone of model `m` with `min(ports, 2)` accounts of `domain` on consecutive ports, the
/// first the primary owner: the sample used by the startup check and the benches.
pub fn sample_phone(m: &super::Model, domain: &str) -> (Phone, Vec<Account>) {
    let mut phone = Phone::new(
        super::Mac::from_bytes([0x00, 0x15, 0x65, 0xaa, 0xbb, 0xcc]),
        m.id.clone(),
    );
    phone.domain = Some(domain.to_string());
    let accounts: Vec<Account> = (1..=m.ports.min(2))
        .map(|p| Account {
            domain: domain.into(),
            user: format!("10{p:02}"),
            device: format!("10{p:02}a"),
            password: format!("Sample-10{p:02}a"),
            ..Default::default()
        })
        .collect();
    phone.members = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut mem = Member::new(i as u32 + 1, a.id());
            mem.primary_owner = i == 0;
            mem
        })
        .collect();
    (phone, accounts)
}

/// A domain-scoped admin token. Only the SHA-256 of the secret is ever stored; the secret
/// itself is shown once, when the token is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public id (what `DELETE /tokens/{id}` takes).
    pub id: String,
    /// The one domain the token may see and change.
    pub domain: String,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
}
