//! Push subscriptions and the Web Push due queue (columns of `notifications`).

use sqlx::{Any, Executor, Row};
use uuid::Uuid;

use super::uuid_col;

pub struct Subscription {
    pub id: Uuid,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// Stores a subscription; the same endpoint again (a re-subscribe, or another account in
/// the same browser) replaces the old row and belongs to the latest caller.
pub async fn upsert_subscription<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    endpoint: &str,
    p256dh: &str,
    auth: &str,
) -> Result<Uuid, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id,
           p256dh = excluded.p256dh, auth = excluded.auth, failures = 0
         RETURNING id",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(user.to_string())
    .bind(endpoint)
    .bind(p256dh)
    .bind(auth)
    .bind(kit::time::now_ms())
    .fetch_one(ex)
    .await?;
    uuid_col(&row, "id")
}

/// Deletes `user`'s subscription `id`; false when there is none.
pub async fn delete_subscription<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2")
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes a subscription the push service says is gone (404/410).
pub async fn drop_subscription<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM push_subscriptions WHERE id = $1")
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn subscriptions<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
) -> Result<Vec<Subscription>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = $1 ORDER BY id",
    )
    .bind(user.to_string())
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Subscription {
                id: uuid_col(r, "id")?,
                endpoint: r.try_get("endpoint")?,
                p256dh: r.try_get("p256dh")?,
                auth: r.try_get("auth")?,
            })
        })
        .collect()
}

/// Ids of unread, unpushed notifications due by `now`, oldest first.
pub async fn due<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    now: i64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id FROM notifications
         WHERE pushed_at IS NULL AND read_at IS NULL AND push_due_at <= $1
         ORDER BY push_due_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter().map(|r| uuid_col(r, "id")).collect()
}

/// Claims a due notification for `lease_ms` (another instance's worker skips it): the
/// recheck at send time — false when it was read, withdrawn or claimed meanwhile.
pub async fn claim<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
    now: i64,
    lease_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET push_due_at = $3
         WHERE id = $1 AND pushed_at IS NULL AND read_at IS NULL AND push_due_at <= $2",
    )
    .bind(id.to_string())
    .bind(now)
    .bind(now + lease_ms)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Done with pushing it (sent, nothing to send to, or given up).
pub async fn mark_pushed<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notifications SET pushed_at = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(now)
        .execute(ex)
        .await?;
    Ok(())
}

/// Tries again at `at` (a push service answered 429/5xx or could not be reached).
pub async fn retry_at<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET push_due_at = $2, push_attempts = push_attempts + 1 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(at)
    .execute(ex)
    .await?;
    Ok(())
}

/// Due again at `at` without counting an attempt (its push service had no free turn).
pub async fn defer<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notifications SET push_due_at = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(at)
        .execute(ex)
        .await?;
    Ok(())
}
