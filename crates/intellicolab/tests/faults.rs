//! The fault suite of issue 14, through the real binary: five processes (`serve auth`,
//! `serve users`, two `serve chat`, `serve gateway`) over PostgreSQL (one fresh database
//! per service, behind a `kit::testing::FaultProxy`) and a private `redis-server`, with
//! clients that only talk to the gateway, as the public API's clients do.
//!
//! Each scenario runs the same load through one fault — kill -9 of a chat node, Redis
//! stopped 10 s, PostgreSQL unreachable 15 s, kill -9 of the users service — and asserts:
//! - every acknowledged send is stored exactly once, as acknowledged (a client that gets
//!   a 5xx or a lost connection sends again with the same `client_msg_id`, the documented
//!   client rule), and each room's seqs have no hole;
//! - every WebSocket reader (which resumes from its last seq after each reconnect) receives
//!   each room's events gap-free and in order;
//! - no domain event is lost: every account registered during the fault gets a profile,
//!   every follow made during it is applied once;
//! - clients see only 2xx, 4xx and 503 — never 500, 502 or 504, and never a hang — and
//!   every 503 carries `Retry-After`;
//! - after the fault ends, requests succeed again within [`RECOVERY`] without any process
//!   being restarted.
//!
//! Plus the multi-process revocation test: after `POST /auth/logout` the access token is
//! refused everywhere within 1 s, and still after a restart of the users service.
//!
//! Needs `TEST_DATABASE_URL` and `TEST_REDIS_URL` (and a `redis-server` binary); skips
//! with a printed reason otherwise. The scenarios run one at a time (they measure
//! timings on a small machine).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::cluster::{Cluster, Role};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One scenario at a time: five processes each, and timing assertions, on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests must succeed again this long after a fault ended (the gateway's health check
/// runs every 2 s and ejections back off from 1 s; database pools reconnect on demand).
const RECOVERY: Duration = Duration::from_secs(10);
/// A client gives up on one request after this long and counts it as a hang: the gateway
/// must answer 503 quickly rather than wait for its 30 s route timeout (504).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Any answer slower than this is a violation: while a dependency is down the services
/// must fail fast (503), not make clients wait for a timeout (the drill saw sends hang up
/// to the gateway's 30 s). 5 s leaves room for the 3 s pool acquire of a first request
/// that finds the database gone.
const SLOW: Duration = Duration::from_secs(5);
/// Readers drop their connection this often and resume 200 ms later, so that every
/// scenario resumes under live traffic (issue 14, item 10).
const READER_RECONNECT: Duration = Duration::from_millis(1500);
/// Traffic before the fault and after recovery.
const WARMUP: Duration = Duration::from_secs(2);
const COOLDOWN: Duration = Duration::from_secs(2);
/// Pause between two sends of one sender (4 senders: ≤ ~150 sends/s in all).
const PACE: Duration = Duration::from_millis(25);
/// Accounts that follow the star during the fault.
const FANS: usize = 4;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------------------------------
// What clients saw

/// Everything the clients observed that breaks the contract, and what they saw in all.
struct Observed {
    /// When the scenario started: violations carry their time, to find them in the logs.
    started: Instant,
    violations: Mutex<Vec<String>>,
    /// `"<status>"` or `"ws:<code>"` → count, printed at the end.
    seen: Mutex<BTreeMap<String, usize>>,
    /// The slowest answer (HTTP or WebSocket ack/error).
    slowest: Mutex<Duration>,
}

impl Observed {
    fn new() -> Observed {
        Observed {
            started: Instant::now(),
            violations: Mutex::default(),
            seen: Mutex::default(),
            slowest: Mutex::default(),
        }
    }

    fn violation(&self, what: String) {
        let at = self.started.elapsed().as_secs_f64();
        let wall = kit::time::rfc3339(kit::time::now_ms());
        let mut v = self.violations.lock().unwrap();
        // The first ones say what broke; thousands of repeats would bury them.
        if v.len() < 200 {
            v.push(format!("[{wall}, {at:.2} s in] {what}"));
        }
    }

    fn count(&self, key: String) {
        *self.seen.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Checks one HTTP answer: only 2xx/4xx/503, and 503 with `Retry-After`.
    fn status(&self, what: &str, status: u16, retry_after: bool, body: &Value) {
        self.count(status.to_string());
        if status >= 500 && status != 503 {
            self.violation(format!("{what}: {status} {body}"));
        }
        if status == 503 && !retry_after {
            self.violation(format!("{what}: 503 without Retry-After {body}"));
        }
    }

    /// Checks how long one answer took.
    fn took(&self, what: &str, took: Duration) {
        let mut slowest = self.slowest.lock().unwrap();
        *slowest = (*slowest).max(took);
        drop(slowest);
        if took > SLOW {
            self.violation(format!("{what}: answered after {took:?}"));
        }
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
}

/// An HTTP client of the gateway that records every answer in `Observed`.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
    obs: Arc<Observed>,
}

/// `Err(())`: no HTTP answer at all (already recorded as a violation: the gateway never
/// goes down in these tests, so a client must always get an answer).
type Answer = Result<(u16, Value, Option<Duration>), ()>;

impl Api {
    fn new(base: &str, obs: Arc<Observed>) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            obs,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let what = format!("{method} {}", route_of(path));
        let started = Instant::now();
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.obs.count("no answer".into());
                self.obs
                    .violation(format!("{what}: no answer from the gateway: {e}"));
                return Err(());
            }
        };
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match res.text().await {
            Ok(t) => t,
            Err(e) => {
                self.obs
                    .violation(format!("{what}: {status}, body cut off: {e}"));
                return Err(());
            }
        };
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.obs.status(&what, status, retry_after.is_some(), &body);
        self.obs.took(&what, started.elapsed());
        Ok((status, body, retry_after))
    }
}

/// `/chat/rooms/<uuid>/messages` → `/chat/rooms/{id}/messages`, so failures group by route.
fn route_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|seg| {
            if uuid::Uuid::parse_str(seg).is_ok() {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// How long to wait before retrying after `status`: `Retry-After` (capped, so the test
/// stays fast), else a short pause.
fn backoff(retry_after: Option<Duration>) -> Duration {
    retry_after
        .map(|d| d.min(Duration::from_millis(500)))
        .unwrap_or(Duration::from_millis(100))
        .max(Duration::from_millis(50))
}

async fn ws_connect(obs: &Observed, url: &str, token: &str) -> Option<Ws> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let started = Instant::now();
    let connected =
        tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(req)).await;
    obs.took("GET /chat/ws (upgrade)", started.elapsed());
    match connected {
        Ok(Ok((ws, _))) => Some(ws),
        Ok(Err(tungstenite::Error::Http(res))) => {
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            let body = res
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            obs.status(
                "GET /chat/ws (upgrade)",
                status,
                retry_after,
                &Value::String(body),
            );
            None
        }
        Ok(Err(e)) => {
            obs.violation(format!("GET /chat/ws: no answer from the gateway: {e}"));
            None
        }
        Err(_) => {
            obs.violation(format!(
                "GET /chat/ws: no answer within {REQUEST_TIMEOUT:?}"
            ));
            None
        }
    }
}

/// The next text frame as JSON; `None` when the connection ended or stayed silent `wait`.
/// `Some(Value::Null)` on a timeout is distinguished by `Err`.
/// A close frame is counted by its code; 1011 (internal error) is the WebSocket twin of a
/// 500 and a violation (a node that cannot reach its database closes with 1013, try
/// again later).
async fn next_frame(obs: &Observed, ws: &mut Ws, wait: Duration) -> Result<Option<Value>, ()> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return Err(()),
            Ok(None | Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                return Ok(Some(serde_json::from_str(&t).unwrap()));
            }
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                obs.count(format!("ws:close {code:?}"));
                if code == Some(1011) {
                    obs.violation(format!("WebSocket closed with 1011: {frame:?}"));
                }
                return Ok(None);
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Accounts

#[derive(Clone, Debug)]
struct Account {
    id: String,
    username: String,
    access: String,
}

fn password_of(username: &str) -> String {
    format!("Pw-{username}-long-enough-1")
}

/// Registers `username` through the gateway, retrying 5xx and lost answers with the same
/// data until `deadline`. A 409 after a failed try means an earlier try did register (its
/// answer was lost): the account is then logged in. `None`: not registered by the deadline.
async fn register(api: &Api, username: &str, deadline: Instant) -> Option<Account> {
    let mut tried = false;
    while Instant::now() < deadline {
        let body = json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": password_of(username),
        });
        match api.call("POST", "/auth/register", None, Some(body)).await {
            Ok((201, b, _)) => {
                return Some(Account {
                    id: b["user"]["id"].as_str().unwrap().to_owned(),
                    username: username.to_owned(),
                    access: b["access_token"].as_str().unwrap().to_owned(),
                });
            }
            Ok((409, _, _)) if tried => return login(api, username, deadline).await,
            // A 5xx other than 503 is already a violation; the client retries it anyway.
            Ok((s, _, ra)) if s >= 500 || s == 429 => {
                tried = true;
                tokio::time::sleep(backoff(ra)).await;
            }
            Ok((s, b, _)) => {
                api.obs
                    .violation(format!("POST /auth/register {username}: {s} {b}"));
                return None;
            }
            Err(()) => {
                tried = true;
                tokio::time::sleep(backoff(None)).await;
            }
        }
    }
    api.obs.violation(format!(
        "register {username}: not done when the fault had long ended"
    ));
    None
}

async fn login(api: &Api, username: &str, deadline: Instant) -> Option<Account> {
    while Instant::now() < deadline {
        let body = json!({"login": username, "password": password_of(username)});
        match api.call("POST", "/auth/login", None, Some(body)).await {
            Ok((200, b, _)) => {
                return Some(Account {
                    id: b["user"]["id"].as_str().unwrap().to_owned(),
                    username: username.to_owned(),
                    access: b["access_token"].as_str().unwrap().to_owned(),
                });
            }
            Ok((s, _, ra)) if s >= 500 || s == 429 => tokio::time::sleep(backoff(ra)).await,
            Ok((s, b, _)) => {
                api.obs
                    .violation(format!("POST /auth/login {username}: {s} {b}"));
                return None;
            }
            Err(()) => tokio::time::sleep(backoff(None)).await,
        }
    }
    None
}

/// A call that must answer `want` once the fault is over: a 503 is retried for up to
/// [`RECOVERY`]; anything else is a violation (and `Null` is returned, so that the other
/// checks still run and report).
async fn settled(
    api: &Api,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    want: u16,
) -> Value {
    let started = Instant::now();
    loop {
        let answer = api.call(method, path, Some(token), body.clone()).await;
        match answer {
            Ok((s, b, _)) if s == want => return b,
            Ok((503, _, ra)) if started.elapsed() < RECOVERY => {
                tokio::time::sleep(backoff(ra)).await;
            }
            Err(()) if started.elapsed() < RECOVERY => {
                tokio::time::sleep(backoff(None)).await;
            }
            other => {
                api.obs.violation(format!(
                    "{method} {path} after the fault: {other:?}, want {want}"
                ));
                return Value::Null;
            }
        }
    }
}

/// A call that must succeed with `want` before the fault starts (setup).
async fn must(
    api: &Api,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    want: u16,
) -> Value {
    let (s, b, _) = api.call(method, path, Some(token), body).await.unwrap();
    assert_eq!(s, want, "{method} {path}: {b}");
    b
}

// ---------------------------------------------------------------------------------------
// Load: senders, readers, registrations, follows

/// Shared state of one scenario's load.
struct Load {
    api: Api,
    ws_url: String,
    /// Set when the senders should finish the message in hand and stop.
    stop: AtomicBool,
    /// Per room, the last seq the readers must reach; set once the senders are done.
    targets: Mutex<Option<HashMap<String, i64>>>,
    /// Every acknowledgement: `client_msg_id` → the acknowledged message.
    acked: Mutex<HashMap<String, Value>>,
    /// Sends that had to be repeated (5xx, error frame, lost connection).
    retries: AtomicUsize,
    /// A deadline no retry loop runs past.
    give_up: Instant,
}

impl Load {
    fn obs(&self) -> &Observed {
        &self.api.obs
    }

    /// Records an acknowledgement; the same `client_msg_id` must always be the same message.
    fn ack(&self, cmid: &str, message: Value) {
        if message["client_msg_id"] != cmid {
            self.obs()
                .violation(format!("ack of {cmid} carries another message: {message}"));
        }
        let mut acked = self.acked.lock().unwrap();
        if let Some(before) = acked.get(cmid)
            && before["id"] != message["id"]
        {
            self.obs().violation(format!(
                "{cmid} acknowledged as two messages: {} and {}",
                before["id"], message["id"]
            ));
        }
        acked.insert(cmid.to_owned(), message);
    }
}

/// Sends over HTTP until told to stop, each message until acknowledged (same
/// `client_msg_id` on every try).
async fn http_sender(load: Arc<Load>, name: String, token: String, room: String) {
    let mut i = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let cmid = format!("{name}-{i}");
        i += 1;
        let path = format!("/chat/rooms/{room}/messages");
        let body = json!({"body": format!("message {cmid}"), "client_msg_id": cmid});
        loop {
            if Instant::now() > load.give_up {
                load.obs().violation(format!("{cmid}: never acknowledged"));
                return;
            }
            match load
                .api
                .call("POST", &path, Some(&token), Some(body.clone()))
                .await
            {
                Ok((200 | 201, m, _)) => {
                    load.ack(&cmid, m);
                    break;
                }
                // A 5xx other than 503 is already a violation; the client rule still
                // says: send it again with the same client_msg_id.
                Ok((s, _, ra)) if s >= 500 || s == 429 => {
                    load.retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(backoff(ra)).await;
                }
                Ok((s, b, _)) => {
                    load.obs().violation(format!("send {cmid}: {s} {b}"));
                    break;
                }
                Err(()) => {
                    load.retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(backoff(None)).await;
                }
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Sends over a WebSocket through the gateway; reconnects when the connection breaks and
/// sends the unacknowledged message again.
async fn ws_sender(load: Arc<Load>, name: String, token: String, room: String) {
    let mut ws: Option<Ws> = None;
    let mut i = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let cmid = format!("{name}-{i}");
        i += 1;
        let frame = json!({
            "type": "send", "room_id": room, "body": format!("message {cmid}"),
            "client_msg_id": cmid,
        })
        .to_string();
        loop {
            if Instant::now() > load.give_up {
                load.obs().violation(format!("{cmid}: never acknowledged"));
                return;
            }
            if ws.is_none() {
                ws = ws_connect(load.obs(), &load.ws_url, &token).await;
            }
            let Some(conn) = ws.as_mut() else {
                load.retries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(backoff(None)).await;
                continue;
            };
            let mut answer = None;
            let started = Instant::now();
            if conn
                .send(WsMessage::Text(frame.clone().into()))
                .await
                .is_ok()
            {
                loop {
                    match next_frame(load.obs(), conn, REQUEST_TIMEOUT).await {
                        Ok(Some(v))
                            if v["client_msg_id"] == cmid.as_str()
                                && (v["type"] == "ack" || v["type"] == "error") =>
                        {
                            answer = Some(v);
                            break;
                        }
                        Ok(Some(_other)) => continue,
                        Ok(None) => break,
                        Err(()) => {
                            load.obs().violation(format!(
                                "ws send {cmid}: no answer within {REQUEST_TIMEOUT:?}"
                            ));
                            break;
                        }
                    }
                }
            }
            if answer.is_some() {
                load.obs().took("ws send", started.elapsed());
            }
            match answer {
                Some(v) if v["type"] == "ack" => {
                    load.ack(&cmid, v["message"].clone());
                    break;
                }
                Some(v) => {
                    let code = v["code"].as_str().unwrap_or_default().to_owned();
                    load.obs().count(format!("ws:{code}"));
                    // The WebSocket twin of a 500: the client cannot tell what happened.
                    if code == "internal" {
                        load.obs().violation(format!("ws send {cmid}: {v}"));
                    }
                    load.retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(backoff(None)).await;
                }
                None => {
                    load.obs().count("ws:connection lost".into());
                    load.retries.fetch_add(1, Ordering::SeqCst);
                    ws = None;
                    tokio::time::sleep(backoff(None)).await;
                }
            }
        }
        tokio::time::sleep(PACE).await;
    }
    if let Some(mut conn) = ws {
        let _ = conn.close(None).await;
    }
}

/// One room's stream as a reader received it.
#[derive(Default, Debug)]
struct Stream {
    last: i64,
    duplicates: usize,
}

/// Reads every room's events over a WebSocket through the gateway. On each (re)connect it
/// sends `resume` with its last seq per room right after `ready`; from then on each room's
/// events must come gap-free and in order (a seq already seen is a harmless redelivery).
/// Ends when every room reached its target (or at the deadline).
async fn reader(
    load: Arc<Load>,
    name: String,
    token: String,
    rooms: Vec<String>,
) -> HashMap<String, Stream> {
    let mut streams: HashMap<String, Stream> = rooms
        .iter()
        .map(|r| (r.clone(), Stream::default()))
        .collect();
    let mut reconnects = 0usize;
    let done = |streams: &HashMap<String, Stream>| {
        load.targets.lock().unwrap().as_ref().is_some_and(|t| {
            t.iter()
                .all(|(room, last)| streams.get(room).is_some_and(|s| s.last >= *last))
        })
    };
    'connect: while Instant::now() < load.give_up && !done(&streams) {
        let Some(mut ws) = ws_connect(load.obs(), &load.ws_url, &token).await else {
            tokio::time::sleep(backoff(None)).await;
            continue;
        };
        reconnects += 1;
        match next_frame(load.obs(), &mut ws, REQUEST_TIMEOUT).await {
            Ok(Some(v)) if v["type"] == "ready" => {}
            Ok(None) => {
                // Closed before `ready` (e.g. 1013 while the database is unreachable).
                tokio::time::sleep(backoff(None)).await;
                continue;
            }
            other => {
                load.obs()
                    .violation(format!("{name}: first frame is not ready: {other:?}"));
                tokio::time::sleep(backoff(None)).await;
                continue;
            }
        }
        let resume: serde_json::Map<String, Value> = streams
            .iter()
            .map(|(room, s)| (room.clone(), Value::from(s.last)))
            .collect();
        let frame = json!({"type": "resume", "rooms": resume}).to_string();
        if ws.send(WsMessage::Text(frame.into())).await.is_err() {
            continue;
        }
        let connected = Instant::now();
        loop {
            if done(&streams) || Instant::now() > load.give_up {
                break 'connect;
            }
            if connected.elapsed() > READER_RECONNECT && !load.stop.load(Ordering::SeqCst) {
                // Leave, miss some events, come back and resume while senders go on.
                let _ = ws.close(None).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'connect;
            }
            let v = match next_frame(load.obs(), &mut ws, Duration::from_millis(500)).await {
                Err(()) => continue,
                Ok(None) => {
                    load.obs().count("ws:reader reconnect".into());
                    tokio::time::sleep(backoff(None)).await;
                    continue 'connect;
                }
                Ok(Some(v)) => v,
            };
            if v["type"] == "error" {
                load.obs()
                    .count(format!("ws:{}", v["code"].as_str().unwrap_or_default()));
                if v["code"] == "internal" {
                    load.obs().violation(format!("{name}: {v}"));
                }
                continue;
            }
            if v["type"] != "event" {
                continue;
            }
            let room = v["room_id"].as_str().unwrap_or_default();
            let seq = v["seq"].as_i64().unwrap_or_default();
            let Some(s) = streams.get_mut(room) else {
                continue;
            };
            if v["event"]["seq"] != seq {
                load.obs().violation(format!(
                    "{name}: frame seq {seq} != event seq {}",
                    v["event"]
                ));
            }
            if seq <= s.last {
                s.duplicates += 1;
            } else if seq == s.last + 1 {
                s.last = seq;
            } else {
                load.obs().violation(format!(
                    "{name}: room {room}: seq {seq} arrived after {} (connection {reconnects}): \
                     out of order or skipped",
                    s.last
                ));
                // Go on from here so one hole is reported once, not for every later event.
                s.last = seq;
            }
        }
    }
    if !done(&streams) {
        load.obs().violation(format!(
            "{name}: streams did not reach the rooms' last seqs: {streams:?} vs {:?}",
            load.targets.lock().unwrap()
        ));
    }
    println!("{name}: {reconnects} connection(s), {streams:?}");
    streams
}

/// Registers `count` accounts during the fault, one every `every`; returns the accounts
/// (each must get a profile from the `user.registered` event).
async fn registrar(load: Arc<Load>, prefix: String, count: usize, every: Duration) -> Vec<Account> {
    let mut out = Vec::new();
    for k in 0..count {
        let started = Instant::now();
        if let Some(a) = register(&load.api, &format!("{prefix}{k}"), load.give_up).await {
            out.push(a);
        }
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    out
}

/// `fan` follows `star`, retrying until 204.
async fn follow(load: Arc<Load>, fan: Account, star: String) -> bool {
    let path = format!("/users/me/following/{star}");
    while Instant::now() < load.give_up {
        match load.api.call("PUT", &path, Some(&fan.access), None).await {
            Ok((204, _, _)) => return true,
            Ok((s, _, ra)) if s >= 500 || s == 429 => tokio::time::sleep(backoff(ra)).await,
            Ok((s, b, _)) => {
                load.obs()
                    .violation(format!("follow by {}: {s} {b}", fan.username));
                return false;
            }
            Err(()) => tokio::time::sleep(backoff(None)).await,
        }
    }
    load.obs()
        .violation(format!("follow by {}: not done in time", fan.username));
    false
}

// ---------------------------------------------------------------------------------------
// One scenario

/// What a scenario does to the cluster.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillChatNode,
    StopRedis,
    StopPostgres,
    KillUsers,
}

async fn run(test: &str, fault: Fault) {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start(test).await else {
        return;
    };
    let t0 = Instant::now();
    let obs = Arc::new(Observed::new());
    let api = Api::new(&cluster.gateway_url(), obs.clone());
    let setup_deadline = Instant::now() + Duration::from_secs(30);

    // Accounts and rooms, before the fault.
    let owner = register(&api, "owner", setup_deadline).await.unwrap();
    let star = register(&api, "star", setup_deadline).await.unwrap();
    let mut senders = Vec::new();
    for s in 0..4 {
        senders.push(
            register(&api, &format!("sender{s}"), setup_deadline)
                .await
                .unwrap(),
        );
    }
    let mut readers = Vec::new();
    for r in 0..2 {
        readers.push(
            register(&api, &format!("reader{r}"), setup_deadline)
                .await
                .unwrap(),
        );
    }
    let mut fans = Vec::new();
    for f in 0..FANS {
        fans.push(
            register(&api, &format!("fan{f}"), setup_deadline)
                .await
                .unwrap(),
        );
    }
    let mut rooms = Vec::new();
    for r in 0..2 {
        let room = must(
            &api,
            "POST",
            "/chat/rooms",
            &owner.access,
            Some(json!({"name": format!("faults-{r}"), "visibility": "public"})),
            201,
        )
        .await;
        let room = room["id"].as_str().unwrap().to_owned();
        for who in senders.iter().chain(&readers) {
            must(
                &api,
                "POST",
                &format!("/chat/rooms/{room}/join"),
                &who.access,
                None,
                200,
            )
            .await;
        }
        rooms.push(room);
    }
    println!(
        "{test}: cluster and accounts ready after {:?}",
        t0.elapsed()
    );

    let load = Arc::new(Load {
        api: api.clone(),
        ws_url: cluster.gateway_ws(),
        stop: AtomicBool::new(false),
        targets: Mutex::new(None),
        acked: Mutex::new(HashMap::new()),
        retries: AtomicUsize::new(0),
        // Each scenario's load runs < 35 s; a loop still retrying at 60 s never ends.
        give_up: Instant::now() + Duration::from_secs(60),
    });
    let mut reader_tasks = Vec::new();
    for (r, who) in readers.iter().enumerate() {
        reader_tasks.push(tokio::spawn(reader(
            load.clone(),
            format!("reader{r}"),
            who.access.clone(),
            rooms.clone(),
        )));
    }
    let mut sender_tasks = Vec::new();
    for (s, who) in senders.iter().enumerate() {
        let (name, token, room) = (format!("s{s}"), who.access.clone(), rooms[s % 2].clone());
        sender_tasks.push(if s < 2 {
            tokio::spawn(ws_sender(load.clone(), name, token, room))
        } else {
            tokio::spawn(http_sender(load.clone(), name, token, room))
        });
    }

    tokio::time::sleep(WARMUP).await;
    let before_fault = load.acked.lock().unwrap().len();
    assert!(before_fault > 0, "traffic flows before the fault");

    // Domain events during the fault: registrations (auth → users) and follows.
    let registrations = tokio::spawn(registrar(
        load.clone(),
        "newbie".into(),
        8,
        Duration::from_millis(700),
    ));
    let follows: Vec<_> = fans
        .iter()
        .map(|f| tokio::spawn(follow(load.clone(), f.clone(), star.id.clone())))
        .collect();

    let fault_started = Instant::now();
    match fault {
        Fault::KillChatNode => {
            // Each node in turn dies with sockets and sends in flight (so every
            // WebSocket is hit, wherever the gateway put it); the gateway must move the
            // traffic to the other node. The dead one comes back 2 s later, as an
            // orchestrator restarts it, and gets 3 s (the gateway checks health every
            // 2 s) to be taken back before the other one dies.
            for node in [0, 1] {
                let retries = load.retries.load(Ordering::SeqCst);
                let watched = open_watched(&load, &senders[0]).await;
                let watched = stuff(watched).await;
                cluster.proc_mut(Role::Chat(node)).kill9();
                let watch = tokio::spawn(closed_in_time(load.clone(), watched, node));
                tokio::time::sleep(Duration::from_millis(300)).await;
                // With one node gone, the other serves: no restart needed for that.
                let when = format!("after killing node {node}");
                recovery(&load, &senders[2], &rooms[0], &when).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.start_role(Role::Chat(node));
                support::wait_ready(&format!("{}/readyz", cluster.chat_url(node))).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                println!(
                    "node {node} killed: {} sends repeated",
                    load.retries.load(Ordering::SeqCst) - retries
                );
                watch.await.unwrap();
            }
        }
        Fault::StopRedis => {
            cluster.redis.kill();
            tokio::time::sleep(Duration::from_secs(10)).await;
            cluster.redis.restart();
        }
        Fault::StopPostgres => {
            cluster.pg.cut();
            tokio::time::sleep(Duration::from_secs(15)).await;
            cluster.pg.restore();
        }
        Fault::KillUsers => {
            cluster.proc_mut(Role::Users).kill9();
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.start_role(Role::Users);
        }
    }
    let during = load.acked.lock().unwrap().len() - before_fault;
    println!(
        "{test}: fault {fault:?} over after {:?}; {during} sends acknowledged meanwhile",
        fault_started.elapsed()
    );
    // Nothing is restarted from here on: the system must heal by itself.
    recovery(&load, &senders[2], &rooms[0], "after the fault").await;
    tokio::time::sleep(COOLDOWN).await;

    // Stop the load; everything started must finish.
    load.stop.store(true, Ordering::SeqCst);
    for t in sender_tasks {
        t.await.unwrap();
    }
    let newbies = registrations.await.unwrap();
    for f in follows {
        f.await.unwrap();
    }
    let mut targets = HashMap::new();
    for room in &rooms {
        let r = settled(
            &api,
            "GET",
            &format!("/chat/rooms/{room}"),
            &owner.access,
            None,
            200,
        )
        .await;
        if let Some(seq) = r["last_seq"].as_i64() {
            targets.insert(room.clone(), seq);
        }
    }
    *load.targets.lock().unwrap() = Some(targets.clone());
    for t in reader_tasks {
        t.await.unwrap();
    }

    // 0 acknowledged sends lost, 0 duplicates, no hole in any room's seqs.
    let acked = load.acked.lock().unwrap().clone();
    let mut stored = HashMap::new();
    for room in &rooms {
        let mut after = 0;
        let mut seqs = Vec::new();
        loop {
            let page = settled(
                &api,
                "GET",
                &format!("/chat/rooms/{room}/events?after={after}&limit=100"),
                &owner.access,
                None,
                200,
            )
            .await;
            for e in page["items"].as_array().into_iter().flatten() {
                after = e["seq"].as_i64().unwrap();
                seqs.push(after);
                if e["kind"] == "message.created" {
                    let cmid = e["message"]["client_msg_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if stored.insert(cmid.clone(), e["message"].clone()).is_some() {
                        obs.violation(format!("{cmid} stored twice"));
                    }
                }
            }
            if page["has_more"] != true {
                break;
            }
        }
        if seqs != (1..=seqs.len() as i64).collect::<Vec<_>>() {
            obs.violation(format!("room {room}: the event log has holes"));
        }
        if seqs.last() != targets.get(room) {
            obs.violation(format!(
                "room {room}: last_seq {:?} but log ends at {:?}",
                targets.get(room),
                seqs.last()
            ));
        }
    }
    for (cmid, m) in &acked {
        match stored.get(cmid) {
            None => obs.violation(format!("{cmid} acknowledged but not stored")),
            Some(s) if s["id"] != m["id"] || s["seq"] != m["seq"] => {
                obs.violation(format!("{cmid} acknowledged as {m} but stored as {s}"))
            }
            Some(_) => {}
        }
    }
    // Every client repeats an unanswered send until it is acknowledged, so a stored
    // message nobody saw acknowledged was stored although its sender was told it failed.
    for cmid in stored.keys() {
        if !acked.contains_key(cmid) {
            obs.violation(format!("{cmid} stored but never acknowledged"));
        }
    }

    // No domain event lost: a profile for every registration, each follow applied once.
    let deadline = Instant::now() + RECOVERY;
    let mut missing: HashSet<String> = newbies.iter().map(|a| a.id.clone()).collect();
    while !missing.is_empty() && Instant::now() < deadline {
        for id in missing.clone() {
            if let Ok((200, _, _)) = api
                .call("GET", &format!("/users/{id}"), Some(&owner.access), None)
                .await
            {
                missing.remove(&id);
            }
        }
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !missing.is_empty() {
        obs.violation(format!(
            "no profile for {} registration(s) made during the fault",
            missing.len()
        ));
    }
    let profile = settled(
        &api,
        "GET",
        &format!("/users/{}", star.id),
        &owner.access,
        None,
        200,
    )
    .await;
    if profile["followers_count"] != FANS {
        obs.violation(format!(
            "star has followers_count {} after {FANS} follows",
            profile["followers_count"]
        ));
    }
    let followers = settled(
        &api,
        "GET",
        &format!("/users/{}/followers?limit=100", star.id),
        &owner.access,
        None,
        200,
    )
    .await;
    let mut ids: Vec<&str> = followers["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = fans.iter().map(|f| f.id.as_str()).collect();
    want.sort_unstable();
    if ids != want {
        obs.violation(format!("star's followers {ids:?}, want {want:?}"));
    }
    for fan in &fans {
        let me = settled(&api, "GET", "/users/me", &fan.access, None, 200).await;
        if me["following_count"] != 1 {
            obs.violation(format!(
                "{} follows one account but following_count is {}",
                fan.username, me["following_count"]
            ));
        }
    }

    let seen = obs.seen.lock().unwrap().clone();
    let retries = load.retries.load(Ordering::SeqCst);
    println!(
        "{test}: {} sends acknowledged ({during} during the fault), {retries} retries, {} registrations; answers seen: {seen:?}; slowest answer {:?}; took {:?}",
        acked.len(),
        newbies.len(),
        obs.slowest.lock().unwrap(),
        t0.elapsed()
    );
    // A fault that hit nothing proves nothing: killed nodes and the cut database must
    // have cost the senders retries (Redis and users are not on the send path).
    if matches!(fault, Fault::KillChatNode | Fault::StopPostgres) {
        assert!(retries > 0, "{test}: the fault did not hit the senders");
    }
    let violations = obs.violations();
    if !violations.is_empty() {
        panic!(
            "{test}: {} contract violation(s):\n{}\n\nlogs kept in {}; their ends:\n{}",
            violations.len(),
            violations.join("\n"),
            cluster.keep_logs(test).display(),
            cluster.logs_tail(30)
        );
    }
}

/// WebSockets through the gateway (spread over both nodes) that only watch a kill.
const WATCHED: usize = 6;

async fn open_watched(load: &Load, who: &Account) -> Vec<Ws> {
    let mut out = Vec::new();
    for _ in 0..WATCHED {
        if let Some(mut ws) = ws_connect(load.obs(), &load.ws_url, &who.access).await
            && let Ok(Some(v)) = next_frame(load.obs(), &mut ws, SLOW).await
            && v["type"] == "ready"
        {
            out.push(ws);
        }
    }
    out
}

/// Sends each watched socket ~200 KiB of `ping`s, so that the node is still reading them
/// when it dies: its kernel then resets the connection (unread data) instead of closing
/// it — the case where a relay that only handles a clean end leaves the client hanging.
async fn stuff(mut watched: Vec<Ws>) -> Vec<Ws> {
    let pad = "x".repeat(20 * 1024);
    let ping = json!({"type": "ping", "pad": pad}).to_string();
    for ws in &mut watched {
        for _ in 0..10 {
            let _ = ws.send(WsMessage::Text(ping.clone().into())).await;
        }
    }
    watched
}

/// After a kill, each watched socket is either closed within [`SLOW`] (it was on the
/// dead node) or still served (it answers a `ping`). One that stays silent and open, and
/// only ends when the client writes again, was left hanging by the gateway: its client
/// would wait forever for the `ack` of a send made just before the kill.
async fn closed_in_time(load: Arc<Load>, watched: Vec<Ws>, node: usize) {
    let checks = watched.into_iter().map(|mut ws| {
        let load = load.clone();
        async move {
            let started = Instant::now();
            // Pongs and errors for the pings sent before the kill may still come.
            loop {
                let left = SLOW.saturating_sub(started.elapsed());
                match next_frame(load.obs(), &mut ws, left).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(()) => break,
                }
            }
            let ping = json!({"type": "ping"}).to_string();
            if ws.send(WsMessage::Text(ping.into())).await.is_err() {
                return;
            }
            loop {
                match next_frame(load.obs(), &mut ws, SLOW).await {
                    Ok(Some(v)) if v["type"] == "pong" => return,
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        load.obs().violation(format!(
                            "a WebSocket through the gateway stayed open and silent {SLOW:?} \
                             after its chat node {node} was killed, and closed only when \
                             the client wrote again"
                        ));
                        return;
                    }
                    Err(()) => {
                        load.obs().violation(format!(
                            "a WebSocket through the gateway answers nothing after chat \
                             node {node} was killed"
                        ));
                        return;
                    }
                }
            }
        }
    });
    futures::future::join_all(checks).await;
}

/// Polls until a send, `/users/me` and `/chat/rooms` all succeed through the gateway;
/// records a violation when that takes longer than [`RECOVERY`].
async fn recovery(load: &Arc<Load>, who: &Account, room: &str, when: &str) {
    let started = Instant::now();
    let probe = || format!("probe-{}", uuid::Uuid::now_v7().simple());
    // A probe not acknowledged is sent again with the same client_msg_id (the client
    // rule), so that every stored message is an acknowledged one.
    let mut cmid = probe();
    while started.elapsed() < RECOVERY {
        let send = load
            .api
            .call(
                "POST",
                &format!("/chat/rooms/{room}/messages"),
                Some(&who.access),
                Some(json!({"body": "probe", "client_msg_id": cmid})),
            )
            .await;
        let sent = matches!(send, Ok((201 | 200, _, _)));
        if let Ok((201 | 200, m, _)) = send {
            load.ack(&cmid, m);
            cmid = probe();
        }
        let me = load
            .api
            .call("GET", "/users/me", Some(&who.access), None)
            .await;
        let rooms = load
            .api
            .call("GET", "/chat/rooms", Some(&who.access), None)
            .await;
        if sent && matches!(me, Ok((200, _, _))) && matches!(rooms, Ok((200, _, _))) {
            println!("recovered {when} in {:?}", started.elapsed());
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.obs()
        .violation(format!("requests still failing {RECOVERY:?} {when}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_chat_node_under_load() {
    run("faults_kill_chat", Fault::KillChatNode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_10_s() {
    run("faults_redis", Fault::StopRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_15_s() {
    run("faults_postgres", Fault::StopPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_users_service() {
    run("faults_kill_users", Fault::KillUsers).await;
}

// ---------------------------------------------------------------------------------------
// Revocation across processes

/// What one check of the ended token got: the status (or 101 for an accepted WebSocket).
async fn token_status(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    match http.get(url).bearer_auth(token).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn ws_status(url: &str, token: &str) -> u16 {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(req),
    )
    .await
    {
        Ok(Ok((mut ws, _))) => {
            let _ = ws.close(None).await;
            101
        }
        Ok(Err(tungstenite::Error::Http(res))) => res.status().as_u16(),
        _ => 0,
    }
}

/// Every place a client can present the token: each service directly and the gateway.
fn token_checks(c: &Cluster) -> Vec<(String, bool)> {
    vec![
        (format!("{}/users/me", c.users_url()), false),
        (format!("{}/chat/rooms", c.chat_url(0)), false),
        (format!("{}/chat/rooms", c.chat_url(1)), false),
        (format!("{}/users/me", c.gateway_url()), false),
        (format!("{}/chat/rooms", c.gateway_url()), false),
        (c.chat_ws(0), true),
        (c.chat_ws(1), true),
        (c.gateway_ws(), true),
    ]
}

async fn statuses(
    http: &reqwest::Client,
    checks: &[(String, bool)],
    token: &str,
) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (url, ws) in checks {
        let s = if *ws {
            ws_status(url, token).await
        } else {
            token_status(http, url, token).await
        };
        out.push((url.clone(), s));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_refused_everywhere_within_1_s_and_after_restarts() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start("faults_revocation").await else {
        return;
    };
    let obs = Arc::new(Observed::new());
    let api = Api::new(&cluster.gateway_url(), obs.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let alice = register(&api, "alice", deadline).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let checks = token_checks(&cluster);

    // The profile comes from the user.registered event: wait for it, so that a later 401
    // can only mean the session ended.
    let mut ok = Vec::new();
    for _ in 0..100 {
        ok = statuses(&http, &checks, &alice.access).await;
        if ok
            .iter()
            .all(|(url, s)| *s == if url.starts_with("ws") { 101 } else { 200 })
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok.iter()
            .all(|(url, s)| *s == if url.starts_with("ws") { 101 } else { 200 }),
        "the token works everywhere before the logout: {ok:?}"
    );

    let (s, b, _) = api
        .call("POST", "/auth/logout", Some(&alice.access), None)
        .await
        .unwrap();
    assert_eq!(s, 204, "{b}");
    let ended = Instant::now();
    // Poll until every place refuses it (or 1 s passed), noting when each first did.
    let mut first_refused: BTreeMap<String, Duration> = BTreeMap::new();
    while ended.elapsed() < Duration::from_secs(1) && first_refused.len() < checks.len() {
        for (url, s) in statuses(&http, &checks, &alice.access).await {
            if s == 401 {
                first_refused.entry(url).or_insert_with(|| ended.elapsed());
            }
        }
    }
    println!("first refused after the 204: {first_refused:#?}");
    let at_1s = statuses(&http, &checks, &alice.access).await;
    let accepted: Vec<_> = at_1s.iter().filter(|(_, s)| *s != 401).collect();
    assert!(
        accepted.is_empty(),
        "1 s after the logout's 204 the token is not refused (401) at {accepted:?}"
    );

    // The services forget nothing on restart: users, then a chat node.
    cluster.proc_mut(Role::Users).kill9();
    cluster.start_role(Role::Users);
    support::wait_ready(&format!("{}/readyz", cluster.users_url())).await;
    cluster.proc_mut(Role::Chat(0)).kill9();
    cluster.start_role(Role::Chat(0));
    support::wait_ready(&format!("{}/readyz", cluster.chat_url(0))).await;
    // The gateway may still count a restarted upstream as down for a moment (503): wait
    // for the answers to settle, but an accepted token fails at once.
    let mut after_restart = Vec::new();
    for _ in 0..50 {
        after_restart = statuses(&http, &checks, &alice.access).await;
        let accepted: Vec<_> = after_restart
            .iter()
            .filter(|(_, s)| (200..300).contains(s) || *s == 101)
            .collect();
        assert!(
            accepted.is_empty(),
            "after restarting users and chat node 0 the ended token is accepted at {accepted:?}"
        );
        if after_restart.iter().all(|(_, s)| *s == 401) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        after_restart.iter().all(|(_, s)| *s == 401),
        "after the restarts: {after_restart:?}"
    );
    assert!(obs.violations().is_empty(), "{:?}", obs.violations());
}
