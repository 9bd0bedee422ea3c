//! WebSocket proxying through the gateway with a real client.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Api, Env, WsMessage, config, next_binary, next_json, next_text, upstream, ws_connect,
    ws_connect_bearer, ws_next, ws_refused_status,
};
use futures::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_traffic_flows_both_ways_and_closes_cleanly_on_shutdown() {
    websocket_flow(0).await;
    // The same on dedicated event-loop threads: connections dealt to two loops, each
    // with its own upstream pool, and still closed cleanly when the gateway stops. (One
    // after the other: the active-socket gauge is process-wide.)
    websocket_flow(2).await;
}

async fn websocket_flow(event_loops: usize) {
    let env = Env::new().await;
    let (a, u) = (upstream("auth").await, upstream("users").await);
    let (c1, c2) = (upstream("chat-1").await, upstream("chat-2").await);
    let mut cfg = config(&[&a], &[&u], &[&c1, &c2]);
    cfg.event_loops = event_loops;
    let gw = env.gateway(&cfg).await;
    let user = uuid::Uuid::now_v7();
    let token = env.token(user);
    let ws_url = format!("ws://{}/chat/ws", gw.addr);

    // Without a token the handshake is refused at the edge.
    assert_eq!(ws_refused_status(&ws_url).await, 401);

    // Token in the query (browsers): it reaches the service as a header, not in the URL.
    let mut ws = ws_connect(&format!("{ws_url}?access_token={token}&v=1")).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["authorization"], format!("Bearer {token}"));
    assert_eq!(hello["query"], "v=1");
    assert_eq!(hello["x_user_id"], user.to_string());
    ws.send(WsMessage::Text("hi".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo:hi");
    let big = vec![7u8; 200_000];
    ws.send(WsMessage::Binary(big.clone().into()))
        .await
        .unwrap();
    assert_eq!(next_binary(&mut ws).await.as_ref(), big.as_slice());

    // Token in the header, on a second connection.
    let mut ws2 = ws_connect_bearer(&ws_url, &token).await;
    let hello2 = next_json(&mut ws2).await;
    assert_eq!(hello2["query"], Value::Null);
    // Open connections count as load: the second goes to the other instance.
    assert_ne!(hello["instance"], hello2["instance"]);
    ws2.send(WsMessage::Text("two".into())).await.unwrap();
    assert_eq!(next_text(&mut ws2).await, "echo:two");

    let metrics = Api::new(&gw).metrics().await;
    assert!(metrics.contains("gateway_ws_active 2"), "{metrics}");

    // Shutdown: the client gets a Close frame (1001 going away), not a cut connection.
    let stopping = tokio::spawn(gw.stop());
    let frame = loop {
        match ws_next(&mut ws).await {
            Some(Ok(WsMessage::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.unwrap().code, CloseCode::Away);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}
