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
pub async fn relay_batch(service: &str, db: &Db, bus: &Bus) -> anyhow::Result<usize> {
    let mut tx = db.begin().await?;
    // Two relays on one PostgreSQL database (two chat nodes) skip each other's rows.
    let select = match db.backend() {
        Backend::Postgres => {
            "SELECT seq, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
        }
        Backend::Sqlite => {
            "SELECT seq, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1"
        }
    };
    let rows = sqlx::query(select).bind(BATCH).fetch_all(tx.conn()).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut published = 0;
    let mut result = Ok(());
    for row in &rows {
        let seq: i64 = row.try_get("seq")?;
        let payload: String = row.try_get("payload")?;
        let event: Envelope = match serde_json::from_str(&payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(service, seq, error = %e, "undecodable outbox row; skipping");
                mark(&mut tx, seq).await?;
                continue;
            }
        };
        if let Err(e) = bus.publish(&event).await {
            result = Err(e);
            break;
        }
        mark(&mut tx, seq).await?;
        published += 1;
    }
    tx.commit().await?;
    result.map(|()| published)
}

async fn mark(tx: &mut Tx, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq = $2")
        .bind(kit::time::now_ms())
        .bind(seq)
        .execute(tx.conn())
        .await?;
    Ok(())
}
