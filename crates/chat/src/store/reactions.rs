//! SQL of reactions, pins and read markers (chat v1.1, migration 0005).

use std::collections::HashMap;

use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::{MESSAGE_COLS, ROWS_PER_STATEMENT, Result, list, message_from, uuid};
use crate::domain::{Message, ReactionCount};

/// Fills `reactions` of every message (one aggregate query per 200 messages, so one per
/// page: pages are at most 100) with `me` for `viewer` (None: events, `me` absent).
/// Deleted messages show none (their rows are removed with the delete anyway).
pub async fn attach(
    conn: &mut AnyConnection,
    messages: &mut [Message],
    viewer: Option<Uuid>,
) -> Result<()> {
    let ids: Vec<Uuid> = messages
        .iter()
        .filter(|m| !m.deleted)
        .map(|m| m.id)
        .collect();
    let mut by_message: HashMap<Uuid, Vec<ReactionCount>> = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT message_id, emoji, COUNT(*) AS n, MIN(created_at) AS first_at,
                    SUM(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS mine
             FROM reactions WHERE message_id IN ({})
             GROUP BY message_id, emoji ORDER BY first_at, emoji",
            list(chunk.len(), 2)
        );
        // '' is nobody's id: without a viewer, `mine` is 0 everywhere and not shown.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(viewer.map(|v| v.to_string()).unwrap_or_default());
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let mine: i64 = row.try_get("mine")?;
            by_message
                .entry(uuid(&row, "message_id")?)
                .or_default()
                .push(ReactionCount {
                    emoji: row.try_get("emoji")?,
                    count: row.try_get("n")?,
                    me: viewer.map(|_| mine > 0),
                });
        }
    }
    for m in messages.iter_mut() {
        m.reactions = by_message.remove(&m.id).unwrap_or_default();
    }
    Ok(())
}

/// Records `user`'s reaction; false when it was already there.
pub async fn add<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    message: Uuid,
    emoji: &str,
    user: Uuid,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (message_id, emoji, user_id) DO NOTHING",
    )
    .bind(message.to_string())
    .bind(emoji)
    .bind(user.to_string())
    .bind(now)
    .execute(ex)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Removes `user`'s reaction; false when there was none.
pub async fn remove<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    message: Uuid,
    emoji: &str,
    user: Uuid,
) -> Result<bool> {
    let n =
        sqlx::query("DELETE FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3")
            .bind(message.to_string())
            .bind(emoji)
            .bind(user.to_string())
            .execute(ex)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Every reaction of a message (when it is deleted).
pub async fn remove_all<'e, E: Executor<'e, Database = Any>>(ex: E, message: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM reactions WHERE message_id = $1")
        .bind(message.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// How many distinct emoji the message carries.
pub async fn distinct_emoji<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    message: Uuid,
) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(DISTINCT emoji) FROM reactions WHERE message_id = $1")
        .bind(message.to_string())
        .fetch_one(ex)
        .await
}

/// Who reacted: per emoji (by first reaction time) the users in reaction order.
pub async fn who<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    message: Uuid,
) -> Result<Vec<(String, Vec<Uuid>)>> {
    let rows = sqlx::query(
        "SELECT emoji, user_id FROM reactions WHERE message_id = $1 ORDER BY created_at, user_id",
    )
    .bind(message.to_string())
    .fetch_all(ex)
    .await?;
    let mut out: Vec<(String, Vec<Uuid>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        let emoji: String = row.try_get("emoji")?;
        let user = uuid(row, "user_id")?;
        match index.get(&emoji) {
            Some(&i) => out[i].1.push(user),
            None => {
                index.insert(emoji.clone(), out.len());
                out.push((emoji, vec![user]));
            }
        }
    }
    Ok(out)
}

// ---- pins ------------------------------------------------------------------------

/// Pins a message; false when it already was pinned.
pub async fn pin<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    message: Uuid,
    by: Uuid,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE messages SET pinned_at = $1, pinned_by = $2 WHERE id = $3 AND pinned_at IS NULL",
    )
    .bind(now)
    .bind(by.to_string())
    .bind(message.to_string())
    .execute(ex)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Unpins a message; false when it was not pinned.
pub async fn unpin<'e, E: Executor<'e, Database = Any>>(ex: E, message: Uuid) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE messages SET pinned_at = NULL, pinned_by = NULL
         WHERE id = $1 AND pinned_at IS NOT NULL",
    )
    .bind(message.to_string())
    .execute(ex)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn pin_count<'e, E: Executor<'e, Database = Any>>(ex: E, room: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE room_id = $1 AND pinned_at IS NOT NULL")
        .bind(room.to_string())
        .fetch_one(ex)
        .await
}

/// The room's pinned messages, newest pin first.
pub async fn pins<'e, E: Executor<'e, Database = Any>>(ex: E, room: Uuid) -> Result<Vec<Message>> {
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 AND pinned_at IS NOT NULL
         ORDER BY pinned_at DESC, id DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.to_string())
        .fetch_all(ex)
        .await?;
    rows.iter().map(message_from).collect()
}

// ---- read markers ----------------------------------------------------------------

/// `(user_id, read_seq, read_at)` of every member, by user id.
pub async fn read_markers<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
) -> Result<Vec<(Uuid, i64, Option<i64>)>> {
    let rows = sqlx::query(
        "SELECT user_id, read_seq, read_at FROM members WHERE room_id = $1 ORDER BY user_id",
    )
    .bind(room.to_string())
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                uuid(row, "user_id")?,
                row.try_get("read_seq")?,
                row.try_get("read_at")?,
            ))
        })
        .collect()
}
