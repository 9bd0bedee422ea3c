//! Rooms, membership and DMs.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use kit::ApiResult;
use kit::http::{Json, Path, Query};
use serde::Deserialize;
use token::AuthUser;
use uuid::Uuid;

use super::{Page, page, parse_cursor};
use crate::access;
use crate::domain::{self, Member, MyRoom, Room};
use crate::service;
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/chat/rooms", post(create).get(mine))
        .route("/chat/rooms/discover", get(discover))
        .route("/chat/rooms/{id}", get(show))
        .route("/chat/rooms/{id}/join", post(join))
        .route("/chat/rooms/{id}/leave", post(leave))
        .route("/chat/rooms/{id}/members", get(members).post(invite))
        .route(
            "/chat/rooms/{id}/members/{user_id}",
            delete(kick).patch(set_role),
        )
        .route("/chat/dms", post(open_dm))
}

#[derive(Deserialize)]
struct CreateRoom {
    name: String,
    visibility: String,
    topic: Option<String>,
}

async fn create(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Json(body): Json<CreateRoom>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let room = service::create_room(
        &ctx,
        user.id,
        &body.name,
        &body.visibility,
        body.topic.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(room)))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    #[serde(default)]
    q: String,
}

async fn mine(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<MyRoom>>> {
    let limit = domain::parse_limit(q.limit)?;
    let after = parse_cursor(q.cursor.as_deref())?;
    let mut conn = ctx.db.pool().acquire().await?;
    let rows = store::my_rooms(&mut *conn, user.id, after, limit + 1).await?;
    let mut items = Vec::with_capacity(rows.len());
    for (room, role, read_seq, unread_count) in rows {
        let last_message = if (items.len() as i64) < limit {
            store::last_message(&mut *conn, room.id).await?
        } else {
            None
        };
        items.push(MyRoom {
            room,
            role,
            read_seq,
            unread_count,
            last_message,
        });
    }
    // One reactions query for the page's last messages (not one per room).
    let mut last: Vec<domain::Message> = items
        .iter_mut()
        .filter_map(|r| r.last_message.take())
        .collect();
    store::reactions::attach(&mut conn, &mut last, Some(user.id)).await?;
    let mut by_room: std::collections::HashMap<Uuid, domain::Message> =
        last.into_iter().map(|m| (m.room_id, m)).collect();
    for r in &mut items {
        r.last_message = by_room.remove(&r.room.id);
    }
    Ok(Json(page(items, limit, |r| r.room.id)))
}

async fn discover(
    State(ctx): State<ApiContext>,
    _user: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Room>>> {
    let limit = domain::parse_limit(q.limit)?;
    let after = parse_cursor(q.cursor.as_deref())?;
    if q.q.chars().count() > domain::MAX_NAME_CHARS {
        return Err(kit::ApiError::validation("q", "is too long"));
    }
    let rooms = store::discover(ctx.db.pool(), q.q.trim(), after, limit + 1).await?;
    Ok(Json(page(rooms, limit, |r| r.id)))
}

async fn show(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Room>> {
    let mut conn = ctx.db.pool().acquire().await?;
    let (room, _) = access::access(&mut conn, id, user.id).await?;
    Ok(Json(room))
}

async fn join(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Room>> {
    Ok(Json(service::join(&ctx, user.id, id).await?))
}

async fn leave(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::leave(&ctx, user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Member>>> {
    let limit = domain::parse_limit(q.limit)?;
    let after = parse_cursor(q.cursor.as_deref())?;
    let mut conn = ctx.db.pool().acquire().await?;
    access::member_access(&mut conn, id, user.id).await?;
    let rows = store::members(&mut *conn, id, after, limit + 1).await?;
    Ok(Json(page(rows, limit, |m| m.user_id)))
}

#[derive(Deserialize)]
struct UserRef {
    user_id: Uuid,
}

async fn invite(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<UserRef>,
) -> ApiResult<StatusCode> {
    service::invite(&ctx, user.id, id, body.user_id).await?;
    Ok(StatusCode::CREATED)
}

async fn kick(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, target)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    service::kick(&ctx, user.id, id, target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RoleChange {
    role: String,
}

async fn set_role(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path((id, target)): Path<(Uuid, Uuid)>,
    Json(body): Json<RoleChange>,
) -> ApiResult<StatusCode> {
    service::set_role(&ctx, user.id, id, target, &body.role).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn open_dm(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Json(body): Json<UserRef>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let (room, created) = service::open_dm(&ctx, user.id, body.user_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(room)))
}
