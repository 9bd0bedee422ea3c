//! Presence (chat v1.1): `GET /chat/presence`, the `presence.subscribe` / `idle` / `active`
//! frames and `presence` frames — on one node (in-process store, both backends) and across
//! two nodes sharing Redis (PostgreSQL only: SQLite is one file per process), including a
//! node that dies without unregistering its users.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{App, User, Ws};
use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    online_idle_active_then_offline_after_the_grace_period,
    a_quick_reconnect_shows_no_offline,
    the_best_connection_wins,
    subscribe_replaces_the_set,
    more_than_200_ids_are_refused,
    get_presence_answers_for_each_id,
    a_blocker_appears_offline,
    a_subscriber_on_another_node_sees_changes,
    the_best_node_wins,
    a_dead_nodes_users_go_offline_on_the_others,
    a_redis_outage_degrades_presence_and_blocks_nothing,
);

/// Grace period of the single-node tests: long enough to tell "before" from "after" on a
/// loaded machine, short enough to keep the tests quick.
const GRACE_MS: u64 = 600;

fn short(c: &mut chat::Config) {
    c.presence_grace_ms = GRACE_MS;
    c.presence_heartbeat_ms = 100;
    c.presence_node_ttl_ms = 300;
}

async fn start(backend: Backend, test: &str) -> Option<App> {
    common::start_with(backend, test, |o| {
        short(&mut o.config);
        o.with_users = true;
    })
    .await
}

async fn subscribe(ws: &mut Ws, users: &[&User]) {
    let ids: Vec<_> = users.iter().map(|u| u.id).collect();
    ws.send(json!({"type": "presence.subscribe", "user_ids": ids}))
        .await;
}

/// The next `presence` frame (other frames skipped).
async fn presence(ws: &mut Ws) -> Value {
    ws.next_of("presence").await
}

/// Asserts no `presence` frame arrives for `wait` (other frames ignored).
async fn no_presence(ws: &mut Ws, wait: Duration) {
    let deadline = Instant::now() + wait;
    while let Some(v) = ws
        .try_next_json(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(v["type"], "presence", "unexpected {v}");
    }
}

fn status(frame: &Value, user: &User) -> String {
    assert_eq!(frame["type"], "presence", "{frame}");
    assert_eq!(frame["user_id"], user.id.to_string(), "{frame}");
    frame["status"].as_str().unwrap().to_owned()
}

async fn close(mut ws: Ws) {
    ws.stream.close(None).await.unwrap();
    let _ = ws.closed(Duration::from_secs(5)).await;
}

async fn get_status(app: &App, viewer: &User, user: &User) -> Value {
    let (s, body) = app
        .get(&format!("/chat/presence?user_ids={}", user.id), viewer)
        .await;
    assert_eq!(s, 200, "{body}");
    body["items"][0].clone()
}

/// Polls `GET /chat/presence` until `user` shows `want` (the store is written
/// asynchronously); fails after 5 s.
async fn until_status(app: &App, viewer: &User, user: &User, want: &str) -> Value {
    let started = Instant::now();
    loop {
        let got = get_status(app, viewer, user).await;
        if got["status"] == want {
            return got;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn online_idle_active_then_offline_after_the_grace_period(backend: Backend) {
    let Some(app) = start(backend, "presence_lifecycle").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let mut bob_ws = app.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    let first = presence(&mut bob_ws).await;
    assert_eq!(status(&first, &alice), "offline");
    assert_eq!(first["last_seen_at"], Value::Null, "never seen");

    let mut alice_ws = app.connect(&alice).await;
    let online = presence(&mut bob_ws).await;
    assert_eq!(status(&online, &alice), "online");
    assert!(online["last_seen_at"].is_string(), "{online}");

    alice_ws.send(json!({"type": "idle"})).await;
    let idle = presence(&mut bob_ws).await;
    assert_eq!(status(&idle, &alice), "idle");
    assert!(idle["last_seen_at"].is_string(), "{idle}");
    assert_eq!(get_status(&app, &bob, &alice).await["status"], "idle");

    alice_ws.send(json!({"type": "active"})).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    // A repeated `active` is no change: nothing is sent.
    alice_ws.send(json!({"type": "active"})).await;
    no_presence(&mut bob_ws, Duration::from_millis(200)).await;

    let closed = Instant::now();
    close(alice_ws).await;
    let offline = presence(&mut bob_ws).await;
    let after = closed.elapsed();
    assert_eq!(status(&offline, &alice), "offline");
    assert!(
        after >= Duration::from_millis(GRACE_MS - 50),
        "offline after {after:?}, before the grace period of {GRACE_MS} ms"
    );
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    let got = get_status(&app, &bob, &alice).await;
    assert_eq!(
        (&got["status"], &got["last_seen_at"]),
        (&json!("offline"), &offline["last_seen_at"])
    );
    app.stop().await;
}

async fn a_quick_reconnect_shows_no_offline(backend: Backend) {
    let Some(app) = start(backend, "presence_quick_reconnect").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let alice_ws = app.connect(&alice).await;
    let mut bob_ws = app.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");

    close(alice_ws).await;
    let again = app.connect(&alice).await;
    // Well past the grace period: no offline (and no online) frame.
    no_presence(&mut bob_ws, Duration::from_millis(3 * GRACE_MS)).await;
    assert_eq!(get_status(&app, &bob, &alice).await["status"], "online");
    // The presence still follows the new connection.
    close(again).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    app.stop().await;
}

async fn the_best_connection_wins(backend: Backend) {
    let Some(app) = start(backend, "presence_best_connection").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let mut phone = app.connect(&alice).await;
    let mut laptop = app.connect(&alice).await;
    let mut bob_ws = app.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");

    phone.send(json!({"type": "idle"})).await;
    no_presence(&mut bob_ws, Duration::from_millis(300)).await;
    laptop.send(json!({"type": "idle"})).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "idle");
    phone.send(json!({"type": "active"})).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    // The active connection closes: the idle one remains.
    close(phone).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "idle");
    close(laptop).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    app.stop().await;
}

async fn subscribe_replaces_the_set(backend: Backend) {
    let Some(app) = start(backend, "presence_subscribe_replaces").await else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    let mut bob_ws = app.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    subscribe(&mut bob_ws, &[&carol]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &carol), "offline");

    let _alice_ws = app.connect(&alice).await;
    no_presence(&mut bob_ws, Duration::from_millis(300)).await;
    let _carol_ws = app.connect(&carol).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &carol), "online");
    // Adding alice: her current status only (carol was subscribed already).
    subscribe(&mut bob_ws, &[&carol, &alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    no_presence(&mut bob_ws, Duration::from_millis(300)).await;
    // An empty set stops everything.
    subscribe(&mut bob_ws, &[]).await;
    let _again = app.connect(&carol).await;
    drop(_carol_ws);
    no_presence(&mut bob_ws, Duration::from_millis(3 * GRACE_MS)).await;
    app.stop().await;
}

async fn more_than_200_ids_are_refused(backend: Backend) {
    let Some(app) = start(backend, "presence_too_many").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let ids: Vec<String> = (0..201).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut bob_ws = app.connect(&bob).await;
    bob_ws
        .send(json!({"type": "presence.subscribe", "user_ids": ids}))
        .await;
    bob_ws.expect_error(None, "validation_failed").await;
    // The refused set did not replace anything, and 200 are fine.
    bob_ws
        .send(json!({"type": "presence.subscribe", "user_ids": &ids[..200]}))
        .await;
    for _ in 0..200 {
        assert_eq!(presence(&mut bob_ws).await["status"], "offline");
    }

    let (s, body) = app
        .get(
            &format!("/chat/presence?user_ids={}", ids.join(",")),
            &alice,
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("validation_failed")),
        "{body}"
    );
    let (s, body) = app
        .get(
            &format!("/chat/presence?user_ids={},nope", alice.id),
            &alice,
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_id")),
        "{body}"
    );
    bob_ws
        .send(json!({"type": "presence.subscribe", "user_ids": ["nope"]}))
        .await;
    bob_ws.expect_error(None, "malformed_frame").await;
    app.stop().await;
}

async fn get_presence_answers_for_each_id(backend: Backend) {
    let Some(app) = start(backend, "presence_get").await else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    let mut alice_ws = app.connect(&alice).await;
    let _carol_ws = app.connect(&carol).await;
    alice_ws.send(json!({"type": "idle"})).await;
    until_status(&app, &bob, &alice, "idle").await;
    let path = format!(
        "/chat/presence?user_ids={},{},{},{}",
        alice.id, bob.id, carol.id, alice.id
    );
    let (s, body) = app.get(&path, &bob).await;
    assert_eq!(s, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    let got: Vec<(&str, &str, bool)> = items
        .iter()
        .map(|i| {
            (
                i["user_id"].as_str().unwrap(),
                i["status"].as_str().unwrap(),
                i["last_seen_at"].is_string(),
            )
        })
        .collect();
    let (a, b, c) = (
        alice.id.to_string(),
        bob.id.to_string(),
        carol.id.to_string(),
    );
    // In the order asked, duplicates once; bob never connected: never seen.
    assert_eq!(
        got,
        vec![
            (a.as_str(), "idle", true),
            (b.as_str(), "offline", false),
            (c.as_str(), "online", true)
        ]
    );
    let (s, _) = app.call(reqwest::Method::GET, &path, None, None).await;
    assert_eq!(s, 401);
    app.stop().await;
}

async fn a_blocker_appears_offline(backend: Backend) {
    let Some(app) = start(backend, "presence_blocker").await else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    let mut alice_ws = app.connect(&alice).await;
    app.block(&alice, &bob).await;
    // Once chat has the block, bob sees alice offline and never seen; carol sees her.
    until_status(&app, &carol, &alice, "online").await;
    let got = until_status(&app, &bob, &alice, "offline").await;
    assert_eq!(got["last_seen_at"], Value::Null);
    assert_eq!(get_status(&app, &carol, &alice).await["status"], "online");
    // Alice blocks bob, not the other way round: she still sees him.
    let _bob_ws0 = app.connect(&bob).await;
    until_status(&app, &alice, &bob, "online").await;

    let mut bob_ws = app.connect(&bob).await;
    let mut carol_ws = app.connect(&carol).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    subscribe(&mut carol_ws, &[&alice]).await;
    let hidden = presence(&mut bob_ws).await;
    assert_eq!(
        (status(&hidden, &alice).as_str(), &hidden["last_seen_at"]),
        ("offline", &Value::Null)
    );
    assert_eq!(status(&presence(&mut carol_ws).await, &alice), "online");
    alice_ws.send(json!({"type": "idle"})).await;
    assert_eq!(status(&presence(&mut carol_ws).await, &alice), "idle");
    no_presence(&mut bob_ws, Duration::from_millis(300)).await;
    app.stop().await;
}

// ---- several nodes (Redis) ----------------------------------------------------------

/// Both nodes on one fresh key prefix, with short presence timings.
fn on(prefix: String) -> impl FnOnce(&mut chat::Config) {
    move |c| {
        short(c);
        c.presence_prefix = prefix;
        c.fanout_channel = format!("test:chat:{}", uuid::Uuid::now_v7().simple());
    }
}

fn prefix() -> String {
    format!("test:presence:{}", uuid::Uuid::now_v7().simple())
}

/// Two nodes on a fresh prefix of the shared Redis; the guard deletes its keys.
async fn two_nodes(backend: Backend, test: &str) -> Option<(App, App, Keys)> {
    if !common::nodes_can_share(backend, test) {
        return None;
    }
    let redis = kit::testing::redis_url(test)?;
    let p = prefix();
    let (a, b) =
        common::start_two_nodes(backend, test, &redis, on(p.clone()), on(p.clone())).await?;
    Some((a, b, Keys { redis, prefix: p }))
}

/// A test's presence keys in the shared Redis (never FLUSHALL): deleted by [`Keys::delete`].
struct Keys {
    redis: String,
    prefix: String,
}

impl Keys {
    async fn delete(self) {
        let client = redis::Client::open(self.redis.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

async fn a_subscriber_on_another_node_sees_changes(backend: Backend) {
    let test = "presence_two_nodes";
    let Some((a, b, keys)) = two_nodes(backend, test).await else {
        return;
    };
    let [alice, bob] = a.users(["alice", "bob"]).await;
    let mut bob_ws = b.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    let mut alice_ws = a.connect(&alice).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    alice_ws.send(json!({"type": "idle"})).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "idle");
    assert_eq!(get_status(&b, &bob, &alice).await["status"], "idle");
    // A quick reconnect to the other node: no blip.
    close(alice_ws).await;
    let alice_b = b.connect(&alice).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    no_presence(&mut bob_ws, Duration::from_millis(3 * GRACE_MS)).await;
    close(alice_b).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    b.stop().await;
    a.stop().await;
    keys.delete().await;
}

async fn the_best_node_wins(backend: Backend) {
    let test = "presence_best_node";
    let Some((a, b, keys)) = two_nodes(backend, test).await else {
        return;
    };
    let [alice, bob] = a.users(["alice", "bob"]).await;
    let mut on_a = a.connect(&alice).await;
    let mut on_b = b.connect(&alice).await;
    let mut bob_ws = a.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    on_a.send(json!({"type": "idle"})).await;
    no_presence(&mut bob_ws, Duration::from_millis(300)).await;
    on_b.send(json!({"type": "idle"})).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "idle");
    on_a.send(json!({"type": "active"})).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");
    // Node A's active connection goes: B's idle one remains, after A's grace period.
    close(on_a).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "idle");
    close(on_b).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    b.stop().await;
    a.stop().await;
    keys.delete().await;
}

/// Node A loses Redis for good with alice connected (as if killed: no unregistering,
/// no more heartbeats). Node B notices A's liveness key expired and takes alice offline
/// once the grace period since A's last heartbeat is over.
async fn a_dead_nodes_users_go_offline_on_the_others(backend: Backend) {
    let test = "presence_dead_node";
    if !common::nodes_can_share(backend, test) {
        return;
    }
    let Some(redis) = kit::testing::redis_url(test) else {
        return;
    };
    let proxy = kit::testing::FaultProxy::start(&kit::testing::url_addr(&redis))
        .await
        .unwrap();
    let via_proxy = kit::testing::with_addr(&redis, &proxy.addr().to_string());
    let p = prefix();
    let on_a = on(p.clone());
    let Some(a) = common::start_with(backend, test, move |o| {
        o.common.redis_url = Some(via_proxy);
        on_a(&mut o.config);
    })
    .await
    else {
        return;
    };
    let b = a.another_node_with(on(p.clone()), &redis).await;
    let keys = Keys {
        redis: redis.clone(),
        prefix: p,
    };

    let [alice, bob] = a.users(["alice", "bob"]).await;
    let _alice_ws = a.connect(&alice).await;
    let mut bob_ws = b.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    let mut first = presence(&mut bob_ws).await;
    if first["status"] == "offline" {
        // A's write may still be on its way.
        first = presence(&mut bob_ws).await;
    }
    assert_eq!(status(&first, &alice), "online");
    // Let one heartbeat of A through, then cut it off.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.cut();
    let cut = Instant::now();
    let offline = presence(&mut bob_ws).await;
    let after = cut.elapsed();
    assert_eq!(status(&offline, &alice), "offline");
    // Not before the grace period from A's last heartbeat (≤ 100 ms before the cut).
    assert!(
        after >= Duration::from_millis(GRACE_MS - 150),
        "offline {after:?} after the cut"
    );
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    b.stop().await;
    a.stop().await;
    keys.delete().await;
}

/// Redis dies under a node: sockets still connect and work, `GET /chat/presence` still
/// answers (this node's own users as they are, the rest offline), errors are counted, no
/// panic. Once Redis is back (empty), presence works again without a restart.
async fn a_redis_outage_degrades_presence_and_blocks_nothing(backend: Backend) {
    let test = "presence_redis_outage";
    let Some(mut redis) = bus::testing::PrivateRedis::start(test) else {
        return;
    };
    let url = redis.url();
    let Some(app) = common::start_with(backend, test, move |o| {
        short(&mut o.config);
        o.common.redis_url = Some(url);
    })
    .await
    else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    let mut bob_ws = app.connect(&bob).await;
    subscribe(&mut bob_ws, &[&alice]).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "offline");
    let _alice_ws = app.connect(&alice).await;
    assert_eq!(status(&presence(&mut bob_ws).await, &alice), "online");

    redis.kill();
    // A socket opens and answers; the route answers from this node's own connections.
    let mut carol_ws = app.connect(&carol).await;
    carol_ws.ping_pong().await;
    let started = Instant::now();
    let (s, body) = app
        .get(
            &format!("/chat/presence?user_ids={},{}", alice.id, carol.id),
            &bob,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["items"][0]["status"], "online", "{body}");
    assert_eq!(body["items"][1]["status"], "online", "{body}");
    let (room_owner, room) = (&bob, app.room(&bob, "r", "public").await);
    app.send(&room, room_owner, "sends still work").await;
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chat_presence_redis_errors_total") && !l.ends_with(" 0")),
        "no Redis error counted"
    );

    // Back, empty: the heartbeat writes this node's users again; changes flow again.
    redis.restart();
    until_status(&app, &bob, &carol, "online").await;
    subscribe(&mut bob_ws, &[&carol]).await;
    let mut current = presence(&mut bob_ws).await;
    while current["user_id"] != carol.id.to_string() {
        current = presence(&mut bob_ws).await;
    }
    assert_eq!(status(&current, &carol), "online");
    carol_ws.send(json!({"type": "idle"})).await;
    let mut idle = presence(&mut bob_ws).await;
    while idle["user_id"] != carol.id.to_string() || idle["status"] == "online" {
        idle = presence(&mut bob_ws).await;
    }
    assert_eq!(status(&idle, &carol), "idle");
    app.stop().await;
}
