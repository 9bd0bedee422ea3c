//! A chat service on a real port with fresh state, a real JWKS issuer, an in-process bus,
//! optionally the real user service beside it, and WebSocket clients.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kit::db::Backend;
use serde_json::{Value, json};
use token::testing::TestIssuer;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

pub struct App {
    pub url: String,
    pub issuer: std::sync::Arc<TestIssuer>,
    pub bus: bus::Bus,
    pub http: reqwest::Client,
    running: Option<kit::server::Running>,
    _dir: tempfile::TempDir,
    _db: Option<kit::testing::TestDb>,
    users: Option<UsersApp>,
}

/// Stands in for the user service's internal routes (same routes, same JSON:
/// relationships with `a_exists`/`b_exists`, the paged block list) with users and blocks
/// the test controls; [`App::block`] also publishes the user service's `user.blocked`
/// event on the bus. The real user service behind the real chat service is exercised by
/// the system tests in `crates/intellicolab/tests`.
struct UsersApp {
    url: String,
    state: Arc<FakeUsers>,
    stop: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct FakeUsers {
    blocks: Mutex<HashSet<(Uuid, Uuid)>>,
    /// Ids with a profile (every user made by [`App::user`]).
    known: Mutex<HashSet<Uuid>>,
    /// `GET /internal/blocks` answers 503 while set.
    blocks_down: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub token: String,
}

pub struct Options {
    pub config: chat::Config,
    pub common: kit::config::CommonConfig,
    /// Serve the user service's internal routes and point `users_url` at them.
    pub with_users: bool,
    /// …with its `GET /internal/blocks` answering 503 until [`App::set_blocks_down`].
    pub users_blocks_down: bool,
}

pub async fn start(backend: Backend, test: &str) -> Option<App> {
    start_with(backend, test, |_| {}).await
}

pub async fn start_with(
    backend: Backend,
    test: &str,
    tweak: impl FnOnce(&mut Options),
) -> Option<App> {
    let db = kit::testing::test_db(backend, test).await?;
    let issuer = std::sync::Arc::new(TestIssuer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options {
        config: chat::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            ..Default::default()
        },
        common: kit::config::CommonConfig {
            auth_url: issuer.auth_url.clone(),
            data_dir: dir.path().to_owned(),
            // Nothing listens here: the user service is down unless `with_users`.
            users_url: closed_port_url().await,
            ..Default::default()
        },
        with_users: false,
        users_blocks_down: false,
    };
    tweak(&mut opts);
    let bus = bus::Bus::memory();
    let users = if opts.with_users {
        let users = start_users(opts.users_blocks_down).await;
        opts.common.users_url = users.url.clone();
        Some(users)
    } else {
        None
    };
    Some(App::build(opts.common, opts.config, bus, issuer, dir, Some(db), users).await)
}

impl App {
    async fn build(
        common: kit::config::CommonConfig,
        config: chat::Config,
        bus: bus::Bus,
        issuer: std::sync::Arc<TestIssuer>,
        dir: tempfile::TempDir,
        db: Option<kit::testing::TestDb>,
        users: Option<UsersApp>,
    ) -> App {
        let service = chat::build(&common, &config, bus.clone(), Default::default())
            .await
            .unwrap();
        let running = service.spawn();
        App {
            url: running.url(),
            issuer,
            bus,
            http: reqwest::Client::new(),
            running: Some(running),
            _dir: dir,
            _db: db,
            users,
        }
    }

    /// Another node of the same deployment: same database and Redis, own port and bus.
    pub async fn another_node_with(
        &self,
        tweak: impl FnOnce(&mut chat::Config),
        redis_url: &str,
    ) -> App {
        let database_url = self._db.as_ref().and_then(|d| d.url.clone());
        let dir = tempfile::tempdir().unwrap();
        let common = kit::config::CommonConfig {
            auth_url: self.issuer.auth_url.clone(),
            data_dir: dir.path().to_owned(),
            redis_url: Some(redis_url.to_owned()),
            users_url: closed_port_url().await,
            ..Default::default()
        };
        let mut config = chat::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url,
            ..Default::default()
        };
        tweak(&mut config);
        // The nodes share one event bus, as every process of a deployment shares Redis.
        App::build(
            common,
            config,
            self.bus.clone(),
            self.issuer.clone(),
            dir,
            None,
            None,
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        if let Some(u) = self.users.take() {
            u.stop.cancel();
        }
    }

    pub fn ws_url(&self) -> String {
        format!("{}/chat/ws", self.url.replacen("http", "ws", 1))
    }

    /// A new user with a token from the test issuer (known to the user service).
    pub async fn user(&self, name: &str) -> User {
        let id = Uuid::now_v7();
        if let Some(users) = &self.users {
            users.state.known.lock().unwrap().insert(id);
        }
        User {
            id,
            name: name.to_owned(),
            token: self.issuer.token(id, name),
        }
    }

    /// New users, one per name.
    pub async fn users<const N: usize>(&self, names: [&str; N]) -> [User; N] {
        let mut users = Vec::with_capacity(N);
        for name in names {
            users.push(self.user(name).await);
        }
        users.try_into().unwrap()
    }

    fn fake_users(&self) -> &FakeUsers {
        &self
            .users
            .as_ref()
            .expect("started without the user service")
            .state
    }

    /// `blocker` blocks `blocked`, as the user service does: it answers so from now on
    /// and publishes `user.blocked`.
    pub async fn block(&self, blocker: &User, blocked: &User) {
        self.block_silently(blocker, blocked);
        self.publish_block("user.blocked", blocker, blocked).await;
    }

    /// Lifts the block (`user.unblocked`).
    pub async fn unblock(&self, blocker: &User, blocked: &User) {
        self.fake_users()
            .blocks
            .lock()
            .unwrap()
            .remove(&(blocker.id, blocked.id));
        self.publish_block("user.unblocked", blocker, blocked).await;
    }

    /// A block the user service knows of, whose event chat never got (made before chat
    /// consumed the user service's events).
    pub fn block_silently(&self, blocker: &User, blocked: &User) {
        self.fake_users()
            .blocks
            .lock()
            .unwrap()
            .insert((blocker.id, blocked.id));
    }

    async fn publish_block(&self, kind: &str, blocker: &User, blocked: &User) {
        self.bus
            .publish(&bus::Envelope::new(
                "users",
                kind,
                json!({"blocker_id": blocker.id, "blocked_id": blocked.id}),
            ))
            .await
            .unwrap();
    }

    /// Makes the user service's `GET /internal/blocks` fail (503) or answer again.
    pub fn set_blocks_down(&self, down: bool) {
        self.fake_users()
            .blocks_down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, u: &User) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, Some(&u.token))
            .await
    }
    pub async fn post(&self, path: &str, body: Value, u: &User) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), Some(&u.token))
            .await
    }
    pub async fn patch(&self, path: &str, body: Value, u: &User) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body), Some(&u.token))
            .await
    }
    pub async fn delete(&self, path: &str, u: &User) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None, Some(&u.token))
            .await
    }

    /// Creates a channel owned by `owner` and returns its id.
    pub async fn room(&self, owner: &User, name: &str, visibility: &str) -> String {
        let (s, b) = self
            .post(
                "/chat/rooms",
                json!({"name": name, "visibility": visibility}),
                owner,
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().to_owned()
    }

    pub async fn join(&self, room: &str, u: &User) {
        let (s, b) = self
            .post(&format!("/chat/rooms/{room}/join"), json!({}), u)
            .await;
        assert_eq!(s, 200, "{b}");
    }

    pub async fn send(&self, room: &str, u: &User, body: &str) -> Value {
        let (s, b) = self
            .post(
                &format!("/chat/rooms/{room}/messages"),
                json!({"body": body}),
                u,
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b
    }

    pub async fn connect(&self, u: &User) -> Ws {
        Ws::connect(&self.ws_url(), &u.token).await
    }

    /// Alice and her public room "r" (seq 1: her member.joined).
    pub async fn alice_with_a_room(&self) -> (User, String) {
        let alice = self.user("alice").await;
        let room = self.room(&alice, "r", "public").await;
        (alice, room)
    }

    /// Alice, Bob and Alice's public room "r", which Bob has joined (seq 2).
    pub async fn alice_and_bob_in_a_room(&self) -> (User, User, String) {
        let (alice, room) = self.alice_with_a_room().await;
        let bob = self.user("bob").await;
        self.join(&room, &bob).await;
        (alice, bob, room)
    }

    /// Revokes a session the way the auth service does, on the bus, for 15 minutes.
    pub async fn revoke_session(&self, session_id: Uuid, user_id: Uuid) {
        let until = kit::time::now_ms() / 1000 + 900;
        self.bus
            .publish(&bus::Envelope::new(
                "auth",
                "session.revoked",
                json!({"session_id": session_id, "user_id": user_id, "until": until}),
            ))
            .await
            .unwrap();
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The seqs of one page of a room's event log (`query` without the `?`).
    pub async fn event_seqs(&self, room: &str, query: &str, u: &User) -> Vec<i64> {
        let (s, page) = self
            .get(&format!("/chat/rooms/{room}/events?{query}"), u)
            .await;
        assert_eq!(s, 200, "{page}");
        page_seqs(&page)
    }

    /// POSTs every `(path, body, user)` at once, each from its own task, and returns the
    /// answers in the same order once all have come back.
    pub async fn post_concurrently(
        &self,
        requests: Vec<(String, Value, &User)>,
    ) -> Vec<(u16, Value)> {
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|(path, body, u)| {
                let req = self
                    .http
                    .post(format!("{}{path}", self.url))
                    .bearer_auth(&u.token)
                    .json(&body);
                tokio::spawn(async move { read(req.send().await.unwrap()).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    /// Sends `bodies` to `room` over HTTP one after another in a background task,
    /// `pause` apart; every send must be stored (201).
    pub fn send_in_background(
        &self,
        room: &str,
        u: &User,
        bodies: Vec<String>,
        pause: Option<Duration>,
    ) -> tokio::task::JoinHandle<()> {
        let http = self.http.clone();
        let url = format!("{}/chat/rooms/{room}/messages", self.url);
        let token = u.token.clone();
        tokio::spawn(async move {
            for (i, body) in bodies.into_iter().enumerate() {
                let res = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"body": body}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201, "background send #{i}");
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
        })
    }
}

/// The `seq` of each event (socket frames or event log items).
pub fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

/// The `kind` of each item of a page of the event log.
pub fn page_kinds(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

/// The `seq` of each item of a page.
pub fn page_seqs(page: &Value) -> Vec<i64> {
    seqs(page["items"].as_array().unwrap())
}

/// Starts a service with the given settings; `None` (skipped) without a test database.
/// Sends are practically unlimited, for tests that write a lot quickly.
pub async fn start_unthrottled(backend: Backend, test: &str) -> Option<App> {
    start_with(backend, test, |o| {
        o.config.send_rate_per_sec = 10_000.0;
        o.config.send_burst = 10_000;
    })
    .await
}

/// Starts a service whose per-user send limit is a burst of 20, refilled at 0.5/s (slow
/// enough that the outcome does not depend on how fast this machine sends).
pub async fn start_rate_limited(backend: Backend, test: &str) -> Option<App> {
    start_with(backend, test, |o| {
        o.config.send_rate_per_sec = 0.5;
        o.config.send_burst = 20;
    })
    .await
}

/// Whether `backend` can hold several nodes (SQLite is one file per process); says why
/// the test skips when not.
pub fn nodes_can_share(backend: Backend, test: &str) -> bool {
    if backend == Backend::Sqlite {
        println!("SKIP {test} [sqlite]: nodes share a PostgreSQL database");
        return false;
    }
    true
}

/// Two nodes of one deployment sharing one PostgreSQL database and the Redis at
/// `redis_url`; `None` (skipped) without a test database.
pub async fn start_two_nodes(
    backend: Backend,
    test: &str,
    redis_url: &str,
    tweak_a: impl FnOnce(&mut chat::Config),
    tweak_b: impl FnOnce(&mut chat::Config),
) -> Option<(App, App)> {
    let redis = redis_url.to_owned();
    let a = start_with(backend, test, move |o| {
        o.common.redis_url = Some(redis);
        tweak_a(&mut o.config);
    })
    .await?;
    let b = a.another_node_with(tweak_b, redis_url).await;
    Some((a, b))
}

/// A URL on which nothing listens.
pub async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

async fn start_users(blocks_down: bool) -> UsersApp {
    use axum::extract::{Path, Query, State};
    use std::sync::atomic::Ordering;
    type Fake = Arc<FakeUsers>;
    async fn relationships(
        State(fake): State<Fake>,
        Path((a, b)): Path<(Uuid, Uuid)>,
    ) -> axum::Json<Value> {
        let blocks = fake.blocks.lock().unwrap();
        let known = fake.known.lock().unwrap();
        axum::Json(json!({
            "a_blocks_b": blocks.contains(&(a, b)),
            "b_blocks_a": blocks.contains(&(b, a)),
            "a_follows_b": false,
            "b_follows_a": false,
            "a_exists": known.contains(&a),
            "b_exists": known.contains(&b),
        }))
    }
    /// Pages of 2 edges (whatever the limit), to exercise the caller's paging.
    async fn blocks(
        State(fake): State<Fake>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if fake.blocks_down.load(Ordering::SeqCst) {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
        }
        let mut edges: Vec<(String, String)> = fake
            .blocks
            .lock()
            .unwrap()
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        edges.sort();
        let after = q.get("after").cloned().unwrap_or_default();
        let rest: Vec<_> = edges
            .into_iter()
            .filter(|(a, b)| format!("{a}|{b}") > after)
            .collect();
        let page: Vec<_> = rest.iter().take(2).collect();
        let next = (rest.len() > 2).then(|| format!("{}|{}", page[1].0, page[1].1));
        let items: Vec<Value> = page
            .iter()
            .map(|(a, b)| json!({"blocker_id": a, "blocked_id": b}))
            .collect();
        axum::Json(json!({"items": items, "next_cursor": next})).into_response()
    }
    let state: Fake = Arc::default();
    state.blocks_down.store(blocks_down, Ordering::SeqCst);
    let app = axum::Router::new()
        .route(
            "/internal/relationships/{a}/{b}",
            axum::routing::get(relationships),
        )
        .route("/internal/blocks", axum::routing::get(blocks))
        // Usernames arrive through `user.registered` in these tests (App::register_names).
        .route(
            "/internal/usernames",
            axum::routing::get(|| async { axum::Json(json!({"items": [], "next_cursor": null})) }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    UsersApp { url, state, stop }
}

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

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A real WebSocket client.
pub struct Ws {
    pub stream: Stream,
    /// The `ready` frame: the rooms subscribed and their last seqs.
    pub ready: Value,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16),
    NoFrame,
}

impl Ws {
    pub async fn connect(url: &str, token: &str) -> Ws {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Self::ready(stream).await
    }

    pub async fn ready(stream: Stream) -> Ws {
        let mut ws = Ws {
            stream,
            ready: Value::Null,
        };
        let ready = ws.next_json().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        ws.ready = ready;
        ws
    }

    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(WsMessage::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, m: WsMessage) {
        self.stream.send(m).await.unwrap();
    }

    /// The next JSON frame (pings and pongs skipped), within 10 s.
    pub async fn next_json(&mut self) -> Value {
        self.try_next_json(Duration::from_secs(10))
            .await
            .expect("no frame within 10 s")
    }

    pub async fn try_next_json(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match msg {
                Some(Ok(WsMessage::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of `type` (others skipped).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("the server did not close the connection in time"),
                Ok(Some(Ok(WsMessage::Close(Some(f))))) => return Closed::Code(f.code.into()),
                Ok(Some(Ok(WsMessage::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return Closed::NoFrame;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Sends a message frame.
    pub async fn send_message(&mut self, room: &str, body: &str, client_msg_id: &str) {
        self.send(
            json!({"type": "send", "room_id": room, "body": body, "client_msg_id": client_msg_id}),
        )
        .await;
    }

    /// The next `error` frame (others skipped) has this `client_msg_id` and `code`.
    pub async fn expect_error(&mut self, client_msg_id: Option<&str>, code: &str) {
        let e = self.next_of("error").await;
        assert_eq!(
            (e["client_msg_id"].as_str(), e["code"].as_str()),
            (client_msg_id, Some(code)),
            "{e}"
        );
    }

    /// Sends a `ping` frame and expects the `pong`.
    pub async fn ping_pong(&mut self) {
        self.send(json!({"type": "ping"})).await;
        assert_eq!(self.next_json().await, json!({"type": "pong"}));
    }

    /// Asserts nothing but pings arrive for `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(v) = self.try_next_json(wait).await {
            panic!("unexpected frame {v}");
        }
    }
}

/// The `event` frames' (seq, kind) of a room, read until `until_seq` arrives.
pub async fn events_until(ws: &mut Ws, room: &str, until_seq: i64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = ws.next_json().await;
        if v["type"] != "event" || v["room_id"] != room {
            continue;
        }
        let seq = v["seq"].as_i64().unwrap();
        out.push(v);
        if seq >= until_seq {
            return out;
        }
    }
}

/// A TCP proxy in front of the database that can turn into a black hole: existing
/// connections end, and new ones are accepted but never answered — a database host that
/// stopped answering (no reset), where every connect waits for the pool's acquire
/// timeout. (`kit::testing::FaultProxy` resets connections instead: connects fail at once.)
pub struct BlackHoleProxy {
    pub addr: std::net::SocketAddr,
    holding: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<tokio_util::sync::CancellationToken>>,
}

impl BlackHoleProxy {
    pub async fn start(target: String) -> BlackHoleProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holding = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(tokio_util::sync::CancellationToken::new()));
        let (h, c) = (holding.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let cancel = c.lock().unwrap().clone();
                if h.load(Ordering::SeqCst) {
                    // Keep it open, say nothing.
                    tokio::spawn(async move {
                        cancel.cancelled().await;
                        drop(client);
                    });
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
        });
        BlackHoleProxy {
            addr,
            holding,
            conns,
        }
    }

    fn end_connections(&self) {
        let mut conns = self.conns.lock().unwrap();
        conns.cancel();
        *conns = tokio_util::sync::CancellationToken::new();
    }

    /// Ends the open connections; new ones hang.
    pub fn black_hole(&self) {
        self.holding
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.end_connections();
    }

    /// Forwards again (the hanging connections end).
    pub fn restore(&self) {
        self.holding
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.end_connections();
    }
}

// ---- v1.1: usernames for mentions, and the chat service's bus events ------------------

impl App {
    /// Publishes auth's `user.registered` for each user (chat copies the usernames that
    /// `@username` mentions resolve against) and waits until chat has copied them.
    pub async fn register_names(&self, users: &[&User]) {
        for u in users {
            self.bus
                .publish(&bus::Envelope::new(
                    "auth",
                    "user.registered",
                    json!({"user_id": u.id, "username": u.name, "email": format!("{}@example.com", u.name),
                           "display_name": u.name, "created_at": "2026-01-01T00:00:00Z"}),
                ))
                .await
                .unwrap();
        }
        let db = self.open_db().await;
        let ids: Vec<String> = users.iter().map(|u| u.id.to_string()).collect();
        for _ in 0..200 {
            let mut known = 0;
            for id in &ids {
                let n: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM usernames WHERE user_id = $1")
                        .bind(id)
                        .fetch_one(db.pool())
                        .await
                        .unwrap();
                known += n;
            }
            if known == ids.len() as i64 {
                db.close().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("chat did not copy the usernames from user.registered");
    }

    /// A second handle on the service's database (to look at what it stored).
    pub async fn open_db(&self) -> kit::db::Db {
        let url = self._db.as_ref().and_then(|d| d.url.clone());
        kit::db::Db::open(url.as_deref(), self._dir.path(), "chat")
            .await
            .unwrap()
    }

    /// Collects the chat service's bus events from now on.
    pub fn observe_events(&self) -> EventLog {
        let seen: Arc<Mutex<Vec<bus::Envelope>>> = Arc::default();
        let sink = seen.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        self.bus.subscribe(
            bus::Subscription::new(&format!("test-observer-{}", Uuid::now_v7()), &["chat"]),
            bus::handler(move |e: bus::Envelope| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(e);
                    Ok(())
                }
            }),
            stop.clone(),
        );
        EventLog { seen, stop }
    }
}

pub struct EventLog {
    seen: Arc<Mutex<Vec<bus::Envelope>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl EventLog {
    /// The first event of `kind` whose `data.message_id` is `message_id` (waits ≤ 5 s).
    pub async fn of(&self, kind: &str, message_id: &str) -> bus::Envelope {
        for _ in 0..200 {
            if let Some(e) = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.kind == kind && e.data["message_id"] == message_id)
            {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {kind} event for message {message_id}");
    }
}

impl EventLog {
    /// Every event of `kind` seen so far.
    pub fn all(&self, kind: &str) -> Vec<bus::Envelope> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
