//! The email sender. Every `email_poll_ms` (30 s by default) it runs two rounds:
//!
//! - **Instant** (`email: "instant"`, the default): a notification still unread
//!   `email_delay_ms` (5 min) after its creation is mailed; everything of one user due in
//!   that round, or within a quarter of the delay after, goes in one mail. The claim is the recheck (read or withdrawn ones are not
//!   claimed, see [`crate::store::email`]). Nothing is mailed to a recipient chat reports
//!   `online` (an open, active connection), as for pushes; when chat cannot answer the mail
//!   goes out. `off` users' due notifications are claimed and dropped.
//! - **Daily digest** (`email: "daily"`): once the user's local time (their `timezone`,
//!   chrono-tz, so DST is followed) is 08:00 or later on a local date without a digest,
//!   the day is claimed (`preferences.digest_on`) and everything unread not mailed yet goes
//!   in one mail; none when there is nothing. Presence is not asked: the digest is a
//!   scheduled summary, not an alert.
//!
//! Only a verified address (auth's `email_verified`) gets mail. A failed send gives the
//! notifications (and the digest day) back: retried after 1, 2, 3… minutes, at most
//! [`MAX_ATTEMPTS`] times.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Timelike};
use kit::db::Db;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Context, Style, UnsubscribeKey, compose};
use crate::chat_client::ChatClient;
use crate::domain::{EmailMode, Notification, Preferences};
use crate::store::{copies, email, settings};

/// Sends per notification before giving up on a failing mail server.
pub const MAX_ATTEMPTS: i64 = 5;
/// A failed send is retried after this, times the attempts so far (1, 2, 3, 4 min).
const RETRY_STEP_MS: i64 = 60_000;
/// Users served per instant round; the rest wait for the next round.
const BATCH: i64 = 100;
/// Local hour of the daily digest.
pub const DIGEST_HOUR: u32 = 8;

/// "Now" of the worker, epoch ms: the system clock, or one a test sets (the digest's
/// local 08:00 without waiting for it).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> i64 + Send + Sync>>);

impl Clock {
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(f)))
    }

    pub fn now_ms(&self) -> i64 {
        self.0.as_ref().map_or_else(kit::time::now_ms, |f| f())
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(set)"
        } else {
            "Clock(system)"
        })
    }
}

pub struct Emailer {
    pub db: Db,
    pub mailer: mail::Mailer,
    pub chat: Arc<ChatClient>,
    pub key: Arc<UnsubscribeKey>,
    /// Where people open the app, no trailing `/`.
    pub public_url: String,
    pub delay_ms: i64,
    pub poll: Duration,
    pub clock: Clock,
}

impl Emailer {
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let now = self.clock.now_ms();
                if let Err(e) = self.instant_round(now).await {
                    tracing::warn!(error = %e, "instant email round failed");
                }
                if let Err(e) = self.digest_round(now).await {
                    tracing::warn!(error = %e, "digest round failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        })
    }

    pub async fn instant_round(&self, now: i64) -> anyhow::Result<()> {
        let cutoff = now - self.delay_ms;
        for user in email::due_users(self.db.pool(), cutoff, now, BATCH).await? {
            if let Err(e) = self.instant(user, cutoff, now).await {
                tracing::warn!(%user, error = %e, "instant email failed");
            }
        }
        Ok(())
    }

    async fn instant(&self, user: Uuid, cutoff: i64, now: i64) -> anyhow::Result<()> {
        let prefs = settings::preferences(self.db.pool(), user).await?;
        if prefs.email == EmailMode::Daily {
            return Ok(()); // switched meanwhile: the digest takes them
        }
        let claim = Uuid::now_v7();
        // Those due within the next quarter of the delay (75 s of 5 min) join this mail:
        // a burst of mentions is one mail, not one a poll apart.
        let window = cutoff.saturating_add(self.delay_ms / 4);
        if email::claim(self.db.pool(), user, window, now, claim).await? == 0 {
            return Ok(()); // read, withdrawn, or another instance took them
        }
        let items = email::claimed(self.db.pool(), claim).await?;
        if prefs.email == EmailMode::Off {
            return outcome("off");
        }
        let Some(recipient) = self.address(user).await? else {
            return outcome("unverified");
        };
        match self.chat.is_online(user).await {
            Ok(true) => return outcome("online"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence unknown; mailing"),
        }
        if let Err(e) = self
            .send(Style::Instant, user, &recipient, &prefs, &items)
            .await
        {
            tracing::warn!(%user, error = %e, "mail not sent; retrying later");
            email::release(self.db.pool(), claim, now, RETRY_STEP_MS, MAX_ATTEMPTS).await?;
            return outcome("retry");
        }
        outcome("sent")
    }

    pub async fn digest_round(&self, now: i64) -> anyhow::Result<()> {
        let Some(utc) = chrono::Utc.timestamp_millis_opt(now).single() else {
            return Ok(());
        };
        for u in email::daily_users(self.db.pool()).await? {
            // A zone stored before it was validated (or removed from the tz database): UTC.
            let tz: chrono_tz::Tz = u.timezone.parse().unwrap_or(chrono_tz::UTC);
            let local = utc.with_timezone(&tz);
            // Local wall time: 08:00 exists every day in every zone (DST shifts happen
            // between 00:00 and 04:00), and chrono-tz maps it to the right UTC instant.
            if local.hour() < DIGEST_HOUR {
                continue;
            }
            let today = format!(
                "{:04}-{:02}-{:02}",
                local.year(),
                local.month(),
                local.day()
            );
            if u.digest_on.as_deref() >= Some(today.as_str()) {
                continue;
            }
            if let Err(e) = self
                .digest(u.user_id, &today, u.digest_on.as_deref(), now)
                .await
            {
                tracing::warn!(user = %u.user_id, error = %e, "digest failed");
            }
        }
        Ok(())
    }

    async fn digest(
        &self,
        user: Uuid,
        today: &str,
        previous: Option<&str>,
        now: i64,
    ) -> anyhow::Result<()> {
        if !email::claim_digest_day(self.db.pool(), user, today).await? {
            return Ok(()); // another instance took the day, or the user left `daily`
        }
        let claim = Uuid::now_v7();
        // Everything unread and not mailed yet, whenever it was created.
        if email::claim(self.db.pool(), user, i64::MAX, now, claim).await? == 0 {
            return Ok(());
        }
        let items = email::claimed(self.db.pool(), claim).await?;
        let prefs = settings::preferences(self.db.pool(), user).await?;
        let Some(recipient) = self.address(user).await? else {
            return outcome("unverified");
        };
        if let Err(e) = self
            .send(Style::Digest, user, &recipient, &prefs, &items)
            .await
        {
            tracing::warn!(%user, error = %e, "digest not sent; retrying later");
            email::release(self.db.pool(), claim, now, RETRY_STEP_MS, MAX_ATTEMPTS).await?;
            email::release_digest_day(self.db.pool(), user, today, previous).await?;
            return outcome("retry");
        }
        metrics::counter!("notifications_digest_emails_total").increment(1);
        outcome("sent")
    }

    /// The recipient when they have a verified address.
    async fn address(&self, user: Uuid) -> anyhow::Result<Option<copies::Recipient>> {
        Ok(copies::identity(self.db.pool(), user)
            .await?
            .filter(|r| r.email_verified && !r.email.is_empty()))
    }

    async fn send(
        &self,
        style: Style,
        user: Uuid,
        recipient: &copies::Recipient,
        prefs: &Preferences,
        items: &[Notification],
    ) -> anyhow::Result<()> {
        let mut actors = HashMap::new();
        for n in items.iter().take(super::MAX_LISTED) {
            if !actors.contains_key(&n.actor_id)
                && let Some(r) = copies::identity(self.db.pool(), n.actor_id).await?
            {
                actors.insert(n.actor_id, r);
            }
        }
        let mut rooms: Vec<Uuid> = items.iter().map(|n| n.room_id).collect();
        rooms.sort();
        rooms.dedup();
        let rooms = email::room_names(self.db.pool(), &rooms).await?;
        let unsubscribe_url = format!(
            "{}/notifications/unsubscribe?token={}",
            self.public_url,
            self.key.token(user)
        );
        let mail = compose(
            style,
            &Context {
                public_url: &self.public_url,
                recipient,
                actors: &actors,
                rooms: &rooms,
                previews: prefs.previews,
                unsubscribe_url: &unsubscribe_url,
            },
            items,
        );
        self.mailer.send_mail(&mail).await
    }
}

fn outcome(outcome: &'static str) -> anyhow::Result<()> {
    metrics::counter!("notifications_email_total", "outcome" => outcome).increment(1);
    Ok(())
}
