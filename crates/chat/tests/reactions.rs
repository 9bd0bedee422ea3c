//! Chat v1.1 reactions, pins and read receipts (API.md "Chat additions — v1.1"), on both
//! backends: every route and its errors; idempotency (a repeat appends no event); the
//! 20-distinct-emoji and 50-pin limits; emoji validation; `me` per caller on every HTTP
//! response carrying messages; the events in seq order live, through catch-up and resume;
//! pins in DMs and across blocks; `read` frames to the other members (also across two
//! nodes with Redis) and the read-marker list.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{App, User, events_until, page_kinds};
use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    reactions_count_per_emoji_with_me_per_caller,
    reacting_twice_or_removing_nothing_appends_no_event,
    reaction_errors,
    emoji_validation_table,
    the_21st_distinct_emoji_is_refused,
    racing_new_emoji_stop_at_twenty,
    pins_owner_admin_only_newest_first,
    deleting_a_pinned_message_unpins_it,
    the_51st_pin_is_refused,
    dm_members_pin_and_blocks_stop_reactions_and_pins,
    events_arrive_in_order_live_through_catch_up_and_resume,
    read_frames_reach_the_other_members_not_the_reader,
    read_frames_cross_nodes,
    openapi_lists_the_v11_routes,
);

/// Percent-encodes a path segment (everything but unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn reaction_path(room: &str, message: &str, emoji: &str) -> String {
    format!(
        "/chat/rooms/{room}/messages/{message}/reactions/{}",
        enc(emoji)
    )
}

async fn put(app: &App, path: &str, u: &User) -> (u16, Value) {
    app.call(reqwest::Method::PUT, path, None, Some(&u.token))
        .await
}

async fn react(app: &App, room: &str, message: &str, emoji: &str, u: &User) -> (u16, Value) {
    put(app, &reaction_path(room, message, emoji), u).await
}

async fn unreact(app: &App, room: &str, message: &str, emoji: &str, u: &User) -> (u16, Value) {
    app.delete(&reaction_path(room, message, emoji), u).await
}

async fn pin(app: &App, room: &str, message: &str, u: &User) -> (u16, Value) {
    put(app, &format!("/chat/rooms/{room}/pins/{message}"), u).await
}

async fn unpin(app: &App, room: &str, message: &str, u: &User) -> (u16, Value) {
    app.delete(&format!("/chat/rooms/{room}/pins/{message}"), u)
        .await
}

fn id(m: &Value) -> String {
    m["id"].as_str().unwrap().to_owned()
}

fn last_seq(room: &Value) -> i64 {
    room["last_seq"].as_i64().unwrap()
}

async fn room_seq(app: &App, room: &str, u: &User) -> i64 {
    let (s, r) = app.get(&format!("/chat/rooms/{room}"), u).await;
    assert_eq!(s, 200, "{r}");
    last_seq(&r)
}

/// The room's events after `after` (one page, ≤ 100).
async fn events_after(app: &App, room: &str, after: i64, u: &User) -> Vec<Value> {
    let (s, page) = app
        .get(
            &format!("/chat/rooms/{room}/events?after={after}&limit=100"),
            u,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// The message `message` as `u` sees it in the room's history.
async fn seen_by(app: &App, room: &str, message: &str, u: &User) -> Value {
    let (s, page) = app
        .get(&format!("/chat/rooms/{room}/messages?limit=100"), u)
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == message)
        .unwrap_or_else(|| panic!("{message} not in {page}"))
        .clone()
}

fn assert_code(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(
        (got.0, got.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        got.1
    );
}

async fn reactions_count_per_emoji_with_me_per_caller(backend: Backend) {
    let Some(app) = common::start(backend, "reactions_count_per_emoji").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let (s, m) = app
        .post(
            &format!("/chat/rooms/{room}/messages"),
            json!({"body": "react to me", "client_msg_id": "m1"}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let mid = id(&m);
    assert_eq!(
        (m["reactions"].clone(), m["pinned"].clone()),
        (json!([]), json!(false))
    );

    assert_eq!(react(&app, &room, &mid, "👍", &bob).await.0, 204);
    assert_eq!(react(&app, &room, &mid, "👍", &alice).await.0, 204);
    assert_eq!(react(&app, &room, &mid, ":+1:", &bob).await.0, 204);

    // History: by first reaction time, `me` for the caller.
    let as_bob = seen_by(&app, &room, &mid, &bob).await;
    assert_eq!(
        as_bob["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": ":+1:", "count": 1, "me": true}])
    );
    let as_alice = seen_by(&app, &room, &mid, &alice).await;
    assert_eq!(
        as_alice["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": ":+1:", "count": 1, "me": false}])
    );

    // The room list's last_message.
    let (_, rooms) = app.get("/chat/rooms", &alice).await;
    assert_eq!(
        rooms["items"][0]["last_message"]["reactions"], as_alice["reactions"],
        "{rooms}"
    );
    // A retried send (same client_msg_id, 200) and an edit answer with reactions too.
    let (s, again) = app
        .post(
            &format!("/chat/rooms/{room}/messages"),
            json!({"body": "react to me", "client_msg_id": "m1"}),
            &alice,
        )
        .await;
    assert_eq!((s, &again["reactions"]), (200, &as_alice["reactions"]));
    let (s, edited) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{mid}"),
            json!({"body": "edited"}),
            &alice,
        )
        .await;
    assert_eq!((s, &edited["reactions"]), (200, &as_alice["reactions"]));

    // Who reacted.
    let (s, who) = app
        .get(
            &format!("/chat/rooms/{room}/messages/{mid}/reactions"),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{who}");
    assert_eq!(
        who,
        json!({"items": [
            {"emoji": "👍", "count": 2, "user_ids": [bob.id, alice.id]},
            {"emoji": ":+1:", "count": 1, "user_ids": [bob.id]},
        ]})
    );

    // Bob takes his 👍 back: the count drops, his `me` turns false, Alice's stays.
    assert_eq!(unreact(&app, &room, &mid, "👍", &bob).await.0, 204);
    let as_bob = seen_by(&app, &room, &mid, &bob).await;
    assert_eq!(
        as_bob["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": false}, {"emoji": ":+1:", "count": 1, "me": true}])
    );
    // The last reaction of an emoji gone: the emoji is gone.
    assert_eq!(unreact(&app, &room, &mid, ":+1:", &bob).await.0, 204);
    let as_bob = seen_by(&app, &room, &mid, &bob).await;
    assert_eq!(
        as_bob["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": false}])
    );
    app.stop().await;
}

async fn reacting_twice_or_removing_nothing_appends_no_event(backend: Backend) {
    let Some(app) = common::start(backend, "reacting_twice_no_event").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let mid = id(&app.send(&room, &alice, "m").await);
    let start = room_seq(&app, &room, &alice).await;
    for _ in 0..2 {
        assert_eq!(react(&app, &room, &mid, "🎉", &bob).await.0, 204);
    }
    for _ in 0..2 {
        assert_eq!(unreact(&app, &room, &mid, "🎉", &bob).await.0, 204);
    }
    // Removing what was never there.
    assert_eq!(unreact(&app, &room, &mid, "🔥", &alice).await.0, 204);
    let events = events_after(&app, &room, start, &alice).await;
    let got: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                json!({"message_id": e["message_id"], "emoji": e["emoji"], "user_id": e["user_id"]}),
            )
        })
        .collect();
    let payload = json!({"message_id": mid, "emoji": "🎉", "user_id": bob.id});
    assert_eq!(
        got,
        vec![
            ("reaction.added".to_owned(), payload.clone()),
            ("reaction.removed".to_owned(), payload),
        ]
    );
    assert_eq!(common::seqs(&events), vec![start + 1, start + 2]);
    app.stop().await;
}

async fn reaction_errors(backend: Backend) {
    let Some(app) = common::start(backend, "reaction_errors").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    let mid = id(&app.send(&room, &alice, "m").await);
    let private = app.room(&alice, "secret", "private").await;
    let private_mid = id(&app.send(&private, &alice, "p").await);
    let other = app.room(&alice, "other", "public").await;
    let other_mid = id(&app.send(&other, &alice, "o").await);

    assert_code(
        react(&app, &room, &mid, "ab", &bob).await,
        400,
        "invalid_emoji",
    );
    assert_code(
        unreact(&app, &room, &mid, "ab", &bob).await,
        400,
        "invalid_emoji",
    );
    // Unknown message, a message of another room, and an id that is no uuid.
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_code(
        react(&app, &room, &unknown, "👍", &bob).await,
        404,
        "message_not_found",
    );
    assert_code(
        react(&app, &room, &other_mid, "👍", &alice).await,
        404,
        "message_not_found",
    );
    assert_code(
        unreact(&app, &room, &other_mid, "👍", &alice).await,
        404,
        "message_not_found",
    );
    assert_eq!(react(&app, &room, "nope", "👍", &bob).await.0, 400);
    // Outsiders: 403 in a public room, 404 for a private one.
    assert_code(
        react(&app, &room, &mid, "👍", &carol).await,
        403,
        "not_member",
    );
    assert_code(
        unreact(&app, &room, &mid, "👍", &carol).await,
        403,
        "not_member",
    );
    assert_code(
        react(&app, &private, &private_mid, "👍", &carol).await,
        404,
        "room_not_found",
    );
    let who = format!("/chat/rooms/{private}/messages/{private_mid}/reactions");
    assert_code(app.get(&who, &carol).await, 404, "room_not_found");
    let who = format!("/chat/rooms/{room}/messages/{mid}/reactions");
    assert_code(app.get(&who, &carol).await, 403, "not_member");
    let who_unknown = format!("/chat/rooms/{room}/messages/{unknown}/reactions");
    assert_code(app.get(&who_unknown, &bob).await, 404, "message_not_found");
    // Without a token.
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            &reaction_path(&room, &mid, "👍"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);
    // A deleted message takes no reaction, and shows none.
    assert_eq!(react(&app, &room, &mid, "👍", &bob).await.0, 204);
    assert_eq!(
        app.delete(&format!("/chat/rooms/{room}/messages/{mid}"), &alice)
            .await
            .0,
        204
    );
    assert_code(
        react(&app, &room, &mid, "👀", &bob).await,
        409,
        "message_deleted",
    );
    let tomb = seen_by(&app, &room, &mid, &bob).await;
    assert_eq!(
        (tomb["deleted"].clone(), tomb["reactions"].clone()),
        (json!(true), json!([]))
    );
    let (s, who) = app.get(&who, &bob).await;
    assert_eq!((s, who), (200, json!({"items": []})));
    // Removing one's reaction from a deleted message: nothing to remove, 204.
    assert_eq!(unreact(&app, &room, &mid, "👍", &bob).await.0, 204);
    // The reaction.added event stays as it was (message events are scrubbed, not these).
    let events = events_after(&app, &room, 0, &alice).await;
    let added = events
        .iter()
        .find(|e| e["kind"] == "reaction.added")
        .unwrap();
    assert_eq!(
        (added["message_id"].as_str(), added["emoji"].as_str()),
        (Some(mid.as_str()), Some("👍"))
    );
    app.stop().await;
}

async fn emoji_validation_table(backend: Backend) {
    let Some(app) = common::start(backend, "emoji_validation_table").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let mid = id(&app.send(&room, &alice, "m").await);
    let accepted = ["👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "1️⃣", ":+1:", ":a_b-c+9:"];
    for e in accepted {
        let (s, b) = react(&app, &room, &mid, e, &alice).await;
        assert_eq!(s, 204, "{e:?}: {b}");
    }
    let long = format!(":{}:", "a".repeat(33));
    for e in [
        "ab",
        "👍👍",
        ":UPPER:",
        long.as_str(),
        " ",
        "%",
        "👍 ",
        "::",
    ] {
        assert_code(
            react(&app, &room, &mid, e, &alice).await,
            400,
            "invalid_emoji",
        );
    }
    // An empty segment names no emoji: no route takes it.
    let (s, _) = put(
        &app,
        &format!("/chat/rooms/{room}/messages/{mid}/reactions/"),
        &alice,
    )
    .await;
    assert!(s == 404 || s == 405, "{s}");
    // Exactly the accepted ones are stored, as given (percent-decoded).
    let m = seen_by(&app, &room, &mid, &alice).await;
    let stored: Vec<&str> = m["reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["emoji"].as_str().unwrap())
        .collect();
    assert_eq!(stored, accepted);
    app.stop().await;
}

async fn the_21st_distinct_emoji_is_refused(backend: Backend) {
    let Some(app) = common::start(backend, "the_21st_distinct_emoji").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let mid = id(&app.send(&room, &alice, "m").await);
    for i in 0..20 {
        let (s, b) = react(&app, &room, &mid, &format!(":e{i}:"), &alice).await;
        assert_eq!(s, 204, "{i}: {b}");
    }
    let before = room_seq(&app, &room, &alice).await;
    assert_code(
        react(&app, &room, &mid, ":e20:", &bob).await,
        409,
        "too_many_reactions",
    );
    // Nothing stored, no seq taken.
    assert_eq!(room_seq(&app, &room, &alice).await, before);
    // An emoji already on the message still takes more reactions.
    assert_eq!(react(&app, &room, &mid, ":e7:", &bob).await.0, 204);
    let m = seen_by(&app, &room, &mid, &bob).await;
    let reactions = m["reactions"].as_array().unwrap();
    assert_eq!(reactions.len(), 20);
    assert_eq!(
        reactions[7],
        json!({"emoji": ":e7:", "count": 2, "me": true})
    );
    // Once one emoji is gone, a new one fits again.
    assert_eq!(unreact(&app, &room, &mid, ":e0:", &alice).await.0, 204);
    assert_eq!(react(&app, &room, &mid, ":e20:", &bob).await.0, 204);
    app.stop().await;
}

async fn pins_owner_admin_only_newest_first(backend: Backend) {
    let Some(app) = common::start(backend, "pins_owner_admin_only").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    let m1 = id(&app.send(&room, &bob, "first").await);
    let m2 = id(&app.send(&room, &bob, "second").await);
    assert_eq!(react(&app, &room, &m1, "👍", &bob).await.0, 204);
    let start = room_seq(&app, &room, &alice).await;

    assert_eq!(pin(&app, &room, &m1, &alice).await.0, 204);
    assert_eq!(pin(&app, &room, &m1, &alice).await.0, 204);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(pin(&app, &room, &m2, &alice).await.0, 204);
    // A member may not pin or unpin; an outsider is not a member.
    assert_code(pin(&app, &room, &m1, &bob).await, 403, "forbidden");
    assert_code(unpin(&app, &room, &m1, &bob).await, 403, "forbidden");
    assert_code(pin(&app, &room, &m1, &carol).await, 403, "not_member");
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_code(
        pin(&app, &room, &unknown, &alice).await,
        404,
        "message_not_found",
    );

    let (s, pins) = app.get(&format!("/chat/rooms/{room}/pins"), &bob).await;
    assert_eq!(s, 200, "{pins}");
    let items = pins["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [m2.as_str(), m1.as_str()], "newest pin first");
    assert!(items.iter().all(|m| m["pinned"] == true), "{pins}");
    assert_eq!(
        items[1]["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": true}])
    );
    let (_, as_alice) = app.get(&format!("/chat/rooms/{room}/pins"), &alice).await;
    assert_eq!(as_alice["items"][1]["reactions"][0]["me"], false);
    assert_eq!(seen_by(&app, &room, &m1, &bob).await["pinned"], true);
    assert_code(
        app.get(&format!("/chat/rooms/{room}/pins"), &carol).await,
        403,
        "not_member",
    );

    // Unpin twice: one event. An admin may pin.
    assert_eq!(unpin(&app, &room, &m2, &alice).await.0, 204);
    assert_eq!(unpin(&app, &room, &m2, &alice).await.0, 204);
    let (s, _) = app
        .patch(
            &format!("/chat/rooms/{room}/members/{}", bob.id),
            json!({"role": "admin"}),
            &alice,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(pin(&app, &room, &m2, &bob).await.0, 204);
    assert_eq!(seen_by(&app, &room, &m2, &alice).await["pinned"], true);

    let events = events_after(&app, &room, start, &alice).await;
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["message_id"].as_str().unwrap_or("-"),
                e["user_id"].as_str().unwrap(),
            )
        })
        .collect();
    let (a, b) = (alice.id.to_string(), bob.id.to_string());
    assert_eq!(
        got,
        vec![
            ("message.pinned", m1.as_str(), a.as_str()),
            ("message.pinned", m2.as_str(), a.as_str()),
            ("message.unpinned", m2.as_str(), a.as_str()),
            ("member.role_changed", "-", b.as_str()),
            ("message.pinned", m2.as_str(), b.as_str()),
        ]
    );
    // Private room: an outsider gets 404.
    let private = app.room(&alice, "secret", "private").await;
    let pm = id(&app.send(&private, &alice, "p").await);
    assert_code(
        pin(&app, &private, &pm, &carol).await,
        404,
        "room_not_found",
    );
    assert_code(
        app.get(&format!("/chat/rooms/{private}/pins"), &carol)
            .await,
        404,
        "room_not_found",
    );
    app.stop().await;
}

async fn deleting_a_pinned_message_unpins_it(backend: Backend) {
    let Some(app) = common::start(backend, "deleting_a_pinned_message").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let m = id(&app.send(&room, &bob, "pinned, then deleted").await);
    assert_eq!(react(&app, &room, &m, "👍", &alice).await.0, 204);
    assert_eq!(pin(&app, &room, &m, &alice).await.0, 204);
    let start = room_seq(&app, &room, &alice).await;
    assert_eq!(
        app.delete(&format!("/chat/rooms/{room}/messages/{m}"), &bob)
            .await
            .0,
        204
    );
    let (_, pins) = app.get(&format!("/chat/rooms/{room}/pins"), &alice).await;
    assert_eq!(pins, json!({"items": []}));
    let tomb = seen_by(&app, &room, &m, &alice).await;
    assert_eq!(
        (&tomb["deleted"], &tomb["pinned"], &tomb["reactions"]),
        (&json!(true), &json!(false), &json!([]))
    );
    let events = events_after(&app, &room, start, &alice).await;
    assert_eq!(
        page_kinds(&json!({"items": events})),
        ["message.unpinned", "message.deleted"]
    );
    assert_eq!(events[1]["message"]["pinned"], false);
    assert_eq!(events[1]["message"]["reactions"], json!([]));
    // A deleted message cannot be pinned again; unpinning it is a no-op.
    assert_code(pin(&app, &room, &m, &alice).await, 409, "message_deleted");
    assert_eq!(unpin(&app, &room, &m, &alice).await.0, 204);
    assert_eq!(room_seq(&app, &room, &alice).await, start + 2);
    app.stop().await;
}

async fn the_51st_pin_is_refused(backend: Backend) {
    let Some(app) = common::start_unthrottled(backend, "the_51st_pin").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let mut ids = Vec::new();
    for i in 0..51 {
        ids.push(id(&app.send(&room, &alice, &format!("m{i}")).await));
    }
    for m in &ids[..50] {
        assert_eq!(pin(&app, &room, m, &alice).await.0, 204);
    }
    let before = room_seq(&app, &room, &alice).await;
    assert_code(pin(&app, &room, &ids[50], &alice).await, 409, "pin_limit");
    assert_eq!(room_seq(&app, &room, &alice).await, before);
    assert_eq!(
        seen_by(&app, &room, &ids[50], &alice).await["pinned"],
        false
    );
    // Re-pinning a pinned one at the limit is still the idempotent 204.
    assert_eq!(pin(&app, &room, &ids[3], &alice).await.0, 204);
    let (_, pins) = app.get(&format!("/chat/rooms/{room}/pins"), &alice).await;
    assert_eq!(pins["items"].as_array().unwrap().len(), 50);
    assert_eq!(unpin(&app, &room, &ids[0], &alice).await.0, 204);
    assert_eq!(pin(&app, &room, &ids[50], &alice).await.0, 204);
    app.stop().await;
}

async fn dm_members_pin_and_blocks_stop_reactions_and_pins(backend: Backend) {
    let Some(app) = common::start_with(backend, "dm_members_pin", |o| o.with_users = true).await
    else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let (s, dm) = app
        .post("/chat/dms", json!({"user_id": bob.id}), &alice)
        .await;
    assert_eq!(s, 201, "{dm}");
    let dm = id(&dm);
    let m = id(&app.send(&dm, &alice, "in the dm").await);
    // DM members have the role "member", and both may pin.
    assert_eq!(pin(&app, &dm, &m, &bob).await.0, 204);
    assert_eq!(unpin(&app, &dm, &m, &alice).await.0, 204);
    assert_eq!(react(&app, &dm, &m, "👍", &bob).await.0, 204);

    app.block(&alice, &bob).await;
    // The block arrives by event; within 5 s reactions are refused both ways.
    let started = Instant::now();
    loop {
        let (s, b) = react(&app, &dm, &m, "🔥", &bob).await;
        if s == 403 {
            assert_eq!(b["code"], "blocked", "{b}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{s} {b}");
        // Accepted before the block arrived: take it back so the state stays known.
        assert_eq!(unreact(&app, &dm, &m, "🔥", &bob).await.0, 204);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_code(react(&app, &dm, &m, "👀", &alice).await, 403, "blocked");
    assert_code(pin(&app, &dm, &m, &alice).await, 403, "blocked");
    // Taking one's own reaction back stays possible (like deleting one's message).
    assert_eq!(unreact(&app, &dm, &m, "👍", &bob).await.0, 204);
    app.stop().await;
}

async fn events_arrive_in_order_live_through_catch_up_and_resume(backend: Backend) {
    let Some(app) = common::start(backend, "reaction_events_in_order").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let m = id(&app.send(&room, &alice, "m").await);
    let start = room_seq(&app, &room, &alice).await;
    let mut bob_ws = app.connect(&bob).await;
    bob_ws.ping_pong().await;

    assert_eq!(react(&app, &room, &m, "👍", &bob).await.0, 204);
    assert_eq!(react(&app, &room, &m, "👍", &bob).await.0, 204); // no event
    assert_eq!(pin(&app, &room, &m, &alice).await.0, 204);
    assert_eq!(react(&app, &room, &m, "🇫🇷", &alice).await.0, 204);
    let (s, _) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{m}"),
            json!({"body": "edited"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(unreact(&app, &room, &m, "👍", &bob).await.0, 204);
    assert_eq!(unpin(&app, &room, &m, &alice).await.0, 204);
    let end = room_seq(&app, &room, &alice).await;
    assert_eq!(end, start + 6);
    let kinds = [
        "reaction.added",
        "message.pinned",
        "reaction.added",
        "message.updated",
        "reaction.removed",
        "message.unpinned",
    ];

    let live = events_until(&mut bob_ws, &room, end).await;
    let wire: Vec<Value> = live.iter().map(|f| f["event"].clone()).collect();
    assert_eq!(common::seqs(&live), (start + 1..=end).collect::<Vec<_>>());
    assert_eq!(page_kinds(&json!({"items": wire})), kinds);
    assert_eq!(
        (
            &wire[0]["message_id"],
            &wire[0]["emoji"],
            &wire[0]["user_id"]
        ),
        (&json!(m), &json!("👍"), &json!(bob.id))
    );
    assert_eq!(
        (&wire[1]["message_id"], &wire[1]["user_id"]),
        (&json!(m), &json!(alice.id))
    );
    // Events carry reactions without `me`.
    assert_eq!(
        wire[3]["message"]["reactions"],
        json!([{"emoji": "👍", "count": 1}, {"emoji": "🇫🇷", "count": 1}])
    );
    assert_eq!(wire[3]["message"]["pinned"], true);

    // Catch-up over HTTP: the same events.
    let caught = events_after(&app, &room, start, &bob).await;
    assert_eq!(caught, wire);
    // Resume over a new socket: the same events, in order.
    let mut again = app.connect(&bob).await;
    again
        .send(json!({"type": "resume", "rooms": {room.clone(): start}}))
        .await;
    let resumed = events_until(&mut again, &room, end).await;
    assert_eq!(
        common::seqs(&resumed),
        (start + 1..=end).collect::<Vec<_>>()
    );
    let resumed: Vec<Value> = resumed.iter().map(|f| f["event"].clone()).collect();
    assert_eq!(resumed, wire);
    app.stop().await;
}

async fn read_frames_reach_the_other_members_not_the_reader(backend: Backend) {
    let Some(app) = common::start(backend, "read_frames").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    app.send(&room, &alice, "one").await;
    app.send(&room, &alice, "two").await;
    let last = room_seq(&app, &room, &alice).await;
    let mut alice_ws = app.connect(&alice).await;
    let mut bob_ws = app.connect(&bob).await;
    let mut bob_other = app.connect(&bob).await;
    for ws in [&mut alice_ws, &mut bob_ws, &mut bob_other] {
        ws.ping_pong().await;
    }

    // Never read: listed with seq 0 and no time.
    let (s, markers) = app
        .get(&format!("/chat/rooms/{room}/read-markers"), &bob)
        .await;
    assert_eq!(s, 200, "{markers}");
    assert!(
        markers["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["seq"] == 0 && m["updated_at"].is_null()),
        "{markers}"
    );

    let read = |seq: i64| json!({"seq": seq});
    let (s, _) = app
        .post(&format!("/chat/rooms/{room}/read"), read(last - 1), &bob)
        .await;
    assert_eq!(s, 204);
    let frame = alice_ws.next_of("read").await;
    assert_eq!(
        frame,
        json!({"type": "read", "room_id": room, "user_id": bob.id, "seq": last - 1})
    );
    // The same marker again, or an older one: it does not move, no frame.
    for seq in [last - 1, 1] {
        let (s, _) = app
            .post(&format!("/chat/rooms/{room}/read"), read(seq), &bob)
            .await;
        assert_eq!(s, 204);
    }
    // Beyond the last seq: capped, one frame with the capped seq; then again: none.
    for _ in 0..2 {
        let (s, _) = app
            .post(&format!("/chat/rooms/{room}/read"), read(last + 100), &bob)
            .await;
        assert_eq!(s, 204);
    }
    let frame = alice_ws.next_of("read").await;
    assert_eq!(frame["seq"], last);
    alice_ws.assert_quiet(Duration::from_millis(300)).await;
    // Neither of the reader's own connections hears of it.
    bob_ws.assert_quiet(Duration::from_millis(100)).await;
    bob_other.assert_quiet(Duration::from_millis(100)).await;

    let (s, markers) = app
        .get(&format!("/chat/rooms/{room}/read-markers"), &alice)
        .await;
    assert_eq!(s, 200, "{markers}");
    let items = markers["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let of = |u: &User| {
        items
            .iter()
            .find(|m| m["user_id"] == u.id.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(of(&bob)["seq"], last);
    assert!(of(&bob)["updated_at"].is_string(), "{markers}");
    assert_eq!(
        (of(&alice)["seq"].clone(), of(&alice)["updated_at"].clone()),
        (json!(0), Value::Null)
    );
    // Members only.
    assert_code(
        app.get(&format!("/chat/rooms/{room}/read-markers"), &carol)
            .await,
        403,
        "not_member",
    );
    let private = app.room(&alice, "secret", "private").await;
    assert_code(
        app.get(&format!("/chat/rooms/{private}/read-markers"), &carol)
            .await,
        404,
        "room_not_found",
    );
    app.stop().await;
}

async fn read_frames_cross_nodes(backend: Backend) {
    let test = "read_frames_cross_nodes";
    if !common::nodes_can_share(backend, test) {
        return;
    }
    let Some(redis) = kit::testing::redis_url(test) else {
        return;
    };
    let channel = format!("test:chat:{}", uuid::Uuid::now_v7().simple());
    let c2 = channel.clone();
    let Some((a, b)) = common::start_two_nodes(
        backend,
        test,
        &redis,
        move |c| c.fanout_channel = channel,
        move |c| c.fanout_channel = c2,
    )
    .await
    else {
        return;
    };
    let [alice, bob] = a.users(["alice", "bob"]).await;
    let room = a.room(&alice, "r", "public").await;
    b.join(&room, &bob).await;
    a.send(&room, &alice, "hello").await;
    let last = room_seq(&a, &room, &alice).await;
    // Alice listens on node A; Bob on node B reads through node B.
    let mut alice_ws = a.connect(&alice).await;
    let mut bob_ws = b.connect(&bob).await;
    alice_ws.ping_pong().await;
    bob_ws.ping_pong().await;
    // The subscriber of node A may still be connecting to Redis: read a marker at a time
    // until a frame crosses (each read moves the marker, so each sends one frame).
    let started = Instant::now();
    let mut crossed = None;
    for seq in 1..=last {
        let (s, _) = b
            .post(
                &format!("/chat/rooms/{room}/read"),
                json!({"seq": seq}),
                &bob,
            )
            .await;
        assert_eq!(s, 204);
        if let Some(f) = alice_ws.try_next_json(Duration::from_secs(2)).await {
            crossed = Some((seq, f));
            break;
        }
    }
    let (seq, frame) = crossed.expect("no read frame crossed to node A");
    println!("read frame crossed after {:?}", started.elapsed());
    assert_eq!(
        frame,
        json!({"type": "read", "room_id": room, "user_id": bob.id, "seq": seq})
    );
    bob_ws.assert_quiet(Duration::from_millis(300)).await;
    a.stop().await;
    b.stop().await;
}

async fn openapi_lists_the_v11_routes(backend: Backend) {
    let Some(app) = common::start(backend, "openapi_lists_the_v11_routes").await else {
        return;
    };
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        (
            "/chat/rooms/{id}/messages/{message_id}/reactions/{emoji}",
            "put",
        ),
        (
            "/chat/rooms/{id}/messages/{message_id}/reactions/{emoji}",
            "delete",
        ),
        ("/chat/rooms/{id}/messages/{message_id}/reactions", "get"),
        ("/chat/rooms/{id}/pins/{message_id}", "put"),
        ("/chat/rooms/{id}/pins/{message_id}", "delete"),
        ("/chat/rooms/{id}/pins", "get"),
        ("/chat/rooms/{id}/read-markers", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let text = doc.to_string();
    for code in ["invalid_emoji", "too_many_reactions", "pin_limit"] {
        assert!(text.contains(code), "{code} undocumented");
    }
    for part in text.split("#/components/schemas/").skip(1) {
        let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(doc["components"]["schemas"][&name].is_object(), "{name}");
    }
    app.stop().await;
}

/// 30 new emoji at once: the limit is counted under the room's lock, so exactly 20 get in.
async fn racing_new_emoji_stop_at_twenty(backend: Backend) {
    let Some(app) = common::start(backend, "racing_new_emoji").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let mid = id(&app.send(&room, &alice, "m").await);
    let codes: Vec<String> = (0..30).map(|i| format!(":race{i}:")).collect();
    let answers =
        futures::future::join_all(codes.iter().map(|e| react(&app, &room, &mid, e, &alice))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 204).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "too_many_reactions")
        .count();
    assert_eq!((ok, refused), (20, 10), "{answers:?}");
    let m = seen_by(&app, &room, &mid, &alice).await;
    assert_eq!(m["reactions"].as_array().unwrap().len(), 20);
    // One event per stored reaction, none for the refused ones.
    let added = events_after(&app, &room, 0, &alice)
        .await
        .iter()
        .filter(|e| e["kind"] == "reaction.added")
        .count();
    assert_eq!(added, 20);
    app.stop().await;
}
