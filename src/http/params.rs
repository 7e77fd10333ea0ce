//! Path and query parameters of the admin API, each defined once: the handlers deserialize
//! them and the OpenAPI document describes them from the same types (`IntoParams`).

use serde::Deserialize;
use utoipa::IntoParams;

/// `{domain}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DomainPath {
    /// Domain name, or `~` for a domain token's own.
    #[param(example = "example.com", pattern = r"^(~|[A-Za-z0-9._-]{1,64})$")]
    pub domain: String,
}

/// `{domain}/users/{user}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// Domain name, or `~` for a domain token's own.
    #[param(example = "example.com", pattern = r"^(~|[A-Za-z0-9._-]{1,64})$")]
    pub domain: String,
    /// User (extension), or `~`.
    #[param(example = "100", pattern = r"^(~|[A-Za-z0-9._-]{1,16})$")]
    pub user: String,
}

/// `{domain}/users/{user}/devices/{device}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// Domain name, or `~` for a domain token's own.
    #[param(example = "example.com", pattern = r"^(~|[A-Za-z0-9._-]{1,64})$")]
    pub domain: String,
    /// User (extension), or `~`.
    #[param(example = "100", pattern = r"^(~|[A-Za-z0-9._-]{1,16})$")]
    pub user: String,
    /// Device name.
    #[param(example = "d100", pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub device: String,
}

/// `{mac}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MacPath {
    /// MAC: `aabbccddeeff`, `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`.
    #[param(
        example = "001565aabbcc",
        pattern = r"^([0-9A-Fa-f]{12}|([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4})$"
    )]
    pub mac: String,
}

/// `{mac}/files/{file}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MacFilePath {
    /// MAC: `aabbccddeeff`, `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`.
    #[param(
        example = "001565aabbcc",
        pattern = r"^([0-9A-Fa-f]{12}|([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4})$"
    )]
    pub mac: String,
    /// A file name the model requests (`001565aabbcc.cfg`).
    #[param(example = "001565aabbcc.cfg")]
    pub file: String,
}

/// `{id}` of a token.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// Token id (`tok_…`).
    pub id: String,
}

/// `?orgId=` on a phone's members.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrgQuery {
    /// The phone's domain; another gives 404.
    #[serde(rename = "orgId")]
    #[param(rename = "orgId")]
    pub org_id: Option<String>,
}

/// The filters and page of `GET /phones`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PhoneQuery {
    /// Only this domain's phones.
    pub domain: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// `next` of the previous page (a MAC).
    #[param(
        pattern = r"^([0-9A-Fa-f]{12}|([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}|([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4})$"
    )]
    pub cursor: Option<String>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000, value_type = Option<u32>)]
    pub limit: Option<usize>,
    /// Only phones whose last fetch is older than this RFC 3339 time, or that never fetched.
    #[serde(rename = "not-fetched-since")]
    #[param(rename = "not-fetched-since", format = DateTime)]
    pub not_fetched_since: Option<String>,
}

/// The export's format.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// The full store dump, as `autoprov export`.
    Json,
    /// The bulk rows.
    Csv,
}

/// `?format=` of `GET /export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `json` (default: the full store dump, as `autoprov export`) or `csv` (the bulk rows).
    // Read as text so an unknown format gets this API's error naming `format`.
    #[param(inline, value_type = Option<ExportFormat>)]
    pub format: Option<String>,
}
