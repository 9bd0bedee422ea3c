//! SQL of message search (see `crate::search` for the text side and
//! migrations/0006_search.*.sql for the tables). The index is written in the transaction
//! of the change it follows: a send batch, an edit, a deletion.
//!
//! Ranking is bounded: a query ranks the newest [`CANDIDATES`] messages that match it
//! in the caller's rooms, not every match. A word in most messages ("the", "ok") would
//! otherwise make every search rank tens of thousands of rows; the newest 1,000 keep
//! p99 under 30 ms at 1,000,000 messages (docs/benchmarks.md, message-search) and are
//! what a person scrolling results reaches anyway. Rare terms have fewer matches than
//! that, so for them the ranking is over all matches.

use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::{MESSAGE_COLS, ROWS_PER_STATEMENT, Result, message_from, placeholders, uuid};
use crate::domain::Message;
use crate::search::{self, Term};

/// Matches ranked per query at most (the newest ones; see the module docs).
pub const CANDIDATES: i64 = 1000;

fn is_pg(conn: &AnyConnection) -> bool {
    conn.backend_name() == "PostgreSQL"
}

/// The FTS5 token of a room (see the migration).
fn room_token(room: Uuid) -> String {
    format!("r{}", room.simple())
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
                    "tsv": search::tsvector(&m.body),
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
        .bind(search::tsvector(&m.body))
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

/// Where a page of results ends: the last result's rank key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct After {
    pub score: f64,
    pub created_at: i64,
    pub id: Uuid,
}

/// One match: higher `score` is better on both backends.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub id: Uuid,
    pub room_id: Uuid,
    pub created_at: i64,
    pub score: f64,
}

/// Matches of `terms` in the rooms `user` is a member of now (only `room` when given),
/// best first, then newest, after `after`, at most `limit`. SQLite ranks with bm25
/// (negated: higher is better), PostgreSQL with `ts_rank` normalised by document length
/// (flag 1). Both rank only the newest [`CANDIDATES`] matches.
pub async fn search(
    conn: &mut AnyConnection,
    user: Uuid,
    room: Option<Uuid>,
    terms: &[Term],
    after: Option<After>,
    limit: i64,
) -> Result<Vec<Hit>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    // $1 query, $2 candidates, $3 whether a cursor is given, $4..$6 the cursor, $7 the
    // limit; PostgreSQL: $8 the caller, $9 the exact-words query, $10 the room filter.
    let cursor = "(c.score < $4 OR (c.score = $4 AND (c.created_at < $5
                   OR (c.created_at = $5 AND c.message_id < $6))))";
    let pg = is_pg(conn);
    let (sql, query) = if pg {
        let room_cond = if room.is_some() {
            "AND s.room_id = $10"
        } else {
            ""
        };
        let sql = format!(
            "SELECT c.message_id, c.room_id, c.created_at, c.score FROM (
                 SELECT s.message_id, s.room_id, s.created_at,
                        CAST(ts_rank(s.tsv, CAST($1 AS tsquery), 1)
                             + ts_rank(s.tsv, CAST($9 AS tsquery), 1) AS DOUBLE PRECISION) AS score
                 FROM message_search s
                 JOIN members m ON m.room_id = s.room_id AND m.user_id = $8
                 WHERE s.tsv @@ CAST($1 AS tsquery) {room_cond}
                 ORDER BY s.created_at DESC LIMIT $2) c
             WHERE $3 = 0 OR {cursor}
             ORDER BY c.score DESC, c.created_at DESC, c.message_id DESC LIMIT $7"
        );
        (sql, search::tsquery(terms))
    } else {
        // The caller's rooms go into the MATCH expression: FTS5 intersects the body
        // terms' doclists with the rooms' inside the index.
        let rooms = match room {
            Some(r) => vec![r],
            None => super::room_ids_of(&mut *conn, user).await?,
        };
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let rooms = rooms
            .into_iter()
            .map(room_token)
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT c.message_id, c.room_id, c.created_at, c.score FROM (
                 SELECT s.message_id, s.room_id, s.created_at, f.score FROM (
                     SELECT rowid AS id, -bm25(message_fts, 0.0, 1.0) AS score FROM message_fts
                     WHERE message_fts MATCH $1 ORDER BY rowid DESC LIMIT $2) f
                 JOIN message_search s ON s.id = f.id) c
             WHERE $3 = 0 OR {cursor}
             ORDER BY c.score DESC, c.created_at DESC, c.message_id DESC LIMIT $7"
        );
        let query = format!(
            "room : ({rooms}) AND body : ({})",
            search::fts5_query(terms)
        );
        (sql, query)
    };
    let a = after.unwrap_or(After {
        score: 0.0,
        created_at: 0,
        id: Uuid::nil(),
    });
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(CANDIDATES)
        .bind(i64::from(after.is_some()))
        .bind(a.score)
        .bind(a.created_at)
        .bind(a.id.to_string())
        .bind(limit);
    if pg {
        q = q.bind(user.to_string()).bind(search::tsquery_exact(terms));
        if let Some(r) = room {
            q = q.bind(r.to_string());
        }
    }
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok(Hit {
                id: uuid(row, "message_id")?,
                room_id: uuid(row, "room_id")?,
                created_at: row.try_get("created_at")?,
                score: row.try_get("score")?,
            })
        })
        .collect()
}

/// The messages with these ids (any order; missing ones are left out).
pub async fn messages_by_ids(conn: &mut AnyConnection, ids: &[Uuid]) -> Result<Vec<Message>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE id IN ({})",
            super::list(chunk.len(), 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(message_from(&row)?);
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
        let found = |hits: Vec<Hit>| hits.iter().map(|h| h.id).collect::<Vec<_>>();
        assert!(
            search(&mut conn, user, None, &terms, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(backfill(&mut conn, 1).await.unwrap(), 1);
        assert_eq!(
            found(
                search(&mut conn, user, None, &terms, None, 10)
                    .await
                    .unwrap()
            ),
            [msgs[0].id]
        );
        assert_eq!(backfill(&mut conn, 10).await.unwrap(), 1);
        assert_eq!(backfill(&mut conn, 10).await.unwrap(), 0);
        // Newest first among equal scores; the deleted message never.
        assert_eq!(
            found(
                search(&mut conn, user, None, &terms, None, 10)
                    .await
                    .unwrap()
            ),
            [msgs[1].id, msgs[0].id]
        );
        // The room filter and a user in no room.
        assert_eq!(
            search(&mut conn, user, Some(room), &terms, None, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(
            search(&mut conn, Uuid::now_v7(), None, &terms, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        drop(conn);
        db.close().await;
    }
}
