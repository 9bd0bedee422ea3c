//! WebSocket proxying through the gateway with a real client.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, config, upstream};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn next_text(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_traffic_flows_both_ways_and_closes_cleanly_on_shutdown() {
    let env = Env::new().await;
    let (a, u) = (upstream("auth").await, upstream("users").await);
    let (c1, c2) = (upstream("chat-1").await, upstream("chat-2").await);
    let gw = env.gateway(&config(&[&a], &[&u], &[&c1, &c2])).await;
    let user = uuid::Uuid::now_v7();
    let token = env.token(user);
    let ws_url = format!("ws://{}/chat/ws", gw.addr);

    // Without a token the handshake is refused at the edge.
    let err = tokio_tungstenite::connect_async(ws_url.clone())
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 401),
        other => panic!("unexpected {other:?}"),
    }

    // Token in the query (browsers): it reaches the service as a header, not in the URL.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{ws_url}?access_token={token}&v=1"))
            .await
            .unwrap();
    let hello: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(hello["authorization"], format!("Bearer {token}"));
    assert_eq!(hello["query"], "v=1");
    assert_eq!(hello["x_user_id"], user.to_string());
    ws.send(Message::Text("hi".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo:hi");
    let big = vec![7u8; 200_000];
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    let echoed = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => break b,
            _ => continue,
        }
    };
    assert_eq!(echoed.as_ref(), big.as_slice());

    // Token in the header, on a second connection.
    let mut req = ws_url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws2, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello2: Value = serde_json::from_str(&next_text(&mut ws2).await).unwrap();
    assert_eq!(hello2["query"], Value::Null);
    // Open connections count as load: the second goes to the other instance.
    assert_ne!(hello["instance"], hello2["instance"]);
    ws2.send(Message::Text("two".into())).await.unwrap();
    assert_eq!(next_text(&mut ws2).await, "echo:two");

    let metrics = reqwest::get(format!("{}/metrics", gw.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gateway_ws_active 2"), "{metrics}");

    // Shutdown: the client gets a Close frame (1001 going away), not a cut connection.
    let stopping = tokio::spawn(gw.stop());
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
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
