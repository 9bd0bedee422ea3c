//! Email: the due queue and its claims (columns of `notifications`), the daily digest's
//! day claims (`preferences.digest_on`), room names for mails, the one-click opt-out and
//! the deletion of a user's data.
//!
//! A notification is claimed for a mail by setting `emailed_at` (and `email_claim`, the
//! claiming round) in one UPDATE whose WHERE is the recheck — unread, not yet claimed —
//! so two workers (two processes) never both take it, and a withdrawn (deleted) one is
//! not there to take. Setting it before the send makes a crash between claim and send
//! lose that mail rather than send it twice: at most one mail per notification.

use std::collections::HashMap;

use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::notifications::{COLUMNS, from_row};
use super::uuid_col;
use crate::domain::Notification;

/// Users with notifications due for an instant mail: unread, unclaimed, created by
/// `cutoff` (the delay ago), not waiting for a retry, and whose preference is not
/// `daily` (the digest takes those). `off` users are included: their notifications are
/// claimed and dropped, so they do not stay in the queue.
pub async fn due_users<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    cutoff: i64,
    now: i64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT n.user_id, MIN(n.created_at) AS first_at FROM notifications n
         LEFT JOIN preferences p ON p.user_id = n.user_id
         WHERE n.emailed_at IS NULL AND n.read_at IS NULL AND n.created_at <= $1
           AND (n.email_retry_at IS NULL OR n.email_retry_at <= $2)
           AND (p.email IS NULL OR p.email <> 'daily')
         GROUP BY n.user_id ORDER BY first_at LIMIT $3",
    )
    .bind(cutoff)
    .bind(now)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter().map(|r| uuid_col(r, "user_id")).collect()
}

/// Claims `user`'s unread, unclaimed notifications created by `cutoff` (and not waiting
/// for a retry) for the round `claim`; how many were claimed.
pub async fn claim<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    cutoff: i64,
    now: i64,
    claim: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET emailed_at = $3, email_claim = $4
         WHERE user_id = $1 AND emailed_at IS NULL AND read_at IS NULL AND created_at <= $2
           AND (email_retry_at IS NULL OR email_retry_at <= $3)",
    )
    .bind(user.to_string())
    .bind(cutoff)
    .bind(now)
    .bind(claim.to_string())
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// What the round `claim` claimed, oldest first.
pub async fn claimed<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    claim: Uuid,
) -> Result<Vec<Notification>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM notifications WHERE email_claim = $1 ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(claim.to_string())
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The send of round `claim` failed: its notifications go back to the queue, due again
/// `step_ms` × attempts after `now`, except those that used up `max_attempts` (they stay
/// claimed: given up).
pub async fn release<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    claim: Uuid,
    now: i64,
    step_ms: i64,
    max_attempts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET emailed_at = NULL, email_claim = NULL,
           email_attempts = email_attempts + 1, email_retry_at = $2 + $3 * (email_attempts + 1)
         WHERE email_claim = $1 AND email_attempts + 1 < $4",
    )
    .bind(claim.to_string())
    .bind(now)
    .bind(step_ms)
    .bind(max_attempts)
    .execute(ex)
    .await?;
    Ok(())
}

/// A user who asked for the daily digest.
pub struct DailyUser {
    pub user_id: Uuid,
    pub timezone: String,
    /// Local date of the last digest (`YYYY-MM-DD`).
    pub digest_on: Option<String>,
}

/// Every `daily` user (one row each; the digest round checks each one's local time).
pub async fn daily_users<'e, E: Executor<'e, Database = Any>>(
    ex: E,
) -> Result<Vec<DailyUser>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, timezone, digest_on FROM preferences WHERE email = 'daily' ORDER BY user_id",
    )
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DailyUser {
                user_id: uuid_col(r, "user_id")?,
                timezone: r.try_get("timezone")?,
                digest_on: r.try_get("digest_on")?,
            })
        })
        .collect()
}

/// Takes the local day `today` for `user`'s digest; false when it was taken already (by
/// this or another instance) or the user left `daily` meanwhile.
pub async fn claim_digest_day<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    today: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE preferences SET digest_on = $2
         WHERE user_id = $1 AND email = 'daily' AND (digest_on IS NULL OR digest_on < $2)",
    )
    .bind(user.to_string())
    .bind(today)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Gives the day back after a failed send (the next round tries again).
pub async fn release_digest_day<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    today: &str,
    previous: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE preferences SET digest_on = $3 WHERE user_id = $1 AND digest_on = $2")
        .bind(user.to_string())
        .bind(today)
        .bind(previous)
        .execute(ex)
        .await?;
    Ok(())
}

/// The one-click opt-out: `email` becomes `off` (the other preferences keep their values
/// or defaults).
pub async fn email_off<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO preferences (user_id, email, updated_at) VALUES ($1, 'off', $2)
         ON CONFLICT (user_id) DO UPDATE SET email = 'off', updated_at = excluded.updated_at",
    )
    .bind(user.to_string())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// Remembers a room's name (chat's message events carry it); `''` (a DM) is not stored.
pub async fn apply_room_name<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_names (room_id, name) VALUES ($1, $2)
         ON CONFLICT (room_id) DO UPDATE SET name = excluded.name",
    )
    .bind(room.to_string())
    .bind(name)
    .execute(ex)
    .await?;
    Ok(())
}

/// Names of the given rooms that have one (channels).
pub async fn room_names<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    rooms: &[Uuid],
) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    if rooms.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT room_id, name FROM room_names WHERE room_id IN ({})",
        super::placeholders(1, rooms.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for r in rooms {
        q = q.bind(r.to_string());
    }
    let rows = q.fetch_all(ex).await?;
    rows.iter()
        .map(|r| Ok((uuid_col(r, "room_id")?, r.try_get("name")?)))
        .collect()
}

/// Deletes everything this service keeps about `user` (auth's `user.deleted`): their
/// notifications, preferences, room levels, push subscriptions and identity copy.
/// Idempotent. Notifications where they were the actor stay with their recipients.
pub async fn delete_user(conn: &mut AnyConnection, user: Uuid) -> Result<(), sqlx::Error> {
    for table in [
        "notifications",
        "preferences",
        "room_settings",
        "push_subscriptions",
        "recipients",
    ] {
        let sql = format!("DELETE FROM {table} WHERE user_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
