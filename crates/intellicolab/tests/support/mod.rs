//! Runs the real `intellicolab` binary as a child process, the way an operator does.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound once, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `intellicolab <args>` with `env`, logging (JSON) into `<dir>/<name>.log`.
    pub fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, String)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intellicolab"));
        // Only what the test passes configures the process, not the runner's environment.
        for (key, _) in std::env::vars() {
            if key.starts_with("INTELLICOLAB_")
                || key.ends_with("DATABASE_URL")
                || key == "REDIS_URL"
            {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .env("INTELLICOLAB_LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                "debug,sqlx=info,hyper=info,h2=info,tower=info,reqwest=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// SIGKILL: no graceful shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET url` answers 200 (at most 60 s).
pub async fn wait_ready(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(res) = http.get(url).send().await
            && res.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become ready");
}

/// The services' ports, chosen free before the processes start.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub auth: u16,
    pub users: u16,
    pub chat: u16,
    pub notifications: u16,
    pub files: u16,
    pub gateway: u16,
    /// The gateway's admin listener (`/metrics`; the public port serves none).
    pub gateway_admin: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            auth: free_port(),
            users: free_port(),
            chat: free_port(),
            notifications: free_port(),
            files: free_port(),
            gateway: free_port(),
            gateway_admin: free_port(),
        }
    }

    /// Environment that makes the services listen on these ports and find each other
    /// (JWKS at the auth service, relationship checks at the user service, the gateway's
    /// upstreams), with SQLite files, keys and the outbox in `data_dir`.
    pub fn env(&self, data_dir: &Path) -> Vec<(&'static str, String)> {
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        vec![
            ("INTELLICOLAB_DATA_DIR", data_dir.display().to_string()),
            (
                "INTELLICOLAB_AUTH__LISTEN",
                format!("127.0.0.1:{}", self.auth),
            ),
            (
                "INTELLICOLAB_USERS__LISTEN",
                format!("127.0.0.1:{}", self.users),
            ),
            (
                "INTELLICOLAB_CHAT__LISTEN",
                format!("127.0.0.1:{}", self.chat),
            ),
            (
                "INTELLICOLAB_NOTIFICATIONS__LISTEN",
                format!("127.0.0.1:{}", self.notifications),
            ),
            ("INTELLICOLAB_NOTIFICATIONS__CHAT_URL", url(self.chat)),
            (
                "INTELLICOLAB_FILES__LISTEN",
                format!("127.0.0.1:{}", self.files),
            ),
            ("INTELLICOLAB_FILES__CHAT_URL", url(self.chat)),
            ("INTELLICOLAB_CHAT__FILES_URL", url(self.files)),
            (
                "INTELLICOLAB_GATEWAY__LISTEN",
                format!("127.0.0.1:{}", self.gateway),
            ),
            (
                "INTELLICOLAB_GATEWAY__ADMIN_LISTEN",
                format!("127.0.0.1:{}", self.gateway_admin),
            ),
            ("INTELLICOLAB_AUTH_URL", url(self.auth)),
            ("INTELLICOLAB_USERS_URL", url(self.users)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__AUTH", url(self.auth)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__USERS", url(self.users)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__CHAT", url(self.chat)),
            (
                "INTELLICOLAB_GATEWAY__UPSTREAMS__NOTIFICATIONS",
                url(self.notifications),
            ),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__FILES", url(self.files)),
        ]
    }

    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.auth)
    }
    pub fn users_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.users)
    }
    pub fn chat_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.chat)
    }
    pub fn notifications_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.notifications)
    }
    pub fn files_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.files)
    }
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway)
    }
    pub fn gateway_admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_admin)
    }

    /// Waits until every service (and the gateway) answers `/readyz`.
    pub async fn wait_all_ready(&self) {
        for base in [
            self.auth_url(),
            self.users_url(),
            self.chat_url(),
            self.notifications_url(),
            self.files_url(),
            self.gateway_url(),
        ] {
            wait_ready(&format!("{base}/readyz")).await;
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports::new()
    }
}

/// `(status, JSON body or Null, content type)` of a response.
pub async fn read(res: reqwest::Response) -> (u16, serde_json::Value, String) {
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    (status, body, ctype)
}

/// A client of the HTTP API at `base` (the gateway, or one service directly).
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

/// A registered account: its id and a current access token.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Sends `method path` with an optional JSON body and bearer token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    /// Registers `username` (201 expected) and returns the account.
    pub async fn register(&self, username: &str) -> Account {
        let password = format!("Pw-{username}-long-enough-1");
        let (s, body, _) = self
            .call(
                "POST",
                "/auth/register",
                None,
                Some(serde_json::json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": password,
                })),
            )
            .await;
        assert_eq!(s, 201, "register {username}: {body}");
        Account {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            username: username.to_owned(),
            password,
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs `account` in (200 expected); the account then carries the new session's tokens.
    pub async fn login(&self, account: &mut Account) {
        let (s, body, _) = self
            .call(
                "POST",
                "/auth/login",
                None,
                Some(serde_json::json!({"login": account.username, "password": account.password})),
            )
            .await;
        assert_eq!(s, 200, "login {}: {body}", account.username);
        assert_eq!(body["user"]["id"], account.id.as_str());
        account.access = body["access_token"].as_str().unwrap().to_owned();
        account.refresh = body["refresh_token"].as_str().unwrap().to_owned();
    }
}
