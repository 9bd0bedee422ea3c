//! The state changes of the chat service, shared by the HTTP routes and the WebSocket.
//! Each runs in one transaction that also appends the room events (with the room's next
//! seqs); the events are handed to the fan-out only after commit.

use axum::http::StatusCode;
use kit::ApiError;
use kit::db::{Tx, is_unique_violation};
use kit::error::code;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::access::{blocked, member_access, member_role, room_not_found};
use crate::domain::{self, Message, Role, Room, RoomEvent, kinds};
use crate::events;
use crate::state::ApiContext;
use crate::store;

pub mod reactions;

fn user_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code::USER_NOT_FOUND, "no such user")
}

fn message_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        code::MESSAGE_NOT_FOUND,
        "no such message",
    )
}

/// Appends a room event with the room's next seq, inside `tx`.
async fn append(
    tx: &mut Tx,
    room: Uuid,
    kind: &str,
    payload: Value,
    message_id: Option<Uuid>,
) -> Result<RoomEvent, sqlx::Error> {
    let seq = store::next_seq(tx.conn(), room).await?;
    let event = RoomEvent {
        room_id: room,
        seq,
        kind: kind.to_owned(),
        created_at: kit::time::now_ms(),
        payload,
    };
    store::insert_event(tx.conn(), &event, message_id).await?;
    Ok(event)
}

/// Adds `user` to `room` with `role` and appends their `member.joined` event (with
/// `invited_by` when someone else added them), inside `tx`. None: they already were a
/// member, and nothing is appended.
async fn add_member(
    tx: &mut Tx,
    room: Uuid,
    user: Uuid,
    role: Role,
    invited_by: Option<Uuid>,
) -> Result<Option<RoomEvent>, sqlx::Error> {
    if !store::add_member(tx.conn(), room, user, role, kit::time::now_ms()).await? {
        return Ok(None);
    }
    let mut payload = json!({"user_id": user, "role": role.as_str()});
    if let Some(inviter) = invited_by {
        payload["invited_by"] = json!(inviter);
    }
    append(tx, room, kinds::MEMBER_JOINED, payload, None)
        .await
        .map(Some)
}

/// Commits, then fans the events out (never before: only durable events are announced).
async fn commit(ctx: &ApiContext, tx: Tx, events: Vec<RoomEvent>) -> Result<(), ApiError> {
    tx.commit().await?;
    // On its own task: a client that hangs up drops this handler's future, but what was
    // committed must still be announced.
    let fanout = ctx.fanout.clone();
    let _ = tokio::spawn(async move { fanout.publish(events).await }).await;
    Ok(())
}

/// The caller's send budget: Err(milliseconds to wait) when over the limit.
pub fn check_send_rate(ctx: &ApiContext, user: Uuid) -> Result<(), u64> {
    ctx.send_limit
        .check(user)
        .map_err(|wait| (wait.as_millis() as u64).max(1))
}

// ---- rooms -------------------------------------------------------------------------

pub async fn create_room(
    ctx: &ApiContext,
    owner: Uuid,
    name: &str,
    visibility: &str,
    topic: Option<&str>,
) -> Result<Room, ApiError> {
    let mut errors = Vec::new();
    let name = domain::parse_name(name).map_err(|e| errors.extend(e.errors));
    let visibility = domain::parse_visibility(visibility).map_err(|e| errors.extend(e.errors));
    let topic = domain::parse_topic(topic).map_err(|e| errors.extend(e.errors));
    let (Ok(name), Ok(visibility), Ok(topic)) = (name, visibility, topic) else {
        return Err(ApiError::validation_many(errors));
    };
    let id = Uuid::now_v7();
    let mut tx = ctx.db.begin().await?;
    store::insert_room(
        tx.conn(),
        &store::NewRoom {
            id,
            kind: "channel",
            name: &name,
            topic: &topic,
            visibility,
            owner_id: owner,
            dm_key: None,
            created_at: kit::time::now_ms(),
        },
    )
    .await?;
    let joined = add_member(&mut tx, id, owner, Role::Owner, None).await?;
    let room = store::room(tx.conn(), id)
        .await?
        .ok_or_else(|| ApiError::internal("room vanished"))?;
    commit(ctx, tx, joined.into_iter().collect()).await?;
    Ok(room)
}

/// Joins a public room (idempotent: a member gets the room again, no new event).
pub async fn join(ctx: &ApiContext, user: Uuid, room_id: Uuid) -> Result<Room, ApiError> {
    let mut tx = ctx.db.begin().await?;
    let (room, role) = crate::access::access(tx.conn(), room_id, user).await?;
    if role.is_some() {
        return Ok(room);
    }
    if !room.is_public() || room.is_dm() {
        return Err(room_not_found());
    }
    let events: Vec<RoomEvent> = add_member(&mut tx, room_id, user, Role::Member, None)
        .await?
        .into_iter()
        .collect();
    let room = store::room(tx.conn(), room_id)
        .await?
        .ok_or_else(room_not_found)?;
    commit(ctx, tx, events).await?;
    Ok(room)
}

/// Leaves a room. An owner who leaves hands the room to the longest-standing admin
/// (else member), so a channel never stays without an owner while it has members.
pub async fn leave(ctx: &ApiContext, user: Uuid, room_id: Uuid) -> Result<(), ApiError> {
    let mut tx = ctx.db.begin().await?;
    let (room, role) = member_access(tx.conn(), room_id, user).await?;
    store::remove_member(tx.conn(), room_id, user).await?;
    let mut events = vec![
        append(
            &mut tx,
            room_id,
            kinds::MEMBER_LEFT,
            json!({"user_id": user}),
            None,
        )
        .await?,
    ];
    if role == Role::Owner
        && !room.is_dm()
        && let Some(next) = store::successor(tx.conn(), room_id).await?
    {
        store::set_role(tx.conn(), room_id, next, Role::Owner).await?;
        store::set_owner(tx.conn(), room_id, next).await?;
        events.push(
            append(
                &mut tx,
                room_id,
                kinds::MEMBER_ROLE_CHANGED,
                json!({"user_id": next, "role": "owner"}),
                None,
            )
            .await?,
        );
    }
    commit(ctx, tx, events).await
}

/// Adds `target` to a channel (owner/admin only; refused when the invitee blocks the
/// inviter — asked of the user service, 503 when it cannot answer).
pub async fn invite(
    ctx: &ApiContext,
    inviter: Uuid,
    room_id: Uuid,
    target: Uuid,
) -> Result<(), ApiError> {
    {
        let mut conn = ctx.db.pool().acquire().await?;
        let (room, role) = member_access(&mut conn, room_id, inviter).await?;
        check_can_add(&room, role, inviter, target)?;
        if store::role(&mut *conn, room_id, target).await?.is_some() {
            return Err(ApiError::conflict(
                code::ALREADY_MEMBER,
                "the user is already a member",
            ));
        }
    }
    let flags = ctx.users.relationship(target, inviter).await?;
    if !flags.a_exists {
        return Err(user_not_found());
    }
    if flags.a_blocks_b {
        return Err(ApiError::forbidden(
            code::BLOCKED,
            "this user does not accept invitations from you",
        ));
    }
    let mut tx = ctx.db.begin().await?;
    // Checked again inside the transaction: roles may have changed meanwhile.
    let (room, role) = member_access(tx.conn(), room_id, inviter).await?;
    check_can_add(&room, role, inviter, target)?;
    let Some(event) = add_member(&mut tx, room_id, target, Role::Member, Some(inviter)).await?
    else {
        return Err(ApiError::conflict(
            code::ALREADY_MEMBER,
            "the user is already a member",
        ));
    };
    commit(ctx, tx, vec![event]).await
}

fn check_can_add(room: &Room, role: Role, inviter: Uuid, target: Uuid) -> Result<(), ApiError> {
    if room.is_dm() {
        return Err(ApiError::bad_request(
            code::NOT_A_CHANNEL,
            "members cannot be added to a direct conversation",
        ));
    }
    if !role.can_moderate() {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "only the owner or an admin may add members",
        ));
    }
    if inviter == target {
        return Err(ApiError::validation("user_id", "you are already a member"));
    }
    Ok(())
}

/// Removes `target` (owner/admin only; nobody removes the owner, admins remove members).
pub async fn kick(
    ctx: &ApiContext,
    actor: Uuid,
    room_id: Uuid,
    target: Uuid,
) -> Result<(), ApiError> {
    let mut tx = ctx.db.begin().await?;
    let (room, role) = member_access(tx.conn(), room_id, actor).await?;
    if room.is_dm() || !role.can_moderate() {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "only the owner or an admin may remove members",
        ));
    }
    if actor == target {
        return Err(ApiError::bad_request(
            code::USE_LEAVE,
            "to remove yourself, leave the room",
        ));
    }
    let target_role = member_role(tx.conn(), room_id, target).await?;
    if target_role == Role::Owner || (role == Role::Admin && target_role == Role::Admin) {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "you may not remove this member",
        ));
    }
    store::remove_member(tx.conn(), room_id, target).await?;
    let event = append(
        &mut tx,
        room_id,
        kinds::MEMBER_REMOVED,
        json!({"user_id": target, "by": actor}),
        None,
    )
    .await?;
    commit(ctx, tx, vec![event]).await
}

/// Owner only: makes a member an admin or an admin a member.
pub async fn set_role(
    ctx: &ApiContext,
    actor: Uuid,
    room_id: Uuid,
    target: Uuid,
    new_role: &str,
) -> Result<(), ApiError> {
    let new_role = match new_role {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => {
            return Err(ApiError::validation(
                "role",
                "must be \"admin\" or \"member\"",
            ));
        }
    };
    let mut tx = ctx.db.begin().await?;
    let (room, role) = member_access(tx.conn(), room_id, actor).await?;
    if room.is_dm() || role != Role::Owner {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "only the owner may change roles",
        ));
    }
    let current = member_role(tx.conn(), room_id, target).await?;
    if current == Role::Owner {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "the owner's role cannot be changed",
        ));
    }
    if current == new_role {
        return Ok(());
    }
    store::set_role(tx.conn(), room_id, target, new_role).await?;
    let event = append(
        &mut tx,
        room_id,
        kinds::MEMBER_ROLE_CHANGED,
        json!({"user_id": target, "role": new_role.as_str()}),
        None,
    )
    .await?;
    commit(ctx, tx, vec![event]).await
}

/// The DM room of the pair: created on first use (201), the same room afterwards (200).
/// Both sides are (again) members — only when neither blocks the other (403 `blocked`,
/// nobody added); 404 `user_not_found` for an id the user service does not know.
pub async fn open_dm(ctx: &ApiContext, user: Uuid, other: Uuid) -> Result<(Room, bool), ApiError> {
    if user == other {
        return Err(ApiError::validation(
            "user_id",
            "a direct conversation needs another user",
        ));
    }
    let flags = ctx.users.relationship(user, other).await?;
    if !flags.b_exists {
        return Err(user_not_found());
    }
    // Checked before anyone is (re-)added: after a block neither side can reopen the DM,
    // and a member who left is not brought back (as Matrix and Mattermost refuse a DM
    // with someone who ignores/blocks you).
    if flags.a_blocks_b || flags.b_blocks_a {
        return Err(blocked());
    }
    let key = domain::dm_key(user, other);
    // Two attempts: a concurrent creator may win the unique dm_key between our look-up
    // and insert; the second attempt then finds its room.
    for _ in 0..2 {
        let mut tx = ctx.db.begin().await?;
        let existing = store::room_by_dm_key(tx.conn(), &key).await?;
        let (room_id, created) = match existing {
            Some(room) => (room.id, false),
            None => {
                let id = Uuid::now_v7();
                let inserted = store::insert_room(
                    tx.conn(),
                    &store::NewRoom {
                        id,
                        kind: "dm",
                        name: "",
                        topic: "",
                        visibility: "private",
                        owner_id: user,
                        dm_key: Some(&key),
                        created_at: kit::time::now_ms(),
                    },
                )
                .await;
                match inserted {
                    Ok(()) => (id, true),
                    Err(e) if is_unique_violation(&e) => {
                        drop(tx);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut events = Vec::new();
        for member in [user, other] {
            events.extend(add_member(&mut tx, room_id, member, Role::Member, None).await?);
        }
        let room = store::room(tx.conn(), room_id)
            .await?
            .ok_or_else(room_not_found)?;
        commit(ctx, tx, events).await?;
        return Ok((room, created));
    }
    Err(ApiError::internal("DM creation raced twice"))
}

// ---- messages ----------------------------------------------------------------------

/// A DM's other member (empty for channels), for the bus events.
async fn dm_recipients(tx: &mut Tx, room: &Room, sender: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    if !room.is_dm() {
        return Ok(Vec::new());
    }
    let mut ids = store::member_ids(tx.conn(), room.id).await?;
    ids.retain(|u| *u != sender);
    Ok(ids)
}

pub struct SendInput<'a> {
    pub room_id: Uuid,
    pub body: &'a str,
    pub client_msg_id: Option<&'a str>,
    pub reply_to: Option<Uuid>,
    pub thread_root_id: Option<Uuid>,
    /// Files the sender uploaded to the files service (≤ 10, distinct).
    pub attachment_ids: &'a [Uuid],
    /// The sender's username (from the access token), for the bus event.
    pub sender_username: &'a str,
}

/// Stores a message (after the caller checked the rate limit). Returns the message and
/// whether it was created now (false: the same `client_msg_id` was sent before).
///
/// The write goes through the group-commit [`crate::writer`], which checks membership
/// and looks up `client_msg_id` in its transaction, for the whole batch at once; this
/// returns once the message is committed.
pub async fn send_message(
    ctx: &ApiContext,
    sender: Uuid,
    input: SendInput<'_>,
) -> Result<(Message, bool), ApiError> {
    queue_message(ctx, sender, input).await?.stored().await
}

fn invalid_thread() -> ApiError {
    ApiError::bad_request(
        code::INVALID_THREAD,
        "thread_root_id must be a top-level message of this room",
    )
}

/// Checks a send and queues it for the writer without waiting for the commit: a
/// connection that queues its sends one after the other gets them stored in that order
/// (see [`crate::writer::Writer::enqueue`]).
///
/// Most sends (no reply, no thread, no `@`, no attachment) need nothing from the database
/// or another service here; the others read what they refer to and resolve mentions
/// against the room's members, one send at a time (messages never change rooms, members
/// may: the writer re-checks the sender's membership in its transaction), and ask the
/// files service whether the attachments are the sender's uploads.
pub async fn queue_message(
    ctx: &ApiContext,
    sender: Uuid,
    input: SendInput<'_>,
) -> Result<crate::writer::Pending, ApiError> {
    let attachment_ids = domain::parse_attachment_ids(input.attachment_ids)?;
    let body = domain::parse_send_body(input.body, !attachment_ids.is_empty())?;
    let client_msg_id = domain::parse_client_msg_id(input.client_msg_id)?;
    let room_id = input.room_id;
    let tokens = if body.contains('@') {
        domain::mention_tokens(&body)
    } else {
        domain::MentionTokens::default()
    };
    let mut send = crate::writer::NewSend {
        room_id,
        client_msg_id,
        reply_to: input.reply_to,
        thread_root_id: input.thread_root_id,
        notify: crate::writer::NotifyInfo {
            sender_username: input.sender_username.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    if input.reply_to.is_some()
        || input.thread_root_id.is_some()
        || !tokens.usernames.is_empty()
        || tokens.room
    {
        let mut conn = ctx.db.pool().acquire().await?;
        let (_, role) = member_access(&mut conn, room_id, sender).await?;
        if let Some(reply_to) = input.reply_to {
            let target = store::message(&mut *conn, reply_to)
                .await?
                .filter(|m| m.room_id == room_id)
                .ok_or_else(|| {
                    ApiError::validation("reply_to", "must be a message of this room")
                })?;
            send.notify.reply_to_sender_id = Some(target.sender_id);
        }
        if let Some(root) = input.thread_root_id {
            let root = store::message(&mut *conn, root)
                .await?
                .filter(|m| m.room_id == room_id && m.thread_root_id.is_none())
                .ok_or_else(invalid_thread)?;
            send.notify.thread_root_sender_id = Some(root.sender_id);
        }
        let everyone = tokens.room && role.can_moderate();
        send.notify.mentioned_room = everyone;
        send.mentions = mentions(&mut conn, room_id, sender, &tokens, everyone).await?;
    }
    if !attachment_ids.is_empty() {
        let found = ctx.files.lookup(sender, &attachment_ids).await?;
        send.attachments = domain::order_attachments(&attachment_ids, found)?;
    }
    send.body = body;
    ctx.writer.enqueue(sender, send).await
}

/// The members a body mentions, without the sender.
async fn mentions(
    conn: &mut sqlx::AnyConnection,
    room: Uuid,
    sender: Uuid,
    tokens: &domain::MentionTokens,
    everyone: bool,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if tokens.usernames.is_empty() && !everyone {
        return Ok(Vec::new());
    }
    let mut ids = store::resolve_mentions(conn, room, &tokens.usernames, everyone).await?;
    ids.retain(|u| *u != sender);
    Ok(ids)
}

/// The replies in the thread of `root_id` (a top-level message of the room; members only).
pub async fn thread(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    root_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<(Vec<Message>, bool), ApiError> {
    let mut conn = ctx.db.pool().acquire().await?;
    member_access(&mut conn, room_id, user).await?;
    store::message(&mut *conn, root_id)
        .await?
        .filter(|m| m.room_id == room_id && m.thread_root_id.is_none())
        .ok_or_else(message_not_found)?;
    let (mut items, has_more) = store::thread(&mut *conn, root_id, after, limit).await?;
    store::reactions::attach(&mut conn, &mut items, Some(user)).await?;
    Ok((items, has_more))
}

/// The message `id` of `room_id`, with the caller's role (membership required).
async fn message_in_room(
    tx: &mut Tx,
    room_id: Uuid,
    id: Uuid,
    user: Uuid,
) -> Result<(Message, Room, Role), ApiError> {
    let (room, role) = member_access(tx.conn(), room_id, user).await?;
    let message = store::message(tx.conn(), id)
        .await?
        .filter(|m| m.room_id == room_id)
        .ok_or_else(message_not_found)?;
    Ok((message, room, role))
}

pub async fn edit_message(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    id: Uuid,
    body: &str,
) -> Result<Message, ApiError> {
    let body = domain::parse_body(body)?;
    let mut tx = ctx.db.begin().await?;
    let (mut message, room, role) = message_in_room(&mut tx, room_id, id, user).await?;
    if message.sender_id != user {
        return Err(ApiError::forbidden(
            code::NOT_SENDER,
            "only the sender may edit a message",
        ));
    }
    if message.deleted {
        return Err(ApiError::conflict(
            code::MESSAGE_DELETED,
            "the message was deleted",
        ));
    }
    // An edit puts new text in front of the other member as a send does (deleting one's
    // own message stays possible).
    if store::dm_blocked(tx.conn(), room_id).await? {
        return Err(blocked());
    }
    let now = kit::time::now_ms();
    // Mentions are resolved again against today's members: an edit that adds `@bob`
    // mentions bob; one that removes him withdraws it.
    let tokens = domain::mention_tokens(&body);
    let everyone = tokens.room && role.can_moderate();
    let mentioned = mentions(tx.conn(), room_id, user, &tokens, everyone).await?;
    let added: Vec<Uuid> = mentioned
        .iter()
        .filter(|u| !message.mentions.contains(u))
        .copied()
        .collect();
    let removed: Vec<Uuid> = message
        .mentions
        .iter()
        .filter(|u| !mentioned.contains(u))
        .copied()
        .collect();
    store::update_message(tx.conn(), id, &body, Some(now), false, &mentioned).await?;
    message.body = body;
    store::search::reindex(tx.conn(), &message).await?;
    message.edited_at = Some(kit::time::rfc3339(now));
    message.mentions = mentioned;
    store::reactions::attach(tx.conn(), std::slice::from_mut(&mut message), Some(user)).await?;
    let event = append(
        &mut tx,
        room_id,
        kinds::MESSAGE_UPDATED,
        json!({ "message": message.for_event() }),
        Some(id),
    )
    .await?;
    let envelope = bus::Envelope::new(
        events::SOURCE,
        events::MESSAGE_UPDATED,
        events::MessageUpdated {
            message_id: id,
            room_id,
            seq: event.seq,
            sender_id: message.sender_id,
            room_kind: &room.kind,
            room_name: &room.name,
            thread_root_id: message.thread_root_id,
            mentioned_user_ids: &message.mentions,
            added_mention_ids: added,
            removed_mention_ids: removed,
            recipient_ids: dm_recipients(&mut tx, &room, message.sender_id).await?,
            preview: domain::preview(&message.body),
            edited_at: message.edited_at.as_deref(),
        },
    );
    bus::outbox::enqueue(&mut tx, &envelope).await?;
    commit(ctx, tx, vec![event]).await?;
    ctx.outbox.wake();
    Ok(message)
}

/// Deletes as a tombstone (idempotent). The body also disappears from earlier events.
pub async fn delete_message(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = ctx.db.begin().await?;
    let (mut message, room, role) = message_in_room(&mut tx, room_id, id, user).await?;
    if message.sender_id != user && !role.can_moderate() {
        return Err(ApiError::forbidden(
            code::FORBIDDEN,
            "only the sender or the room's owner or admins may delete a message",
        ));
    }
    if message.deleted {
        return Ok(());
    }
    store::update_message(tx.conn(), id, "", None, true, &[]).await?;
    store::search::unindex(tx.conn(), id).await?;
    let attachment_ids: Vec<Uuid> = message.attachments.iter().map(|a| a.id).collect();
    if !attachment_ids.is_empty() {
        store::clear_attachments(tx.conn(), id).await?;
    }
    message.body = String::new();
    message.deleted = true;
    message.edited_at = None;
    message.mentions = Vec::new();
    message.attachments = Vec::new();
    let mut events: Vec<RoomEvent> = reactions::forget_deleted(&mut tx, &mut message, user)
        .await?
        .into_iter()
        .collect();
    let payload = json!({ "message": message });
    store::scrub_message_events(tx.conn(), id, &payload).await?;
    let deleted = append(&mut tx, room_id, kinds::MESSAGE_DELETED, payload, Some(id)).await?;
    let envelope = bus::Envelope::new(
        events::SOURCE,
        events::MESSAGE_DELETED,
        events::MessageDeleted {
            message_id: id,
            room_id,
            seq: deleted.seq,
            sender_id: message.sender_id,
            deleted_by: user,
            room_kind: &room.kind,
            thread_root_id: message.thread_root_id,
            attachment_ids,
        },
    );
    bus::outbox::enqueue(&mut tx, &envelope).await?;
    events.push(deleted);
    commit(ctx, tx, events).await?;
    ctx.outbox.wake();
    Ok(())
}

pub async fn mark_read(
    ctx: &ApiContext,
    user: Uuid,
    room_id: Uuid,
    seq: i64,
) -> Result<(), ApiError> {
    if seq < 0 {
        return Err(ApiError::validation("seq", "must not be negative"));
    }
    let mut tx = ctx.db.begin().await?;
    member_access(tx.conn(), room_id, user).await?;
    let moved = store::mark_read(tx.conn(), room_id, user, seq, kit::time::now_ms()).await?;
    // No receipt across a block (as typing): a DM whose members block each other.
    let quiet = moved.is_none() || store::dm_blocked(tx.conn(), room_id).await?;
    if let Some(seq) = moved {
        // For the notifications service: reading a room reads its notifications up to seq.
        let envelope = bus::Envelope::new(
            events::SOURCE,
            events::ROOM_READ,
            json!({"room_id": room_id, "user_id": user, "seq": seq}),
        );
        bus::outbox::enqueue(&mut tx, &envelope).await?;
    }
    tx.commit().await?;
    if moved.is_some() {
        ctx.outbox.wake();
    }
    if let Some(seq) = moved
        && !quiet
    {
        ctx.fanout.read(room_id, user, seq);
    }
    Ok(())
}
