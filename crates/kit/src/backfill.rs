//! One-time copies of a list another service keeps, for what happened before this
//! service consumed that service's events (its copy is kept current by the events from
//! then on). The list is a paged internal route answering `{items, next_cursor}`
//! (`next_cursor` null on the last page, passed back as `after`); each page is copied in
//! its own transaction, and the last one records the job in `sync_state`, so the copy
//! runs once per database, to the end, even across restarts (a restart copies again
//! from the start; pages are upserts that leave event-fed rows alone).
//!
//! Chat copies the user service's blocks and usernames this way, notifications its blocks.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::{Any, AnyConnection, Executor};
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Migration};

const SYNC_STATE: &str = "CREATE TABLE IF NOT EXISTS sync_state (
    name TEXT PRIMARY KEY,
    done_at BIGINT NOT NULL
);";

/// The `sync_state` table of the jobs that are done (`IF NOT EXISTS`: chat made it in
/// its own migration 0003 before this one existed).
pub const MIGRATION: Migration = Migration {
    id: "kit-0001-sync-state",
    sqlite: SYNC_STATE,
    postgres: SYNC_STATE,
};

/// Items per page asked for: the most the user service's internal lists give.
const PAGE_SIZE: &str = "1000";
/// First and longest wait between tries while the source cannot answer.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One page of a paged internal list.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A list to copy once.
pub trait Job: Send + Sync + 'static {
    /// An item of the list (the route's JSON).
    type Item: DeserializeOwned + Send;
    /// Its `sync_state` name, e.g. `blocks-backfill`.
    fn name(&self) -> &'static str;
    /// The route under the source's base URL, e.g. `/internal/blocks`.
    fn path(&self) -> &'static str;
    /// Stores one page in the page's transaction.
    fn apply(
        &self,
        conn: &mut AnyConnection,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Whether the one-time job `name` is done.
pub async fn done<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sync_state WHERE name = $1")
        .bind(name)
        .fetch_one(ex)
        .await?;
    Ok(n > 0)
}

/// Records the one-time job `name` as done.
pub async fn mark_done<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync_state (name, done_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(crate::time::now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// Fetches the page after `after` of `base` + `path`.
pub async fn fetch_page<T: DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    after: Option<&str>,
) -> anyhow::Result<Page<T>> {
    let mut url = reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))?;
    url.query_pairs_mut().append_pair("limit", PAGE_SIZE);
    if let Some(after) = after {
        url.query_pairs_mut().append_pair("after", after);
    }
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Copies the whole list unless done before; returns the items copied.
async fn run<J: Job>(
    job: &J,
    db: &Db,
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<usize> {
    if done(db.pool(), job.name()).await? {
        return Ok(0);
    }
    let mut after: Option<String> = None;
    let mut copied = 0;
    loop {
        let page: Page<J::Item> = fetch_page(http, base, job.path(), after.as_deref()).await?;
        copied += page.items.len();
        // Through `Db::begin` (SQLite: the one writer at a time), like every write.
        let mut tx = db.begin().await?;
        job.apply(tx.conn(), page.items).await?;
        if page.next_cursor.is_none() {
            mark_done(tx.conn(), job.name()).await?;
        }
        tx.commit().await?;
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => return Ok(copied),
        }
    }
}

/// Runs `job` once against the service at `base`, in the background, the first time
/// the service starts: retried while the source cannot answer (0.5 s, doubling up to
/// 30 s), until done or `shutdown`.
pub fn spawn<J: Job>(
    job: J,
    db: Db,
    http: reqwest::Client,
    base: String,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = FIRST_RETRY;
        loop {
            let result = tokio::select! {
                r = run(&job, &db, &http, &base) => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(job = job.name(), rows = n, "copied once from {base}");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = job.name(), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot copy yet");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    })
}
