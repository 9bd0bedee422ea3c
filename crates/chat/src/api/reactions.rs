//! Reactions, pins and read markers (API.md, Chat additions v1.1).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use kit::ApiResult;
use kit::http::{Json, Path};
use serde::Serialize;
use token::AuthUser;
use uuid::Uuid;

use crate::domain::Message;
use crate::service::reactions as service;
use crate::state::ApiContext;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route(
            "/chat/rooms/{id}/messages/{message_id}/reactions/{emoji}",
            put(react).delete(unreact),
        )
        .route(
            "/chat/rooms/{id}/messages/{message_id}/reactions",
            get(who_reacted),
        )
        .route("/chat/rooms/{id}/pins/{message_id}", put(pin).delete(unpin))
        .route("/chat/rooms/{id}/pins", get(pins))
        .route("/chat/rooms/{id}/read-markers", get(read_markers))
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

/// `emoji` arrives percent-decoded (axum's `Path`).
async fn react(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id, emoji)): Path<(Uuid, Uuid, String)>,
) -> ApiResult<StatusCode> {
    service::react(&ctx, user.id, id, message_id, &emoji).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unreact(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id, emoji)): Path<(Uuid, Uuid, String)>,
) -> ApiResult<StatusCode> {
    service::unreact(&ctx, user.id, id, message_id, &emoji).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct Reactors {
    emoji: String,
    count: usize,
    user_ids: Vec<Uuid>,
}

async fn who_reacted(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Items<Reactors>>> {
    let items = service::who_reacted(&ctx, user.id, id, message_id)
        .await?
        .into_iter()
        .map(|(emoji, user_ids)| Reactors {
            emoji,
            count: user_ids.len(),
            user_ids,
        })
        .collect();
    Ok(Json(Items { items }))
}

async fn pin(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    service::pin(&ctx, user.id, id, message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpin(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    service::unpin(&ctx, user.id, id, message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pins(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Items<Message>>> {
    Ok(Json(Items {
        items: service::pins(&ctx, user.id, id).await?,
    }))
}

#[derive(Serialize)]
struct ReadMarker {
    user_id: Uuid,
    seq: i64,
    /// When the marker last moved; null while it never has.
    updated_at: Option<String>,
}

async fn read_markers(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Items<ReadMarker>>> {
    let items = service::read_markers(&ctx, user.id, id)
        .await?
        .into_iter()
        .map(|(user_id, seq, at)| ReadMarker {
            user_id,
            seq,
            updated_at: at.map(kit::time::rfc3339),
        })
        .collect();
    Ok(Json(Items { items }))
}
