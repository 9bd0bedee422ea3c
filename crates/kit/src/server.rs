//! Turning a service's router into a running server: the standard endpoints
//! (`/healthz`, `/readyz`, `/metrics`), the common middleware stack, and serving with
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Migration};
use crate::http::{self, DEFAULT_BODY_LIMIT};
use crate::net::TrustedProxies;

/// What a readiness check found: each dependency by name, `Ok` or the reason it failed.
pub struct Readiness {
    /// Needed to serve requests at all (the database): any failure means 503.
    pub required: Vec<(&'static str, Result<(), String>)>,
    /// Degrades the service but leaves it serving (the bus: events wait in the outbox,
    /// chat's real-time fan-out is repaired by resume): reported, never 503.
    pub optional: Vec<(&'static str, Result<(), String>)>,
}

pub type ReadyFuture = Pin<Box<dyn Future<Output = Readiness> + Send>>;
/// Readiness probe: "can this instance serve requests now".
pub type ReadyCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

/// Start-up work a service must finish before it reports ready (loading the ended
/// sessions from auth: a restarted service must not accept a logged-out token in between).
/// Created closed; [`StartupGate::open`] releases it; [`gated`] makes a readiness check wait
/// for it. One per service, not per process: another service starting in the same process
/// (tests start many) does not hold this one's readiness.
#[derive(Clone, Default)]
pub struct StartupGate(Arc<std::sync::atomic::AtomicBool>);

impl StartupGate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `ready`, failing as `starting: <what>` until `gate` is open.
pub fn gated(ready: ReadyCheck, gate: StartupGate, what: &'static str) -> ReadyCheck {
    Arc::new(move || {
        let (check, open) = (ready(), gate.is_open());
        Box::pin(async move {
            let mut r = check.await;
            if !open {
                r.required.push(("starting", Err(what.to_owned())));
            }
            r
        })
    })
}

/// Adds a required dependency to a readiness check (the files service's object store:
/// without it no upload or download can work). `check` runs beside the others, bounded
/// like them.
pub fn requiring<C, F, E>(ready: ReadyCheck, name: &'static str, check: C) -> ReadyCheck
where
    C: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let check = Arc::new(check);
    Arc::new(move || {
        let (others, this) = (ready(), check());
        Box::pin(async move {
            let (mut r, this) = tokio::join!(others, probe(this));
            r.required.push((name, this));
            r
        })
    })
}

/// A probe answers within this bound or counts as failed: Kubernetes' default probe
/// timeout is 1 s, and a hanging database connect must not hang the probe.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

/// The readiness of a service with a database (required) and a bus (optional).
pub fn readiness<B, F>(db: Db, bus_ping: B) -> ReadyCheck
where
    B: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let bus_ping = Arc::new(bus_ping);
    Arc::new(move || {
        let db = db.clone();
        let bus = bus_ping();
        Box::pin(async move {
            let (db, bus) = tokio::join!(probe(async move { db.ping().await }), probe(bus));
            Readiness {
                required: vec![("database", db)],
                optional: vec![("bus", bus)],
            }
        })
    })
}

async fn probe<E: std::fmt::Display>(
    check: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    }
}

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
        .route("/readyz", get(move || readyz(service, ready.clone())))
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

/// 200 while every required dependency answers (the body lists degraded optional ones),
/// else 503 `not_ready`. `dependency_up{service,dependency}` records each answer.
async fn readyz(service: &'static str, check: ReadyCheck) -> Response {
    let r = check().await;
    let mut checks = serde_json::Map::new();
    for (name, result) in r.required.iter().chain(&r.optional) {
        metrics::gauge!("dependency_up", "service" => service, "dependency" => *name)
            .set(if result.is_ok() { 1.0 } else { 0.0 });
        let v = match result {
            Ok(()) => "ok".to_owned(),
            Err(why) => why.clone(),
        };
        checks.insert((*name).to_owned(), v.into());
    }
    let failed: Vec<String> = r
        .required
        .iter()
        .filter_map(|(name, res)| res.as_ref().err().map(|why| format!("{name}: {why}")))
        .collect();
    if !failed.is_empty() {
        return crate::error::ApiError::unavailable(
            crate::error::code::NOT_READY,
            failed.join("; "),
        )
        .into_response();
    }
    let status = if r.optional.iter().all(|(_, res)| res.is_ok()) {
        "ready"
    } else {
        "degraded"
    };
    axum::Json(serde_json::json!({ "status": status, "checks": checks })).into_response()
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

/// Where a service keeps its data and where it listens: the start-up every service with
/// a database shares, in one order (see [`Setup::start`]).
pub struct Setup<'a> {
    /// Service name: the SQLite file `<data_dir>/<name>.db`.
    pub name: &'static str,
    /// `postgres://…`; unset (or blank) = SQLite under `data_dir`.
    pub database_url: Option<&'a str>,
    pub data_dir: &'a Path,
    /// Applied in order: `bus::inbox::MIGRATION` first (kit cannot name the bus crate, so
    /// each service's list starts with it), then the service's own.
    pub migrations: &'a [Migration],
    pub listen: SocketAddr,
}

/// What [`Setup::start`] leaves ready for a service's `build()`.
pub struct Started {
    pub db: Db,
    /// Already bound, so a busy port fails `build()` before any task runs.
    pub listener: TcpListener,
    pub ready: ReadyCheck,
}

impl Setup<'_> {
    /// Opens the database and applies the migrations (also what `migrate` commands run).
    pub async fn open_db(&self) -> anyhow::Result<Db> {
        let db = Db::open(self.database_url, self.data_dir, self.name).await?;
        db.migrate(self.migrations).await?;
        Ok(db)
    }

    /// Database → migrations → readiness check (database required, `bus_ping` optional,
    /// see [`readiness`]) → bind. The caller spawns its background tasks (relay,
    /// consumers) only after this returns: bound first, a port in use leaves nothing
    /// running behind a failed start.
    pub async fn start<B, F>(&self, bus_ping: B) -> anyhow::Result<Started>
    where
        B: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let db = self.open_db().await?;
        let ready = readiness(db.clone(), bus_ping);
        let listener = bind(self.listen).await?;
        Ok(Started {
            db,
            listener,
            ready,
        })
    }
}

/// Small request/response exchanges on keep-alive connections must not wait for Nagle.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(no_delay);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}

/// Serves `router` on `loops` dedicated threads, each a single-threaded event loop that
/// keeps its connections (and any connections its requests open, such as a proxy's
/// upstream pool) on that thread — the nginx/Pingora worker model. A proxy spends its
/// time handing bytes between two sockets; on the shared work-stealing runtime each
/// hand-over can wake another thread. One acceptor deals new connections to the loops in
/// turn (a shared listening socket lets whichever loop wakes first take a whole burst).
/// Returns when `shutdown` is cancelled and every loop has let its requests finish; the
/// loops' runtimes live on (running what their connections spawned, such as proxied
/// WebSockets closing cleanly) until `release` is cancelled.
pub async fn serve_on_event_loops(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    loops: usize,
    release: CancellationToken,
) -> anyhow::Result<()> {
    let local_addr = listener.local_addr()?;
    let mut queues = Vec::with_capacity(loops);
    let mut done = Vec::with_capacity(loops);
    for i in 0..loops.max(1) {
        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(1024);
        queues.push(conn_tx);
        let router = router.clone();
        let (shutdown, release) = (shutdown.clone(), release.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("event-loop-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    use axum::serve::ListenerExt;
                    let listener = Dealt {
                        rx: conn_rx,
                        local_addr,
                    }
                    .tap_io(no_delay);
                    let result = axum::serve(
                        listener,
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await
                    .map_err(anyhow::Error::from);
                    let _ = tx.send(result);
                    release.cancelled().await;
                });
            })?;
        done.push(rx);
    }
    // The acceptor: on this runtime, handing each connection to the next loop.
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        next = (next + 1) % queues.len();
        if queues[next].send((stream, peer)).await.is_err() {
            break;
        }
    }
    drop(queues);
    let mut result = Ok(());
    for rx in done {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("an event loop thread panicked")),
        }
    }
    result
}

/// An event loop's listener: the connections the acceptor dealt to it, registered with
/// this loop's reactor as they arrive.
struct Dealt {
    rx: tokio::sync::mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for Dealt {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.rx.recv().await {
                Some((stream, peer)) => match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => return (stream, peer),
                    Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
                },
                // The acceptor stopped (shutdown): no more connections.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
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
    /// 0: served on the process's runtime; n: on n dedicated event-loop threads (see
    /// [`serve_on_event_loops`]).
    pub event_loops: usize,
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
        // Event loops (if any) stop once the background tasks are done.
        let release = CancellationToken::new();
        let _release_on_return = release.clone().drop_guard();
        let result = match self.event_loops {
            0 => serve(self.listener, self.router, self.shutdown.clone()).await,
            n => {
                serve_on_event_loops(
                    self.listener,
                    self.router,
                    self.shutdown.clone(),
                    n,
                    release,
                )
                .await
            }
        };
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
