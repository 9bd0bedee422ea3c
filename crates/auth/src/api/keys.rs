use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::ApiContext;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi))
}

/// GET /auth/.well-known/jwks.json — public and cacheable.
async fn jwks(State(ctx): State<ApiContext>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(ctx.keys.jwks()),
    )
}

/// GET /openapi.json — this service's part of the public API (the gateway merges them).
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
