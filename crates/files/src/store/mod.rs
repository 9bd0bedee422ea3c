//! SQL of the files service (portable across SQLite and PostgreSQL; ids are uuids bound
//! and stored as text). A function of one statement takes any executor — the pool for
//! reads, `tx.conn()` inside a transaction.

pub mod attachments;
pub mod files;
pub mod quota;

use kit::db::Migration;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

pub const MIGRATIONS: &[Migration] = &[
    bus::inbox::MIGRATION,
    Migration {
        id: "files-0001-init",
        sqlite: include_str!("../../migrations/0001_init.sql"),
        postgres: include_str!("../../migrations/0001_init.sql"),
    },
];

/// A uuid column stored as text.
pub fn uuid_col(row: &AnyRow, name: &str) -> Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(name)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
        index: name.to_owned(),
        source: Box::new(e),
    })
}
