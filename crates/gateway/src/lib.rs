//! The API gateway: the one public entry of IntelliColab (default `127.0.0.1:8080`).
//!
//! - Routing by path prefix to upstream clusters over pooled keep-alive HTTP/1.1
//!   (hyper), bodies streamed both ways, hop-by-hop headers removed (RFC 9110 §7.6.1).
//! - Load balancing (round robin or power of two choices), active and passive health
//!   checks with ejection and backoff, bounded retries on another instance after a
//!   refused connection (any method: the body is not read until a connection is made);
//!   every upstream fault is a 503 with `Retry-After`.
//! - Edge authentication with a token cache that honours `session.revoked`, identity
//!   and forwarding headers rewritten, request ids and W3C trace context.
//! - GCRA rate limits (in-process, or shared through Redis with a local fallback).
//! - Body limits (413), JSON content type (415), CORS, security headers, compression.
//! - WebSocket proxying for `/chat/ws`.
//! - Its own `/healthz`, `/readyz`, `/openapi.json` (merged from the services), `/docs`
//!   (API explorer) and the embedded web client at `/`; `/metrics` (with `/healthz` and
//!   `/readyz`) only on the admin listener (`admin_listen`, default `127.0.0.1:9080`).

// Imports run one way, from the leaves up (see README.md, "Layout"): body, config,
// cors, assets, edge_auth, ws → ratelimit → client → upstream → openapi → state →
// headers → reply → admit → own → handler → this composition root.
mod admit;
mod assets;
mod body;
mod client;
pub mod config;
mod cors;
mod edge_auth;
mod handler;
mod headers;
mod openapi;
mod own;
mod ratelimit;
mod reply;
mod state;
mod upstream;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use tokio_util::sync::CancellationToken;
use tower_http::compression::predicate::Predicate;

pub use config::{
    AuthPolicy, Config, LoadBalancing, RateLimitBackend, RateLimitPolicy, RouteConfig, Upstreams,
};

/// Verified tokens kept by the edge cache.
const TOKEN_CACHE_CAPACITY: usize = 100_000;

pub async fn build(
    common: &kit::config::CommonConfig,
    config: &Config,
    bus: bus::Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<kit::server::Service> {
    Ok(build_with_admin(common, config, bus, shutdown).await?.0)
}

/// [`build`], and the address the admin listener (`/metrics`, `/healthz`, `/readyz`)
/// is bound to: `None` when `admin_listen` is unset or could not be bound. A clash on
/// the admin port is logged as an error but does not stop the gateway: the public API
/// matters more than its metrics, and two gateways on one host (tests, benchmarks)
/// would otherwise fight over the default port.
pub async fn build_with_admin(
    common: &kit::config::CommonConfig,
    config: &Config,
    bus: bus::Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<(kit::server::Service, Option<std::net::SocketAddr>)> {
    config.validate()?;
    // The recorder must exist before metric handles are registered.
    kit::telemetry::metrics_handle();
    let trusted = kit::net::TrustedProxies::parse(&common.trusted_proxies)?;
    let client = client::http_client(config);
    let limit_redis = match config.rate_limit_backend {
        RateLimitBackend::Auto => common.redis_url(),
        RateLimitBackend::Local => None,
        RateLimitBackend::Redis => Some(common.redis_url().ok_or_else(|| {
            anyhow::anyhow!("gateway.rate_limit_backend = \"redis\" needs redis_url")
        })?),
    };
    let limiter = Arc::new(ratelimit::RateLimiter::new(
        &config.effective_rate_limits(),
        limit_redis,
    )?);

    let mut clusters: Vec<Arc<upstream::Cluster>> = Vec::new();
    for (name, urls) in config.upstreams.clusters() {
        if !config.routes.iter().any(|r| r.upstream == name) {
            continue;
        }
        let cluster = upstream::Cluster::new(&name, &urls, config)?;
        if cluster.instances.is_empty() {
            anyhow::bail!("upstream cluster {name:?} has no instances");
        }
        clusters.push(Arc::new(cluster));
    }
    let mut routes = Vec::new();
    for r in &config.routes {
        let cluster = clusters
            .iter()
            .find(|c| c.name == r.upstream)
            .cloned()
            .ok_or_else(|| {
                anyhow::anyhow!("route {}: unknown upstream {:?}", r.prefix, r.upstream)
            })?;
        routes.push(state::Route::new(r, cluster, &limiter)?);
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    // Bind before starting any task (revocation sync, health checks, the admin
    // listener), as every service does: a port in use leaves nothing running behind it.
    let listener = kit::server::bind(config.listen).await?;
    let shutdown = shutdown.child_token();

    let auth = Arc::new(edge_auth::EdgeAuth::new(
        token::Verifier::from_url_with_cache(common.jwks_url(), TOKEN_CACHE_CAPACITY),
    ));
    // The services refuse ended sessions themselves; the edge learns them by this load
    // and by events, and its readiness does not wait (an edge out of service helps no one).
    let _loaded = token::Verifier::spawn_revocation_sync(&common.auth_url);
    let openapi = Arc::new(openapi::MergedSpec::new(config.public_url.as_deref()));
    let ws = ws::WsHub::new(shutdown.clone());
    let gateway = Arc::new(state::Gateway {
        routes,
        clusters: clusters.clone(),
        clients: client::Clients::new(config),
        auth: auth.clone(),
        limiter: limiter.clone(),
        trusted: trusted.clone(),
        cors: cors::Cors::new(&config.cors_origins),
        ws: ws.clone(),
        assets: assets::Assets::load(),
        openapi: openapi.clone(),
    });

    let mut admin_addr = None;
    let admin = match config.admin_listen {
        Some(addr) => match kit::server::bind(addr).await {
            Ok(listener) => {
                admin_addr = listener.local_addr().ok();
                tracing::info!(%addr, "gateway admin listener (metrics, health)");
                let router = own::admin_router(gateway.clone());
                let shutdown = shutdown.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = kit::server::serve(listener, router, shutdown).await {
                        tracing::error!(error = %e, "gateway admin listener failed");
                    }
                }))
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "gateway admin listener not started: /metrics is not served");
                None
            }
        },
        None => None,
    };

    let mut background = vec![
        tokio::spawn(upstream::health_check_loop(
            clusters.clone(),
            client.clone(),
            Duration::from_millis(config.health_check_interval_ms),
            Duration::from_millis(config.health_check_timeout_ms),
            shutdown.clone(),
        )),
        tokio::spawn(openapi::refresh_loop(
            openapi,
            clusters,
            client,
            shutdown.clone(),
        )),
        edge_auth::subscribe_revocations(auth, &bus, shutdown.clone()),
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => limiter.local.sweep(),
                    }
                }
            }
        }),
        tokio::spawn(async move { ws.drain(Duration::from_secs(5)).await }),
    ];
    background.extend(admin);

    let compression = tower_http::compression::CompressionLayer::new().compress_when(
        JsonAbove(config.compression_min_bytes)
            .and(tower_http::compression::predicate::NotForContentType::GRPC),
    );
    let router = axum::Router::new()
        .fallback(handler::handle)
        .with_state(gateway)
        .layer(compression)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send + 'static>| {
                kit::ApiError::internal("gateway handler panicked").into_response()
            },
        ));

    Ok((
        kit::server::Service {
            name: "gateway",
            listener,
            router,
            shutdown,
            background,
            event_loops: config.event_loops,
        },
        admin_addr,
    ))
}

/// Compress JSON (and problem+json) responses of at least `.0` bytes; streamed ones
/// of unknown length too.
#[derive(Clone, Copy)]
struct JsonAbove(u64);

impl Predicate for JsonAbove {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        let json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.trim_start();
                ct.starts_with("application/json") || ct.starts_with("application/problem+json")
            });
        json && tower_http::compression::predicate::SizeAbove::new(self.0).should_compress(response)
    }
}

/// No database: nothing to migrate.
pub async fn migrate(_common: &kit::config::CommonConfig, _config: &Config) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_config() -> Config {
        Config {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            ..Config::default()
        }
    }

    /// Start-up failures. A busy port fails `build()` (bound before any task starts).
    ///
    /// A health-check interval below 100 ms used to be raised to 100 ms silently; now the
    /// gateway refuses to start and says which key is wrong and what the minimum is.
    #[tokio::test]
    async fn start_up_failures_leave_nothing_running_and_name_the_bad_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let unreachable_auth = kit::config::CommonConfig {
            auth_url: "http://127.0.0.1:9".to_owned(),
            ..Default::default()
        };
        let config = Config {
            listen: taken.local_addr().unwrap(),
            ..quiet_config()
        };
        let shutdown = CancellationToken::new();
        let built = build(&unreachable_auth, &config, bus::Bus::memory(), shutdown).await;
        assert!(built.is_err(), "bound a port that is in use");

        let common = kit::config::CommonConfig::default();
        let config = Config {
            health_check_interval_ms: 20,
            ..quiet_config()
        };
        let err = match build(
            &common,
            &config,
            bus::Bus::memory(),
            CancellationToken::new(),
        )
        .await
        {
            Ok(_) => panic!("a 20 ms health-check interval was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("gateway.health_check_interval_ms") && err.contains("100"),
            "{err}"
        );
        // The minimum itself is fine.
        let config = Config {
            health_check_interval_ms: 100,
            health_check_timeout_ms: 50,
            ..quiet_config()
        };
        let shutdown = CancellationToken::new();
        let service = build(&common, &config, bus::Bus::memory(), shutdown.clone())
            .await
            .unwrap();
        shutdown.cancel();
        drop(service);
    }
}
