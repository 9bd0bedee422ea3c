//! The caller's sessions: list and end them.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use kit::http::{Json, Path};
use kit::{ApiError, ApiResult};
use serde::Serialize;

use super::{CurrentSession, publish_revoked};
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/sessions", get(list))
        .route("/auth/sessions/{id}", delete(end))
}

#[derive(Serialize)]
struct SessionView {
    id: uuid::Uuid,
    #[serde(serialize_with = "kit::time::ser_rfc3339::serialize")]
    created_at: i64,
    #[serde(serialize_with = "kit::time::ser_rfc3339::serialize")]
    last_used_at: i64,
    user_agent: String,
    ip: String,
    current: bool,
}

#[derive(Serialize)]
struct SessionList {
    items: Vec<SessionView>,
}

/// GET /auth/sessions — the caller's active sessions, newest first.
async fn list(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
) -> ApiResult<Json<SessionList>> {
    let rows = store::sessions::list_active(
        ctx.db.pool(),
        caller.user_id,
        kit::time::now_ms(),
        ctx.config.session_idle_days * 86_400_000,
    )
    .await?;
    let items = rows
        .into_iter()
        .map(|s| SessionView {
            current: s.id == caller.session_id,
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(Json(SessionList { items }))
}

/// DELETE /auth/sessions/{id} — ends one of the caller's sessions (others' are 404).
async fn end(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = ctx.db.begin().await?;
    let session = store::sessions::get(tx.conn(), id).await?;
    if session.is_none_or(|s| s.user_id != caller.user_id) {
        return Err(ApiError::not_found("no such session"));
    }
    if store::sessions::revoke(tx.conn(), id, kit::time::now_ms()).await? {
        publish_revoked(&ctx, &mut tx, caller.user_id, &[id]).await?;
    }
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}
