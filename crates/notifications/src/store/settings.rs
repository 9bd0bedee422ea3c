//! Preferences and per-room levels.

use std::collections::HashSet;

use sqlx::{Any, Executor, Row};
use uuid::Uuid;

use crate::domain::{EmailMode, Level, Preferences, RoomSetting};

/// The user's preferences (the defaults when never set).
pub async fn preferences<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
) -> Result<Preferences, sqlx::Error> {
    let row = sqlx::query(
        "SELECT email, web_push, previews, timezone FROM preferences WHERE user_id = $1",
    )
    .bind(user.to_string())
    .fetch_optional(ex)
    .await?;
    let Some(row) = row else {
        return Ok(Preferences::default());
    };
    let email: String = row.try_get("email")?;
    Ok(Preferences {
        email: EmailMode::parse(&email).unwrap_or(EmailMode::Instant),
        web_push: row.try_get::<i64, _>("web_push")? != 0,
        previews: row.try_get::<i64, _>("previews")? != 0,
        timezone: row.try_get("timezone")?,
    })
}

pub async fn put_preferences<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    p: &Preferences,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO preferences (user_id, email, web_push, previews, timezone, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email,
           web_push = excluded.web_push, previews = excluded.previews,
           timezone = excluded.timezone, updated_at = excluded.updated_at",
    )
    .bind(user.to_string())
    .bind(p.email.as_str())
    .bind(i64::from(p.web_push))
    .bind(i64::from(p.previews))
    .bind(&p.timezone)
    .bind(kit::time::now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// Of `users`, those who turned previews off: one statement per 1,000 users (one bind
/// each, under SQLite's 32,766 and PostgreSQL's 65,535 binds whatever the room size).
pub async fn previews_off(
    conn: &mut sqlx::AnyConnection,
    users: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut off = HashSet::new();
    for chunk in users.chunks(1_000) {
        let sql = format!(
            "SELECT user_id FROM preferences WHERE previews = 0 AND user_id IN ({})",
            super::placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            q = q.bind(u.to_string());
        }
        for r in q.fetch_all(&mut *conn).await? {
            off.insert(super::uuid_col(&r, "user_id")?);
        }
    }
    Ok(off)
}

/// One member's setting for a room, if they set one.
pub async fn room_setting<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    room: Uuid,
) -> Result<Option<(Level, Option<i64>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT level, muted_until FROM room_settings WHERE user_id = $1 AND room_id = $2",
    )
    .bind(user.to_string())
    .bind(room.to_string())
    .fetch_optional(ex)
    .await?;
    row.map(|r| {
        let level: String = r.try_get("level")?;
        Ok((
            Level::parse(&level).unwrap_or(Level::Mentions),
            r.try_get("muted_until")?,
        ))
    })
    .transpose()
}

pub async fn put_room_setting<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    s: &RoomSetting,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_settings (user_id, room_id, level, muted_until, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, room_id) DO UPDATE SET level = excluded.level,
           muted_until = excluded.muted_until, updated_at = excluded.updated_at",
    )
    .bind(user.to_string())
    .bind(s.room_id.to_string())
    .bind(s.level.as_str())
    .bind(s.muted_until)
    .bind(kit::time::now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// Every setting of the room: `(user, level, muted_until)`. Bounded by the room's
/// members (only members can set one).
pub async fn room_settings<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
) -> Result<Vec<(Uuid, Level, Option<i64>)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT user_id, level, muted_until FROM room_settings WHERE room_id = $1")
            .bind(room.to_string())
            .fetch_all(ex)
            .await?;
    rows.iter()
        .map(|r| {
            let level: String = r.try_get("level")?;
            Ok((
                super::uuid_col(r, "user_id")?,
                Level::parse(&level).unwrap_or(Level::Mentions),
                r.try_get("muted_until")?,
            ))
        })
        .collect()
}
