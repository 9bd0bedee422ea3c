//! Single-use password reset tokens (stored hashed).

use sqlx::{AnyConnection, Row};

pub async fn insert(
    conn: &mut AnyConnection,
    hash: &str,
    user_id: uuid::Uuid,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(user_id.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Consumes a reset token: returns its user when it was unused and unexpired.
pub async fn consume(
    conn: &mut AnyConnection,
    hash: &str,
    now: i64,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    let n = sqlx::query("UPDATE password_resets SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1")
        .bind(now)
        .bind(hash)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT user_id FROM password_resets WHERE token_hash = $1")
        .bind(hash)
        .fetch_one(conn)
        .await?;
    let id: String = row.try_get("user_id")?;
    Ok(Some(
        id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    ))
}

/// Voids every unused reset token of `user_id`: after a reset, a password change or an
/// email change, a token mailed earlier (perhaps to an address no longer the account's)
/// must not set the password.
pub async fn void_all(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(user_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
