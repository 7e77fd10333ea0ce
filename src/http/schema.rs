//! Types that exist only to describe the admin API in the OpenAPI document
//! (`GET /api/v1/openapi.json`). Handlers read bodies field by field (`body::Fields`) and
//! build responses with `json!`, so these structs are never built or parsed at run time:
//! they mirror, field for field, what the handlers accept and send. `tests/openapi.rs`
//! validates real responses against them, so a handler that changes its output without
//! changing its type here fails a test.
//!
//! Conventions: a response field that is always present but may be `null` is
//! `Option<T>` with `required`; a request field is optional unless the handler requires
//! it, and `null` is allowed where the handler reads it as "reset" (`Patch::Null`).
//! `deny_unknown_fields` (→ `additionalProperties: false`) everywhere: requests refuse
//! unknown fields, and responses hold exactly these.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, ResponsesBuilder};
use utoipa::{IntoResponses, ToSchema};

// ---------------------------------------------------------------- errors

/// Every admin error: `{"error": {"code", "message", "field"}}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// JSON path of the offending field: present for `invalid` and `conflict` only.
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// Stable error codes (`AppError::parts`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400 naming a field.
    Invalid,
    /// 400: not JSON, or not a JSON object.
    MalformedJson,
    /// 413.
    PayloadTooLarge,
    /// 414.
    UriTooLong,
    /// 415.
    UnsupportedMediaType,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 405.
    MethodNotAllowed,
    /// 429 (phone side only).
    TooManyRequests,
    /// 416 (firmware, phone side only).
    RangeNotSatisfiable,
    /// 422: a reloaded model/template set does not load or render.
    InvalidSet,
    /// 400: bulk import rows that fail validation (listed in `rows`).
    InvalidRows,
    /// 500.
    Internal,
}

fn error_response(desc: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(desc)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Builds the error responses for the given statuses.
fn errors(codes: &[u16]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let mut b = ResponsesBuilder::new();
    for c in codes {
        let desc = match c {
            400 => {
                "invalid: a field, path parameter or query is invalid (`field` names it), \
                 or the body is not a JSON object (`malformed_json`)"
            }
            401 => "missing, wrong or revoked bearer token (`WWW-Authenticate: Bearer`)",
            403 => "the token lacks the right (a domain token on a cross-domain route)",
            404 => "no such resource (also another domain's resource under a domain token)",
            409 => "conflicts with existing data (`field` names it)",
            413 => "body over 1 MiB",
            414 => "request target over 8 KiB",
            415 => "Content-Type is not application/json (UTF-8)",
            _ => "error",
        };
        b = b.response(c.to_string(), error_response(desc));
    }
    b.build().into()
}

/// Errors of a read (`GET`) naming a resource: 400 (path or query), 401, 404, 414.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[400, 401, 404, 414])
    }
}

/// Errors of a read without a resource in the path: 400 (query), 401, 414.
pub struct ListErrors;

impl IntoResponses for ListErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[400, 401, 414])
    }
}

/// Errors of a write with a JSON body: 400, 401, 404, 409, 413, 414, 415.
pub struct WriteErrors;

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[400, 401, 404, 409, 413, 414, 415])
    }
}

/// Errors of a `DELETE`: 400 (path), 401, 404, 409, 414.
pub struct DeleteErrors;

impl IntoResponses for DeleteErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[400, 401, 404, 409, 414])
    }
}

/// 403 alone (added where a domain token is refused outright).
pub struct ForbiddenError;

impl IntoResponses for ForbiddenError {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[403])
    }
}

/// Errors of `POST /import` besides its own 400: 401, 403, 413, 414, 415.
pub struct ImportErrors;

impl IntoResponses for ImportErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[401, 403, 413, 414, 415])
    }
}

/// 414 alone (the only error of a route without a token or parameters).
pub struct UriErrors;

impl IntoResponses for UriErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        errors(&[414])
    }
}

// ---------------------------------------------------------------- shared values

/// A setting value as a body may give it: text, or an integer (stored as text).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SettingValue {
    /// Text (one line).
    Text(String),
    /// An integer.
    Int(i64),
}

/// Free text as every text field takes it: no control character, no U+FFFE or U+FFFF
/// (`model::settings::check_text`), at most 1024 characters.
const TEXT: &str = r"^[^\u0000-\u001f\u007f-\u009f\uFFFE\uFFFF]*$";

fn text_schema() -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(TEXT))
        .max_length(Some(1024))
}

/// A value in a merge patch of settings: text, an integer, or `null` to remove the key.
#[derive(Deserialize)]
pub struct SettingPatch(serde_json::Value);

impl utoipa::PartialSchema for SettingPatch {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(text_schema())
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}

impl ToSchema for SettingPatch {}

/// A setting name (`model::settings::valid_key`).
const SETTING_KEY: &str = r"^[a-z0-9][a-z0-9._-]{0,127}$";

/// An override key as every format takes it (the key-value rule, the loosest): 1–256
/// characters, not starting with `#` or `;`, no `=`, space or control character. A model
/// with an XML file narrows it (an XML name, `line[1]/RegisterAddr` paths for elements).
const OVERRIDE_KEY: &str =
    r"^[^#;=\s\u0000-\u001f\u007f-\u009f][^=\s\u0000-\u001f\u007f-\u009f]{0,255}$";

fn keyed_map(
    key: &'static str,
    value: RefOr<utoipa::openapi::schema::Schema>,
) -> RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(key)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(value)))
        .into()
}

/// A merge patch of settings: name → text, an integer, or `null` to remove the name.
#[derive(Deserialize)]
pub struct SettingsPatch(BTreeMap<String, SettingPatch>);

impl utoipa::PartialSchema for SettingsPatch {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        keyed_map(
            SETTING_KEY,
            <SettingPatch as utoipa::PartialSchema>::schema(),
        )
    }
}

impl ToSchema for SettingsPatch {}

/// A merge patch of overrides: key → text, an integer, or `null` to remove the key.
#[derive(Deserialize)]
pub struct OverridePatch(BTreeMap<String, SettingPatch>);

impl utoipa::PartialSchema for OverridePatch {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        keyed_map(
            OVERRIDE_KEY,
            <SettingPatch as utoipa::PartialSchema>::schema(),
        )
    }
}

impl ToSchema for OverridePatch {}

/// Overrides as a whole: key → text.
#[derive(Deserialize)]
pub struct OverrideMap(BTreeMap<String, String>);

impl utoipa::PartialSchema for OverrideMap {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        keyed_map(OVERRIDE_KEY, text_schema().into())
    }
}

impl ToSchema for OverrideMap {}

/// An address or an IPv4 block (`192.0.2.0/24`); IPv6 blocks (`2001:db8::/32`) are accepted
/// too, beyond what the schema's pattern says.
#[derive(Deserialize)]
pub struct Cidr(String);

impl utoipa::PartialSchema for Cidr {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
        };
        const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
        let block = format!(r"^({OCTET}\.){{3}}{OCTET}/(3[0-2]|[12]?[0-9])$");
        let text = |f: KnownFormat| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(f)))
        };
        AnyOfBuilder::new()
            .item(text(KnownFormat::Ipv4))
            .item(text(KnownFormat::Ipv6))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(block)),
            )
            .into()
    }
}

impl ToSchema for Cidr {}

/// Registration expiry: 1–604800, as an integer or its decimal text.
#[derive(Deserialize)]
pub struct Expiry(serde_json::Value);

impl utoipa::PartialSchema for Expiry {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(604_800)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[1-9][0-9]{0,5}$")),
            )
            .into()
    }
}

impl ToSchema for Expiry {}

/// `yes` or `no`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    /// Yes.
    Yes,
    /// No.
    No,
}

/// SIP transport.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

/// SRTP mode.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Srtp {
    /// Off.
    No,
    /// Required.
    Yes,
    /// When offered.
    Opportunistic,
}

/// Call recording mode.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Recording {
    /// Off.
    No,
    /// On.
    Yes,
    /// With transcription.
    YesWithTranscription,
    /// With transcription and sentiment.
    YesWithTranscriptionAndSentiment,
}

/// NAT traversal mode.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Nat {
    /// Automatic.
    Automatic,
    /// None.
    None,
    /// Never.
    Never,
    /// Fixed.
    Fixed,
}

/// How a domain's phones authenticate.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// HTTP Basic.
    Basic,
    /// HTTP Digest.
    Digest,
}

// ---------------------------------------------------------------- models

/// `GET /models`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelList {
    /// Every loaded model.
    pub models: Vec<ModelOut>,
}

/// A phone model of the catalogue.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelOut {
    /// Model id (`yealink-t46s`).
    pub id: String,
    /// Vendor.
    pub vendor: String,
    /// Display name.
    pub name: String,
    /// SIP accounts (member ports) it holds.
    pub ports: u32,
    /// Line keys.
    pub line_keys: u32,
    /// Whether it is an ATA (only ATAs accept T.38).
    pub ata: bool,
    /// Model name in its User-Agent.
    #[schema(required = true)]
    pub user_agent_model: Option<String>,
    /// File names it requests (`{mac}.cfg`).
    pub files: Vec<String>,
    /// Model defaults: setting → value.
    pub defaults: BTreeMap<String, String>,
}

// ---------------------------------------------------------------- domains

/// A domain as `GET /domains/{domain}` returns it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DomainOut {
    /// Name.
    pub domain: String,
    /// Domain defaults: setting → value.
    pub defaults: BTreeMap<String, String>,
    /// Shared provisioning user name.
    #[schema(required = true)]
    pub device_provisioning_username: Option<String>,
    /// Until when the replaced provisioning credential still works (RFC 3339).
    #[schema(required = true)]
    pub device_provisioning_previous_valid_until: Option<String>,
    /// Bootstrap user name.
    #[schema(required = true)]
    pub device_provisioning_bootstrap_username: Option<String>,
    /// Addresses the domain's phones are served from (`[]`: any).
    pub device_provisioning_allowed_cidrs: Vec<String>,
    /// Authentication scheme (null: the model's).
    #[schema(required = true)]
    pub device_provisioning_auth_scheme: Option<AuthScheme>,
}

/// `PUT /domains/{domain}` body: every field optional; `null` resets.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DomainIn {
    /// Read-only: must equal the path's domain if given.
    #[schema(nullable = false)]
    pub domain: Option<String>,
    /// Merge patch of domain defaults (a key given `null` is removed; `null` clears all).
    pub defaults: Option<SettingsPatch>,
    /// Provisioning user name (set together with the password).
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_username: Option<String>,
    /// Provisioning password (write-only).
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_password: Option<String>,
    /// Bootstrap user name (set together with the password).
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_bootstrap_username: Option<String>,
    /// Bootstrap password (write-only).
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_bootstrap_password: Option<String>,
    /// CIDR blocks or addresses (at most 256); `[]` or `null`: any.
    #[schema(max_items = 256)]
    pub device_provisioning_allowed_cidrs: Option<Vec<Cidr>>,
    /// `basic`, `digest`, or `null` (the model's).
    pub device_provisioning_auth_scheme: Option<AuthScheme>,
}

// ---------------------------------------------------------------- accounts

/// An account ("device for user").
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AccountOut {
    /// `device@domain`.
    pub id: String,
    /// Domain.
    pub domain: String,
    /// User (extension).
    pub user: String,
    /// Device (SIP user and auth name).
    pub device: String,
    /// Emergency caller id (`[*]`: the user's).
    pub caller_id_number_emergency: String,
    /// `yes`/`no`.
    pub device_force_notify_new_voicemails_enabled: String,
    /// `yes`/`no`.
    pub device_level_call_recording_enabled: String,
    /// `yes`/`no`.
    pub device_push_enabled: String,
    /// `yes`/`no`.
    pub device_sip_registration_ignore_for_presence_calculation: String,
    /// `yes`/`no`.
    pub device_sip_registration_ignore_report_enabled: String,
    /// `yes`/`no`.
    pub device_sip_no_to_tag_in_cancel: String,
    /// `yes`/`no`.
    pub auto_answer_enabled: String,
    /// Registration expiry in seconds.
    pub device_sip_registration_expiry_seconds: i64,
    /// `no`/`yes`/`opportunistic`.
    pub device_srtp_enabled: String,
    /// Recording mode.
    pub recording_configuration: String,
    /// Required User-Agent substring.
    #[schema(required = true)]
    pub device_sip_allowed_user_agent: Option<String>,
    /// NAT traversal mode.
    pub device_sip_nat_traversal_enabled: String,
    /// Emergency address id.
    #[schema(required = true)]
    pub emergency_address_id: Option<String>,
    /// Model of the linked phone.
    #[schema(required = true)]
    pub device_models_model: Option<String>,
    /// MAC of the linked phone (12 lowercase hex digits).
    #[schema(required = true)]
    pub device_provisioning_mac_address: Option<String>,
    /// Port on the linked phone.
    #[schema(required = true)]
    pub device_provisioning_line: Option<u32>,
    /// Registrar (`host[:port]`).
    #[schema(required = true)]
    pub device_provisioning_registration_core_server: Option<String>,
    /// `udp`/`tcp`/`tls`.
    pub device_provisioning_sip_transport_protocol: String,
    /// Provisioning user name pushed to the linked phone.
    #[schema(required = true)]
    pub device_provisioning_username: Option<String>,
    /// Overrides pushed to the linked phone.
    #[schema(required = true)]
    pub device_provisioning_overrides: Option<BTreeMap<String, String>>,
}

/// Overrides as an account body gives them: an object of key → string, or `key = value`
/// lines.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OverridesIn {
    /// Key → value.
    Map(OverrideMap),
    /// `key = value` lines.
    Lines(String),
}

/// Account body of `POST` (creation): an [`AccountIn`] that names `device`.
pub struct AccountCreateIn;

impl utoipa::PartialSchema for AccountCreateIn {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref};
        AllOfBuilder::new()
            .item(Ref::from_schema_name("AccountIn"))
            .item(ObjectBuilder::new().required("device"))
            .into()
    }
}

impl ToSchema for AccountCreateIn {
    fn schemas(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((
            "AccountIn".into(),
            <AccountIn as utoipa::PartialSchema>::schema(),
        ));
        <AccountIn as ToSchema>::schemas(schemas);
    }
}

/// Account body (`POST` needs `device`; `PUT` takes it from the path). Every field
/// optional; `null` resets to the default.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AccountIn {
    /// Read-only on `PUT` (must equal the path's); required on `POST`.
    #[schema(nullable = false)]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "d100")]
    pub device: Option<String>,
    /// Read-only: must equal the path's if given.
    #[schema(nullable = false, read_only)]
    pub domain: Option<String>,
    /// Read-only: must equal the path's if given.
    #[schema(nullable = false, read_only)]
    pub user: Option<String>,
    /// Read-only: `device@domain` if given.
    #[schema(nullable = false, read_only)]
    pub id: Option<String>,
    /// Write-only; `null` generates a new one.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_sip_registration_password: Option<String>,
    /// Emergency caller id.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 1024)]
    pub caller_id_number_emergency: Option<String>,
    /// Flag.
    pub device_force_notify_new_voicemails_enabled: Option<YesNo>,
    /// Flag.
    pub device_level_call_recording_enabled: Option<YesNo>,
    /// Flag.
    pub device_push_enabled: Option<YesNo>,
    /// Flag.
    pub device_sip_registration_ignore_for_presence_calculation: Option<YesNo>,
    /// Flag.
    pub device_sip_registration_ignore_report_enabled: Option<YesNo>,
    /// Flag.
    pub device_sip_no_to_tag_in_cancel: Option<YesNo>,
    /// Flag.
    pub auto_answer_enabled: Option<YesNo>,
    /// Seconds, 1–604800 (an integer or its decimal text).
    pub device_sip_registration_expiry_seconds: Option<Expiry>,
    /// `no`/`yes`/`opportunistic`.
    pub device_srtp_enabled: Option<Srtp>,
    /// Recording mode.
    pub recording_configuration: Option<Recording>,
    /// Required User-Agent substring.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 1024)]
    pub device_sip_allowed_user_agent: Option<String>,
    /// NAT traversal mode.
    pub device_sip_nat_traversal_enabled: Option<Nat>,
    /// Emergency address id.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 1024)]
    pub emergency_address_id: Option<String>,
    /// Model of the phone to link (with the MAC).
    #[schema(example = "yealink-t46s")]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 64)]
    pub device_models_model: Option<String>,
    /// MAC to link (creating the phone if needed); `null` unlinks.
    #[schema(
        pattern = r"^([0-9A-Fa-f]{12}|([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4})$",
        example = "001565aabbcc"
    )]
    pub device_provisioning_mac_address: Option<String>,
    /// Registrar (`host[:port]`).
    #[schema(
        pattern = r"^[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,3})?$",
        example = "sip.example.com"
    )]
    pub device_provisioning_registration_core_server: Option<String>,
    /// Transport.
    pub device_provisioning_sip_transport_protocol: Option<Transport>,
    /// Provisioning user name pushed to the phone.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_username: Option<String>,
    /// Provisioning password pushed to the phone (write-only).
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_password: Option<String>,
    /// Port on the linked phone (1–64).
    #[schema(minimum = 1, maximum = 64)]
    pub device_provisioning_line: Option<i64>,
    /// Overrides pushed to the linked phone.
    pub device_provisioning_overrides: Option<OverridesIn>,
}

// ---------------------------------------------------------------- phones

/// A member (Webex "device member"): an account on a port of a phone.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberOut {
    /// First port.
    pub port: u32,
    /// Account id (`device@domain`).
    pub id: String,
    /// Line type.
    pub line_type: LineType,
    /// Consecutive ports occupied.
    pub line_weight: u32,
    /// Label (empty: the account's user).
    pub line_label: String,
    /// Owner of the phone.
    pub primary_owner: bool,
    /// Hotline on.
    pub hotline_enabled: bool,
    /// Hotline number.
    pub hotline_destination: String,
    /// Call decline reaches every endpoint.
    pub allow_call_decline_enabled: bool,
    /// T.38 (ATAs only).
    pub t38_fax_compression_enabled: bool,
}

/// Line type.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineType {
    /// The account's own line.
    Primary,
    /// Shared call appearance.
    SharedCallAppearance,
}

/// A member as `PUT …/members` takes it (`port` and `id` required).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberIn {
    /// First port (1–1024; at most the model's ports).
    #[schema(minimum = 1, maximum = 1024)]
    pub port: u32,
    /// Account id (`device@domain`) of the phone's domain.
    #[schema(
        example = "d100@example.com",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$",
        max_length = 1024
    )]
    pub id: String,
    /// Default `PRIMARY`.
    pub line_type: Option<LineType>,
    /// 1–64, default 1.
    #[schema(minimum = 1, maximum = 64)]
    pub line_weight: Option<i64>,
    /// Default: the account's user.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 1024)]
    pub line_label: Option<String>,
    /// Default false.
    pub primary_owner: Option<bool>,
    /// Default false.
    pub hotline_enabled: Option<bool>,
    /// Default "".
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 1024)]
    pub hotline_destination: Option<String>,
    /// Default true.
    pub allow_call_decline_enabled: Option<bool>,
    /// Default false (ATAs only).
    pub t38_fax_compression_enabled: Option<bool>,
}

/// `GET`/`PUT /phones/{mac}/members` response.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersOut {
    /// Members in port order.
    pub members: Vec<MemberOut>,
}

/// `PUT /phones/{mac}/members` body: the whole list (omitted or null: only the primary
/// owner stays).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersIn {
    /// The new list.
    pub members: Option<Vec<Member>>,
}

/// One member as the document states it in full: a [`MemberIn`] whose hotline, when on,
/// names a destination (a rule across two fields, which `MemberIn`'s derive cannot say).
#[derive(Deserialize)]
pub struct Member(MemberIn);

impl utoipa::PartialSchema for Member {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Ref, Type};
        let off = ObjectBuilder::new().property(
            "hotlineEnabled",
            ObjectBuilder::new().enum_values(Some([
                serde_json::Value::Bool(false),
                serde_json::Value::Null,
            ])),
        );
        let named = ObjectBuilder::new()
            .required("hotlineDestination")
            .property(
                "hotlineDestination",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"\S")),
            );
        AllOfBuilder::new()
            .item(Ref::from_schema_name("MemberIn"))
            .item(AnyOfBuilder::new().item(off).item(named))
            .into()
    }
}

impl ToSchema for Member {
    fn schemas(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((
            "MemberIn".into(),
            <MemberIn as utoipa::PartialSchema>::schema(),
        ));
        <MemberIn as ToSchema>::schemas(schemas);
    }
}

/// The phone's last request.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FetchOut {
    /// RFC 3339 UTC.
    pub time: String,
    /// Client address.
    pub ip: String,
    /// User-Agent.
    pub user_agent: String,
    /// File asked for.
    pub file: String,
    /// Status answered.
    pub status: u16,
    /// Vendor read from the User-Agent.
    #[schema(required = true)]
    pub vendor: Option<String>,
    /// Model read from the User-Agent.
    #[schema(required = true)]
    pub model: Option<String>,
    /// Firmware read from the User-Agent.
    #[schema(required = true)]
    pub firmware: Option<String>,
}

/// A phone.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PhoneOut {
    /// 12 lowercase hex digits.
    pub mac: String,
    /// Domain.
    #[schema(required = true)]
    pub domain: Option<String>,
    /// Model id.
    pub device_models_model: String,
    /// The phone's own provisioning user name.
    #[schema(required = true)]
    pub device_provisioning_username: Option<String>,
    /// Until when the replaced credential still works (RFC 3339).
    #[schema(required = true)]
    pub device_provisioning_previous_valid_until: Option<String>,
    /// Phone-level registrar.
    #[schema(required = true)]
    pub device_provisioning_registration_core_server: Option<String>,
    /// Phone-level transport.
    #[schema(required = true)]
    pub device_provisioning_sip_transport_protocol: Option<String>,
    /// Vendor key → value.
    pub device_provisioning_overrides: BTreeMap<String, String>,
    /// Members in port order.
    pub members: Vec<MemberOut>,
    /// Changes whenever the rendered files may have changed.
    pub revision: u64,
    /// The last request, or null. In `GET` responses (one phone and the list) only, not
    /// in the answer to a `PUT`.
    pub last_fetch: Option<FetchOut>,
}

/// `GET /phones`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneList {
    /// Phones in MAC order.
    pub phones: Vec<PhoneOut>,
    /// Cursor of the next page, or null.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// `PUT /phones/{mac}` body: every field optional (`device-models-model` required to
/// create); `null` resets.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PhoneIn {
    /// Read-only: must equal the path's MAC (lowercase) if given.
    #[schema(nullable = false, read_only)]
    pub mac: Option<String>,
    /// Domain (must exist).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "example.com")]
    pub domain: Option<String>,
    /// Model id (cannot be null).
    #[schema(nullable = false)]
    #[schema(example = "yealink-t46s")]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 64)]
    pub device_models_model: Option<String>,
    /// The phone's own provisioning user name (set together with the password).
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_username: Option<String>,
    /// Write-only.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", max_length = 1024)]
    pub device_provisioning_password: Option<String>,
    /// Phone-level registrar.
    #[schema(
        pattern = r"^[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,3})?$",
        example = "sip.example.com"
    )]
    pub device_provisioning_registration_core_server: Option<String>,
    /// Phone-level transport.
    pub device_provisioning_sip_transport_protocol: Option<Transport>,
    /// Merge patch of vendor key → value.
    pub device_provisioning_overrides: Option<OverridePatch>,
}

// ---------------------------------------------------------------- explain

/// `GET /phones/{mac}/explain`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExplainOut {
    /// MAC.
    pub mac: String,
    /// Model id.
    pub device_models_model: String,
    /// Per-phone files.
    pub files: Vec<FileExplained>,
    /// Settings no template reads.
    pub unused: Vec<UnusedSetting>,
}

/// File format.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `key = value` lines (Yealink).
    KeyValue,
    /// XML attributes (Polycom).
    XmlAttribute,
    /// XML leaf elements.
    XmlElement,
}

/// One file explained.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileExplained {
    /// File name.
    pub file: String,
    /// Format.
    pub format: Format,
    /// Every key in file order with the layer that set it.
    pub values: Vec<ExplainedValue>,
    /// The phone's overrides.
    pub overrides: Vec<OverrideUse>,
}

/// A key's value and the layer that set it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainedValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// `model`, `server`, `domain`, `phone`, `line N` or `override`.
    pub layer: String,
}

/// An override and whether it matched a generated key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideUse {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// True when no generated key matched (appended).
    pub added: bool,
}

/// A setting the model's templates never read.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnusedSetting {
    /// Setting.
    pub setting: String,
    /// Value.
    pub value: String,
    /// `phone` or `line N`.
    pub scope: String,
}

// ---------------------------------------------------------------- unprovisioned

/// `GET /unprovisioned`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnprovisionedList {
    /// Most recently seen first.
    pub unprovisioned: Vec<UnprovisionedOut>,
}

/// A MAC that asked with the server-default credentials but is not linked.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UnprovisionedOut {
    /// MAC.
    pub mac: String,
    /// Vendor from the User-Agent.
    #[schema(required = true)]
    pub vendor: Option<String>,
    /// Model from the User-Agent.
    #[schema(required = true)]
    pub model: Option<String>,
    /// Firmware from the User-Agent.
    #[schema(required = true)]
    pub firmware: Option<String>,
    /// Last address.
    pub ip: String,
    /// Last file asked for.
    pub file: String,
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
    /// Requests counted.
    pub requests: u64,
}

// ---------------------------------------------------------------- tokens

/// `POST /tokens` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    /// An existing domain.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub domain: String,
}

/// `POST /tokens` response: the only one that holds the token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    /// `tok_` + 12.
    pub id: String,
    /// `apt_` + 43: shown once.
    pub token: String,
    /// Domain.
    pub domain: String,
    /// RFC 3339 UTC.
    pub created: String,
}

/// A token's record (never the token).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenOut {
    /// `tok_` + 12.
    pub id: String,
    /// Domain.
    pub domain: String,
    /// RFC 3339 UTC.
    pub created: String,
}

/// `GET /tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenList {
    /// Oldest first.
    pub tokens: Vec<TokenOut>,
}

// ---------------------------------------------------------------- reload

/// `POST /reload` answer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadOut {
    /// Models now loaded.
    pub models: usize,
    /// Models new or changed (their phones re-render on the next fetch).
    pub changed: Vec<String>,
    /// Models whose cached renders stay valid.
    pub unchanged: usize,
    /// Models no longer loaded.
    pub removed: Vec<String>,
}

/// 422 of `POST /reload`: the error shape plus where the operator's file is wrong.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadErrorBody {
    /// The error.
    pub error: ReloadErrorDetail,
}

/// One reload error.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadErrorDetail {
    /// `invalid_set`.
    pub code: ErrorCode,
    /// `<file>:<line>:<col>: …`.
    pub message: String,
    /// A model file's bad field, when that is the cause.
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// The file at fault (a template or model file path).
    pub file: String,
    /// The line, when tera or toml gave one.
    #[schema(nullable = true)]
    pub line: Option<u32>,
}

// ---------------------------------------------------------------- bulk

/// JSON rows of `POST /import`: a list of row objects (the CSV columns as keys, plus
/// `overrides`), or `{"rows": [...]}`.
#[derive(Deserialize, ToSchema)]
pub struct ImportRows(serde_json::Value);

/// `POST /import` answer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSummary {
    /// Rows read.
    pub rows: usize,
    /// Phones named (created or updated).
    pub phones: usize,
    /// Accounts named (created or updated).
    pub accounts: usize,
    /// Domains named.
    pub domains: usize,
    /// Of those, created by this import.
    pub created: ImportCreated,
}

/// What an import created.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportCreated {
    /// New phones.
    pub phones: usize,
    /// New accounts.
    pub accounts: usize,
    /// New domains.
    pub domains: usize,
}

/// 400 of `POST /import`: the error shape plus every bad row.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportErrorBody {
    /// The error (`invalid_rows`, field `rows`).
    pub error: ErrorDetail,
    /// Every bad row.
    pub rows: Vec<ImportRowError>,
}

/// One bad row.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRowError {
    /// Line (CSV) or position (JSON).
    pub line: usize,
    /// Column (`mac`, `override:P271`, …).
    pub field: String,
    /// What is wrong.
    pub message: String,
}
