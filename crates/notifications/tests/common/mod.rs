//! A notifications service on a real port, a real JWKS issuer, an in-process bus and a
//! stand-in for chat's internal membership route.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Envelope, Subscription};
use kit::db::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use token::testing::TestIssuer;
use uuid::Uuid;

/// What the stand-in chat knows: `(room, user) → room_kind`; `down` answers 500.
#[derive(Clone, Default)]
pub struct FakeChat {
    pub members: Arc<Mutex<HashMap<(Uuid, Uuid), &'static str>>>,
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// Users with an open, active connection (`online`); everyone else is offline.
    pub online: Arc<Mutex<std::collections::HashSet<Uuid>>>,
    /// The user service's blocks `(blocker, blocked)` for `GET /internal/blocks` (the
    /// stand-in serves the user service's internal routes too), and how often it was
    /// asked for a page.
    pub blocks: Arc<Mutex<Vec<(Uuid, Uuid)>>>,
    pub block_pages: Arc<std::sync::atomic::AtomicUsize>,
}

/// Edges per page of the stand-in's `GET /internal/blocks`, whatever `limit` asks: small,
/// so a few blocks already take several pages.
const BLOCKS_PAGE: usize = 2;

impl FakeChat {
    pub fn join(&self, room: Uuid, user: &User, kind: &'static str) {
        self.members.lock().unwrap().insert((room, user.id), kind);
    }

    async fn start(&self) -> String {
        use axum::extract::{Path, State};
        use axum::http::StatusCode as S;
        let app = axum::Router::new()
            .route(
                "/internal/rooms/{room}/members/{user}",
                axum::routing::get(
                    |State(chat): State<FakeChat>, Path((room, user)): Path<(Uuid, Uuid)>| async move {
                        if chat.down.load(std::sync::atomic::Ordering::SeqCst) {
                            return (S::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
                        }
                        match chat.members.lock().unwrap().get(&(room, user)) {
                            Some(kind) => (S::OK, axum::Json(json!({"role": "member", "room_kind": kind}))),
                            None => (S::NOT_FOUND, axum::Json(json!({"code": "room_not_found"}))),
                        }
                    },
                ),
            )
            .route(
                "/internal/presence",
                axum::routing::get(
                    |State(chat): State<FakeChat>,
                     axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                        let online = chat.online.lock().unwrap().clone();
                        let items: Vec<Value> = q
                            .get("user_ids")
                            .map(String::as_str)
                            .unwrap_or_default()
                            .split(',')
                            .filter_map(|s| s.parse::<Uuid>().ok())
                            .map(|u| {
                                let status = if online.contains(&u) { "online" } else { "offline" };
                                json!({"user_id": u, "status": status, "last_seen_at": null})
                            })
                            .collect();
                        axum::Json(json!({ "items": items }))
                    },
                ),
            )
            .route(
                "/internal/blocks",
                axum::routing::get(
                    |State(chat): State<FakeChat>,
                     axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                        chat.block_pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let from: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                        let blocks = chat.blocks.lock().unwrap().clone();
                        let items: Vec<Value> = blocks
                            .iter()
                            .skip(from)
                            .take(BLOCKS_PAGE)
                            .map(|(a, b)| json!({"blocker_id": a, "blocked_id": b}))
                            .collect();
                        let next = from + BLOCKS_PAGE;
                        let next_cursor = (next < blocks.len()).then(|| next.to_string());
                        axum::Json(json!({ "items": items, "next_cursor": next_cursor }))
                    },
                ),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }
}

pub struct App {
    pub url: String,
    pub issuer: TestIssuer,
    pub bus: Bus,
    pub http: reqwest::Client,
    pub chat: FakeChat,
    /// Every event the service published (source `notifications`).
    pub published: Arc<Mutex<Vec<Envelope>>>,
    /// The service's database, to wait until an event was applied.
    pub db: kit::db::Db,
    running: Option<kit::server::Running>,
    _dir: tempfile::TempDir,
    _db: kit::testing::TestDb,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub token: String,
}

/// A message as chat's `chat.message.created` describes it.
#[derive(Clone, Debug)]
pub struct Msg {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub seq: i64,
    pub sender: Uuid,
    pub room_kind: &'static str,
    pub mentioned: Vec<Uuid>,
    pub mentioned_room: bool,
    pub thread_root_id: Option<Uuid>,
    pub thread_root_sender: Option<Uuid>,
    pub reply_to: Option<Uuid>,
    pub reply_to_sender: Option<Uuid>,
    pub recipients: Vec<Uuid>,
    pub preview: String,
}

impl Msg {
    pub fn channel(room: Uuid, seq: i64, sender: &User) -> Msg {
        Msg {
            message_id: Uuid::now_v7(),
            room_id: room,
            seq,
            sender: sender.id,
            room_kind: "channel",
            mentioned: vec![],
            mentioned_room: false,
            thread_root_id: None,
            thread_root_sender: None,
            reply_to: None,
            reply_to_sender: None,
            recipients: vec![],
            preview: format!("message {seq}"),
        }
    }

    pub fn dm(room: Uuid, seq: i64, sender: &User, other: &User) -> Msg {
        Msg {
            room_kind: "dm",
            recipients: vec![other.id],
            ..Msg::channel(room, seq, sender)
        }
    }

    pub fn mention(mut self, users: &[&User]) -> Msg {
        self.mentioned = users.iter().map(|u| u.id).collect();
        self
    }

    pub fn created(&self) -> Envelope {
        Envelope::new(
            "chat",
            "chat.message.created",
            json!({
                "message_id": self.message_id, "room_id": self.room_id, "seq": self.seq,
                "sender_id": self.sender, "sender_username": "sender",
                "room_kind": self.room_kind,
                "room_name": if self.room_kind == "dm" { "" } else { "general" },
                "mentioned_user_ids": self.mentioned, "mentioned_room": self.mentioned_room,
                "thread_root_id": self.thread_root_id, "thread_root_sender_id": self.thread_root_sender,
                "reply_to": self.reply_to, "reply_to_sender_id": self.reply_to_sender,
                "recipient_ids": self.recipients, "preview": self.preview,
                "created_at": "2026-12-03T10:00:00Z",
            }),
        )
    }

    /// `chat.message.updated` after an edit to `mentioned` (the edit's room event is `seq`).
    pub fn updated(&self, seq: i64, mentioned: &[&User], preview: &str) -> Envelope {
        let now: Vec<Uuid> = mentioned.iter().map(|u| u.id).collect();
        let added: Vec<Uuid> = now
            .iter()
            .filter(|u| !self.mentioned.contains(u))
            .copied()
            .collect();
        let removed: Vec<Uuid> = self
            .mentioned
            .iter()
            .filter(|u| !now.contains(u))
            .copied()
            .collect();
        Envelope::new(
            "chat",
            "chat.message.updated",
            json!({
                "message_id": self.message_id, "room_id": self.room_id, "seq": seq,
                "sender_id": self.sender, "room_kind": self.room_kind,
                "room_name": "general", "thread_root_id": self.thread_root_id,
                "mentioned_user_ids": now, "added_mention_ids": added, "removed_mention_ids": removed,
                "recipient_ids": self.recipients, "preview": preview,
                "edited_at": "2026-12-03T10:01:00Z",
            }),
        )
    }

    pub fn deleted(&self, seq: i64) -> Envelope {
        Envelope::new(
            "chat",
            "chat.message.deleted",
            json!({
                "message_id": self.message_id, "room_id": self.room_id, "seq": seq,
                "sender_id": self.sender, "deleted_by": self.sender,
                "room_kind": self.room_kind, "thread_root_id": self.thread_root_id,
            }),
        )
    }
}

pub fn room_read(room: Uuid, user: &User, seq: i64) -> Envelope {
    Envelope::new(
        "chat",
        "chat.room.read",
        json!({ "room_id": room, "user_id": user.id, "seq": seq }),
    )
}

pub fn block(kind: &str, blocker: &User, blocked: &User) -> Envelope {
    Envelope::new(
        "users",
        kind,
        json!({ "blocker_id": blocker.id, "blocked_id": blocked.id }),
    )
}

impl App {
    pub async fn start(backend: Backend, test: &str) -> Option<App> {
        Self::start_with(backend, test, |_| {}).await
    }

    /// [`App::start`] with the configuration changed by `tweak` first.
    pub async fn start_with(
        backend: Backend,
        test: &str,
        tweak: impl FnOnce(&mut notifications::Config),
    ) -> Option<App> {
        Self::start_full(backend, test, Vec::new(), tweak).await
    }

    /// [`App::start_with`] against a user service that already has `blocks`.
    pub async fn start_full(
        backend: Backend,
        test: &str,
        blocks: Vec<(Uuid, Uuid)>,
        tweak: impl FnOnce(&mut notifications::Config),
    ) -> Option<App> {
        let db = kit::testing::test_db(backend, test).await?;
        let dir = tempfile::tempdir().unwrap();
        let issuer = TestIssuer::start().await;
        let chat = FakeChat::default();
        *chat.blocks.lock().unwrap() = blocks;
        let chat_url = chat.start().await;
        let common = kit::config::CommonConfig {
            auth_url: issuer.auth_url.clone(),
            users_url: chat_url.clone(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let mut config = notifications::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            chat_url,
            ..Default::default()
        };
        tweak(&mut config);
        let bus = Bus::memory();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let service = notifications::build(&common, &config, bus.clone(), shutdown.clone())
            .await
            .unwrap();
        let running = service.spawn();
        let published = Arc::new(Mutex::new(Vec::new()));
        let sink = published.clone();
        bus.subscribe(
            Subscription::new("test-observer", &["notifications"]),
            bus::handler(move |e: Envelope| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(e);
                    Ok(())
                }
            }),
            shutdown.clone(),
        );
        let handle = kit::db::Db::open(db.url.as_deref(), dir.path(), notifications::NAME)
            .await
            .unwrap();
        Some(App {
            url: running.url(),
            issuer,
            bus,
            http: reqwest::Client::new(),
            chat,
            published,
            db: handle,
            running: Some(running),
            _dir: dir,
            _db: db,
        })
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// The service's data directory (the `.eml` outbox, generated keys).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn user(&self, username: &str) -> User {
        let id = Uuid::now_v7();
        User {
            id,
            username: username.to_owned(),
            token: self.issuer.token(id, username),
        }
    }

    /// Publishes `e` and waits until the service applied it (its `processed_events` row).
    pub async fn apply(&self, e: &Envelope) {
        self.bus.publish(e).await.unwrap();
        self.wait_processed(e).await;
    }

    pub async fn wait_processed(&self, e: &Envelope) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM processed_events WHERE consumer = 'notifications' AND event_id = $1",
            )
            .bind(e.id.to_string())
            .fetch_one(self.db.pool())
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never applied",
                e.kind
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    pub async fn post(&self, user: &User, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, Some(&user.token), path, Some(body))
            .await
    }

    pub async fn put(&self, user: &User, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, Some(&user.token), path, Some(body))
            .await
    }

    /// Every notification of `user`, newest first.
    pub async fn inbox(&self, user: &User) -> Vec<Value> {
        let (s, body) = self.get(user, "/notifications?limit=100").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    pub async fn unread(&self, user: &User) -> i64 {
        let (s, body) = self.get(user, "/notifications/unread-count").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["count"].as_i64().unwrap()
    }

    /// The `unread_count` values published for `user`, in order, once the outbox is
    /// drained (waits until the last one equals `last`).
    pub async fn counts_published(&self, user: &User, last: i64) -> Vec<i64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let counts: Vec<i64> = self
                .published
                .lock()
                .unwrap()
                .iter()
                .filter(|e| {
                    e.kind == "notifications.unread_count"
                        && e.data["user_id"] == user.id.to_string()
                })
                .map(|e| e.data["unread_count"].as_i64().unwrap())
                .collect();
            if counts.last() == Some(&last) {
                // Nothing else is on its way: the relay publishes within a few ms.
                tokio::time::sleep(Duration::from_millis(150)).await;
                let again = self
                    .published
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| {
                        e.kind == "notifications.unread_count"
                            && e.data["user_id"] == user.id.to_string()
                    })
                    .count();
                if again == counts.len() {
                    return counts;
                }
                continue;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "counts of {}: {counts:?}",
                user.username
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn assert_problem(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.cancel();
        }
    }
}
