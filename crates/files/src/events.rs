//! The events this service consumes (consumer group [`GROUP`]); it publishes none.
//!
//! - `chat.message.created` (source chat): its `attachments: [{id, …}]` are attached to
//!   the message in its room — whoever is a member of the room may read them.
//! - `chat.message.deleted` (source chat): the message's attachments go; a file left
//!   attached to no message is collected 24 h later.
//! - `user.deleted` (source auth): the user's unattached files are deleted now.
//!
//! Each is applied once (`bus::inbox::begin_once`) in the transaction of its effect.

use bus::{Envelope, Subscription};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::ApiContext;
use crate::storage;
use crate::store::{attachments, files};

/// Consumer group of this service on the bus (and its `processed_events` consumer).
pub const GROUP: &str = "files";

#[derive(Debug, Deserialize)]
struct AttachmentRef {
    id: Uuid,
}

#[derive(Debug, Deserialize)]
struct Created {
    message_id: Uuid,
    room_id: Uuid,
    #[serde(default)]
    attachments: Vec<AttachmentRef>,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    message_id: Uuid,
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
    bus.subscribe(
        Subscription::new(GROUP, &["chat", "auth"]),
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

/// Applies one event.
pub async fn handle(ctx: &ApiContext, event: &Envelope) -> anyhow::Result<()> {
    if event.version != 1 {
        tracing::warn!(event = %event.id, kind = %event.kind, version = event.version, "event version not understood; skipped");
        return Ok(());
    }
    match (event.source.as_str(), event.kind.as_str()) {
        ("chat", "chat.message.created") => match event.payload::<Created>() {
            Ok(p) if p.attachments.is_empty() => Ok(()),
            Ok(p) => {
                let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
                    return Ok(());
                };
                let now = kit::time::now_ms();
                for a in &p.attachments {
                    attachments::attach(tx.conn(), a.id, p.message_id, p.room_id, now).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            Err(e) => skip(event, e),
        },
        ("chat", "chat.message.deleted") => match event.payload::<Deleted>() {
            Ok(p) => {
                let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
                    return Ok(());
                };
                attachments::detach_message(tx.conn(), p.message_id, kit::time::now_ms()).await?;
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
                let mut gone = Vec::new();
                for (id, thumb) in files::unattached_of(tx.conn(), p.user_id).await? {
                    if files::delete_unattached(tx.conn(), id, Some(p.user_id), None).await? {
                        gone.push((id, thumb));
                    }
                }
                tx.commit().await?;
                delete_objects(ctx, &gone).await;
                Ok(())
            }
            Err(e) => skip(event, e),
        },
        _ => Ok(()),
    }
}

/// Deletes the bytes of files whose rows are gone. A failure leaves an orphan object
/// (logged), never a row without its bytes.
pub async fn delete_objects(ctx: &ApiContext, gone: &[(Uuid, bool)]) {
    if gone.is_empty() {
        return;
    }
    let mut keys = Vec::with_capacity(gone.len() * 2);
    for &(id, thumb) in gone {
        keys.push(storage::file_key(id));
        if thumb {
            keys.push(storage::thumbnail_key(id));
        }
    }
    if ctx.storage.delete(keys).await.is_err() {
        tracing::warn!(
            files = gone.len(),
            "objects of deleted files left in the store"
        );
    }
}
