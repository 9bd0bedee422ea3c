//! Brute-force throttling of logins: failures per key in a sliding window, stored in
//! the DB so every auth instance sees them and they survive restarts.

use sqlx::{AnyConnection, Row};

/// Failures of `key` since `since` and the oldest of them.
pub async fn failures(
    conn: &mut AnyConnection,
    key: &str,
    since: i64,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM login_failures WHERE throttle_key = $1 AND at > $2")
        .bind(key)
        .bind(since)
        .fetch_one(conn)
        .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

pub async fn record(conn: &mut AnyConnection, key: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO login_failures (throttle_key, at) VALUES ($1, $2)")
        .bind(key)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn clear(conn: &mut AnyConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE throttle_key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Drops failures older than `before` (housekeeping).
pub async fn purge(conn: &mut AnyConnection, before: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE at < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(())
}
