//! kill -9 of the real chat process (`intellicolab serve chat`) while 10 clients — half over
//! WebSocket, half over HTTP — send messages with `client_msg_id`s and retry until each is
//! acknowledged: after the restarts every acknowledged message is in the history exactly
//! once, as it was acknowledged, and the room's seqs have no hole.
//! On SQLite, and on a fresh PostgreSQL database when `TEST_DATABASE_URL` is set.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kit::db::Backend;
use serde_json::{Value, json};
use support::{Client, Ports, Proc};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

kit::backend_tests!(kill_9_of_chat_loses_no_acknowledged_message);

const CLIENTS: usize = 10;
const PER_CLIENT: usize = 100;

/// One client's acknowledged messages by `client_msg_id`.
type Acked = HashMap<String, Value>;

/// Records an acknowledgement; the same `client_msg_id` must always give the same message.
fn record(mine: &mut Acked, cmid: &str, message: Value) {
    assert_eq!(message["client_msg_id"], cmid, "{message}");
    if let Some(before) = mine.get(cmid) {
        assert_eq!(
            before["id"], message["id"],
            "{cmid} acknowledged twice as different messages"
        );
    }
    mine.insert(cmid.to_owned(), message);
}

/// Sends over HTTP, retrying each message until the chat service acknowledges it.
async fn http_client(
    c: usize,
    base: String,
    room: String,
    token: String,
    acked: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
) -> Acked {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut mine = Acked::new();
    for i in 0..PER_CLIENT {
        let cmid = format!("c{c}-{i}");
        loop {
            let sent = http
                .post(format!("{base}/chat/rooms/{room}/messages"))
                .bearer_auth(&token)
                .json(&json!({"body": format!("message {cmid}"), "client_msg_id": cmid}))
                .send()
                .await;
            if let Ok(res) = sent
                && (res.status() == 201 || res.status() == 200)
                && let Ok(m) = res.json::<Value>().await
            {
                record(&mut mine, &cmid, m);
                acked.fetch_add(1, Ordering::SeqCst);
                break;
            }
            failures.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    mine
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, token: &str) -> Option<Ws> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let connect = tokio_tungstenite::connect_async(req);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _))) => Some(ws),
        _ => None,
    }
}

/// Waits for the `ack` (or `error`) of `cmid`, skipping other frames. `None`: the
/// connection broke or stayed silent too long.
async fn ws_answer(ws: &mut Ws, cmid: &str) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .ok()??;
        let text = match frame {
            Ok(WsMessage::Text(t)) => t,
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => continue,
            _ => return None,
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        if (v["type"] == "ack" || v["type"] == "error") && v["client_msg_id"] == cmid {
            return Some(v);
        }
    }
}

/// Sends over a WebSocket, reconnecting and sending again until each message is acked.
async fn ws_client(
    c: usize,
    url: String,
    room: String,
    token: String,
    acked: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
) -> Acked {
    let mut mine = Acked::new();
    let mut ws: Option<Ws> = None;
    for i in 0..PER_CLIENT {
        let cmid = format!("c{c}-{i}");
        loop {
            if ws.is_none() {
                ws = ws_connect(&url, &token).await;
            }
            let Some(conn) = ws.as_mut() else {
                failures.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let frame = json!({
                "type": "send", "room_id": room, "body": format!("message {cmid}"),
                "client_msg_id": cmid,
            });
            let answer = match conn.send(WsMessage::Text(frame.to_string().into())).await {
                Ok(()) => ws_answer(conn, &cmid).await,
                Err(_) => None,
            };
            match answer {
                Some(v) if v["type"] == "ack" => {
                    record(&mut mine, &cmid, v["message"].clone());
                    acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Some(_error) => {
                    // e.g. the database is briefly unavailable: try the same message again.
                    failures.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => {
                    failures.fetch_add(1, Ordering::SeqCst);
                    ws = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    if let Some(mut conn) = ws {
        let _ = conn.close(None).await;
    }
    mine
}

async fn kill_9_of_chat_loses_no_acknowledged_message(backend: Backend) {
    let Some(db) = kit::testing::test_db(backend, "kill_9_of_chat").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let mut env = ports.env(dir.path());
    env.push(("INTELLICOLAB_CHAT__SEND_RATE_PER_SEC", "100000".to_owned()));
    env.push(("INTELLICOLAB_CHAT__SEND_BURST", "100000".to_owned()));
    if let Some(url) = &db.url {
        env.push(("INTELLICOLAB_CHAT__DATABASE_URL", url.clone()));
    }
    // Debug logs of hundreds of messages would only slow the machine down.
    env.push(("RUST_LOG", "info,sqlx=warn".to_owned()));
    let _auth = Proc::start(dir.path(), "auth", &["serve", "auth"], &env);
    let start_chat = || Proc::start(dir.path(), "chat", &["serve", "chat"], &env);
    let mut chat = start_chat();
    let chat_url = ports.chat_url();
    support::wait_ready(&format!("{}/readyz", ports.auth_url())).await;
    support::wait_ready(&format!("{chat_url}/readyz")).await;

    // Real accounts from the auth service; the chat service verifies their tokens
    // against its JWKS.
    let auth = Client::new(&ports.auth_url());
    let chat_api = Client::new(&chat_url);
    let owner = auth.register("owner").await;
    let (s, room, _) = chat_api
        .call(
            "POST",
            "/chat/rooms",
            Some(&owner.access),
            Some(json!({"name": "crash", "visibility": "public"})),
        )
        .await;
    assert_eq!(s, 201, "{room}");
    let room = room["id"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for c in 0..CLIENTS {
        let account = auth.register(&format!("client{c}")).await;
        let (s, body, _) = chat_api
            .call(
                "POST",
                &format!("/chat/rooms/{room}/join"),
                Some(&account.access),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        tokens.push(account.access);
    }

    let acked = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let ws_url = format!("ws://127.0.0.1:{}/chat/ws", ports.chat);
    let mut clients = Vec::new();
    for (c, token) in tokens.into_iter().enumerate() {
        let (room, acked, failures) = (room.clone(), acked.clone(), failures.clone());
        clients.push(if c % 2 == 0 {
            tokio::spawn(ws_client(c, ws_url.clone(), room, token, acked, failures))
        } else {
            tokio::spawn(http_client(
                c,
                chat_url.clone(),
                room,
                token,
                acked,
                failures,
            ))
        });
    }

    // Kill the chat process twice in the middle of the traffic, and start it again.
    let traffic = async {
        for round in 1..=2 {
            while acked.load(Ordering::SeqCst) < round * CLIENTS * PER_CLIENT / 3 {
                // A client that panicked shows when it is awaited below; a fast one may
                // finish before a kill, which is fine as long as others are still sending.
                if clients.iter().all(|c| c.is_finished()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            chat.kill9();
            tokio::time::sleep(Duration::from_millis(200)).await;
            chat = start_chat();
            support::wait_ready(&format!("{chat_url}/readyz")).await;
        }
        let mut acknowledged = Acked::new();
        for c in clients {
            acknowledged.extend(c.await.unwrap());
        }
        acknowledged
    };
    // Generous: the clients retry forever, so a lost message would otherwise hang the test.
    let acknowledged = tokio::time::timeout(Duration::from_secs(600), traffic)
        .await
        .expect("every message is acknowledged in the end");
    assert_eq!(acknowledged.len(), CLIENTS * PER_CLIENT);
    assert!(
        failures.load(Ordering::SeqCst) > 0,
        "the kills hit the traffic"
    );

    // Every acknowledged message exactly once, as acknowledged; the log has no hole.
    let mut stored: HashMap<String, Value> = HashMap::new();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let (s, page, _) = chat_api
            .call(
                "GET",
                &format!("/chat/rooms/{room}/events?after={after}&limit=100"),
                Some(&owner.access),
                None,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            after = e["seq"].as_i64().unwrap();
            seqs.push(after);
            if e["kind"] == "message.created" {
                let cmid = e["message"]["client_msg_id"].as_str().unwrap().to_owned();
                assert!(
                    stored.insert(cmid.clone(), e["message"].clone()).is_none(),
                    "{cmid} stored twice"
                );
            }
        }
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    for (cmid, m) in &acknowledged {
        assert_eq!(
            stored.get(cmid),
            Some(m),
            "{cmid} acknowledged but not stored as such"
        );
    }
    assert_eq!(stored.len(), acknowledged.len());

    // The message history (not only the event log) has each of them once, too.
    let mut in_history = HashMap::new();
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/chat/rooms/{room}/messages?before={b}&limit=100"),
            None => format!("/chat/rooms/{room}/messages?limit=100"),
        };
        let (s, page, _) = chat_api.call("GET", &path, Some(&owner.access), None).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        for m in items {
            let cmid = m["client_msg_id"].as_str().unwrap().to_owned();
            assert!(
                in_history.insert(cmid.clone(), m["id"].clone()).is_none(),
                "{cmid} twice in the history"
            );
        }
        match items.first() {
            Some(first) if page["has_more"] == true => before = first["seq"].as_i64(),
            _ => break,
        }
    }
    assert_eq!(in_history.len(), acknowledged.len());
    for (cmid, m) in &acknowledged {
        assert_eq!(in_history.get(cmid), Some(&m["id"]), "{cmid}");
    }
    chat.kill9();
}
