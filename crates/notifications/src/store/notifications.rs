//! The inbox: one row per (recipient, message), read or unread. Ids are uuid v7, so
//! `id` order is creation order and pages are keyset pages on `id`.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use super::uuid_col;
use crate::domain::{Kind, Notification};

pub(crate) const COLUMNS: &str =
    "id, kind, room_id, message_id, seq, actor_id, preview, created_at, read_at";

pub(crate) fn from_row(row: &AnyRow) -> Result<Notification, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(Notification {
        id: uuid_col(row, "id")?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Message),
        room_id: uuid_col(row, "room_id")?,
        message_id: uuid_col(row, "message_id")?,
        seq: row.try_get("seq")?,
        actor_id: uuid_col(row, "actor_id")?,
        preview: row.try_get("preview")?,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

/// A notification to create.
pub struct New<'a> {
    pub user_id: Uuid,
    pub kind: Kind,
    /// What a `mention` becomes when an edit removes it (see [`withdraw_mention`]).
    pub fallback: Option<Kind>,
    pub room_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    pub actor_id: Uuid,
    pub preview: &'a str,
}

/// Rows per multi-row INSERT: 11 binds a row, so 500 rows are 5,500 binds, under
/// SQLite's 32,766 and PostgreSQL's 65,535; a 1,000-member `@room` is 2 statements
/// instead of 999 round trips.
const INSERT_ROWS: usize = 500;
/// Users per `IN (…)` list of one statement (one bind each), for the same limits.
const IN_LIST: usize = 1_000;

/// Inserts every notification of `new` whose recipient does not have one for the message
/// yet (`ON CONFLICT DO NOTHING`: a redelivered event inserts nothing); returns the
/// `(recipient, kind)` of the rows inserted.
pub async fn insert_many(
    conn: &mut AnyConnection,
    new: &[New<'_>],
) -> Result<Vec<(Uuid, Kind)>, sqlx::Error> {
    let now = kit::time::now_ms();
    let mut inserted = Vec::with_capacity(new.len());
    for chunk in new.chunks(INSERT_ROWS) {
        let rows = (0..chunk.len())
            .map(|i| {
                let b = 10 * i;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10,
                    // push_due_at = created_at: due at once.
                    10 * chunk.len() + 1,
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO notifications (id, user_id, kind, room_id, message_id, seq, actor_id, preview, fallback_kind, created_at, push_due_at)
             VALUES {rows}
             ON CONFLICT (user_id, message_id) DO NOTHING
             RETURNING user_id, kind"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in chunk {
            q = q
                .bind(Uuid::now_v7().to_string())
                .bind(n.user_id.to_string())
                .bind(n.kind.as_str())
                .bind(n.room_id.to_string())
                .bind(n.message_id.to_string())
                .bind(n.seq)
                .bind(n.actor_id.to_string())
                .bind(n.preview)
                .bind(n.fallback.map(Kind::as_str))
                .bind(now);
        }
        let rows = q.bind(now).fetch_all(&mut *conn).await?;
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            inserted.push((
                uuid_col(r, "user_id")?,
                Kind::parse(&kind).unwrap_or(Kind::Message),
            ));
        }
    }
    Ok(inserted)
}

/// Withdraws `user`'s unread `mention` of `message` (an edit removed the mention); true
/// when one was withdrawn. One that is also a reply (its fallback kind) stays, as the
/// reply.
pub async fn withdraw_mention(
    conn: &mut AnyConnection,
    message: Uuid,
    user: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET kind = fallback_kind, fallback_kind = NULL
         WHERE message_id = $1 AND user_id = $2 AND kind = 'mention' AND read_at IS NULL
           AND fallback_kind IS NOT NULL",
    )
    .bind(message.to_string())
    .bind(user.to_string())
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "DELETE FROM notifications
         WHERE message_id = $1 AND user_id = $2 AND kind = 'mention' AND read_at IS NULL",
    )
    .bind(message.to_string())
    .bind(user.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Withdraws every unread notification of a deleted message; returns their recipients.
/// Read ones stay in the list, their preview blanked (the text is gone from chat too).
pub async fn withdraw_message(
    conn: &mut AnyConnection,
    message: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT user_id FROM notifications WHERE message_id = $1 AND read_at IS NULL")
            .bind(message.to_string())
            .fetch_all(&mut *conn)
            .await?;
    let users = rows
        .iter()
        .map(|r| uuid_col(r, "user_id"))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query("DELETE FROM notifications WHERE message_id = $1 AND read_at IS NULL")
        .bind(message.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE notifications SET preview = '' WHERE message_id = $1")
        .bind(message.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(users)
}

/// An edit's new preview into the message's notifications, except for recipients who
/// turned previews off.
pub async fn update_preview(
    conn: &mut AnyConnection,
    message: Uuid,
    preview: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET preview = $2
         WHERE message_id = $1
           AND user_id NOT IN (SELECT user_id FROM preferences WHERE previews = 0)",
    )
    .bind(message.to_string())
    .bind(preview)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `user`'s unread notifications of `room` up to `seq` read; returns how many.
pub async fn read_room(
    conn: &mut AnyConnection,
    user: Uuid,
    room: Uuid,
    seq: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET read_at = $4
         WHERE user_id = $1 AND room_id = $2 AND seq <= $3 AND read_at IS NULL",
    )
    .bind(user.to_string())
    .bind(room.to_string())
    .bind(seq)
    .bind(kit::time::now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks the given notifications of `user` read (others' ids are ignored); how many.
pub async fn read_ids(
    conn: &mut AnyConnection,
    user: Uuid,
    ids: &[Uuid],
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "UPDATE notifications SET read_at = $2
         WHERE user_id = $1 AND read_at IS NULL AND id IN ({})",
        super::placeholders(3, ids.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(kit::time::now_ms());
    for id in ids {
        q = q.bind(id.to_string());
    }
    Ok(q.execute(conn).await?.rows_affected())
}

/// Marks every unread notification of `user` read; how many.
pub async fn read_all(conn: &mut AnyConnection, user: Uuid) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL")
            .bind(user.to_string())
            .bind(kit::time::now_ms())
            .execute(conn)
            .await?;
    Ok(done.rows_affected())
}

/// The unread counts of `users` in one statement per 1,000 users (absent = 0).
pub async fn unread_counts(
    conn: &mut AnyConnection,
    users: &[Uuid],
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let mut counts: HashMap<Uuid, i64> = users.iter().map(|&u| (u, 0)).collect();
    for chunk in users.chunks(IN_LIST) {
        let sql = format!(
            "SELECT user_id, COUNT(*) AS n FROM notifications
             WHERE read_at IS NULL AND user_id IN ({}) GROUP BY user_id",
            super::placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            q = q.bind(u.to_string());
        }
        for r in q.fetch_all(&mut *conn).await? {
            counts.insert(uuid_col(&r, "user_id")?, r.try_get("n")?);
        }
    }
    Ok(counts)
}

pub async fn unread_count<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM notifications WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user.to_string())
    .fetch_one(ex)
    .await?;
    row.try_get("n")
}

/// A page of `user`'s notifications, newest first, strictly older than `before`.
pub async fn list<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    unread_only: bool,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND ($2 = 0 OR read_at IS NULL) AND ($3 = '' OR id < $3)
         ORDER BY id DESC LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(i64::from(unread_only))
        .bind(before.map(|b| b.to_string()).unwrap_or_default())
        .bind(limit)
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// One notification with its recipient and push attempts, for the push worker.
pub async fn get_for_push<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
) -> Result<Option<(Uuid, Notification, i64)>, sqlx::Error> {
    let sql = format!("SELECT user_id, push_attempts, {COLUMNS} FROM notifications WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    row.map(|r| {
        Ok((
            uuid_col(&r, "user_id")?,
            from_row(&r)?,
            r.try_get("push_attempts")?,
        ))
    })
    .transpose()
}
