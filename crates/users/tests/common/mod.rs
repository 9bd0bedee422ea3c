//! A user service on a real port, a real JWKS issuer and an in-process bus.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Envelope, Subscription};
use kit::db::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use token::testing::TestIssuer;

pub struct App {
    pub url: String,
    pub issuer: TestIssuer,
    pub bus: Bus,
    pub http: reqwest::Client,
    /// Every event the service published (source `users`).
    pub published: Arc<Mutex<Vec<Envelope>>>,
    running: Option<kit::server::Running>,
    common: kit::config::CommonConfig,
    config: users::Config,
    _dir: tempfile::TempDir,
    _db: kit::testing::TestDb,
}

/// Another instance of the user service on the same database as an [`App`], with a bus
/// of its own: it learns of the first instance's writes through the change feed only.
pub struct Sibling {
    pub url: String,
    http: reqwest::Client,
    running: Option<kit::server::Running>,
}

impl Sibling {
    pub async fn get(&self, user: &User, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.cancel();
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: uuid::Uuid,
    pub username: String,
    pub token: String,
}

impl User {
    pub fn id(&self) -> String {
        self.id.to_string()
    }
}

impl App {
    pub async fn start(backend: Backend, test: &str) -> Option<App> {
        Self::start_with(backend, test, |url| url).await
    }

    /// [`App::start`] with the service's database URL passed through `url` first
    /// (e.g. to reach PostgreSQL through a [`kit::testing::FaultProxy`]).
    pub async fn start_with(
        backend: Backend,
        test: &str,
        url: impl FnOnce(Option<String>) -> Option<String>,
    ) -> Option<App> {
        let db = kit::testing::test_db(backend, test).await?;
        let dir = tempfile::tempdir().unwrap();
        let issuer = TestIssuer::start().await;
        let common = kit::config::CommonConfig {
            auth_url: issuer.auth_url.clone(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let config = users::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: url(db.url.clone()),
        };
        let bus = Bus::memory();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let service = users::build(&common, &config, bus.clone(), shutdown.clone())
            .await
            .unwrap();
        let (common_kept, config_kept) = (common.clone(), config.clone());
        let running = service.spawn();
        let published = Arc::new(Mutex::new(Vec::new()));
        let sink = published.clone();
        bus.subscribe(
            Subscription::new("test-observer", &["users"]),
            bus::handler(move |e: Envelope| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(e);
                    Ok(())
                }
            }),
            shutdown.clone(),
        );
        Some(App {
            url: running.url(),
            issuer,
            bus,
            http: reqwest::Client::new(),
            published,
            running: Some(running),
            common: common_kept,
            config: config_kept,
            _dir: dir,
            _db: db,
        })
    }

    /// A second instance of the service on this app's database (see [`Sibling`]).
    pub async fn sibling(&self) -> Sibling {
        let config = users::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..self.config.clone()
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let service = users::build(&self.common, &config, Bus::memory(), shutdown)
            .await
            .unwrap();
        let running = service.spawn();
        Sibling {
            url: running.url(),
            http: reqwest::Client::new(),
            running: Some(running),
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// The service's data dir (its SQLite file is `users.db` there).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// A token for an account whose events may not have been published.
    pub fn account(&self, username: &str) -> User {
        let id = uuid::Uuid::now_v7();
        User {
            id,
            username: username.to_owned(),
            token: self.issuer.token(id, username),
        }
    }

    /// `user.registered` exactly as the auth service publishes it.
    pub fn registered_event(
        &self,
        user: &User,
        display_name: Option<&str>,
        created_at: &str,
    ) -> Envelope {
        Envelope::new(
            "auth",
            "user.registered",
            json!({
                "user_id": user.id,
                "username": user.username,
                "email": format!("{}@example.test", user.username),
                "display_name": display_name,
                "created_at": created_at,
            }),
        )
    }

    pub fn updated_event(
        &self,
        user: &User,
        username: Option<&str>,
        display_name: Option<&str>,
    ) -> Envelope {
        Envelope::new(
            "auth",
            "user.updated",
            json!({ "user_id": user.id, "username": username, "email": null, "display_name": display_name }),
        )
    }

    pub async fn publish(&self, e: &Envelope) {
        self.bus.publish(e).await.unwrap();
    }

    /// Registers an account through the bus and waits until its profile exists.
    pub async fn register(&self, username: &str, display_name: &str) -> User {
        let user = self.account(username);
        let e = self.registered_event(&user, Some(display_name), "2026-01-02T03:04:05.678Z");
        self.publish(&e).await;
        self.wait_for(&user, |p| p["display_name"] == display_name)
            .await;
        user
    }

    /// Polls `GET /users/{id}` (which never creates a profile) until `ok` holds.
    pub async fn wait_for(&self, user: &User, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get(user, &format!("/users/{}", user.id)).await;
            if status == StatusCode::OK && ok(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "profile of {} never became {body}",
                user.username
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the service published an event of `kind` matching `ok`.
    pub async fn wait_published(&self, kind: &str, ok: impl Fn(&Value) -> bool) -> Envelope {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self
                .published
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.kind == kind && ok(&e.data))
            {
                return e.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {kind} event was published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until exactly `n` events of `kind` were published (and no more soon after).
    pub async fn wait_count(&self, kind: &str, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.published_count(kind) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} {kind} events",
                self.published_count(kind)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(self.published_count(kind), n, "{kind}");
    }

    pub fn published_count(&self, kind: &str) -> usize {
        self.published
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .count()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, user: &User, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, Some(&user.token), path, None)
            .await
    }
    pub async fn put(&self, user: &User, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, Some(&user.token), path, None)
            .await
    }
    pub async fn delete(&self, user: &User, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, Some(&user.token), path, None)
            .await
    }
    pub async fn patch(&self, user: &User, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::PATCH,
            Some(&user.token),
            "/users/me",
            Some(body),
        )
        .await
    }

    pub async fn follow(&self, a: &User, b: &User) {
        let (s, body) = self.put(a, &format!("/users/me/following/{}", b.id)).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    }

    pub async fn profile(&self, viewer: &User, of: &User) -> Value {
        let (s, body) = self.get(viewer, &format!("/users/{}", of.id)).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body
    }

    /// Every item of a paginated list, following `next_cursor` with `limit`.
    pub async fn all_pages(&self, user: &User, path: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        for _ in 0..1000 {
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (s, body) = self.get(user, &url).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            let page = body["items"].as_array().unwrap();
            assert!(page.len() <= limit);
            items.extend(page.iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
        panic!("pagination did not end");
    }
}

pub fn usernames(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|p| p["username"].as_str().unwrap().to_owned())
        .collect()
}

pub fn assert_problem(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], want_status.as_u16(), "{body}");
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.cancel();
        }
    }
}
