//! The transactional outbox: events are rows written in the producer's transaction;
//! the relay publishes committed rows in order and marks them sent.
//!
//! Published rows are kept for [`RETAIN_MS`] (24 h): within that window events can be
//! re-published ([`replay_since`]) — automatically when Redis lost data (see
//! [`crate::recovery`]), or by hand (`intellicolab replay-events`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kit::db::{Backend, Db, Tx};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Bus, Envelope};

const BATCH: i64 = 200;
const POLL: Duration = Duration::from_millis(500);
/// Published rows are kept this long (for inspection and re-publication), then purged.
pub const RETAIN_MS: i64 = 24 * 3600 * 1000;
/// Longest pause between publish attempts while the transport fails (doubling from
/// [`crate::RETRY_DELAY`]): bounds how long events wait once Redis is back.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Writes `event` into the outbox as part of `tx`.
pub async fn enqueue(tx: &mut Tx, event: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (id, kind, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(event.id.to_string())
        .bind(&event.kind)
        .bind(payload(event)?)
        .bind(kit::time::now_ms())
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Writes `events` into the outbox as part of the transaction whose connection is
/// `conn` (`tx.conn()`): one statement per batch on PostgreSQL ([`pg_insert_json`]), one
/// per 200 rows on SQLite (multi-row VALUES, well under its 32 766 bind parameters).
pub async fn enqueue_many(
    conn: &mut sqlx::AnyConnection,
    events: &[Envelope],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let now = kit::time::now_ms();
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query(PG_INSERT.as_str())
            .bind(json_rows(events)?)
            .bind(now)
            .execute(conn)
            .await?;
        return Ok(());
    }
    for chunk in events.chunks(200) {
        let rows = (0..chunk.len())
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    4 * i + 1,
                    4 * i + 2,
                    4 * i + 3,
                    4 * i + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("INSERT INTO outbox (id, kind, payload, created_at) VALUES {rows}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(e.id.to_string())
                .bind(e.kind.as_str())
                .bind(payload(e)?)
                .bind(now);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// PostgreSQL: a statement that inserts the outbox rows [`json_rows`] encodes, bound as
/// `$rows`, with `created_at` bound as `$created_at`. The same text for every batch size
/// (parsed and planned once per connection). A producer that writes its own rows in one
/// statement can embed it as a data-modifying CTE, saving a round trip per batch.
pub fn pg_insert_json(rows: usize, created_at: usize) -> String {
    format!(
        "INSERT INTO outbox (id, kind, payload, created_at)
         SELECT id, kind, payload, ${created_at}
         FROM json_to_recordset(${rows}::json) AS x(id text, kind text, payload text)"
    )
}

static PG_INSERT: LazyLock<String> = LazyLock::new(|| pg_insert_json(1, 2));

/// The JSON array of outbox rows (`id`, `kind`, `payload`) that [`pg_insert_json`] reads.
pub fn json_rows(events: &[Envelope]) -> Result<String, sqlx::Error> {
    let rows = events
        .iter()
        .map(|e| {
            Ok(serde_json::json!({
                "id": e.id, "kind": e.kind, "payload": payload(e)?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// An outbox row's `payload`: the whole envelope as JSON text.
fn payload(event: &Envelope) -> Result<String, sqlx::Error> {
    serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))
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
        // Redis: watch for Redis losing what was published (see `recovery`).
        let mut guard = match &bus {
            Bus::Redis(redis) => Some(crate::recovery::Guard::new(service, redis.clone())),
            Bus::Memory(_) => None,
        };
        let task = tokio::spawn(async move {
            let mut last_purge = 0i64;
            let mut retry = crate::RETRY_DELAY;
            loop {
                let checked = match guard.as_mut() {
                    Some(guard) => guard.check(&db).await,
                    None => Ok(()),
                };
                let started = kit::time::now_ms();
                let mut published = 0;
                let result = match checked {
                    Ok(()) => relay_batch_counted(service, &db, &bus, &mut published).await,
                    // Redis (or the database) down: nothing goes out before the check passed.
                    Err(e) => Err(e),
                };
                if let Some(guard) = guard.as_mut()
                    && published > 0
                {
                    guard.published(started, result.is_ok()).await;
                }
                match result {
                    Ok(n) if n as i64 == BATCH => {
                        retry = crate::RETRY_DELAY;
                        continue;
                    }
                    Ok(_) => retry = crate::RETRY_DELAY,
                    Err(e) => {
                        tracing::warn!(service, error = %e, retry_in_ms = retry.as_millis() as u64, "outbox relay failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = tokio::time::sleep(retry) => {}
                        }
                        retry = (retry * 2).min(RETRY_MAX);
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
    relay_batch_counted(service, db, bus, &mut 0).await
}

/// [`relay_batch`], also reporting in `published` how many events went out and were marked
/// when the batch then failed part-way.
async fn relay_batch_counted(
    service: &str,
    db: &Db,
    bus: &Bus,
    published_out: &mut usize,
) -> anyhow::Result<usize> {
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
            *published_out = published;
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
            *published_out = published;
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

/// Marks every event published at or after `since_ms` (epoch ms) as unpublished, so the
/// relay sends them again, in `seq` order and before anything newer. Returns how many.
/// Only rows still within [`RETAIN_MS`] exist; consumers drop the events they had applied.
pub async fn replay_since(db: &Db, since_ms: i64) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let replayed = sqlx::query(
        "UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL AND published_at >= $1",
    )
    .bind(since_ms)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(replayed)
}

/// Parses the `--since` of `intellicolab replay-events`: epoch milliseconds, or an RFC 3339
/// time (`2026-12-03T09:00:00Z`, `2026-12-03T10:00:00.250+01:00`).
pub fn parse_since(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(text.parse()?);
    }
    parse_rfc3339(text).ok_or_else(|| {
        anyhow::anyhow!("not epoch milliseconds or an RFC 3339 time (2026-12-03T09:00:00Z): {text}")
    })
}

/// RFC 3339 (`date "T" time ["." fraction] ("Z" | ±hh:mm)`) to epoch ms; `None` if invalid.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        let ms: String = fraction[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_min = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(text.len() - 5, 2)?, num(text.len() - 2, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(seconds * 1_000 + millis)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kit::db::{Backend, Db};

    use super::{enqueue_many, parse_since};
    use crate::Envelope;

    kit::backend_tests!(enqueue_many_stores_every_event_in_order);

    /// 250 events: two statements on SQLite (200 rows each at most), one on PostgreSQL.
    async fn enqueue_many_stores_every_event_in_order(backend: Backend) {
        let Some(handle) = kit::testing::test_db(backend, "enqueue_many").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(handle.url.as_deref(), dir.path(), "bus")
            .await
            .unwrap();
        db.migrate(&[crate::inbox::MIGRATION]).await.unwrap();
        let events: Vec<Envelope> = (0..250)
            .map(|n| Envelope::new("test", "thing.happened", serde_json::json!({ "n": n })))
            .collect();
        let mut tx = db.begin().await.unwrap();
        enqueue_many(tx.conn(), &events).await.unwrap();
        enqueue_many(tx.conn(), &[]).await.unwrap();
        tx.commit().await.unwrap();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, payload, created_at FROM outbox WHERE published_at IS NULL ORDER BY seq",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(rows.len(), events.len());
        for ((id, payload, created_at), event) in rows.iter().zip(&events) {
            assert_eq!(id, &event.id.to_string());
            assert_eq!(&serde_json::from_str::<Envelope>(payload).unwrap(), event);
            assert!(*created_at > 0);
        }
    }

    #[test]
    fn since_takes_epoch_ms_and_rfc3339() {
        assert_eq!(parse_since("1700000000123").ok(), Some(1_700_000_000_123));
        for ms in [
            0,
            1_500,
            951_782_400_000,
            1_796_290_406_295,
            4_102_444_800_000,
        ] {
            assert_eq!(parse_since(&kit::time::rfc3339(ms)).ok(), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_since("2026-12-03T10:00:00.25+01:00").ok(),
            parse_since("2026-12-03T09:00:00.250Z").ok()
        );
        assert_eq!(
            parse_since("2026-12-03T09:00:00-00:30").ok(),
            parse_since("2026-12-03T09:30:00Z").ok()
        );
        for bad in [
            "",
            "yesterday",
            "2026-12-03",
            "2026-13-03T09:00:00Z",
            "2026-12-03T09:00:00",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
