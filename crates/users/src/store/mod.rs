//! SQL of the user service (portable across SQLite and PostgreSQL). As in auth, a
//! function of one statement takes any executor — the pool for reads, `tx.conn()` inside
//! a transaction — and ids are typed (`uuid::Uuid`, bound as their text form). Functions
//! that also record search-index changes take the transaction (`&mut Tx`). The search
//! path (`profiles::by_ids`, `graph::blockers_of`) keeps the ids as the index and the
//! cursors carry them.
//!
//! Graph changes lock both profile rows in id order first (PostgreSQL; SQLite serialises
//! writers anyway), so a follow and a block of the same pair cannot interleave and
//! counters change only together with the edge row that justifies them.

pub mod graph;
pub mod profiles;

use kit::db::Migration;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::Profile;

pub const MIGRATIONS: &[Migration] = &[
    bus::inbox::MIGRATION,
    Migration {
        id: "users-0001-init",
        sqlite: include_str!("../../migrations/0001_init.sqlite.sql"),
        postgres: include_str!("../../migrations/0001_init.postgres.sql"),
    },
    Migration {
        id: "users-0002-search-index",
        sqlite: include_str!("../../migrations/0002_search_index.sqlite.sql"),
        postgres: include_str!("../../migrations/0002_search_index.postgres.sql"),
    },
    Migration {
        id: "users-0003-deleted-profiles",
        sqlite: include_str!("../../migrations/0003_deleted_profiles.sql"),
        postgres: include_str!("../../migrations/0003_deleted_profiles.sql"),
    },
];

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
