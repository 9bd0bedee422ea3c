//! Messages, read markers and the event log.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use kit::error::code;
use kit::http::{Json, Path, Query};
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use token::AuthUser;
use uuid::Uuid;

use crate::access;
use crate::domain::{self, Message};
use crate::service;
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/chat/rooms/{id}/messages", post(send).get(history))
        .route(
            "/chat/rooms/{id}/messages/{message_id}",
            patch(edit).delete(remove),
        )
        .route(
            "/chat/rooms/{id}/threads/{root_id}/messages",
            get(thread_replies),
        )
        .route("/chat/rooms/{id}/read", post(read))
        .route("/chat/rooms/{id}/events", get(events))
}

#[derive(Deserialize)]
struct SendBody {
    /// May be left out (or empty) when the message has attachments.
    #[serde(default)]
    body: String,
    client_msg_id: Option<String>,
    reply_to: Option<Uuid>,
    thread_root_id: Option<Uuid>,
    #[serde(default)]
    attachment_ids: Vec<Uuid>,
}

async fn send(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<SendBody>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    if let Err(wait_ms) = service::check_send_rate(&ctx, user.id) {
        return Err(ApiError::rate_limited(wait_ms, ctx.config.send_burst));
    }
    let (message, created) = service::send_message(
        &ctx,
        user.id,
        service::SendInput {
            room_id: id,
            body: &body.body,
            client_msg_id: body.client_msg_id.as_deref(),
            reply_to: body.reply_to,
            thread_root_id: body.thread_root_id,
            attachment_ids: &body.attachment_ids,
            sender_username: &user.username,
        },
    )
    .await?;
    let (status, message) = if created {
        // Nobody reacted to a message that was just stored: no query on the send path.
        (StatusCode::CREATED, message)
    } else {
        let mut message = [message];
        let mut conn = ctx.db.pool().acquire().await?;
        store::reactions::attach(&mut conn, &mut message, Some(user.id)).await?;
        let [message] = message;
        (StatusCode::OK, message)
    };
    Ok((status, Json(message)))
}

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Slice<T> {
    items: Vec<T>,
    has_more: bool,
}

async fn history(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Slice<Message>>> {
    let limit = domain::parse_limit(q.limit)?;
    if q.before.is_some_and(|b| b < 0) || q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::bad_request(
            code::INVALID_QUERY,
            "before and after are seq values (0 or more)",
        ));
    }
    let mut conn = ctx.db.pool().acquire().await?;
    access::member_access(&mut conn, id, user.id).await?;
    let (mut items, has_more) = store::history(&mut *conn, id, q.before, q.after, limit).await?;
    store::reactions::attach(&mut conn, &mut items, Some(user.id)).await?;
    Ok(Json(Slice { items, has_more }))
}

#[derive(Deserialize)]
struct ThreadQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /chat/rooms/{id}/threads/{root_id}/messages?after=&limit=`: the thread's replies
/// (without the root) in ascending seq.
async fn thread_replies(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, root_id)): Path<(Uuid, Uuid)>,
    Query(q): Query<ThreadQuery>,
) -> ApiResult<Json<Slice<Message>>> {
    let limit = domain::parse_limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(
            code::INVALID_QUERY,
            "after is a seq value (0 or more)",
        ));
    }
    let (items, has_more) = service::thread(&ctx, user.id, id, root_id, after, limit).await?;
    Ok(Json(Slice { items, has_more }))
}

#[derive(Deserialize)]
struct EditBody {
    body: String,
}

async fn edit(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<EditBody>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        service::edit_message(&ctx, user.id, id, message_id, &body.body).await?,
    ))
}

async fn remove(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    service::delete_message(&ctx, user.id, id, message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ReadBody {
    seq: i64,
}

async fn read(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<ReadBody>,
) -> ApiResult<StatusCode> {
    service::mark_read(&ctx, user.id, id, body.seq).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn events(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Slice<Value>>> {
    let limit = domain::parse_limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(
            code::INVALID_QUERY,
            "after is a seq value (0 or more)",
        ));
    }
    let mut conn = ctx.db.pool().acquire().await?;
    access::member_access(&mut conn, id, user.id).await?;
    let mut rows = store::events(&mut *conn, id, after, None, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Json(Slice {
        items: rows.iter().map(|e| e.to_wire()).collect(),
        has_more,
    }))
}
