//! HTTP and WebSocket API of the chat service (API.md, Chat section).

mod internal;
mod messages;
mod openapi;
mod presence;
mod reactions;
mod rooms;
mod search;
mod ws;

use axum::Router;
use kit::ApiError;
use kit::error::code;
use serde::Serialize;
use uuid::Uuid;

use crate::state::ApiContext;

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(rooms::router())
        .merge(messages::router())
        .merge(reactions::router())
        .merge(ws::router())
        .merge(internal::router())
        .merge(search::router())
        .merge(presence::router())
        .merge(openapi::router())
        .with_state(ctx)
}

/// `{items, next_cursor}`.
#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A cursor of an id-ordered page (opaque to clients).
pub fn parse_cursor(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(code::INVALID_CURSOR, "the cursor is not valid")),
    }
}

/// Builds a page from `limit + 1` fetched rows.
pub fn page<T>(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}
