//! The collector: every `gc_interval_secs`, deletes uploads attached to no message for
//! `unattached_ttl_secs` (API.md: 24 h), expired quota reservations and stale spool
//! files. Safe with several processes: a file is deleted by one statement that re-checks
//! it is still unattached and old, so only one process deletes each row and removes its
//! objects.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::delete_objects;
use crate::state::ApiContext;
use crate::store::{files, quota};

/// Rows deleted per pass at most, so one pass never holds the database for long.
const BATCH: i64 = 500;
/// A spool file untouched this long belongs to an upload that died with its process.
const STALE_SPOOL: Duration = Duration::from_secs(3600);

pub struct Collector {
    pub ctx: ApiContext,
    pub ttl: Duration,
    pub every: Duration,
}

impl Collector {
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.run_once().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(files = n, "unattached uploads collected"),
                    Err(e) => {
                        tracing::warn!(error = %e, "file collection failed; retried next period")
                    }
                }
            }
        })
    }

    /// One pass; returns how many files it deleted.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let now = kit::time::now_ms();
        let cutoff = now - i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let candidates = files::unattached_before(self.ctx.db.pool(), cutoff, BATCH).await?;
        let mut gone = Vec::new();
        for (id, thumb) in candidates {
            let mut tx = self.ctx.db.begin().await?;
            if files::delete_unattached(tx.conn(), id, None, Some(cutoff)).await? {
                gone.push((id, thumb));
            }
            tx.commit().await?;
        }
        delete_objects(&self.ctx, &gone).await;
        metrics::counter!("files_collected_total").increment(gone.len() as u64);
        let mut tx = self.ctx.db.begin().await?;
        quota::purge_expired(tx.conn(), now).await?;
        tx.commit().await?;
        purge_spool(&self.ctx.limits.spool_dir);
        Ok(gone.len())
    }
}

fn purge_spool(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_SPOOL);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
