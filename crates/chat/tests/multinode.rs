//! Two chat nodes sharing one PostgreSQL database and one Redis: clients on either node
//! get every event of their rooms in order, and a lost pub/sub message is repaired from
//! the database. (SQLite is one file per process, so this needs PostgreSQL.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::events_until;
use kit::db::Backend;
use serde_json::json;

kit::backend_tests!(
    two_nodes_deliver_in_order,
    lost_announcements_are_repaired,
    redis_restart_during_traffic,
);

fn channel() -> String {
    format!("test:chat:{}", uuid::Uuid::now_v7().simple())
}

async fn two_nodes_deliver_in_order(backend: Backend) {
    if backend == Backend::Sqlite {
        println!("SKIP two_nodes_deliver_in_order [sqlite]: nodes share a PostgreSQL database");
        return;
    }
    let Some(redis) = kit::testing::redis_url("two_nodes_deliver_in_order") else {
        return;
    };
    let channel = channel();
    let (redis2, channel2) = (redis.clone(), channel.clone());
    let Some(a) = common::start_with(backend, "two_nodes", move |o| {
        o.common.redis_url = Some(redis2);
        o.config.fanout_channel = channel2;
        o.config.send_rate_per_sec = 1000.0;
        o.config.send_burst = 1000;
    })
    .await
    else {
        return;
    };
    let b = a
        .another_node_with(
            |c| {
                c.fanout_channel = channel.clone();
                c.send_rate_per_sec = 1000.0;
                c.send_burst = 1000;
            },
            &redis,
        )
        .await;
    let alice = a.user("alice").await;
    let bob = a.user("bob").await;
    let room = a.room(&alice, "r", "public").await;
    // Bob listens on node A; he joins through node B and is subscribed on A at once.
    let mut bob_ws = a.connect(&bob).await;
    b.join(&room, &bob).await;
    let joined = bob_ws.next_json().await;
    assert_eq!(
        (joined["seq"].as_i64(), joined["event"]["kind"].as_str()),
        (Some(2), Some("member.joined"))
    );

    // Alice sends on node B, over the socket and over HTTP, concurrently.
    let mut alice_ws = b.connect(&alice).await;
    let http_sender = {
        let http = b.http.clone();
        let url = format!("{}/chat/rooms/{room}/messages", b.url);
        let token = alice.token.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                let res = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"body": format!("http {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    for i in 0..30 {
        alice_ws
            .send(json!({"type": "send", "room_id": room, "body": format!("ws {i}"), "client_msg_id": format!("c{i}")}))
            .await;
    }
    http_sender.await.unwrap();
    let last = 2 + 60;
    let events = events_until(&mut bob_ws, &room, last).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (3..=last).collect::<Vec<_>>(),
        "in order, nothing missing, nothing twice"
    );
    let ws_bodies: Vec<String> = events
        .iter()
        .map(|e| e["event"]["message"]["body"].as_str().unwrap().to_owned())
        .filter(|b| b.starts_with("ws "))
        .collect();
    assert_eq!(
        ws_bodies,
        (0..30).map(|i| format!("ws {i}")).collect::<Vec<_>>(),
        "one socket's sends keep their order"
    );

    // Typing crosses nodes too.
    alice_ws
        .send(json!({"type": "typing", "room_id": room}))
        .await;
    let t = loop {
        let v = bob_ws.next_json().await;
        if v["type"] == "typing" {
            break v;
        }
    };
    assert_eq!(t["user_id"], alice.id.to_string());

    // A session revoked on one node is closed on the other as well.
    let sid = uuid::Uuid::now_v7();
    let carol_id = uuid::Uuid::now_v7();
    let token = a.issuer.token_for_session(carol_id, "carol", sid);
    let mut carol_on_b = common::Ws::connect(&b.ws_url(), &token).await;
    a.bus
        .publish(&bus::Envelope::new(
            "auth",
            "session.revoked",
            json!({"session_id": sid, "user_id": carol_id, "until": kit::time::now_ms() / 1000 + 900}),
        ))
        .await
        .unwrap();
    assert_eq!(
        carol_on_b.closed(Duration::from_secs(5)).await,
        common::Closed::Code(4001)
    );
    b.stop().await;
    a.stop().await;
}

async fn lost_announcements_are_repaired(backend: Backend) {
    if backend == Backend::Sqlite {
        println!(
            "SKIP lost_announcements_are_repaired [sqlite]: nodes share a PostgreSQL database"
        );
        return;
    }
    let Some(redis) = kit::testing::redis_url("lost_announcements_are_repaired") else {
        return;
    };
    // The nodes announce on different channels, so none of B's announcements reach A:
    // the worst case of a lossy bus. A's resync must still deliver everything.
    let redis2 = redis.clone();
    let Some(a) = common::start_with(backend, "lost_announcements", move |o| {
        o.common.redis_url = Some(redis2);
        o.config.fanout_channel = channel();
        o.config.fanout_resync_ms = 200;
    })
    .await
    else {
        return;
    };
    let b = a
        .another_node_with(|c| c.fanout_channel = channel(), &redis)
        .await;
    let alice = a.user("alice").await;
    let bob = a.user("bob").await;
    let room = a.room(&alice, "r", "public").await;
    a.join(&room, &bob).await;
    let mut bob_ws = a.connect(&bob).await;
    for i in 0..5 {
        b.send(&room, &alice, &format!("m{i}")).await;
    }
    let events = events_until(&mut bob_ws, &room, 7).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5, 6, 7]);
    // And a message sent on A after that gap arrives right away, in order.
    a.send(&room, &alice, "local").await;
    let next = bob_ws.next_json().await;
    assert_eq!(
        (
            next["seq"].as_i64(),
            next["event"]["message"]["body"].as_str()
        ),
        (Some(8), Some("local"))
    );
    b.stop().await;
    a.stop().await;
}

/// A private redis-server (this test kills it), when the binary is installed.
struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    async fn start(port: u16) -> Option<PrivateRedis> {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let mut redis = PrivateRedis {
            port,
            child: Some(child),
        };
        redis.wait_up().await;
        Some(redis)
    }

    async fn wait_up(&mut self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.start_kill().unwrap();
            c.wait().await.unwrap();
        }
    }
}

async fn redis_restart_during_traffic(backend: Backend) {
    if backend == Backend::Sqlite {
        println!("SKIP redis_restart_during_traffic [sqlite]: nodes share a PostgreSQL database");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(mut redis) = PrivateRedis::start(port).await else {
        println!("SKIP redis_restart_during_traffic: redis-server is not installed");
        return;
    };
    let url = redis.url();
    let url2 = url.clone();
    let Some(a) = common::start_with(backend, "redis_restart", move |o| {
        o.common.redis_url = Some(url2);
        o.config.fanout_resync_ms = 500;
        o.config.send_rate_per_sec = 1000.0;
    })
    .await
    else {
        return;
    };
    let b = a
        .another_node_with(|c| c.fanout_resync_ms = 500, &url)
        .await;
    let alice = a.user("alice").await;
    let bob = a.user("bob").await;
    let room = a.room(&alice, "r", "public").await;
    a.join(&room, &bob).await;
    let mut bob_ws = a.connect(&bob).await;
    let sender = {
        let http = b.http.clone();
        let url = format!("{}/chat/rooms/{room}/messages", b.url);
        let token = alice.token.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let res = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"body": format!("m{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201, "sending does not depend on Redis");
                // ~9/s: under the per-user send limit (10/s), whatever the machine's speed.
                tokio::time::sleep(Duration::from_millis(110)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill_9().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut redis = PrivateRedis::start(port).await.unwrap();
    sender.await.unwrap();
    let last = 2 + 40;
    let events = events_until(&mut bob_ws, &room, last).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (3..=last).collect::<Vec<_>>());
    // Fan-out works live again after the restart.
    b.send(&room, &alice, "after the restart").await;
    let next = bob_ws.next_json().await;
    assert_eq!(next["event"]["message"]["body"], "after the restart");
    b.stop().await;
    a.stop().await;
    redis.kill_9().await;
}
