//! Storage: one `Db` type over sqlx's `Any` driver so each service has one store
//! implementation for both backends — SQLite (embedded default, a file per service
//! under the data dir, WAL) and PostgreSQL (one database per service).
//!
//! Portable schema rules: ids are TEXT uuids, timestamps BIGINT epoch-ms, booleans
//! BIGINT 0/1, counters BIGINT. `$1` placeholders work on both backends.
//!
//! SQLite allows one writer at a time; a deferred transaction that reads and then
//! writes can fail with SQLITE_BUSY even with a busy timeout. Write transactions on
//! SQLite are therefore serialised in-process by [`Db::begin`], while plain reads run
//! concurrently (WAL).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    write_lock: Arc<Mutex<()>>,
    /// Epoch ms of the last connection-class failure seen by [`Db::begin`] or
    /// [`Db::ping`], 0 while the database answers. While set, `begin` waits only
    /// [`ACQUIRE_WHEN_DOWN`] for a connection, so requests fail fast with 503.
    down_since: Arc<AtomicI64>,
}

/// How long a request waits for a pooled connection. A healthy pool hands one out in
/// microseconds; waiting longer than this means the database is down or saturated, and a
/// 503 with `Retry-After` is the honest answer (the gateway gives up after 30 s, so a
/// 10 s wait surfaced as 504s in the PostgreSQL-outage drill).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The wait for a connection once the database is known to be down: one reconnect
/// attempt to a restarted local PostgreSQL takes a few ms, a refused one fails at once.
const ACQUIRE_WHEN_DOWN: Duration = Duration::from_millis(300);

/// One schema migration, with the SQL for each backend (usually identical).
pub struct Migration {
    /// Unique, ordered id, e.g. `auth-0001-init`.
    pub id: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A write transaction (serialised on SQLite, see the module docs).
pub struct Tx {
    tx: Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Db {
    /// Opens `database_url` when set, else `<data_dir>/<name>.db`.
    pub async fn open(
        database_url: Option<&str>,
        data_dir: &Path,
        name: &str,
    ) -> anyhow::Result<Db> {
        match database_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => Self::connect(url).await,
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display())
                })?;
                let path = data_dir.join(format!("{name}.db"));
                Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
            }
        }
    }

    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL scheme (use sqlite: or postgres:)");
        };
        let options = AnyConnectOptions::from_str(url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let mut pool = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        pool = match backend {
            Backend::Sqlite => pool.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool.max_connections(16).min_connections(1),
        };
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the {backend:?} database: {e}"))?;
        Ok(Db {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
            down_since: Arc::new(AtomicI64::new(0)),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let begin = async {
            match self.backend {
                // IMMEDIATE: take SQLite's write lock now (waiting up to the busy timeout for a
                // write outside `begin`, such as the outbox purge). A deferred transaction that
                // reads first fails at once with SQLITE_BUSY when another connection wrote in
                // between — seen as rare 500s on sends under load.
                Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
                Backend::Postgres => self.pool.begin().await,
            }
        };
        let tx = self.observe(self.fail_fast(begin).await)?;
        Ok(Tx { tx, _guard: guard })
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let ping = async { sqlx::query("SELECT 1").execute(&self.pool).await };
        self.observe(self.fail_fast(ping).await).map(|_| ())
    }

    /// Whether a connection-class failure was seen since the last success.
    pub fn is_known_down(&self) -> bool {
        self.down_since.load(Ordering::Relaxed) != 0
    }

    /// Bounds `op` by [`ACQUIRE_WHEN_DOWN`] while the database is known to be down.
    async fn fail_fast<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        if !self.is_known_down() {
            return op.await;
        }
        tokio::time::timeout(ACQUIRE_WHEN_DOWN, op)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Records whether the database answered, for [`Db::fail_fast`].
    fn observe<T>(&self, r: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        match &r {
            Ok(_) => {
                if self.down_since.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!("database reachable again");
                }
            }
            Err(e) if is_unavailable(e) => {
                let now = crate::time::now_ms();
                if self
                    .down_since
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    tracing::warn!(error = %e, "database unreachable; failing fast until it answers");
                }
            }
            Err(_) => {}
        }
        r
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies the migrations not applied yet, in order, each in its own transaction.
    /// On PostgreSQL an advisory lock keeps concurrent starters (two chat nodes) apart.
    pub async fn migrate(&self, migrations: &[Migration]) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_lock(7203411)").await?;
        }
        let result = self.migrate_locked(&mut conn, migrations).await;
        if self.backend == Backend::Postgres {
            let _ = conn.execute("SELECT pg_advisory_unlock(7203411)").await;
        }
        result
    }

    async fn migrate_locked(
        &self,
        conn: &mut AnyConnection,
        migrations: &[Migration],
    ) -> anyhow::Result<()> {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        for m in migrations {
            let applied: Option<String> =
                sqlx::query_scalar("SELECT id FROM schema_migrations WHERE id = $1")
                    .bind(m.id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if applied.is_some() {
                continue;
            }
            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| anyhow::anyhow!("migration {} failed: {e}", m.id))?;
            sqlx::query("INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2)")
                .bind(m.id)
                .bind(crate::time::now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(migration = m.id, "applied migration");
        }
        Ok(())
    }
}

/// Whether `e` is a unique-constraint violation (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e.as_database_error() {
        Some(d) => {
            d.is_unique_violation()
                || d.code().as_deref() == Some("23505")
                || d.message().contains("UNIQUE constraint failed")
        }
        None => false,
    }
}

/// Whether `e` means the database cannot serve right now (down, restarting, unreachable,
/// out of connections, busy) rather than that the statement is wrong: such errors are
/// answered 503 `database_unavailable` with `Retry-After`, and the same request may
/// succeed once the database is back.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or("");
            // PostgreSQL: class 08 connection exception; 57P01-03 admin/crash shutdown and
            // "cannot connect now" (starting up); 53100 disk full; 53300 too many connections; 40001/40P01
            // serialization failure/deadlock (retryable). SQLite: SQLITE_BUSY/LOCKED after
            // the busy timeout, told by its message (its numeric codes overlap SQLSTATEs).
            code.starts_with("08")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "53100" | "53300" | "40001" | "40P01"
                )
                || d.message().contains("database is locked")
                || d.message().contains("database table is locked")
                // SQLITE_FULL: the disk filled up (seen when a machine ran out of space:
                // a write answered 500). An outage of the storage, not a bug: 503.
                || d.message().contains("database or disk is full")
        }
        _ => false,
    }
}

/// Reads a BIGINT 0/1 column as bool.
pub fn flag(v: i64) -> bool {
    v != 0
}
