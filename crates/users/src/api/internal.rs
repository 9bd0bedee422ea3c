//! Routes for other services only (the gateway does not expose `/internal`).
//!
//! Both answer 503 `database_unavailable` with `Retry-After` when the database cannot be
//! reached (errors propagate through kit's `From<sqlx::Error>`), so a caller such as chat
//! can tell "try again" from a bug.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::http::{Json, Path, Query};
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};

use super::Page;
use crate::cursor;
use crate::state::ApiContext;
use crate::store::graph::{self, PairFlags};

/// Largest page of `GET /internal/blocks` (also its default): a backfill wants few round
/// trips, and 1000 rows of two uuids are ~90 KB of JSON.
pub const MAX_BLOCKS_PAGE: i64 = 1000;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/internal/relationships/{a}/{b}", get(relationships))
        .route("/internal/blocks", get(blocks))
        .route("/internal/usernames", get(usernames))
}

/// `{a_blocks_b, b_blocks_a, a_follows_b, b_follows_a, a_exists, b_exists}`.
#[derive(Debug, Serialize)]
struct PairStatus {
    #[serde(flatten)]
    flags: PairFlags,
    /// Whether the user has a profile: false for an id no account has (or had: a deleted
    /// account's profile goes), and for an account whose `user.registered` event this
    /// service has not consumed yet (normally milliseconds after registration).
    a_exists: bool,
    b_exists: bool,
}

/// The relationship of `a` to `b`; the edge flags are all false when either is unknown.
async fn relationships(
    State(ctx): State<ApiContext>,
    Path((a, b)): Path<(uuid::Uuid, uuid::Uuid)>,
) -> ApiResult<Json<PairStatus>> {
    let (flags, a_exists, b_exists) = graph::pair_status(ctx.db.pool(), a, b).await?;
    Ok(Json(PairStatus {
        flags,
        a_exists,
        b_exists,
    }))
}

#[derive(Debug, Deserialize)]
struct BlocksParams {
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct BlockEdge {
    blocker_id: String,
    blocked_id: String,
}

/// `GET /internal/blocks?after=&limit=`: every block edge, `{items: [{blocker_id,
/// blocked_id}], next_cursor}`, ordered by (blocker_id, blocked_id), for a one-time
/// backfill of a copy kept by `user.blocked` / `user.unblocked` events. `next_cursor` is
/// null on the last page; pass it as `after` for the next one.
async fn blocks(
    State(ctx): State<ApiContext>,
    Query(params): Query<BlocksParams>,
) -> ApiResult<Json<Page<BlockEdge>>> {
    let limit = match params.limit {
        None => MAX_BLOCKS_PAGE,
        Some(n) if (1..=MAX_BLOCKS_PAGE).contains(&n) => n,
        Some(_) => return Err(ApiError::validation("limit", "must be between 1 and 1000")),
    };
    let after = match params.after.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let p = cursor::decode("k", 2, c)?;
            let id = |s: &str| {
                uuid::Uuid::parse_str(s).map_err(|_| {
                    ApiError::bad_request(
                        kit::error::code::INVALID_CURSOR,
                        "the cursor is malformed",
                    )
                })
            };
            Some((id(&p[0])?, id(&p[1])?))
        }
    };
    let mut rows = graph::blocks_after(ctx.db.pool(), after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|(a, b)| cursor::encode("k", &[a, b]))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|(blocker_id, blocked_id)| BlockEdge {
            blocker_id,
            blocked_id,
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize)]
struct UsernamesParams {
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct UsernameRow {
    user_id: String,
    username: String,
}

/// `GET /internal/usernames?after=&limit=`: every visible profile's `{user_id, username}`,
/// ordered by id, for the one-time backfill of chat's copy (which resolves `@username`
/// mentions; `user.registered` events keep it current afterwards). Pages of up to 1000.
async fn usernames(
    State(ctx): State<ApiContext>,
    Query(params): Query<UsernamesParams>,
) -> ApiResult<Json<Page<UsernameRow>>> {
    let limit = match params.limit {
        None => MAX_BLOCKS_PAGE,
        Some(n) if (1..=MAX_BLOCKS_PAGE).contains(&n) => n,
        Some(_) => return Err(ApiError::validation("limit", "must be between 1 and 1000")),
    };
    let after = match params.after.as_deref().filter(|c| !c.is_empty()) {
        None => String::new(),
        Some(c) => {
            let p = cursor::decode("n", 1, c)?;
            uuid::Uuid::parse_str(&p[0]).map_err(|_| {
                ApiError::bad_request(kit::error::code::INVALID_CURSOR, "the cursor is malformed")
            })?;
            p[0].clone()
        }
    };
    let mut rows =
        crate::store::profiles::usernames_after(ctx.db.pool(), &after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|(id, _)| cursor::encode("n", &[id]))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|(user_id, username)| UsernameRow { user_id, username })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}
