//! The chat service: rooms (channels and DMs), durable messages with a gap-free per-room
//! event log, and real-time delivery over WebSockets, fanned out across nodes through
//! Redis pub/sub when configured.
//!
//! - Every change in a room takes the room's next `seq` in the transaction that stores
//!   it; nothing is acknowledged before commit.
//! - After commit the events go to the [`hub`] of this node and, through [`fanout`], to
//!   the other nodes; gaps (reordering, lost pub/sub messages) are filled from the
//!   database, so a connected client sees every event of its rooms in seq order.
//! - Consumes `session.revoked` (source `auth`) to close the sockets of ended sessions,
//!   and `user.blocked` / `user.unblocked` (source `users`) into its copy of the blocks,
//!   which stops DM sends either way, and `user.deleted` (source `auth`): the account
//!   leaves its rooms and its messages stay with `sender_id` null; publishes
//!   `chat.message.created` through its outbox.

mod access;
mod api;
mod dependency;
pub mod domain;
mod events;
mod fanout;
mod files_client;
pub mod hub;
mod presence;
mod ratelimit;
pub mod search;
mod service;
mod state;
mod store;
mod users_client;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use state::ApiContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` (`CHAT_DATABASE_URL`); unset = `<data dir>/chat.db`.
    pub database_url: Option<String>,
    /// Per-user message sends per second (HTTP and WebSocket together)…
    pub send_rate_per_sec: f64,
    /// …and the burst allowed on top.
    pub send_burst: u32,
    /// Redis pub/sub channel carrying committed room events between nodes.
    pub fanout_channel: String,
    /// How often each node checks its rooms for events lost on the pub/sub channel.
    pub fanout_resync_ms: u64,
    /// Frames waiting to be written to one socket.
    pub ws_outbound_queue: usize,
    /// Events waiting to be processed by one connection; overflow = slow consumer.
    pub ws_inbox_queue: usize,
    /// How long the outbound queue may stay full before the client counts as too slow.
    pub ws_send_timeout_ms: u64,
    /// Server pings.
    pub ws_heartbeat_secs: u64,
    /// A connection from which nothing (not even a pong) arrives this long is closed.
    pub ws_idle_timeout_secs: u64,
    /// Largest client frame/message in bytes.
    pub ws_max_frame_bytes: usize,
    /// At most one typing notice per room per connection in this interval.
    pub typing_throttle_ms: u64,
    /// Timeout of the user service's relationship check.
    pub users_timeout_ms: u64,
    /// Base URL of the files service, asked at send which `attachment_ids` are the
    /// sender's uploads (`POST /internal/files/lookup`).
    pub files_url: String,
    /// Timeout of that lookup.
    pub files_timeout_ms: u64,
    /// Group-commit writers for message sends (rooms are spread over them); 0 = one on
    /// SQLite (a single writer anyway), four on PostgreSQL.
    pub send_writers: usize,
    /// Open WebSockets per user on this node; the next one is closed at once with 1008
    /// `too_many_connections`. 0 = no limit.
    pub ws_max_per_user: usize,
    /// After `ready`, live events wait this long for the client's first frame (normally
    /// `resume`), so that a resumed room gets its missed events before any live one.
    /// Any frame ends the wait; 0 = no wait.
    pub ws_resume_wait_ms: u64,
    /// A user shows `offline` this long after its last connection closed (a reconnect
    /// within it shows nothing); 0 = at once.
    pub presence_grace_ms: u64,
    /// How often each node refreshes its liveness key and its users' presence in Redis.
    pub presence_heartbeat_ms: u64,
    /// A node that has not refreshed its liveness key for this long is dead: another node
    /// takes its users' presence away (after the grace period from its last heartbeat).
    pub presence_node_ttl_ms: u64,
    /// Prefix of the presence keys and pub/sub channel in Redis.
    pub presence_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3002)),
            database_url: None,
            send_rate_per_sec: 10.0,
            send_burst: 20,
            fanout_channel: "intellicolab:chat:events".to_owned(),
            fanout_resync_ms: 5_000,
            ws_outbound_queue: 256,
            ws_inbox_queue: 1024,
            ws_send_timeout_ms: 10_000,
            ws_heartbeat_secs: 20,
            ws_idle_timeout_secs: 60,
            ws_max_frame_bytes: 64 * 1024,
            typing_throttle_ms: 2_000,
            users_timeout_ms: 2_000,
            files_url: "http://127.0.0.1:3005".to_owned(),
            files_timeout_ms: 2_000,
            send_writers: 0,
            ws_max_per_user: 16,
            ws_resume_wait_ms: 1_000,
            presence_grace_ms: 30_000,
            presence_heartbeat_ms: 10_000,
            // Three heartbeats: one lost or late refresh does not declare a node dead.
            presence_node_ttl_ms: 30_000,
            presence_prefix: "intellicolab:chat:presence".to_owned(),
        }
    }
}

impl Config {
    /// Rejects a value below its minimum with an error naming the key and the minimum,
    /// instead of silently running with another value. Called by [`build`].
    pub fn validate(&self) -> anyhow::Result<()> {
        let checks: [(&str, u64, u64); 11] = [
            // A resync reads the last seq of every room the node serves: more often than
            // 10 times a second is load, not freshness (lost pub/sub messages are rare).
            ("fanout_resync_ms", self.fanout_resync_ms, 100),
            // 0 would fail every relationship check (invites, DMs) at once.
            ("users_timeout_ms", self.users_timeout_ms, 1),
            // …and every send with attachments.
            ("files_timeout_ms", self.files_timeout_ms, 1),
            // A `send` frame with its JSON framing takes a few hundred bytes: below 1 KiB
            // clients would be closed with 1009 for ordinary frames.
            ("ws_max_frame_bytes", self.ws_max_frame_bytes as u64, 1024),
            // Queues of 0 cannot exist (a bounded channel needs room for one item).
            ("ws_outbound_queue", self.ws_outbound_queue as u64, 1),
            ("ws_inbox_queue", self.ws_inbox_queue as u64, 1),
            // tokio's interval panics on 0 (heartbeat); 0 ms/s would fail every socket
            // write or close every connection at once (timeouts).
            ("ws_send_timeout_ms", self.ws_send_timeout_ms, 1),
            ("ws_heartbeat_secs", self.ws_heartbeat_secs, 1),
            ("ws_idle_timeout_secs", self.ws_idle_timeout_secs, 1),
            // Each heartbeat is one pipelined write per local user: more often than 10
            // times a second is load without benefit (and tokio's interval panics on 0).
            ("presence_heartbeat_ms", self.presence_heartbeat_ms, 100),
            // A node is dead after missing its refreshes: the TTL must cover at least two
            // heartbeats, or one late refresh would declare a live node dead.
            (
                "presence_node_ttl_ms",
                self.presence_node_ttl_ms,
                2 * self.presence_heartbeat_ms,
            ),
        ];
        kit::config::check_minimums("chat", &checks)
    }
}

fn setup<'a>(common: &'a kit::config::CommonConfig, config: &'a Config) -> kit::server::Setup<'a> {
    kit::server::Setup {
        name: "chat",
        database_url: config.database_url.as_deref(),
        data_dir: &common.data_dir,
        migrations: store::MIGRATIONS,
        listen: config.listen,
    }
}

/// Applies the chat database migrations.
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
    // The recorder must exist before metric handles are registered (the send writer's).
    kit::telemetry::metrics_handle();
    config.validate()?;
    let shutdown = shutdown.child_token();
    let trusted = kit::net::TrustedProxies::parse(&common.trusted_proxies)?;
    // Database, migrations, readiness and the bound listener before any task starts.
    let kit::server::Started {
        db,
        listener,
        ready,
    } = setup(common, config).start(bus.probe()).await?;
    let verifier = token::Verifier::from_url(common.jwks_url());
    let ready = kit::server::gated(
        ready,
        token::Verifier::spawn_revocation_sync(&common.auth_url),
        "revoked sessions not loaded from auth yet",
    );
    let hub = Arc::new(hub::Hub::new(db.clone()));
    let (fanout, mut background) = fanout::Fanout::start(
        hub.clone(),
        common.redis_url(),
        config.fanout_channel.clone(),
        Duration::from_millis(config.fanout_resync_ms),
        shutdown.clone(),
    )
    .await?;
    let (presence, presence_tasks) = presence::Presence::start(
        common.redis_url(),
        presence::Settings {
            grace: Duration::from_millis(config.presence_grace_ms),
            heartbeat: Duration::from_millis(config.presence_heartbeat_ms),
            node_ttl: Duration::from_millis(config.presence_node_ttl_ms),
            prefix: config.presence_prefix.clone(),
        },
        shutdown.clone(),
    )?;
    background.extend(presence_tasks);
    let (outbox, relay) =
        bus::outbox::Relay::spawn(events::SOURCE, db.clone(), bus.clone(), shutdown.clone());
    background.push(relay);
    background.push(events::consume_notification_counts(
        &bus,
        fanout.clone(),
        shutdown.clone(),
    ));
    background.push(events::consume_auth_events(
        &bus,
        verifier.clone(),
        fanout.clone(),
        shutdown.clone(),
    ));
    let users = Arc::new(users_client::UsersClient::new(
        &common.users_url,
        Duration::from_millis(config.users_timeout_ms),
    ));
    // The one-time copies page through the user service with the same timeout as its
    // relationship checks; retried in the background while it cannot answer.
    let backfill_http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.users_timeout_ms))
        .build()
        .unwrap_or_default();
    background.push(kit::backfill::spawn(
        events::BlocksBackfill,
        db.clone(),
        backfill_http.clone(),
        common.users_url.clone(),
        shutdown.clone(),
    ));
    background.push(kit::backfill::spawn(
        events::UsernamesBackfill,
        db.clone(),
        backfill_http,
        common.users_url.clone(),
        shutdown.clone(),
    ));
    background.push(search::backfill(db.clone(), shutdown.clone()));
    // Sockets are long-lived: tell them to go away when the service stops, so graceful
    // shutdown does not wait for clients.
    let closing_hub = hub.clone();
    let stop = shutdown.clone();
    background.push(tokio::spawn(async move {
        stop.cancelled().await;
        closing_hub.close_all(hub::close::GOING_AWAY, "server shutting down");
    }));
    let writer = writer::Writer::spawn(
        db.clone(),
        fanout.clone(),
        outbox.clone(),
        config.send_writers,
    );
    let ctx = ApiContext {
        db: db.clone(),
        verifier,
        config: Arc::new(config.clone()),
        outbox,
        fanout,
        presence,
        users,
        files: Arc::new(files_client::FilesClient::new(
            &config.files_url,
            Duration::from_millis(config.files_timeout_ms),
        )),
        send_limit: Arc::new(ratelimit::RateLimiter::new(
            config.send_rate_per_sec,
            config.send_burst,
        )),
        writer,
        shutdown: shutdown.clone(),
    };
    // After the context: `user.deleted` leaves rooms through the ordinary service path.
    background.push(events::consume_users_events(
        &bus,
        ctx.clone(),
        shutdown.clone(),
    ));
    let router = kit::server::finish_router("chat", api::router(ctx), ready, trusted);
    Ok(kit::server::Service {
        name: "chat",
        listener,
        router,
        shutdown,
        background,
        event_loops: 0,
    })
}
