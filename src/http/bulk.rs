//! `POST /api/v1/import` (bulk CSV/JSON rows, all or nothing; logic in `crate::admin::bulk`) and
//! `GET /api/v1/export` (the full store dump, or the bulk CSV with `?format=csv`). Both
//! need the server-wide admin token: they span every domain.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::admin::Admin;
use super::body::Query;
use super::params::ExportQuery;
use crate::AppState;
use crate::admin::bulk::{self, BulkError, Format};
use crate::error::AppError;

/// Largest import body (10,000 rows are about 1 MiB).
pub const IMPORT_LIMIT: usize = 64 << 20;

impl From<BulkError> for AppError {
    fn from(e: BulkError) -> Self {
        match e {
            BulkError::Rows(rows) => AppError::InvalidRows(rows),
            BulkError::Store(s) => AppError::Store(s),
            // Only reached after the timeout layer answered 408; nothing was written.
            e @ BulkError::Abandoned => AppError::Io {
                what: "bulk import",
                source: std::io::Error::other(e.to_string()),
            },
        }
    }
}

/// `POST /import`: body `text/csv` or `application/json` rows → 200 summary, or 400 with
/// every bad row in `rows` (nothing changed).
#[utoipa::path(
    post, path = "/import", tag = "bulk",
    request_body(
        description = "CSV with a header row (columns in docs/OPERATIONS.md), or JSON rows",
        content(
            (String = "text/csv"),
            (super::schema::ImportRows = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Imported, all rows in one commit", body = super::schema::ImportSummary),
        (status = 400, description = "Every bad row (`rows`); nothing was imported", body = super::schema::ImportErrorBody),
        super::schema::ImportErrors,
    )
)]
pub async fn import(
    a: Admin,
    State(st): State<AppState>,
    req: Request,
) -> Result<Json<Value>, AppError> {
    a.server_wide("bulk import")?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = if super::is_json_type(ct) {
        Format::Json
    } else if ct
        .split(';')
        .next()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/csv"))
    {
        Format::Csv
    } else {
        return Err(AppError::UnsupportedMediaType);
    };
    let bytes = axum::body::to_bytes(req.into_body(), IMPORT_LIMIT)
        .await
        .map_err(|_| AppError::PayloadTooLarge(IMPORT_LIMIT))?;
    let rows = bulk::parse(&bytes, format).map_err(AppError::InvalidRows)?;
    let summary = bulk::apply(&st, st.templates().clone(), rows, |_| {}).await?;
    tracing::info!(
        rows = summary.rows,
        phones = summary.phones,
        accounts = summary.accounts,
        "bulk import"
    );
    Ok(Json(json!(summary)))
}

/// `GET /export[?format=json|csv]`.
#[utoipa::path(
    get, path = "/export", tag = "bulk",
    params(ExportQuery),
    responses(
        (status = 200, description = "The export", content(
            (Object = "application/json"),
            (String = "text/csv"),
        )),
        super::schema::ForbiddenError,
        super::schema::ListErrors,
    )
)]
pub async fn export(
    a: Admin,
    State(st): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, AppError> {
    a.server_wide("export")?;
    let st2 = st.clone();
    let (ct, body) = match q.format.as_deref().unwrap_or("json") {
        "json" => (
            "application/json",
            tokio::task::spawn_blocking(move || st2.store.export())
                .await
                .map_err(|e| crate::store::StoreError::Flush(e.to_string()))??,
        ),
        "csv" => (
            "text/csv; charset=utf-8",
            tokio::task::spawn_blocking(move || bulk::export_csv(&st2.store))
                .await
                .map_err(|e| crate::store::StoreError::Flush(e.to_string()))??
                .into_bytes(),
        ),
        _ => return Err(AppError::invalid("format", "must be json or csv")),
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response())
}
