//! Passkeys (WebAuthn credentials) and the single-use challenges of their ceremonies.

use sqlx::{Any, AnyConnection, Executor, Row};

#[derive(Debug, Clone)]
pub struct PasskeyRow {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    /// base64url, no padding.
    pub credential_id: String,
    pub algorithm: i64,
    /// base64url, no padding.
    pub public_key: String,
    pub sign_count: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

fn uuid_col(row: &sqlx::any::AnyRow, col: &str) -> Result<uuid::Uuid, sqlx::Error> {
    let s: String = row.try_get(col)?;
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<PasskeyRow, sqlx::Error> {
    Ok(PasskeyRow {
        id: uuid_col(row, "id")?,
        user_id: uuid_col(row, "user_id")?,
        credential_id: row.try_get("credential_id")?,
        algorithm: row.try_get("algorithm")?,
        public_key: row.try_get("public_key")?,
        sign_count: row.try_get("sign_count")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// `SELECT <passkey columns> FROM passkeys <filter>` as a static string.
macro_rules! select_passkeys {
    ($filter:literal) => {
        concat!(
            "SELECT id, user_id, credential_id, algorithm, public_key, sign_count, name, created_at, last_used_at FROM passkeys ",
            $filter
        )
    };
}

/// Inserts `p`; false when its credential id is already registered (to anyone).
pub async fn insert(conn: &mut AnyConnection, p: &PasskeyRow) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO passkeys (id, user_id, credential_id, algorithm, public_key, sign_count, name, created_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) ON CONFLICT (credential_id) DO NOTHING",
    )
    .bind(p.id.to_string())
    .bind(p.user_id.to_string())
    .bind(&p.credential_id)
    .bind(p.algorithm)
    .bind(&p.public_key)
    .bind(p.sign_count)
    .bind(&p.name)
    .bind(p.created_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The user's passkeys, oldest first.
pub async fn list<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user_id: uuid::Uuid,
) -> Result<Vec<PasskeyRow>, sqlx::Error> {
    sqlx::query(select_passkeys!(
        "WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user_id.to_string())
    .fetch_all(ex)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub async fn count<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user_id: uuid::Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM passkeys WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_one(ex)
        .await
}

pub async fn by_credential_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    credential_id: &str,
) -> Result<Option<PasskeyRow>, sqlx::Error> {
    sqlx::query(select_passkeys!("WHERE credential_id = $1"))
        .bind(credential_id)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Records a use with the authenticator's new counter, only if the stored counter is
/// still the one the caller compared with (`seen`): of two concurrent logins with the
/// same counter value only one passes. False otherwise.
pub async fn record_use<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
    seen: i64,
    sign_count: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE passkeys SET sign_count = $3, last_used_at = $4 WHERE id = $1 AND sign_count = $2",
    )
    .bind(id.to_string())
    .bind(seen)
    .bind(sign_count)
    .bind(now)
    .execute(ex)
    .await?
    .rows_affected()
        == 1)
}

/// Deletes the user's passkey `id`; false when the user has no such passkey.
pub async fn delete<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user_id: uuid::Uuid,
    id: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(user_id.to_string())
            .execute(ex)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Stores a ceremony challenge (hashed) and drops expired ones.
pub async fn insert_challenge(
    conn: &mut AnyConnection,
    challenge_hash: &str,
    purpose: &str,
    user_id: Option<uuid::Uuid>,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM passkey_challenges WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO passkey_challenges (challenge_hash, purpose, user_id, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(challenge_hash)
    .bind(purpose)
    .bind(user_id.map(|u| u.to_string()))
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes (deletes) a challenge of `purpose`: `Some(user_id)` when it existed and had not
/// expired. A challenge is gone after this whatever the rest of the ceremony decides.
pub async fn take_challenge<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    challenge_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<Option<uuid::Uuid>>, sqlx::Error> {
    let row = sqlx::query(
        "DELETE FROM passkey_challenges WHERE challenge_hash = $1 AND purpose = $2
         RETURNING user_id, expires_at",
    )
    .bind(challenge_hash)
    .bind(purpose)
    .fetch_optional(ex)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let expires_at: i64 = row.try_get("expires_at")?;
    if expires_at <= now {
        return Ok(None);
    }
    let user: Option<String> = row.try_get("user_id")?;
    Ok(Some(
        user.map(|u| {
            u.parse::<uuid::Uuid>()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .transpose()?,
    ))
}
