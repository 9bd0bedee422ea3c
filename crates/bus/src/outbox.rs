//! The transactional outbox: events are rows written in the producer's transaction;
//! the relay publishes committed rows in order and marks them sent.

use std::sync::Arc;
use std::time::Duration;

use kit::db::{Backend, Db, Tx};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Bus, Envelope};

const BATCH: i64 = 200;
const POLL: Duration = Duration::from_millis(500);
/// Published rows are kept this long (for inspection), then purged.
const RETAIN_MS: i64 = 24 * 3600 * 1000;

/// Writes `event` into the outbox as part of `tx`.
pub async fn enqueue(tx: &mut Tx, event: &Envelope) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (id, kind, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(event.id.to_string())
        .bind(&event.kind)
        .bind(payload)
        .bind(kit::time::now_ms())
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Wakes the relay after a commit so events go out without waiting for the poll.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Publishes committed outbox rows until `shutdown`, then drains once more.
pub struct Relay;

impl Relay {
    pub fn spawn(
        service: &'static str,
        db: Db,
        bus: Bus,
        shutdown: CancellationToken,
    ) -> (Outbox, tokio::task::JoinHandle<()>) {
        let outbox = Outbox::default();
        let wake = outbox.wake.clone();
        let task = tokio::spawn(async move {
            let mut last_purge = 0i64;
            loop {
                match relay_batch(service, &db, &bus).await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(service, error = %e, "outbox relay failed; retrying");
                        tokio::time::sleep(crate::RETRY_DELAY).await;
                    }
                }
                let now = kit::time::now_ms();
                if now - last_purge > 60_000 {
                    last_purge = now;
                    let _ = sqlx::query(
                        "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
                    )
                    .bind(now - RETAIN_MS)
                    .execute(db.pool())
                    .await;
                    if let Ok(backlog) = sqlx::query_scalar::<_, i64>(
                        "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL",
                    )
                    .fetch_one(db.pool())
                    .await
                    {
                        metrics::gauge!("bus_outbox_backlog", "service" => service)
                            .set(backlog as f64);
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Flush what was committed before shutdown.
                        while let Ok(n) = relay_batch(service, &db, &bus).await {
                            if n == 0 { break; }
                        }
                        return;
                    }
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        });
        (outbox, task)
    }
}

/// Publishes one batch of unsent rows; returns how many were published.
///
/// PostgreSQL: the rows are locked (`FOR UPDATE SKIP LOCKED`) for the whole batch so two
/// relays on one database (two chat nodes) skip each other's rows. SQLite: one process owns
/// the file and runs one relay, so the rows are read and published outside a transaction and
/// only the final mark takes the write lock — the service's own writers are not held up
/// while events are published. Either way the batch is marked with one statement.
pub async fn relay_batch(service: &str, db: &Db, bus: &Bus) -> anyhow::Result<usize> {
    match db.backend() {
        Backend::Postgres => {
            let mut tx = db.begin().await?;
            let rows = sqlx::query(
                "SELECT seq, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(BATCH)
            .fetch_all(tx.conn())
            .await?;
            let (done, published, result) = publish_rows(service, bus, &rows).await?;
            mark(&mut tx, &done).await?;
            tx.commit().await?;
            result.map(|()| published)
        }
        Backend::Sqlite => {
            let rows = sqlx::query(
                "SELECT seq, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1",
            )
            .bind(BATCH)
            .fetch_all(db.pool())
            .await?;
            let (done, published, result) = publish_rows(service, bus, &rows).await?;
            if !done.is_empty() {
                let mut tx = db.begin().await?;
                mark(&mut tx, &done).await?;
                tx.commit().await?;
            }
            result.map(|()| published)
        }
    }
}

/// Publishes `rows` in order until one fails. Returns the seqs to mark as done (published,
/// or undecodable and skipped), how many were published, and the first failure.
async fn publish_rows(
    service: &str,
    bus: &Bus,
    rows: &[sqlx::any::AnyRow],
) -> anyhow::Result<(Vec<i64>, usize, anyhow::Result<()>)> {
    let mut done = Vec::with_capacity(rows.len());
    let mut published = 0;
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        let payload: String = row.try_get("payload")?;
        let event: Envelope = match serde_json::from_str(&payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(service, seq, error = %e, "undecodable outbox row; skipping");
                done.push(seq);
                continue;
            }
        };
        if let Err(e) = bus.publish(&event).await {
            return Ok((done, published, Err(e)));
        }
        done.push(seq);
        published += 1;
    }
    Ok((done, published, Ok(())))
}

/// Marks the rows `seqs` as published, in one statement.
async fn mark(tx: &mut Tx, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    let placeholders = (2..seqs.len() + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("UPDATE outbox SET published_at = $1 WHERE seq IN ({placeholders})");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kit::time::now_ms());
    for seq in seqs {
        query = query.bind(*seq);
    }
    query.execute(tx.conn()).await?;
    Ok(())
}
