//! Profiles: reads, identity changes from auth (events or a token), `PATCH /users/me`.

use kit::db::{Backend, Tx};
use sqlx::{Any, AssertSqlSafe, Executor, Row};
use uuid::Uuid;

use super::{PROFILE_COLUMNS, profile_from_row};
use crate::domain::{Profile, ValidPatch};
use crate::search;
use crate::search::feed::Changes;
use crate::search::index::Update;

/// A profile that exists and is visible (its username is known).
pub async fn get<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: Uuid,
) -> Result<Option<Profile>, sqlx::Error> {
    let sql =
        format!("SELECT {PROFILE_COLUMNS} FROM profiles p WHERE p.id = $1 AND p.username <> ''");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(profile_from_row).transpose()
}

/// `(id, username)` of visible profiles with an id after `after` ("" = from the start), in
/// id order (one primary-key range scan per page).
pub async fn usernames_after<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, username FROM profiles WHERE id > $1 AND username <> '' ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("username")?)))
        .collect()
}

/// Profiles by id, in the order of `ids` (missing ones skipped). The ids are text: the
/// search index and the suggestion query hand them over as such.
pub async fn by_ids<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    ids: &[String],
) -> Result<Vec<Profile>, sqlx::Error> {
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
    let rows = q.fetch_all(ex).await?;
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
    pub id: Uuid,
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
    let id = change.id.to_string();
    sqlx::query(
        "INSERT INTO profiles (id, created_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    let select = match backend {
        Backend::Postgres => {
            "SELECT username, display_name, username_ver, display_name_ver, deleted_at FROM profiles WHERE id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT username, display_name, username_ver, display_name_ver, deleted_at FROM profiles WHERE id = $1"
        }
    };
    let row = sqlx::query(select).bind(&id).fetch_one(tx.conn()).await?;
    // A deleted account stays deleted, whatever arrives after its `user.deleted`.
    if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
        return Ok(false);
    }
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
        .bind(&id)
        .bind(&username)
        .bind(&display_name)
        .bind(&username_ver)
        .bind(&display_name_ver)
        .bind(&username_norm)
        .bind(&display_norm)
        .bind(now)
        .execute(tx.conn())
        .await?;
        let update = Update::Names {
            id: change.id.as_u128(),
            username_norm,
            display_norm,
            visible: !username.is_empty(),
        };
        changes.record(tx, update).await?;
    }
    if let Some(created_at) = change.created_at {
        sqlx::query("UPDATE profiles SET created_at = $2, registered = 1 WHERE id = $1")
            .bind(&id)
            .bind(created_at)
            .execute(tx.conn())
            .await?;
    }
    Ok(names_changed)
}

/// Turns the profile of a deleted account into a tombstone (created if no event of the
/// account arrived yet): every visible field emptied, hidden from every read (they all
/// require `username <> ''`) and from search, and never revived by a later identity
/// change ([`apply_identity`] checks `deleted_at`). The follow and block edges are the
/// caller's to remove first (counters and events go with them).
pub async fn tombstone(tx: &mut Tx, id: Uuid, changes: &mut Changes) -> Result<(), sqlx::Error> {
    let now = kit::time::now_ms();
    sqlx::query(
        "INSERT INTO profiles (id, created_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "UPDATE profiles SET username = '', display_name = '', bio = '', avatar_url = '',
           username_norm = '', display_norm = '', followers_count = 0, following_count = 0,
           deleted_at = $2, updated_at = $2
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(tx.conn())
    .await?;
    let update = Update::Names {
        id: id.as_u128(),
        username_norm: String::new(),
        display_norm: String::new(),
        visible: false,
    };
    changes.record(tx, update).await
}

/// Applies a validated `PATCH /users/me` to an existing profile.
pub async fn patch(
    tx: &mut Tx,
    backend: Backend,
    id: Uuid,
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
    let id_text = id.to_string();
    let Some(row) = sqlx::query(select)
        .bind(&id_text)
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
    .bind(&id_text)
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
        .bind(&id_text)
        .bind(name)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&display_norm)
        .execute(tx.conn())
        .await?;
        let update = Update::Names {
            id: id.as_u128(),
            username_norm,
            display_norm,
            visible: !username.is_empty(),
        };
        changes.record(tx, update).await?;
    }
    get(tx.conn(), id).await
}
