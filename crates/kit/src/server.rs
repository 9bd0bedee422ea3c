//! Turning a service's router into a running server: the standard endpoints
//! (`/healthz`, `/readyz`, `/metrics`), the common middleware stack, and serving with
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{self, DEFAULT_BODY_LIMIT};
use crate::net::TrustedProxies;

pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// Readiness probe: Ok when the service's dependencies (database, bus) answer.
pub type ReadyCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

/// Wraps a service's routes with the standard endpoints and middleware.
pub fn finish_router(
    service: &'static str,
    routes: Router,
    ready: ReadyCheck,
    trusted: TrustedProxies,
) -> Router {
    // Install the recorder before the first request records anything.
    crate::telemetry::metrics_handle();
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || readyz(ready.clone())))
        .route("/metrics", get(metrics));
    routes
        .merge(health)
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn(http::problem_statuses))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(axum::Extension(trusted))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn(move |req, next| {
            http::observe(service, req, next)
        }))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    crate::error::ApiError::internal("handler panicked").into_response()
}

async fn readyz(check: ReadyCheck) -> Response {
    match check().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => crate::error::ApiError::unavailable("not_ready", why).into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::render_metrics(),
    )
        .into_response()
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    // Small request/response exchanges on keep-alive connections must not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// A built service, ready to run: its listener (already bound), router, and the
/// background tasks (outbox relay, event consumers) that stop on `shutdown`.
pub struct Service {
    pub name: &'static str,
    pub listener: TcpListener,
    pub router: Router,
    pub shutdown: CancellationToken,
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` is cancelled, then waits for the background tasks
    /// (the outbox relay flushes what was committed before it stops).
    pub async fn run(self) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(service = self.name, %addr, "listening");
        let result = serve(self.listener, self.router, self.shutdown.clone()).await;
        self.shutdown.cancel();
        for task in self.background {
            let _ = task.await;
        }
        tracing::info!(service = self.name, "stopped");
        result
    }

    /// Runs on a spawned task (tests): returns the address and a handle that stops it.
    pub fn spawn(self) -> Running {
        let addr = self.local_addr();
        let shutdown = self.shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = self.run().await {
                tracing::error!(error = %e, "service failed");
            }
        });
        Running {
            addr,
            shutdown,
            task,
        }
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
