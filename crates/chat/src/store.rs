//! SQL of the chat service (portable: SQLite and PostgreSQL through sqlx `Any`).
//! As in auth, a function of one statement takes any executor (the pool for reads, a
//! transaction's `tx.conn()` for writes that go with other writes); one that runs
//! several statements (chunked batches, read-then-update) takes the connection.

pub mod search;

use std::sync::LazyLock;

use kit::db::Migration;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};
use uuid::Uuid;

use crate::domain::{Member, Message, Role, Room, RoomEvent};

pub mod reactions;

pub const MIGRATIONS: &[Migration] = &[
    bus::inbox::MIGRATION,
    Migration {
        id: "chat-0001-init",
        sqlite: include_str!("../migrations/0001_init.sql"),
        postgres: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        id: "chat-0002-no-per-row-room-checks",
        // SQLite's foreign-key checks are cheap in-process lookups: kept.
        sqlite: "SELECT 1;",
        postgres: include_str!("../migrations/0002_no_per_row_room_checks.postgres.sql"),
    },
    Migration {
        id: "chat-0003-blocks",
        sqlite: include_str!("../migrations/0003_blocks.sql"),
        postgres: include_str!("../migrations/0003_blocks.sql"),
    },
    Migration {
        id: "chat-0004-mentions-threads",
        sqlite: include_str!("../migrations/0004_mentions_threads.sql"),
        postgres: include_str!("../migrations/0004_mentions_threads.sql"),
    },
    Migration {
        id: "chat-0005-reactions-pins-receipts",
        sqlite: include_str!("../migrations/0005_reactions_pins_receipts.sql"),
        postgres: include_str!("../migrations/0005_reactions_pins_receipts.sql"),
    },
    Migration {
        id: "chat-0006-search",
        sqlite: include_str!("../migrations/0006_search.sqlite.sql"),
        postgres: include_str!("../migrations/0006_search.postgres.sql"),
    },
    Migration {
        id: "chat-0007-attachments",
        sqlite: include_str!("../migrations/0007_attachments.sql"),
        postgres: include_str!("../migrations/0007_attachments.sql"),
    },
];

type Result<T> = std::result::Result<T, sqlx::Error>;

fn uuid(row: &AnyRow, col: &str) -> Result<Uuid> {
    let s: String = row.try_get(col)?;
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn opt_uuid(row: &AnyRow, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

const ROOM_COLS: &str =
    "r.id, r.kind, r.name, r.topic, r.visibility, r.owner_id, r.created_at, r.last_seq,
    (SELECT COUNT(*) FROM members mc WHERE mc.room_id = r.id) AS member_count";

fn room_from(row: &AnyRow) -> Result<Room> {
    Ok(Room {
        id: uuid(row, "id")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        topic: row.try_get("topic")?,
        visibility: row.try_get("visibility")?,
        owner_id: uuid(row, "owner_id")?,
        created_at: row.try_get("created_at")?,
        member_count: row.try_get("member_count")?,
        last_seq: row.try_get("last_seq")?,
    })
}

const MESSAGE_COLS: &str =
    "id, room_id, seq, sender_id, body, client_msg_id, reply_to, created_at, edited_at, deleted,
    mentions, thread_root_id, reply_count, last_reply_at, pinned_at, attachments";

fn message_from(row: &AnyRow) -> Result<Message> {
    let edited_at: Option<i64> = row.try_get("edited_at")?;
    Ok(Message {
        id: uuid(row, "id")?,
        room_id: uuid(row, "room_id")?,
        seq: row.try_get("seq")?,
        sender_id: uuid(row, "sender_id")?,
        body: row.try_get("body")?,
        client_msg_id: row.try_get("client_msg_id")?,
        reply_to: opt_uuid(row, "reply_to")?,
        created_at: kit::time::rfc3339(row.try_get("created_at")?),
        edited_at: edited_at.map(kit::time::rfc3339),
        deleted: kit::db::flag(row.try_get("deleted")?),
        mentions: ids_from_json(&row.try_get::<String, _>("mentions")?)?,
        thread_root_id: opt_uuid(row, "thread_root_id")?,
        reply_count: row.try_get("reply_count")?,
        last_reply_at: row
            .try_get::<Option<i64>, _>("last_reply_at")?
            .map(kit::time::rfc3339),
        reactions: Vec::new(),
        pinned: row.try_get::<Option<i64>, _>("pinned_at")?.is_some(),
        attachments: match row.try_get::<Option<String>, _>("attachments")? {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            }
            None => Vec::new(),
        },
    })
}

/// The `attachments` column: a JSON array, NULL when there are none.
fn attachments_to_json(m: &Message) -> Option<String> {
    if m.attachments.is_empty() {
        return None;
    }
    serde_json::to_string(&m.attachments).ok()
}

/// A JSON array of uuids (the `mentions` column).
fn ids_from_json(s: &str) -> Result<Vec<Uuid>> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn ids_to_json(ids: &[Uuid]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

fn event_from(row: &AnyRow) -> Result<RoomEvent> {
    let payload: String = row.try_get("payload")?;
    Ok(RoomEvent {
        room_id: uuid(row, "room_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        created_at: row.try_get("created_at")?,
        payload: serde_json::from_str(&payload).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

// ---- rooms -------------------------------------------------------------------------

pub struct NewRoom<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub name: &'a str,
    pub topic: &'a str,
    pub visibility: &'a str,
    pub owner_id: Uuid,
    pub dm_key: Option<&'a str>,
    pub created_at: i64,
}

pub async fn insert_room<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    r: &NewRoom<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rooms (id, kind, name, topic, visibility, owner_id, dm_key, created_at, last_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
    )
    .bind(r.id.to_string())
    .bind(r.kind)
    .bind(r.name)
    .bind(r.topic)
    .bind(r.visibility)
    .bind(r.owner_id.to_string())
    .bind(r.dm_key)
    .bind(r.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn room<'e, E: Executor<'e, Database = Any>>(ex: E, id: Uuid) -> Result<Option<Room>> {
    let sql = format!("SELECT {ROOM_COLS} FROM rooms r WHERE r.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(room_from).transpose()
}

pub async fn room_by_dm_key<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    key: &str,
) -> Result<Option<Room>> {
    let sql = format!("SELECT {ROOM_COLS} FROM rooms r WHERE r.dm_key = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(room_from).transpose()
}

pub async fn set_owner<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    owner: Uuid,
) -> Result<()> {
    sqlx::query("UPDATE rooms SET owner_id = $1 WHERE id = $2")
        .bind(owner.to_string())
        .bind(room.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// Takes the room's next seq. The row lock (PostgreSQL) / write lock (SQLite) it takes
/// is held until commit, so seqs commit in order and without holes.
pub async fn next_seq<'e, E: Executor<'e, Database = Any>>(ex: E, room: Uuid) -> Result<i64> {
    sqlx::query_scalar("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq")
        .bind(room.to_string())
        .fetch_one(ex)
        .await
}

/// The caller's rooms with role, read marker, unread count; `after` is an id cursor.
pub async fn my_rooms<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Room, Role, i64, i64)>> {
    let sql = format!(
        "SELECT {ROOM_COLS}, m.role, m.read_seq,
            (SELECT COUNT(*) FROM messages x WHERE x.room_id = r.id AND x.seq > m.read_seq
               AND x.sender_id <> $1 AND x.deleted = 0) AS unread_count
         FROM members m JOIN rooms r ON r.id = m.room_id
         WHERE m.user_id = $1 AND r.id > $2
         ORDER BY r.id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(after.map(|u| u.to_string()).unwrap_or_default())
        .bind(limit)
        .fetch_all(ex)
        .await?;
    rows.iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok((
                room_from(row)?,
                Role::parse(&role).unwrap_or(Role::Member),
                row.try_get("read_seq")?,
                row.try_get("unread_count")?,
            ))
        })
        .collect()
}

/// Public channels whose name contains `q` (case-insensitive).
pub async fn discover<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    q: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Room>> {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let sql = format!(
        "SELECT {ROOM_COLS} FROM rooms r
         WHERE r.visibility = 'public' AND r.kind = 'channel' AND r.id > $1
           AND LOWER(r.name) LIKE $2 ESCAPE '\\'
         ORDER BY r.id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.map(|u| u.to_string()).unwrap_or_default())
        .bind(format!("%{escaped}%"))
        .bind(limit)
        .fetch_all(ex)
        .await?;
    rows.iter().map(room_from).collect()
}

/// `(room_id, last_seq)` of the given rooms.
pub async fn last_seqs(conn: &mut AnyConnection, rooms: &[Uuid]) -> Result<Vec<(Uuid, i64)>> {
    let mut out = Vec::with_capacity(rooms.len());
    for chunk in rooms.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, last_seq FROM rooms WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push((uuid(&row, "id")?, row.try_get("last_seq")?));
        }
    }
    Ok(out)
}

// ---- members -----------------------------------------------------------------------

pub async fn role<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    user: Uuid,
) -> Result<Option<Role>> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM members WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .fetch_optional(ex)
            .await?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// Adds a member; false when they already were one.
pub async fn add_member<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    user: Uuid,
    role: Role,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO members (room_id, user_id, role, joined_at, read_seq) VALUES ($1, $2, $3, $4, 0)
         ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(room.to_string())
    .bind(user.to_string())
    .bind(role.as_str())
    .bind(now)
    .execute(ex)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn remove_member<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    user: Uuid,
) -> Result<bool> {
    let n = sqlx::query("DELETE FROM members WHERE room_id = $1 AND user_id = $2")
        .bind(room.to_string())
        .bind(user.to_string())
        .execute(ex)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub async fn set_role<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    user: Uuid,
    role: Role,
) -> Result<()> {
    sqlx::query("UPDATE members SET role = $1 WHERE room_id = $2 AND user_id = $3")
        .bind(role.as_str())
        .bind(room.to_string())
        .bind(user.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// The longest-standing member, admins first (the next owner when the owner leaves).
pub async fn successor<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
) -> Result<Option<Uuid>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM members WHERE room_id = $1
         ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1",
    )
    .bind(room.to_string())
    .fetch_optional(ex)
    .await?;
    Ok(id.and_then(|s| s.parse().ok()))
}

pub async fn members<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Member>> {
    let rows = sqlx::query(
        "SELECT user_id, role, joined_at FROM members WHERE room_id = $1 AND user_id > $2
         ORDER BY user_id LIMIT $3",
    )
    .bind(room.to_string())
    .bind(after.map(|u| u.to_string()).unwrap_or_default())
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok(Member {
                user_id: uuid(row, "user_id")?,
                role: Role::parse(&role).unwrap_or(Role::Member),
                joined_at: row.try_get("joined_at")?,
            })
        })
        .collect()
}

/// Ids of the rooms `user` is a member of.
pub async fn room_ids_of<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    user: Uuid,
) -> Result<Vec<Uuid>> {
    let rows = sqlx::query("SELECT room_id FROM members WHERE user_id = $1")
        .bind(user.to_string())
        .fetch_all(ex)
        .await?;
    rows.iter().map(|r| uuid(r, "room_id")).collect()
}

/// Moves the read marker forward (never back), capped at the room's last seq, and
/// stamps `read_at`. Returns the new marker when it moved (None: it was already there).
pub async fn mark_read<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    user: Uuid,
    seq: i64,
    now: i64,
) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "UPDATE members SET read_seq = (SELECT CASE WHEN $1 < r.last_seq THEN $1 ELSE r.last_seq END
                                         FROM rooms r WHERE r.id = $2),
                            read_at = $4
         WHERE room_id = $2 AND user_id = $3
           AND read_seq < (SELECT CASE WHEN $1 < r.last_seq THEN $1 ELSE r.last_seq END
                             FROM rooms r WHERE r.id = $2)
         RETURNING read_seq",
    )
    .bind(seq)
    .bind(room.to_string())
    .bind(user.to_string())
    .bind(now)
    .fetch_optional(ex)
    .await
}

// ---- messages ----------------------------------------------------------------------

pub async fn message<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
) -> Result<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(message_from).transpose()
}

/// Sets a message's body, edit time, tombstone flag and mentions (an edit re-resolves them;
/// a deletion clears them).
pub async fn update_message<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
    body: &str,
    edited_at: Option<i64>,
    deleted: bool,
    mentions: &[Uuid],
) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET body = $1, edited_at = $2, deleted = $3, mentions = $4 WHERE id = $5",
    )
    .bind(body)
    .bind(edited_at)
    .bind(i64::from(deleted))
    .bind(ids_to_json(mentions))
    .bind(id.to_string())
    .execute(ex)
    .await?;
    Ok(())
}

/// Empties a deleted message's attachments.
pub async fn clear_attachments<'e, E: Executor<'e, Database = Any>>(ex: E, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE messages SET attachments = NULL WHERE id = $1")
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn last_message<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
) -> Result<Option<Message>> {
    let sql =
        format!("SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 ORDER BY seq DESC LIMIT 1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.to_string())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(message_from).transpose()
}

/// A page of the room's top-level messages (thread replies are listed by [`thread`]) in
/// ascending seq order, and whether more exist in the direction of the query (older
/// without `after`, newer with it).
pub async fn history<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    before: Option<i64>,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Message>, bool)> {
    let upper = before.unwrap_or(i64::MAX);
    let (sql, lower) = match after {
        Some(a) => (
            format!(
                "SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3
                   AND thread_root_id IS NULL
                 ORDER BY seq ASC LIMIT $4"
            ),
            a,
        ),
        None => (
            format!(
                "SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3
                   AND thread_root_id IS NULL
                 ORDER BY seq DESC LIMIT $4"
            ),
            0,
        ),
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room.to_string())
        .bind(lower)
        .bind(upper)
        .bind(limit + 1)
        .fetch_all(ex)
        .await?;
    let mut items = rows.iter().map(message_from).collect::<Result<Vec<_>>>()?;
    let has_more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    if after.is_none() {
        items.reverse();
    }
    Ok((items, has_more))
}

/// A page of the replies in the thread of `root` with `seq > after`, ascending, and
/// whether more follow.
pub async fn thread<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    root: Uuid,
    after: i64,
    limit: i64,
) -> Result<(Vec<Message>, bool)> {
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE thread_root_id = $1 AND seq > $2
         ORDER BY seq ASC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(root.to_string())
        .bind(after)
        .bind(limit + 1)
        .fetch_all(ex)
        .await?;
    let mut items = rows.iter().map(message_from).collect::<Result<Vec<_>>>()?;
    let has_more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    Ok((items, has_more))
}

/// Counts `n` new replies on each thread root (the send writer, in the batch's
/// transaction).
pub async fn bump_threads(conn: &mut AnyConnection, roots: &[(Uuid, i64)], at: i64) -> Result<()> {
    for (root, n) in roots {
        sqlx::query(
            "UPDATE messages SET reply_count = reply_count + $1, last_reply_at = $2 WHERE id = $3",
        )
        .bind(*n)
        .bind(at)
        .bind(root.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

// ---- mentions ----------------------------------------------------------------------

/// The members of `room` among `usernames` (lower-case) — or every member when
/// `everyone` (`@room`) — in id order.
pub async fn resolve_mentions(
    conn: &mut AnyConnection,
    room: Uuid,
    usernames: &[String],
    everyone: bool,
) -> Result<Vec<Uuid>> {
    let rows = if everyone {
        return member_ids(&mut *conn, room).await;
    } else if usernames.is_empty() {
        Vec::new()
    } else {
        let sql = format!(
            "SELECT m.user_id FROM usernames u JOIN members m ON m.user_id = u.user_id
             WHERE m.room_id = $1 AND u.username IN ({}) ORDER BY m.user_id",
            list(usernames.len(), 2)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room.to_string());
        for name in usernames {
            q = q.bind(name.as_str());
        }
        q.fetch_all(&mut *conn).await?
    };
    rows.iter().map(|r| uuid(r, "user_id")).collect()
}

/// The ids of the room's members, in id order.
pub async fn member_ids<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
) -> Result<Vec<Uuid>> {
    let rows = sqlx::query("SELECT user_id FROM members WHERE room_id = $1 ORDER BY user_id")
        .bind(room.to_string())
        .fetch_all(ex)
        .await?;
    rows.iter().map(|r| uuid(r, "user_id")).collect()
}

/// What chat keeps of a deleted account besides its memberships (which leave first,
/// with their room events): its messages stay with the tombstone sender
/// ([`crate::domain::DELETED_SENDER`], shown as `sender_id: null`) and without
/// `client_msg_id` (unique per sender, and every deleted sender shares the tombstone);
/// the stored room-event payloads of those messages are rewritten to say
/// `"sender_id":null` (the event log is history too); the username copy goes (so
/// `@name` no longer resolves to it). Returns the messages changed. Idempotent.
pub async fn forget_sender(conn: &mut AnyConnection, user: Uuid) -> Result<u64> {
    // Payloads are serde_json's compact form: the field is exactly `"sender_id":"<id>"`.
    sqlx::query(
        "UPDATE room_events SET payload = REPLACE(payload, $1, '\"sender_id\":null')
         WHERE message_id IN (SELECT id FROM messages WHERE sender_id = $2)",
    )
    .bind(format!("\"sender_id\":\"{user}\""))
    .bind(user.to_string())
    .execute(&mut *conn)
    .await?;
    let changed = sqlx::query(
        "UPDATE messages SET sender_id = $1, client_msg_id = NULL WHERE sender_id = $2",
    )
    .bind(crate::domain::DELETED_SENDER.to_string())
    .bind(user.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM usernames WHERE user_id = $1")
        .bind(user.to_string())
        .execute(conn)
        .await?;
    Ok(changed)
}

/// Records usernames (from auth's events or the user service's backfill).
pub async fn upsert_usernames(conn: &mut AnyConnection, rows: &[(Uuid, String)]) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO usernames (user_id, username) VALUES {}
             ON CONFLICT (user_id) DO UPDATE SET username = excluded.username",
            placeholders(chunk.len(), 2, 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, name) in chunk {
            q = q.bind(id.to_string()).bind(name.to_lowercase());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

// ---- room events -------------------------------------------------------------------

pub async fn insert_event<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    e: &RoomEvent,
    message_id: Option<Uuid>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO room_events (room_id, seq, kind, payload, message_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.room_id.to_string())
    .bind(e.seq)
    .bind(&e.kind)
    .bind(e.payload.to_string())
    .bind(message_id.map(|u| u.to_string()))
    .bind(e.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

/// Rewrites the payload of every earlier event of a message (a deleted body must not
/// stay readable through the event log).
pub async fn scrub_message_events<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    message_id: Uuid,
    payload: &serde_json::Value,
) -> Result<()> {
    sqlx::query("UPDATE room_events SET payload = $1 WHERE message_id = $2")
        .bind(payload.to_string())
        .bind(message_id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

/// Events with `after < seq < before`, ascending, at most `limit`.
pub async fn events<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    room: Uuid,
    after: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<RoomEvent>> {
    let rows = sqlx::query(
        "SELECT room_id, seq, kind, payload, created_at FROM room_events
         WHERE room_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4",
    )
    .bind(room.to_string())
    .bind(after)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter().map(event_from).collect()
}

// ---- batched message writes (the send writer, see `writer`) -------------------------

/// Rows per multi-row statement (well under both backends' bind-parameter limits).
const ROWS_PER_STATEMENT: usize = 200;

fn placeholders(rows: usize, cols: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(first + r * cols + c).to_string());
        }
        sql.push(')');
    }
    sql
}

fn list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A sender's membership as the send writer sees it.
#[derive(Clone, Debug)]
pub struct SendRoom {
    /// The room is a DM whose pair is blocked (by either side, in chat's copy of the
    /// blocks): a send there is refused.
    pub dm_blocked: bool,
    pub kind: String,
    pub name: String,
    /// `min|max` of the DM's pair (its recipients, for the bus event).
    pub dm_key: Option<String>,
}

/// Which of the `(room, user)` pairs are memberships (one query for all of them, one
/// index probe per pair), each with what the send needs to know of the room.
pub async fn memberships(
    conn: &mut AnyConnection,
    pairs: &[(Uuid, Uuid)],
) -> Result<std::collections::HashMap<(Uuid, Uuid), SendRoom>> {
    let mut out = std::collections::HashMap::new();
    for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
        let cond = (0..chunk.len())
            .map(|i| {
                format!(
                    "(m.room_id = ${} AND m.user_id = ${})",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        // Channels have no dm_key, so the block probe finds nothing for them at once.
        let sql = format!(
            "SELECT m.room_id, m.user_id, r.kind, r.name, r.dm_key,
                (SELECT COUNT(*) FROM blocks b WHERE b.pair_key = r.dm_key AND b.active = 1) AS blocks
             FROM members m JOIN rooms r ON r.id = m.room_id WHERE {cond}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (room, user) in chunk {
            q = q.bind(room.to_string()).bind(user.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let blocks: i64 = row.try_get("blocks")?;
            out.insert(
                (uuid(&row, "room_id")?, uuid(&row, "user_id")?),
                SendRoom {
                    dm_blocked: blocks > 0,
                    kind: row.try_get("kind")?,
                    name: row.try_get("name")?,
                    dm_key: row.try_get("dm_key")?,
                },
            );
        }
    }
    Ok(out)
}

// ---- blocks (copy of the user service's) -------------------------------------------

/// Applies a `user.blocked` (`active`) or `user.unblocked` event whose id is `version`,
/// unless the pair already carries a newer one.
pub async fn apply_block(
    conn: &mut AnyConnection,
    blocker: Uuid,
    blocked: Uuid,
    active: bool,
    version: &str,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO blocks (blocker_id, blocked_id, pair_key, active, version)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (blocker_id, blocked_id) DO NOTHING",
    )
    .bind(blocker.to_string())
    .bind(blocked.to_string())
    .bind(crate::domain::dm_key(blocker, blocked))
    .bind(i64::from(active))
    .bind(version)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(());
    }
    // Versions are compared here, not in SQL: PostgreSQL's collation need not order
    // strings by bytes. The UPDATE only applies over the version read (another consumer
    // may have written meanwhile: read again).
    for _ in 0..3 {
        let current: Option<String> = sqlx::query_scalar(
            "SELECT version FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
        )
        .bind(blocker.to_string())
        .bind(blocked.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(current) = current else { break };
        if version <= current.as_str() {
            return Ok(());
        }
        let n = sqlx::query(
            "UPDATE blocks SET active = $1, version = $2
             WHERE blocker_id = $3 AND blocked_id = $4 AND version = $5",
        )
        .bind(i64::from(active))
        .bind(version)
        .bind(blocker.to_string())
        .bind(blocked.to_string())
        .bind(&current)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether `room` is a DM whose members block each other (either way).
pub async fn dm_blocked<'e, E: Executor<'e, Database = Any>>(ex: E, room: Uuid) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM rooms r JOIN blocks b ON b.pair_key = r.dm_key
         WHERE r.id = $1 AND b.active = 1",
    )
    .bind(room.to_string())
    .fetch_one(ex)
    .await?;
    Ok(n > 0)
}

/// Adds backfilled block edges (version ''): a pair that an event already set keeps
/// what the event said.
pub async fn backfill_blocks(conn: &mut AnyConnection, edges: &[(Uuid, Uuid)]) -> Result<()> {
    for chunk in edges.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO blocks (blocker_id, blocked_id, pair_key, active, version) VALUES {}
             ON CONFLICT (blocker_id, blocked_id) DO NOTHING",
            placeholders(chunk.len(), 3, 1).replace(')', ", 1, '')")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (blocker, blocked) in chunk {
            q = q
                .bind(blocker.to_string())
                .bind(blocked.to_string())
                .bind(crate::domain::dm_key(*blocker, *blocked));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The stored messages of the given `(sender, client_msg_id)` pairs.
pub async fn messages_by_client_ids(
    conn: &mut AnyConnection,
    keys: &[(Uuid, &str)],
) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        // One index probe per key on both backends (an `IN (…) AND IN (…)` would probe
        // the cross product).
        let cond = (0..chunk.len())
            .map(|i| {
                format!(
                    "(sender_id = ${} AND client_msg_id = ${})",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE {cond}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (sender, cmid) in chunk {
            q = q.bind(sender.to_string()).bind(*cmid);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(message_from(&row)?);
        }
    }
    Ok(out)
}

/// Takes `count` seqs in each room at once: returns each room's new `last_seq` (the
/// room's seqs are `last_seq - count + 1 ..= last_seq`). The row locks are held until
/// commit, as with [`next_seq`].
pub async fn take_seqs(
    conn: &mut AnyConnection,
    rooms: &[(Uuid, i64)],
) -> Result<Vec<(Uuid, i64)>> {
    let mut out = Vec::with_capacity(rooms.len());
    for chunk in rooms.chunks(ROWS_PER_STATEMENT) {
        let mut case = String::from("CASE id");
        for i in 0..chunk.len() {
            case.push_str(&format!(
                " WHEN ${} THEN CAST(${} AS BIGINT)",
                2 * i + 1,
                2 * i + 2
            ));
        }
        case.push_str(" ELSE 0 END");
        let sql = format!(
            "UPDATE rooms SET last_seq = last_seq + {case} WHERE id IN ({}) RETURNING id, last_seq",
            list(chunk.len(), 2 * chunk.len() + 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (room, n) in chunk {
            q = q.bind(room.to_string()).bind(*n);
        }
        for (room, _) in chunk {
            q = q.bind(room.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push((uuid(&row, "id")?, row.try_get("last_seq")?));
        }
    }
    Ok(out)
}

/// The PostgreSQL statement of [`insert_sends`]: messages (`$1`), room events (`$2`) and
/// outbox rows (`$3`, created at `$4`) as JSON arrays. The outbox part is the bus's own
/// statement ([`bus::outbox::pg_insert_json`]) as a third CTE rather than a call to
/// `bus::outbox::enqueue_many`: that would be a second round trip per batch, and the
/// send path is the hot path (chat need not know the outbox's table layout either way).
static INSERT_SENDS_PG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH m AS (
             INSERT INTO messages (id, room_id, seq, sender_id, body, client_msg_id, reply_to, created_at, edited_at, deleted,
                  mentions, thread_root_id, attachments)
             SELECT id, room_id, seq, sender_id, body, client_msg_id, reply_to, created_at, NULL, 0,
                  mentions, thread_root_id, attachments
             FROM json_to_recordset($1::json) AS x(id text, room_id text, seq bigint, sender_id text,
                  body text, client_msg_id text, reply_to text, created_at bigint, mentions text,
                  thread_root_id text, attachments text)
             ON CONFLICT (sender_id, client_msg_id) DO NOTHING
             RETURNING id),
         e AS (
             INSERT INTO room_events (room_id, seq, kind, payload, message_id, created_at)
             SELECT room_id, seq, kind, payload, message_id, created_at
             FROM json_to_recordset($2::json) AS x(room_id text, seq bigint, kind text, payload text,
                  message_id text, created_at bigint)),
         o AS ({})
         SELECT id FROM m",
        bus::outbox::pg_insert_json(3, 4)
    )
});

/// Stores a batch of new messages with their room events and outbox rows (the three
/// slices are parallel: one entry per message). On PostgreSQL the three inserts are ONE
/// statement (data-modifying CTEs) whose rows arrive as three JSON arrays: one round
/// trip, and the same statement text for every batch size, so it is parsed and planned
/// once per connection (multi-row VALUES of varying length were planned on every
/// batch). Returns the ids of the messages actually inserted (see [`insert_messages`]);
/// when some are missing the caller must roll back (their events were inserted too).
pub async fn insert_sends(
    conn: &mut AnyConnection,
    messages: &[(&Message, i64)],
    events: &[(&RoomEvent, Option<Uuid>)],
    outbox: &[bus::Envelope],
) -> Result<std::collections::HashSet<Uuid>> {
    if conn.backend_name() != "PostgreSQL" {
        let inserted = insert_messages(conn, messages).await?;
        insert_events(conn, events).await?;
        bus::outbox::enqueue_many(conn, outbox).await?;
        return Ok(inserted);
    }
    let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
    let message_rows: Vec<serde_json::Value> = messages
        .iter()
        .map(|(m, created_at)| {
            serde_json::json!({
                "id": m.id, "room_id": m.room_id, "seq": m.seq, "sender_id": m.sender_id,
                "body": m.body, "client_msg_id": m.client_msg_id, "reply_to": m.reply_to,
                "created_at": created_at, "mentions": ids_to_json(&m.mentions),
                "thread_root_id": m.thread_root_id, "attachments": attachments_to_json(m),
            })
        })
        .collect();
    let event_rows: Vec<serde_json::Value> = events
        .iter()
        .map(|(e, message_id)| {
            serde_json::json!({
                "room_id": e.room_id, "seq": e.seq, "kind": e.kind,
                "payload": e.payload.to_string(), "message_id": message_id,
                "created_at": e.created_at,
            })
        })
        .collect();
    let rows = sqlx::query(INSERT_SENDS_PG.as_str())
        .bind(serde_json::to_string(&message_rows).map_err(encode)?)
        .bind(serde_json::to_string(&event_rows).map_err(encode)?)
        .bind(bus::outbox::json_rows(outbox)?)
        .bind(kit::time::now_ms())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| uuid(row, "id")).collect()
}

/// Inserts the messages with one multi-row statement per chunk; a message whose
/// `(sender_id, client_msg_id)` is already stored is skipped, not an error. Returns the
/// ids actually inserted.
pub async fn insert_messages(
    conn: &mut AnyConnection,
    messages: &[(&Message, i64)],
) -> Result<std::collections::HashSet<Uuid>> {
    let mut inserted = std::collections::HashSet::with_capacity(messages.len());
    for chunk in messages.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO messages (id, room_id, seq, sender_id, body, client_msg_id, reply_to, created_at,
                  mentions, thread_root_id, attachments, edited_at, deleted)
             VALUES {}
             ON CONFLICT (sender_id, client_msg_id) DO NOTHING RETURNING id",
            placeholders(chunk.len(), 11, 1).replace(')', ", NULL, 0)")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (m, created_at) in chunk {
            q = q
                .bind(m.id.to_string())
                .bind(m.room_id.to_string())
                .bind(m.seq)
                .bind(m.sender_id.to_string())
                .bind(m.body.as_str())
                .bind(m.client_msg_id.as_deref())
                .bind(m.reply_to.map(|u| u.to_string()))
                .bind(*created_at)
                .bind(ids_to_json(&m.mentions))
                .bind(m.thread_root_id.map(|u| u.to_string()))
                .bind(attachments_to_json(m));
        }
        for row in q.fetch_all(&mut *conn).await? {
            inserted.insert(uuid(&row, "id")?);
        }
    }
    Ok(inserted)
}

/// Inserts room events with one multi-row statement per chunk.
pub async fn insert_events(
    conn: &mut AnyConnection,
    events: &[(&RoomEvent, Option<Uuid>)],
) -> Result<()> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO room_events (room_id, seq, kind, payload, message_id, created_at) VALUES {}",
            placeholders(chunk.len(), 6, 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, message_id) in chunk {
            q = q
                .bind(e.room_id.to_string())
                .bind(e.seq)
                .bind(e.kind.as_str())
                .bind(e.payload.to_string())
                .bind(message_id.map(|u| u.to_string()))
                .bind(e.created_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
