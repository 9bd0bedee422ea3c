//! Events: the ones this service consumes (consumer group [`GROUP`]) and the one it
//! publishes (source [`SOURCE`], through its outbox).
//!
//! Every effect runs in one transaction with its `processed_events` row
//! (`bus::inbox::begin_once`), so a redelivered event is applied once; the unique
//! `(user_id, message_id)` key would keep one notification per recipient and message
//! even without it. Every change of a user's unread count enqueues
//! `notifications.unread_count` in the same transaction.

use std::collections::{BTreeSet, HashMap};

use bus::{Envelope, Subscription};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{Kind, Level};
use crate::rules::{self, Addressing, Facts};
use crate::state::ApiContext;
use crate::store::{self, copies, notifications, settings};

/// Source name of the events this service publishes.
pub const SOURCE: &str = "notifications";
/// Consumer group of this service on the bus (and its `processed_events` consumer).
pub const GROUP: &str = "notifications";
/// `notifications.unread_count` `{user_id, unread_count}`.
pub const UNREAD_COUNT: &str = "notifications.unread_count";

/// The event telling chat (and through it the user's sockets) a user's new unread count.
pub fn unread_count(user: Uuid, count: i64) -> Envelope {
    Envelope::new(
        SOURCE,
        UNREAD_COUNT,
        serde_json::json!({ "user_id": user, "unread_count": count }),
    )
}

/// Enqueues `notifications.unread_count` for each of `users` with its count as of `tx`:
/// one count query per 1,000 users and one outbox insert (PostgreSQL; 200 rows a
/// statement on SQLite), whatever the number of users.
pub async fn enqueue_counts(
    tx: &mut kit::db::Tx,
    users: &BTreeSet<Uuid>,
) -> Result<(), sqlx::Error> {
    if users.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = users.iter().copied().collect();
    let counts = notifications::unread_counts(tx.conn(), &users).await?;
    let events: Vec<Envelope> = users
        .iter()
        .map(|u| unread_count(*u, counts.get(u).copied().unwrap_or(0)))
        .collect();
    bus::outbox::enqueue_many(tx.conn(), &events).await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Created {
    message_id: Uuid,
    room_id: Uuid,
    seq: i64,
    sender_id: Uuid,
    #[serde(default)]
    room_kind: String,
    #[serde(default)]
    mentioned_user_ids: Vec<Uuid>,
    #[serde(default)]
    thread_root_sender_id: Option<Uuid>,
    #[serde(default)]
    reply_to_sender_id: Option<Uuid>,
    #[serde(default)]
    recipient_ids: Vec<Uuid>,
    #[serde(default)]
    preview: String,
    /// `''` for a DM; kept for mails (`#general`).
    #[serde(default)]
    room_name: String,
}

#[derive(Debug, Deserialize)]
struct Updated {
    message_id: Uuid,
    room_id: Uuid,
    /// The seq of the `message.updated` room event: a notification an edit creates is
    /// read when the room is read past the edit.
    seq: i64,
    sender_id: Uuid,
    #[serde(default)]
    room_kind: String,
    #[serde(default)]
    added_mention_ids: Vec<Uuid>,
    #[serde(default)]
    removed_mention_ids: Vec<Uuid>,
    #[serde(default)]
    preview: String,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    message_id: Uuid,
}

#[derive(Debug, Deserialize)]
struct RoomRead {
    room_id: Uuid,
    user_id: Uuid,
    seq: i64,
}

#[derive(Debug, Deserialize)]
struct BlockChange {
    blocker_id: Uuid,
    blocked_id: Uuid,
}

#[derive(Debug, Deserialize)]
struct IdentityEvent {
    user_id: Uuid,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
}

#[derive(Debug, Deserialize)]
struct UserDeleted {
    user_id: Uuid,
}

pub fn subscribe(
    ctx: ApiContext,
    bus: &bus::Bus,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Exported from the start (0 until an event is applied), so dashboards and alerts
    // see the series before the first message.
    metrics::gauge!("notifications_event_lag_seconds").set(0.0);
    for kind in [Kind::Dm, Kind::Mention, Kind::Reply, Kind::Message] {
        metrics::counter!("notifications_created_total", "kind" => kind.as_str()).increment(0);
    }
    bus.subscribe(
        Subscription::new(GROUP, &["chat", "users", "auth"]),
        bus::handler(move |event: Envelope| {
            let ctx = ctx.clone();
            async move { handle(&ctx, &event).await }
        }),
        shutdown,
    )
}

fn skip(event: &Envelope, e: anyhow::Error) -> anyhow::Result<()> {
    // Retrying would never succeed and would hold up the events behind it.
    tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "undecodable event skipped");
    Ok(())
}

/// Applies one event, and reports how far behind the consumer is: the age of the event
/// when applied (from its uuid v7 id), `notifications_event_lag_seconds`.
pub async fn handle(ctx: &ApiContext, event: &Envelope) -> anyhow::Result<()> {
    apply(ctx, event).await?;
    if let Some(ts) = event.id.get_timestamp() {
        let (secs, nanos) = ts.to_unix();
        let at_ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
        let lag = (kit::time::now_ms() - at_ms).max(0) as f64 / 1000.0;
        metrics::gauge!("notifications_event_lag_seconds").set(lag);
    }
    Ok(())
}

async fn apply(ctx: &ApiContext, event: &Envelope) -> anyhow::Result<()> {
    if event.version != 1 {
        tracing::warn!(event = %event.id, kind = %event.kind, version = event.version, "event version not understood; skipped");
        return Ok(());
    }
    match (event.source.as_str(), event.kind.as_str()) {
        ("chat", "chat.message.created") => match event.payload::<Created>() {
            Ok(p) => created(ctx, event, &p).await,
            Err(e) => skip(event, e),
        },
        ("chat", "chat.message.updated") => match event.payload::<Updated>() {
            Ok(p) => updated(ctx, event, &p).await,
            Err(e) => skip(event, e),
        },
        ("chat", "chat.message.deleted") => match event.payload::<Deleted>() {
            Ok(p) => deleted(ctx, event, &p).await,
            Err(e) => skip(event, e),
        },
        ("chat", "chat.room.read") => match event.payload::<RoomRead>() {
            Ok(p) => room_read(ctx, event, &p).await,
            Err(e) => skip(event, e),
        },
        ("users", kind @ ("user.blocked" | "user.unblocked")) => {
            match event.payload::<BlockChange>() {
                Ok(p) => {
                    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
                        return Ok(());
                    };
                    copies::apply_block(
                        tx.conn(),
                        p.blocker_id,
                        p.blocked_id,
                        kind == "user.blocked",
                        &event.id.to_string(),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }
                Err(e) => skip(event, e),
            }
        }
        ("auth", "user.registered" | "user.updated") => match event.payload::<IdentityEvent>() {
            Ok(p) => {
                let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
                    return Ok(());
                };
                let version = event.id.to_string();
                copies::apply_identity(
                    tx.conn(),
                    &copies::Identity {
                        user_id: p.user_id,
                        username: p.username.as_deref(),
                        display_name: p.display_name.as_deref(),
                        email: p.email.as_deref(),
                        email_verified: p.email_verified,
                        version: &version,
                    },
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
            Err(e) => skip(event, e),
        },
        ("auth", "user.deleted") => match event.payload::<UserDeleted>() {
            Ok(p) => {
                let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
                    return Ok(());
                };
                store::email::delete_user(tx.conn(), p.user_id).await?;
                tx.commit().await?;
                Ok(())
            }
            Err(e) => skip(event, e),
        },
        _ => Ok(()),
    }
}

/// The facts of the room's candidates: their settings and whether they block the sender.
async fn room_facts(
    tx: &mut kit::db::Tx,
    room: Uuid,
    sender: Uuid,
) -> anyhow::Result<(HashMap<Uuid, Facts>, Vec<Uuid>)> {
    let mut facts: HashMap<Uuid, Facts> = HashMap::new();
    let mut level_all = Vec::new();
    for (user, level, muted_until) in settings::room_settings(tx.conn(), room).await? {
        if level == Level::All {
            level_all.push(user);
        }
        let f = facts.entry(user).or_default();
        f.level = Some(level);
        f.muted_until = muted_until;
    }
    for blocker in copies::blockers_of(tx.conn(), sender).await? {
        facts.entry(blocker).or_default().blocks_sender = true;
    }
    Ok((facts, level_all))
}

/// `(recipient, kind, fallback kind)` of everyone the message notifies.
fn choose_all(
    addressing: &Addressing<'_>,
    facts: &HashMap<Uuid, Facts>,
    room_kind: &str,
) -> Vec<(Uuid, Kind, Option<Kind>)> {
    let now = kit::time::now_ms();
    rules::candidates(addressing)
        .into_iter()
        .filter_map(|(user, reasons)| {
            let f = facts.get(&user).copied().unwrap_or_default();
            let mut admitted = rules::admitted(&reasons, room_kind, &f, now);
            let kind = admitted.next()?;
            Some((user, kind, admitted.next()))
        })
        .collect()
}

/// Creates the notifications `chosen` lists; returns the recipients who got a new one.
#[allow(clippy::too_many_arguments)]
async fn create_all(
    tx: &mut kit::db::Tx,
    chosen: &[(Uuid, Kind, Option<Kind>)],
    room: Uuid,
    message: Uuid,
    seq: i64,
    actor: Uuid,
    preview: &str,
) -> anyhow::Result<BTreeSet<Uuid>> {
    let users: Vec<Uuid> = chosen.iter().map(|(u, _, _)| *u).collect();
    let no_previews = settings::previews_off(tx.conn(), &users).await?;
    let new: Vec<notifications::New<'_>> = chosen
        .iter()
        .map(|&(user, kind, fallback)| notifications::New {
            user_id: user,
            kind,
            fallback,
            room_id: room,
            message_id: message,
            seq,
            actor_id: actor,
            preview: if no_previews.contains(&user) {
                ""
            } else {
                preview
            },
        })
        .collect();
    let inserted = notifications::insert_many(tx.conn(), &new).await?;
    let mut changed = BTreeSet::new();
    for (user, kind) in inserted {
        metrics::counter!("notifications_created_total", "kind" => kind.as_str()).increment(1);
        changed.insert(user);
    }
    Ok(changed)
}

async fn commit_with_counts(
    ctx: &ApiContext,
    mut tx: kit::db::Tx,
    changed: &BTreeSet<Uuid>,
) -> anyhow::Result<()> {
    enqueue_counts(&mut tx, changed).await?;
    tx.commit().await?;
    if !changed.is_empty() {
        ctx.outbox.wake();
    }
    Ok(())
}

async fn created(ctx: &ApiContext, event: &Envelope, p: &Created) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let (facts, level_all) = room_facts(&mut tx, p.room_id, p.sender_id).await?;
    let addressing = Addressing {
        sender_id: p.sender_id,
        room_kind: &p.room_kind,
        mentioned_user_ids: &p.mentioned_user_ids,
        reply_to_sender_id: p.reply_to_sender_id,
        thread_root_sender_id: p.thread_root_sender_id,
        recipient_ids: &p.recipient_ids,
        level_all: &level_all,
    };
    let chosen = choose_all(&addressing, &facts, &p.room_kind);
    if !chosen.is_empty() && !p.room_name.is_empty() {
        store::email::apply_room_name(tx.conn(), p.room_id, &p.room_name).await?;
    }
    let changed = create_all(
        &mut tx,
        &chosen,
        p.room_id,
        p.message_id,
        p.seq,
        p.sender_id,
        &p.preview,
    )
    .await?;
    commit_with_counts(ctx, tx, &changed).await
}

async fn updated(ctx: &ApiContext, event: &Envelope, p: &Updated) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let mut changed = BTreeSet::new();
    for &user in &p.removed_mention_ids {
        if notifications::withdraw_mention(tx.conn(), p.message_id, user).await? {
            changed.insert(user);
        }
    }
    notifications::update_preview(tx.conn(), p.message_id, &p.preview).await?;
    if !p.added_mention_ids.is_empty() {
        let (facts, _) = room_facts(&mut tx, p.room_id, p.sender_id).await?;
        let addressing = Addressing {
            sender_id: p.sender_id,
            room_kind: &p.room_kind,
            mentioned_user_ids: &p.added_mention_ids,
            ..Default::default()
        };
        let chosen = choose_all(&addressing, &facts, &p.room_kind);
        changed.extend(
            create_all(
                &mut tx,
                &chosen,
                p.room_id,
                p.message_id,
                p.seq,
                p.sender_id,
                &p.preview,
            )
            .await?,
        );
    }
    commit_with_counts(ctx, tx, &changed).await
}

async fn deleted(ctx: &ApiContext, event: &Envelope, p: &Deleted) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let changed: BTreeSet<Uuid> = notifications::withdraw_message(tx.conn(), p.message_id)
        .await?
        .into_iter()
        .collect();
    commit_with_counts(ctx, tx, &changed).await
}

async fn room_read(ctx: &ApiContext, event: &Envelope, p: &RoomRead) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let mut changed = BTreeSet::new();
    if notifications::read_room(tx.conn(), p.user_id, p.room_id, p.seq).await? > 0 {
        changed.insert(p.user_id);
    }
    commit_with_counts(ctx, tx, &changed).await
}
