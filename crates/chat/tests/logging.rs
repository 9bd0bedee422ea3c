//! Access tokens never reach the logs, also when sent as the `access_token` query
//! parameter of `/chat/ws` (a process-wide log capture, so this is its own test binary).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use kit::db::Backend;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_not_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();
    let app = common::start(Backend::Sqlite, "tokens_are_not_logged")
        .await
        .unwrap();
    let (alice, room) = app.alice_with_a_room().await;
    // A good token in the query, a bad one, and one in a header.
    let url = format!("{}?access_token={}", app.ws_url(), alice.token);
    let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut ws = common::Ws::ready(stream).await;
    ws.send_message(&room, "hi", "1").await;
    assert_eq!(ws.next_of("ack").await["type"], "ack");
    let forged = format!("{}x", alice.token);
    let bad = format!("{}?access_token={forged}", app.ws_url());
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
    let (s, _) = app
        .call(reqwest::Method::GET, "/chat/rooms", None, Some(&forged))
        .await;
    assert_eq!(s, 401);
    app.stop().await;
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("/chat/ws"),
        "the request log is captured: {logs}"
    );
    let signature = alice.token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "a token reached the logs");
    assert!(
        !logs.contains("access_token="),
        "a query string reached the logs"
    );
}
