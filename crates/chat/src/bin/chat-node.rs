//! One chat node in its own process, configured like `intellicolab serve chat`
//! (`INTELLICOLAB_*` environment, e.g. `INTELLICOLAB_CHAT__LISTEN`,
//! `INTELLICOLAB_CHAT__DATABASE_URL`, `INTELLICOLAB_DATA_DIR`, `INTELLICOLAB_AUTH_URL`,
//! `REDIS_URL`, `CHAT_DATABASE_URL`). Deployments run the `intellicolab` binary; this one exists so the chat
//! crate's crash tests can kill -9 a real process.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Settings {
    #[serde(flatten)]
    common: kit::config::CommonConfig,
    chat: chat::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let aliases = [
        ("REDIS_URL", "redis_url"),
        ("CHAT_DATABASE_URL", "chat.database_url"),
    ];
    let settings: Settings = kit::config::load(None, &aliases, &["trusted_proxies"])?;
    kit::telemetry::init_logging(&settings.common.log_format);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bus = bus::Bus::from_config(settings.common.redis_url()).await?;
    let service = chat::build(&settings.common, &settings.chat, bus, shutdown.clone()).await?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        kit::server::shutdown_signal().await;
        stop.cancel();
    });
    service.run().await
}
