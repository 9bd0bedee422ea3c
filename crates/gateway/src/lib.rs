//! The gateway service (not built yet).

use std::net::SocketAddr;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
        }
    }
}

pub async fn build(
    common: &kit::config::CommonConfig,
    config: &Config,
    _bus: bus::Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<kit::server::Service> {
    let trusted = kit::net::TrustedProxies::parse(&common.trusted_proxies)?;
    let ready: kit::server::ReadyCheck = std::sync::Arc::new(|| Box::pin(async { Ok(()) }));
    let router = kit::server::finish_router("gateway", axum::Router::new(), ready, trusted);
    Ok(kit::server::Service {
        name: "gateway",
        listener: kit::server::bind(config.listen).await?,
        router,
        shutdown: shutdown.child_token(),
        background: Vec::new(),
    })
}
