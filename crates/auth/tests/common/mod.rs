//! Starts a real auth service on a random port with fresh state.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use kit::db::Backend;
use serde_json::{Value, json};

pub struct TestAuth {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub bus: bus::Bus,
    pub http: reqwest::Client,
    running: Option<kit::server::Running>,
    _db: kit::testing::TestDb,
}

pub async fn spawn(backend: Backend, test: &str) -> Option<TestAuth> {
    spawn_with(backend, test, |_| {}).await
}

pub async fn spawn_with(
    backend: Backend,
    test: &str,
    tweak: impl FnOnce(&mut auth::Config),
) -> Option<TestAuth> {
    let db = kit::testing::test_db(backend, test).await?;
    let dir = tempfile::tempdir().unwrap();
    let common = kit::config::CommonConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let mut config = auth::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        ..Default::default()
    };
    tweak(&mut config);
    let bus = bus::Bus::memory();
    let service = auth::build(&common, &config, bus.clone(), Default::default())
        .await
        .unwrap();
    let running = service.spawn();
    Some(TestAuth {
        url: running.url(),
        dir,
        bus,
        http: reqwest::Client::new(),
        running: Some(running),
        _db: db,
    })
}

impl TestAuth {
    /// The service's own database (tests that age a row).
    pub async fn db(&self) -> kit::db::Db {
        kit::db::Db::open(self._db.url.as_deref(), self.dir.path(), auth::NAME)
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn patch(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.patch(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    /// A login as if from client address `ip` (the service believes `X-Forwarded-For`
    /// from 127.0.0.1, a trusted proxy by default); returns the raw response.
    pub async fn login_from(
        &self,
        ip: &str,
        login: &str,
        password: &str,
        device_token: Option<&str>,
    ) -> reqwest::Response {
        let mut body = json!({"login": login, "password": password});
        if let Some(t) = device_token {
            body["device_token"] = json!(t);
        }
        self.http
            .post(format!("{}/auth/login", self.url))
            .header("x-forwarded-for", ip)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Every mail written to the outbox so far, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.dir.path().join("outbox")) else {
            return Vec::new();
        };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        // File names are uuid v7: creation order.
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }

    /// Waits until `n` mails other than email verifications (which every registration
    /// sends) went to `to` and returns them, oldest first.
    pub async fn mails_to(&self, to: &str, n: usize) -> Vec<String> {
        let find = || -> Vec<String> {
            self.mails_with(to)
                .into_iter()
                .filter(|m| !m.contains(VERIFY_SUBJECT))
                .collect()
        };
        eventually(|| find().len() >= n).await;
        find()
    }

    /// Waits until `n` email verification mails went to `to` and returns them.
    pub async fn verification_mails(&self, to: &str, n: usize) -> Vec<String> {
        let find = || -> Vec<String> {
            self.mails_with(to)
                .into_iter()
                .filter(|m| m.contains(VERIFY_SUBJECT))
                .collect()
        };
        eventually(|| find().len() >= n).await;
        find()
    }

    fn mails_with(&self, to: &str) -> Vec<String> {
        let header = format!("To: {to}");
        self.mails()
            .into_iter()
            .filter(|m| m.lines().any(|l| l == header))
            .collect()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.delete(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    /// `DELETE` with a JSON body (`DELETE /auth/me {current_password}`).
    pub async fn delete_json(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.delete(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    /// Registers `name` (password `correct horse battery`) and returns the token response.
    pub async fn register(&self, name: &str) -> Value {
        let (status, body) = self
            .post(
                "/auth/register",
                json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn login(&self, login: &str, password: &str) -> (u16, Value) {
        self.post(
            "/auth/login",
            json!({"login": login, "password": password}),
            None,
        )
        .await
    }
}

pub const PASSWORD: &str = "correct horse battery";

pub const VERIFY_SUBJECT: &str = "Subject: Verify your IntelliColab email address";

pub async fn read(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// The token in a mail: the line that is 43 characters of base64url (256 bits).
pub fn mailed_token(mail: &str) -> String {
    mail.lines()
        .map(str::trim)
        .find(|l| {
            l.len() == 43
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .unwrap_or_else(|| panic!("no token in {mail}"))
        .to_owned()
}

pub fn token(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap().to_owned()
}

/// Waits until `check` holds, for at most 5 s.
pub async fn eventually<F: Fn() -> bool>(check: F) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met in time");
}

/// Every event the auth service publishes on `bus`, as it arrives.
pub fn capture(bus: &bus::Bus) -> std::sync::Arc<std::sync::Mutex<Vec<bus::Envelope>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    bus.subscribe(
        bus::Subscription::new("test", &["auth"]),
        bus::handler(move |e| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(e);
                Ok(())
            }
        }),
        Default::default(),
    );
    seen
}

/// A problem+json answer with `expected` status and `code` (the body is printed otherwise).
pub fn assert_problem(status: u16, problem: &Value, expected: u16, code: &str) {
    assert_eq!(
        (status, problem["code"].as_str()),
        (expected, Some(code)),
        "{problem}"
    );
}
