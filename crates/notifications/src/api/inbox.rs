//! The inbox: the list, the unread count, marking read.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kit::http::{Json, Query};
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use token::AuthUser;
use uuid::Uuid;

use super::Page;
use crate::domain::Notification;
use crate::events;
use crate::state::ApiContext;
use crate::store::notifications;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 100;
/// Most ids one `POST /notifications/read` takes: a client marks what it shows (a page
/// is at most 100), and 500 keeps the statement's bind list small.
pub const MAX_READ_IDS: usize = 500;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/unread-count", get(unread_count))
        .route("/notifications/read", post(read))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    unread: Option<bool>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn invalid_cursor() -> ApiError {
    ApiError::bad_request(
        kit::error::code::INVALID_CURSOR,
        "the cursor is malformed or from another list",
    )
}

/// The cursor is the id of the last item returned (`n|<uuid>`, base64url).
fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("n|{id}"))
}

fn decode_cursor(c: &str) -> Result<Uuid, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(c.as_bytes())
        .map_err(|_| invalid_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_cursor())?;
    let id = text.strip_prefix("n|").ok_or_else(invalid_cursor)?;
    Uuid::parse_str(id).map_err(|_| invalid_cursor())
}

async fn list(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Page<Notification>>> {
    let limit = match p.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(ApiError::validation("limit", "must be between 1 and 100")),
    };
    let before = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut items = notifications::list(
        ctx.db.pool(),
        user.id,
        p.unread.unwrap_or(false),
        before,
        limit + 1,
    )
    .await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|n| encode_cursor(n.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Serialize)]
struct Count {
    count: i64,
}

async fn unread_count(State(ctx): State<ApiContext>, user: AuthUser) -> ApiResult<Json<Count>> {
    let count = notifications::unread_count(ctx.db.pool(), user.id).await?;
    Ok(Json(Count { count }))
}

/// `{ids}` or `{all: true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    ids: Option<Vec<String>>,
    all: Option<bool>,
}

async fn read(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Json(body): Json<ReadBody>,
) -> ApiResult<StatusCode> {
    let ids = match (body.ids, body.all) {
        (Some(ids), None | Some(false)) => {
            if ids.len() > MAX_READ_IDS {
                return Err(ApiError::validation(
                    "ids",
                    format!("at most {MAX_READ_IDS} ids"),
                ));
            }
            let parsed: Result<Vec<Uuid>, _> = ids.iter().map(|s| Uuid::parse_str(s)).collect();
            Some(parsed.map_err(|_| ApiError::validation("ids", "must be notification ids"))?)
        }
        (None, Some(true)) => None,
        _ => {
            return Err(ApiError::validation(
                "ids",
                "send either {\"ids\": [...]} or {\"all\": true}",
            ));
        }
    };
    let mut tx = ctx.db.begin().await?;
    let n = match &ids {
        Some(ids) => notifications::read_ids(tx.conn(), user.id, ids).await?,
        None => notifications::read_all(tx.conn(), user.id).await?,
    };
    let changed: BTreeSet<Uuid> = if n > 0 {
        BTreeSet::from([user.id])
    } else {
        BTreeSet::new()
    };
    events::enqueue_counts(&mut tx, &changed).await?;
    tx.commit().await?;
    if n > 0 {
        ctx.outbox.wake();
    }
    Ok(StatusCode::NO_CONTENT)
}
