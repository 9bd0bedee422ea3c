//! Test upstreams (small real axum servers that echo what they received) and a
//! gateway started on a real port in front of them.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

/// Default policies generous enough not to interfere, unless a test changes them.
pub fn config(auth: &[&Upstream], users: &[&Upstream], chat: &[&Upstream]) -> Config {
    let urls = |u: &[&Upstream]| u.iter().map(|x| x.url.clone()).collect::<Vec<_>>();
    let mut cfg = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstreams: Upstreams {
            auth: urls(auth),
            users: urls(users),
            chat: urls(chat),
            other: BTreeMap::new(),
        },
        health_check_interval_ms: 200,
        health_check_timeout_ms: 200,
        eject_base_ms: 500,
        ..Config::default()
    };
    cfg.rate_limits.insert(
        "default".to_owned(),
        RateLimitPolicy {
            rate: 10_000,
            period_ms: 1_000,
            burst: 10_000,
        },
    );
    cfg.rate_limits.insert(
        "strict".to_owned(),
        RateLimitPolicy {
            rate: 10_000,
            period_ms: 1_000,
            burst: 10_000,
        },
    );
    cfg
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

    pub async fn gateway(&self, cfg: &Config) -> kit::server::Running {
        let svc = gateway::build(
            &self.common,
            cfg,
            self.bus.clone(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        svc.spawn()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1).unwrap().parse().unwrap()
}
