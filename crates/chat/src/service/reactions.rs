//! Reactions, pins and read receipts (chat v1.1). Each change appends its room event
//! with the room's next seq inside the change's transaction and fans it out after
//! commit (the parent's `append` and `commit`), exactly like edits. Repeating a change
//! (reacting twice, pinning a pinned message, removing what is absent) appends nothing.

use kit::ApiError;
use kit::db::Tx;
use kit::error::code;
use serde_json::json;
use uuid::Uuid;

use super::{append, commit, message_in_room, message_not_found};
use crate::access::{blocked, member_access};
use crate::domain::{self, Message, RoomEvent, kinds};
use crate::state::ApiContext;
use crate::store;

fn message_deleted() -> ApiError {
    ApiError::conflict(code::MESSAGE_DELETED, "the message was deleted")
}

/// Adds the caller's reaction (idempotent).
pub async fn react(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    message_id: Uuid,
    emoji: &str,
) -> Result<(), ApiError> {
    let emoji = domain::parse_emoji(emoji)?;
    let mut tx = ctx.db.begin().await?;
    let (message, _, _) = message_in_room(&mut tx, room_id, message_id, user).await?;
    if message.deleted {
        return Err(message_deleted());
    }
    // A reaction puts something in front of the other member, as an edit does.
    if store::dm_blocked(tx.conn(), room_id).await? {
        return Err(blocked());
    }
    let now = kit::time::now_ms();
    if !store::reactions::add(tx.conn(), message_id, emoji, user, now).await? {
        return Ok(());
    }
    let event = append(
        &mut tx,
        room_id,
        kinds::REACTION_ADDED,
        json!({"message_id": message_id, "emoji": emoji, "user_id": user}),
        None,
    )
    .await?;
    // Counted after `append` took the room's row lock (PostgreSQL; SQLite's write lock):
    // two new emoji racing at 19 are counted one after the other, and the second sees
    // the first committed, so the limit holds under concurrency.
    let distinct = store::reactions::distinct_emoji(tx.conn(), message_id).await?;
    if distinct > domain::MAX_REACTIONS_PER_MESSAGE {
        return Err(ApiError::conflict(
            code::TOO_MANY_REACTIONS,
            format!(
                "a message carries at most {} distinct emoji",
                domain::MAX_REACTIONS_PER_MESSAGE
            ),
        ));
    }
    commit(ctx, tx, vec![event]).await
}

/// Removes the caller's own reaction (idempotent; on a deleted message there is none).
pub async fn unreact(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    message_id: Uuid,
    emoji: &str,
) -> Result<(), ApiError> {
    let emoji = domain::parse_emoji(emoji)?;
    let mut tx = ctx.db.begin().await?;
    message_in_room(&mut tx, room_id, message_id, user).await?;
    if !store::reactions::remove(tx.conn(), message_id, emoji, user).await? {
        return Ok(());
    }
    let event = append(
        &mut tx,
        room_id,
        kinds::REACTION_REMOVED,
        json!({"message_id": message_id, "emoji": emoji, "user_id": user}),
        None,
    )
    .await?;
    commit(ctx, tx, vec![event]).await
}

/// Who reacted with what (members only): per emoji, by first reaction time, the users.
pub async fn who_reacted(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    message_id: Uuid,
) -> Result<Vec<(String, Vec<Uuid>)>, ApiError> {
    let mut conn = ctx.db.pool().acquire().await?;
    member_access(&mut conn, room_id, user).await?;
    let message = store::message(&mut *conn, message_id)
        .await?
        .filter(|m| m.room_id == room_id)
        .ok_or_else(message_not_found)?;
    if message.deleted {
        return Ok(Vec::new());
    }
    Ok(store::reactions::who(&mut *conn, message_id).await?)
}

/// The message to pin or unpin, after the role check: owner/admin in channels; in a DM
/// both members (their role is "member"), as Mattermost and Matrix let DM members pin.
async fn pin_target(
    tx: &mut Tx,
    user: Uuid,
    room_id: Uuid,
    message_id: Uuid,
) -> Result<(Message, bool), ApiError> {
    let (room, role) = member_access(tx.conn(), room_id, user).await?;
    if !room.is_dm() && !role.can_moderate() {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "only the owner or an admin may pin or unpin messages",
        ));
    }
    let message = store::message(tx.conn(), message_id)
        .await?
        .filter(|m| m.room_id == room_id)
        .ok_or_else(message_not_found)?;
    Ok((message, room.is_dm()))
}

pub async fn pin(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    message_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = ctx.db.begin().await?;
    let (message, is_dm) = pin_target(&mut tx, user, room_id, message_id).await?;
    if message.deleted {
        return Err(message_deleted());
    }
    if is_dm && store::dm_blocked(tx.conn(), room_id).await? {
        return Err(blocked());
    }
    let now = kit::time::now_ms();
    if !store::reactions::pin(tx.conn(), message_id, user, now).await? {
        return Ok(());
    }
    let event = append(
        &mut tx,
        room_id,
        kinds::MESSAGE_PINNED,
        json!({"message_id": message_id, "user_id": user}),
        None,
    )
    .await?;
    // After the room lock, as for the reaction limit: concurrent pins count in turn.
    if store::reactions::pin_count(tx.conn(), room_id).await? > domain::MAX_PINS_PER_ROOM {
        return Err(ApiError::conflict(
            code::PIN_LIMIT,
            format!(
                "a room has at most {} pinned messages",
                domain::MAX_PINS_PER_ROOM
            ),
        ));
    }
    commit(ctx, tx, vec![event]).await
}

pub async fn unpin(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    message_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = ctx.db.begin().await?;
    pin_target(&mut tx, user, room_id, message_id).await?;
    if !store::reactions::unpin(tx.conn(), message_id).await? {
        return Ok(());
    }
    let event = unpinned(&mut tx, room_id, message_id, user).await?;
    commit(ctx, tx, vec![event]).await
}

async fn unpinned(
    tx: &mut Tx,
    room_id: Uuid,
    message_id: Uuid,
    user: Uuid,
) -> Result<RoomEvent, sqlx::Error> {
    append(
        tx,
        room_id,
        kinds::MESSAGE_UNPINNED,
        json!({"message_id": message_id, "user_id": user}),
        None,
    )
    .await
}

/// Inside a delete's transaction: the message loses its reactions and its pin; returns
/// the `message.unpinned` event when it was pinned (pin lists follow the events).
pub(super) async fn forget_deleted(
    tx: &mut Tx,
    message: &mut Message,
    user: Uuid,
) -> Result<Option<RoomEvent>, sqlx::Error> {
    store::reactions::remove_all(tx.conn(), message.id).await?;
    message.reactions.clear();
    message.pinned = false;
    if !store::reactions::unpin(tx.conn(), message.id).await? {
        return Ok(None);
    }
    unpinned(tx, message.room_id, message.id, user)
        .await
        .map(Some)
}

/// The room's pins, newest first, with reactions for the caller (members only).
pub async fn pins(ctx: &ApiContext, user: Uuid, room_id: Uuid) -> Result<Vec<Message>, ApiError> {
    let mut conn = ctx.db.pool().acquire().await?;
    member_access(&mut conn, room_id, user).await?;
    let mut items = store::reactions::pins(&mut *conn, room_id).await?;
    store::reactions::attach(&mut conn, &mut items, Some(user)).await?;
    Ok(items)
}

/// Every member's read marker (members only): `(user_id, seq, updated_at ms)`.
pub async fn read_markers(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
) -> Result<Vec<(Uuid, i64, Option<i64>)>, ApiError> {
    let mut conn = ctx.db.pool().acquire().await?;
    member_access(&mut conn, room_id, user).await?;
    Ok(store::reactions::read_markers(&mut *conn, room_id).await?)
}
