//! Access checks: who may see and act in a room. Used by the services and the send
//! writer alike, so it depends only on the store and the domain (imports run api →
//! service/writer → access → store/domain).

use axum::http::StatusCode;
use kit::ApiError;
use kit::error::code;
use uuid::Uuid;

use crate::domain::{Role, Room};
use crate::store;

pub fn room_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code::ROOM_NOT_FOUND, "no such room")
}

pub fn not_member() -> ApiError {
    ApiError::forbidden(code::NOT_MEMBER, "you are not a member of this room")
}

/// 403 `blocked`: one side of a DM blocks the other.
pub fn blocked() -> ApiError {
    ApiError::forbidden(code::BLOCKED, "one of you blocks the other")
}

/// The room and the caller's role in it. A private room the caller is not in does
/// not exist for them (404).
pub async fn access(
    conn: &mut sqlx::AnyConnection,
    room_id: Uuid,
    user: Uuid,
) -> Result<(Room, Option<Role>), ApiError> {
    let room = store::room(&mut *conn, room_id)
        .await?
        .ok_or_else(room_not_found)?;
    let role = store::role(&mut *conn, room_id, user).await?;
    if role.is_none() && !room.is_public() {
        return Err(room_not_found());
    }
    Ok((room, role))
}

/// Like [`access`], but the caller must be a member (403 `not_member` otherwise).
pub async fn member_access(
    conn: &mut sqlx::AnyConnection,
    room_id: Uuid,
    user: Uuid,
) -> Result<(Room, Role), ApiError> {
    let (room, role) = access(conn, room_id, user).await?;
    Ok((room, role.ok_or_else(not_member)?))
}

/// The role of `target` in `room_id`, or 404 `member_not_found`.
pub async fn member_role(
    conn: &mut sqlx::AnyConnection,
    room_id: Uuid,
    target: Uuid,
) -> Result<Role, ApiError> {
    store::role(conn, room_id, target).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::MEMBER_NOT_FOUND,
            "the user is not a member",
        )
    })
}
