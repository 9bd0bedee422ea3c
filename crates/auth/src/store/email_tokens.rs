//! Single-use tokens mailed to an address (stored hashed), told apart by `purpose`.

use sqlx::{AnyConnection, Row};

/// Confirming sets the account's email to the token's address.
pub const EMAIL_CHANGE: &str = "email_change";
/// Confirming marks the account's email verified, if it is still the token's address.
pub const EMAIL_VERIFY: &str = "email_verify";

pub struct NewEmailToken<'a> {
    pub hash: &'a str,
    pub user_id: uuid::Uuid,
    pub purpose: &'static str,
    pub email: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

/// A consumed token: whose, what for, and the address it was mailed to.
pub struct EmailToken {
    pub user_id: uuid::Uuid,
    pub purpose: String,
    pub email: String,
}

pub async fn insert(conn: &mut AnyConnection, t: &NewEmailToken<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.hash)
    .bind(t.user_id.to_string())
    .bind(t.purpose)
    .bind(t.email)
    .bind(t.now)
    .bind(t.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks every unused token of `user_id` for `purpose` used: only the newest request
/// counts.
pub async fn void_outstanding(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    purpose: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(user_id.to_string())
    .bind(purpose)
    .execute(conn)
    .await?;
    Ok(())
}

/// Consumes a token: returns it when it was unused and unexpired (the caller's
/// transaction decides whether the use sticks).
pub async fn consume(
    conn: &mut AnyConnection,
    hash: &str,
    now: i64,
) -> Result<Option<EmailToken>, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(hash)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT user_id, purpose, email FROM email_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_one(conn)
        .await?;
    let id: String = row.try_get("user_id")?;
    Ok(Some(EmailToken {
        user_id: id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        purpose: row.try_get("purpose")?,
        email: row.try_get("email")?,
    }))
}

/// When the newest token of `user_id` for `purpose` was issued (throttles re-sends).
pub async fn latest_issued(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    purpose: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX(created_at) FROM email_tokens WHERE user_id = $1 AND purpose = $2",
    )
    .bind(user_id.to_string())
    .bind(purpose)
    .fetch_one(conn)
    .await
}
