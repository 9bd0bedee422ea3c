//! HTTP routes of the files service, one module per feature.

pub mod download;
pub mod internal;
pub mod openapi;
pub mod upload;

use axum::Router;

use crate::state::ApiContext;

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(upload::router())
        .merge(download::router())
        .merge(internal::router())
        .merge(openapi::router())
        .with_state(ctx)
}

// Storage errors propagate with `?`: kit's `From<sqlx::Error> for ApiError` answers an
// unreachable database with 503 `database_unavailable` + `Retry-After` and anything else
// with a logged 500.
