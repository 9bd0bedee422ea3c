//! Device tokens (OWASP "device cookies"): issued at each successful login, stored
//! hashed and bound to the account; presenting one of the account's lets a login pass
//! the per-account throttle.

use sqlx::{Any, AnyConnection, Executor};

/// The newest tokens kept per account: a client that never stores its token (curl, a
/// script) gets a new one at each login, and they must not pile up for 180 days.
const MAX_PER_USER: i64 = 50;

pub async fn insert(
    conn: &mut AnyConnection,
    hash: &str,
    user_id: uuid::Uuid,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(user_id.to_string())
    .bind(now)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    // Expired ones and any beyond the newest MAX_PER_USER go.
    sqlx::query(
        "DELETE FROM device_tokens WHERE user_id = $1 AND (expires_at <= $2 OR token_hash NOT IN
           (SELECT token_hash FROM device_tokens WHERE user_id = $1 ORDER BY created_at DESC LIMIT $3))",
    )
    .bind(user_id.to_string())
    .bind(now)
    .bind(MAX_PER_USER)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `hash` is an unexpired device token of `user_id`.
pub async fn is_valid<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    hash: &str,
    user_id: uuid::Uuid,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 FROM device_tokens WHERE token_hash = $1 AND user_id = $2 AND expires_at > $3",
    )
    .bind(hash)
    .bind(user_id.to_string())
    .bind(now)
    .fetch_optional(ex)
    .await?
    .is_some())
}

pub async fn delete(conn: &mut AnyConnection, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM device_tokens WHERE token_hash = $1")
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets every device of `user_id` (after a password reset: the account may have been
/// someone else's for a while).
pub async fn delete_all(conn: &mut AnyConnection, user_id: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM device_tokens WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
