//! SQL of the user service (portable across SQLite and PostgreSQL).
//!
//! Graph changes lock both profile rows in id order first (PostgreSQL; SQLite serialises
//! writers anyway), so a follow and a block of the same pair cannot interleave and
//! counters change only together with the edge row that justifies them.

use kit::db::{Backend, Tx};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Row};

use crate::cursor::EdgeCursor;
use crate::domain::{Profile, Relationship, ValidPatch};
use crate::search;
use crate::search::feed::{Changes, parse_id};
use crate::search::index::Update;

pub const PROFILE_COLUMNS: &str = "p.id, p.username, p.display_name, p.bio, p.avatar_url, p.created_at, p.followers_count, p.following_count";

pub fn profile_from_row(row: &AnyRow) -> Result<Profile, sqlx::Error> {
    Ok(Profile {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        bio: row.try_get("bio")?,
        avatar_url: row.try_get("avatar_url")?,
        created_at: row.try_get("created_at")?,
        followers_count: row.try_get("followers_count")?,
        following_count: row.try_get("following_count")?,
    })
}

/// A profile that exists and is visible (its username is known).
pub async fn get_profile(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<Profile>, sqlx::Error> {
    let sql =
        format!("SELECT {PROFILE_COLUMNS} FROM profiles p WHERE p.id = $1 AND p.username <> ''");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(profile_from_row).transpose()
}

pub async fn get_profile_pool(pool: &AnyPool, id: &str) -> Result<Option<Profile>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    get_profile(&mut conn, id).await
}

/// Profiles by id, in the order of `ids` (missing ones skipped).
pub async fn profiles_by_ids(pool: &AnyPool, ids: &[String]) -> Result<Vec<Profile>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {PROFILE_COLUMNS} FROM profiles p WHERE p.id IN ({}) AND p.username <> ''",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(id.as_str());
    }
    let rows = q.fetch_all(pool).await?;
    let mut found: std::collections::HashMap<String, Profile> = std::collections::HashMap::new();
    for row in &rows {
        let p = profile_from_row(row)?;
        found.insert(p.id.clone(), p);
    }
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// A change of account identity, from an auth event or (version "") from a token.
#[derive(Debug, Clone)]
pub struct IdentityChange<'a> {
    pub id: &'a str,
    /// Event id (uuid v7, so it sorts by time); a field changes only if its stored
    /// version is older. "" (token-derived) fills only fields still unknown.
    pub version: &'a str,
    pub username: Option<&'a str>,
    pub display_name: Option<&'a str>,
    /// Set by `user.registered` only.
    pub created_at: Option<i64>,
}

/// Applies `change`; returns whether the username or display name changed.
pub async fn apply_identity(
    tx: &mut Tx,
    backend: Backend,
    change: &IdentityChange<'_>,
    changes: &mut Changes,
) -> Result<bool, sqlx::Error> {
    let now = kit::time::now_ms();
    sqlx::query(
        "INSERT INTO profiles (id, created_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(change.id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    let select = match backend {
        Backend::Postgres => {
            "SELECT username, display_name, username_ver, display_name_ver FROM profiles WHERE id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT username, display_name, username_ver, display_name_ver FROM profiles WHERE id = $1"
        }
    };
    let row = sqlx::query(select)
        .bind(change.id)
        .fetch_one(tx.conn())
        .await?;
    let mut username: String = row.try_get("username")?;
    let mut display_name: String = row.try_get("display_name")?;
    let mut username_ver: String = row.try_get("username_ver")?;
    let mut display_name_ver: String = row.try_get("display_name_ver")?;
    let (old_username, old_display) = (username.clone(), display_name.clone());

    let newer = |current: &str, current_ver: &str| {
        current.is_empty() || (!change.version.is_empty() && change.version > current_ver)
    };
    if let Some(u) = change.username.filter(|u| !u.is_empty())
        && newer(&username, &username_ver)
    {
        username = u.to_owned();
        username_ver = change.version.to_owned();
    }
    if let Some(d) = change.display_name.map(str::trim).filter(|d| !d.is_empty())
        && newer(&display_name, &display_name_ver)
    {
        display_name = d.to_owned();
        display_name_ver = change.version.to_owned();
    }
    // Until a display name is known, the username stands in for it (version "": any
    // real display name replaces it).
    if display_name.is_empty() || (display_name_ver.is_empty() && display_name == old_username) {
        display_name = username.clone();
    }
    let names_changed = username != old_username || display_name != old_display;
    if names_changed {
        let username_norm = search::normalize(&username);
        let display_norm = search::normalize(&display_name);
        sqlx::query(
            "UPDATE profiles SET username = $2, display_name = $3, username_ver = $4, display_name_ver = $5,
             username_norm = $6, display_norm = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(change.id)
        .bind(&username)
        .bind(&display_name)
        .bind(&username_ver)
        .bind(&display_name_ver)
        .bind(&username_norm)
        .bind(&display_norm)
        .bind(now)
        .execute(tx.conn())
        .await?;
        if let Some(id) = parse_id(change.id) {
            let update = Update::Names {
                id,
                username_norm,
                display_norm,
                visible: !username.is_empty(),
            };
            changes.record(tx, update).await?;
        }
    }
    if let Some(created_at) = change.created_at {
        sqlx::query("UPDATE profiles SET created_at = $2, registered = 1 WHERE id = $1")
            .bind(change.id)
            .bind(created_at)
            .execute(tx.conn())
            .await?;
    }
    Ok(names_changed)
}

/// Applies a validated `PATCH /users/me` to an existing profile.
pub async fn patch_profile(
    tx: &mut Tx,
    backend: Backend,
    id: &str,
    patch: &ValidPatch,
    changes: &mut Changes,
) -> Result<Option<Profile>, sqlx::Error> {
    // Lock the row first: a concurrent rename from an auth event must not slip between
    // reading the username and recording the names for the search index.
    let select = match backend {
        Backend::Postgres => {
            "SELECT username, username_norm FROM profiles WHERE id = $1 FOR UPDATE"
        }
        Backend::Sqlite => "SELECT username, username_norm FROM profiles WHERE id = $1",
    };
    let Some(row) = sqlx::query(select)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
    else {
        return Ok(None);
    };
    let username: String = row.try_get("username")?;
    let username_norm: String = row.try_get("username_norm")?;
    sqlx::query(
        "UPDATE profiles SET bio = COALESCE($2, bio), avatar_url = COALESCE($3, avatar_url), updated_at = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(patch.bio.as_deref())
    .bind(patch.avatar_url.as_deref())
    .bind(kit::time::now_ms())
    .execute(tx.conn())
    .await?;
    if let Some(name) = &patch.display_name {
        let display_norm = search::normalize(name);
        sqlx::query(
            "UPDATE profiles SET display_name = $2, display_name_ver = $3, display_norm = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&display_norm)
        .execute(tx.conn())
        .await?;
        if let Some(uid) = parse_id(id) {
            let update = Update::Names {
                id: uid,
                username_norm,
                display_norm,
                visible: !username.is_empty(),
            };
            changes.record(tx, update).await?;
        }
    }
    get_profile(tx.conn(), id).await
}

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

pub async fn pair_flags(
    conn: &mut AnyConnection,
    a: &str,
    b: &str,
) -> Result<PairFlags, sqlx::Error> {
    let row = sqlx::query(
        "SELECT
           (SELECT COUNT(*) FROM blocks WHERE blocker_id = $1 AND blocked_id = $2) AS ab_block,
           (SELECT COUNT(*) FROM blocks WHERE blocker_id = $2 AND blocked_id = $1) AS ba_block,
           (SELECT COUNT(*) FROM follows WHERE follower_id = $1 AND followee_id = $2) AS ab_follow,
           (SELECT COUNT(*) FROM follows WHERE follower_id = $2 AND followee_id = $1) AS ba_follow",
    )
    .bind(a)
    .bind(b)
    .fetch_one(conn)
    .await?;
    Ok(PairFlags {
        a_blocks_b: row.try_get::<i64, _>("ab_block")? > 0,
        b_blocks_a: row.try_get::<i64, _>("ba_block")? > 0,
        a_follows_b: row.try_get::<i64, _>("ab_follow")? > 0,
        b_follows_a: row.try_get::<i64, _>("ba_follow")? > 0,
    })
}

pub async fn pair_flags_pool(pool: &AnyPool, a: &str, b: &str) -> Result<PairFlags, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    pair_flags(&mut conn, a, b).await
}

/// [`PairFlags`] plus whether each side has a visible profile, in one statement (the
/// internal relationship check other services make per request).
pub async fn pair_status(
    pool: &AnyPool,
    a: &str,
    b: &str,
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
    .bind(a)
    .bind(b)
    .fetch_one(pool)
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
pub async fn blocks_after(
    pool: &AnyPool,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let (blocker, blocked) = after.unwrap_or(("", ""));
    let rows = sqlx::query(
        "SELECT blocker_id, blocked_id FROM blocks
         WHERE blocker_id > $1 OR (blocker_id = $1 AND blocked_id > $2)
         ORDER BY blocker_id, blocked_id LIMIT $3",
    )
    .bind(blocker)
    .bind(blocked)
    .bind(limit)
    .fetch_all(pool)
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
    a: &str,
    b: &str,
) -> Result<bool, sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM profiles WHERE id IN ($1, $2) ORDER BY id FOR UPDATE")
            .bind(a)
            .bind(b)
            .fetch_all(tx.conn())
            .await?;
    }
    Ok(get_profile(tx.conn(), b).await?.is_some())
}

/// Inserts the edge `follower → followee`; adjusts both counters only if it was new.
pub async fn insert_follow(
    tx: &mut Tx,
    follower: &str,
    followee: &str,
    changes: &mut Changes,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(follower)
    .bind(followee)
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
    follower: &str,
    followee: &str,
    changes: &mut Changes,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
        .bind(follower)
        .bind(followee)
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
    follower: &str,
    followee: &str,
    delta: i64,
    changes: &mut Changes,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET following_count = following_count + $2 WHERE id = $1")
        .bind(follower)
        .bind(delta)
        .execute(tx.conn())
        .await?;
    let count: i64 = sqlx::query_scalar(
        "UPDATE profiles SET followers_count = followers_count + $2 WHERE id = $1 RETURNING followers_count",
    )
    .bind(followee)
    .bind(delta)
    .fetch_one(tx.conn())
    .await?;
    if let Some(id) = parse_id(followee) {
        changes.record(tx, Update::Followers { id, count }).await?;
    }
    Ok(())
}

pub async fn insert_block(tx: &mut Tx, blocker: &str, blocked: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(blocker)
    .bind(blocked)
    .bind(kit::time::now_ms())
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete_block(tx: &mut Tx, blocker: &str, blocked: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2")
            .bind(blocker)
            .bind(blocked)
            .execute(tx.conn())
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
pub async fn list_edges(
    pool: &AnyPool,
    list: EdgeList,
    anchor: &str,
    viewer: &str,
    after: &EdgeCursor,
    limit: i64,
) -> Result<(Vec<Profile>, Option<EdgeCursor>), sqlx::Error> {
    let sql = list.sql();
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(anchor)
        .bind(after.at)
        .bind(after.id.as_str())
        .bind(limit + 1);
    if list.hides_blockers() {
        query = query.bind(viewer);
    }
    let rows = query.fetch_all(pool).await?;
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
pub async fn blockers_of(
    pool: &AnyPool,
    caller: &str,
) -> Result<std::collections::HashSet<u128>, sqlx::Error> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT blocker_id FROM blocks WHERE blocked_id = $1")
            .bind(caller)
            .fetch_all(pool)
            .await?;
    Ok(ids.iter().filter_map(|id| parse_id(id)).collect())
}

/// Friends-of-follows suggestions for `me`: `(user id, how many of my follows follow them)`,
/// best first, after the `(score, id)` position `after`.
pub async fn suggestions(
    pool: &AnyPool,
    me: &str,
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
    .bind(me)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("score")?)))
        .collect()
}
