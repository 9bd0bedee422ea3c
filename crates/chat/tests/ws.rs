//! The WebSocket protocol with real clients, on both backends.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Closed, Ws, events_until, seqs};
use futures::StreamExt;
use kit::db::Backend;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

kit::backend_tests!(
    authentication,
    send_ack_and_live_events,
    pipelined_sends_keep_their_order,
    resume_has_no_gap_at_the_switch_over,
    typing_reaches_others_only,
    ping_and_malformed_frames,
    membership_changes_subscriptions_at_once,
    slow_consumer_is_closed_and_can_resume,
    revoked_session_is_disconnected,
    oversized_frame_closes,
    oversized_message_in_fragments_closes_1009,
    websocket_send_is_rate_limited,
    heartbeat_and_idle_timeout,
    expired_token_closes_the_socket,
    connections_per_user_are_capped,
    control_characters_are_refused,
    live_events_wait_for_the_first_frame_briefly,
);

async fn authentication(backend: Backend) {
    let Some(app) = common::start(backend, "ws_authentication").await else {
        return;
    };
    let alice = app.user("alice").await;
    // No token, bad token: 401 before any upgrade.
    for url in [
        app.ws_url(),
        format!("{}?access_token=garbage", app.ws_url()),
    ] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 401);
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    // The query parameter (browsers) works.
    let url = format!("{}?access_token={}", app.ws_url(), alice.token);
    let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let ws = Ws::ready(stream).await;
    assert_eq!(ws.ready["rooms"], json!({}));
    // A plain GET is told what it should have done.
    let (s, b) = app.get("/chat/ws", &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("websocket_required")));
    app.stop().await;
}

async fn send_ack_and_live_events(backend: Backend) {
    let Some(app) = common::start(backend, "send_ack_and_live_events").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let private = app.room(&alice, "p", "private").await;
    let mut a = app.connect(&alice).await;
    let mut b = app.connect(&bob).await;
    assert_eq!(b.ready["rooms"][&room], 2);

    a.send_message(&room, " hello ", "x1").await;
    let ack = a.next_of("ack").await;
    assert_eq!(ack["client_msg_id"], "x1");
    let m = &ack["message"];
    assert_eq!(
        (m["body"].as_str(), m["seq"].as_i64()),
        (Some("hello"), Some(3))
    );
    // Stored before the ack: HTTP sees it.
    let (_, h) = app.get(&format!("/chat/rooms/{room}/messages"), &bob).await;
    assert_eq!(h["items"][0]["id"], m["id"]);

    let ev = b.next_json().await;
    assert_eq!(ev["type"], "event");
    assert_eq!(
        (ev["room_id"].as_str(), ev["seq"].as_i64()),
        (Some(room.as_str()), Some(3))
    );
    assert_eq!(ev["event"]["kind"], "message.created");
    assert_eq!(ev["event"]["seq"], 3);
    assert_eq!(ev["event"]["message"], *m);
    // HTTP sends reach sockets too; edits and deletes are events.
    let sent = app.send(&room, &bob, "via http").await;
    let ev = b.next_json().await;
    assert_eq!(ev["event"]["message"], sent);
    let id = m["id"].as_str().unwrap();
    let (s, _) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{id}"),
            json!({"body": "edited"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    let ev = b.next_json().await;
    assert_eq!(
        (ev["seq"].as_i64(), ev["event"]["kind"].as_str()),
        (Some(5), Some("message.updated"))
    );
    assert_eq!(ev["event"]["message"]["body"], "edited");

    // Same client_msg_id again: the same message, no new event.
    a.send_message(&room, "hello", "x1").await;
    let again = a.next_of("ack").await;
    assert_eq!(again["message"]["id"], m["id"]);
    // Errors carry the client_msg_id and a code; the socket stays usable.
    a.send_message(&room, "   ", "x2").await;
    a.expect_error(Some("x2"), "validation_failed").await;
    b.send_message(&private, "hi", "x3").await;
    b.expect_error(Some("x3"), "room_not_found").await;
    b.send(json!({"type": "send", "room_id": room, "body": "hi"}))
        .await;
    let err = b.next_of("error").await;
    assert_eq!(
        err["code"], "malformed_frame",
        "client_msg_id is required on the socket"
    );
    b.assert_quiet(Duration::from_millis(300)).await;
    let metrics = app.metrics().await;
    for name in [
        "chat_ws_connections",
        "chat_messages_stored_total",
        "chat_fanout_deliveries_total",
        "chat_fanout_latency_seconds",
        "chat_send_batch_seconds",
        "chat_send_queue_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    app.stop().await;
}

/// A client that does not wait for each ack: its sends are stored in the order sent
/// (per room, seqs follow that order), each gets its own ack in that order, and a bad
/// one in the middle fails alone.
async fn pipelined_sends_keep_their_order(backend: Backend) {
    let Some(app) = common::start_unthrottled(backend, "pipelined_sends_keep_their_order").await
    else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let other = app.room(&alice, "other", "public").await;
    let mut a = app.connect(&alice).await;
    let mut b = app.connect(&bob).await;
    let n = 40;
    for i in 0..n {
        let target = if i % 3 == 0 { &other } else { &room };
        let body = if i == 17 {
            "   ".to_owned()
        } else {
            format!("m{i}")
        };
        a.send_message(target, &body, &format!("p{i}")).await;
    }
    let mut last_seq = std::collections::HashMap::new();
    for i in 0..n {
        let frame = loop {
            let f = a.next_json().await;
            if f["type"] == "ack" || f["type"] == "error" {
                break f;
            }
        };
        assert_eq!(
            frame["client_msg_id"],
            format!("p{i}"),
            "answers in send order"
        );
        if i == 17 {
            assert_eq!(frame["code"], "validation_failed");
            continue;
        }
        let m = &frame["message"];
        assert_eq!(m["body"], format!("m{i}"));
        let seq = m["seq"].as_i64().unwrap();
        let room_id = m["room_id"].as_str().unwrap().to_owned();
        if let Some(prev) = last_seq.insert(room_id, seq) {
            assert_eq!(seq, prev + 1, "seqs follow the send order, no gap");
        }
    }
    // Bob (a member of `room` only) sees that room's messages in the same order.
    let bodies: Vec<String> = (0..n)
        .filter(|i| i % 3 != 0 && *i != 17)
        .map(|i| format!("m{i}"))
        .collect();
    let mut seen = Vec::new();
    while seen.len() < bodies.len() {
        let ev = b.next_json().await;
        if ev["type"] == "event" && ev["event"]["kind"] == "message.created" {
            seen.push(ev["event"]["message"]["body"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, bodies);
    app.stop().await;
}

async fn resume_has_no_gap_at_the_switch_over(backend: Backend) {
    let Some(app) = common::start_unthrottled(backend, "resume_no_gap").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let quiet = app.room(&alice, "quiet", "public").await;
    app.join(&quiet, &bob).await;
    for i in 0..40 {
        app.send(&room, &alice, &format!("before {i}")).await;
    }
    // Traffic keeps flowing while Bob reconnects and resumes from seq 0 — in both rooms,
    // the second from its last seq but one.
    let writer = app.send_in_background(
        &room,
        &alice,
        (0..60).map(|i| format!("during {i}")).collect(),
        None,
    );
    let quiet_writer = app.send_in_background(
        &quiet,
        &alice,
        (0..20).map(|i| format!("during {i}")).collect(),
        Some(Duration::from_millis(5)),
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut b = app.connect(&bob).await;
    // The client reads `ready`, then resumes (a round trip in which live events arrive at
    // the server); a little extra delay makes sure some do.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quiet_from = b.ready["rooms"][&quiet].as_i64().unwrap() - 1;
    b.send(json!({"type": "resume", "rooms": {room.clone(): 0, quiet.clone(): quiet_from}}))
        .await;
    writer.await.unwrap();
    quiet_writer.await.unwrap();
    let last = 2 + 40 + 60;
    let quiet_last = 2 + 20;
    let mut per_room: std::collections::HashMap<String, Vec<i64>> = Default::default();
    let mut events = Vec::new();
    while per_room.get(&room).and_then(|s| s.last()) != Some(&last)
        || per_room.get(&quiet).and_then(|s| s.last()) != Some(&quiet_last)
    {
        let v = b.next_json().await;
        if v["type"] != "event" {
            continue;
        }
        let r = v["room_id"].as_str().unwrap().to_owned();
        per_room
            .entry(r.clone())
            .or_default()
            .push(v["seq"].as_i64().unwrap());
        if r == room {
            events.push(v);
        }
    }
    // API.md: every missed event in seq order, THEN live events — per room strictly
    // increasing and gap-free from the resume point, nothing live before the replay.
    assert_eq!(
        per_room[&room],
        (1..=last).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(
        per_room[&quiet],
        (quiet_from + 1..=quiet_last).collect::<Vec<_>>()
    );
    assert_eq!(events[0]["event"]["kind"], "member.joined");
    b.assert_quiet(Duration::from_millis(300)).await;

    // Resuming from the middle replays from there; unknown rooms get an error.
    b.send(json!({"type": "resume", "rooms": {room.clone(): last - 3, uuid::Uuid::now_v7().to_string(): 0}}))
        .await;
    let mut got = Vec::new();
    let mut saw_error = false;
    while got.len() < 3 || !saw_error {
        let v = b.next_json().await;
        match v["type"].as_str().unwrap() {
            "event" => got.push(v["seq"].as_i64().unwrap()),
            "error" => {
                assert_eq!(v["code"], "not_member");
                saw_error = true;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(got, [last - 2, last - 1, last]);
    app.stop().await;
}

async fn typing_reaches_others_only(backend: Backend) {
    let Some(app) = common::start(backend, "typing_reaches_others_only").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let other = app.room(&bob, "other", "private").await;
    let mut a = app.connect(&alice).await;
    let mut a2 = app.connect(&alice).await;
    let mut b = app.connect(&bob).await;
    a.send(json!({"type": "typing", "room_id": room})).await;
    let t = b.next_json().await;
    assert_eq!(
        t,
        json!({"type": "typing", "room_id": room, "user_id": alice.id})
    );
    // Throttled: a second notice right away is not relayed.
    a.send(json!({"type": "typing", "room_id": room})).await;
    b.assert_quiet(Duration::from_millis(300)).await;
    // Not to the typist's own devices, and not stored.
    a.assert_quiet(Duration::from_millis(100)).await;
    a2.assert_quiet(Duration::from_millis(100)).await;
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &alice).await;
    assert_eq!(r["last_seq"], 2);
    a.send(json!({"type": "typing", "room_id": other})).await;
    assert_eq!(a.next_json().await["code"], "not_member");
    app.stop().await;
}

async fn ping_and_malformed_frames(backend: Backend) {
    let Some(app) = common::start(backend, "ping_and_malformed_frames").await else {
        return;
    };
    let alice = app.user("alice").await;
    let mut a = app.connect(&alice).await;
    a.ping_pong().await;
    a.send_raw(WsMessage::Text("this is not json".into())).await;
    assert_eq!(a.next_json().await["code"], "malformed_frame");
    a.send(json!({"type": "teleport"})).await;
    assert_eq!(a.next_json().await["code"], "malformed_frame");
    a.send_message("nope", "x", "c").await;
    a.expect_error(Some("c"), "malformed_frame").await;
    a.send(json!([1, 2])).await;
    assert_eq!(a.next_json().await["code"], "malformed_frame");
    a.send_raw(WsMessage::Binary(vec![1u8, 2, 3].into())).await;
    assert_eq!(a.next_json().await["code"], "malformed_frame");
    // Still open and working.
    a.ping_pong().await;
    app.stop().await;
}

async fn membership_changes_subscriptions_at_once(backend: Backend) {
    let Some(app) =
        common::start_with(backend, "membership_subscriptions", |o| o.with_users = true).await
    else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let public = app.room(&alice, "pub", "public").await;
    let private = app.room(&alice, "priv", "private").await;
    let mut b = app.connect(&bob).await;
    let mut b2 = app.connect(&bob).await;
    app.send(&public, &alice, "before joining").await;
    b.assert_quiet(Duration::from_millis(200)).await;

    // Joining over HTTP subscribes Bob's open sockets, starting with his member.joined.
    app.join(&public, &bob).await;
    for ws in [&mut b, &mut b2] {
        let ev = ws.next_json().await;
        assert_eq!(
            (ev["seq"].as_i64(), ev["event"]["kind"].as_str()),
            (Some(3), Some("member.joined"))
        );
    }
    app.send(&public, &alice, "after joining").await;
    assert_eq!(
        b.next_json().await["event"]["message"]["body"],
        "after joining"
    );
    assert_eq!(
        b2.next_json().await["event"]["message"]["body"],
        "after joining"
    );

    // An invitation too.
    let (s, _) = app
        .post(
            &format!("/chat/rooms/{private}/members"),
            json!({"user_id": bob.id}),
            &alice,
        )
        .await;
    assert_eq!(s, 201);
    let ev = b.next_json().await;
    assert_eq!(
        (ev["room_id"].as_str(), ev["event"]["kind"].as_str()),
        (Some(private.as_str()), Some("member.joined"))
    );
    app.send(&private, &alice, "secret").await;
    assert_eq!(b.next_json().await["event"]["message"]["body"], "secret");

    // Removed: the removal is the last event Bob gets from that room.
    let (s, _) = app
        .delete(&format!("/chat/rooms/{private}/members/{}", bob.id), &alice)
        .await;
    assert_eq!(s, 204);
    let ev = b.next_json().await;
    assert_eq!(ev["event"]["kind"], "member.removed");
    app.send(&private, &alice, "not for bob").await;
    // Leaving: same.
    let (s, _) = app
        .post(&format!("/chat/rooms/{public}/leave"), json!({}), &bob)
        .await;
    assert_eq!(s, 204);
    let ev = b.next_json().await;
    assert_eq!(
        (ev["room_id"].as_str(), ev["event"]["kind"].as_str()),
        (Some(public.as_str()), Some("member.left"))
    );
    app.send(&public, &alice, "not for bob either").await;
    b.assert_quiet(Duration::from_millis(300)).await;
    // Nor can a resume reach the rooms any more.
    b.send(json!({"type": "resume", "rooms": {private.clone(): 0}}))
        .await;
    assert_eq!(b.next_json().await["code"], "not_member");
    app.stop().await;
}

async fn slow_consumer_is_closed_and_can_resume(backend: Backend) {
    let Some(app) = common::start_with(backend, "slow_consumer", |o| {
        o.config.send_rate_per_sec = 100_000.0;
        o.config.send_burst = 100_000;
        o.config.ws_outbound_queue = 4;
        o.config.ws_inbox_queue = 8;
        o.config.ws_send_timeout_ms = 300;
    })
    .await
    else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;

    // Bob connects with a tiny receive buffer and then does not read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(app.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", bob.token).parse().unwrap(),
    );
    let (stream, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let mut slow = Ws::ready(stream).await;

    // A firehose of large messages (4-byte characters: 16 KB frames) from several senders.
    let body = "𝄞".repeat(3990);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let bodies = (0..40).map(|i| format!("{t}/{i} {body}")).collect();
            app.send_in_background(&room, &alice, bodies, None)
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let last = 2 + 8 * 40;

    // Reading now: what was buffered, then the close with 4008.
    let mut delivered = Vec::new();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(20), slow.stream.next())
            .await
            .unwrap()
        {
            Some(Ok(WsMessage::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                delivered.push(v["seq"].as_i64().unwrap());
            }
            Some(Ok(WsMessage::Close(Some(f)))) => break Closed::Code(f.code.into()),
            Some(Ok(_)) => continue,
            _ => break Closed::NoFrame,
        }
    };
    println!(
        "slow client got {} events before the close",
        delivered.len()
    );
    assert_eq!(closed, Closed::Code(4008));
    assert!(
        (delivered.len() as i64) < last - 2,
        "the slow client was cut off early"
    );
    assert_eq!(
        delivered,
        (3..3 + delivered.len() as i64).collect::<Vec<_>>(),
        "in order until cut off"
    );

    // It reconnects and resumes from what it has: everything else arrives, in order.
    let mut b = app.connect(&bob).await;
    let from = delivered.last().copied().unwrap_or(2);
    b.send(json!({"type": "resume", "rooms": {room.clone(): from}}))
        .await;
    let rest = events_until(&mut b, &room, last).await;
    assert_eq!(seqs(&rest), (from + 1..=last).collect::<Vec<_>>());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("chat_ws_slow_consumer_disconnects_total"),
        "{metrics}"
    );
    app.stop().await;
}

async fn revoked_session_is_disconnected(backend: Backend) {
    let Some(app) = common::start(backend, "revoked_session_is_disconnected").await else {
        return;
    };
    let alice_id = uuid::Uuid::now_v7();
    let (sid1, sid2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let t1 = app.issuer.token_for_session(alice_id, "alice", sid1);
    let t2 = app.issuer.token_for_session(alice_id, "alice", sid2);
    let mut one = Ws::connect(&app.ws_url(), &t1).await;
    let mut two = Ws::connect(&app.ws_url(), &t2).await;
    app.revoke_session(sid1, alice_id).await;
    assert_eq!(one.closed(Duration::from_secs(5)).await, Closed::Code(4001));
    // The other session is untouched.
    two.ping_pong().await;
    // The revoked token is refused from now on, over HTTP and WebSocket.
    let (s, b) = app
        .call(reqwest::Method::GET, "/chat/rooms", None, Some(&t1))
        .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("session_revoked")));
    match tokio_tungstenite::connect_async(format!("{}?access_token={t1}", app.ws_url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    app.stop().await;
}

/// A message over `ws_max_frame_bytes` in fragments that are each under it: the server
/// reads every byte before tungstenite reports the capacity error, so the close frame
/// arrives (no reset of unread data) and must carry 1009.
async fn oversized_message_in_fragments_closes_1009(backend: Backend) {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let Some(app) = common::start(backend, "oversized_message_in_fragments").await else {
        return;
    };
    let alice = app.user("alice").await;
    let mut a = app.connect(&alice).await;
    // 40 KiB + 40 KiB: each fragment fits the 64 KiB default, the message does not.
    let half = "x".repeat(40 * 1024);
    let first = Frame::message(half.clone(), OpCode::Data(Data::Text), false);
    let last = Frame::message(half, OpCode::Data(Data::Continue), true);
    futures::SinkExt::send(&mut a.stream, WsMessage::Frame(first))
        .await
        .unwrap();
    futures::SinkExt::send(&mut a.stream, WsMessage::Frame(last))
        .await
        .unwrap();
    match a.closed(Duration::from_secs(5)).await {
        Closed::Code(code) => assert_eq!(code, 1009),
        Closed::NoFrame => panic!("closed without a close frame"),
    }
    app.stop().await;
}

async fn oversized_frame_closes(backend: Backend) {
    let Some(app) = common::start(backend, "oversized_frame_closes").await else {
        return;
    };
    let alice = app.user("alice").await;
    let mut a = app.connect(&alice).await;
    let huge = json!({"type": "ping", "pad": "x".repeat(70 * 1024)});
    let _ = futures::SinkExt::send(&mut a.stream, WsMessage::Text(huge.to_string().into())).await;
    match a.closed(Duration::from_secs(5)).await {
        Closed::Code(code) => assert_eq!(code, 1009),
        Closed::NoFrame => {}
    }
    // The service is fine.
    let mut again = app.connect(&alice).await;
    again.ping_pong().await;
    app.stop().await;
}

async fn websocket_send_is_rate_limited(backend: Backend) {
    let Some(app) = common::start_rate_limited(backend, "websocket_send_is_rate_limited").await
    else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let mut a = app.connect(&alice).await;
    for i in 0..30 {
        a.send_message(&room, "x", &format!("c{i}")).await;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < 30 {
        let v = a.next_json().await;
        match v["type"].as_str().unwrap() {
            "ack" => acks += 1,
            "error" => {
                assert_eq!(v["code"], "rate_limited");
                assert!(v["retry_after_ms"].as_u64().unwrap() >= 1);
                assert!(v["client_msg_id"].is_string());
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(
        acks >= 20 && limited >= 5,
        "{acks} acked, {limited} limited"
    );
    app.stop().await;
}

async fn heartbeat_and_idle_timeout(backend: Backend) {
    let Some(app) = common::start_with(backend, "heartbeat_and_idle_timeout", |o| {
        o.config.ws_heartbeat_secs = 1;
        o.config.ws_idle_timeout_secs = 2;
    })
    .await
    else {
        return;
    };
    let alice = app.user("alice").await;
    let mut live = app.connect(&alice).await;
    let mut silent = app.connect(&alice).await;
    // A client that reads answers the server's pings and outlives the idle timeout.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(msg) = tokio::time::timeout_at(deadline, live.stream.next()).await {
        match msg {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings");
    live.ping_pong().await;
    // One that stays silent (no pongs either) is closed.
    assert_eq!(
        silent.closed(Duration::from_secs(5)).await,
        Closed::Code(4009)
    );
    app.stop().await;
}

async fn expired_token_closes_the_socket(backend: Backend) {
    let Some(app) = common::start(backend, "expired_token_closes_the_socket").await else {
        return;
    };
    let now = kit::time::now_ms() / 1000;
    let token = app
        .issuer
        .keys
        .sign(&token::Claims {
            iss: token::ISSUER.to_owned(),
            aud: token::AUDIENCE.to_owned(),
            sub: uuid::Uuid::now_v7(),
            sid: uuid::Uuid::now_v7(),
            exp: now + 2,
            iat: now,
            jti: uuid::Uuid::now_v7(),
            username: "shortlived".to_owned(),
        })
        .unwrap();
    let mut ws = Ws::connect(&app.ws_url(), &token).await;
    assert_eq!(ws.closed(Duration::from_secs(10)).await, Closed::Code(4001));
    app.stop().await;
}

/// The 4th socket of a user (cap 3) is accepted, then closed with 1008
/// `too_many_connections`; other users are not affected, and a closed socket frees a slot.
async fn connections_per_user_are_capped(backend: Backend) {
    let Some(app) = common::start_with(backend, "ws_connections_capped", |o| {
        o.config.ws_max_per_user = 3;
    })
    .await
    else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(app.connect(&alice).await);
    }
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", alice.token).parse().unwrap(),
    );
    let (mut extra, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let reason = match tokio::time::timeout(Duration::from_secs(5), extra.next())
        .await
        .unwrap()
    {
        Some(Ok(WsMessage::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1008);
            f.reason.to_string()
        }
        other => panic!("expected a close frame, got {other:?}"),
    };
    assert_eq!(reason, "too_many_connections");
    // Another user connects; the open ones still work.
    let mut b = app.connect(&bob).await;
    b.ping_pong().await;
    open[0].ping_pong().await;
    // Closing one frees a slot.
    let mut first = open.remove(0);
    futures::SinkExt::close(&mut first.stream).await.unwrap();
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut req = app.ws_url().into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", alice.token).parse().unwrap(),
        );
        let (mut stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        // `ready`, or — until the server has seen the close — 1008 again.
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) if t.contains("\"ready\"") => break,
            Ok(Some(Ok(WsMessage::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1008),
            other => panic!("unexpected {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.metrics().await.contains("chat_ws_refused_total"));
    app.stop().await;
}

/// NUL and other control characters in bodies: 400 over HTTP, an error frame over the
/// socket; control characters and bidi overrides in room names and topics: 400.
async fn control_characters_are_refused(backend: Backend) {
    let Some(app) = common::start(backend, "control_characters_are_refused").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    for body in [
        "nul\u{0}here",
        "bell\u{7}",
        "esc\u{1b}[2J",
        "cr\ronly",
        "c1\u{9b}",
    ] {
        let (s, b) = app
            .post(
                &format!("/chat/rooms/{room}/messages"),
                json!({"body": body}),
                &alice,
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str(), b["errors"][0]["field"].as_str()),
            (400, Some("validation_failed"), Some("body")),
            "{body:?}: {b}"
        );
    }
    // Line feeds, tabs and CRLF are text.
    let ok = app
        .send(&room, &alice, "line one\r\nline two\n\tindented")
        .await;
    assert_eq!(ok["body"], "line one\r\nline two\n\tindented");
    let id = ok["id"].as_str().unwrap();
    let (s, b) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{id}"),
            json!({"body": "edited\u{0}"}),
            &alice,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let mut a = app.connect(&alice).await;
    a.send_message(&room, "nul\u{0}", "n1").await;
    a.expect_error(Some("n1"), "validation_failed").await;

    for (name, topic) in [
        ("evil\u{202E}gnp.exe", "fine"),
        ("iso\u{2066}late", "fine"),
        ("new\nline", "fine"),
        ("fine", "over\u{202D}ride"),
        ("fine", "pop\u{2069}"),
        ("fine", "nul\u{0}"),
    ] {
        let (s, b) = app
            .post(
                "/chat/rooms",
                json!({"name": name, "visibility": "public", "topic": topic}),
                &alice,
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("validation_failed")),
            "{name:?} {topic:?}: {b}"
        );
    }
    let (s, b) = app
        .post(
            "/chat/rooms",
            json!({"name": "עברית and English", "visibility": "public", "topic": "two\nlines"}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{b}");
    app.stop().await;
}

/// Live events after `ready` are held for the client's first frame, but not for longer
/// than `ws_resume_wait_ms`; any frame ends the wait at once.
async fn live_events_wait_for_the_first_frame_briefly(backend: Backend) {
    let Some(app) = common::start_with(backend, "live_events_wait_briefly", |o| {
        o.config.ws_resume_wait_ms = 2_000;
    })
    .await
    else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    // A client that says nothing gets the live event once the wait is over.
    let mut silent = app.connect(&bob).await;
    let started = std::time::Instant::now();
    app.send(&room, &alice, "one").await;
    let ev = silent.next_of("event").await;
    assert_eq!(ev["seq"], 3);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_500), "{waited:?}");
    // One that pings gets it right after the ping.
    let mut talking = app.connect(&bob).await;
    app.send(&room, &alice, "two").await;
    talking.send(json!({"type": "ping"})).await;
    let started = std::time::Instant::now();
    let ev = talking.next_of("event").await;
    assert_eq!(ev["seq"], 4);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_000), "{took:?}");
    app.stop().await;
}
