//! The user service: profiles, people search and discovery, follows, friends and blocks
//! (API.md, Users section), on SQLite or PostgreSQL with its own database.
//!
//! - Profiles are created and renamed by the auth service's `user.registered` and
//!   `user.updated` events ([`events`]; idempotent and order-independent). When a caller's
//!   event has not arrived yet, `/users/me` (and following or blocking, which need the
//!   caller's profile) creates a minimal profile from the token's `sub` and `username`
//!   instead of failing; the event fills in the display name and creation time when it
//!   comes. Other users' profiles are 404 `user_not_found` until their event arrives.
//! - `session.revoked` events feed the token verifier, so a logged-out token is refused.
//! - Search: an in-memory trigram index per instance, loaded at startup and kept in step
//!   by the service's writes and a change feed (`search_changes`); the same Rust code on
//!   both backends, so results are identical. See [`search`] for why.
//! - The graph: follow/block edges and the profiles' counters change in one transaction,
//!   counters only when an edge row was really inserted or deleted, so they stay exact
//!   under concurrency ([`store`]). Lists use keyset cursors (edge time, user id).
//! - Events published through the outbox (source `users`): `profile.updated`,
//!   `user.followed`/`user.unfollowed` `{follower_id, followee_id}`,
//!   `user.blocked`/`user.unblocked` `{blocker_id, blocked_id}`.
//! - `GET /internal/relationships/{a}/{b}` for other services (no auth; the gateway hides
//!   `/internal`), `GET /openapi.json` for the gateway.

pub mod api;
pub mod cursor;
pub mod domain;
pub mod events;
pub mod search;
pub mod state;
pub mod store;

use std::net::SocketAddr;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::state::ApiContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3003)),
            database_url: None,
        }
    }
}

/// Service name: database file, metrics label.
pub const NAME: &str = "users";

/// The benchmarks (`crates/bench`) migrate a users database of their own.
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
    let trusted = kit::net::TrustedProxies::parse(&common.trusted_proxies)?;
    let kit::server::Started {
        db,
        listener,
        ready,
    } = setup(common, config).start(bus.probe()).await?;
    let (search, feed) = search::feed::load(&db).await?;
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
    let feed = feed.spawn(shutdown.clone());
    let ctx = ApiContext {
        db: db.clone(),
        verifier,
        outbox,
        search,
    };
    let consumer = events::subscribe(ctx.clone(), &bus, shutdown.clone());
    let router = kit::server::finish_router(NAME, api::router(ctx), ready, trusted);
    Ok(kit::server::Service {
        name: NAME,
        listener,
        router,
        shutdown,
        background: vec![relay, consumer, feed],
        event_loops: 0,
    })
}
