//! The admin JSON API under `/api/v1`: DTOs kept apart from store records, field-level
//! validation before any write, one all-or-nothing store commit per request, flushed
//! before the 2xx. Status codes as DESIGN.md §3 lists them.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{Fields, JsonBody, Patch, Path, Query, merge_patch};
use super::params::{DevicePath, DomainPath, MacFilePath, MacPath, OrgQuery, PhoneQuery, UserPath};
use super::schema;
use crate::AppState;
use crate::auth;
use crate::error::AppError;
use crate::model::records::account_id;
use crate::model::rules;
use crate::model::settings::{self as st, SEED_FLAGS};
use crate::model::{Account, Domain, FileRef, LineType, Mac, Member, Model, Phone};
use crate::render::overlay;
use crate::store::{Change, render_key};

/// The admin routes (mounted under `/api/v1`), each with its OpenAPI description.
///
/// To add a route: give the handler a `#[utoipa::path(method, path = "...", ...)]`
/// (path relative to `/api/v1`, request body and every response with its schema from
/// `http::schema`) and list it here in `routes!` (one `routes!` per path; handlers for
/// other methods of the same path go in the same `routes!`). `routes!` takes the method
/// and path from the attribute, so the router and `/api/v1/openapi.json` cannot disagree.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(get_domain, put_domain, delete_domain))
        .routes(routes!(list_accounts, post_account))
        .routes(routes!(get_account, put_account, delete_account))
        .routes(routes!(list_phones))
        .routes(routes!(get_phone, put_phone, delete_phone))
        .routes(routes!(get_members, put_members))
        .routes(routes!(preview))
        .routes(routes!(explain))
        .routes(routes!(unprovisioned))
        .routes(routes!(super::tokens::list, super::tokens::create))
        .routes(routes!(super::tokens::revoke))
        .routes(routes!(super::openapi::openapi_json))
        .routes(routes!(super::reload::reload))
        .routes(routes!(super::bulk::import))
        .routes(routes!(super::bulk::export))
}

/// Proof that the request carries a valid admin token: the server-wide one (`domain` is
/// `None`), or a domain token from `POST /tokens` (`domain` is its domain). A missing,
/// unknown or revoked token is a 401.
///
/// What a domain token may do, route by route (the server-wide token may do everything).
/// "404" below is the same answer a missing resource gets, so a domain token cannot tell
/// another domain's resources from absent ones:
/// - `GET /models`: allowed (the catalogue holds no tenant data).
/// - `/domains/{d}` and everything under it (domain GET/PUT/DELETE; accounts list, POST,
///   GET, PUT, DELETE): only `d` = its domain; `~` is its domain; any other `d` → 404,
///   whether it exists or not (checked in `resolve_domain`, before any lookup).
/// - `GET /phones`: only its domain's phones (a `?domain=` naming another gives an empty
///   list).
/// - `/phones/{mac}` GET/PUT/DELETE, `/members` GET/PUT, `/files/{file}`, `/explain`: a
///   phone outside its domain (another domain's, or in no domain) → 404. `PUT` of a new
///   MAC creates the phone in its domain; the body's `domain` may only name its domain
///   (another answers like an unknown domain: 409 naming `domain`), and `null` (which
///   would leave the phone in no domain) is a 400 naming `domain`.
/// - Account bodies linking `device-provisioning-mac-address` to a phone outside its
///   domain (or in no domain, which the server-wide token would claim) → 404.
/// - Members: an account id of another domain answers exactly like an unknown id (400
///   naming `members[i].id`), as it does for the server-wide token.
/// - `GET /unprovisioned` → 403: the list spans all domains.
/// - `/tokens`: its own domain's tokens only (see `http::tokens`).
///
/// MACs are one namespace across domains, so a `PUT` that would create a phone or link an
/// account to a MAC another domain holds necessarily tells the domain token the MAC is in
/// use (404 instead of 201); nothing else about that phone is disclosed.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token's domain (`None` for the server-wide token).
    pub domain: Option<String>,
    /// The token's user.
    pub user: Option<String>,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, AppError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| auth::bearer(v.as_bytes()))
            .ok_or(AppError::Unauthorized)?;
        let hash = auth::hash(token);
        if st.admin_token_hash.len() == 32
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                &hash[..],
                &st.admin_token_hash[..],
            ))
        {
            return Ok(Admin {
                domain: None,
                user: None,
            });
        }
        // One keyed lookup by the secret's SHA-256 (never the secret itself). Its timing can
        // only tell a guesser about the hash of the guess, not about any stored token.
        match st.store.token(&hash)? {
            Some(t) => Ok(Admin {
                domain: Some(t.domain),
                user: None,
            }),
            None => Err(AppError::Unauthorized),
        }
    }
}

impl Admin {
    /// 403 unless this is the server-wide token (`what` spans every domain).
    pub(crate) fn server_wide(&self, what: &str) -> Result<(), AppError> {
        match self.domain {
            None => Ok(()),
            Some(_) => Err(AppError::Forbidden(format!(
                "{what} spans all domains; it needs the server-wide admin token"
            ))),
        }
    }

    /// Whether this token may see `domain`.
    fn sees(&self, domain: &str) -> bool {
        self.domain.as_deref().is_none_or(|d| d == domain)
    }

    /// Whether this token may see `phone` (a domain token: only its domain's phones).
    fn sees_phone(&self, phone: &Phone) -> bool {
        match &self.domain {
            None => true,
            Some(d) => phone.domain.as_ref() == Some(d),
        }
    }
}

pub(crate) fn check_name(field: &str, v: &str, max: usize) -> Result<(), AppError> {
    rules::check_name(v, max).map_err(|m| AppError::invalid(field, m))
}

/// Resolves `~` in the domain path segment to the token's domain.
fn resolve_domain(admin: &Admin, domain: &str) -> Result<String, AppError> {
    let d = if domain == "~" {
        admin.domain.clone().ok_or_else(|| {
            AppError::NotFound(
                "`~` names the token's own domain and this token is bound to none; name the \
                 domain"
                    .into(),
            )
        })?
    } else {
        domain.to_string()
    };
    check_name("domain", &d, 64)?;
    // Another domain's path answers like a missing domain, before any lookup.
    if !admin.sees(&d) {
        return Err(AppError::NotFound(format!("no domain {d}")));
    }
    Ok(d)
}

fn resolve_user(admin: &Admin, user: &str) -> Result<String, AppError> {
    let u = if user == "~" {
        admin.user.clone().ok_or_else(|| {
            AppError::NotFound(
                "`~` names the token's own user and this token is bound to none; name the user"
                    .into(),
            )
        })?
    } else {
        user.to_string()
    };
    check_name("user", &u, 16)?;
    Ok(u)
}

fn parse_mac(field: &str, s: &str) -> Result<Mac, AppError> {
    Mac::parse(s).map_err(|e| AppError::invalid(field, e.to_string()))
}

fn created_or_ok(created: bool, body: Value) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

// ---------------------------------------------------------------- models

/// Lists the model catalogue.
#[utoipa::path(
    get, path = "/models", tag = "models",
    responses((status = 200, description = "Every model", body = schema::ModelList), schema::ListErrors)
)]
async fn list_models(_: Admin, State(st): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = st
        .templates()
        .catalogue
        .models()
        .map(|m| {
            json!({
                "id": m.id, "vendor": m.vendor, "name": m.name, "ports": m.ports,
                "lineKeys": m.line_keys, "ata": m.ata, "userAgentModel": m.user_agent_model,
                "files": m.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                "defaults": m.settings,
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

// ---------------------------------------------------------------- domains

fn domain_json(d: &Domain) -> Value {
    json!({
        "domain": d.name,
        "defaults": d.settings,
        "device-provisioning-username": d.provisioning_username,
        "device-provisioning-previous-valid-until": previous_until(&d.previous_credentials),
        "device-provisioning-bootstrap-username": d.bootstrap_username,
        "device-provisioning-allowed-cidrs": d.allowed_cidrs,
        "device-provisioning-auth-scheme": d.auth_scheme,
    })
}

/// When a replaced provisioning credential stops working (RFC 3339), if it still works.
fn previous_until(p: &Option<crate::model::PreviousCredentials>) -> Option<String> {
    let p = p
        .as_ref()
        .filter(|p| p.valid_at(crate::guard::now_secs()))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(p.until);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Reads `device-provisioning-allowed-cidrs`: a list of CIDR blocks (or addresses), `null`
/// or `[]` for any address.
fn read_cidrs(f: &mut Fields, target: &mut Vec<String>) -> Result<(), AppError> {
    const KEY: &str = "device-provisioning-allowed-cidrs";
    match f.take(KEY) {
        Patch::Absent => {}
        Patch::Null => target.clear(),
        Patch::Set(Value::Array(items)) => {
            if items.len() > 256 {
                return Err(AppError::invalid(KEY, "at most 256 blocks"));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.into_iter().enumerate() {
                let field = format!("{KEY}[{i}]");
                let Value::String(s) = v else {
                    return Err(AppError::invalid(field, "must be a string"));
                };
                let net = crate::guard::parse_cidr(&s).map_err(|m| AppError::invalid(&field, m))?;
                out.push(net.to_string());
            }
            *target = out;
        }
        Patch::Set(_) => {
            return Err(AppError::invalid(
                KEY,
                "must be a list of CIDR blocks like [\"192.0.2.0/24\"]",
            ));
        }
    }
    Ok(())
}

/// Reads a domain.
#[utoipa::path(
    get, path = "/domains/{domain}", tag = "domains", params(DomainPath),
    responses((status = 200, description = "The domain", body = schema::DomainOut), schema::ReadErrors)
)]
async fn get_domain(
    a: Admin,
    State(st): State<AppState>,
    Path(DomainPath { domain }): Path<DomainPath>,
) -> Result<Json<Value>, AppError> {
    let name = resolve_domain(&a, &domain)?;
    let d = st
        .store
        .domain(&name)?
        .ok_or_else(|| AppError::NotFound(format!("no domain {name}")))?;
    Ok(Json(domain_json(&d)))
}

/// Creates or updates a domain (partial update).
#[utoipa::path(
    put, path = "/domains/{domain}", tag = "domains", params(DomainPath),
    request_body = schema::DomainIn,
    responses(
        (status = 200, description = "Updated", body = schema::DomainOut),
        (status = 201, description = "Created", body = schema::DomainOut),
        schema::WriteErrors
    )
)]
async fn put_domain(
    a: Admin,
    State(st): State<AppState>,
    Path(DomainPath { domain }): Path<DomainPath>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let name = resolve_domain(&a, &domain)?;
    let (_, d, created) = {
        let _w = st.store.writer();
        let existing = st.store.domain(&name)?;
        let created = existing.is_none();
        let mut d = existing.clone().unwrap_or_else(|| Domain {
            name: name.clone(),
            ..Default::default()
        });
        let mut f = Fields::new(body, "");
        f.echo("domain", &name)?;
        let defaults = f.take("defaults");
        merge_patch(&mut d.settings, "defaults", defaults, &|k, v| {
            if !st::valid_key(k) {
                return Err("is not a valid setting name".into());
            }
            v.map_or(Ok(()), |v| st::check_value(k, v))
        })?;
        read_credentials(
            &mut f,
            &mut d.provisioning_username,
            &mut d.provisioning_password,
        )?;
        set_opt(
            &mut d.bootstrap_username,
            f.secret("device-provisioning-bootstrap-username")?,
        );
        set_opt(
            &mut d.bootstrap_password,
            f.secret("device-provisioning-bootstrap-password")?,
        );
        if d.bootstrap_username.is_some() != d.bootstrap_password.is_some() {
            return Err(AppError::conflict(
                "device-provisioning-bootstrap-password",
                "bootstrap username and password are set together",
            ));
        }
        read_cidrs(&mut f, &mut d.allowed_cidrs)?;
        match f.take("device-provisioning-auth-scheme") {
            Patch::Absent => {}
            Patch::Null => d.auth_scheme = None,
            Patch::Set(Value::String(v)) if v == "basic" => {
                d.auth_scheme = Some(crate::model::AuthScheme::Basic);
            }
            Patch::Set(Value::String(v)) if v == "digest" => {
                d.auth_scheme = Some(crate::model::AuthScheme::Digest);
            }
            Patch::Set(_) => {
                return Err(AppError::invalid(
                    "device-provisioning-auth-scheme",
                    "must be \"basic\", \"digest\" or null (the model's)",
                ));
            }
        }
        f.finish()?;
        let mut change = Change::default();
        if existing.as_ref() != Some(&d) {
            change.touch.extend(st.store.phones_in_domain(&name)?);
            change.domains.push((name.clone(), Some(d.clone())));
            st.store.commit(&change)?;
            if d.auth_scheme == Some(crate::model::AuthScheme::Digest) {
                st.access
                    .digest_in_use
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        (change, d, created)
    };
    // Even when nothing changed: the state this 2xx reports may be another request's
    // commit that is not on disk yet (flush returns at once when it is).
    st.store.flush().await?;
    // As stored: the commit adds what the body cannot say (the rotated credential's expiry).
    let d = st.store.domain(&d.name)?.unwrap_or(d);
    Ok(created_or_ok(created, domain_json(&d)))
}

/// Reads `device-provisioning-username` and `-password`, which are set (or reset) together.
fn read_credentials(
    f: &mut Fields,
    user: &mut Option<String>,
    password: &mut Option<String>,
) -> Result<(), AppError> {
    set_opt(user, f.secret("device-provisioning-username")?);
    set_opt(password, f.secret("device-provisioning-password")?);
    if user.is_some() != password.is_some() {
        return Err(AppError::conflict(
            "device-provisioning-password",
            "provisioning username and password are set together",
        ));
    }
    Ok(())
}

fn set_opt(target: &mut Option<String>, p: Patch<String>) {
    match p {
        Patch::Absent => {}
        Patch::Null => *target = None,
        Patch::Set(v) => *target = Some(v),
    }
}

/// Deletes a domain (409 while it has phones or accounts).
#[utoipa::path(
    delete, path = "/domains/{domain}", tag = "domains", params(DomainPath),
    responses((status = 204, description = "Deleted"), schema::DeleteErrors)
)]
async fn delete_domain(
    a: Admin,
    State(st): State<AppState>,
    Path(DomainPath { domain }): Path<DomainPath>,
) -> Result<StatusCode, AppError> {
    let name = resolve_domain(&a, &domain)?;
    {
        let _w = st.store.writer();
        if st.store.domain(&name)?.is_none() {
            return Err(AppError::NotFound(format!("no domain {name}")));
        }
        if st.store.domain_in_use(&name)? {
            return Err(AppError::conflict(
                "domain",
                "the domain still has phones or accounts; delete them first",
            ));
        }
        // The domain's tokens go with it: a later domain of the same name is not theirs.
        let tokens = crate::admin::tokens::of_domain(&st.store, &name)?;
        st.store.commit(&Change {
            domains: vec![(name, None)],
            tokens: tokens.into_iter().map(|h| (h, None)).collect(),
            ..Default::default()
        })?;
    }
    st.store.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- accounts

/// The phone an account is linked to (the first phone it is a member of), with its port.
fn linked_phone(st: &AppState, id: &str) -> Result<Option<(Phone, u32)>, AppError> {
    for mac in st.store.phones_of_account(id)? {
        if let Some(p) = st.store.phone(mac)?
            && let Some(m) = p.members.iter().find(|m| m.id == id)
        {
            let port = m.port;
            return Ok(Some((p, port)));
        }
    }
    Ok(None)
}

fn account_json(st: &AppState, a: &Account) -> Result<Value, AppError> {
    let get = |k: &str, default: &str| {
        a.settings
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let mut o = Map::new();
    o.insert("id".into(), json!(a.id()));
    o.insert("domain".into(), json!(a.domain));
    o.insert("user".into(), json!(a.user));
    o.insert("device".into(), json!(a.device));
    o.insert(
        st::EMERGENCY_CID.into(),
        json!(get(st::EMERGENCY_CID, "[*]")),
    );
    for (flag, default) in SEED_FLAGS {
        o.insert((*flag).into(), json!(get(flag, default)));
    }
    let expiry = get(st::EXPIRY, "60");
    o.insert(
        st::EXPIRY.into(),
        json!(expiry.parse::<i64>().unwrap_or(60)),
    );
    o.insert(st::SRTP.into(), json!(get(st::SRTP, "no")));
    o.insert(st::RECORDING.into(), json!(get(st::RECORDING, "no")));
    o.insert(st::ALLOWED_UA.into(), json!(a.settings.get(st::ALLOWED_UA)));
    o.insert(st::NAT.into(), json!(get(st::NAT, "automatic")));
    o.insert("emergency-address-id".into(), json!(a.emergency_address_id));
    let linked = linked_phone(st, &a.id())?;
    o.insert(
        "device-models-model".into(),
        json!(linked.as_ref().map(|(p, _)| p.model.clone())),
    );
    o.insert(
        "device-provisioning-mac-address".into(),
        json!(linked.as_ref().map(|(p, _)| p.mac.lower())),
    );
    o.insert(
        "device-provisioning-line".into(),
        json!(linked.as_ref().map(|(_, port)| *port)),
    );
    o.insert(
        st::CORE_SERVER.into(),
        json!(a.settings.get(st::CORE_SERVER)),
    );
    o.insert(st::TRANSPORT.into(), json!(get(st::TRANSPORT, "udp")));
    o.insert(
        "device-provisioning-username".into(),
        json!(a.provisioning_username),
    );
    o.insert("device-provisioning-overrides".into(), json!(a.overrides));
    Ok(Value::Object(o))
}

/// The account-level settings fields a body may carry (stored in `Account::settings`).
fn account_setting_fields() -> impl Iterator<Item = &'static str> {
    [
        st::EMERGENCY_CID,
        st::EXPIRY,
        st::SRTP,
        st::RECORDING,
        st::ALLOWED_UA,
        st::NAT,
        st::CORE_SERVER,
        st::TRANSPORT,
    ]
    .into_iter()
    .chain(SEED_FLAGS.iter().map(|(k, _)| *k))
}

/// Parses `device-provisioning-overrides`: an object of key → string, or the NetSapiens
/// string form with one `key = value` (or `key: value`) per line.
fn parse_overrides(field: &str, v: Value) -> Result<crate::model::Overrides, AppError> {
    let mut out = crate::model::Overrides::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(AppError::invalid(
                        format!("{field}.{k}"),
                        "must be a string",
                    ));
                };
                out.insert(k, s);
            }
        }
        Value::String(s) => {
            for (i, line) in s.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .or_else(|| line.split_once(':'))
                    .ok_or_else(|| {
                        AppError::invalid(field, format!("line {} is not `key = value`", i + 1))
                    })?;
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        _ => {
            return Err(AppError::invalid(
                field,
                "must be an object of key → string value, or `key = value` lines",
            ));
        }
    }
    Ok(out)
}

fn check_overrides(
    model: &Model,
    field: &str,
    ov: &crate::model::Overrides,
) -> Result<(), AppError> {
    for (k, v) in ov {
        for f in model.files.iter().filter(|f| f.overrides) {
            overlay::check_override(f.format, k, v)
                .map_err(|m| AppError::invalid(format!("{field}.{k}"), m))?;
        }
    }
    Ok(())
}

/// What an account body asks of its phone link.
struct LinkRequest {
    mac: Patch<Mac>,
    model: Patch<String>,
    line: Patch<i64>,
}

/// What an account body says besides the account's own fields.
struct AccountEdits {
    /// The body named the provisioning credentials (they are copied to the linked phone).
    prov_named: bool,
    /// The body named `device-provisioning-overrides`.
    overrides_named: bool,
    link: LinkRequest,
}

/// Builds the change for creating/updating an account. Runs under the writer lock.
fn account_change(
    st: &AppState,
    a: &Admin,
    domain: &str,
    user: &str,
    device: &str,
    body: Map<String, Value>,
    create_only: bool,
) -> Result<(Change, Account, bool), AppError> {
    let id = account_id(domain, device);
    let existing = existing_account(st, domain, user, device, &id, create_only)?;
    let created = existing.is_none();
    let mut acc = existing.clone().unwrap_or_else(|| Account {
        domain: domain.into(),
        user: user.into(),
        device: device.into(),
        password: auth::random_secret(16),
        ..Default::default()
    });
    let mut f = Fields::new(body, "");
    f.echo("device", device)?;
    f.echo("domain", domain)?;
    f.echo("user", user)?;
    f.echo("id", &id)?;
    let edits = read_account_fields(&mut f, &mut acc, existing.as_ref())?;
    f.finish()?;

    let mut change = Change::default();
    let current = linked_phone(st, &id)?;
    // Which phone the account should end up linked to.
    let target_mac = match &edits.link.mac {
        Patch::Set(m) => Some(*m),
        Patch::Null => None,
        Patch::Absent => current.as_ref().map(|(p, _)| p.mac),
    };
    check_link_request(&edits.link, target_mac)?;
    // Unlink from the previous phone when the MAC changes or is cleared.
    if let Some((old, _)) = &current
        && target_mac != Some(old.mac)
    {
        let mut p = old.clone();
        p.members.retain(|m| m.id != id);
        change.phones.push((p.mac, Some(p)));
    }
    if let Some(mac) = target_mac {
        let phone = link_account(st, a, mac, &id, &acc, &edits)?;
        change.phones.push((mac, Some(phone)));
    } else if edits.overrides_named
        && let Some(ov) = &acc.overrides
    {
        for (k, v) in ov {
            overlay::check_override_unlinked(k, v)
                .map_err(|m| AppError::invalid(format!("device-provisioning-overrides.{k}"), m))?;
        }
    }
    if existing.as_ref() != Some(&acc) {
        change.touch.extend(st.store.phones_of_account(&id)?);
        change.accounts.push((id, Some(acc.clone())));
    }
    Ok((change, acc, created))
}

/// The account `id` as stored, after the checks that it may be written: the domain exists,
/// a create does not meet an existing device, and a device stays with its user.
fn existing_account(
    st: &AppState,
    domain: &str,
    user: &str,
    device: &str,
    id: &str,
    create_only: bool,
) -> Result<Option<Account>, AppError> {
    if st.store.domain(domain)?.is_none() {
        return Err(AppError::NotFound(format!("no domain {domain}")));
    }
    let existing = st.store.account(id)?;
    if let Some(e) = &existing {
        if create_only {
            return Err(AppError::conflict(
                "device",
                format!("device {device} already exists in {domain}"),
            ));
        }
        if e.user != user {
            return Err(AppError::conflict(
                "device",
                format!("device {device} belongs to user {} in {domain}", e.user),
            ));
        }
    }
    Ok(existing)
}

/// Reads the account body's fields into `acc`, in the order their errors are reported.
fn read_account_fields(
    f: &mut Fields,
    acc: &mut Account,
    existing: Option<&Account>,
) -> Result<AccountEdits, AppError> {
    match f.string("device-sip-registration-password")? {
        Patch::Set(p) if p.is_empty() => {
            return Err(AppError::invalid(
                "device-sip-registration-password",
                "must not be empty",
            ));
        }
        Patch::Set(p) => acc.password = p,
        Patch::Null => acc.password = auth::random_secret(16),
        Patch::Absent => {}
    }
    for key in account_setting_fields() {
        match f.setting(key)? {
            Patch::Set(v) => {
                acc.settings.insert(key.to_string(), v);
            }
            Patch::Null => {
                acc.settings.remove(key);
            }
            Patch::Absent => {}
        }
    }
    set_opt(
        &mut acc.emergency_address_id,
        f.string("emergency-address-id")?,
    );
    read_credentials(
        f,
        &mut acc.provisioning_username,
        &mut acc.provisioning_password,
    )?;
    // Whether the credentials changed (compared like every secret: in constant time).
    let same = |a: &Option<String>, b: Option<&String>| match (a, b) {
        (Some(a), Some(b)) => auth::secret_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    let prov_named = !same(
        &acc.provisioning_username,
        existing.and_then(|e| e.provisioning_username.as_ref()),
    ) || !same(
        &acc.provisioning_password,
        existing.and_then(|e| e.provisioning_password.as_ref()),
    );
    let overrides_named = match f.take("device-provisioning-overrides") {
        Patch::Set(v) => {
            acc.overrides = Some(parse_overrides("device-provisioning-overrides", v)?);
            true
        }
        Patch::Null => {
            acc.overrides = None;
            true
        }
        Patch::Absent => false,
    };
    let link = LinkRequest {
        mac: match f.string("device-provisioning-mac-address")? {
            Patch::Set(s) => Patch::Set(parse_mac("device-provisioning-mac-address", &s)?),
            Patch::Null => Patch::Null,
            Patch::Absent => Patch::Absent,
        },
        model: f.string("device-models-model")?,
        line: f.int("device-provisioning-line", 1, 64)?,
    };
    Ok(AccountEdits {
        prov_named,
        overrides_named,
        link,
    })
}

/// A model or line names a phone to link to: refused when there is none (a conflict with
/// the stored account, which is linked to no phone).
fn check_link_request(link: &LinkRequest, target_mac: Option<Mac>) -> Result<(), AppError> {
    if link.model.named() && !link.mac.named() && target_mac.is_none() {
        return Err(AppError::conflict(
            "device-models-model",
            "needs device-provisioning-mac-address to link a phone",
        ));
    }
    if link.line.named() && target_mac.is_none() {
        return Err(AppError::conflict(
            "device-provisioning-line",
            "needs device-provisioning-mac-address to link a phone",
        ));
    }
    Ok(())
}

/// The phone `mac` with account `id` seated on it: its port placed, and the account's
/// provisioning credentials and overrides copied when the body named them (or the link).
fn link_account(
    st: &AppState,
    a: &Admin,
    mac: Mac,
    id: &str,
    acc: &Account,
    edits: &AccountEdits,
) -> Result<Phone, AppError> {
    let t = st.templates();
    let link = &edits.link;
    let domain = acc.domain.as_str();
    let mut phone = phone_to_link(st, a, mac, domain, &link.model)?;
    if let Patch::Set(m) = &link.model
        && t.catalogue.get(m).is_none()
    {
        return Err(AppError::conflict(
            "device-models-model",
            format!("unknown model {m:?}; see GET /api/v1/models"),
        ));
    }
    let model = t.catalogue.get(&phone.model).ok_or_else(|| {
        AppError::conflict(
            "device-models-model",
            format!("model {} is not loaded", phone.model),
        )
    })?;
    phone.domain = Some(domain.to_string());
    let wanted_port = match link.line {
        Patch::Set(n) => Some(n as u32),
        _ => None,
    };
    seat_member(&mut phone, model, id, wanted_port)?;
    if (edits.prov_named || link.mac.named())
        && let (Some(u), Some(p)) = (&acc.provisioning_username, &acc.provisioning_password)
    {
        phone.provisioning_username = Some(u.clone());
        phone.provisioning_password = Some(p.clone());
    }
    if edits.overrides_named || (link.mac.named() && acc.overrides.is_some()) {
        let ov = acc.overrides.clone().unwrap_or_default();
        check_overrides(model, "device-provisioning-overrides", &ov)?;
        phone.overrides = ov;
    }
    Ok(phone)
}

/// The phone an account links to: the stored one when the caller may see it and it agrees
/// with the body's model and the account's domain, else a new one of the body's model.
fn phone_to_link(
    st: &AppState,
    a: &Admin,
    mac: Mac,
    domain: &str,
    model: &Patch<String>,
) -> Result<Phone, AppError> {
    match st.store.phone(mac)? {
        // A domain token cannot link (or claim) a phone outside its domain.
        Some(p) if !a.sees_phone(&p) => {
            Err(AppError::NotFound(format!("no phone {}", mac.lower())))
        }
        Some(p) => {
            if let Patch::Set(m) = model
                && *m != p.model
            {
                return Err(AppError::conflict(
                    "device-models-model",
                    format!(
                        "{} is linked as {}; change the model with PUT /phones/{}",
                        mac.lower(),
                        p.model,
                        mac.lower()
                    ),
                ));
            }
            if let Some(d) = &p.domain
                && d != domain
            {
                return Err(AppError::conflict(
                    "device-provisioning-mac-address",
                    format!("{} belongs to another domain", mac.lower()),
                ));
            }
            Ok(p)
        }
        None => {
            let Patch::Set(model) = model else {
                return Err(AppError::conflict(
                    "device-models-model",
                    "is required to link a MAC that is not provisioned yet",
                ));
            };
            if st.templates().catalogue.get(model).is_none() {
                return Err(AppError::conflict(
                    "device-models-model",
                    format!("unknown model {model:?}; see GET /api/v1/models"),
                ));
            }
            Ok(Phone::new(mac, model.clone()))
        }
    }
}

/// Seats member `id` on `phone`: moved to `wanted_port` when it is already there on another
/// port, else added on that port or the first free one (primary owner when the phone has
/// none). Members stay sorted by port.
fn seat_member(
    phone: &mut Phone,
    model: &Model,
    id: &str,
    wanted_port: Option<u32>,
) -> Result<(), AppError> {
    let already = phone.members.iter().position(|m| m.id == id);
    match (already, wanted_port) {
        // Moved (or left on its port: placing it again finds the port free).
        (Some(i), Some(port)) => {
            let mut moved = phone.members.remove(i);
            moved.port = port;
            place(phone, model, &moved, "device-provisioning-line")?;
            phone.members.push(moved);
        }
        (Some(_), _) => {}
        (None, port) => {
            let port = match port {
                Some(p) => p,
                None => phone.first_free_port(model.ports).ok_or_else(|| {
                    AppError::conflict(
                        "device-provisioning-mac-address",
                        format!(
                            "all {} ports of {} are taken",
                            model.ports,
                            phone.mac.lower()
                        ),
                    )
                })?,
            };
            let mut m = Member::new(port, id.to_string());
            m.primary_owner = !phone.members.iter().any(|m| m.primary_owner);
            place(phone, model, &m, "device-provisioning-line")?;
            phone.members.push(m);
        }
    }
    phone.members.sort_by_key(|m| m.port);
    Ok(())
}

/// Checks that `m` fits on `phone` (see [`rules::place`]): 409 when it does not fit the
/// model or another member holds the port (both depend on what is stored).
pub(crate) fn place(phone: &Phone, model: &Model, m: &Member, field: &str) -> Result<(), AppError> {
    rules::place(phone, &model.id, model.ports, m).map_err(|e| match e {
        rules::Misplaced::DoesNotFit(msg) | rules::Misplaced::Taken(msg) => {
            AppError::conflict(field, msg)
        }
    })
}

async fn write_account(
    a: Admin,
    st: AppState,
    domain: String,
    user: String,
    device: Option<String>,
    body: Map<String, Value>,
) -> Result<Response, AppError> {
    let domain = resolve_domain(&a, &domain)?;
    let user = resolve_user(&a, &user)?;
    let create_only = device.is_none();
    let device = match device {
        Some(d) => d,
        None => match body.get("device") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(AppError::invalid("device", "must be a string")),
            None => return Err(AppError::invalid("device", "is required")),
        },
    };
    check_name("device", &device, 64)?;
    let (_, acc, created) = {
        let _w = st.store.writer();
        let (change, acc, created) =
            account_change(&st, &a, &domain, &user, &device, body, create_only)?;
        st.store.commit(&change)?;
        (change, acc, created)
    };
    // Even when nothing changed: the state this 2xx reports may be another request's
    // commit that is not on disk yet (flush returns at once when it is).
    st.store.flush().await?;
    Ok(created_or_ok(created, account_json(&st, &acc)?))
}

/// Creates an account (the body names `device`; 409 if it exists).
#[utoipa::path(
    post, path = "/domains/{domain}/users/{user}/devices", tag = "accounts", params(UserPath),
    request_body = schema::AccountCreateIn,
    responses((status = 201, description = "Created", body = schema::AccountOut), schema::WriteErrors)
)]
async fn post_account(
    a: Admin,
    State(st): State<AppState>,
    Path(UserPath { domain, user }): Path<UserPath>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    write_account(a, st, domain, user, None, body).await
}

/// Creates or updates an account (partial update).
#[utoipa::path(
    put, path = "/domains/{domain}/users/{user}/devices/{device}", tag = "accounts", params(DevicePath),
    request_body = schema::AccountIn,
    responses(
        (status = 200, description = "Updated", body = schema::AccountOut),
        (status = 201, description = "Created", body = schema::AccountOut),
        schema::WriteErrors
    )
)]
async fn put_account(
    a: Admin,
    State(st): State<AppState>,
    Path(DevicePath {
        domain,
        user,
        device,
    }): Path<DevicePath>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    write_account(a, st, domain, user, Some(device), body).await
}

fn find_account(
    st: &AppState,
    a: &Admin,
    domain: &str,
    user: &str,
    device: &str,
) -> Result<Account, AppError> {
    let domain = resolve_domain(a, domain)?;
    let user = resolve_user(a, user)?;
    check_name("device", device, 64)?;
    match st.store.account(&account_id(&domain, device))? {
        Some(acc) if acc.user == user => Ok(acc),
        _ => Err(AppError::NotFound(format!(
            "no device {device} for user {user} in {domain}"
        ))),
    }
}

/// Reads an account.
#[utoipa::path(
    get, path = "/domains/{domain}/users/{user}/devices/{device}", tag = "accounts", params(DevicePath),
    responses((status = 200, description = "The account", body = schema::AccountOut), schema::ReadErrors)
)]
async fn get_account(
    a: Admin,
    State(st): State<AppState>,
    Path(DevicePath {
        domain,
        user,
        device,
    }): Path<DevicePath>,
) -> Result<Json<Value>, AppError> {
    let acc = find_account(&st, &a, &domain, &user, &device)?;
    Ok(Json(account_json(&st, &acc)?))
}

/// Lists a user's accounts.
#[utoipa::path(
    get, path = "/domains/{domain}/users/{user}/devices", tag = "accounts", params(UserPath),
    responses((status = 200, description = "The user's accounts", body = Vec<schema::AccountOut>), schema::ReadErrors)
)]
async fn list_accounts(
    a: Admin,
    State(st): State<AppState>,
    Path(UserPath { domain, user }): Path<UserPath>,
) -> Result<Json<Value>, AppError> {
    let domain = resolve_domain(&a, &domain)?;
    let user = resolve_user(&a, &user)?;
    if st.store.domain(&domain)?.is_none() {
        return Err(AppError::NotFound(format!("no domain {domain}")));
    }
    let list: Result<Vec<Value>, AppError> = st
        .store
        .accounts_of(&domain, Some(&user))?
        .iter()
        .map(|acc| account_json(&st, acc))
        .collect();
    Ok(Json(Value::Array(list?)))
}

/// Deletes an account and its lines on every phone.
#[utoipa::path(
    delete, path = "/domains/{domain}/users/{user}/devices/{device}", tag = "accounts", params(DevicePath),
    responses((status = 204, description = "Deleted"), schema::DeleteErrors)
)]
async fn delete_account(
    a: Admin,
    State(st): State<AppState>,
    Path(DevicePath {
        domain,
        user,
        device,
    }): Path<DevicePath>,
) -> Result<StatusCode, AppError> {
    {
        let _w = st.store.writer();
        let acc = find_account(&st, &a, &domain, &user, &device)?;
        let id = acc.id();
        let mut change = Change::default();
        for mac in st.store.phones_of_account(&id)? {
            if let Some(mut p) = st.store.phone(mac)? {
                p.members.retain(|m| m.id != id);
                change.phones.push((mac, Some(p)));
            }
        }
        change.accounts.push((id, None));
        st.store.commit(&change)?;
    }
    st.store.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- phones

fn phone_json(p: &Phone) -> Value {
    json!({
        "mac": p.mac.lower(),
        "domain": p.domain,
        "device-models-model": p.model,
        "device-provisioning-username": p.provisioning_username,
        "device-provisioning-previous-valid-until": previous_until(&p.previous_credentials),
        st::CORE_SERVER: p.settings.get(st::CORE_SERVER),
        st::TRANSPORT: p.settings.get(st::TRANSPORT),
        "device-provisioning-overrides": p.overrides,
        "members": p.members,
        "revision": p.revision,
    })
}

/// The stored phone at `mac` if the token may see it, or 404 naming it (the same 404
/// for a missing phone and one outside a domain token's domain).
fn phone_or_404(st: &AppState, a: &Admin, mac: Mac) -> Result<Phone, AppError> {
    st.store
        .phone(mac)?
        .filter(|p| a.sees_phone(p))
        .ok_or_else(|| AppError::NotFound(format!("no phone {}", mac.lower())))
}

/// Reads a phone.
#[utoipa::path(
    get, path = "/phones/{mac}", tag = "phones", params(MacPath),
    responses((status = 200, description = "The phone", body = schema::PhoneOut), schema::ReadErrors)
)]
async fn get_phone(
    a: Admin,
    State(st): State<AppState>,
    Path(MacPath { mac }): Path<MacPath>,
) -> Result<Json<Value>, AppError> {
    let mac = parse_mac("mac", &mac)?;
    let p = phone_or_404(&st, &a, mac)?;
    let mut v = phone_json(&p);
    v["last-fetch"] = json!(st.fleet.last_fetch(&st.store, mac));
    Ok(Json(v))
}

/// Lists phones in MAC order, a page at a time.
#[utoipa::path(
    get, path = "/phones", tag = "phones",
    params(PhoneQuery),
    responses((status = 200, description = "A page of phones", body = schema::PhoneList), schema::ListErrors)
)]
async fn list_phones(
    a: Admin,
    State(st): State<AppState>,
    Query(q): Query<PhoneQuery>,
) -> Result<Json<Value>, AppError> {
    let after = q
        .cursor
        .as_deref()
        .map(|c| parse_mac("cursor", c))
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(AppError::invalid("limit", "must be from 1 to 1000"));
    }
    let since = q
        .not_fetched_since
        .as_deref()
        .map(|t| {
            crate::activity::parse_time(t).ok_or_else(|| {
                AppError::invalid(
                    "not-fetched-since",
                    "must be an RFC 3339 time like 2026-01-31T08:00:00Z",
                )
            })
        })
        .transpose()?;
    let phones = st.store.phones(after, limit, &|p| {
        a.sees_phone(p)
            && q.domain
                .as_ref()
                .is_none_or(|d| p.domain.as_ref() == Some(d))
            && q.model.as_ref().is_none_or(|m| &p.model == m)
            && since.is_none_or(|since| {
                st.fleet
                    .last_fetch_unix(&st.store, p.mac)
                    .is_none_or(|t| t < since)
            })
    })?;
    let next = if phones.len() == limit {
        phones.last().map(|p| p.mac.lower())
    } else {
        None
    };
    let mut list = Vec::with_capacity(phones.len());
    for p in &phones {
        let mut v = phone_json(p);
        v["last-fetch"] = json!(st.fleet.last_fetch(&st.store, p.mac));
        list.push(v);
    }
    Ok(Json(json!({ "phones": list, "next": next })))
}

/// Creates or updates a phone (partial update).
#[utoipa::path(
    put, path = "/phones/{mac}", tag = "phones", params(MacPath),
    request_body = schema::PhoneIn,
    responses(
        (status = 200, description = "Updated", body = schema::PhoneOut),
        (status = 201, description = "Created", body = schema::PhoneOut),
        schema::WriteErrors
    )
)]
async fn put_phone(
    a: Admin,
    State(st): State<AppState>,
    Path(MacPath { mac }): Path<MacPath>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let mac = parse_mac("mac", &mac)?;
    let (phone, created) = {
        let _w = st.store.writer();
        let existing = st.store.phone(mac)?;
        if existing.as_ref().is_some_and(|p| !a.sees_phone(p)) {
            return Err(AppError::NotFound(format!("no phone {}", mac.lower())));
        }
        let phone = edited_phone(&st, &a, mac, existing.as_ref(), body)?;
        if existing.as_ref() != Some(&phone) {
            let mut change = Change::default();
            change.phones.push((mac, Some(phone.clone())));
            st.store.commit(&change)?;
        }
        (phone, existing.is_none())
    };
    // Even when nothing changed: the state this 2xx reports may be another request's
    // commit that is not on disk yet (flush returns at once when it is).
    st.store.flush().await?;
    let phone = st.store.phone(mac)?.unwrap_or(phone);
    Ok(created_or_ok(created, phone_json(&phone)))
}

/// The phone `mac` after the body's partial update of `existing` (or a new phone), checked
/// field by field in the order errors are reported. Runs under the writer lock.
fn edited_phone(
    st: &AppState,
    a: &Admin,
    mac: Mac,
    existing: Option<&Phone>,
    body: Map<String, Value>,
) -> Result<Phone, AppError> {
    let t = st.templates();
    let mut f = Fields::new(body, "");
    f.echo("mac", &mac.lower())?;
    let model_patch = f.string("device-models-model")?;
    let mut phone = match (existing, &model_patch) {
        (Some(p), _) => p.clone(),
        (None, Patch::Set(m)) => Phone::new(mac, m.clone()),
        (None, _) => {
            return Err(AppError::conflict(
                "device-models-model",
                "is required to create a phone (no phone has this MAC)",
            ));
        }
    };
    match model_patch {
        Patch::Set(m) => {
            if t.catalogue.get(&m).is_none() {
                return Err(AppError::conflict(
                    "device-models-model",
                    format!("unknown model {m:?}; see GET /api/v1/models"),
                ));
            }
            phone.model = m;
        }
        Patch::Null => return Err(AppError::invalid("device-models-model", "cannot be null")),
        Patch::Absent => {}
    }
    read_phone_domain(st, a, &mut f, &mut phone)?;
    read_credentials(
        &mut f,
        &mut phone.provisioning_username,
        &mut phone.provisioning_password,
    )?;
    for key in [st::CORE_SERVER, st::TRANSPORT] {
        match f.setting(key)? {
            Patch::Set(v) => {
                phone.settings.insert(key.into(), v);
            }
            Patch::Null => {
                phone.settings.remove(key);
            }
            Patch::Absent => {}
        }
    }
    let ov = f.take("device-provisioning-overrides");
    let model = t.catalogue.get(&phone.model).ok_or_else(|| {
        AppError::invalid(
            "device-models-model",
            format!("model {} is not loaded", phone.model),
        )
    })?;
    merge_patch(
        &mut phone.overrides,
        "device-provisioning-overrides",
        ov,
        // Kept and new values are checked against the model's formats below; a removal's
        // key must still be one that some format could hold.
        &|k, v| match v {
            None => overlay::check_override(crate::model::Format::KeyValue, k, ""),
            Some(_) => Ok(()),
        },
    )?;
    // Every override (kept ones too: the model may have changed) must fit its formats.
    check_overrides(model, "device-provisioning-overrides", &phone.overrides)?;
    f.finish()?;
    check_members_fit(st, &phone, model)?;
    Ok(phone)
}

/// Reads the phone body's `domain`: a domain the caller sees and that exists; a domain token
/// can neither clear it nor name another, and creates its phones in its own domain (a phone
/// it may update is in that domain already, so an absent `domain` always means its own).
fn read_phone_domain(
    st: &AppState,
    a: &Admin,
    f: &mut Fields,
    phone: &mut Phone,
) -> Result<(), AppError> {
    match f.string("domain")? {
        Patch::Set(d) => {
            check_name("domain", &d, 64)?;
            // Another domain answers like an unknown one under a domain token.
            if !a.sees(&d) || st.store.domain(&d)?.is_none() {
                return Err(AppError::conflict(
                    "domain",
                    format!("unknown domain {d:?}; create it with PUT /api/v1/domains/{d}"),
                ));
            }
            phone.domain = Some(d);
        }
        Patch::Null if a.domain.is_some() => {
            return Err(AppError::invalid(
                "domain",
                "a domain token cannot take a phone out of its domain",
            ));
        }
        Patch::Null => phone.domain = None,
        // A phone created with a domain token is created in its domain.
        Patch::Absent if a.domain.is_some() => phone.domain = a.domain.clone(),
        Patch::Absent => {}
    }
    Ok(())
}

/// Members must still fit the (possibly new) model and belong to the phone's domain.
fn check_members_fit(st: &AppState, phone: &Phone, model: &Model) -> Result<(), AppError> {
    for (i, m) in phone.members.iter().enumerate() {
        if m.ports().any(|p| p > model.ports) {
            return Err(AppError::conflict(
                "device-models-model",
                format!(
                    "member {} on port {} does not fit the {} ports of {}",
                    m.id, m.port, model.ports, model.id
                ),
            ));
        }
        if m.t38_fax_compression_enabled && !model.ata {
            return Err(AppError::conflict(
                "device-models-model",
                format!("member {i} uses T.38, which {} does not support", model.id),
            ));
        }
        let in_domain = st
            .store
            .account(&m.id)?
            .is_some_and(|a| Some(&a.domain) == phone.domain.as_ref());
        if !in_domain {
            return Err(AppError::conflict(
                "domain",
                format!("member {} is an account of another domain", m.id),
            ));
        }
    }
    Ok(())
}

/// Deletes a phone.
#[utoipa::path(
    delete, path = "/phones/{mac}", tag = "phones", params(MacPath),
    responses((status = 204, description = "Deleted"), schema::DeleteErrors)
)]
async fn delete_phone(
    a: Admin,
    State(st): State<AppState>,
    Path(MacPath { mac }): Path<MacPath>,
) -> Result<StatusCode, AppError> {
    let mac = parse_mac("mac", &mac)?;
    {
        let _w = st.store.writer();
        phone_or_404(&st, &a, mac)?;
        st.store.commit(&Change {
            phones: vec![(mac, None)],
            ..Default::default()
        })?;
    }
    st.store.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- members

fn phone_for_org(
    st: &AppState,
    a: &Admin,
    mac: &str,
    org: &Option<String>,
) -> Result<Phone, AppError> {
    let mac = parse_mac("mac", mac)?;
    let p = phone_or_404(st, a, mac)?;
    if let Some(o) = org
        && p.domain.as_ref() != Some(o)
    {
        return Err(AppError::NotFound(format!(
            "no phone {} in {o}",
            mac.lower()
        )));
    }
    Ok(p)
}

/// Lists a phone's members.
#[utoipa::path(
    get, path = "/phones/{mac}/members", tag = "phones", params(MacPath, OrgQuery),
    responses((status = 200, description = "The members", body = schema::MembersOut), schema::ReadErrors)
)]
async fn get_members(
    a: Admin,
    State(st): State<AppState>,
    Path(MacPath { mac }): Path<MacPath>,
    Query(q): Query<OrgQuery>,
) -> Result<Json<Value>, AppError> {
    let p = phone_for_org(&st, &a, &mac, &q.org_id)?;
    Ok(Json(json!({ "members": p.members })))
}

fn parse_member(i: usize, v: Value) -> Result<Member, AppError> {
    let Value::Object(map) = v else {
        return Err(AppError::invalid(
            format!("members[{i}]"),
            "must be an object",
        ));
    };
    let mut f = Fields::new(map, format!("members[{i}]."));
    let port = match f.int("port", 1, 1024)? {
        Patch::Set(p) => p as u32,
        _ => return Err(AppError::invalid(f.path("port"), "is required")),
    };
    let id = match f.string("id")? {
        Patch::Set(s) if !s.is_empty() => s,
        _ => return Err(AppError::invalid(f.path("id"), "is required")),
    };
    let mut m = Member::new(port, id);
    match f.take("lineType") {
        Patch::Set(Value::String(s)) if s == "PRIMARY" => m.line_type = LineType::Primary,
        Patch::Set(Value::String(s)) if s == "SHARED_CALL_APPEARANCE" => {
            m.line_type = LineType::SharedCallAppearance
        }
        Patch::Absent | Patch::Null => {}
        Patch::Set(_) => {
            return Err(AppError::invalid(
                f.path("lineType"),
                "must be PRIMARY or SHARED_CALL_APPEARANCE",
            ));
        }
    }
    if let Patch::Set(w) = f.int("lineWeight", 1, 64)? {
        m.line_weight = w as u32;
    }
    if let Patch::Set(s) = f.string("lineLabel")? {
        m.line_label = s;
    }
    for (key, target) in [
        ("primaryOwner", &mut m.primary_owner),
        ("hotlineEnabled", &mut m.hotline_enabled),
        ("allowCallDeclineEnabled", &mut m.allow_call_decline_enabled),
        (
            "t38FaxCompressionEnabled",
            &mut m.t38_fax_compression_enabled,
        ),
    ] {
        if let Patch::Set(b) = f.boolean(key)? {
            *target = b;
        }
    }
    if let Patch::Set(s) = f.string("hotlineDestination")? {
        m.hotline_destination = s;
    }
    f.finish()?;
    Ok(m)
}

/// Validates a whole members list against the phone's model and domain (each rule names
/// the field). A member that does not fit the model, takes a port or the primary-owner
/// role another member holds, or names an account the phone's domain lacks conflicts with
/// stored state or another member (409); only a hotline without its destination is a
/// malformed member (400, and the API document says so).
fn check_members(
    st: &AppState,
    phone: &Phone,
    model: &Model,
    members: &[Member],
) -> Result<(), AppError> {
    let mut owners = 0;
    for (i, m) in members.iter().enumerate() {
        let at = |k: &str| format!("members[{i}].{k}");
        if m.port > model.ports {
            return Err(AppError::conflict(
                at("port"),
                format!("{} has ports 1 to {}", model.id, model.ports),
            ));
        }
        if let Some(j) = members[..i].iter().position(|o| o.port == m.port) {
            return Err(AppError::conflict(
                at("port"),
                format!("port {} is already used by members[{j}]", m.port),
            ));
        }
        if m.ports().any(|p| p > model.ports) {
            return Err(AppError::conflict(
                at("lineWeight"),
                format!(
                    "ports {} to {} run past the {} ports of {}",
                    m.port,
                    m.port + m.line_weight - 1,
                    model.ports,
                    model.id
                ),
            ));
        }
        if let Some((j, o)) = members
            .iter()
            .enumerate()
            .find(|(j, o)| *j != i && o.port != m.port && o.ports().any(|p| m.ports().contains(&p)))
        {
            // Name the member whose lineWeight reaches into the other's ports.
            let wide = if m.ports().contains(&o.port) { i } else { j };
            return Err(AppError::conflict(
                format!("members[{wide}].lineWeight"),
                format!("ports of members[{i}] and members[{j}] overlap"),
            ));
        }
        if m.primary_owner {
            owners += 1;
            if owners > 1 {
                return Err(AppError::conflict(
                    at("primaryOwner"),
                    "only one member can be the primary owner",
                ));
            }
        }
        if m.hotline_enabled && m.hotline_destination.trim().is_empty() {
            return Err(AppError::invalid(
                at("hotlineDestination"),
                "is required when hotlineEnabled is true",
            ));
        }
        if m.t38_fax_compression_enabled && !model.ata {
            return Err(AppError::conflict(
                at("t38FaxCompressionEnabled"),
                format!("{} is not an ATA; T.38 is for ATAs only", model.id),
            ));
        }
        match st.store.account(&m.id)? {
            Some(a) if Some(&a.domain) == phone.domain.as_ref() => {}
            _ => {
                return Err(AppError::conflict(
                    at("id"),
                    format!("no account {:?} in the phone's domain", m.id),
                ));
            }
        }
    }
    Ok(())
}

/// Replaces a phone's members.
#[utoipa::path(
    put, path = "/phones/{mac}/members", tag = "phones", params(MacPath, OrgQuery),
    request_body = schema::MembersIn,
    responses((status = 200, description = "The new members", body = schema::MembersOut), schema::WriteErrors)
)]
async fn put_members(
    a: Admin,
    State(st): State<AppState>,
    Path(MacPath { mac }): Path<MacPath>,
    Query(q): Query<OrgQuery>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, AppError> {
    let t = st.templates();
    let (_, members) = {
        let _w = st.store.writer();
        let mut phone = phone_for_org(&st, &a, &mac, &q.org_id)?;
        let mut f = Fields::new(body, "");
        let members = match f.take("members") {
            Patch::Set(Value::Array(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_member(i, v))
                .collect::<Result<Vec<_>, _>>()?,
            Patch::Set(_) => return Err(AppError::invalid("members", "must be an array")),
            // Omitted: everyone but the primary owner is removed (the seed's rule).
            Patch::Absent | Patch::Null => phone
                .members
                .iter()
                .filter(|m| m.primary_owner)
                .cloned()
                .collect(),
        };
        f.finish()?;
        let model = t.catalogue.get(&phone.model).ok_or_else(|| {
            AppError::conflict(
                "device-models-model",
                format!("model {} is not loaded", phone.model),
            )
        })?;
        check_members(&st, &phone, model, &members)?;
        let mut members = members;
        members.sort_by_key(|m| m.port);
        let mut change = Change::default();
        if phone.members != members {
            phone.members = members.clone();
            change.phones.push((phone.mac, Some(phone)));
            st.store.commit(&change)?;
        }
        (change, members)
    };
    // Even when nothing changed: the state this 2xx reports may be another request's
    // commit that is not on disk yet (flush returns at once when it is).
    st.store.flush().await?;
    Ok(Json(json!({ "members": members })))
}

// ---------------------------------------------------------------- preview

/// Returns the bytes the phone would get for a file.
#[utoipa::path(
    get, path = "/phones/{mac}/files/{file}", tag = "phones",
    params(MacFilePath),
    responses(
        (status = 200, description = "The file, with its Content-Type and ETag", content(
            (String = "text/plain"),
            (String = "application/xml")
        )),
        schema::ReadErrors
    )
)]
async fn preview(
    a: Admin,
    State(st): State<AppState>,
    Path(MacFilePath { mac, file }): Path<MacFilePath>,
) -> Result<Response, AppError> {
    let mac = parse_mac("mac", &mac)?;
    let phone = phone_or_404(&st, &a, mac)?;
    let t = st.templates();
    let model = t
        .catalogue
        .get(&phone.model)
        .ok_or_else(|| AppError::NotFound("model not loaded".into()))?;
    let found = match t.catalogue.match_path(&file) {
        Some(FileRef::Phone { mac: m, pattern }) if m == mac => t
            .catalogue
            .file_spec(&model.id, &pattern)
            .map(|s| (s, Some(mac), pattern.to_string(), phone.revision)),
        Some(FileRef::Common { name, .. }) => t
            .catalogue
            .file_spec(&model.id, &name)
            .map(|s| (s, None, name, 0)),
        _ => None,
    };
    let (spec, key_mac, name, revision) =
        found.ok_or_else(|| AppError::NotFound(format!("{} does not request {file}", model.id)))?;
    let key = render_key(key_mac, &model.id, &name);
    let wanted = crate::cache::FileKey {
        key: &key,
        model: &model.id,
        file: &name,
        revision,
        digest: t.digest(&model.id),
    };
    let (rendered, _) = st
        .cache
        .get_or_render(
            &st.store,
            wanted,
            || {
                if spec.per_phone() {
                    super::phone::render_phone(&st, &t, model, spec, &phone)
                        .map(|r| (r, phone.revision))
                } else {
                    super::phone::render_common(&st, &t, model, spec).map(|r| (r, 0))
                }
            },
            || super::phone::render_dictionary(&st, &t, model, spec),
        )
        .await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, st.cache.content_type(&rendered)),
            (header::ETAG, rendered.etag_header()),
        ],
        rendered.body()?,
    )
        .into_response())
}

/// Explains where each value of the phone's files comes from.
#[utoipa::path(
    get, path = "/phones/{mac}/explain", tag = "phones", params(MacPath),
    responses((status = 200, description = "Values by layer, overrides, unused settings", body = schema::ExplainOut), schema::ReadErrors)
)]
async fn explain(
    a: Admin,
    State(st): State<AppState>,
    Path(MacPath { mac }): Path<MacPath>,
) -> Result<Json<Value>, AppError> {
    let mac = parse_mac("mac", &mac)?;
    let phone = phone_or_404(&st, &a, mac)?;
    let t = st.templates();
    let model = t
        .catalogue
        .get(&phone.model)
        .ok_or_else(|| AppError::NotFound("model not loaded".into()))?;
    let (domain, accounts) = super::phone::phone_records(&st, &phone)?;
    let inputs = crate::render::explain::Inputs {
        model,
        server: &st.server_defaults,
        domain: domain.as_deref(),
        phone: &phone,
        lines: accounts.iter().map(|(m, a)| (*m, a)).collect(),
    };
    let e = crate::render::explain::explain(&t.engine, &inputs)?;
    Ok(Json(json!({
        "mac": mac.lower(),
        "device-models-model": phone.model,
        "files": e.files,
        "unused": e.unused,
    })))
}

/// Lists MACs that asked with the server-default credentials but are not linked.
#[utoipa::path(
    get, path = "/unprovisioned", tag = "phones",
    responses(
        (status = 200, description = "Most recently seen first", body = schema::UnprovisionedList),
        schema::ListErrors,
        schema::ForbiddenError
    )
)]
async fn unprovisioned(a: Admin, State(st): State<AppState>) -> Result<Json<Value>, AppError> {
    a.server_wide("the unprovisioned list")?;
    let list = st.fleet.unprovisioned(&st.store)?;
    Ok(Json(json!({ "unprovisioned": list })))
}
