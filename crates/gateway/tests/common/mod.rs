//! Test upstreams (small real axum servers that echo what they received), a gateway
//! started on a real port in front of them, and the client-side helpers the tests share
//! (HTTP calls, problem+json checks, polling, revocation, WebSocket connects).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gateway::{Config, RateLimitPolicy, Upstreams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A running test upstream.
pub struct Upstream {
    pub name: String,
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops the server: the port refuses connections afterwards.
    pub async fn kill(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn echo(name: String, hits: Arc<AtomicUsize>, req: Request) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // A "broken" instance passes its health check but fails every request.
    if path.ends_with("/fail") || name.contains("broken") {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: BTreeMap<String, Vec<String>> = parts
        .headers
        .keys()
        .map(|k| {
            (
                k.as_str().to_owned(),
                parts
                    .headers
                    .get_all(k)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .collect(),
            )
        })
        .collect();
    let mut out = json!({
        "instance": name,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
    });
    if path.ends_with("/big") {
        out["padding"] = json!("x".repeat(8 * 1024));
    }
    let mut res = axum::Json(out).into_response();
    res.headers_mut()
        .insert("x-upstream-instance", name.parse().unwrap());
    // A service choosing its own caching.
    if path.ends_with("/cached") {
        res.headers_mut()
            .insert("cache-control", "private, max-age=60".parse().unwrap());
    }
    // A hop-by-hop header the gateway must not pass on.
    res.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    res
}

fn spec(name: &str) -> Value {
    let path = format!("/{name}/things");
    json!({
        "openapi": "3.1.0",
        "info": {"title": name, "version": "1"},
        "paths": { path: {"get": {"tags": [name], "summary": "things", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}}}},
        "components": {"schemas": {"Problem": {"type": "object", "title": "Problem"}}},
        "tags": [{"name": name}],
    })
}

async fn ws_echo(
    name: String,
    ws: WebSocketUpgrade,
    req_headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let info = json!({
        "instance": name,
        "authorization": req_headers.get("authorization").and_then(|v| v.to_str().ok()),
        "query": uri.query(),
        "x_user_id": req_headers.get("x-user-id").and_then(|v| v.to_str().ok()),
    });
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        // Server → client first: what the upstream saw of the handshake.
        if socket
            .send(Message::Text(info.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(format!("echo:{t}").into()),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => return,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    })
}

/// Starts an echo upstream named `name` on a free port.
pub async fn upstream(name: &str) -> Upstream {
    upstream_at(name, "127.0.0.1:0").await
}

/// Starts an echo upstream named `name` on `addr` (e.g. the port of one that was killed).
pub async fn upstream_at(name: &str, addr: &str) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let (n, h) = (name.to_owned(), hits.clone());
    let cluster = name.split('-').next().unwrap_or(name).to_owned();
    let unready = name.contains("unready");
    let app = axum::Router::new()
        .route(
            "/readyz",
            get(move || async move {
                // An "unready" instance serves requests but reports a dependency down.
                if unready {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                } else {
                    "ready".into_response()
                }
            }),
        )
        .route("/metrics", get(|| async { "upstream secret metrics" }))
        .route(
            "/openapi.json",
            get(move || {
                let s = spec(&cluster);
                async move { axum::Json(s) }
            }),
        )
        .route("/chat/ws", {
            let name = name.to_owned();
            get(move |ws, headers, uri| ws_echo(name.clone(), ws, headers, uri))
        })
        .fallback(move |req: Request| echo(n.clone(), h.clone(), req));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    Upstream {
        name: name.to_owned(),
        url: format!("http://{addr}"),
        hits,
        stop,
        task,
    }
}

/// One instance each of auth, users and chat.
pub async fn upstreams() -> (Upstream, Upstream, Upstream) {
    (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    )
}

/// Default policies generous enough not to interfere, unless a test changes them.
pub fn config(auth: &[&Upstream], users: &[&Upstream], chat: &[&Upstream]) -> Config {
    let urls = |u: &[&Upstream]| u.iter().map(|x| x.url.clone()).collect::<Vec<_>>();
    let mut cfg = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        upstreams: Upstreams {
            auth: urls(auth),
            users: urls(users),
            chat: urls(chat),
            // No notifications or files upstream here: their routes are removed below.
            notifications: Vec::new(),
            files: Vec::new(),
            other: BTreeMap::new(),
        },
        health_check_interval_ms: 200,
        health_check_timeout_ms: 200,
        eject_base_ms: 500,
        ..Config::default()
    };
    cfg.routes
        .retain(|r| r.upstream != "notifications" && r.upstream != "files");
    for policy in ["default", "strict"] {
        set_rate_limit(&mut cfg, policy, 10_000, 1_000, 10_000);
    }
    cfg
}

/// Sets (or replaces) the rate-limit policy `name`.
pub fn set_rate_limit(cfg: &mut Config, name: &str, rate: u32, period_ms: u64, burst: u32) {
    cfg.rate_limits.insert(
        name.to_owned(),
        RateLimitPolicy {
            rate,
            period_ms,
            burst,
        },
    );
}

/// Applies `change` to every route with this prefix.
pub fn for_routes(cfg: &mut Config, prefix: &str, change: impl FnMut(&mut gateway::RouteConfig)) {
    cfg.routes
        .iter_mut()
        .filter(|r| r.prefix == prefix)
        .for_each(change);
}

pub struct Env {
    pub issuer: token::testing::TestIssuer,
    pub bus: bus::Bus,
    _dir: tempfile::TempDir,
    pub common: kit::config::CommonConfig,
}

impl Env {
    pub async fn new() -> Self {
        let issuer = token::testing::TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let common = kit::config::CommonConfig {
            data_dir: dir.path().to_owned(),
            auth_url: issuer.auth_url.clone(),
            // The tests connect from 127.0.0.1 like any client: not a trusted proxy.
            trusted_proxies: Vec::new(),
            ..Default::default()
        };
        Self {
            issuer,
            bus: bus::Bus::memory(),
            _dir: dir,
            common,
        }
    }

    pub fn token(&self, user: uuid::Uuid) -> String {
        self.issuer.token(user, "alice")
    }

    /// A token for a fresh user.
    pub fn any_token(&self) -> String {
        self.token(uuid::Uuid::now_v7())
    }

    pub async fn gateway(&self, cfg: &Config) -> Gw {
        start_gateway(&self.common, cfg, self.bus.clone()).await
    }

    /// A gateway in front of one auth, users and chat instance each, with the default
    /// test [`config`] changed by `tweak`.
    pub async fn stack(&self, tweak: impl FnOnce(&mut Config)) -> Stack {
        let (auth, users, chat) = upstreams().await;
        let mut cfg = config(&[&auth], &[&users], &[&chat]);
        tweak(&mut cfg);
        let gw = self.gateway(&cfg).await;
        let api = Api::new(&gw);
        Stack {
            auth,
            users,
            chat,
            gw,
            api,
        }
    }
}

/// What [`Env::stack`] started.
pub struct Stack {
    pub auth: Upstream,
    pub users: Upstream,
    pub chat: Upstream,
    pub gw: Gw,
    pub api: Api,
}

/// A running gateway and its admin listener.
pub struct Gw {
    pub running: kit::server::Running,
    pub admin: SocketAddr,
}

impl std::ops::Deref for Gw {
    type Target = kit::server::Running;
    fn deref(&self) -> &Self::Target {
        &self.running
    }
}

impl Gw {
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Builds and starts a gateway on `bus` (its admin listener on a free port).
pub async fn start_gateway(common: &kit::config::CommonConfig, cfg: &Config, bus: bus::Bus) -> Gw {
    let (service, admin) = gateway::build_with_admin(common, cfg, bus, CancellationToken::new())
        .await
        .unwrap();
    Gw {
        running: service.spawn(),
        admin: admin.expect("the tests' config has an admin listener"),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Sends a request; a transport error fails the test.
pub trait Call {
    fn call(self) -> impl Future<Output = reqwest::Response> + Send;
}

impl Call for reqwest::RequestBuilder {
    async fn call(self) -> reqwest::Response {
        self.send().await.unwrap()
    }
}

/// A client aimed at one running server: paths are relative to its base URL.
pub struct Api {
    pub http: reqwest::Client,
    base: String,
    admin: String,
}

impl Api {
    pub fn new(gw: &Gw) -> Self {
        Self {
            http: client(),
            base: gw.url(),
            admin: gw.admin_url(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.get(path).bearer_auth(token).call().await
    }

    /// POST of a JSON body, without a token.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post(path).json(body).call().await
    }

    /// Status of a GET without a token.
    pub async fn status(&self, path: &str) -> u16 {
        self.get(path).call().await.status().as_u16()
    }

    /// Body of a GET without a token, as JSON.
    pub async fn json(&self, path: &str) -> Value {
        self.get(path).call().await.json().await.unwrap()
    }

    /// The gateway's Prometheus exposition, from its admin listener.
    pub async fn metrics(&self) -> String {
        let res = self
            .http
            .get(format!("{}/metrics", self.admin))
            .call()
            .await;
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }

    /// A GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.admin)).call().await
    }

    /// Polls `path` with `token` until the edge answers 401 `session_revoked`.
    pub async fn until_revoked(&self, path: &str, token: &str, within: Duration, what: &str) {
        eventually(within, || async {
            let res = self.get_as(path, token).await;
            if res.status() == 401 {
                let (_, code) = problem_code(res).await;
                assert_eq!(code, "session_revoked");
                Ok(())
            } else {
                Err(what.to_owned())
            }
        })
        .await;
    }
}

/// Retries `attempt` every 50 ms until it gives `Ok`; fails the test with the last
/// `Err` once `within` has passed.
pub async fn eventually<T, F, Fut>(within: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A token for a session of its own, with the user and session ids.
pub fn session_token(issuer: &token::testing::TestIssuer) -> (String, uuid::Uuid, uuid::Uuid) {
    let (user, sid) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    (issuer.token_for_session(user, "alice", sid), user, sid)
}

/// Publishes `session.revoked` for `sid` (as the auth service does on logout).
pub async fn publish_revoked(bus: &bus::Bus, user: uuid::Uuid, sid: uuid::Uuid) {
    let until = kit::time::now_ms() / 1000 + 900;
    bus.publish(&bus::Envelope::new(
        "auth",
        "session.revoked",
        json!({"session_id": sid, "user_id": user, "until": until}),
    ))
    .await
    .unwrap();
}

/// Asserts a problem+json answer with this status and code.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str) {
    let (got_status, got_code) = problem_code(res).await;
    assert_eq!((got_status, got_code.as_str()), (status, code));
}

pub async fn problem_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(ct, "application/problem+json", "body: {body}");
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

/// Status of a GET sent as raw HTTP/1.1, with the path exactly as given.
pub async fn raw_get_status(addr: SocketAddr, path: &str, token: &str) -> u16 {
    raw_get(addr, path, token).await.0
}

/// Status and whole response (head and body) of a GET sent as raw HTTP/1.1, with the
/// path exactly as given.
pub async fn raw_get(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
pub type WsMessage = tokio_tungstenite::tungstenite::Message;

/// Opens a WebSocket to `url` (a token, if any, in the query).
pub async fn ws_connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Opens a WebSocket to `url` with the token in the Authorization header.
pub async fn ws_connect_bearer(url: &str, token: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The status a refused WebSocket handshake was answered with.
pub async fn ws_refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("handshake to {url} accepted"),
    }
}

/// The next frame (or end of stream), waiting at most 5 s.
pub async fn ws_next(
    ws: &mut Ws,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
}

/// The next text frame, skipping others.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        if let WsMessage::Text(t) = ws_next(ws).await.unwrap().unwrap() {
            return t.to_string();
        }
    }
}

/// The next binary frame, skipping others.
pub async fn next_binary(ws: &mut Ws) -> bytes::Bytes {
    loop {
        if let WsMessage::Binary(b) = ws_next(ws).await.unwrap().unwrap() {
            return b;
        }
    }
}

/// The next text frame, as JSON.
pub async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}
