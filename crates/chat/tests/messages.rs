//! Messages, idempotency, ordering, edits, tombstones, history and the event log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    send_validates_and_trims,
    history_pages_both_ways,
    client_msg_id_is_idempotent,
    concurrent_senders_get_gap_free_seqs,
    edit_delete_and_replies,
    send_rate_is_limited,
    event_log_pages,
    message_created_goes_through_the_outbox,
    database_outage_is_a_fast_503,
    database_that_stops_answering_is_a_503_within_seconds,
);

async fn send_validates_and_trims(backend: Backend) {
    let Some(app) = common::start(backend, "send_validates_and_trims").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let path = format!("/chat/rooms/{room}/messages");
    let (s, m) = app
        .post(
            &path,
            json!({"body": "  hello  \n", "client_msg_id": "c1"}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{m}");
    assert_eq!(m["body"], "hello");
    assert_eq!(m["room_id"], room.as_str());
    assert_eq!(m["sender_id"], alice.id.to_string());
    assert_eq!(m["seq"], 2);
    assert_eq!(m["client_msg_id"], "c1");
    assert_eq!(m["reply_to"], Value::Null);
    assert_eq!(m["edited_at"], Value::Null);
    assert_eq!(m["deleted"], false);
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(m["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());

    // Limits count characters, not bytes.
    let (s, _) = app
        .post(&path, json!({"body": "ß".repeat(4000)}), &alice)
        .await;
    assert_eq!(s, 201);
    for bad in [
        json!({"body": "ß".repeat(4001)}),
        json!({"body": " \t\n "}),
        json!({"body": ""}),
    ] {
        let (s, b) = app.post(&path, bad, &alice).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
        assert_eq!(b["errors"][0]["field"], "body");
    }
    let (s, b) = app.post(&path, json!({"text": "x"}), &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let (s, b) = app
        .post(&path, json!({"body": "x", "client_msg_id": ""}), &alice)
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let res = app
        .http
        .post(format!("{}{path}", app.url))
        .bearer_auth(&alice.token)
        .body("{\"body\":")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let (s, b) = common::read(res).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("malformed_json")));
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &alice).await;
    assert_eq!(r["last_seq"], 3, "rejected sends take no seq");
    app.stop().await;
}

async fn history_pages_both_ways(backend: Backend) {
    let Some(app) = common::start(backend, "history_pages_both_ways").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let mut seqs = Vec::new();
    for i in 0..7 {
        seqs.push(
            app.send(&room, &alice, &format!("m{i}")).await["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(seqs, [2, 3, 4, 5, 6, 7, 8]);
    let base = format!("/chat/rooms/{room}/messages");
    let bodies = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    // No cursor: the newest, ascending; older ones exist.
    let (s, p) = app.get(&format!("{base}?limit=3"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(bodies(&p), ["m4", "m5", "m6"]);
    assert_eq!(p["has_more"], true);
    let (_, p) = app.get(&format!("{base}?limit=3&before=5"), &alice).await;
    assert_eq!(bodies(&p), ["m0", "m1", "m2"]);
    assert_eq!(p["has_more"], false);
    let (_, p) = app.get(&format!("{base}?limit=3&before=6"), &alice).await;
    assert_eq!(bodies(&p), ["m1", "m2", "m3"]);
    assert_eq!(p["has_more"], true);
    // after: oldest first from there; newer ones exist?
    let (_, p) = app.get(&format!("{base}?limit=3&after=2"), &alice).await;
    assert_eq!(bodies(&p), ["m1", "m2", "m3"]);
    assert_eq!(p["has_more"], true);
    let (_, p) = app.get(&format!("{base}?limit=3&after=5"), &alice).await;
    assert_eq!(bodies(&p), ["m4", "m5", "m6"]);
    assert_eq!(p["has_more"], false);
    let (_, p) = app.get(&base, &alice).await;
    assert_eq!(bodies(&p).len(), 7);
    assert_eq!(p["has_more"], false);
    for bad in ["limit=101", "limit=0", "before=-1", "after=x"] {
        let (s, b) = app.get(&format!("{base}?{bad}"), &alice).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    app.stop().await;
}

async fn client_msg_id_is_idempotent(backend: Backend) {
    let Some(app) = common::start(backend, "client_msg_id_is_idempotent").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let other = app.room(&alice, "other", "public").await;
    let path = format!("/chat/rooms/{room}/messages");
    let (s, first) = app
        .post(&path, json!({"body": "hi", "client_msg_id": "abc"}), &alice)
        .await;
    assert_eq!(s, 201);
    let (s, again) = app
        .post(
            &path,
            json!({"body": "hi (retry)", "client_msg_id": "abc"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(again, first);
    // The same id from another sender is another message.
    let bob = app.user("bob").await;
    app.join(&room, &bob).await;
    let (s, bobs) = app
        .post(&path, json!({"body": "hi", "client_msg_id": "abc"}), &bob)
        .await;
    assert_eq!(s, 201);
    assert_ne!(bobs["id"], first["id"]);
    // Reusing it for another room is a conflict, not a silent duplicate.
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{other}/messages"),
            json!({"body": "hi", "client_msg_id": "abc"}),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (409, Some("client_msg_id_conflict"))
    );

    // 15 concurrent retries of one send: one message, one seq.
    let retries = (0..15)
        .map(|_| {
            let body = json!({"body": "once", "client_msg_id": "race"});
            (path.clone(), body, &alice)
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for (s, b) in app.post_concurrently(retries).await {
        assert!(s == 201 || s == 200, "{s} {b}");
        created += usize::from(s == 201);
        ids.insert(b["id"].as_str().unwrap().to_owned());
    }
    assert_eq!((created, ids.len()), (1, 1));
    let (_, h) = app.get(&format!("{path}?limit=100"), &alice).await;
    let onces = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"] == "once")
        .count();
    assert_eq!(onces, 1);
    let seqs = app.event_seqs(&room, "limit=100", &alice).await;
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no hole from the losers"
    );
    app.stop().await;
}

async fn concurrent_senders_get_gap_free_seqs(backend: Backend) {
    let Some(app) = common::start(backend, "concurrent_senders_gap_free").await else {
        return;
    };
    let owner = app.user("owner").await;
    let room = app.room(&owner, "busy", "public").await;
    let mut senders = Vec::new();
    for i in 0..50 {
        let u = app.user(&format!("u{i}")).await;
        app.join(&room, &u).await;
        senders.push(u);
    }
    let path = &format!("/chat/rooms/{room}/messages");
    let sends = senders
        .iter()
        .flat_map(|u| {
            (0..3).map(move |j| {
                let body =
                    json!({"body": format!("{} #{j}", u.name), "client_msg_id": format!("m{j}")});
                (path.clone(), body, u)
            })
        })
        .collect();
    let mut acked = HashSet::new();
    for (s, b) in app.post_concurrently(sends).await {
        assert_eq!(s, 201, "{b}");
        assert!(
            acked.insert(b["seq"].as_i64().unwrap()),
            "duplicate seq {b}"
        );
    }
    // 1 (owner) + 50 joins + 150 messages, every seq exactly once.
    let total = 1 + 50 + 150;
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = app
            .get(
                &format!("/chat/rooms/{room}/events?after={after}&limit=100"),
                &owner,
            )
            .await;
        assert_eq!(s, 200);
        for e in page["items"].as_array().unwrap() {
            after = e["seq"].as_i64().unwrap();
            seqs.push(after);
            if e["kind"] == "message.created" {
                assert_eq!(e["message"]["seq"], e["seq"]);
                assert!(acked.contains(&after));
            }
        }
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seqs, (1..=total).collect::<Vec<i64>>());
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &owner).await;
    assert_eq!(r["last_seq"], total);
    app.stop().await;
}

async fn edit_delete_and_replies(backend: Backend) {
    let Some(app) = common::start(backend, "edit_delete_and_replies").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    app.join(&room, &carol).await;
    let elsewhere = app.room(&alice, "elsewhere", "public").await;
    let m = app.send(&room, &bob, "secret plan").await;
    let id = m["id"].as_str().unwrap();
    let path = format!("/chat/rooms/{room}/messages/{id}");

    let (s, edited) = app
        .patch(&path, json!({"body": " better plan "}), &bob)
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(edited["body"], "better plan");
    assert_eq!(
        edited["seq"], m["seq"],
        "a message keeps the seq of its creation"
    );
    assert!(edited["edited_at"].is_string());
    let (s, b) = app.patch(&path, json!({"body": "mine now"}), &alice).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("not_sender")));
    let (s, b) = app.patch(&path, json!({"body": ""}), &bob).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));

    // Replies must point into the same room.
    let other = app.send(&elsewhere, &alice, "elsewhere").await;
    let msgs = format!("/chat/rooms/{room}/messages");
    let (s, b) = app
        .post(
            &msgs,
            json!({"body": "re", "reply_to": other["id"]}),
            &alice,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    assert_eq!(b["errors"][0]["field"], "reply_to");
    let (s, b) = app
        .post(
            &msgs,
            json!({"body": "re", "reply_to": uuid::Uuid::now_v7()}),
            &alice,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, reply) = app
        .post(&msgs, json!({"body": "re", "reply_to": id}), &alice)
        .await;
    assert_eq!(s, 201);
    assert_eq!(reply["reply_to"], id);

    // Another plain member may not delete; the owner may.
    let (s, b) = app.delete(&path, &carol).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = app.delete(&path, &alice).await;
    assert_eq!(s, 204);
    let (s, _) = app.delete(&path, &bob).await;
    assert_eq!(s, 204, "deleting again is harmless");
    let (s, b) = app.patch(&path, json!({"body": "revive"}), &bob).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("message_deleted")));
    let (_, h) = app.get(&msgs, &carol).await;
    let tomb = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap();
    assert_eq!(tomb["deleted"], true);
    assert_eq!(tomb["body"], "");
    // The deleted text is gone from the event log as well.
    let (_, ev) = app
        .get(&format!("/chat/rooms/{room}/events?limit=100"), &carol)
        .await;
    let text = ev.to_string();
    assert!(
        !text.contains("secret plan") && !text.contains("better plan"),
        "{text}"
    );
    assert_eq!(
        common::page_kinds(&ev),
        [
            "member.joined",
            "member.joined",
            "member.joined",
            "message.created",
            "message.updated",
            "message.created",
            "message.deleted"
        ]
    );
    let deleted = ev["items"].as_array().unwrap().last().unwrap();
    assert_eq!(deleted["message"]["id"], id);
    assert_eq!(deleted["message"]["deleted"], true);

    let (s, b) = app
        .patch(
            &format!(
                "/chat/rooms/{room}/messages/{}",
                other["id"].as_str().unwrap()
            ),
            json!({"body": "x"}),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("message_not_found")),
        "message of another room"
    );
    app.stop().await;
}

async fn send_rate_is_limited(backend: Backend) {
    let Some(app) = common::start_rate_limited(backend, "send_rate_is_limited").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let url = format!("{}/chat/rooms/{room}/messages", app.url);
    // 40 at once: the burst (20) passes, the rest is refused until the bucket refills.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let req = app
            .http
            .post(&url)
            .bearer_auth(&alice.token)
            .json(&json!({"body": format!("m{i}")}));
        tasks.push(tokio::spawn(async move { req.send().await.unwrap() }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let res = t.await.unwrap();
        if res.status() == 429 {
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1);
            assert_eq!(res.headers()["ratelimit-limit"], "20");
            let (_, b) = common::read(res).await;
            assert_eq!(b["code"], "rate_limited");
            limited += 1;
        } else {
            assert_eq!(res.status(), 201);
            ok += 1;
        }
    }
    assert!(ok >= 20, "the burst of 20 is allowed ({ok} passed)");
    assert!(ok <= 25 && limited >= 15, "{ok} passed, {limited} limited");
    // Nothing refused was stored.
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &alice).await;
    assert_eq!(r["last_seq"], 2 + ok);
    // Per user: Bob is unaffected.
    app.send(&room, &bob, "still fine").await;
    // Later, Alice can send again.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.send(&room, &alice, "again").await;
    app.stop().await;
}

async fn event_log_pages(backend: Backend) {
    let Some(app) = common::start(backend, "event_log_pages").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    for i in 0..4 {
        app.send(&room, &alice, &format!("m{i}")).await;
    }
    let base = format!("/chat/rooms/{room}/events");
    let (_, p) = app.get(&format!("{base}?after=1&limit=2"), &alice).await;
    assert_eq!(common::page_seqs(&p), [2, 3]);
    assert_eq!(p["has_more"], true);
    let e = &p["items"][0];
    assert_eq!(e["kind"], "message.created");
    assert_eq!(e["message"]["body"], "m0");
    assert_eq!(e["room_id"], room.as_str());
    assert!(e["created_at"].is_string());
    let (_, p) = app.get(&format!("{base}?after=3"), &alice).await;
    assert_eq!(p["items"].as_array().unwrap().len(), 2);
    assert_eq!(p["has_more"], false);
    let (_, p) = app.get(&format!("{base}?after=99"), &alice).await;
    assert_eq!(p["items"].as_array().unwrap().len(), 0);
    let (s, b) = app.get(&format!("{base}?after=-1"), &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_query")));
    app.stop().await;
}

async fn message_created_goes_through_the_outbox(backend: Backend) {
    let Some(app) = common::start(backend, "message_created_outbox").await else {
        return;
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    app.bus.subscribe(
        bus::Subscription::new("test-observer", &["chat"]),
        bus::handler(move |e: bus::Envelope| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(e);
                Ok(())
            }
        }),
        stop.clone(),
    );
    let (alice, room) = app.alice_with_a_room().await;
    let m = app.send(&room, &alice, "hello").await;
    let mut event = None;
    for _ in 0..100 {
        if let Some(e) = seen.lock().unwrap().first().cloned() {
            event = Some(e);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let event = event.expect("no chat.message.created event");
    assert_eq!(event.kind, "chat.message.created");
    assert_eq!(event.source, "chat");
    assert_eq!(event.data["message_id"], m["id"]);
    assert_eq!(event.data["room_id"], room.as_str());
    assert_eq!(event.data["seq"], m["seq"]);
    assert_eq!(event.data["sender_id"], alice.id.to_string());
    stop.cancel();
    app.stop().await;
}

/// PostgreSQL unreachable (a proxy in front of it resets every connection): sends over
/// HTTP and WebSocket are answered 503 `database_unavailable` with `Retry-After` within
/// seconds — never 500, never a hang — and nothing answered 503 was stored: once the
/// database is back (no restart), the same `client_msg_id`s are stored as new messages.
async fn database_outage_is_a_fast_503(backend: Backend) {
    let test = "database_outage_is_a_fast_503";
    if backend == Backend::Sqlite {
        println!("SKIP {test} [sqlite]: an embedded database cannot become unreachable");
        return;
    }
    let Some(pg) = kit::testing::env_url("TEST_DATABASE_URL") else {
        println!("SKIP {test}: TEST_DATABASE_URL is not set");
        return;
    };
    let proxy = kit::testing::FaultProxy::start(&kit::testing::url_addr(&pg))
        .await
        .unwrap();
    let addr = proxy.addr().to_string();
    let Some(app) = common::start_with(backend, test, |o| {
        o.config.database_url = o
            .config
            .database_url
            .as_deref()
            .map(|u| kit::testing::with_addr(u, &addr));
        o.config.send_rate_per_sec = 10_000.0;
        o.config.send_burst = 10_000;
    })
    .await
    else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    app.send(&room, &alice, "before").await;
    let mut ws = app.connect(&alice).await;
    ws.ping_pong().await;

    proxy.cut();
    let path = format!("/chat/rooms/{room}/messages");
    let started = std::time::Instant::now();
    let sends: Vec<_> = (0..32)
        .map(|i| {
            (
                path.clone(),
                json!({"body": "during", "client_msg_id": format!("d{i}")}),
                &alice,
            )
        })
        .collect();
    for (s, b) in app.post_concurrently(sends).await {
        assert_eq!(
            (s, b["code"].as_str()),
            (503, Some("database_unavailable")),
            "{b}"
        );
    }
    let res = app
        .http
        .post(format!("{}{path}", app.url))
        .bearer_auth(&alice.token)
        .json(&json!({"body": "during", "client_msg_id": "h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    ws.send_message(&room, "during", "w").await;
    ws.expect_error(Some("w"), "database_unavailable").await;
    let took = started.elapsed();
    println!("34 sends answered 503 in {took:?}");
    // A socket opened now cannot be set up: closed with 1013 (try again later).
    let url = format!("{}?access_token={}", app.ws_url(), alice.token);
    let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut fresh = common::Ws {
        stream,
        ready: Value::Null,
    };
    let at = std::time::Instant::now();
    assert_eq!(
        fresh.closed(std::time::Duration::from_secs(10)).await,
        common::Closed::Code(1013)
    );
    println!("closed with 1013 after {:?}", at.elapsed());
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");

    proxy.restore();
    let back = std::time::Instant::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (s, b) = app
            .post(
                &path,
                json!({"body": "during", "client_msg_id": "d0"}),
                &alice,
            )
            .await;
        if s == 201 {
            break;
        }
        assert_eq!(s, 503, "{b}");
        assert!(std::time::Instant::now() < deadline, "not back: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "sends stored again {:?} after the database came back",
        back.elapsed()
    );
    // Every other send answered 503 was not stored either: it is new now.
    for i in 1..32 {
        let (s, b) = app
            .post(
                &path,
                json!({"body": "during", "client_msg_id": format!("d{i}")}),
                &alice,
            )
            .await;
        assert_eq!(s, 201, "d{i}: {b}");
    }
    app.stop().await;
}

/// The database host stops answering (connects hang until the pool's 3 s acquire
/// timeout): a burst of sends is answered 503 within seconds — the batch that finds the
/// database unreachable answers all its sends at once. (Retried one by one, each send of
/// the batch waited for a connection again: 300 ms each once the database was known down,
/// 10 s and more for this burst, so clients behind the gateway's 30 s saw 504s, and the
/// sends were stored after all when the database came back.)
async fn database_that_stops_answering_is_a_503_within_seconds(backend: Backend) {
    let test = "database_stops_answering";
    if backend == Backend::Sqlite {
        println!("SKIP {test} [sqlite]: an embedded database cannot become unreachable");
        return;
    }
    let Some(pg) = kit::testing::env_url("TEST_DATABASE_URL") else {
        println!("SKIP {test}: TEST_DATABASE_URL is not set");
        return;
    };
    let proxy = common::BlackHoleProxy::start(kit::testing::url_addr(&pg)).await;
    let addr = proxy.addr.to_string();
    let Some(app) = common::start_with(backend, test, |o| {
        o.config.database_url = o
            .config
            .database_url
            .as_deref()
            .map(|u| kit::testing::with_addr(u, &addr));
        o.config.send_rate_per_sec = 10_000.0;
        o.config.send_burst = 10_000;
    })
    .await
    else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    app.send(&room, &alice, "before").await;

    proxy.black_hole();
    let path = format!("/chat/rooms/{room}/messages");
    let started = std::time::Instant::now();
    let sends: Vec<_> = (0..40)
        .map(|i| {
            (
                path.clone(),
                json!({"body": "during", "client_msg_id": format!("d{i}")}),
                &alice,
            )
        })
        .collect();
    for (s, b) in app.post_concurrently(sends).await {
        assert_eq!(
            (s, b["code"].as_str()),
            (503, Some("database_unavailable")),
            "{b}"
        );
    }
    let took = started.elapsed();
    println!("40 sends answered 503 in {took:?}");
    assert!(took < std::time::Duration::from_secs(7), "{took:?}");

    proxy.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (s, b) = app
            .post(
                &path,
                json!({"body": "after", "client_msg_id": "a"}),
                &alice,
            )
            .await;
        if s == 201 {
            break;
        }
        assert_eq!(s, 503, "{b}");
        assert!(std::time::Instant::now() < deadline, "not back: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Nothing answered 503 was stored.
    let (_, history) = app.get(&path, &alice).await;
    let bodies: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["before", "after"]);
    app.stop().await;
}
