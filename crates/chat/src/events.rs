//! Events the chat service publishes (source `chat`, through its outbox), and the
//! consumers of other services' events: `session.revoked` and `user.deleted` (auth) and
//! `user.blocked` / `user.unblocked` (users, with a one-time backfill of the blocks).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{self, Message};
use crate::fanout::Fanout;
use crate::store;
use crate::users_client;
use crate::writer::NotifyInfo;

pub const SOURCE: &str = "chat";

/// `chat.message.created`: a message was stored.
pub const MESSAGE_CREATED: &str = "chat.message.created";
/// `chat.message.updated`: its sender edited it (mentions re-resolved).
pub const MESSAGE_UPDATED: &str = "chat.message.updated";
/// `chat.message.deleted`: it became a tombstone.
pub const MESSAGE_DELETED: &str = "chat.message.deleted";
/// `chat.room.read` {room_id, user_id, seq}: a member's read marker moved forward.
pub const ROOM_READ: &str = "chat.room.read";

/// The payload of `chat.message.created`: what a consumer such as the notifications
/// service needs to decide whom to tell and what to show, without calling chat back.
/// The body itself stays in chat; `preview` is its first 140 characters.
#[derive(Serialize)]
pub struct MessageCreated<'a> {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_username: &'a str,
    /// `channel` or `dm`.
    pub room_kind: &'a str,
    /// The channel's name ("" for a DM).
    pub room_name: &'a str,
    /// Resolved mentions (room members; all of them for `@room` from the owner/an admin).
    pub mentioned_user_ids: &'a [Uuid],
    pub mentioned_room: bool,
    pub thread_root_id: Option<Uuid>,
    /// The author of the thread's root (told of replies in their thread).
    pub thread_root_sender_id: Option<Uuid>,
    pub reply_to: Option<Uuid>,
    pub reply_to_sender_id: Option<Uuid>,
    /// DM: the other member(s); empty for channels.
    pub recipient_ids: Vec<Uuid>,
    pub preview: String,
    pub created_at: &'a str,
    /// The files attached (the files service grants the room's members access to them).
    pub attachments: &'a [domain::Attachment],
}

impl MessageCreated<'_> {
    /// The event of a message stored by the send writer (`room`: what the writer read of
    /// the room in its transaction).
    pub fn envelope(
        m: &Message,
        room: Option<&store::SendRoom>,
        notify: &NotifyInfo,
    ) -> bus::Envelope {
        bus::Envelope::new(
            SOURCE,
            MESSAGE_CREATED,
            MessageCreated {
                message_id: m.id,
                room_id: m.room_id,
                seq: m.seq,
                sender_id: m.sender_id,
                sender_username: &notify.sender_username,
                room_kind: room.map_or("channel", |r| r.kind.as_str()),
                room_name: room.map_or("", |r| r.name.as_str()),
                mentioned_user_ids: &m.mentions,
                mentioned_room: notify.mentioned_room,
                thread_root_id: m.thread_root_id,
                thread_root_sender_id: notify.thread_root_sender_id,
                reply_to: m.reply_to,
                reply_to_sender_id: notify.reply_to_sender_id,
                recipient_ids: recipients(room.and_then(|r| r.dm_key.as_deref()), m.sender_id),
                preview: attachment_preview(m),
                created_at: &m.created_at,
                attachments: &m.attachments,
            },
        )
    }
}

/// The preview of a message: its body's, or for a message of attachments only their names
/// ("📎 a.png, b.pdf"), so a notification of it is not blank.
fn attachment_preview(m: &Message) -> String {
    if !m.body.is_empty() || m.attachments.is_empty() {
        return domain::preview(&m.body);
    }
    let names: Vec<&str> = m.attachments.iter().map(|a| a.filename.as_str()).collect();
    domain::preview(&format!("📎 {}", names.join(", ")))
}

/// The DM pair (`dm_key`) without the sender.
pub fn recipients(dm_key: Option<&str>, sender: Uuid) -> Vec<Uuid> {
    dm_key
        .map(|k| {
            k.split('|')
                .filter_map(|s| s.parse::<Uuid>().ok())
                .filter(|u| *u != sender)
                .collect()
        })
        .unwrap_or_default()
}

/// The payload of `chat.message.updated` (an edit by the sender).
#[derive(Serialize)]
pub struct MessageUpdated<'a> {
    pub message_id: Uuid,
    pub room_id: Uuid,
    /// The seq of the `message.updated` room event.
    pub seq: i64,
    pub sender_id: Uuid,
    pub room_kind: &'a str,
    pub room_name: &'a str,
    pub thread_root_id: Option<Uuid>,
    pub mentioned_user_ids: &'a [Uuid],
    /// Mentioned now but not before the edit (a notifications consumer tells only them)…
    pub added_mention_ids: Vec<Uuid>,
    /// …and no longer mentioned (their notification can be withdrawn).
    pub removed_mention_ids: Vec<Uuid>,
    pub recipient_ids: Vec<Uuid>,
    pub preview: String,
    pub edited_at: Option<&'a str>,
}

/// The payload of `chat.message.deleted`.
#[derive(Serialize)]
pub struct MessageDeleted<'a> {
    pub message_id: Uuid,
    pub room_id: Uuid,
    /// The seq of the `message.deleted` room event.
    pub seq: i64,
    pub sender_id: Uuid,
    /// The sender, or the owner/admin who removed it.
    pub deleted_by: Uuid,
    pub room_kind: &'a str,
    pub thread_root_id: Option<Uuid>,
    /// The files the message carried (the files service detaches them).
    pub attachment_ids: Vec<Uuid>,
}

// ---- events from other services ----------------------------------------------------

#[derive(Deserialize)]
struct SessionRevoked {
    session_id: Uuid,
    until: i64,
}

/// `session.revoked` (auth): reject the session's tokens and close its sockets — on every
/// node, through a broadcast subscription.
pub fn consume_auth_events(
    bus: &bus::Bus,
    verifier: Arc<token::Verifier>,
    fanout: Fanout,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    bus.subscribe_broadcast(
        bus::Broadcast::new("chat", &["auth"]),
        bus::handler(move |event: bus::Envelope| {
            let verifier = verifier.clone();
            let fanout = fanout.clone();
            async move {
                if event.kind == "session.revoked" {
                    let data: SessionRevoked = event.payload()?;
                    verifier.revoke_session(data.session_id, data.until);
                    fanout.hub.close_session(data.session_id);
                }
                Ok(())
            }
        }),
        shutdown,
    )
}

#[derive(Deserialize)]
struct UnreadCount {
    user_id: Uuid,
    unread_count: i64,
}

/// `notifications.unread_count` (notifications): `{"type": "notifications",
/// "unread_count"}` to the user's sockets on this node — on every node, through a
/// broadcast subscription (each node has its own sockets). Ephemeral like typing: a
/// client that is behind misses one and gets the next.
pub fn consume_notification_counts(
    bus: &bus::Bus,
    fanout: Fanout,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    bus.subscribe_broadcast(
        bus::Broadcast::new("chat-notifications", &["notifications"]),
        bus::handler(move |event: bus::Envelope| {
            let fanout = fanout.clone();
            async move {
                if event.kind == "notifications.unread_count"
                    && let Ok(c) = event.payload::<UnreadCount>()
                {
                    fanout.hub.to_user(
                        c.user_id,
                        serde_json::json!({"type": "notifications", "unread_count": c.unread_count}),
                    );
                }
                Ok(())
            }
        }),
        shutdown,
    )
}

// ---- blocks: chat's copy of the user service's ------------------------------------

/// Consumer group (and `processed_events` consumer) of chat on the bus.
pub const GROUP: &str = "chat";
/// `sync_state` name of the one-time block backfill.
const BLOCKS_BACKFILL: &str = "blocks-backfill";

#[derive(Deserialize)]
struct BlockChange {
    blocker_id: Uuid,
    blocked_id: Uuid,
}

/// `user.blocked` / `user.unblocked` (users) keep chat's `blocks` table, which the send
/// writer reads in its transaction. Each event is applied once (`begin_once`), and an
/// older event never overwrites a newer one (see `store::apply_block`).
pub fn consume_users_events(
    bus: &bus::Bus,
    ctx: crate::state::ApiContext,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    bus.subscribe(
        bus::Subscription::new(GROUP, &["users", "auth"]),
        bus::handler(move |event: bus::Envelope| {
            let ctx = ctx.clone();
            async move {
                let db = &ctx.db;
                let active = match (event.source.as_str(), event.kind.as_str()) {
                    ("users", "user.blocked") => true,
                    ("users", "user.unblocked") => false,
                    ("auth", "user.registered" | "user.updated") => {
                        return copy_username(db, &event).await;
                    }
                    ("auth", "user.deleted") => return forget_account(&ctx, &event).await,
                    _ => return Ok(()),
                };
                let change: BlockChange = match event.payload() {
                    Ok(c) => c,
                    Err(e) => {
                        // Retrying would never succeed and would hold up the events behind it.
                        tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "undecodable event skipped");
                        return Ok(());
                    }
                };
                let Some(mut tx) = bus::inbox::begin_once(db, GROUP, &event).await? else {
                    return Ok(());
                };
                store::apply_block(
                    tx.conn(),
                    change.blocker_id,
                    change.blocked_id,
                    active,
                    &event.id.to_string(),
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
        }),
        shutdown,
    )
}

#[derive(Deserialize)]
struct Deleted {
    user_id: Uuid,
}

/// `user.deleted` (auth): the account leaves every room it is in, each through the
/// ordinary leave (a `member.left` event with the room's next seq, fanned out; an owner
/// hands a channel to the longest-standing admin, else member — what Mattermost does
/// with a deactivated owner's channels and close to Matrix, where power passes to who
/// is left — so no channel stays without an owner while it has members). Then, in one
/// transaction with the inbox row, its messages get the tombstone sender and its
/// username copy goes ([`store::forget_sender`]). Its blocks leave chat's copy through
/// the users service's `user.unblocked` events; its sockets closed when auth revoked its
/// sessions (`session.revoked` comes first, from the same auth transaction), and its
/// presence then ends like any disconnect. A redelivery finds no membership and a
/// processed inbox row: nothing happens twice.
async fn forget_account(
    ctx: &crate::state::ApiContext,
    event: &bus::Envelope,
) -> anyhow::Result<()> {
    let user = match event.payload::<Deleted>() {
        Ok(d) => d.user_id,
        Err(e) => {
            tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "undecodable event skipped");
            return Ok(());
        }
    };
    for room in store::room_ids_of(ctx.db.pool(), user).await? {
        match crate::service::leave(ctx, user, room).await {
            Ok(()) => {}
            // Left meanwhile (a concurrent delivery): nothing to do.
            Err(e) if e.status.is_client_error() => {}
            Err(e) => return Err(anyhow::anyhow!("leaving room {room}: {e}")),
        }
    }
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let messages = store::forget_sender(tx.conn(), user).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user, messages, "deleted account removed from chat");
    Ok(())
}

#[derive(Deserialize)]
struct Identity {
    user_id: Uuid,
    username: String,
}

/// `user.registered` / `user.updated` (auth) into `usernames` (an upsert: redelivery is
/// harmless, and usernames never change once chosen).
async fn copy_username(db: &kit::db::Db, event: &bus::Envelope) -> anyhow::Result<()> {
    let identity: Identity = match event.payload() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "undecodable event skipped");
            return Ok(());
        }
    };
    // Through `Db::begin` (SQLite: the one writer at a time), like every write.
    let mut tx = db.begin().await?;
    store::upsert_usernames(tx.conn(), &[(identity.user_id, identity.username)]).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /internal/blocks` of the user service into `blocks`, once (blocks made before
/// chat consumed `user.blocked`).
pub struct BlocksBackfill;

impl kit::backfill::Job for BlocksBackfill {
    type Item = users_client::BlockEdge;

    fn name(&self) -> &'static str {
        BLOCKS_BACKFILL
    }

    fn path(&self) -> &'static str {
        "/internal/blocks"
    }

    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        items: Vec<users_client::BlockEdge>,
    ) -> anyhow::Result<()> {
        let edges: Vec<(Uuid, Uuid)> = items.iter().map(|e| (e.blocker_id, e.blocked_id)).collect();
        store::backfill_blocks(conn, &edges).await?;
        Ok(())
    }
}

/// `GET /internal/usernames` of the user service into `usernames`, once (accounts
/// registered before chat consumed `user.registered`).
pub struct UsernamesBackfill;

impl kit::backfill::Job for UsernamesBackfill {
    type Item = users_client::Username;

    fn name(&self) -> &'static str {
        "usernames-backfill"
    }

    fn path(&self) -> &'static str {
        "/internal/usernames"
    }

    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        items: Vec<users_client::Username>,
    ) -> anyhow::Result<()> {
        let rows: Vec<(Uuid, String)> =
            items.into_iter().map(|u| (u.user_id, u.username)).collect();
        store::upsert_usernames(conn, &rows).await?;
        Ok(())
    }
}
