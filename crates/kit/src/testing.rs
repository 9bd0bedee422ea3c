//! Fresh state for tests: a temp data dir, and for PostgreSQL a new database created
//! from `TEST_DATABASE_URL` (dropped again when the test's handle is dropped). Tests
//! that need PostgreSQL or Redis print why they skip when the variable is unset.

use crate::db::Backend;

/// A fresh database for one test: `url` is `None` for SQLite (the service then
/// uses a file in its data dir) or the URL of a new PostgreSQL database.
pub struct TestDb {
    pub url: Option<String>,
    pg: Option<(String, String)>,
}

/// Returns `None` (after printing the reason) when the backend is unavailable.
pub async fn test_db(backend: Backend, test: &str) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(TestDb {
            url: None,
            pg: None,
        }),
        Backend::Postgres => {
            let Some(admin) = env_url("TEST_DATABASE_URL") else {
                println!("SKIP {test} [postgres]: TEST_DATABASE_URL is not set");
                return None;
            };
            let name = format!("ic_test_{}", uuid::Uuid::new_v4().simple());
            create_pg_database(&admin, &name).await;
            Some(TestDb {
                url: Some(with_database(&admin, &name)),
                pg: Some((admin, name)),
            })
        }
    }
}

/// Value of a test env var, if set and non-empty.
pub fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// `TEST_REDIS_URL`, or `None` after printing why the test skips.
pub fn redis_url(test: &str) -> Option<String> {
    let url = env_url("TEST_REDIS_URL");
    if url.is_none() {
        println!("SKIP {test}: TEST_REDIS_URL is not set");
    }
    url
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `host:port` of a database URL's authority (after any `user[:password]@`); the port
/// defaults to PostgreSQL's 5432.
pub fn url_addr(url: &str) -> String {
    let (_, authority, _) = split_authority(url);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

/// The same URL with its `host:port` replaced by `addr` (user, database and query kept):
/// how a test points a service at a [`FaultProxy`] instead of the database itself.
pub fn with_addr(url: &str, addr: &str) -> String {
    let (scheme, authority, rest) = split_authority(url);
    let user = authority.rsplit_once('@').map(|(u, _)| u);
    match user {
        Some(u) => format!("{scheme}{u}@{addr}{rest}"),
        None => format!("{scheme}{addr}{rest}"),
    }
}

/// `("postgres://", "user@host:port", "/db?query")`.
fn split_authority(url: &str) -> (&str, &str, &str) {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[scheme_end..]
        .find(['/', '?'])
        .map(|i| i + scheme_end)
        .unwrap_or(url.len());
    (&url[..scheme_end], &url[scheme_end..end], &url[end..])
}

/// A TCP proxy between services and a dependency (PostgreSQL) that a fault test can cut:
/// it listens on a free port of 127.0.0.1 and forwards every connection to `target`.
/// [`cut`](FaultProxy::cut) resets every open connection and resets each new one right
/// after accepting it — what clients see of a database that stopped or a network that
/// broke — until [`restore`](FaultProxy::restore). The shared database itself is never
/// touched. Runs on the caller's tokio runtime; dropping the proxy stops it and resets
/// its connections.
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<ProxyState>,
    acceptor: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    target: String,
    cut: std::sync::atomic::AtomicBool,
    /// Cancelled by `cut` (and on drop): every connection opened before it ends.
    conns: std::sync::Mutex<tokio_util::sync::CancellationToken>,
    accepted: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl ProxyState {
    fn conns(&self) -> tokio_util::sync::CancellationToken {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Ends every open connection; later ones get a fresh token.
    fn reset_all(&self) {
        let mut conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.cancel();
        *conns = tokio_util::sync::CancellationToken::new();
    }
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<FaultProxy> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = std::sync::Arc::new(ProxyState {
            target: target.to_owned(),
            cut: std::sync::atomic::AtomicBool::new(false),
            conns: std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()),
            accepted: std::sync::atomic::AtomicU64::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
        });
        let shared = state.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // EMFILE and the like: keep serving rather than end the proxy.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = client.set_nodelay(true);
                if shared.cut.load(Ordering::SeqCst) {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    // RST instead of FIN: the client's next read fails at once.
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let cancel = shared.conns();
                let target = shared.target.clone();
                tokio::spawn(pipe(client, target, cancel));
            }
        });
        Ok(FaultProxy {
            addr,
            state,
            acceptor,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every open connection and every new one until [`restore`](Self::restore).
    pub fn cut(&self) {
        // Flag first: a connection accepted between the two steps is then refused, not
        // kept with a token that is no longer cancelled.
        self.state
            .cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.reset_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.state
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections reset on arrival while cut.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.state.reset_all();
    }
}

/// Copies both ways until either side closes or `cancel` fires; then resets both sides.
async fn pipe(
    mut client: tokio::net::TcpStream,
    target: String,
    cancel: tokio_util::sync::CancellationToken,
) {
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&target),
    );
    let mut upstream = match connect.await {
        Ok(Ok(s)) => s,
        _ => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cancel.cancelled() => {
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
    }
}

#[allow(clippy::unwrap_used)] // test helper: a broken test database is a test failure
async fn create_pg_database(admin: &str, name: &str) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .unwrap();
    let _ = conn.close().await;
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            drop_pg_database_blocking(admin, name);
        }
    }
}

/// Drops database `name` (connections forced out), from a `Drop` impl: Drop cannot await
/// and the caller's runtime may be gone, so a short-lived runtime on its own thread does it.
pub fn drop_pg_database_blocking(admin: String, name: String) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use sqlx::{Connection, Executor};
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = conn
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await;
                let _ = conn.close().await;
            }
        });
    })
    .join();
}

/// Declares each listed `async fn name(backend: Backend)` as two tests,
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Postgres).await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_address() {
        let url = "postgres://postgres@127.0.0.1:5432/ic_x?sslmode=disable";
        assert_eq!(super::url_addr(url), "127.0.0.1:5432");
        assert_eq!(
            super::with_addr(url, "127.0.0.1:40001"),
            "postgres://postgres@127.0.0.1:40001/ic_x?sslmode=disable"
        );
        assert_eq!(super::url_addr("postgres://u:p@db/x"), "db:5432");
        assert_eq!(
            super::with_addr("postgres://db:6000", "127.0.0.1:1"),
            "postgres://127.0.0.1:1"
        );
    }

    #[tokio::test]
    async fn fault_proxy_forwards_cuts_and_restores() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An echo server as the "database".
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = super::FaultProxy::start(&target).await.unwrap();
        let roundtrip = |mut s: tokio::net::TcpStream| async move {
            s.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await?;
            std::io::Result::Ok((s, buf))
        };
        let open = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut open, got) = roundtrip(open).await.unwrap();
        assert_eq!(&got, b"ping");

        proxy.cut();
        // The open connection is reset…
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), open.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // …and a new one does not get through.
        let fresh = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(fresh).await.is_err());
        assert!(proxy.refused() >= 1);

        proxy.restore();
        let again = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (_, got) = roundtrip(again).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "y"),
            "postgres://u@h/y?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "z"),
            "postgres://u@h/z"
        );
    }
}
