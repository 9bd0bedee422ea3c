//! TOTP credentials, recovery codes and the pending second step of a login.

use sqlx::{Any, AnyConnection, Executor, Row};

/// A TOTP credential, pending or enabled (`users::UserRow::mfa_enabled` tells which).
pub struct TotpRow {
    /// Base32 (RFC 4648, no padding) of the 160-bit secret.
    pub secret: String,
}

pub async fn totp<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user_id: uuid::Uuid,
) -> Result<Option<TotpRow>, sqlx::Error> {
    let row = sqlx::query("SELECT secret FROM totp_credentials WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_optional(ex)
        .await?;
    row.map(|r| {
        Ok(TotpRow {
            secret: r.try_get("secret")?,
        })
    })
    .transpose()
}

/// Stores a new pending (not yet enabled) secret, replacing a pending one. Does nothing
/// when an enabled credential exists (the caller checked; a race keeps the enabled one).
pub async fn set_pending(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    secret: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1 AND enabled_at IS NULL")
        .bind(user_id.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO totp_credentials (user_id, secret, created_at, enabled_at, last_step)
         VALUES ($1, $2, $3, NULL, -1) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id.to_string())
    .bind(secret)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that a code of time step `step` was accepted; false when a code of this or a
/// later step was accepted before (a replay), so each code works once.
pub async fn use_step(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE totp_credentials SET last_step = $1 WHERE user_id = $2 AND last_step < $1",
    )
    .bind(step)
    .bind(user_id.to_string())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Enables the pending credential and replaces the recovery codes with `code_hashes`.
pub async fn enable(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    code_hashes: &[String],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE totp_credentials SET enabled_at = $1 WHERE user_id = $2 AND enabled_at IS NULL",
    )
    .bind(now)
    .bind(user_id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    delete_recovery_codes(&mut *conn, user_id).await?;
    for hash in code_hashes {
        sqlx::query(
            "INSERT INTO recovery_codes (code_hash, user_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(hash)
        .bind(user_id.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// Removes the TOTP credential, the recovery codes and pending login challenges.
pub async fn disable(conn: &mut AnyConnection, user_id: uuid::Uuid) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM totp_credentials WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
    ] {
        sqlx::query(sql)
            .bind(user_id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    delete_recovery_codes(conn, user_id).await
}

async fn delete_recovery_codes(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Uses a recovery code of `user_id`; false when it is unknown or already used.
pub async fn use_recovery_code(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE recovery_codes SET used_at = $1 WHERE code_hash = $2 AND user_id = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(hash)
    .bind(user_id.to_string())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn insert_challenge(
    conn: &mut AnyConnection,
    hash: &str,
    user_id: uuid::Uuid,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    // Expired and used ones of the account go (housekeeping).
    sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1 AND (expires_at <= $2 OR used_at IS NOT NULL)")
        .bind(user_id.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO mfa_challenges (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(user_id.to_string())
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The account of an unused, unexpired challenge.
pub async fn challenge_user<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    hash: &str,
    now: i64,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM mfa_challenges WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(hash)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    id.map(|s| s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

/// Marks a challenge used; false if another request used it first.
pub async fn use_challenge(
    conn: &mut AnyConnection,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE mfa_challenges SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(hash)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
