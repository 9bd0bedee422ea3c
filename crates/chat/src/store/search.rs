//! SQL of message search (see `crate::search` for the text side and scoring, and
//! migrations/0006_search.*.sql for the tables). The index is written in the transaction
//! of the change it follows: a send batch, an edit, a deletion.
//!
//! A query fetches the newest [`CANDIDATES`] messages that match it in the caller's
//! rooms; `crate::search::score` ranks them in Rust. A word in most messages ("the",
//! "ok") would otherwise have every search rank tens of thousands of rows (0.6 s on
//! PostgreSQL at 1,000,000 messages); the newest 200 are 10 pages of 20. Rare terms have
//! fewer matches than that, so for them every match is ranked.

use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::{MESSAGE_COLS, ROWS_PER_STATEMENT, Result, message_from, placeholders, uuid};
use crate::domain::Message;
use crate::search::{self, Term};

/// Matches ranked per query at most (the newest ones; see the module docs).
pub const CANDIDATES: i64 = 200;

fn is_pg(conn: &AnyConnection) -> bool {
    conn.backend_name() == "PostgreSQL"
}

/// The FTS5 token of a room (see the migration).
fn room_token(room: Uuid) -> String {
    format!("r{}", room.simple())
}

/// The PostgreSQL lexeme of a room, stored in each message's tsvector so the GIN index
/// intersects a query with the caller's rooms. `#` never starts a body term (those are
/// letters and digits), so no query word can match it.
fn room_lexeme(room: Uuid) -> String {
    search::pg_lexeme(&format!("#{}", room.simple()))
}

/// A message's tsvector literal: its terms with positions, and its room.
fn tsvector(m: &Message) -> String {
    let terms = search::tsvector(&m.body);
    let room = room_lexeme(m.room_id);
    if terms.is_empty() {
        room
    } else {
        format!("{terms} {room}")
    }
}

/// Indexes new messages (the send writer's batch: each with its `created_at` in epoch
/// ms). PostgreSQL: one statement for the whole batch (rows as a JSON array, one round
/// trip, one plan). SQLite: two in-process statements per 200 rows (the mapping row, then
/// the FTS row under its id). A message already indexed is left as it is.
pub async fn index(conn: &mut AnyConnection, messages: &[(&Message, i64)]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    if is_pg(conn) {
        let rows: Vec<serde_json::Value> = messages
            .iter()
            .map(|(m, created_at)| {
                serde_json::json!({
                    "message_id": m.id, "room_id": m.room_id, "created_at": created_at,
                    "tsv": tsvector(m),
                })
            })
            .collect();
        let json = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO message_search (message_id, room_id, created_at, tsv)
             SELECT message_id, room_id, created_at, CAST(tsv AS tsvector)
             FROM json_to_recordset($1::json)
                  AS x(message_id text, room_id text, created_at bigint, tsv text)
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(json)
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    for chunk in messages.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO message_search (message_id, room_id, created_at) VALUES {}
             ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id",
            placeholders(chunk.len(), 3, 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (m, created_at) in chunk {
            q = q
                .bind(m.id.to_string())
                .bind(m.room_id.to_string())
                .bind(*created_at);
        }
        let ids: Vec<(i64, Uuid)> = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("id")?, uuid(row, "message_id")?)))
            .collect::<Result<_>>()?;
        if ids.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO message_fts (rowid, room, body) VALUES {}",
            placeholders(ids.len(), 3, 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (rowid, id) in &ids {
            let Some((m, _)) = chunk.iter().find(|(m, _)| m.id == *id) else {
                return Err(sqlx::Error::RowNotFound);
            };
            q = q
                .bind(*rowid)
                .bind(room_token(m.room_id))
                .bind(search::terms(&m.body).join(" "));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Re-indexes an edited message (indexes it if it was not: a message stored before the
/// index existed and not yet reached by the backfill).
pub async fn reindex(conn: &mut AnyConnection, m: &Message) -> Result<()> {
    if is_pg(conn) {
        sqlx::query(
            "INSERT INTO message_search (message_id, room_id, created_at, tsv)
             SELECT id, room_id, created_at, CAST($2 AS tsvector) FROM messages WHERE id = $1
             ON CONFLICT (message_id) DO UPDATE SET tsv = EXCLUDED.tsv",
        )
        .bind(m.id.to_string())
        .bind(tsvector(m))
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT id FROM message_search WHERE message_id = $1")
            .bind(m.id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    let rowid = match existing {
        Some(rowid) => {
            sqlx::query("DELETE FROM message_fts WHERE rowid = $1")
                .bind(rowid)
                .execute(&mut *conn)
                .await?;
            rowid
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO message_search (message_id, room_id, created_at)
                 SELECT id, room_id, created_at FROM messages WHERE id = $1 RETURNING id",
            )
            .bind(m.id.to_string())
            .fetch_one(&mut *conn)
            .await?
        }
    };
    sqlx::query("INSERT INTO message_fts (rowid, room, body) VALUES ($1, $2, $3)")
        .bind(rowid)
        .bind(room_token(m.room_id))
        .bind(search::terms(&m.body).join(" "))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes a deleted message from the index.
pub async fn unindex(conn: &mut AnyConnection, id: Uuid) -> Result<()> {
    if !is_pg(conn) {
        sqlx::query(
            "DELETE FROM message_fts WHERE rowid = (SELECT id FROM message_search WHERE message_id = $1)",
        )
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM message_search WHERE message_id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Unordered GIN matches fetched at most before switching to the newest-first scan
/// (PostgreSQL; see [`candidates`]). Both passes fetch rows scattered over the table: the
/// GIN pass up to this many, the newest-first pass about CANDIDATES × 50,000 / this many
/// for a user whose rooms hold 50,000 messages; 3,000 keeps both near 3,000.
const PG_GIN_MATCHES: i64 = 3000;

/// The newest [`CANDIDATES`] live messages matching `terms` in the rooms `user` is a
/// member of now (only `room` when given), each with its `created_at` in epoch ms, in no
/// particular order.
///
/// SQLite: one FTS5 query; the caller's rooms are ANDed in the MATCH expression and FTS5
/// walks the doclists newest rowid first, so it stops after [`CANDIDATES`] matches.
/// PostgreSQL's GIN index has no order: first the matches in the caller's rooms (rooms
/// as lexemes in the tsquery, intersected inside the index), at most [`PG_GIN_MATCHES`];
/// when there are fewer, that is all of them. Otherwise the terms are common, and a scan
/// of `(created_at, room_id)` newest first, filtered by room inside the index, finds
/// [`CANDIDATES`] matches after a few thousand rows of the caller's rooms
/// (`ts_match_vq`, the function form of `@@`, keeps the planner off the GIN index there).
pub async fn candidates(
    conn: &mut AnyConnection,
    user: Uuid,
    room: Option<Uuid>,
    terms: &[Term],
) -> Result<Vec<(Message, i64)>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let rooms = match room {
        Some(r) => vec![r],
        None => super::room_ids_of(&mut *conn, user).await?,
    };
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = if is_pg(conn) {
        let rooms_query = rooms
            .iter()
            .map(|r| room_lexeme(*r))
            .collect::<Vec<_>>()
            .join(" | ");
        let q = format!("{} & ({rooms_query})", search::tsquery(terms));
        let rows = sqlx::query(
            "SELECT message_id, created_at FROM message_search
             WHERE tsv @@ CAST($1 AS tsquery) LIMIT $2",
        )
        .bind(&q)
        .bind(PG_GIN_MATCHES)
        .fetch_all(&mut *conn)
        .await?;
        let mut found: Vec<(i64, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get("created_at")?, r.try_get("message_id")?)))
            .collect::<Result<_>>()?;
        if found.len() as i64 >= PG_GIN_MATCHES {
            let array = format!(
                "{{{}}}",
                rooms
                    .iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let rows = sqlx::query(
                "SELECT message_id, created_at FROM message_search
                 WHERE room_id = ANY(CAST($2 AS text[])) AND ts_match_vq(tsv, CAST($1 AS tsquery))
                 ORDER BY created_at DESC LIMIT $3",
            )
            .bind(search::tsquery(terms))
            .bind(array)
            .bind(CANDIDATES)
            .fetch_all(&mut *conn)
            .await?;
            found = rows
                .iter()
                .map(|r| Ok((r.try_get("created_at")?, r.try_get("message_id")?)))
                .collect::<Result<_>>()?;
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.truncate(CANDIDATES as usize);
        found.into_iter().map(|(_, id)| id).collect()
    } else {
        let rooms = rooms
            .into_iter()
            .map(room_token)
            .collect::<Vec<_>>()
            .join(" OR ");
        let query = format!(
            "room : ({rooms}) AND body : ({})",
            search::fts5_query(terms)
        );
        sqlx::query_scalar(
            "SELECT s.message_id FROM (
                 SELECT rowid AS id FROM message_fts WHERE message_fts MATCH $1
                 ORDER BY rowid DESC LIMIT $2) f
             JOIN message_search s ON s.id = f.id",
        )
        .bind(query)
        .bind(CANDIDATES)
        .fetch_all(&mut *conn)
        .await?
    };
    let ids: Vec<Uuid> = ids.iter().filter_map(|s| s.parse().ok()).collect();
    messages_by_ids(conn, &ids).await
}

/// The live messages with these ids, each with its `created_at` in epoch ms (any order;
/// missing and deleted ones are left out).
pub async fn messages_by_ids(
    conn: &mut AnyConnection,
    ids: &[Uuid],
) -> Result<Vec<(Message, i64)>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE id IN ({}) AND deleted = 0",
            super::list(chunk.len(), 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push((message_from(&row)?, row.try_get("created_at")?));
        }
    }
    Ok(out)
}

/// Indexes up to `n` stored messages that are not indexed yet (live, not deleted), the
/// oldest first; returns how many it found. For messages stored before the index
/// existed (see `events::backfill_search`).
pub async fn backfill(conn: &mut AnyConnection, n: i64) -> Result<usize> {
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages x
         WHERE x.deleted = 0
           AND NOT EXISTS (SELECT 1 FROM message_search s WHERE s.message_id = x.id)
         ORDER BY x.created_at, x.id LIMIT $1"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(n)
        .fetch_all(&mut *conn)
        .await?;
    let mut batch = Vec::with_capacity(rows.len());
    for row in &rows {
        let created_at: i64 = row.try_get("created_at")?;
        batch.push((message_from(row)?, created_at));
    }
    let refs: Vec<(&Message, i64)> = batch.iter().map(|(m, c)| (m, *c)).collect();
    index(conn, &refs).await?;
    Ok(refs.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The backfill of messages stored before the index, on both backends (through HTTP
    //! every message is indexed when stored; tests/search.rs covers that path).

    use kit::db::{Backend, Db};

    use super::*;
    use crate::domain::Role;
    use crate::search::parse_query;
    use crate::store;

    kit::backend_tests!(backfill_indexes_older_live_messages_once);

    fn message(room: Uuid, seq: i64, body: &str) -> Message {
        serde_json::from_value(serde_json::json!({
            "id": Uuid::now_v7(), "room_id": room, "seq": seq, "sender_id": Uuid::now_v7(),
            "body": body, "client_msg_id": null, "reply_to": null,
            "created_at": kit::time::rfc3339(seq), "edited_at": null, "deleted": false,
        }))
        .unwrap()
    }

    async fn backfill_indexes_older_live_messages_once(backend: Backend) {
        let Some(test_db) = kit::testing::test_db(backend, "search_backfill").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(test_db.url.as_deref(), dir.path(), "chat")
            .await
            .unwrap();
        db.migrate(store::MIGRATIONS).await.unwrap();
        let (room, user) = (Uuid::now_v7(), Uuid::now_v7());
        let mut tx = db.begin().await.unwrap();
        store::insert_room(
            tx.conn(),
            &store::NewRoom {
                id: room,
                kind: "channel",
                name: "r",
                topic: "",
                visibility: "public",
                owner_id: user,
                dm_key: None,
                created_at: 0,
            },
        )
        .await
        .unwrap();
        store::add_member(tx.conn(), room, user, Role::Owner, 0)
            .await
            .unwrap();
        // Stored without the index, as before migration 0006; one of them deleted.
        let msgs = [
            message(room, 1, "alpha one"),
            message(room, 2, "alpha two"),
            message(room, 3, "alpha gone"),
        ];
        let rows: Vec<(&Message, i64)> = msgs.iter().map(|m| (m, m.seq)).collect();
        store::insert_messages(tx.conn(), &rows).await.unwrap();
        store::update_message(tx.conn(), msgs[2].id, "", None, true, &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let terms = parse_query("alpha");
        let mut conn = db.pool().acquire().await.unwrap();
        let mut found = async |user: Uuid, room: Option<Uuid>| {
            let mut ids: Vec<(i64, Uuid)> = candidates(&mut conn, user, room, &terms)
                .await
                .unwrap()
                .into_iter()
                .map(|(m, at)| (at, m.id))
                .collect();
            ids.sort_unstable();
            ids.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        };
        assert!(found(user, None).await.is_empty());
        assert_eq!(
            backfill(&mut db.pool().acquire().await.unwrap(), 1)
                .await
                .unwrap(),
            1
        );
        assert_eq!(found(user, None).await, [msgs[0].id]);
        let mut c = db.pool().acquire().await.unwrap();
        assert_eq!(backfill(&mut c, 10).await.unwrap(), 1);
        assert_eq!(backfill(&mut c, 10).await.unwrap(), 0);
        drop(c);
        // The deleted message never; the room filter; a user in no room.
        assert_eq!(found(user, None).await, [msgs[0].id, msgs[1].id]);
        assert_eq!(found(user, Some(room)).await, [msgs[0].id, msgs[1].id]);
        assert!(found(Uuid::now_v7(), None).await.is_empty());

        // A common term (more matches than PostgreSQL's GIN pass takes): the newest
        // CANDIDATES, through the newest-first path there.
        let many: Vec<Message> = (0..PG_GIN_MATCHES + 100)
            .map(|i| message(room, 10 + i, "alpha common"))
            .collect();
        let rows: Vec<(&Message, i64)> = many.iter().map(|m| (m, m.seq)).collect();
        let mut tx = db.begin().await.unwrap();
        store::insert_messages(tx.conn(), &rows).await.unwrap();
        index(tx.conn(), &rows).await.unwrap();
        tx.commit().await.unwrap();
        let newest: Vec<Uuid> = many[many.len() - CANDIDATES as usize..]
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(found(user, None).await, newest);
        assert_eq!(found(user, Some(room)).await, newest);
        // Closing the pool waits for every pooled connection to come back.
        drop(conn);
        db.close().await;
    }
}
