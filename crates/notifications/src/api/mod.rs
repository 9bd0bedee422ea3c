//! HTTP routes of the notifications service, one module per feature.

pub mod inbox;
pub mod openapi;
pub mod preferences;
pub mod push;
pub mod rooms;
pub mod unsubscribe;

use axum::Router;
use serde::Serialize;

use crate::state::ApiContext;

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(inbox::router())
        .merge(preferences::router())
        .merge(rooms::router())
        .merge(push::router())
        .merge(unsubscribe::router())
        .merge(openapi::router())
        .with_state(ctx)
}

/// `{items, next_cursor}`.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

// Storage errors propagate with `?`: kit's `From<sqlx::Error> for ApiError` answers an
// unreachable database with 503 `database_unavailable` + `Retry-After` and anything else
// with a logged 500.
