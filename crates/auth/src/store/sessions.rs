//! Sessions and their rotating refresh tokens.

use sqlx::{Any, AnyConnection, Executor, Row};

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: String,
    pub ip: String,
}

impl SessionRow {
    /// Not revoked, before its absolute expiry, and used within the idle timeout.
    pub fn is_active(&self, now: i64, idle_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.last_used_at + idle_ms > now
    }
}

fn parse_uuid(s: String) -> Result<uuid::Uuid, sqlx::Error> {
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: parse_uuid(row.try_get("id")?)?,
        user_id: parse_uuid(row.try_get("user_id")?)?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
    })
}

pub async fn insert(conn: &mut AnyConnection, s: &SessionRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(s.id.to_string())
    .bind(s.user_id.to_string())
    .bind(s.created_at)
    .bind(s.last_used_at)
    .bind(s.expires_at)
    .bind(&s.user_agent)
    .bind(&s.ip)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: uuid::Uuid,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query("SELECT id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip FROM sessions WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn list_active<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user_id: uuid::Uuid,
    now: i64,
    idle_ms: i64,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_used_at > $3
         ORDER BY created_at DESC",
    )
    .bind(user_id.to_string())
    .bind(now)
    .bind(now - idle_ms)
    .fetch_all(ex)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn touch(
    conn: &mut AnyConnection,
    id: uuid::Uuid,
    now: i64,
    ip: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = $1, ip = $2 WHERE id = $3")
        .bind(now)
        .bind(ip)
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes one session; returns whether it was still unrevoked.
pub async fn revoke(
    conn: &mut AnyConnection,
    id: uuid::Uuid,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Revokes every unrevoked session of `user_id` except `keep`; returns the revoked ids.
pub async fn revoke_all(
    conn: &mut AnyConnection,
    user_id: uuid::Uuid,
    keep: Option<uuid::Uuid>,
    now: i64,
) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    let keep = keep.map(|k| k.to_string()).unwrap_or_default();
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2",
    )
    .bind(user_id.to_string())
    .bind(&keep)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3")
        .bind(now)
        .bind(user_id.to_string())
        .bind(&keep)
        .execute(&mut *conn)
        .await?;
    ids.into_iter().map(parse_uuid).collect()
}

pub async fn insert_refresh(
    conn: &mut AnyConnection,
    hash: &str,
    session_id: uuid::Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
    )
    .bind(hash)
    .bind(session_id.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The session a refresh token belongs to, and whether it was already used.
pub async fn find_refresh(
    conn: &mut AnyConnection,
    hash: &str,
) -> Result<Option<(uuid::Uuid, bool)>, sqlx::Error> {
    let row = sqlx::query("SELECT session_id, used_at FROM refresh_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => {
            let used: Option<i64> = row.try_get("used_at")?;
            Ok(Some((
                parse_uuid(row.try_get("session_id")?)?,
                used.is_some(),
            )))
        }
        None => Ok(None),
    }
}

/// Marks a refresh token used; false if another request used it first (a race is a reuse).
pub async fn use_refresh(
    conn: &mut AnyConnection,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(hash)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Sessions revoked at or after `since` (epoch ms), with when: `(id, revoked_at)`.
pub async fn revoked_since<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    since: i64,
) -> Result<Vec<(uuid::Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1 ORDER BY revoked_at",
    )
    .bind(since)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((parse_uuid(r.try_get("id")?)?, r.try_get("revoked_at")?)))
        .collect()
}
