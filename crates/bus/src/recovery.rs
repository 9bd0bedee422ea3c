//! Self-healing after Redis loses data.
//!
//! The outbox guarantees an event reaches Redis; Redis does not guarantee to keep it: a
//! restart without persistence, `appendfsync everysec` losing its last second, a failover
//! to a replica that was behind, a `FLUSHALL`. Each producer's relay therefore keeps an
//! **epoch marker** in Redis:
//! - the service's epoch ([`epoch_key`](crate::redis_streams::epoch_key)): a random id, set
//!   by the first relay that finds it missing;
//! - the relay's own progress ([`progress_key`](crate::redis_streams::progress_key), one key
//!   per relay process): the start time (epoch ms) of the latest batch it published, raised
//!   after the batch's XADDs (never lowered), so it is lost together with them. One key per
//!   relay, because relays sharing an outbox (two chat nodes) would otherwise overwrite the
//!   evidence of a rewind before the other one looked.
//!
//! Before every batch (and every poll, 500 ms, when idle) the relay reads both:
//! - **epoch missing** (wiped: restart without persistence, FLUSHALL, empty replica): it sets a new
//!   epoch and re-publishes every event published since the point all consumer groups had
//!   processed when it last looked (sampled every 5 s), but at least the last
//!   [`DEFAULT_BROADCAST_LOOKBACK`] (so a process starting later still finds the broadcast
//!   window, e.g. revocations); with no sample (the relay started after the loss) the whole
//!   outbox retention window (24 h);
//! - **its progress lower than what it wrote** (Redis went back in time: AOF tail or
//!   replica lag): it re-publishes every event published since the surviving progress.
//!
//! Re-publishing = marking the outbox rows unpublished again ([`outbox::replay_since`]): the
//! relay sends them in `seq` order, before anything newer, and consumers drop what they had
//! applied already (the inbox). A relay that sees a *changed* epoch adopts it: another relay
//! of the same outbox created it and re-publishes. Both signals are counted in
//! `bus_redis_data_loss_detected_total{service}` (with a warn log line); re-published events
//! in `bus_events_replayed_total{service}`.
//!
//! Consumers detect the loss of their group (recreated at `0`, see
//! [`crate::redis_streams`]); broadcast readers detect stream ids going backwards.
//!
//! A batch cut short by a Redis error published events Redis may not have kept; they are
//! re-published once it answers again (not counted as a loss).
//!
//! Times are compared with [`MARGIN_MS`] of slack: progress comes from the relays' clocks and the
//! consumer-group sample from Redis's, and relays sharing an outbox publish concurrently.
//!
//! Limits: only the outbox retention window (24 h) can be re-published; a rewind is
//! detected by the relays whose progress it lost (if one of two relays sharing an outbox
//! dies at the same moment, the other re-publishes from its own surviving progress, which
//! covers the dead one's events only when it was publishing too); a re-publication longer
//! than a stream's MAXLEN (~1,000,000 entries) would trim entries consumers have not read yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::db::Db;

use crate::redis_streams::RedisBus;
use crate::{DEFAULT_BROADCAST_LOOKBACK, outbox};

/// Slack on every "since": clock skew between relays and Redis, and batches of two relays
/// that started in one order and finished in the other. Re-sending a few seconds more is
/// harmless (consumers are idempotent); re-sending too little loses events.
pub const MARGIN_MS: i64 = 5_000;
/// How often the consumer groups' progress is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often an idle relay refreshes its progress key's expiry.
const TOUCH_EVERY: Duration = Duration::from_secs(3600);

/// One relay's view of the marker.
pub(crate) struct Guard {
    service: &'static str,
    /// This relay's id (its progress key).
    relay: String,
    redis: Arc<RedisBus>,
    /// The epoch this relay last saw (None: not yet looked).
    epoch: Option<String>,
    /// The highest progress this relay wrote (0: none yet).
    last_at: i64,
    last_touch: Instant,
    /// Redis stream time (ms) up to which every consumer group had processed, last sample.
    consumed_ms: Option<i64>,
    last_sample: Option<Instant>,
    /// Replay still to do: kept until the outbox update succeeded.
    pending: Option<(i64, Cause)>,
}

/// Why events are re-published (ordered: a merge keeps the strongest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    /// A batch failed part-way: Redis may or may not have kept what it acknowledged.
    Uncertain,
    /// The marker was missing when this relay first looked: a loss while it was not running,
    /// or the first start ever (then the outbox has nothing published to re-send).
    FirstSight,
    /// The marker this relay knew vanished or went back in time.
    Loss,
}

impl Guard {
    pub(crate) fn new(service: &'static str, redis: Arc<RedisBus>) -> Self {
        // Present from the start (at 0), so the alert's `increase()` sees the first loss.
        metrics::counter!("bus_redis_data_loss_detected_total", "service" => service).increment(0);
        metrics::counter!("bus_events_replayed_total", "service" => service).increment(0);
        Self {
            service,
            relay: uuid::Uuid::now_v7().simple().to_string(),
            redis,
            last_touch: Instant::now(),
            epoch: None,
            last_at: 0,
            consumed_ms: None,
            last_sample: None,
            pending: None,
        }
    }

    /// Reads the marker; on a detected loss marks the events to re-publish in `db`'s outbox.
    /// The relay publishes only after this succeeded, so nothing new goes out before what a
    /// loss requires to re-send, and no batch's mark can overwrite the evidence unseen.
    pub(crate) async fn check(&mut self, db: &Db) -> anyhow::Result<()> {
        let (epoch, at) = self.redis.read_marker(self.service, &self.relay).await?;
        let now = kit::time::now_ms();
        match (self.epoch.as_deref(), epoch) {
            (_, None) => {
                let mine = uuid::Uuid::now_v7().simple().to_string();
                if self.redis.create_epoch(self.service, &mine).await? {
                    let since = self.since_wipe(now);
                    if self.epoch.is_some() {
                        tracing::warn!(service = self.service, since = %kit::time::rfc3339(since), "Redis lost data (epoch marker missing); re-publishing the outbox since then");
                        self.schedule(since, Cause::Loss);
                    } else {
                        self.schedule(since, Cause::FirstSight);
                    }
                    self.epoch = Some(mine);
                    self.last_at = 0;
                }
                // Else another relay of this outbox set it just now and re-publishes; the
                // next check adopts its epoch.
            }
            (None, Some(seen)) => self.epoch = Some(seen),
            (Some(mine), Some(seen)) if mine != seen => {
                tracing::info!(
                    service = self.service,
                    "epoch marker renewed by another relay of this outbox (it re-publishes)"
                );
                self.epoch = Some(seen);
                // What this relay wrote went with the old epoch.
                self.last_at = 0;
            }
            (Some(_), Some(_)) => {
                let at = at.unwrap_or(0);
                if at < self.last_at {
                    let since = if at > 0 {
                        at - MARGIN_MS
                    } else {
                        self.since_wipe(now)
                    };
                    tracing::warn!(service = self.service, progress = %kit::time::rfc3339(at), published = %kit::time::rfc3339(self.last_at), "Redis lost data (the relay's progress went back in time); re-publishing the outbox since then");
                    self.schedule(since, Cause::Loss);
                    self.last_at = at;
                }
            }
        }
        if let Some((since, cause)) = self.pending {
            let replayed = outbox::replay_since(db, since).await?;
            self.pending = None;
            metrics::counter!("bus_events_replayed_total", "service" => self.service)
                .increment(replayed);
            if cause == Cause::Uncertain {
                tracing::info!(
                    service = self.service,
                    replayed,
                    "re-published the events of a batch interrupted by a Redis error"
                );
            } else if cause == Cause::Loss || replayed > 0 {
                metrics::counter!("bus_redis_data_loss_detected_total", "service" => self.service)
                    .increment(1);
                tracing::warn!(
                    service = self.service,
                    replayed,
                    since = %kit::time::rfc3339(since),
                    "Redis lost data; events re-published from the outbox"
                );
            } else {
                tracing::info!(
                    service = self.service,
                    "epoch marker created (nothing to re-publish)"
                );
            }
            return Ok(());
        }
        if self.last_at > 0 && self.last_touch.elapsed() >= TOUCH_EVERY {
            self.last_touch = Instant::now();
            let _ = self.redis.touch_progress(self.service, &self.relay).await;
        }
        if self.last_sample.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
            self.last_sample = Some(Instant::now());
            if let Ok(consumed) = self.redis.consumed_up_to(self.service).await {
                self.consumed_ms = Some(consumed.unwrap_or(now));
            }
        }
        Ok(())
    }

    /// After a batch that published events (started at `started`, epoch ms): raises the
    /// marker. A batch that failed part-way (or whose mark failed) published events Redis
    /// may not have kept (it failed or went away meanwhile), so they are re-published once
    /// Redis answers again.
    pub(crate) async fn published(&mut self, started: i64, complete: bool) {
        if complete && let Some(epoch) = self.epoch.as_deref() {
            match self
                .redis
                .advance_marker(self.service, &self.relay, epoch, self.last_at, started)
                .await
            {
                Ok(true) => {
                    self.last_at = self.last_at.max(started);
                    self.last_touch = Instant::now();
                    return;
                }
                // The marker changed since the check before this batch: the next check
                // finds out how, and its re-publication covers this batch too.
                Ok(false) => return,
                Err(_) => {}
            }
        }
        self.schedule(started - MARGIN_MS, Cause::Uncertain);
    }

    fn schedule(&mut self, since: i64, cause: Cause) {
        self.pending = Some(match self.pending {
            Some((s, c)) => (s.min(since), c.max(cause)),
            None => (since, cause),
        });
    }

    /// Where a re-publication after a wipe starts (see the module docs).
    fn since_wipe(&self, now: i64) -> i64 {
        let lookback = i64::try_from(DEFAULT_BROADCAST_LOOKBACK.as_millis()).unwrap_or(i64::MAX);
        match self.consumed_ms {
            Some(consumed) => (consumed - MARGIN_MS).min(now - lookback),
            None => 0,
        }
    }
}
