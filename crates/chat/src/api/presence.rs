//! `GET /chat/presence?user_ids=a,b,…` (API.md, Chat additions — v1.1).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::ApiError;
use kit::ApiResult;
use kit::error::code;
use kit::http::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use token::AuthUser;
use uuid::Uuid;

use crate::presence::{self, MAX_IDS, Seen};
use crate::state::ApiContext;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/chat/presence", get(show))
}

#[derive(Deserialize)]
struct PresenceQuery {
    user_ids: Option<String>,
}

/// `a,b,…` of the `user_ids` query parameter (≤ [`MAX_IDS`] distinct ids).
pub fn ids_from_query(raw: &str) -> Result<Vec<Uuid>, ApiError> {
    let mut ids = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if ids.len() > MAX_IDS {
            break;
        }
        ids.push(part.parse::<Uuid>().map_err(|_| {
            ApiError::bad_request(code::INVALID_ID, format!("not a user id: {part}"))
        })?);
    }
    parse_ids(ids)
}

/// Parses a list of user ids (duplicates dropped, order kept); ≤ [`MAX_IDS`].
pub fn parse_ids(ids: impl IntoIterator<Item = Uuid>) -> Result<Vec<Uuid>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<Uuid> = ids.into_iter().filter(|u| seen.insert(*u)).collect();
    if ids.len() > MAX_IDS {
        return Err(ApiError::validation(
            "user_ids",
            format!("at most {MAX_IDS} user ids"),
        ));
    }
    Ok(ids)
}

/// The presence of `ids` as `viewer` may see it: users who block the viewer show
/// offline, never seen.
pub async fn visible(
    ctx: &ApiContext,
    viewer: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Seen>, sqlx::Error> {
    let hidden = presence::blockers_of(&ctx.db, viewer, ids).await?;
    let mut found = ctx.presence.lookup(ids).await;
    for (seen, id) in found.iter_mut().zip(ids) {
        if hidden.contains(id) {
            *seen = Seen::UNKNOWN;
        }
    }
    Ok(found)
}

async fn show(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(q): Query<PresenceQuery>,
) -> ApiResult<Json<Value>> {
    let ids = ids_from_query(&q.user_ids.unwrap_or_default())?;
    let found = visible(&ctx, user.id, &ids).await?;
    let items: Vec<Value> = found
        .into_iter()
        .zip(&ids)
        .map(|(seen, id)| seen.to_json(*id))
        .collect();
    Ok(Json(json!({ "items": items })))
}
