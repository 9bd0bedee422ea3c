//! The files service (API.md "Files"): uploads streamed to the local disk or an
//! S3-compatible store, images stripped of metadata with a thumbnail, downloads with
//! ranges and validators, and access for the uploader and the members of the rooms where
//! a file is attached — on SQLite or PostgreSQL with its own database.
//!
//! - Consumes (consumer group [`events::GROUP`]) `chat.message.created` (its
//!   `attachments`) and `chat.message.deleted` (source `chat`), and `user.deleted`
//!   (source `auth`), each once (`bus::inbox::begin_once`). Publishes nothing.
//! - Membership: `GET {chat_url}/internal/rooms/{room}/members/{user}` (cached 2 s).
//! - `POST /internal/files/lookup` for chat (the files a sender may attach).
//! - The collector ([`gc`]) deletes uploads attached to no message for 24 h.
//! - `GET /openapi.json` for the gateway.

pub mod access;
pub mod api;
pub mod domain;
pub mod events;
pub mod gc;
pub mod media;
pub mod sniff;
pub mod state;
pub mod storage;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::state::{ApiContext, Limits};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` (`FILES_DATABASE_URL`); unset = `<data dir>/files.db`.
    pub database_url: Option<String>,
    /// The chat service, for its internal membership route.
    pub chat_url: String,
    /// Timeout of one call to chat.
    pub chat_timeout_ms: u64,
    /// How long a membership answer is reused.
    pub membership_cache_ms: u64,
    /// Largest upload (API.md: 25 MiB by default; 413 `payload_too_large` beyond).
    pub max_upload_bytes: u64,
    /// Bytes one user may store (413 `quota_exceeded` beyond).
    pub quota_bytes: u64,
    /// An upload attached to no message for this long is deleted (API.md: 24 h).
    pub unattached_ttl_secs: u64,
    /// How often the collector runs.
    pub gc_interval_secs: u64,
    /// Images with a side longer than this are refused (`invalid_image`).
    pub image_max_dimension: u32,
    /// Memory one image decode may allocate.
    pub image_max_alloc_bytes: u64,
    pub storage: storage::StorageConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3005)),
            database_url: None,
            chat_url: "http://127.0.0.1:3002".to_owned(),
            chat_timeout_ms: 2_000,
            membership_cache_ms: 2_000,
            max_upload_bytes: 25 * MIB,
            quota_bytes: 1024 * MIB,
            unattached_ttl_secs: 24 * 3600,
            gc_interval_secs: 600,
            // 16 384 px a side covers 200-megapixel panoramas' long side; the allocation
            // cap is what bounds memory: 256 MiB is an RGBA image of 64 megapixels.
            image_max_dimension: 16_384,
            image_max_alloc_bytes: 256 * MIB,
            storage: storage::StorageConfig::default(),
        }
    }
}

impl Config {
    /// Rejects a value below its minimum with an error naming the key. Called by [`build`].
    pub fn validate(&self) -> anyhow::Result<()> {
        let checks: [(&str, u64, u64); 6] = [
            // 0 would fail every membership check at once.
            ("chat_timeout_ms", self.chat_timeout_ms, 1),
            // One byte is a useless but coherent service; 0 refuses everything.
            ("max_upload_bytes", self.max_upload_bytes, 1),
            ("quota_bytes", self.quota_bytes, 1),
            // Under a minute an upload being attached by a slow send could be collected.
            ("unattached_ttl_secs", self.unattached_ttl_secs, 60),
            ("gc_interval_secs", self.gc_interval_secs, 1),
            // A thumbnail needs a decoded image: 1 MiB decodes 512 × 512 RGBA.
            ("image_max_alloc_bytes", self.image_max_alloc_bytes, MIB),
        ];
        kit::config::check_minimums("files", &checks)?;
        kit::config::check_http_url("files", "chat_url", &self.chat_url)
    }
}

/// Service name: database file, metrics label.
pub const NAME: &str = "files";

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
    let storage = Arc::new(storage::Storage::open(&config.storage, &common.data_dir)?);
    // Uploads are spooled on the local disk while they arrive, also with S3 (metadata
    // stripping rewrites images, and the SHA-256 must be known before the bytes are
    // stored). A crash leaves spool files behind; the collector removes old ones.
    let spool_dir = common.data_dir.join("files-spool");
    std::fs::create_dir_all(&spool_dir)
        .map_err(|e| anyhow::anyhow!("files: cannot create {}: {e}", spool_dir.display()))?;
    let kit::server::Started {
        db,
        listener,
        ready,
    } = setup(common, config).start(bus.probe()).await?;
    // Everything that can fail is done: only now start the background tasks.
    let shutdown = shutdown.child_token();
    let verifier = token::Verifier::from_url(common.jwks_url());
    let ready = kit::server::gated(
        ready,
        token::Verifier::spawn_revocation_sync(&common.auth_url),
        "revoked sessions not loaded from auth yet",
    );
    let probe_store = storage.clone();
    let ready = kit::server::requiring(ready, "storage", move || {
        let store = probe_store.clone();
        async move { store.ping().await }
    });
    let chat = kit::chat_client::ChatClient::new(
        &config.chat_url,
        Duration::from_millis(config.chat_timeout_ms),
    );
    let ctx = ApiContext {
        db: db.clone(),
        verifier,
        storage,
        access: Arc::new(access::Access::new(
            chat,
            Duration::from_millis(config.membership_cache_ms),
        )),
        limits: Arc::new(Limits {
            max_upload_bytes: config.max_upload_bytes,
            quota_bytes: config.quota_bytes,
            decode: media::DecodeLimits {
                max_dimension: config.image_max_dimension,
                max_alloc: config.image_max_alloc_bytes,
            },
            spool_dir,
        }),
    };
    export_metrics_at_zero();
    let consumer = events::subscribe(ctx.clone(), &bus, shutdown.clone());
    let collector = gc::Collector {
        ctx: ctx.clone(),
        ttl: Duration::from_secs(config.unattached_ttl_secs),
        every: Duration::from_secs(config.gc_interval_secs),
    }
    .spawn(shutdown.clone());
    let router = kit::server::finish_router(NAME, api::router(ctx), ready, trusted);
    Ok(kit::server::Service {
        name: NAME,
        listener,
        router,
        shutdown,
        background: vec![consumer, collector],
        event_loops: 0,
    })
}

/// The dashboard's series exist from the start (a counter first set on the first upload
/// would leave `rate()` empty, and an alert on it silent, until then).
fn export_metrics_at_zero() {
    metrics::counter!("files_uploads_total", "result" => "stored").increment(0);
    metrics::counter!("files_upload_bytes_total").increment(0);
    metrics::counter!("files_downloads_total", "status" => "200").increment(0);
    metrics::counter!("files_collected_total").increment(0);
}
