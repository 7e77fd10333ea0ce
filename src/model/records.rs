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

/// A domain-scoped admin token. Only the SHA-256 of the secret is ever stored; the secret
/// itself is shown once, when the token is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public id (what `DELETE /tokens/{id}` takes).
    pub id: String,
    /// The one domain the token may see and change.
    pub domain: String,
    /// SHA-256 of the secret, lowercase hex (the store key holds the same bytes).
    pub sha256: String,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
}
