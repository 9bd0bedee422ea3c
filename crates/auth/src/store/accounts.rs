//! Deleted accounts: their secrets go, their names stay reserved for a while.

use sqlx::{Any, AnyConnection, Executor};

/// Forgets every secret and pending token of a deleted account (its sessions stay,
/// revoked, for `GET /internal/revocations`).
pub async fn purge_secrets(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM email_tokens WHERE user_id = $1",
        "DELETE FROM password_resets WHERE user_id = $1",
        "DELETE FROM device_tokens WHERE user_id = $1",
        "DELETE FROM totp_credentials WHERE user_id = $1",
        "DELETE FROM recovery_codes WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
        // A deleted account's passkeys must not log in (the row stays, anonymised).
        "DELETE FROM passkeys WHERE user_id = $1",
        "DELETE FROM passkey_challenges WHERE user_id = $1",
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = $1)",
    ] {
        sqlx::query(sql)
            .bind(user_id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `username:<name>` / `email:<email key>`.
pub fn username_key(username: &str) -> String {
    format!("username:{username}")
}

pub fn email_key(email_key: &str) -> String {
    format!("email:{email_key}")
}

/// Reserves a name until `until` (a later deletion of a re-registered name extends it).
pub async fn retire(
    conn: &mut AnyConnection,
    name_key: &str,
    until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retired_names (name_key, reserved_until) VALUES ($1, $2)
         ON CONFLICT (name_key) DO UPDATE SET reserved_until = excluded.reserved_until",
    )
    .bind(name_key)
    .bind(until)
    .execute(&mut *conn)
    .await?;
    // Expired reservations go (housekeeping; `is_reserved` ignores them anyway).
    sqlx::query("DELETE FROM retired_names WHERE reserved_until <= $1")
        .bind(kit::time::now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether a deleted account's name is still reserved at `now`.
pub async fn is_reserved<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    name_key: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT 1 FROM retired_names WHERE name_key = $1 AND reserved_until > $2")
            .bind(name_key)
            .bind(now)
            .fetch_optional(ex)
            .await?
            .is_some(),
    )
}
