//! `/api/v1/tokens`: domain-scoped admin tokens over HTTP (logic in `crate::admin::tokens`).
//!
//! Who may do what:
//! - `POST /tokens` `{"domain": "…"}` → 201 `{"id", "token", "domain", "created"}`: the only
//!   response that ever holds the token. Only the server-wide token creates tokens (a domain
//!   token gets 403: a leaked one must not be able to mint spares that outlive its
//!   revocation). `domain` missing, not a string or not a valid name → 400 naming
//!   `domain`; an unknown domain → 409 naming it; unknown fields → 400 naming them.
//! - `GET /tokens` → 200 `{"tokens": [{"id", "domain", "created"}]}`: all tokens for the
//!   server-wide token, its own domain's for a domain token. Never a token or a hash.
//! - `DELETE /tokens/{id}` → 204; unknown id, or another domain's token under a domain
//!   token → 404. The revoked token gets 401 from its next request on.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::admin::Admin;
use super::body::{Fields, JsonBody, Patch, Path};
use super::params::TokenPath;
use super::schema;
use crate::AppState;
use crate::admin::tokens::{self, token_json};
use crate::error::AppError;

/// Creates a domain token (`POST /tokens`).
#[utoipa::path(
    post, path = "/tokens", tag = "tokens", request_body = schema::TokenIn,
    responses((status = 201, description = "Created: the only response holding the token", body = schema::TokenCreated), schema::ForbiddenError, schema::WriteErrors)
)]
pub async fn create(
    a: Admin,
    State(st): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    a.server_wide("creating tokens")?;
    let mut f = Fields::new(body, "");
    let domain = match f.string("domain")? {
        Patch::Set(d) => d,
        Patch::Null | Patch::Absent => return Err(AppError::invalid("domain", "is required")),
    };
    f.finish()?;
    let (t, secret) = tokens::create(&st.store, a.domain.as_deref(), &domain)?;
    st.store.flush().await?;
    let mut v = token_json(&t);
    v["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Lists tokens (`GET /tokens`).
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    responses((status = 200, description = "Oldest first", body = schema::TokenList), schema::ListErrors)
)]
pub async fn list(a: Admin, State(st): State<AppState>) -> Result<Json<Value>, AppError> {
    let list: Vec<Value> = tokens::list(&st.store, a.domain.as_deref())?
        .iter()
        .map(token_json)
        .collect();
    Ok(Json(json!({ "tokens": list })))
}

/// Revokes a token (`DELETE /tokens/{id}`).
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens", params(TokenPath),
    responses((status = 204, description = "Revoked"), schema::DeleteErrors)
)]
pub async fn revoke(
    a: Admin,
    State(st): State<AppState>,
    Path(TokenPath { id }): Path<TokenPath>,
) -> Result<StatusCode, AppError> {
    tokens::revoke(&st.store, a.domain.as_deref(), &id)?;
    st.store.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}
