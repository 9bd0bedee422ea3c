//! Events the chat service publishes (source `chat`, through its outbox), and the
//! consumers of other services' events: `session.revoked` (auth) and
//! `user.blocked` / `user.unblocked` (users, with a one-time backfill of the blocks).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fanout::Fanout;
use crate::store;
use crate::users_client::UsersClient;

pub const SOURCE: &str = "chat";

/// `chat.message.created`: a message was stored (its body stays in chat).
pub const MESSAGE_CREATED: &str = "chat.message.created";

#[derive(Serialize)]
pub struct MessageCreated {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
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
    db: kit::db::Db,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    bus.subscribe(
        bus::Subscription::new(GROUP, &["users"]),
        bus::handler(move |event: bus::Envelope| {
            let db = db.clone();
            async move {
                let active = match event.kind.as_str() {
                    "user.blocked" => true,
                    "user.unblocked" => false,
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
                let Some(mut tx) = bus::inbox::begin_once(&db, GROUP, &event).await? else {
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

/// Copies every block from the user service once, the first time chat starts (blocks made
/// before chat consumed the events). Retried in the background while the user service
/// cannot answer: 0.5 s, doubling up to 30 s.
pub fn backfill_blocks(
    db: kit::db::Db,
    users: Arc<UsersClient>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            let run = async {
                let mut conn = db.pool().acquire().await?;
                if store::sync_done(&mut *conn, BLOCKS_BACKFILL).await? {
                    return Ok(0);
                }
                drop(conn);
                let mut after: Option<String> = None;
                let mut copied = 0;
                loop {
                    let page = users.blocks_page(after.as_deref()).await?;
                    let edges: Vec<(Uuid, Uuid)> = page
                        .items
                        .iter()
                        .map(|e| (e.blocker_id, e.blocked_id))
                        .collect();
                    let mut tx = db.begin().await?;
                    store::backfill_blocks(tx.conn(), &edges).await?;
                    if page.next_cursor.is_none() {
                        store::mark_synced(tx.conn(), BLOCKS_BACKFILL).await?;
                    }
                    tx.commit().await?;
                    copied += edges.len();
                    match page.next_cursor {
                        Some(c) => after = Some(c),
                        None => return Ok::<usize, anyhow::Error>(copied),
                    }
                }
            };
            let result = tokio::select! {
                r = run => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(blocks = n, "block list copied from the user service");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot copy the block list from the user service yet");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
        }
    })
}
