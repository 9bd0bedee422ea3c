//! The Web Push sender: polls the due queue (every `push_poll_ms`, 500 ms by default, so a
//! notification is pushed well within API.md's 10 s), claims each notification (the
//! recheck: read or withdrawn ones are not claimed), and POSTs it encrypted to every
//! subscription of its recipient. 2xx: done; 404/410: the subscription is gone and
//! deleted; 429/5xx or no answer: tried again after 1 s doubling up to 60 s, at most
//! [`MAX_ATTEMPTS`] times.
//!
//! Presence: nothing is pushed to a recipient chat reports `online` (an open, active
//! connection: the client shows the notification and the badge itself); the notification
//! is then done with, as architecture §6.5 designs. When chat cannot answer, the push goes
//! out: a duplicate on an open screen is better than a missed notification.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kit::db::Db;
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

pub struct Pusher {
    pub db: Db,
    pub vapid: Arc<Vapid>,
    pub http: reqwest::Client,
    pub poll: Duration,
    pub chat: Arc<ChatClient>,
}

impl Pusher {
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.run_once().await {
                    tracing::warn!(error = %e, "push round failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        })
    }

    /// One round over the due queue.
    pub async fn run_once(&self) -> anyhow::Result<()> {
        let now = kit::time::now_ms();
        for id in push::due(self.db.pool(), now, BATCH).await? {
            if let Err(e) = self.deliver(id).await {
                tracing::warn!(notification = %id, error = %e, "push failed");
            }
        }
        Ok(())
    }

    async fn deliver(&self, id: Uuid) -> anyhow::Result<()> {
        let now = kit::time::now_ms();
        if !push::claim(self.db.pool(), id, now, LEASE_MS).await? {
            return Ok(());
        }
        let Some((user, n, attempts)) = notifications::get_for_push(self.db.pool(), id).await?
        else {
            return Ok(());
        };
        let prefs = settings::preferences(self.db.pool(), user).await?;
        let subs = if prefs.web_push {
            push::subscriptions(self.db.pool(), user).await?
        } else {
            Vec::new()
        };
        if subs.is_empty() {
            push::mark_pushed(self.db.pool(), id, now).await?;
            return Ok(());
        }
        match self.chat.is_online(user).await {
            Ok(true) => {
                metrics::counter!("notifications_push_total", "outcome" => "online").increment(1);
                push::mark_pushed(self.db.pool(), id, now).await?;
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence unknown; pushing"),
        }
        let payload = serde_json::to_vec(&n)?;
        let urgency = match n.kind {
            Kind::Dm | Kind::Mention => "high",
            Kind::Reply | Kind::Message => "normal",
        };
        let mut retry = false;
        for sub in subs {
            match self.send(&sub, &payload, urgency).await {
                Ok(status) if status.is_success() => {
                    metrics::counter!("notifications_push_total", "outcome" => "sent").increment(1);
                    let latency = (kit::time::now_ms() - n.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!("notifications_delivery_latency_seconds").record(latency);
                }
                Ok(status)
                    if status == reqwest::StatusCode::NOT_FOUND
                        || status == reqwest::StatusCode::GONE =>
                {
                    metrics::counter!("notifications_push_total", "outcome" => "gone").increment(1);
                    push::drop_subscription(self.db.pool(), sub.id).await?;
                }
                Ok(status)
                    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error() =>
                {
                    metrics::counter!("notifications_push_total", "outcome" => "retry")
                        .increment(1);
                    retry = true;
                }
                Ok(status) => {
                    // 400/403/413: retrying the same request cannot succeed.
                    metrics::counter!("notifications_push_total", "outcome" => "rejected")
                        .increment(1);
                    tracing::warn!(%status, subscription = %sub.id, "push rejected");
                }
                Err(e) => {
                    metrics::counter!("notifications_push_total", "outcome" => "retry")
                        .increment(1);
                    tracing::warn!(error = %e, subscription = %sub.id, "push service unreachable");
                    retry = true;
                }
            }
        }
        if retry && attempts + 1 < MAX_ATTEMPTS {
            // A retry goes to every subscription again: a device that already got it may
            // show it twice (the service worker can replace by tag, the notification id).
            let at = kit::time::now_ms() + backoff(attempts).as_millis() as i64;
            push::retry_at(self.db.pool(), id, at).await?;
        } else {
            push::mark_pushed(self.db.pool(), id, kit::time::now_ms()).await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        sub: &push::Subscription,
        payload: &[u8],
        urgency: &str,
    ) -> anyhow::Result<reqwest::StatusCode> {
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
        Ok(res.status())
    }
}

/// 1 s, 2 s, 4 s, … up to 60 s.
fn backoff(attempts: i64) -> Duration {
    Duration::from_millis((1_000u64 << attempts.clamp(0, 6)).min(60_000))
}
