//! Routes for other services only (the gateway answers 404 to any `/internal/...`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kit::error::code;
use kit::http::{Json, Path, Query};
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Role;
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route(
            "/internal/rooms/{room_id}/members/{user_id}",
            get(membership),
        )
        .route("/internal/presence", get(presence))
}

#[derive(Deserialize)]
struct PresenceQuery {
    user_ids: Option<String>,
}

/// `GET /internal/presence?user_ids=a,b,…` (≤ 200): `{items: [{user_id, status,
/// last_seen_at}]}` as `GET /chat/presence` answers, without a viewer (no block filter).
/// The notifications service asks it before a push: nothing is pushed to a user who has
/// an open, active connection.
async fn presence(
    State(ctx): State<ApiContext>,
    Query(q): Query<PresenceQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let ids = super::presence::ids_from_query(&q.user_ids.unwrap_or_default())?;
    let found = ctx.presence.lookup(&ids).await;
    let items: Vec<serde_json::Value> = found
        .into_iter()
        .zip(&ids)
        .map(|(seen, id)| seen.to_json(*id))
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

#[derive(Serialize)]
struct Membership {
    role: Role,
    room_kind: String,
}

/// `GET /internal/rooms/{room_id}/members/{user_id}`: `{role, room_kind}` when the user is
/// a member, else 404 `member_not_found` (an unknown room too). The notifications service
/// asks it when a user sets a room's notification level (members only), never per message.
async fn membership(
    State(ctx): State<ApiContext>,
    Path((room_id, user_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Membership>> {
    let mut conn = ctx.db.pool().acquire().await?;
    let not_member = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::MEMBER_NOT_FOUND,
            "not a member of this room",
        )
    };
    let role = store::role(&mut *conn, room_id, user_id)
        .await?
        .ok_or_else(not_member)?;
    let room = store::room(&mut *conn, room_id)
        .await?
        .ok_or_else(not_member)?;
    Ok(Json(Membership {
        role,
        room_kind: room.kind,
    }))
}
