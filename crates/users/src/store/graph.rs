//! The graph: follow and block edges, the profiles' counters, edge lists, suggestions.

use kit::db::{Backend, Tx};
use sqlx::{Any, AssertSqlSafe, Executor, Row};
use uuid::Uuid;

use super::{PROFILE_COLUMNS, profile_from_row};
use crate::cursor::EdgeCursor;
use crate::domain::{Profile, Relationship};
use crate::search::feed::{Changes, parse_id};
use crate::search::index::Update;

/// Who blocks and follows whom between `a` and `b`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PairFlags {
    pub a_blocks_b: bool,
    pub b_blocks_a: bool,
    pub a_follows_b: bool,
    pub b_follows_a: bool,
}

impl PairFlags {
    pub fn any_block(&self) -> bool {
        self.a_blocks_b || self.b_blocks_a
    }

    /// `relationship` as `a` sees `b`.
    pub fn relationship(&self) -> Relationship {
        Relationship {
            following: self.a_follows_b,
            followed_by: self.b_follows_a,
            friends: self.a_follows_b && self.b_follows_a,
            blocking: self.a_blocks_b,
        }
    }
}

pub async fn pair_flags<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    a: Uuid,
    b: Uuid,
) -> Result<PairFlags, sqlx::Error> {
    let row = sqlx::query(
        "SELECT
           (SELECT COUNT(*) FROM blocks WHERE blocker_id = $1 AND blocked_id = $2) AS ab_block,
           (SELECT COUNT(*) FROM blocks WHERE blocker_id = $2 AND blocked_id = $1) AS ba_block,
           (SELECT COUNT(*) FROM follows WHERE follower_id = $1 AND followee_id = $2) AS ab_follow,
           (SELECT COUNT(*) FROM follows WHERE follower_id = $2 AND followee_id = $1) AS ba_follow",
    )
    .bind(a.to_string())
    .bind(b.to_string())
    .fetch_one(ex)
    .await?;
    Ok(PairFlags {
        a_blocks_b: row.try_get::<i64, _>("ab_block")? > 0,
        b_blocks_a: row.try_get::<i64, _>("ba_block")? > 0,
        a_follows_b: row.try_get::<i64, _>("ab_follow")? > 0,
        b_follows_a: row.try_get::<i64, _>("ba_follow")? > 0,
    })
}

/// [`PairFlags`] plus whether each side has a visible profile, in one statement (the
/// internal relationship check other services make per request).
pub async fn pair_status<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    a: Uuid,
    b: Uuid,
) -> Result<(PairFlags, bool, bool), sqlx::Error> {
    let row = sqlx::query(
        "SELECT
           (SELECT COUNT(*) FROM blocks WHERE blocker_id = $1 AND blocked_id = $2) AS ab_block,
           (SELECT COUNT(*) FROM blocks WHERE blocker_id = $2 AND blocked_id = $1) AS ba_block,
           (SELECT COUNT(*) FROM follows WHERE follower_id = $1 AND followee_id = $2) AS ab_follow,
           (SELECT COUNT(*) FROM follows WHERE follower_id = $2 AND followee_id = $1) AS ba_follow,
           (SELECT COUNT(*) FROM profiles WHERE id = $1 AND username <> '') AS a_exists,
           (SELECT COUNT(*) FROM profiles WHERE id = $2 AND username <> '') AS b_exists",
    )
    .bind(a.to_string())
    .bind(b.to_string())
    .fetch_one(ex)
    .await?;
    let flags = PairFlags {
        a_blocks_b: row.try_get::<i64, _>("ab_block")? > 0,
        b_blocks_a: row.try_get::<i64, _>("ba_block")? > 0,
        a_follows_b: row.try_get::<i64, _>("ab_follow")? > 0,
        b_follows_a: row.try_get::<i64, _>("ba_follow")? > 0,
    };
    Ok((
        flags,
        row.try_get::<i64, _>("a_exists")? > 0,
        row.try_get::<i64, _>("b_exists")? > 0,
    ))
}

/// One page of every block edge `(blocker_id, blocked_id)` after the pair `after`, in
/// byte order of the ids (`COLLATE "C"` on PostgreSQL, as on SQLite): the primary key's
/// order, so each page is one index range scan however large the table.
pub async fn blocks_after<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    after: Option<(Uuid, Uuid)>,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    // "" sorts before every id: the first page.
    let (blocker, blocked) = after
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or_default();
    let rows = sqlx::query(
        "SELECT blocker_id, blocked_id FROM blocks
         WHERE blocker_id > $1 OR (blocker_id = $1 AND blocked_id > $2)
         ORDER BY blocker_id, blocked_id LIMIT $3",
    )
    .bind(blocker)
    .bind(blocked)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("blocker_id")?, r.try_get("blocked_id")?)))
        .collect()
}

/// Locks the profile rows of `a` and `b` (in id order, so lockers never deadlock) and
/// returns whether `b` is a visible profile.
pub async fn lock_pair(
    tx: &mut Tx,
    backend: Backend,
    a: Uuid,
    b: Uuid,
) -> Result<bool, sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM profiles WHERE id IN ($1, $2) ORDER BY id FOR UPDATE")
            .bind(a.to_string())
            .bind(b.to_string())
            .fetch_all(tx.conn())
            .await?;
    }
    Ok(super::profiles::get(tx.conn(), b).await?.is_some())
}

/// Inserts the edge `follower → followee`; adjusts both counters only if it was new.
pub async fn insert_follow(
    tx: &mut Tx,
    follower: Uuid,
    followee: Uuid,
    changes: &mut Changes,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(follower.to_string())
    .bind(followee.to_string())
    .bind(kit::time::now_ms())
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    if inserted {
        adjust_counts(tx, follower, followee, 1, changes).await?;
    }
    Ok(inserted)
}

/// Deletes the edge `follower → followee`; adjusts both counters only if it existed.
pub async fn delete_follow(
    tx: &mut Tx,
    follower: Uuid,
    followee: Uuid,
    changes: &mut Changes,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
        .bind(follower.to_string())
        .bind(followee.to_string())
        .execute(tx.conn())
        .await?
        .rows_affected()
        == 1;
    if deleted {
        adjust_counts(tx, follower, followee, -1, changes).await?;
    }
    Ok(deleted)
}

/// Moves both counters by `delta`; the followee's new count (a ranking key of search) is
/// recorded for the search index.
async fn adjust_counts(
    tx: &mut Tx,
    follower: Uuid,
    followee: Uuid,
    delta: i64,
    changes: &mut Changes,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET following_count = following_count + $2 WHERE id = $1")
        .bind(follower.to_string())
        .bind(delta)
        .execute(tx.conn())
        .await?;
    let count: i64 = sqlx::query_scalar(
        "UPDATE profiles SET followers_count = followers_count + $2 WHERE id = $1 RETURNING followers_count",
    )
    .bind(followee.to_string())
    .bind(delta)
    .fetch_one(tx.conn())
    .await?;
    let id = followee.as_u128();
    changes.record(tx, Update::Followers { id, count }).await?;
    Ok(())
}

pub async fn insert_block<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    blocker: Uuid,
    blocked: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(blocker.to_string())
    .bind(blocked.to_string())
    .bind(kit::time::now_ms())
    .execute(ex)
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete_block<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    blocker: Uuid,
    blocked: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2")
            .bind(blocker.to_string())
            .bind(blocked.to_string())
            .execute(ex)
            .await?
            .rows_affected()
            == 1,
    )
}

/// The edge lists, each newest first by edge time.
#[derive(Debug, Clone, Copy)]
pub enum EdgeList {
    Followers,
    Following,
    Friends,
    Blocks,
}

impl EdgeList {
    /// Whether the list hides the users who block the viewer. A blocker is invisible to
    /// the people it blocks (404 on its profile, absent from search), so it must not
    /// show up in anyone's followers, following or friends either. The viewer's own
    /// block list is the exception: it lists whom the viewer blocks, and hiding an entry
    /// because that user blocks back would leave the viewer unable to see its own block.
    fn hides_blockers(self) -> bool {
        !matches!(self, EdgeList::Blocks)
    }

    fn sql(self) -> String {
        let (from, other, time, filter) = match self {
            EdgeList::Followers => (
                "follows e",
                "e.follower_id",
                "e.created_at",
                "e.followee_id = $1",
            ),
            EdgeList::Following => (
                "follows e",
                "e.followee_id",
                "e.created_at",
                "e.follower_id = $1",
            ),
            EdgeList::Friends => (
                "follows e JOIN follows back ON back.follower_id = e.followee_id AND back.followee_id = e.follower_id",
                "e.followee_id",
                "e.created_at",
                "e.follower_id = $1",
            ),
            EdgeList::Blocks => (
                "blocks e",
                "e.blocked_id",
                "e.created_at",
                "e.blocker_id = $1",
            ),
        };
        // Filtered in the statement, before LIMIT, so a page is only short at the end of
        // the list and the keyset cursor still points at the last row returned. The
        // NOT EXISTS is one primary-key probe of `blocks` per candidate row.
        let hide = if self.hides_blockers() {
            format!(
                "AND NOT EXISTS (SELECT 1 FROM blocks hb WHERE hb.blocker_id = {other} AND hb.blocked_id = $5)"
            )
        } else {
            String::new()
        };
        format!(
            "SELECT {PROFILE_COLUMNS}, {time} AS edge_at FROM {from} JOIN profiles p ON p.id = {other}
             WHERE {filter} AND p.username <> '' AND ({time} < $2 OR ({time} = $2 AND {other} < $3)) {hide}
             ORDER BY {time} DESC, {other} DESC LIMIT $4"
        )
    }
}

/// One page of `list` around `anchor` as `viewer` sees it (users who block the viewer
/// left out, see [`EdgeList::hides_blockers`]); the cursor of the next page if there is one.
pub async fn list_edges<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    list: EdgeList,
    anchor: Uuid,
    viewer: Uuid,
    after: &EdgeCursor,
    limit: i64,
) -> Result<(Vec<Profile>, Option<EdgeCursor>), sqlx::Error> {
    let sql = list.sql();
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(anchor.to_string())
        .bind(after.at)
        .bind(after.id.as_str())
        .bind(limit + 1);
    if list.hides_blockers() {
        query = query.bind(viewer.to_string());
    }
    let rows = query.fetch_all(ex).await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in rows.iter().take(limit as usize) {
        let p = profile_from_row(row)?;
        last = Some(EdgeCursor {
            at: row.try_get("edge_at")?,
            id: p.id.clone(),
        });
        items.push(p);
    }
    let next = if rows.len() as i64 > limit {
        last
    } else {
        None
    };
    Ok((items, next))
}

/// The users who block `caller` (hidden from the caller's searches).
pub async fn blockers_of<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    caller: &str,
) -> Result<std::collections::HashSet<u128>, sqlx::Error> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT blocker_id FROM blocks WHERE blocked_id = $1")
            .bind(caller)
            .fetch_all(ex)
            .await?;
    Ok(ids.iter().filter_map(|id| parse_id(id)).collect())
}

/// Friends-of-follows suggestions for `me`: `(user id, how many of my follows follow them)`,
/// best first, after the `(score, id)` position `after`.
pub async fn suggestions<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    me: Uuid,
    after: (i64, &str),
    limit: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f2.followee_id AS id, COUNT(*) AS score
         FROM follows f1 JOIN follows f2 ON f2.follower_id = f1.followee_id
         JOIN profiles p ON p.id = f2.followee_id
         WHERE f1.follower_id = $1 AND f2.followee_id <> $1 AND p.username <> ''
           AND NOT EXISTS (SELECT 1 FROM follows x WHERE x.follower_id = $1 AND x.followee_id = f2.followee_id)
           AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.blocker_id = $1 AND b.blocked_id = f2.followee_id)
                                                     OR (b.blocker_id = f2.followee_id AND b.blocked_id = $1))
         GROUP BY f2.followee_id
         HAVING COUNT(*) < $2 OR (COUNT(*) = $2 AND f2.followee_id > $3)
         ORDER BY score DESC, f2.followee_id ASC
         LIMIT $4",
    )
    .bind(me.to_string())
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("score")?)))
        .collect()
}

/// Every edge touching `user`, as `(from, to)` pairs: its follows (`follower →
/// followee`) and its blocks (`blocker → blocked`), both directions, for removing them
/// when the account is deleted.
pub async fn edges_of(
    conn: &mut sqlx::AnyConnection,
    user: Uuid,
) -> Result<(Vec<(Uuid, Uuid)>, Vec<(Uuid, Uuid)>), sqlx::Error> {
    let pairs = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
        rows.iter()
            .map(|r| {
                let a: String = r.try_get("a")?;
                let b: String = r.try_get("b")?;
                let parse =
                    |s: &str| Uuid::parse_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)));
                Ok((parse(&a)?, parse(&b)?))
            })
            .collect()
    };
    let follows = sqlx::query(
        "SELECT follower_id AS a, followee_id AS b FROM follows WHERE follower_id = $1 OR followee_id = $1",
    )
    .bind(user.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let blocks = sqlx::query(
        "SELECT blocker_id AS a, blocked_id AS b FROM blocks WHERE blocker_id = $1 OR blocked_id = $1",
    )
    .bind(user.to_string())
    .fetch_all(&mut *conn)
    .await?;
    Ok((pairs(follows)?, pairs(blocks)?))
}
