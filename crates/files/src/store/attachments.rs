//! The `attachments` table: which messages (in which rooms) carry which files.

use sqlx::{Any, Executor, Row};
use uuid::Uuid;

/// Records that `message` in `room` carries `file` (idempotent).
pub async fn attach<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    file: Uuid,
    message: Uuid,
    room: Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO attachments (file_id, message_id, room_id, created_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (file_id, message_id) DO NOTHING",
    )
    .bind(file.to_string())
    .bind(message.to_string())
    .bind(room.to_string())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// Forgets every attachment of a deleted message; the files it leaves attached to no
/// message start their collection clock now.
pub async fn detach_message(
    conn: &mut sqlx::AnyConnection,
    message: Uuid,
    now: i64,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query("SELECT file_id FROM attachments WHERE message_id = $1")
        .bind(message.to_string())
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM attachments WHERE message_id = $1")
        .bind(message.to_string())
        .execute(&mut *conn)
        .await?;
    for r in &rows {
        let file: String = r.try_get("file_id")?;
        sqlx::query(
            "UPDATE files SET detached_at = $2 WHERE id = $1
               AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = files.id)",
        )
        .bind(file)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The rooms where `file` is attached.
pub async fn rooms_of<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    file: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT room_id FROM attachments WHERE file_id = $1")
        .bind(file.to_string())
        .fetch_all(ex)
        .await?;
    rows.iter().map(|r| super::uuid_col(r, "room_id")).collect()
}

pub async fn is_attached<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    file: Uuid,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT 1 AS one FROM attachments WHERE file_id = $1 LIMIT 1")
        .bind(file.to_string())
        .fetch_optional(ex)
        .await?;
    Ok(row.is_some())
}
