//! Loading the search index, and keeping it in step with the database.
//!
//! Every write that changes what the index holds (a name, the visibility, a follower
//! count) goes through [`Changes::record`], which inserts a `search_changes(seq, user_id,
//! changed_at)` row in the write's own transaction and remembers the new values; after the
//! commit the writing instance applies them at once ([`Changes::apply_to`]). Every instance
//! also polls the table ([`Feed`], every [`POLL_INTERVAL`]) and re-reads the profiles of
//! the rows it has not seen, so instances converge whoever made the write. Re-reading the
//! current row makes a change idempotent and order-independent.
//!
//! On PostgreSQL, sequence numbers are taken at insert time but become visible at commit,
//! so a lower number can appear after a higher one. The feed remembers the numbers it
//! skipped ("gaps") and reads again from the oldest one until it shows up or is older than
//! [`LOOKBACK`] (a rolled-back transaction leaves a gap for good). A starting instance
//! likewise reads the changes of the last [`LOOKBACK`] again after its snapshot. So a
//! write transaction that stays open longer than [`LOOKBACK`] after recording its change
//! may be missed by other instances until the next change of the same profile.
//! Rows older than [`RETENTION`] are deleted by the instances.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kit::db::{Db, Tx};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;

use super::index::{Builder, Entry, SearchIndex, Update};

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
pub const LOOKBACK: Duration = Duration::from_secs(10);
pub const RETENTION: Duration = Duration::from_secs(3600);
/// Rows per batch handed to the index builder.
const LOAD_BATCH: usize = 10_000;
/// Rows read per poll statement.
const BATCH: i64 = 2000;
/// Skipped numbers remembered at most (beyond that, a jump is taken as final).
const MAX_GAPS: usize = 10_000;

/// A user id as the index stores it; `None` for anything but a uuid.
pub fn parse_id(id: &str) -> Option<u128> {
    uuid::Uuid::parse_str(id).ok().map(|u| u.as_u128())
}

fn id_text(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

/// The index changes of one write transaction.
#[derive(Debug, Default)]
pub struct Changes {
    updates: Vec<Update>,
}

impl Changes {
    /// Records `update` in the feed, inside the transaction `tx`.
    pub async fn record(&mut self, tx: &mut Tx, update: Update) -> Result<(), sqlx::Error> {
        let id = match &update {
            Update::Names { id, .. } | Update::Followers { id, .. } => *id,
            Update::Full(e) => e.id,
        };
        sqlx::query("INSERT INTO search_changes (user_id, changed_at) VALUES ($1, $2)")
            .bind(id_text(id))
            .bind(kit::time::now_ms())
            .execute(tx.conn())
            .await?;
        self.updates.push(update);
        Ok(())
    }

    /// Applies the recorded changes to this instance's index (after the commit).
    pub fn apply_to(self, index: &SearchIndex) {
        index.apply(&self.updates);
    }
}

const ENTRY_COLUMNS: &str = "id, username_norm, display_norm, followers_count, CAST(CASE WHEN username <> '' THEN 1 ELSE 0 END AS BIGINT) AS visible";

fn entry_from_row(row: &AnyRow) -> Result<Option<Entry>, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let Some(id) = parse_id(&id) else {
        return Ok(None);
    };
    Ok(Some(Entry {
        id,
        username_norm: row.try_get("username_norm")?,
        display_norm: row.try_get("display_norm")?,
        visible: row.try_get::<i64, _>("visible")? != 0,
        followers: row.try_get("followers_count")?,
    }))
}

/// Reads every profile into a new index (one streamed statement), and returns the feed
/// that keeps it current from there.
pub async fn load(db: &Db) -> Result<(Arc<SearchIndex>, Feed), sqlx::Error> {
    let started = Instant::now();
    // Taken before the snapshot; the last LOOKBACK of changes is read again afterwards.
    let floor: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM search_changes WHERE changed_at < $1",
    )
    .bind(kit::time::now_ms() - LOOKBACK.as_millis() as i64)
    .fetch_one(db.pool())
    .await?;
    // Rows are decoded here and indexed on a thread of their own, in batches, so reading
    // and indexing overlap.
    let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Entry>>(4);
    let building = tokio::task::spawn_blocking(move || {
        let mut builder = Builder::default();
        for batch in received {
            for e in batch {
                builder.push(e);
            }
        }
        builder.finish()
    });
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM profiles");
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(db.pool());
    let mut n = 0usize;
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    while let Some(row) = rows.try_next().await? {
        if let Some(e) = entry_from_row(&row)? {
            batch.push(e);
            n += 1;
            if batch.len() == LOAD_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(LOAD_BATCH));
                if batches.send(full).is_err() {
                    break;
                }
            }
        }
    }
    drop(rows);
    // The builder ends on a closed channel; a failed send means it is gone already.
    let _ = batches.send(batch);
    drop(batches);
    let built = building
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("search index build failed: {e}")))?;
    let index = Arc::new(built);
    tracing::info!(
        profiles = n,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "search index loaded"
    );
    let feed = Feed {
        db: db.clone(),
        index: index.clone(),
        max_seen: floor,
        gaps: BTreeMap::new(),
    };
    Ok((index, feed))
}

/// Re-reads the profiles `ids` into `index`.
pub async fn refresh(db: &Db, index: &SearchIndex, ids: &[String]) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM profiles WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.as_str());
        }
        let mut updates = Vec::with_capacity(chunk.len());
        for row in q.fetch_all(db.pool()).await? {
            if let Some(e) = entry_from_row(&row)? {
                updates.push(Update::Full(e));
            }
        }
        index.apply(&updates);
    }
    Ok(())
}

/// Follows `search_changes` for one index.
pub struct Feed {
    db: Db,
    index: Arc<SearchIndex>,
    max_seen: i64,
    /// Numbers below `max_seen` not seen yet, with when they were first missed.
    gaps: BTreeMap<i64, Instant>,
}

impl Feed {
    /// Applies the changes committed since the last poll; returns how many profiles
    /// were re-read.
    pub async fn poll(&mut self) -> Result<usize, sqlx::Error> {
        let mut refreshed = 0;
        loop {
            let from = match self.gaps.keys().next() {
                Some(&g) => (g - 1).min(self.max_seen),
                None => self.max_seen,
            };
            let rows = sqlx::query(
                "SELECT seq, user_id FROM search_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(from)
            .bind(BATCH)
            .fetch_all(self.db.pool())
            .await?;
            let now = Instant::now();
            let mut ids: Vec<String> = Vec::new();
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                let fresh = if seq > self.max_seen {
                    let mut missing = self.max_seen + 1;
                    while missing < seq && self.gaps.len() < MAX_GAPS {
                        self.gaps.insert(missing, now);
                        missing += 1;
                    }
                    self.max_seen = seq;
                    true
                } else {
                    self.gaps.remove(&seq).is_some()
                };
                if fresh {
                    ids.push(row.try_get("user_id")?);
                }
            }
            self.gaps
                .retain(|_, first| now.duration_since(*first) < LOOKBACK);
            ids.sort_unstable();
            ids.dedup();
            refresh(&self.db, &self.index, &ids).await?;
            refreshed += ids.len();
            if (rows.len() as i64) < BATCH {
                return Ok(refreshed);
            }
        }
    }

    /// Deletes feed rows older than [`RETENTION`].
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let before = kit::time::now_ms() - RETENTION.as_millis() as i64;
        Ok(
            sqlx::query("DELETE FROM search_changes WHERE changed_at < $1")
                .bind(before)
                .execute(self.db.pool())
                .await?
                .rows_affected(),
        )
    }

    /// Polls until `shutdown`.
    pub fn spawn(mut self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_prune = Instant::now();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                if let Err(e) = self.poll().await {
                    tracing::warn!(error = %e, "search change feed poll failed");
                }
                if last_prune.elapsed() > Duration::from_secs(60) {
                    last_prune = Instant::now();
                    if let Err(e) = self.prune().await {
                        tracing::warn!(error = %e, "search change feed prune failed");
                    }
                }
            }
        })
    }
}
