//! The Web Push sender: polls the due queue (every `push_poll_ms`, 500 ms by default, so a
//! notification is pushed well within API.md's 10 s), claims each notification (the
//! recheck: read or withdrawn ones are not claimed), and POSTs it encrypted to every
//! subscription of its recipient. 2xx: done; 404/410: the subscription is gone and
//! deleted; 429/5xx or no answer: tried again after 1 s doubling up to 60 s, or later
//! when the push service says so in `Retry-After` (up to 1 h), at most [`MAX_ATTEMPTS`]
//! times.
//!
//! Concurrency: every claimed notification is delivered by its own task (a round does not
//! wait for the previous one's pushes), to all its subscriptions at once; at most
//! `push_concurrency_per_origin` (8 by default) requests are in flight per push-service
//! origin (scheme, host, port), so one slow push service holds 8 requests and no more,
//! and the others' notifications go out meanwhile. A push that waits [`ORIGIN_WAIT`] for
//! its origin without a turn is deferred by [`DEFER`] without counting as an attempt.
//!
//! Presence: nothing is pushed to a recipient chat reports `online` (an open, active
//! connection: the client shows the notification and the badge itself); the notification
//! is then done with, as architecture §6.5 designs. When chat cannot answer, the push goes
//! out: a duplicate on an open screen is better than a missed notification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kit::db::Db;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Vapid;
use crate::chat_client::ChatClient;
use crate::domain::Kind;
use crate::store::{notifications, push, settings};

/// Tries per notification before giving up on a failing push service.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long a claimed notification is left to one worker before another may take it.
const LEASE_MS: i64 = 60_000;
/// Due notifications read per poll.
const BATCH: i64 = 100;
/// Push messages live this long at the push service when the device is offline (1 day).
const TTL_SECS: u32 = 86_400;
/// Notifications being delivered at once, all origins together: a bound on the tasks a
/// backlog can spawn (each is a few KB), far above what 8 requests per origin keep busy.
const MAX_IN_FLIGHT: usize = 1_000;
/// How long a push waits for a turn at its origin before it is deferred: well inside the
/// 60 s lease, so no other worker claims the notification meanwhile.
const ORIGIN_WAIT: Duration = Duration::from_secs(5);
/// How much later a deferred push is due again.
const DEFER_MS: i64 = 1_000;
/// The longest `Retry-After` honoured; a push service asking for more is asked again then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

pub struct Pusher {
    pub db: Db,
    pub vapid: Arc<Vapid>,
    pub http: reqwest::Client,
    pub poll: Duration,
    pub chat: Arc<ChatClient>,
    /// Requests in flight per push-service origin at most (`push_concurrency_per_origin`).
    pub per_origin: usize,
}

/// The `outcome` labels of `notifications_push_total`: the [`Outcome`]s, and `online`
/// (not pushed: the recipient has chat open).
const OUTCOMES: [&str; 6] = ["sent", "gone", "retry", "busy", "rejected", "online"];

/// What one subscription's push came to.
enum Outcome {
    Sent,
    /// 404/410: deleted.
    Gone,
    /// 429/5xx or no answer: try again, not before the given delay (`Retry-After`).
    Retry(Option<Duration>),
    /// No turn at its origin within [`ORIGIN_WAIT`]: try again soon, not an attempt.
    Busy,
    /// 400/403/413: retrying the same request cannot succeed.
    Rejected,
}

/// The shared state of the worker's delivery tasks.
struct Shared {
    pusher: Pusher,
    /// One semaphore of `per_origin` permits per origin seen.
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    in_flight: AtomicUsize,
}

impl Pusher {
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        // Every outcome exported from the start, so the failure ratio has its series.
        for outcome in OUTCOMES {
            metrics::counter!("notifications_push_total", "outcome" => outcome).increment(0);
        }
        let poll = self.poll;
        let shared = Arc::new(Shared {
            pusher: self,
            origins: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
        });
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                if let Err(e) = shared.round(&mut tasks).await {
                    tracing::warn!(error = %e, "push round failed");
                }
                while tasks.try_join_next().is_some() {}
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Unfinished pushes are due again when their lease ends.
                        tasks.abort_all();
                        return;
                    }
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        })
    }
}

impl Shared {
    /// Claims the due notifications (up to [`BATCH`], and [`MAX_IN_FLIGHT`] in all) and
    /// starts a delivery task for each.
    async fn round(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) -> anyhow::Result<()> {
        let p = &self.pusher;
        let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Relaxed));
        let limit = BATCH.min(room as i64);
        if limit == 0 {
            return Ok(());
        }
        let now = kit::time::now_ms();
        for id in push::due(p.db.pool(), now, limit).await? {
            if !push::claim(p.db.pool(), id, now, LEASE_MS).await? {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            tasks.spawn(async move {
                if let Err(e) = me.deliver(id).await {
                    tracing::warn!(notification = %id, error = %e, "push failed");
                }
                me.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Ok(())
    }

    fn origin(&self, endpoint: &str) -> Arc<Semaphore> {
        let key = reqwest::Url::parse(endpoint)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let mut origins = self
            .origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        origins
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.pusher.per_origin.max(1))))
            .clone()
    }

    /// Delivers a claimed notification.
    async fn deliver(self: &Arc<Self>, id: Uuid) -> anyhow::Result<()> {
        let this = &self.pusher;
        let now = kit::time::now_ms();
        let Some((user, n, attempts)) = notifications::get_for_push(this.db.pool(), id).await?
        else {
            return Ok(());
        };
        let prefs = settings::preferences(this.db.pool(), user).await?;
        let subs = if prefs.web_push {
            push::subscriptions(this.db.pool(), user).await?
        } else {
            Vec::new()
        };
        if subs.is_empty() {
            push::mark_pushed(this.db.pool(), id, now).await?;
            return Ok(());
        }
        match this.chat.is_online(user).await {
            Ok(true) => {
                metrics::counter!("notifications_push_total", "outcome" => "online").increment(1);
                push::mark_pushed(this.db.pool(), id, now).await?;
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence unknown; pushing"),
        }
        let payload = Arc::new(serde_json::to_vec(&n)?);
        let urgency = match n.kind {
            Kind::Dm | Kind::Mention => "high",
            Kind::Reply | Kind::Message => "normal",
        };
        // Every subscription at once: a slow push service does not hold up the others.
        let mut sends = tokio::task::JoinSet::new();
        for sub in subs {
            let me = self.clone();
            let payload = payload.clone();
            sends.spawn(async move {
                let outcome = me.send_limited(&sub, &payload, urgency).await;
                (sub, outcome)
            });
        }
        let mut retry: Option<Duration> = None;
        let mut busy = false;
        while let Some(done) = sends.join_next().await {
            let Ok((sub, outcome)) = done else { continue };
            let label = match outcome {
                Outcome::Sent => {
                    let latency = (kit::time::now_ms() - n.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!("notifications_delivery_latency_seconds").record(latency);
                    "sent"
                }
                Outcome::Gone => {
                    push::drop_subscription(this.db.pool(), sub.id).await?;
                    "gone"
                }
                Outcome::Retry(after) => {
                    let wait = backoff(attempts).max(after.unwrap_or_default());
                    retry = Some(retry.map_or(wait, |r| r.max(wait)));
                    "retry"
                }
                Outcome::Busy => {
                    busy = true;
                    "busy"
                }
                Outcome::Rejected => "rejected",
            };
            metrics::counter!("notifications_push_total", "outcome" => label).increment(1);
        }
        // A retry goes to every subscription again: a device that already got it may
        // show it twice (the service worker can replace by tag, the notification id).
        match retry {
            Some(wait) if attempts + 1 < MAX_ATTEMPTS => {
                let at = kit::time::now_ms() + wait.min(MAX_RETRY_AFTER).as_millis() as i64;
                push::retry_at(this.db.pool(), id, at).await?;
            }
            _ if busy => {
                push::defer(this.db.pool(), id, kit::time::now_ms() + DEFER_MS).await?;
            }
            _ => push::mark_pushed(this.db.pool(), id, kit::time::now_ms()).await?,
        }
        Ok(())
    }

    /// One push, once its origin has a free turn (see [`ORIGIN_WAIT`]).
    async fn send_limited(
        &self,
        sub: &push::Subscription,
        payload: &[u8],
        urgency: &str,
    ) -> Outcome {
        let origin = self.origin(&sub.endpoint);
        let Ok(Ok(_permit)) = tokio::time::timeout(ORIGIN_WAIT, origin.acquire_owned()).await
        else {
            return Outcome::Busy;
        };
        match self.pusher.send(sub, payload, urgency).await {
            Ok((status, _)) if status.is_success() => Outcome::Sent,
            Ok((status, _))
                if status == reqwest::StatusCode::NOT_FOUND
                    || status == reqwest::StatusCode::GONE =>
            {
                Outcome::Gone
            }
            Ok((status, retry_after))
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
            {
                Outcome::Retry(retry_after)
            }
            Ok((status, _)) => {
                tracing::warn!(%status, subscription = %sub.id, "push rejected");
                Outcome::Rejected
            }
            Err(e) => {
                tracing::warn!(error = %e, subscription = %sub.id, "push service unreachable");
                Outcome::Retry(None)
            }
        }
    }
}

impl Pusher {
    async fn send(
        &self,
        sub: &push::Subscription,
        payload: &[u8],
        urgency: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Option<Duration>)> {
        let p256dh = URL_SAFE_NO_PAD.decode(sub.p256dh.trim_end_matches('='))?;
        let auth = URL_SAFE_NO_PAD.decode(sub.auth.trim_end_matches('='))?;
        let body = self.vapid.encrypt(&p256dh, &auth, payload)?;
        let authorization = self
            .vapid
            .authorization(&sub.endpoint, kit::time::now_ms() / 1000)?;
        let res = self
            .http
            .post(&sub.endpoint)
            .header("TTL", TTL_SECS.to_string())
            .header("Urgency", urgency)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", authorization)
            .body(body)
            .send()
            .await?;
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        Ok((res.status(), retry_after))
    }
}

/// `Retry-After` as delay-seconds (RFC 9110 §10.2.3; what push services send). An
/// HTTP-date is not understood: the back-off applies then.
fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// 1 s, 2 s, 4 s, … up to 60 s.
fn backoff(attempts: i64) -> Duration {
    Duration::from_millis((1_000u64 << attempts.clamp(0, 6)).min(60_000))
}
