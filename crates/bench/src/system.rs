//! Starts the system under test: the real `intellicolab` binary as a child process with a
//! temp data dir, its own free ports on 127.0.0.1, and (when asked) fresh PostgreSQL
//! databases and Redis. Everything is stopped and removed when the handle is dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

/// What the user asked for on the command line.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub server_bin: PathBuf,
    /// Admin URL of a PostgreSQL server; each service gets a fresh database on it.
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
}

/// A fresh PostgreSQL database, dropped at the end.
pub struct ScratchDb {
    admin: String,
    name: String,
    pub url: String,
    /// The service it is for (`users`, `chat`): a prepared one replaces that service's.
    pub purpose: String,
}

impl ScratchDb {
    pub async fn create(admin: &str, purpose: &str) -> anyhow::Result<Self> {
        use sqlx::{Connection, Executor};
        let name = format!("ic_bench_{purpose}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .context("connecting to --database-url")?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await?;
        let _ = conn.close().await;
        Ok(Self {
            url: kit::testing::with_database(admin, &name),
            admin: admin.to_owned(),
            name,
            purpose: purpose.to_owned(),
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        kit::testing::drop_pg_database_blocking(self.admin.clone(), self.name.clone());
    }
}

/// A port nobody listens on right now (the OS picks it; we release it at once).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub struct Ports {
    pub auth: u16,
    pub users: u16,
    pub chat: u16,
    pub notifications: u16,
    pub files: u16,
    pub gateway: u16,
    pub gateway_admin: u16,
}

/// The running system: `serve all` in one child process.
pub struct System {
    pub ports: Ports,
    _data_dir: tempfile::TempDir,
    child: Child,
    pub backend: &'static str,
    _dbs: Vec<ScratchDb>,
    log_path: PathBuf,
    /// The notifications service's database URL (PostgreSQL), for scenarios that count
    /// its rows; `None`: `notifications.db` in the data dir.
    pub notifications_db: Option<String>,
}

/// Settings a scenario adds to the server's environment (rate limits raised for load, …).
pub type Env = Vec<(String, String)>;

impl System {
    /// Starts `serve all` and waits until every service answers `/readyz`.
    /// `prepare` runs against the data dir / database URLs before the server starts
    /// (the search scenario loads profiles there).
    pub async fn start(opts: &SystemOptions, extra_env: &Env) -> anyhow::Result<Self> {
        Self::start_prepared(opts, extra_env, None).await
    }

    pub async fn start_prepared(
        opts: &SystemOptions,
        extra_env: &Env,
        prepared: Option<(tempfile::TempDir, Option<ScratchDb>)>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            opts.server_bin.exists(),
            "server binary {} not found: build it with `cargo build --release -p intellicolab` or pass --server-bin",
            opts.server_bin.display()
        );
        let (data_dir, prepared_db) = match prepared {
            Some(p) => p,
            None => (tempfile::tempdir()?, None),
        };
        let ports = Ports {
            auth: free_port()?,
            users: free_port()?,
            chat: free_port()?,
            notifications: free_port()?,
            files: free_port()?,
            gateway: free_port()?,
            gateway_admin: free_port()?,
        };
        let mut env: Env = vec![
            ("INTELLICOLAB_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "warn".into()),
            (
                "INTELLICOLAB_AUTH__LISTEN".into(),
                format!("127.0.0.1:{}", ports.auth),
            ),
            (
                "INTELLICOLAB_USERS__LISTEN".into(),
                format!("127.0.0.1:{}", ports.users),
            ),
            (
                "INTELLICOLAB_CHAT__LISTEN".into(),
                format!("127.0.0.1:{}", ports.chat),
            ),
            (
                "INTELLICOLAB_NOTIFICATIONS__LISTEN".into(),
                format!("127.0.0.1:{}", ports.notifications),
            ),
            (
                "INTELLICOLAB_NOTIFICATIONS__CHAT_URL".into(),
                format!("http://127.0.0.1:{}", ports.chat),
            ),
            (
                "INTELLICOLAB_FILES__LISTEN".into(),
                format!("127.0.0.1:{}", ports.files),
            ),
            (
                "INTELLICOLAB_FILES__CHAT_URL".into(),
                format!("http://127.0.0.1:{}", ports.chat),
            ),
            (
                "INTELLICOLAB_CHAT__FILES_URL".into(),
                format!("http://127.0.0.1:{}", ports.files),
            ),
            (
                "INTELLICOLAB_GATEWAY__LISTEN".into(),
                format!("127.0.0.1:{}", ports.gateway),
            ),
            (
                "INTELLICOLAB_GATEWAY__ADMIN_LISTEN".into(),
                format!("127.0.0.1:{}", ports.gateway_admin),
            ),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__AUTH".into(),
                format!("http://127.0.0.1:{}", ports.auth),
            ),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__USERS".into(),
                format!("http://127.0.0.1:{}", ports.users),
            ),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__CHAT".into(),
                format!("http://127.0.0.1:{}", ports.chat),
            ),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__NOTIFICATIONS".into(),
                format!("http://127.0.0.1:{}", ports.notifications),
            ),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__FILES".into(),
                format!("http://127.0.0.1:{}", ports.files),
            ),
            (
                "INTELLICOLAB_AUTH_URL".into(),
                format!("http://127.0.0.1:{}", ports.auth),
            ),
            (
                "INTELLICOLAB_USERS_URL".into(),
                format!("http://127.0.0.1:{}", ports.users),
            ),
        ];
        let mut dbs = Vec::new();
        let mut backend = "sqlite";
        let mut notifications_db = None;
        if let Some(admin) = &opts.database_url {
            backend = "postgres";
            for service in ["auth", "users", "chat", "notifications", "files"] {
                let url = match prepared_db.as_ref().filter(|db| db.purpose == service) {
                    Some(db) => db.url.clone(),
                    None => {
                        let db = ScratchDb::create(admin, service).await?;
                        let url = db.url.clone();
                        dbs.push(db);
                        url
                    }
                };
                if service == "notifications" {
                    notifications_db = Some(url.clone());
                }
                env.push((format!("{}_DATABASE_URL", service.to_uppercase()), url));
            }
        }
        if let Some(db) = prepared_db {
            dbs.push(db);
        }
        if let Some(redis) = &opts.redis_url {
            env.push(("REDIS_URL".into(), redis.clone()));
        }
        env.extend(extra_env.iter().cloned());
        let log_path = data_dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&opts.server_bin);
        cmd.arg("--data-dir")
            .arg(data_dir.path())
            .arg("serve")
            .arg("all")
            .env_remove("DATABASE_URL")
            .env_remove("AUTH_DATABASE_URL")
            .env_remove("USERS_DATABASE_URL")
            .env_remove("CHAT_DATABASE_URL")
            .env_remove("NOTIFICATIONS_DATABASE_URL")
            .env_remove("FILES_DATABASE_URL")
            .env_remove("REDIS_URL")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd.spawn().context("spawning the server")?;
        let mut system = Self {
            ports,
            _data_dir: data_dir,
            child,
            backend,
            _dbs: dbs,
            log_path,
            notifications_db,
        };
        system.wait_ready(Duration::from_secs(60)).await?;
        Ok(system)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let started = Instant::now();
        let ports = [
            self.ports.auth,
            self.ports.users,
            self.ports.chat,
            self.ports.notifications,
            self.ports.files,
            self.ports.gateway,
        ];
        let mut ready = [false; 6];
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "server exited with {status} during start; last log lines:\n{}",
                    self.log_tail(30)
                );
            }
            for (i, port) in ports.iter().enumerate() {
                if !ready[i] {
                    let r = client
                        .get(format!("{}/readyz", Self::url(*port)))
                        .send()
                        .await;
                    ready[i] = matches!(r, Ok(r) if r.status().is_success());
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!(
            "server not ready after {limit:?} (auth, users, chat, notifications, files, gateway ready: {ready:?}); log:\n{}",
            self.log_tail(30)
        )
    }

    /// The data dir (`notifications.db` and the other SQLite files live there).
    pub fn data_dir(&self) -> &Path {
        self._data_dir.path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Raises the soft open-files limit to the hard limit; children inherit it.
pub fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(0),
    }
}
