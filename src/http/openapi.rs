//! The OpenAPI 3.1 document of the admin API, generated from the routes themselves: every
//! admin route is registered through `utoipa_axum::routes!` in `admin::routes()`, which
//! takes the route's method and path from the handler's `#[utoipa::path]`, so a route
//! cannot be served without being described. Served at `GET /api/v1/openapi.json` without
//! a token: it describes the API and holds no data.

use std::sync::LazyLock;

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use super::schema;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "autoprov admin API",
        description = "Admin JSON API of autoprov. Every route needs `Authorization: Bearer <token>` \
            (the server-wide token from `data/admin-token`, or a domain token from `POST /tokens`) \
            except this document. Bodies are JSON objects (`Content-Type: application/json`, \
            at most 1 MiB). Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`. \
            See docs/API.md for the rules behind each field."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    components(schemas(schema::ErrorBody)),
    tags(
        (name = "models", description = "The model catalogue"),
        (name = "domains", description = "Domains"),
        (name = "accounts", description = "Accounts (NetSapiens \"device for user\")"),
        (name = "phones", description = "Phones, members, previews, explain"),
        (name = "tokens", description = "Domain-scoped admin tokens"),
        (name = "meta", description = "This document")
    )
)]
struct ApiDoc;

/// Adds the `bearer` security scheme the document's `security` names.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The server-wide admin token (`data/admin-token`) or a domain token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document, paths under `/api/v1`.
pub fn document() -> utoipa::openapi::OpenApi {
    OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", super::admin::routes())
        .into_openapi()
}

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(document);

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = Object),
        schema::UriErrors
    )
)]
pub async fn openapi_json() -> impl IntoResponse {
    Json(&*DOCUMENT)
}
