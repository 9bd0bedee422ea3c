//! Blocks and DMs (issue 14, item 1): a block stops sends in an existing DM both ways, over
//! HTTP and WebSocket, as soon as the user service's `user.blocked` event arrived — chat
//! checks its event-fed copy, not the user service, per send; a blocked pair cannot reopen
//! the DM (nobody is re-added); blocks made before chat consumed the events come from the
//! one-time backfill, retried while the user service cannot answer. Also: DMs and
//! invitations to an id the user service does not know are 404.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{App, User};
use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    a_block_stops_dm_sends_both_ways,
    a_blocked_pair_cannot_reopen_the_dm,
    blocks_made_before_chat_listened_are_backfilled,
    unknown_users_are_not_found,
);

async fn open_dm(app: &App, from: &User, to: &User) -> String {
    let (s, dm) = app.post("/chat/dms", json!({"user_id": to.id}), from).await;
    assert!(s == 200 || s == 201, "{s} {dm}");
    dm["id"].as_str().unwrap().to_owned()
}

async fn members(app: &App, room: &str, u: &User) -> Vec<String> {
    let (s, page) = app.get(&format!("/chat/rooms/{room}/members"), u).await;
    assert_eq!(s, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn send(app: &App, room: &str, u: &User, body: &str, cmid: &str) -> (u16, Value) {
    app.post(
        &format!("/chat/rooms/{room}/messages"),
        json!({"body": body, "client_msg_id": cmid}),
        u,
    )
    .await
}

/// Sends (each with a fresh client_msg_id) until one is answered `want`; returns how
/// long that took. Fails after 5 s.
async fn until_status(app: &App, room: &str, u: &User, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (s, b) = send(app, room, u, "probe", &uuid::Uuid::now_v7().to_string()).await;
        if s == want {
            if want == 403 {
                assert_eq!(b["code"], "blocked", "{b}");
            }
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still {s} {b} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_block_stops_dm_sends_both_ways(backend: Backend) {
    let Some(app) = common::start_with(backend, "block_stops_dm_sends", |o| {
        o.with_users = true;
        o.config.send_rate_per_sec = 10_000.0;
        o.config.send_burst = 10_000;
    })
    .await
    else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    let dm = open_dm(&app, &alice, &bob).await;
    let channel = app.room(&alice, "r", "public").await;
    app.join(&channel, &bob).await;
    let (s, before) = send(&app, &dm, &bob, "before the block", "b1").await;
    assert_eq!(s, 201, "{before}");
    let mut bob_ws = app.connect(&bob).await;
    bob_ws.ping_pong().await;

    // Alice blocks Bob: the user service answers 204 and publishes user.blocked; from
    // its arrival on, Bob's sends to the DM are refused.
    app.block(&alice, &bob).await;
    let took = until_status(&app, &dm, &bob, 403).await;
    println!("the block stopped sends {took:?} after the event was published");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Both ways, and over the socket too.
    let (s, b) = send(&app, &dm, &alice, "from alice", "a1").await;
    assert_eq!((s, b["code"].as_str()), (403, Some("blocked")), "{b}");
    bob_ws.send_message(&dm, "over the socket", "w1").await;
    bob_ws.expect_error(Some("w1"), "blocked").await;
    let mut alice_ws = app.connect(&alice).await;
    alice_ws.send_message(&dm, "over the socket", "w2").await;
    alice_ws.expect_error(Some("w2"), "blocked").await;
    // Nor do typing notices cross the block.
    bob_ws.send(json!({"type": "typing", "room_id": dm})).await;
    alice_ws.assert_quiet(Duration::from_millis(300)).await;
    // Nothing was stored after the block (probes sent before the event arrived may
    // have been); Alice's unread count did not move.
    let (_, history) = app.get(&format!("/chat/rooms/{dm}/messages"), &alice).await;
    let bodies: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies[0], "before the block");
    assert!(bodies[1..].iter().all(|b| *b == "probe"), "{bodies:?}");
    let (_, rooms) = app.get("/chat/rooms", &alice).await;
    let unread = rooms["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == dm.as_str())
        .unwrap()["unread_count"]
        .clone();
    assert_eq!(unread, bodies.len());
    // Editing is refused too (an edit shows new text to the other member); deleting
    // one's own message is not.
    let before_id = before["id"].as_str().unwrap();
    let (s, b) = app
        .patch(
            &format!("/chat/rooms/{dm}/messages/{before_id}"),
            json!({"body": "edited after the block"}),
            &bob,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("blocked")), "{b}");
    // A retry of a send stored before the block still gets its message (idempotency).
    let (s, again) = send(&app, &dm, &bob, "before the block", "b1").await;
    assert_eq!((s, &again["id"]), (200, &before["id"]));
    // Channels are not DMs: the pair still talks there; others still DM Bob.
    let (s, b) = send(&app, &channel, &bob, "in the channel", "c1").await;
    assert_eq!(s, 201, "{b}");
    let carol_dm = open_dm(&app, &carol, &bob).await;
    let (s, b) = send(&app, &carol_dm, &bob, "hi carol", "c2").await;
    assert_eq!(s, 201, "{b}");

    // The block is lifted (user.unblocked): the DM works again, both ways.
    app.unblock(&alice, &bob).await;
    until_status(&app, &dm, &bob, 201).await;
    let (s, b) = send(&app, &dm, &alice, "welcome back", "a2").await;
    assert_eq!(s, 201, "{b}");
    alice_ws.send_message(&dm, "socket again", "w3").await;
    assert_eq!(alice_ws.next_of("ack").await["client_msg_id"], "w3");
    let mut bob_again = app.connect(&bob).await;
    bob_again
        .send(json!({"type": "typing", "room_id": dm}))
        .await;
    let typing = alice_ws.next_of("typing").await;
    assert_eq!(typing["user_id"], bob.id.to_string());
    // The blocked side blocking back is the same.
    app.block(&bob, &alice).await;
    until_status(&app, &dm, &alice, 403).await;
    app.stop().await;
}

async fn a_blocked_pair_cannot_reopen_the_dm(backend: Backend) {
    let Some(app) = common::start_with(backend, "blocked_pair_cannot_reopen", |o| {
        o.with_users = true
    })
    .await
    else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let dm = open_dm(&app, &alice, &bob).await;
    let (s, _) = app
        .post(&format!("/chat/rooms/{dm}/leave"), json!({}), &bob)
        .await;
    assert_eq!(s, 204);
    let (_, before) = app.get(&format!("/chat/rooms/{dm}"), &alice).await;

    // Alice blocks Bob, who had left: neither side reopens the DM, nobody is re-added,
    // and no event is written.
    app.block(&alice, &bob).await;
    for (from, to) in [(&alice, &bob), (&bob, &alice)] {
        let (s, b) = app.post("/chat/dms", json!({"user_id": to.id}), from).await;
        assert_eq!((s, b["code"].as_str()), (403, Some("blocked")), "{b}");
    }
    assert_eq!(members(&app, &dm, &alice).await, [alice.id.to_string()]);
    let (_, after) = app.get(&format!("/chat/rooms/{dm}"), &alice).await;
    assert_eq!(after["last_seq"], before["last_seq"]);
    let (s, _) = app.get(&format!("/chat/rooms/{dm}"), &bob).await;
    assert_eq!(s, 404, "Bob is not back in the DM");

    // Without a block, reopening brings both back (the same room).
    app.unblock(&alice, &bob).await;
    let (s, back) = app
        .post("/chat/dms", json!({"user_id": bob.id}), &alice)
        .await;
    assert_eq!((s, back["id"].as_str()), (200, Some(dm.as_str())), "{back}");
    assert_eq!(back["member_count"], 2);
    app.stop().await;
}

async fn blocks_made_before_chat_listened_are_backfilled(backend: Backend) {
    let Some(app) = common::start_with(backend, "blocks_backfilled", |o| {
        o.with_users = true;
        // The user service cannot list blocks when chat starts: chat retries.
        o.users_blocks_down = true;
    })
    .await
    else {
        return;
    };
    let [alice, bob, carol, dave, erin] =
        app.users(["alice", "bob", "carol", "dave", "erin"]).await;
    let dm = open_dm(&app, &alice, &bob).await;
    let other = open_dm(&app, &carol, &dave).await;
    // Blocks whose events chat never got (more than one page of the list).
    app.block_silently(&bob, &alice);
    app.block_silently(&dave, &carol);
    app.block_silently(&erin, &alice);
    let (s, b) = send(
        &app,
        &dm,
        &alice,
        "not blocked yet, as far as chat knows",
        "x",
    )
    .await;
    assert_eq!(s, 201, "{b}");

    app.set_blocks_down(false);
    // Retried at 0.5 s, 1 s, 2 s…: copied within a few seconds.
    until_status(&app, &dm, &alice, 403).await;
    let (s, b) = send(&app, &other, &dave, "hi", "y").await;
    assert_eq!((s, b["code"].as_str()), (403, Some("blocked")), "{b}");
    // Later events still apply over backfilled rows.
    app.unblock(&bob, &alice).await;
    until_status(&app, &dm, &alice, 201).await;
    app.stop().await;
}

async fn unknown_users_are_not_found(backend: Backend) {
    let Some(app) =
        common::start_with(backend, "unknown_users_not_found", |o| o.with_users = true).await
    else {
        return;
    };
    let alice = app.user("alice").await;
    let ghost = uuid::Uuid::now_v7();
    let (s, b) = app
        .post("/chat/dms", json!({"user_id": ghost}), &alice)
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("user_not_found")),
        "{b}"
    );
    let room = app.room(&alice, "r", "private").await;
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{room}/members"),
            json!({"user_id": ghost}),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("user_not_found")),
        "{b}"
    );
    // Nothing was created: Alice has her channel only, with herself in it.
    let (_, rooms) = app.get("/chat/rooms", &alice).await;
    assert_eq!(rooms["items"].as_array().unwrap().len(), 1, "{rooms}");
    assert_eq!(rooms["items"][0]["member_count"], 1);
    app.stop().await;
}
