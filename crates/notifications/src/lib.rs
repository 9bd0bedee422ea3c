//! The notifications service (architecture §6, API.md "Notifications"): an inbox of
//! `dm`, `mention`, `reply` and `message` notifications built from chat's durable
//! message events, with per-user preferences and per-room levels, on SQLite or
//! PostgreSQL with its own database.
//!
//! - Consumes (consumer group [`events::GROUP`]) `chat.message.created/updated/deleted`
//!   and `chat.room.read` (source `chat`), `user.blocked`/`user.unblocked` (source
//!   `users`) and `user.registered`/`user.updated`/`user.deleted` (source `auth`). Each event is applied
//!   once (`bus::inbox::begin_once`) and the unique `(user_id, message_id)` key keeps one
//!   notification per recipient and message even without the inbox. The rules are pure
//!   functions in [`rules`].
//! - Publishes (source [`events::SOURCE`], through its outbox) `notifications.unread_count`
//!   `{user_id, unread_count}` in the transaction of every change of a user's count, so
//!   chat can forward it to the user's sockets.
//! - Mails (instant after 5 min unread, or a daily digest at local 08:00) through the
//!   shared [`mail`] sender, with a one-click unsubscribe link ([`email`]).
//! - Blocks made before this service consumed `user.blocked` are copied once from the
//!   user service's `GET {users_url}/internal/blocks` ([`backfill`], `kit::backfill`).
//! - Room levels are for members only: `GET {chat_url}/internal/rooms/{room}/members/{user}`.
//! - `GET /openapi.json` for the gateway.

pub mod api;
pub mod backfill;
pub mod chat_client;
pub mod domain;
pub mod email;
pub mod events;
pub mod push;
pub mod rules;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::state::ApiContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` (`NOTIFICATIONS_DATABASE_URL`); unset = `<data dir>/notifications.db`.
    pub database_url: Option<String>,
    /// The chat service, for its internal membership route.
    pub chat_url: String,
    /// Timeout of one call to chat.
    pub chat_timeout_ms: u64,
    /// VAPID private key, base64url PKCS#8 (P-256); unset = generated on first start
    /// into `<data dir>/vapid/private.pk8`.
    pub vapid_private_key: Option<String>,
    /// The VAPID JWT's `sub`: a contact for push services.
    pub vapid_subject: String,
    /// http origins accepted for push endpoints (test push services); others need https.
    pub push_http_origins: Vec<String>,
    /// How often the push worker looks for due notifications.
    pub push_poll_ms: u64,
    /// Timeout of one request to a push service.
    pub push_timeout_ms: u64,
    /// `smtp://…` / `smtps://…`; unset = `.eml` files in `<data dir>/outbox/` (as auth).
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// Where people open the app: links in mails, and the unsubscribe URL (the gateway
    /// serves both).
    pub public_url: String,
    /// HMAC key of the unsubscribe links (at least 32 characters); unset = generated on
    /// first start into `<data dir>/mail/unsubscribe.key`. Instances must share it.
    pub unsubscribe_secret: Option<String>,
    /// How long a notification stays unread before it is mailed (`email: "instant"`).
    pub email_delay_ms: u64,
    /// How often the email worker looks for due mails and digests.
    pub email_poll_ms: u64,
    /// Tests only: the email worker's clock (the digest's local 08:00); the system clock
    /// by default.
    #[serde(skip)]
    pub email_clock: email::worker::Clock,
    /// Requests in flight at most per push-service origin (scheme, host, port), so one
    /// slow push service cannot take every turn.
    pub push_concurrency_per_origin: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3004)),
            database_url: None,
            chat_url: "http://127.0.0.1:3002".to_owned(),
            chat_timeout_ms: 2_000,
            vapid_private_key: None,
            vapid_subject: "mailto:admin@intellicolab.invalid".to_owned(),
            push_http_origins: Vec::new(),
            push_poll_ms: 500,
            push_timeout_ms: 10_000,
            smtp_url: None,
            mail_from: "IntelliColab <no-reply@intellicolab.local>".to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            unsubscribe_secret: None,
            // API.md: "still unread after 5 minutes is mailed".
            email_delay_ms: 5 * 60_000,
            // A mail goes out within 30 s of being due; the digest within 30 s of 08:00.
            email_poll_ms: 30_000,
            email_clock: email::worker::Clock::default(),
            // At a push service's ~100 ms a request, 8 in flight is ~80 pushes/s per
            // origin, and a stalled origin (10 s timeout) holds 8 connections, not all.
            push_concurrency_per_origin: 8,
        }
    }
}

impl Config {
    /// Rejects a value below its minimum with an error naming the key, instead of silently
    /// running with another value. Called by [`build`].
    pub fn validate(&self) -> anyhow::Result<()> {
        let checks: [(&str, u64, u64); 5] = [
            // 0 would fail every membership check (room levels) at once.
            ("chat_timeout_ms", self.chat_timeout_ms, 1),
            // Polling the due queue more than 20 times a second is load, not latency
            // (API.md promises a push within 10 s).
            ("push_poll_ms", self.push_poll_ms, 50),
            // Push services answer in well under a second; 100 ms is the floor for a
            // remote TLS handshake.
            ("push_timeout_ms", self.push_timeout_ms, 100),
            // Each round reads the due queue and every `daily` user: more often than 20
            // times a second is load, not promptness.
            ("email_poll_ms", self.email_poll_ms, 50),
            // 0 would never push.
            (
                "push_concurrency_per_origin",
                self.push_concurrency_per_origin,
                1,
            ),
        ];
        kit::config::check_minimums("notifications", &checks)?;
        if !(self.vapid_subject.starts_with("mailto:") || self.vapid_subject.starts_with("https:"))
        {
            anyhow::bail!(
                "invalid configuration: notifications.vapid_subject must be a mailto: or https: URL"
            );
        }
        kit::config::check_http_url("notifications", "public_url", &self.public_url)?;
        kit::config::check_http_url("notifications", "chat_url", &self.chat_url)
    }
}

/// Service name: database file, metrics label.
pub const NAME: &str = "notifications";

pub use store::MIGRATIONS;

fn setup<'a>(common: &'a kit::config::CommonConfig, config: &'a Config) -> kit::server::Setup<'a> {
    kit::server::Setup {
        name: NAME,
        database_url: config.database_url.as_deref(),
        data_dir: &common.data_dir,
        migrations: store::MIGRATIONS,
        listen: config.listen,
    }
}

/// Applies the service's migrations and returns.
pub async fn migrate(common: &kit::config::CommonConfig, config: &Config) -> anyhow::Result<()> {
    setup(common, config).open_db().await?.close().await;
    Ok(())
}

pub async fn build(
    common: &kit::config::CommonConfig,
    config: &Config,
    bus: bus::Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<kit::server::Service> {
    config.validate()?;
    let trusted = kit::net::TrustedProxies::parse(&common.trusted_proxies)?;
    let kit::server::Started {
        db,
        listener,
        ready,
    } = setup(common, config).start(bus.probe()).await?;
    let vapid = Arc::new(push::Vapid::load(
        config.vapid_private_key.as_deref(),
        &common.data_dir,
        &config.vapid_subject,
    )?);
    let unsubscribe = Arc::new(email::UnsubscribeKey::load(
        config.unsubscribe_secret.as_deref(),
        &common.data_dir,
    )?);
    let mailer = mail::Mailer::new(
        config.smtp_url.as_deref(),
        &config.mail_from,
        common.data_dir.join("outbox"),
    )?;
    // Everything that can fail is done: only now start the background tasks.
    let shutdown = shutdown.child_token();
    let verifier = token::Verifier::from_url(common.jwks_url());
    let ready = kit::server::gated(
        ready,
        token::Verifier::spawn_revocation_sync(&common.auth_url),
        "revoked sessions not loaded from auth yet",
    );
    let (outbox, relay) =
        bus::outbox::Relay::spawn(events::SOURCE, db.clone(), bus.clone(), shutdown.clone());
    let chat = Arc::new(chat_client::ChatClient::new(
        &config.chat_url,
        Duration::from_millis(config.chat_timeout_ms),
    ));
    let ctx = ApiContext {
        db: db.clone(),
        verifier,
        outbox,
        chat: chat.clone(),
        vapid: vapid.clone(),
        push_http_origins: Arc::new(config.push_http_origins.clone()),
        unsubscribe: unsubscribe.clone(),
    };
    let pusher = push::worker::Pusher {
        db: db.clone(),
        vapid,
        http: reqwest::Client::builder()
            .timeout(Duration::from_millis(config.push_timeout_ms))
            .build()
            .unwrap_or_default(),
        poll: Duration::from_millis(config.push_poll_ms),
        chat: chat.clone(),
        per_origin: usize::try_from(config.push_concurrency_per_origin).unwrap_or(usize::MAX),
    }
    .spawn(shutdown.clone());
    let emailer = email::worker::Emailer {
        db: db.clone(),
        mailer,
        chat,
        key: unsubscribe,
        public_url: config.public_url.trim_end_matches('/').to_owned(),
        delay_ms: i64::try_from(config.email_delay_ms).unwrap_or(i64::MAX),
        poll: Duration::from_millis(config.email_poll_ms),
        clock: config.email_clock.clone(),
    }
    .spawn(shutdown.clone());
    let consumer = events::subscribe(ctx.clone(), &bus, shutdown.clone());
    let blocks_backfill = kit::backfill::spawn(
        backfill::Blocks,
        db.clone(),
        reqwest::Client::builder()
            .timeout(backfill::PAGE_TIMEOUT)
            .build()
            .unwrap_or_default(),
        common.users_url.clone(),
        shutdown.clone(),
    );
    let router = kit::server::finish_router(NAME, api::router(ctx), ready, trusted);
    Ok(kit::server::Service {
        name: NAME,
        listener,
        router,
        shutdown,
        background: vec![relay, consumer, pusher, emailer, blocks_backfill],
        event_loops: 0,
    })
}
