//! Events of the user service: the ones it publishes (source [`SOURCE`], through its
//! outbox), and its consumption of the auth service's: profiles follow `user.registered`
//! and `user.updated`; `user.deleted` removes the account's follows and blocks (both
//! ways, publishing `user.unblocked` for each block: chat and notifications keep copies)
//! and leaves a tombstone profile; `session.revoked` makes this service's verifier
//! reject the session.
//!
//! Each profile effect runs in one transaction with its `processed_events` row
//! (`bus::inbox::begin_once`), so redelivery is harmless. Order does not matter either:
//! every name field carries the id (uuid v7, time-ordered) of the event that set it, and an
//! older event never overwrites a newer one — a `user.updated` that overtakes its
//! `user.registered` creates the row, and the late `user.registered` then fills only what
//! is still older (the username, `created_at`).

use bus::{Envelope, Subscription};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::domain::Profile;
use crate::search::feed::Changes;
use crate::state::ApiContext;
use crate::store::profiles::{self, IdentityChange};

/// Source name of the events this service publishes.
pub const SOURCE: &str = "users";

/// Consumer group of this service on the bus.
pub const GROUP: &str = "users";

/// `profile.updated`: the profile as it is after the change.
pub fn profile_updated(p: &Profile) -> Envelope {
    Envelope::new(
        SOURCE,
        "profile.updated",
        serde_json::json!({
            "user_id": p.id,
            "username": p.username,
            "display_name": p.display_name,
            "bio": p.bio,
            "avatar_url": p.avatar_url,
        }),
    )
}

/// `user.followed` / `user.unfollowed`.
pub fn follow(kind: &str, follower: uuid::Uuid, followee: uuid::Uuid) -> Envelope {
    Envelope::new(
        SOURCE,
        kind,
        serde_json::json!({ "follower_id": follower, "followee_id": followee }),
    )
}

/// `user.blocked` / `user.unblocked`.
pub fn block(kind: &str, blocker: uuid::Uuid, blocked: uuid::Uuid) -> Envelope {
    Envelope::new(
        SOURCE,
        kind,
        serde_json::json!({ "blocker_id": blocker, "blocked_id": blocked }),
    )
}

#[derive(Debug, Deserialize)]
struct Registered {
    user_id: uuid::Uuid,
    username: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Updated {
    user_id: uuid::Uuid,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    user_id: uuid::Uuid,
}

#[derive(Debug, Deserialize)]
struct SessionRevoked {
    session_id: uuid::Uuid,
    until: i64,
}

pub fn subscribe(
    ctx: ApiContext,
    bus: &bus::Bus,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let verifier = ctx.verifier.clone();
    let handler = bus::handler(move |event: Envelope| {
        let ctx = ctx.clone();
        async move { handle(&ctx, &event).await }
    });
    let profiles = bus.subscribe(
        Subscription::new(GROUP, &["auth"]),
        handler,
        shutdown.clone(),
    );
    // Every instance must learn of every revoked session, not one per consumer group.
    let revocations = bus.subscribe_broadcast(
        bus::Broadcast::new(GROUP, &["auth"]),
        bus::handler(move |event: Envelope| {
            let verifier = verifier.clone();
            async move {
                if event.kind == "session.revoked" {
                    match event.payload::<SessionRevoked>() {
                        Ok(p) => verifier.revoke_session(p.session_id, p.until),
                        Err(e) => return skip(&event, e),
                    }
                }
                Ok(())
            }
        }),
        shutdown,
    );
    tokio::spawn(async move {
        let _ = tokio::join!(profiles, revocations);
    })
}

fn parse_time_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Applies one event. A payload that cannot be decoded is logged and skipped: retrying
/// it would never succeed and would block the events behind it.
pub async fn handle(ctx: &ApiContext, event: &Envelope) -> anyhow::Result<()> {
    match event.kind.as_str() {
        "user.registered" => match event.payload::<Registered>() {
            Ok(p) => {
                let created_at = p
                    .created_at
                    .as_deref()
                    .and_then(parse_time_ms)
                    .unwrap_or_else(kit::time::now_ms);
                let change = IdentityChange {
                    id: p.user_id,
                    version: &event.id.to_string(),
                    username: Some(&p.username),
                    display_name: p.display_name.as_deref(),
                    created_at: Some(created_at),
                };
                apply(ctx, event, &change, false).await
            }
            Err(e) => skip(event, e),
        },
        "user.updated" => match event.payload::<Updated>() {
            Ok(p) => {
                let change = IdentityChange {
                    id: p.user_id,
                    version: &event.id.to_string(),
                    username: p.username.as_deref(),
                    display_name: p.display_name.as_deref(),
                    created_at: None,
                };
                apply(ctx, event, &change, true).await
            }
            Err(e) => skip(event, e),
        },
        "user.deleted" => match event.payload::<Deleted>() {
            Ok(p) => delete_account(ctx, event, p.user_id).await,
            Err(e) => skip(event, e),
        },
        // `session.revoked` comes through the broadcast subscription (see `subscribe`).
        _ => Ok(()),
    }
}

fn skip(event: &Envelope, e: anyhow::Error) -> anyhow::Result<()> {
    tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "undecodable event skipped");
    Ok(())
}

async fn apply(
    ctx: &ApiContext,
    event: &Envelope,
    change: &IdentityChange<'_>,
    announce: bool,
) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let mut changes = Changes::default();
    let changed = profiles::apply_identity(&mut tx, ctx.db.backend(), change, &mut changes).await?;
    let mut announced = false;
    if changed
        && announce
        && let Some(profile) = profiles::get(tx.conn(), change.id).await?
    {
        bus::outbox::enqueue(&mut tx, &profile_updated(&profile)).await?;
        announced = true;
    }
    tx.commit().await?;
    changes.apply_to(&ctx.search);
    if announced {
        ctx.outbox.wake();
    }
    Ok(())
}

/// `user.deleted`: every follow edge (counters of the other side adjusted) and block
/// edge of the account goes, each removed block announced as `user.unblocked`, and the
/// profile becomes a tombstone — all in one transaction with the inbox row, so a
/// redelivery does nothing. Nobody consumes `user.unfollowed`, so removed follows are
/// not announced.
async fn delete_account(
    ctx: &ApiContext,
    event: &Envelope,
    user: uuid::Uuid,
) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(&ctx.db, GROUP, event).await? else {
        return Ok(());
    };
    let mut changes = Changes::default();
    let (follows, blocks) = crate::store::graph::edges_of(tx.conn(), user).await?;
    for (follower, followee) in follows {
        crate::store::graph::delete_follow(&mut tx, follower, followee, &mut changes).await?;
    }
    let announce = !blocks.is_empty();
    for (blocker, blocked) in blocks {
        if crate::store::graph::delete_block(tx.conn(), blocker, blocked).await? {
            bus::outbox::enqueue(&mut tx, &block("user.unblocked", blocker, blocked)).await?;
        }
    }
    profiles::tombstone(&mut tx, user, &mut changes).await?;
    tx.commit().await?;
    changes.apply_to(&ctx.search);
    if announce {
        ctx.outbox.wake();
    }
    tracing::info!(user_id = %user, "profile of a deleted account removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_rfc3339() {
        assert_eq!(super::parse_time_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(super::parse_time_ms("garbage"), None);
    }
}
