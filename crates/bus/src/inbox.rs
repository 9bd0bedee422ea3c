//! Idempotent consumption: the processed event id is stored in the consumer's own
//! database in the same transaction as the event's effect.

use kit::db::{Db, Tx};

use crate::Envelope;

/// Schema for the outbox and processed-event tables; every service that produces or
/// consumes events lists this first in its migrations.
pub const MIGRATION: kit::db::Migration = kit::db::Migration {
    id: "bus-0001-outbox-inbox",
    sqlite: "CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        published_at BIGINT
    );
    CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
    CREATE TABLE processed_events (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        processed_at BIGINT NOT NULL,
        PRIMARY KEY (consumer, event_id)
    );",
    postgres: "CREATE TABLE outbox (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        published_at BIGINT
    );
    CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
    CREATE TABLE processed_events (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        processed_at BIGINT NOT NULL,
        PRIMARY KEY (consumer, event_id)
    );",
};

/// Begins the transaction that applies `event` for `consumer`, or returns `None` when
/// it was already applied. The caller applies the effect on the returned transaction
/// and commits; a rollback leaves the event unprocessed (it will be redelivered).
pub async fn begin_once(
    db: &Db,
    consumer: &str,
    event: &Envelope,
) -> Result<Option<Tx>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event.id.to_string())
    .bind(kit::time::now_ms())
    .execute(tx.conn())
    .await?
    .rows_affected();
    if inserted == 0 {
        tracing::debug!(consumer, event = %event.id, "duplicate event skipped");
        return Ok(None);
    }
    Ok(Some(tx))
}
