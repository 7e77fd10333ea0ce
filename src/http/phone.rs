//! The phone-facing file route: file name → (model, MAC, file kind), basic auth
//! (phone → domain → server default, constant time), allowed User-Agent, conditional GET,
//! HEAD, content type per model. Read-only: cache fills go through `cache`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::activity::Asked;
use crate::auth::{self, BasicCredentials};
use crate::cache::{FileKey, Outcome, Packed, Rendered};
use crate::digest::{self, DigestResponse, NonceState};
use crate::error::AppError;
use crate::guard;
use crate::model::agent::{self, Agent};
use crate::model::{Account, Domain, FileRef, FileSpec, Gate, Mac, Member, Model, Phone};
use crate::model::{AuthScheme, PreviousCredentials};
use crate::reload::Templates;
use crate::render::{LineInput, PhoneInput, RenderContext};
use crate::store::Change;
use crate::store::render_key;
use crate::telemetry::RequestFacts;

/// `GET|HEAD /{file}` through the router (the server's own connections take
/// [`crate::http::Front`]'s direct way to `fetch_file`).
pub async fn fetch(
    State(st): State<AppState>,
    Path(file): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let (mut resp, facts) = fetch_file(&st, &file, peer_of(peer), &parts).await;
    resp.extensions_mut().insert(facts);
    resp
}

/// `GET|HEAD /{file}`: `file` is the path's one segment, percent-decoded. The facts for
/// the request line and metrics come beside the response (the direct route hands them
/// on without the response's extension map).
pub(crate) async fn fetch_file(
    st: &AppState,
    file: &str,
    peer: Option<SocketAddr>,
    request: &axum::http::request::Parts,
) -> (Response, RequestFacts) {
    let headers = &request.headers;
    let peer_ip = client_address(st, peer, headers);
    let ua = user_agent(headers);
    let agent = agent::parse(ua);
    let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let t = st.templates();
    let mut req = PhoneRequest {
        templates: &t,
        file,
        headers,
        auth: Presented::new(st, headers, request.method.as_str(), target),
        ua,
        ip: peer_ip,
        agent: agent.as_ref(),
        facts: RequestFacts {
            vendor: agent.as_ref().map(|a| a.vendor),
            ..RequestFacts::default()
        },
        known: None,
    };
    let result = match admit(st, peer_ip, || path_mac(&t, file)) {
        Ok(()) => serve_file(st, &mut req).await,
        Err(e) => Err(e),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            // The MAC a failure counts against: the linked phone (path or User-Agent), else
            // the path's, linked or not.
            let mac = req
                .known
                .as_ref()
                .map(|g| g.mac)
                .or_else(|| path_mac(&t, file));
            count_failure(st, &e, &req.auth, peer_ip, mac);
            let mut r = e.into_phone_response();
            challenge(st, &mut r, &req.auth);
            r
        }
    };
    if let Some(gate) = &req.known {
        st.fleet.fetched_by(
            gate,
            Asked {
                ip: peer_ip.unwrap_or(UNSPECIFIED),
                user_agent: ua,
                file,
                status: resp.status().as_u16(),
            },
        );
    }
    (resp, req.facts)
}

/// The connection's peer, as the router's extension carries it.
pub(crate) fn peer_of(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<SocketAddr> {
    peer.map(|Extension(ConnectInfo(a))| a)
}

/// The client's address: the peer, or behind a trusted proxy its `X-Forwarded-For`.
pub(crate) fn client_address(
    st: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    peer.map(|a| {
        guard::client_ip(
            a.ip(),
            headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
            &st.access.security.trusted_proxies,
        )
    })
}

/// The `User-Agent` as text (empty when absent or not visible ASCII).
pub(crate) fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The MAC a phone path names, for the per-MAC throttle (any MAC, linked or not, so the
/// answer never tells whether it exists).
fn path_mac(t: &Templates, file: &str) -> Option<Mac> {
    match t.catalogue.match_path(file) {
        Some(FileRef::Phone { mac, .. }) => Some(mac),
        _ => upload_mac(file),
    }
}

/// Before anything else: the server-wide allow-list (403), then the failure throttle for
/// this address and MAC (429 with `Retry-After`).
pub(crate) fn admit(
    st: &AppState,
    ip: Option<IpAddr>,
    mac: impl FnOnce() -> Option<Mac>,
) -> Result<(), AppError> {
    let ip = ip.unwrap_or(UNSPECIFIED);
    if !guard::allowed(&st.access.security.allowed_cidrs, ip) {
        return Err(AppError::Forbidden("address not allowed".into()));
    }
    match st.access.throttle.check(ip, mac) {
        Some(retry_after) => Err(AppError::TooManyRequests { retry_after }),
        None => Ok(()),
    }
}

/// A presented-but-wrong credential counts against the address and the MAC. A request with
/// no `Authorization` header is the normal first step of every phone (it waits for the
/// challenge) and does not count.
pub(crate) fn count_failure(
    st: &AppState,
    e: &AppError,
    auth: &Presented<'_>,
    ip: Option<IpAddr>,
    mac: Option<Mac>,
) {
    // A right Digest answer to a stale nonce (or a replayed count) is not a guess.
    if matches!(e, AppError::PhoneUnauthorized)
        && auth.raw.is_some()
        && !auth.stale.load(Ordering::Relaxed)
    {
        st.access.throttle.failed(ip.unwrap_or(UNSPECIFIED), mac);
        st.metrics.auth_failure(crate::metrics::Kind::Phone);
    }
    if matches!(e, AppError::TooManyRequests { .. }) {
        st.metrics.throttled();
    }
}

const UNSPECIFIED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

pub(crate) fn ip_text(ip: Option<std::net::IpAddr>) -> String {
    ip.map(|a| a.to_string()).unwrap_or_default()
}

/// One phone request and what the handler learnt about it.
struct PhoneRequest<'r> {
    /// The model + template set this request uses throughout.
    templates: &'r Templates,
    file: &'r str,
    headers: &'r HeaderMap,
    auth: Presented<'r>,
    ua: &'r str,
    /// Client IP (formatted only for the unprovisioned list).
    ip: Option<std::net::IpAddr>,
    agent: Option<&'r Agent>,
    facts: RequestFacts,
    /// A linked phone made this request (its last fetch is recorded through its gate).
    known: Option<Arc<Gate>>,
}

/// Largest log upload accepted.
pub const UPLOAD_LIMIT: usize = 1 << 20;

/// `PUT /{mac}-app.log` and `/{mac}-boot.log` (Polycom log uploads): authenticated like a
/// fetch, capped at [`UPLOAD_LIMIT`], written to `<data>/uploads/<mac>/`, never served.
pub async fn upload(
    State(st): State<AppState>,
    Path(file): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut facts = RequestFacts {
        vendor: agent::parse(user_agent(&headers)).map(|a| a.vendor),
        ..RequestFacts::default()
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let creds = Presented::new(&st, &headers, "PUT", target);
    let ip = client_address(&st, peer_of(peer), &headers);
    let mac = upload_mac(&file);
    let result = match admit(&st, ip, || mac) {
        Ok(()) => store_upload(&st, &file, &creds, ip, &body, &mut facts).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            count_failure(&st, &e, &creds, ip, mac);
            let mut r = e.into_phone_response();
            challenge(&st, &mut r, &creds);
            r
        }
    };
    resp.extensions_mut().insert(facts);
    resp
}

/// The MAC of an upload name, if it is one (`0004f2a1b2c3-app.log`).
pub fn upload_mac(file: &str) -> Option<Mac> {
    let lower = file.to_ascii_lowercase();
    let stem = lower
        .strip_suffix("-app.log")
        .or_else(|| lower.strip_suffix("-boot.log"))?;
    if stem.len() != 12 {
        return None;
    }
    Mac::parse_plain(stem).ok()
}

async fn store_upload(
    st: &AppState,
    file: &str,
    creds: &Presented<'_>,
    ip: Option<IpAddr>,
    body: &[u8],
    facts: &mut RequestFacts,
) -> Result<Response, AppError> {
    let Some(mac) = upload_mac(file) else {
        return Err(AppError::MethodNotAllowed);
    };
    facts.mac = Some(mac);
    let Some(phone) = st.store.gate(mac)? else {
        if server_default_ok(st, creds) {
            st.metrics.unknown_mac();
            return Err(AppError::NotFound("unknown MAC".into()));
        }
        return Err(AppError::PhoneUnauthorized);
    };
    authenticate(st, &st.templates(), &phone, creds, ip, false).await?;
    let dir = st.uploads.join(mac.lower());
    let name = file.to_ascii_lowercase();
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let existed = tokio::fs::try_exists(&path).await.unwrap_or(false);
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(&tmp, body).await?;
        tokio::fs::rename(&tmp, &path).await
    };
    write.await.map_err(|source| AppError::Io {
        what: "storing a phone upload",
        source,
    })?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
    .into_response())
}

/// The request's `Authorization` header (Basic or Digest), decoded only when a check needs
/// it. Remembers whether a Digest answer was right but for a stale nonce, so the challenge
/// says `stale=true` and the phone retries without asking anyone.
pub(crate) struct Presented<'h> {
    st: &'h AppState,
    raw: Option<&'h [u8]>,
    method: &'h str,
    uri: &'h str,
    parsed: std::sync::OnceLock<Option<BasicCredentials>>,
    digest: std::sync::OnceLock<Option<(DigestResponse, NonceState)>>,
    stale: AtomicBool,
}

impl<'h> Presented<'h> {
    pub(crate) fn new(
        st: &'h AppState,
        headers: &'h HeaderMap,
        method: &'h str,
        uri: &'h str,
    ) -> Self {
        Presented {
            st,
            raw: headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
            method,
            uri,
            parsed: std::sync::OnceLock::new(),
            digest: std::sync::OnceLock::new(),
            stale: AtomicBool::new(false),
        }
    }

    /// Basic credentials, if that is what was presented.
    fn creds(&self) -> Option<&BasicCredentials> {
        self.parsed
            .get_or_init(|| self.raw.and_then(BasicCredentials::parse))
            .as_ref()
    }

    /// A Digest answer for our realm and this very request target, with its nonce's state.
    fn digest(&self) -> Option<&(DigestResponse, NonceState)> {
        self.digest
            .get_or_init(|| {
                let raw = self.raw?;
                if raw.len() < 7 || !raw[..7].eq_ignore_ascii_case(b"digest ") {
                    return None;
                }
                let d = DigestResponse::parse(raw)?;
                if d.realm() != crate::DIGEST_REALM || d.uri() != self.uri {
                    return None;
                }
                let state = self.st.access.nonces.check(
                    d.nonce(),
                    crate::DIGEST_REALM,
                    std::time::SystemTime::now(),
                );
                Some((d, state))
            })
            .as_ref()
    }

    /// Whether what was presented proves `user`/`password`.
    fn matches(&self, user: &str, password: &str) -> bool {
        if let Some(c) = self.creds() {
            return c.matches(user, password);
        }
        self.digest_ok(user, |d| d.verify(self.method, password))
    }

    /// Whether a Digest answer proves `user` with `check`; a right answer to a stale nonce
    /// is refused and remembered as stale.
    fn digest_ok(&self, user: &str, check: impl Fn(&DigestResponse) -> bool) -> bool {
        let Some((d, state)) = self.digest() else {
            return false;
        };
        if *state == NonceState::Invalid {
            return false;
        }
        let ok = auth::secret_eq(d.username(), user) & check(d);
        if ok && *state == NonceState::Stale {
            self.stale.store(true, Ordering::Relaxed);
            return false;
        }
        ok
    }
}

/// Puts the challenges on a 401: Basic always, and Digest (SHA-256, then MD5, with a fresh
/// nonce) whenever any model or domain uses it, the same for every path and MAC so the
/// challenge never tells whether a MAC exists.
pub(crate) fn challenge(st: &AppState, resp: &mut Response, auth: &Presented<'_>) {
    if resp.status() != StatusCode::UNAUTHORIZED || !st.access.digest_in_use.load(Ordering::Relaxed)
    {
        return;
    }
    let nonce = st
        .access
        .nonces
        .issue(crate::DIGEST_REALM, std::time::SystemTime::now());
    let stale = auth.stale.load(Ordering::Relaxed);
    let h = resp.headers_mut();
    h.remove(header::WWW_AUTHENTICATE);
    for c in digest::challenges(crate::DIGEST_REALM, &nonce, stale) {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::WWW_AUTHENTICATE, v);
        }
    }
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"autoprov\""),
    );
}

/// The server-default credentials. The Basic header that last passed is remembered, so the
/// usual case (every factory phone sending the same header) is one constant-time compare.
pub(crate) fn server_default_ok(st: &AppState, p: &Presented<'_>) -> bool {
    if p.raw.is_some_and(|raw| st.access.prov_memo.hit(raw)) {
        return true;
    }
    // The server's bootstrap credential opens what the server default opens (common files,
    // the unprovisioned list) until it is exchanged for a per-device one.
    let bootstrap = || {
        st.access
            .security
            .bootstrap
            .as_ref()
            .is_some_and(|(u, pw)| p.matches(u, pw))
    };
    if let Some(c) = p.creds() {
        let ok = (auth::secret_eq(&c.user, &st.access.prov_user)
            & c.password.matches_hash(&st.access.prov_pass_hash))
            || bootstrap();
        if ok && let Some(raw) = p.raw {
            st.access.prov_memo.remember(raw);
        }
        return ok;
    }
    let by_ha1 = st.access.prov_ha1.as_ref().is_some_and(|[md5, sha256]| {
        p.digest_ok(&st.access.prov_user, |d| {
            let ha1 = match d.algorithm() {
                digest::Algorithm::Md5 => md5,
                digest::Algorithm::Sha256 => sha256,
            };
            d.verify_ha1(p.method, ha1)
        })
    });
    by_ha1 || bootstrap()
}

/// How a presented credential opened a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// By a credential that belongs to it (its own, its domain's, the server default, or a
    /// replaced one still in its grace window).
    Yes,
    /// By a bootstrap credential: the phone is to be given its own credential.
    Bootstrap,
    /// Not at all.
    No,
}

fn pair<'a>(u: &'a Option<String>, p: &'a Option<String>) -> Option<(&'a str, &'a str)> {
    match (u, p) {
        (Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
        _ => None,
    }
}

/// The bootstrap credential that applies to a phone of `domain`: the domain's, else the
/// server's.
fn bootstrap_pair<'a>(st: &'a AppState, domain: Option<&'a Domain>) -> Option<(&'a str, &'a str)> {
    domain
        .and_then(|d| pair(&d.bootstrap_username, &d.bootstrap_password))
        .or_else(|| {
            st.access
                .security
                .bootstrap
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.as_str()))
        })
}

/// Checks `c` against the most specific credentials configured: the phone's own (or its
/// replaced one while in grace), else its domain's (likewise), else the server default. A
/// phone with no credential of its own also opens with the bootstrap credential of its
/// domain, else of the server, which exchanges it for a per-device one.
fn phone_auth(
    st: &AppState,
    phone: &Gate,
    domain: Option<&Domain>,
    c: &Presented<'_>,
    now: u64,
) -> Opened {
    let matches = |(u, p): (&str, &str)| c.matches(u, p);
    let previous = |prev: Option<&PreviousCredentials>| {
        prev.is_some_and(|pc| pc.valid_at(now) && matches((&pc.username, &pc.password)))
    };
    let verdict = |ok: bool| if ok { Opened::Yes } else { Opened::No };
    let prev_own = phone.previous_credentials.as_deref();
    if let Some(own) = &phone.provisioning {
        return verdict(matches((&own.0, &own.1)) || previous(prev_own));
    }
    if previous(prev_own) {
        return Opened::Yes;
    }
    if bootstrap_pair(st, domain).is_some_and(matches) {
        return Opened::Bootstrap;
    }
    if let Some(d) = domain {
        if let Some(shared) = pair(&d.provisioning_username, &d.provisioning_password) {
            return verdict(matches(shared) || previous(d.previous_credentials.as_ref()));
        }
        if previous(d.previous_credentials.as_ref()) {
            return Opened::Yes;
        }
    }
    verdict(server_default_ok(st, c))
}

/// Authenticates a request for a known phone: credentials (401), then the domain's address
/// allow-list (403, only after authentication so it tells an outsider nothing). With
/// `exchange`, a bootstrap credential is exchanged for a generated per-device one, committed
/// and flushed before the phone gets the file that carries it; the phone as it now stands
/// is returned.
pub(crate) async fn authenticate(
    st: &AppState,
    t: &Templates,
    phone: &Gate,
    c: &Presented<'_>,
    ip: Option<IpAddr>,
    exchange: bool,
) -> Result<Option<std::sync::Arc<Gate>>, AppError> {
    let domain = match &phone.domain {
        Some(d) => st.store.domain_shared(d)?,
        None => None,
    };
    let now = guard::now_secs();
    let scheme = domain
        .as_ref()
        .and_then(|d| d.auth_scheme)
        .or_else(|| t.catalogue.get(&phone.model).map(|m| m.auth_scheme))
        .unwrap_or_default();
    if scheme == AuthScheme::Digest && c.creds().is_some() {
        // Digest was chosen for this phone: a password sent in the clear is not accepted.
        return Err(AppError::PhoneUnauthorized);
    }
    let opened = phone_auth(st, phone, domain.as_deref(), c, now);
    if opened == Opened::No {
        return Err(AppError::PhoneUnauthorized);
    }
    if let Some((d, _)) = c.digest()
        && !st.access.replay.first_use(d.nonce(), d.nc())
    {
        // A correctly signed request seen before: a replay, or a phone reusing its count.
        c.stale.store(true, Ordering::Relaxed);
        return Err(AppError::PhoneUnauthorized);
    }
    if let Some(d) = &domain
        && !d.allowed_cidrs.is_empty()
    {
        // Stored normalised by the admin API, so every entry parses.
        let nets = d
            .allowed_cidrs
            .iter()
            .filter_map(|s| guard::parse_cidr(s).ok());
        if !guard::allowed_in(nets, ip.unwrap_or(UNSPECIFIED)) {
            return Err(AppError::Forbidden("address not allowed".into()));
        }
    }
    if opened == Opened::Bootstrap
        && exchange
        && let Some((user, password)) = bootstrap_pair(st, domain.as_deref())
    {
        // The configured pair, not what was presented: a Digest answer holds no password.
        let bootstrap = PreviousCredentials {
            username: user.to_string(),
            password: password.to_string(),
            until: now.saturating_add(st.access.security.bootstrap_grace.as_secs()),
        };
        return exchange_bootstrap(st, phone.mac, bootstrap, c, now)
            .await
            .map(Some);
    }
    Ok(None)
}

/// Gives the phone its own generated provisioning credential; the bootstrap credential it
/// used keeps working for this MAC for the bootstrap grace (the rest of its boot sequence).
async fn exchange_bootstrap(
    st: &AppState,
    mac: Mac,
    bootstrap: PreviousCredentials,
    c: &Presented<'_>,
    now: u64,
) -> Result<std::sync::Arc<Gate>, AppError> {
    let issued = {
        let _w = st.store.writer();
        let Some(mut p) = st.store.phone(mac)? else {
            return Err(AppError::NotFound("unknown MAC".into()));
        };
        if p.provisioning_username.is_none() {
            p.provisioning_username = Some(format!("ap{}", mac.lower()));
            p.provisioning_password = Some(auth::random_secret(24));
            p.previous_credentials = Some(bootstrap);
            let mut change = Change::default();
            change.phones.push((mac, Some(p)));
            st.store.commit(&change)?;
            true
        } else {
            false
        }
    };
    if issued {
        st.store.flush().await?;
        tracing::info!(mac = %mac.lower(), "bootstrap credential exchanged for a per-device one");
    }
    let phone = st
        .store
        .gate(mac)?
        .ok_or_else(|| AppError::NotFound("unknown MAC".into()))?;
    // Whoever issued it, the presented bootstrap credential must now open the phone
    // through its grace entry.
    match phone_auth(st, &phone, None, c, now) {
        Opened::Yes => Ok(phone),
        _ => Err(AppError::PhoneUnauthorized),
    }
}

/// Serves a phone's file: the path names a catalogue file, the caller passes the checks,
/// the file comes from the cache (rendered on a miss), the User-Agent rule of the rendered
/// file holds, and the answer honours conditional headers.
async fn serve_file(st: &AppState, req: &mut PhoneRequest<'_>) -> Result<Response, AppError> {
    let Some(fref) = req.templates.catalogue.match_path(req.file) else {
        return Err(AppError::NotFound("no model requests this file".into()));
    };
    let ua_mac = req.agent.and_then(|a| a.mac);
    let (rendered, outcome) = match fref {
        FileRef::Phone { mac, pattern } => serve_phone_file(st, req, mac, pattern, ua_mac).await?,
        FileRef::Common { name, models } => {
            serve_common_file(st, req, &name, &models, ua_mac).await?
        }
    };
    req.facts.cache = Some(match outcome {
        Outcome::Hit => {
            st.metrics.cache_hit();
            "hit"
        }
        Outcome::Miss => {
            st.metrics.cache_miss();
            "miss"
        }
    });
    if !rendered.allowed_user_agents().is_empty() && {
        let ua_lower = req.ua.to_ascii_lowercase();
        !rendered
            .allowed_user_agents()
            .iter()
            .all(|a| ua_lower.contains(&a.to_ascii_lowercase()))
    } {
        return Err(AppError::Forbidden("User-Agent not allowed".into()));
    }
    respond(st, rendered, req.headers)
}

/// A per-phone file (`{mac}.cfg`): the MAC must agree with the User-Agent's, be known
/// (unknown MACs get the same challenge as known ones: no enumeration) and authenticate.
async fn serve_phone_file(
    st: &AppState,
    req: &mut PhoneRequest<'_>,
    mac: Mac,
    pattern: Arc<str>,
    ua_mac: Option<Mac>,
) -> Result<(Arc<Packed>, Outcome), AppError> {
    let t = req.templates;
    let creds = &req.auth;
    req.facts.mac = Some(mac);
    if ua_mac.is_some_and(|m| m != mac) {
        return Err(AppError::Forbidden(
            "the MAC in the User-Agent differs from the MAC in the path".into(),
        ));
    }
    let Some((phone, just_read)) = st.store.gate_or_phone(mac)? else {
        // Same challenge for unknown and known MACs: no enumeration.
        if server_default_ok(st, creds) {
            st.metrics.unknown_mac();
            st.fleet
                .unprovisioned_seen(mac, &ip_text(req.ip), req.agent, req.file);
            return Err(AppError::NotFound("unknown MAC".into()));
        }
        return Err(AppError::PhoneUnauthorized);
    };
    req.known = Some(phone.clone());
    let phone = match authenticate(st, t, &phone, creds, req.ip, true).await? {
        Some(updated) => {
            req.known = Some(updated.clone());
            updated
        }
        None => phone,
    };
    let model = t
        .catalogue
        .get(&phone.model)
        .ok_or_else(|| AppError::NotFound("model not loaded".into()))?;
    let spec = t
        .catalogue
        .file_spec(&model.id, &pattern)
        .ok_or_else(|| AppError::NotFound("this model does not request that file".into()))?;
    let digest = t.digest(&model.id);
    if let Some(p) = phone.last_served.get(&pattern, phone.revision, digest) {
        return Ok((p, Outcome::Hit));
    }
    {
        let key = render_key(Some(mac), &model.id, &pattern);
        let file = FileKey {
            key: &key,
            model: &model.id,
            file: &pattern,
            revision: phone.revision,
            digest,
        };
        let (p, outcome) = st
            .cache
            .get_or_render(
                &st.store,
                file,
                || {
                    // The record read for the gate, unless a bootstrap exchange
                    // moved on.
                    let fresh = just_read.filter(|p| p.revision == phone.revision);
                    timed(st, || render_stored_phone(st, t, model, spec, mac, fresh))
                },
                || render_dictionary(st, t, model, spec),
            )
            .await?;
        phone.last_served.set(&pattern, &p);
        Ok((p, outcome))
    }
}

/// A common file shared by models: served to the server-default credentials, or to a known
/// phone (MAC from the User-Agent) with its own.
async fn serve_common_file(
    st: &AppState,
    req: &mut PhoneRequest<'_>,
    name: &str,
    models: &[String],
    ua_mac: Option<Mac>,
) -> Result<(Arc<Packed>, Outcome), AppError> {
    let t = req.templates;
    let creds = &req.auth;
    // Common files carry no line data. They are served to the server-default
    // credentials, or to a known phone (MAC from the User-Agent) with its own.
    let mac = ua_mac.or_else(|| agent::mac_in(req.ua));
    let phone = match mac {
        Some(m) => st.store.gate(m)?,
        None => None,
    };
    if let Some(p) = &phone {
        req.known = Some(p.clone());
        req.facts.mac = Some(p.mac);
    }
    match &phone {
        // Common files carry no secrets: a bootstrap credential reads them without
        // being exchanged.
        Some(p) => {
            authenticate(st, t, p, creds, req.ip, false).await?;
        }
        None if server_default_ok(st, creds) => {}
        None => return Err(AppError::PhoneUnauthorized),
    }
    if let (None, Some(m)) = (&phone, mac) {
        st.metrics.unknown_mac();
        st.fleet
            .unprovisioned_seen(m, &ip_text(req.ip), req.agent, req.file);
    }
    let id = common_model(t, models, phone.as_deref(), req.agent)
        .ok_or_else(|| AppError::NotFound("no model".into()))?;
    let model = t
        .catalogue
        .get(&id)
        .ok_or_else(|| AppError::NotFound("no model".into()))?;
    let spec = t
        .catalogue
        .file_spec(&id, name)
        .ok_or_else(|| AppError::NotFound("no file".into()))?;
    let key = render_key(None, &id, name);
    let file = FileKey {
        key: &key,
        model: &id,
        file: name,
        revision: 0,
        digest: t.digest(&id),
    };
    let served = st
        .cache
        .get_or_render(
            &st.store,
            file,
            || {
                timed(st, || {
                    Ok::<_, AppError>((render_common(st, t, model, spec)?, 0))
                })
            },
            || render_dictionary(st, t, model, spec),
        )
        .await?;
    Ok(served)
}

/// Runs a cache-miss render, recording its time.
fn timed<T>(st: &AppState, render: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let r = render();
    st.metrics.rendered(start.elapsed());
    r
}

/// Which of the models sharing a common file answers: the linked phone's model, else the
/// model the User-Agent names, else the first.
fn common_model(
    t: &Templates,
    models: &[String],
    phone: Option<&Gate>,
    agent: Option<&Agent>,
) -> Option<String> {
    if let Some(p) = phone
        && models.iter().any(|m| **m == *p.model)
    {
        return Some(p.model.to_string());
    }
    if let Some(a) = agent
        && let Some(id) = models.iter().find(|id| {
            t.catalogue.get(id).is_some_and(|m| {
                m.user_agent_model
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&a.model))
            })
        })
    {
        return Some(id.clone());
    }
    models.first().cloned()
}

/// A phone's domain and its members with their accounts.
pub type PhoneRecords<'p> = (Option<std::sync::Arc<Domain>>, Vec<(&'p Member, Account)>);

/// The phone's domain and its members' accounts (members whose account is gone are skipped).
pub fn phone_records<'p>(st: &AppState, phone: &'p Phone) -> Result<PhoneRecords<'p>, AppError> {
    let domain = match &phone.domain {
        Some(d) => st.store.domain_shared(d)?,
        None => None,
    };
    let mut accounts = Vec::with_capacity(phone.members.len());
    for m in &phone.members {
        if let Some(a) = st.store.account(&m.id)? {
            accounts.push((m, a));
        }
    }
    Ok((domain, accounts))
}

/// Renders a phone's file from its record as stored now, or from `fresh` (the record
/// read moments ago for the gate), with the revision it was rendered at (the cache-miss
/// path).
pub fn render_stored_phone(
    st: &AppState,
    t: &Templates,
    model: &Model,
    spec: &FileSpec,
    mac: Mac,
    fresh: Option<Phone>,
) -> Result<(Rendered, u64), AppError> {
    let phone = match fresh {
        Some(p) => p,
        None => st
            .store
            .phone(mac)?
            .ok_or_else(|| AppError::NotFound("unknown MAC".into()))?,
    };
    if phone.model != model.id {
        // Relinked to another model since the request looked: its file names differ.
        return Err(AppError::NotFound(
            "this model does not request that file".into(),
        ));
    }
    Ok((render_phone(st, t, model, spec, &phone)?, phone.revision))
}

/// Renders a phone's file (the cache-miss path).
pub fn render_phone(
    st: &AppState,
    t: &Templates,
    model: &Model,
    spec: &FileSpec,
    phone: &Phone,
) -> Result<Rendered, AppError> {
    let (domain, accounts) = phone_records(st, phone)?;
    let lines = accounts
        .iter()
        .map(|(member, account)| LineInput { member, account })
        .collect();
    let input = PhoneInput {
        model,
        server: &st.server_defaults,
        domain: domain.as_deref(),
        phone: Some(phone),
        lines,
    };
    let ctx = RenderContext::build(&input);
    let body = t.engine.render(spec, &ctx, &phone.overrides)?;
    Ok(Rendered::new(
        body,
        spec.content_type.clone(),
        ctx.allowed_user_agents,
    ))
}

/// The text a file is packed against in the cache: the file rendered for the sample phone
/// (made-up accounts, no domain: nothing of any real phone), or for a common file the file
/// itself. Phones of one model differ from it in a few values.
pub fn render_dictionary(
    st: &AppState,
    t: &Templates,
    model: &Model,
    spec: &FileSpec,
) -> Option<Rendered> {
    if !spec.per_phone() {
        return render_common(st, t, model, spec).ok();
    }
    let (mut phone, mut accounts) = crate::model::sample_phone(model, "sample.invalid");
    phone.domain = None;
    // Most phones carry one line: the dictionary that matches them best has one.
    phone.members.truncate(1);
    accounts.truncate(1);
    let lines = phone
        .members
        .iter()
        .zip(&accounts)
        .map(|(member, account)| LineInput { member, account })
        .collect();
    let input = PhoneInput {
        model,
        server: &st.server_defaults,
        domain: None,
        phone: Some(&phone),
        lines,
    };
    let body = t
        .engine
        .render(spec, &RenderContext::build(&input), &phone.overrides)
        .ok()?;
    Some(Rendered::new(body, spec.content_type.clone(), Vec::new()))
}

/// Renders a model's common file (model and server defaults only).
pub fn render_common(
    st: &AppState,
    t: &Templates,
    model: &Model,
    spec: &FileSpec,
) -> Result<Rendered, AppError> {
    let input = PhoneInput {
        model,
        server: &st.server_defaults,
        domain: None,
        phone: None,
        lines: vec![],
    };
    let body = t
        .engine
        .render(spec, &RenderContext::build(&input), &Default::default())?;
    Ok(Rendered::new(body, spec.content_type.clone(), vec![]))
}

fn etag_matches(headers: &HeaderMap, etag: &[u8]) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag
        })
    })
}

fn respond(
    st: &AppState,
    r: std::sync::Arc<Packed>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    // Built in place, each header set once (axum's tuple response sets a body type first,
    // then replaces it).
    let mut resp = if etag_matches(headers, &r.etag()) {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp
    } else {
        let mut resp = Response::new(axum::body::Body::from(r.body()?));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, st.cache.content_type(&r));
        resp
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, r.etag_header());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
