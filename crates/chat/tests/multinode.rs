//! Two chat nodes sharing one PostgreSQL database and one Redis: clients on either node
//! get every event of their rooms in order, and a lost pub/sub message is repaired from
//! the database. (SQLite is one file per process, so this needs PostgreSQL.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{events_until, seqs};
use kit::db::Backend;
use serde_json::json;

kit::backend_tests!(
    two_nodes_deliver_in_order,
    lost_announcements_are_repaired,
    redis_restart_during_traffic,
    resume_on_one_node_while_another_takes_sends,
);

fn channel() -> String {
    format!("test:chat:{}", uuid::Uuid::now_v7().simple())
}

/// Both nodes announce on one fresh channel and let a user send 1000/s.
fn fast_on(channel: String) -> impl FnOnce(&mut chat::Config) {
    move |c| {
        c.fanout_channel = channel;
        c.send_rate_per_sec = 1000.0;
        c.send_burst = 1000;
    }
}

async fn two_nodes_deliver_in_order(backend: Backend) {
    let test = "two_nodes_deliver_in_order";
    if !common::nodes_can_share(backend, test) {
        return;
    }
    let Some(redis) = kit::testing::redis_url(test) else {
        return;
    };
    let channel = channel();
    let Some((a, b)) = common::start_two_nodes(
        backend,
        test,
        &redis,
        fast_on(channel.clone()),
        fast_on(channel),
    )
    .await
    else {
        return;
    };
    let [alice, bob] = a.users(["alice", "bob"]).await;
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
    let http_sender = b.send_in_background(
        &room,
        &alice,
        (0..30).map(|i| format!("http {i}")).collect(),
        None,
    );
    for i in 0..30 {
        alice_ws
            .send_message(&room, &format!("ws {i}"), &format!("c{i}"))
            .await;
    }
    http_sender.await.unwrap();
    let last = 2 + 60;
    let events = events_until(&mut bob_ws, &room, last).await;
    assert_eq!(
        seqs(&events),
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
    let t = bob_ws.next_of("typing").await;
    assert_eq!(t["user_id"], alice.id.to_string());

    // A session revoked on one node is closed on the other as well.
    let sid = uuid::Uuid::now_v7();
    let carol_id = uuid::Uuid::now_v7();
    let token = a.issuer.token_for_session(carol_id, "carol", sid);
    let mut carol_on_b = common::Ws::connect(&b.ws_url(), &token).await;
    a.revoke_session(sid, carol_id).await;
    assert_eq!(
        carol_on_b.closed(Duration::from_secs(5)).await,
        common::Closed::Code(4001)
    );
    b.stop().await;
    a.stop().await;
}

async fn lost_announcements_are_repaired(backend: Backend) {
    let test = "lost_announcements_are_repaired";
    if !common::nodes_can_share(backend, test) {
        return;
    }
    let Some(redis) = kit::testing::redis_url(test) else {
        return;
    };
    // The nodes announce on different channels, so none of B's announcements reach A:
    // the worst case of a lossy bus. A's resync must still deliver everything.
    let Some((a, b)) = common::start_two_nodes(
        backend,
        test,
        &redis,
        |c| {
            c.fanout_channel = channel();
            c.fanout_resync_ms = 200;
        },
        |c| c.fanout_channel = channel(),
    )
    .await
    else {
        return;
    };
    let (alice, bob, room) = a.alice_and_bob_in_a_room().await;
    let mut bob_ws = a.connect(&bob).await;
    for i in 0..5 {
        b.send(&room, &alice, &format!("m{i}")).await;
    }
    let events = events_until(&mut bob_ws, &room, 7).await;
    assert_eq!(seqs(&events), [3, 4, 5, 6, 7]);
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
    let test = "redis_restart_during_traffic";
    if !common::nodes_can_share(backend, test) {
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
    let Some((a, b)) = common::start_two_nodes(
        backend,
        test,
        &redis.url(),
        |c| {
            c.fanout_resync_ms = 500;
            c.send_rate_per_sec = 1000.0;
        },
        |c| c.fanout_resync_ms = 500,
    )
    .await
    else {
        return;
    };
    let (alice, bob, room) = a.alice_and_bob_in_a_room().await;
    let mut bob_ws = a.connect(&bob).await;
    // Every send is stored (201) whatever Redis does: sending does not depend on it.
    // ~9/s: under the per-user send limit (10/s), whatever the machine's speed.
    let sender = b.send_in_background(
        &room,
        &alice,
        (0..40).map(|i| format!("m{i}")).collect(),
        Some(Duration::from_millis(110)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill_9().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut redis = PrivateRedis::start(port).await.unwrap();
    sender.await.unwrap();
    let last = 2 + 40;
    let events = events_until(&mut bob_ws, &room, last).await;
    assert_eq!(seqs(&events), (3..=last).collect::<Vec<_>>());
    // Fan-out works live again after the restart.
    b.send(&room, &alice, "after the restart").await;
    let next = bob_ws.next_json().await;
    assert_eq!(next["event"]["message"]["body"], "after the restart");
    b.stop().await;
    a.stop().await;
    redis.kill_9().await;
}

/// Bob reconnects to node A and resumes while Alice's sends go to node B (announced to A
/// over Redis): every missed event in seq order, then the live ones — strictly increasing
/// and gap-free on the resuming socket.
async fn resume_on_one_node_while_another_takes_sends(backend: Backend) {
    let test = "resume_on_one_node_while_another_takes_sends";
    if !common::nodes_can_share(backend, test) {
        return;
    }
    let Some(redis) = kit::testing::redis_url(test) else {
        return;
    };
    let channel = channel();
    let Some((a, b)) = common::start_two_nodes(
        backend,
        test,
        &redis,
        fast_on(channel.clone()),
        fast_on(channel),
    )
    .await
    else {
        return;
    };
    let [alice, bob] = a.users(["alice", "bob"]).await;
    let room = a.room(&alice, "r", "public").await;
    a.join(&room, &bob).await;
    for i in 0..30 {
        b.send(&room, &alice, &format!("before {i}")).await;
    }
    let sender = b.send_in_background(
        &room,
        &alice,
        (0..60).map(|i| format!("during {i}")).collect(),
        Some(Duration::from_millis(2)),
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut bob_ws = a.connect(&bob).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    bob_ws
        .send(json!({"type": "resume", "rooms": {room.clone(): 2}}))
        .await;
    sender.await.unwrap();
    let last = 2 + 30 + 60;
    let events = events_until(&mut bob_ws, &room, last).await;
    assert_eq!(seqs(&events), (3..=last).collect::<Vec<_>>());
    b.stop().await;
    a.stop().await;
}
