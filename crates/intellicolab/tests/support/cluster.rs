//! Five real processes — `serve auth`, `serve users`, two `serve chat`, `serve gateway` —
//! over PostgreSQL (one fresh database per service, reached through a
//! [`kit::testing::FaultProxy`] that a test can cut) and a private `redis-server` (that a
//! test can kill and restart on the same port). The shared PostgreSQL and Redis are never
//! stopped.

use kit::db::Backend;
use kit::testing::{FaultProxy, TestDb};

use super::{Proc, free_port, wait_ready};

/// A private `redis-server` (no persistence: a restart comes back empty, as a Redis that
/// lost its data), on a port that stays the same across kill and restart.
pub use bus::testing::PrivateRedis;

/// The roles a cluster runs, for [`Cluster::start_role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Auth,
    Users,
    /// Chat node 0 or 1.
    Chat(usize),
    Gateway,
}

/// The five processes and what they depend on. Fields drop in order: the processes first,
/// then the proxy and Redis, then the databases (dropped with `FORCE`).
pub struct Cluster {
    pub auth: Proc,
    pub users: Proc,
    pub chat: Vec<Proc>,
    pub gateway: Proc,
    pub pg: FaultProxy,
    pub redis: PrivateRedis,
    pub auth_port: u16,
    pub users_port: u16,
    pub chat_ports: [u16; 2],
    pub gateway_port: u16,
    env: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
    _dbs: Vec<TestDb>,
}

impl Cluster {
    /// Starts everything and waits until each process answers `/readyz`. `None` (after
    /// printing why) when `TEST_DATABASE_URL` or `TEST_REDIS_URL` is unset.
    pub async fn start(test: &str) -> Option<Cluster> {
        let redis = PrivateRedis::start(test)?;
        let admin = kit::testing::env_url("TEST_DATABASE_URL");
        let mut dbs = Vec::new();
        for service in ["auth", "users", "chat"] {
            dbs.push(kit::testing::test_db(Backend::Postgres, &format!("{test}_{service}")).await?);
        }
        let admin = admin.unwrap();
        let pg = FaultProxy::start(&kit::testing::url_addr(&admin))
            .await
            .unwrap();
        let via_proxy = |db: &TestDb| {
            kit::testing::with_addr(db.url.as_deref().unwrap(), &pg.addr().to_string())
        };
        let dir = tempfile::tempdir().unwrap();
        let (auth_port, users_port, gateway_port) = (free_port(), free_port(), free_port());
        let chat_ports = [free_port(), free_port()];
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let unlimited = "1000000".to_owned();
        let env: Vec<(&'static str, String)> = vec![
            ("INTELLICOLAB_DATA_DIR", dir.path().display().to_string()),
            ("INTELLICOLAB_REDIS_URL", redis.url()),
            ("INTELLICOLAB_AUTH__DATABASE_URL", via_proxy(&dbs[0])),
            ("INTELLICOLAB_USERS__DATABASE_URL", via_proxy(&dbs[1])),
            ("INTELLICOLAB_CHAT__DATABASE_URL", via_proxy(&dbs[2])),
            (
                "INTELLICOLAB_AUTH__LISTEN",
                format!("127.0.0.1:{auth_port}"),
            ),
            (
                "INTELLICOLAB_USERS__LISTEN",
                format!("127.0.0.1:{users_port}"),
            ),
            (
                "INTELLICOLAB_CHAT__LISTEN",
                format!("127.0.0.1:{}", chat_ports[0]),
            ),
            (
                "INTELLICOLAB_GATEWAY__LISTEN",
                format!("127.0.0.1:{gateway_port}"),
            ),
            // Its default (127.0.0.1:9080) would clash with any other gateway on the host.
            (
                "INTELLICOLAB_GATEWAY__ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("INTELLICOLAB_AUTH_URL", url(auth_port)),
            ("INTELLICOLAB_USERS_URL", url(users_port)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__AUTH", url(auth_port)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__USERS", url(users_port)),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__CHAT",
                format!("{},{}", url(chat_ports[0]), url(chat_ports[1])),
            ),
            // Every client is 127.0.0.1: the limits would otherwise throttle the test's
            // own load (the strict policy allows 5 registrations per client).
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__DEFAULT__RATE",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__DEFAULT__BURST",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__STRICT__RATE",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__STRICT__BURST",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__STRICT__PERIOD_MS",
                "1000".to_owned(),
            ),
            ("INTELLICOLAB_CHAT__SEND_RATE_PER_SEC", unlimited.clone()),
            ("INTELLICOLAB_CHAT__SEND_BURST", unlimited),
            // Debug logs of thousands of messages would only slow two cores down.
            ("RUST_LOG", "info,sqlx=warn".to_owned()),
        ];
        let start = |name: &str, args: &[&str], env: &[(&'static str, String)]| {
            Proc::start(dir.path(), name, args, env)
        };
        let auth = start("auth", &["serve", "auth"], &env);
        // Users and chat load the JWKS and the revocation list from auth at start.
        wait_ready(&format!("{}/readyz", url(auth_port))).await;
        let users = start("users", &["serve", "users"], &env);
        let chat0 = start("chat0", &["serve", "chat"], &env);
        let mut env1 = env.clone();
        env1.push((
            "INTELLICOLAB_CHAT__LISTEN",
            format!("127.0.0.1:{}", chat_ports[1]),
        ));
        let chat1 = start("chat1", &["serve", "chat"], &env1);
        let gateway = start("gateway", &["serve", "gateway"], &env);
        let cluster = Cluster {
            auth,
            users,
            chat: vec![chat0, chat1],
            gateway,
            pg,
            redis,
            auth_port,
            users_port,
            chat_ports,
            gateway_port,
            env,
            dir,
            _dbs: dbs,
        };
        for base in [
            cluster.users_url(),
            cluster.chat_url(0),
            cluster.chat_url(1),
            cluster.gateway_url(),
        ] {
            wait_ready(&format!("{base}/readyz")).await;
        }
        Some(cluster)
    }

    /// Starts `role` again (after a kill) with the same configuration; does not wait.
    pub fn start_role(&mut self, role: Role) {
        let mut env = self.env.clone();
        let (name, args): (String, [&str; 2]) = match role {
            Role::Auth => ("auth".into(), ["serve", "auth"]),
            Role::Users => ("users".into(), ["serve", "users"]),
            Role::Gateway => ("gateway".into(), ["serve", "gateway"]),
            Role::Chat(i) => {
                env.push((
                    "INTELLICOLAB_CHAT__LISTEN",
                    format!("127.0.0.1:{}", self.chat_ports[i]),
                ));
                (format!("chat{i}"), ["serve", "chat"])
            }
        };
        let proc = Proc::start(self.dir.path(), &name, &args, &env);
        let slot = match role {
            Role::Auth => &mut self.auth,
            Role::Users => &mut self.users,
            Role::Gateway => &mut self.gateway,
            Role::Chat(i) => &mut self.chat[i],
        };
        // The old one was killed already; dropping it again is harmless.
        *slot = proc;
    }

    pub fn proc_mut(&mut self, role: Role) -> &mut Proc {
        match role {
            Role::Auth => &mut self.auth,
            Role::Users => &mut self.users,
            Role::Gateway => &mut self.gateway,
            Role::Chat(i) => &mut self.chat[i],
        }
    }

    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.auth_port)
    }
    pub fn users_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.users_port)
    }
    pub fn chat_url(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.chat_ports[node])
    }
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }
    pub fn gateway_ws(&self) -> String {
        format!("ws://127.0.0.1:{}/chat/ws", self.gateway_port)
    }
    pub fn chat_ws(&self, node: usize) -> String {
        format!("ws://127.0.0.1:{}/chat/ws", self.chat_ports[node])
    }

    /// Copies every process's log to a directory that outlives the test (the cluster's
    /// own is removed on drop) and returns its path, for a failure message.
    pub fn keep_logs(&self, test: &str) -> std::path::PathBuf {
        let keep = std::env::temp_dir().join(format!("{test}-logs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for p in [
            &self.auth,
            &self.users,
            &self.chat[0],
            &self.chat[1],
            &self.gateway,
        ] {
            if let Some(name) = p.log.file_name() {
                let _ = std::fs::copy(&p.log, keep.join(name));
            }
        }
        keep
    }

    /// Every process's log, for a failure message.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in [
            &self.auth,
            &self.users,
            &self.chat[0],
            &self.chat[1],
            &self.gateway,
        ] {
            let logs = p.logs();
            let all: Vec<&str> = logs.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {} ---\n", p.log.display()));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}
