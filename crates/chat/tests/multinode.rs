//! Two chat nodes sharing one PostgreSQL database and one Redis: clients on either node
//! get every event of their rooms in order, and a lost pub/sub message is repaired from
//! the database. (SQLite is one file per process, so this needs PostgreSQL.) Nodes also
//! start while Redis is down, serve, and join the fan-out once it is back (issue 14, item 14).
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
    nodes_start_while_redis_is_down_and_fan_out_once_it_is_back,
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

/// A chat node on the Redis bus and Redis fan-out (as `intellicolab serve chat` runs it),
/// built directly: the harness nodes use the in-process bus.
struct RedisNode {
    running: Option<kit::server::Running>,
    url: String,
    _dir: tempfile::TempDir,
}

impl RedisNode {
    async fn start(
        database_url: Option<String>,
        issuer: &token::testing::TestIssuer,
        redis_url: &str,
        channel: &str,
        resync_ms: u64,
    ) -> RedisNode {
        let dir = tempfile::tempdir().unwrap();
        let common = kit::config::CommonConfig {
            auth_url: issuer.auth_url.clone(),
            data_dir: dir.path().to_owned(),
            redis_url: Some(redis_url.to_owned()),
            users_url: common::closed_port_url().await,
            ..Default::default()
        };
        let config = chat::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url,
            fanout_channel: channel.to_owned(),
            fanout_resync_ms: resync_ms,
            send_rate_per_sec: 1000.0,
            send_burst: 1000,
            ..Default::default()
        };
        // Bounded: a start that waits for Redis would hang here, not fail.
        let build = async {
            let bus = bus::Bus::redis(redis_url).await?;
            chat::build(&common, &config, bus, Default::default()).await
        };
        let service = tokio::time::timeout(Duration::from_secs(10), build)
            .await
            .expect("the node did not start within 10 s while Redis is down")
            .expect("the node refused to start while Redis is down");
        let running = service.spawn();
        RedisNode {
            url: running.url(),
            running: Some(running),
            _dir: dir,
        }
    }

    fn ws_url(&self) -> String {
        format!("{}/chat/ws", self.url.replacen("http", "ws", 1))
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        u: &common::User,
    ) -> (u16, serde_json::Value) {
        let res = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(&u.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        common::read(res).await
    }

    async fn send(&self, room: &str, u: &common::User, body: &str) -> i64 {
        let (s, b) = self
            .post(
                &format!("/chat/rooms/{room}/messages"),
                json!({"body": body}),
                u,
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["seq"].as_i64().unwrap()
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// Two nodes start while their Redis is dead: both listen, `/healthz` 200, `/readyz` 200
/// reporting the bus degraded; a send on node A reaches a socket on A at once. Redis comes
/// back (empty): within a bounded time a send on node B reaches the socket on A over the
/// fan-out (A's periodic resync is set to 10 min, so only the fan-out can deliver it).
async fn nodes_start_while_redis_is_down_and_fan_out_once_it_is_back(backend: Backend) {
    let test = "nodes_start_while_redis_is_down_and_fan_out_once_it_is_back";
    if !common::nodes_can_share(backend, test) {
        return;
    }
    let Some(mut redis) = bus::testing::PrivateRedis::start(test) else {
        return;
    };
    let Some(db) = kit::testing::test_db(backend, test).await else {
        return;
    };
    redis.kill();
    let issuer = token::testing::TestIssuer::start().await;
    let channel = channel();
    let resync_ms = 600_000;
    let a = RedisNode::start(db.url.clone(), &issuer, &redis.url(), &channel, resync_ms).await;
    let b = RedisNode::start(db.url.clone(), &issuer, &redis.url(), &channel, resync_ms).await;
    let http = reqwest::Client::new();
    for node in [&a, &b] {
        let res = http
            .get(format!("{}/healthz", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}/healthz", node.url);
        let (s, body) = common::read(
            http.get(format!("{}/readyz", node.url))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "ready to serve without Redis: {body}");
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["checks"]["database"], "ok", "{body}");
        assert_ne!(body["checks"]["bus"], "ok", "{body}");
    }

    let user = |name: &str| {
        let id = uuid::Uuid::now_v7();
        common::User {
            id,
            name: name.to_owned(),
            token: issuer.token(id, name),
        }
    };
    let (alice, bob) = (user("alice"), user("bob"));
    let (s, room) = a
        .post(
            "/chat/rooms",
            json!({"name": "r", "visibility": "public"}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{room}");
    let room = room["id"].as_str().unwrap().to_owned();
    let (s, joined) = b
        .post(&format!("/chat/rooms/{room}/join"), json!({}), &bob)
        .await;
    assert_eq!(s, 200, "{joined}");
    let mut bob_ws = common::Ws::connect(&a.ws_url(), &bob.token).await;
    // A local send reaches the local socket without Redis.
    let seq = a.send(&room, &alice, "on A, Redis down").await;
    let e = bob_ws.next_of("event").await;
    assert_eq!(
        (e["seq"].as_i64(), e["event"]["message"]["body"].as_str()),
        (Some(seq), Some("on A, Redis down")),
        "{e}"
    );

    tokio::task::block_in_place(|| redis.restart());
    let back = std::time::Instant::now();
    // B's sends reach A only over the fan-out, once both nodes' connections are back
    // (subscriber back-off: at most 2 s between attempts). 20 s bound, one send per try.
    let mut last_seq = seq;
    let mut ws_seqs = vec![seq];
    let mut arrived = None;
    for i in 0..100 {
        last_seq = b.send(&room, &alice, &format!("on B {i}")).await;
        while let Some(v) = bob_ws.try_next_json(Duration::from_millis(200)).await {
            if v["type"] == "event" && v["room_id"] == room.as_str() {
                ws_seqs.push(v["seq"].as_i64().unwrap());
                arrived.get_or_insert(back.elapsed());
            }
        }
        if arrived.is_some() || back.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let arrived =
        arrived.expect("no send on node B reached node A's socket within 20 s of Redis's return");
    println!("fan-out from B to A works again {arrived:?} after Redis came back");
    // From then on B's sends arrive, and the gap (sends before A resubscribed) is repaired
    // from the database: every seq since the local one, once, in order.
    let final_seq = b.send(&room, &alice, "last").await;
    assert!(final_seq > last_seq);
    if ws_seqs.last() != Some(&final_seq) {
        let events = events_until(&mut bob_ws, &room, final_seq).await;
        ws_seqs.extend(seqs(&events));
    }
    assert_eq!(
        ws_seqs,
        (seq..=final_seq).collect::<Vec<_>>(),
        "gap-free, in order, once"
    );
    b.stop().await;
    a.stop().await;
}
