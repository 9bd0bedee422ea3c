//! SQL of the notifications service (portable across SQLite and PostgreSQL; ids are
//! uuids bound and stored as text). A function of one statement takes any executor —
//! the pool for reads, `tx.conn()` inside a transaction.

pub mod copies;
pub mod email;
pub mod notifications;
pub mod push;
pub mod settings;

use kit::db::Migration;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

pub const MIGRATIONS: &[Migration] = &[
    bus::inbox::MIGRATION,
    Migration {
        id: "notifications-0001-init",
        sqlite: include_str!("../../migrations/0001_init.sql"),
        postgres: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        id: "notifications-0002-email",
        sqlite: include_str!("../../migrations/0002_email.sql"),
        postgres: include_str!("../../migrations/0002_email.sql"),
    },
    // The one-time blocks backfill's record (`backfill`).
    kit::backfill::MIGRATION,
];

/// A uuid column stored as text.
pub fn uuid_col(row: &AnyRow, name: &str) -> Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(name)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
        index: name.to_owned(),
        source: Box::new(e),
    })
}

/// `$from, $from+1, …` for `n` bound values (an `IN (…)` list).
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
