//! Per-user quota: bytes stored plus bytes reserved by uploads in flight.

use sqlx::{Any, Executor, Row};
use uuid::Uuid;

/// Reserves `bytes` for an upload of `user` if stored + live reservations + `bytes` stay
/// within `quota`; returns the reservation id, or None when over quota. Concurrent
/// uploads of one user serialise on their `file_quotas` row, so two cannot both pass
/// the check with the same headroom.
pub async fn reserve(
    db: &kit::db::Db,
    user: Uuid,
    bytes: i64,
    quota: i64,
    ttl_ms: i64,
) -> Result<Option<Uuid>, sqlx::Error> {
    let now = kit::time::now_ms();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO file_quotas (user_id, locked_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET locked_at = excluded.locked_at",
    )
    .bind(user.to_string())
    .bind(now)
    .execute(tx.conn())
    .await?;
    let used = super::files::used_bytes(tx.conn(), user).await?;
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS reserved FROM upload_reservations
         WHERE user_id = $1 AND expires_at > $2",
    )
    .bind(user.to_string())
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    let reserved: i64 = row.try_get("reserved")?;
    if used.saturating_add(reserved).saturating_add(bytes) > quota {
        return Ok(None);
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO upload_reservations (id, user_id, bytes, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(bytes)
    .bind(now + ttl_ms)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// Ends a reservation (the upload was stored in the same transaction, or failed).
pub async fn release<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM upload_reservations WHERE id = $1")
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// Deletes reservations that expired (their process died mid-upload); returns how many.
pub async fn purge_expired<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM upload_reservations WHERE expires_at <= $1")
        .bind(now)
        .execute(ex)
        .await?;
    Ok(done.rows_affected())
}
