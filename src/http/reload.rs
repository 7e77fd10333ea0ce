//! `POST /api/v1/reload`: re-reads the models and templates folders, validates the whole new
//! set, and swaps it in (logic in `crate::reload`).
//!
//! - Server-wide admin token only; a domain token gets 403.
//! - 200 `{"models": n, "changed": [ids], "unchanged": n, "removed": [ids]}`: `changed` lists
//!   the models that are new or whose model file or templates changed; only their phones
//!   re-render. `autoprov.toml` is not re-read: server defaults change with a restart.
//! - 422 `{"error": {"code": "invalid_set", "message": "<file>:<line>:<col>: …", "file",
//!   "line", "field"}}` when the new set does not load or a model's file does not render for
//!   the sample phone; `line` is there when tera or toml gave one, `field` for a model file
//!   with a bad value. The old set stays in use.
//!
//! Reloads run one at a time, on a blocking thread (request workers are never held up).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::admin::Admin;
use crate::AppState;
use crate::error::AppError;

/// `POST /reload`.
#[utoipa::path(
    post, path = "/reload", tag = "reload",
    responses(
        (status = 200, description = "Swapped in: what changed", body = super::schema::ReloadOut),
        (status = 422, description = "The new set does not load or render; the old one stays", body = super::schema::ReloadErrorBody),
        super::schema::ForbiddenError,
        super::schema::ListErrors,
    )
)]
pub async fn reload(a: Admin, State(st): State<AppState>) -> Result<Json<Value>, AppError> {
    a.server_wide("reloading the models and templates")?;
    let s = st.clone();
    let summary = tokio::task::spawn_blocking(move || s.reload("POST /api/v1/reload"))
        .await
        .map_err(|e| AppError::Io {
            what: "reload task",
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(Json(json!(summary)))
}
