//! Chat v1.1: threads (`thread_root_id`, the thread listing, root counters), mentions
//! (`@username`, `@room`, at send and at edit) and the bus events a notifications
//! consumer reads (`chat.message.created` / `.updated` / `.deleted`).
#![allow(clippy::unwrap_used)]

mod common;

use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    thread_replies_stay_out_of_the_main_timeline,
    thread_roots_must_be_top_level_messages_of_the_room,
    thread_listing_is_for_members_only,
    thread_replies_are_room_events_covered_by_resume,
    mentions_resolve_members_only,
    room_mentions_need_owner_or_admin,
    edits_add_and_remove_mentions,
    created_event_carries_what_notifications_need,
    dm_events_name_the_recipient,
    deleted_event_and_tombstone_clear_mentions,
);

async fn post_message(app: &common::App, room: &str, u: &common::User, body: Value) -> Value {
    let (s, b) = app
        .post(&format!("/chat/rooms/{room}/messages"), body, u)
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn thread_replies_stay_out_of_the_main_timeline(backend: Backend) {
    let Some(app) = common::start(backend, "thread_main_timeline").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let root = app.send(&room, &alice, "root").await;
    assert_eq!(root["thread_root_id"], Value::Null);
    assert_eq!(root["reply_count"], 0);
    assert_eq!(root["last_reply_at"], Value::Null);
    assert_eq!(root["mentions"], json!([]));
    let root_id = root["id"].as_str().unwrap();
    let r1 = post_message(
        &app,
        &room,
        &bob,
        json!({"body": "first reply", "thread_root_id": root_id}),
    )
    .await;
    assert_eq!(r1["thread_root_id"], root_id);
    // Over the WebSocket too, acked with the thread id.
    let mut ws = app.connect(&bob).await;
    ws.send(
        json!({"type": "send", "room_id": room, "body": "second reply",
                   "client_msg_id": "t2", "thread_root_id": root_id}),
    )
    .await;
    let ack = ws.next_of("ack").await;
    assert_eq!(ack["message"]["thread_root_id"], root_id, "{ack}");
    let after = app.send(&room, &alice, "after the thread").await;

    // The main listing: top-level messages only, still in seq order.
    let (s, page) = app
        .get(&format!("/chat/rooms/{room}/messages"), &alice)
        .await;
    assert_eq!(s, 200);
    let bodies: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["root", "after the thread"]);
    let listed_root = &page["items"][0];
    assert_eq!(listed_root["reply_count"], 2);
    assert_eq!(
        listed_root["last_reply_at"], ack["message"]["created_at"],
        "the newest reply's time"
    );
    // `after=` pages skip thread replies as well.
    let (_, newer) = app
        .get(
            &format!("/chat/rooms/{room}/messages?after={}", root["seq"]),
            &alice,
        )
        .await;
    assert_eq!(newer["items"].as_array().unwrap().len(), 1);
    assert_eq!(newer["items"][0]["id"], after["id"]);

    // The thread: replies without the root, ascending, paged with after/limit.
    let path = format!("/chat/rooms/{room}/threads/{root_id}/messages");
    let (s, t) = app.get(&path, &alice).await;
    assert_eq!(s, 200, "{t}");
    let bodies: Vec<&str> = t["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["first reply", "second reply"]);
    assert_eq!(t["has_more"], false);
    let (_, first) = app.get(&format!("{path}?limit=1"), &alice).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["has_more"], true);
    let (_, rest) = app
        .get(&format!("{path}?after={}", r1["seq"]), &alice)
        .await;
    assert_eq!(rest["items"][0]["body"], "second reply");
    assert_eq!(rest["has_more"], false);
    let (s, b) = app.get(&format!("{path}?after=-1"), &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_query")));
    let (s, _) = app.get(&format!("{path}?limit=0"), &alice).await;
    assert_eq!(s, 400);
    app.stop().await;
}

async fn thread_roots_must_be_top_level_messages_of_the_room(backend: Backend) {
    let Some(app) = common::start(backend, "thread_root_rules").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let other = app.room(&alice, "other", "public").await;
    let root = app.send(&room, &alice, "root").await;
    let reply = post_message(
        &app,
        &room,
        &bob,
        json!({"body": "reply", "thread_root_id": root["id"]}),
    )
    .await;
    let elsewhere = app.send(&other, &alice, "elsewhere").await;
    for (target, why) in [
        (
            reply["id"].clone(),
            "a reply is not a root (no nested threads)",
        ),
        (elsewhere["id"].clone(), "a message of another room"),
        (json!(uuid::Uuid::now_v7()), "no such message"),
    ] {
        let (s, b) = app
            .post(
                &format!("/chat/rooms/{room}/messages"),
                json!({"body": "x", "thread_root_id": target}),
                &alice,
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("invalid_thread")),
            "{why}: {b}"
        );
        let mut ws = app.connect(&alice).await;
        ws.send(json!({"type": "send", "room_id": room, "body": "x",
                       "client_msg_id": format!("bad-{target}"), "thread_root_id": target}))
            .await;
        let err = ws.next_of("error").await;
        assert_eq!(err["code"], "invalid_thread", "{why}: {err}");
    }
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{room}/messages"),
            json!({"body": "x", "thread_root_id": "nope"}),
            &alice,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // Nothing was stored by the refused sends: the root still has one reply.
    let (_, page) = app
        .get(&format!("/chat/rooms/{room}/messages"), &alice)
        .await;
    assert_eq!(page["items"][0]["reply_count"], 1);
    app.stop().await;
}

async fn thread_listing_is_for_members_only(backend: Backend) {
    let Some(app) = common::start(backend, "thread_listing_access").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    let private = app.room(&alice, "secret", "private").await;
    let root = app.send(&room, &alice, "root").await;
    let secret_root = app.send(&private, &alice, "secret root").await;
    let reply = post_message(
        &app,
        &room,
        &bob,
        json!({"body": "reply", "thread_root_id": root["id"]}),
    )
    .await;
    let path = |room: &str, root: &Value| {
        format!(
            "/chat/rooms/{room}/threads/{}/messages",
            root.as_str().unwrap()
        )
    };
    // Not a member: 403 for a public room, 404 for a private one.
    let (s, b) = app.get(&path(&room, &root["id"]), &carol).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("not_member")), "{b}");
    let (s, _) = app.get(&path(&private, &secret_root["id"]), &carol).await;
    assert_eq!(s, 404);
    // A root of another room, a reply as root, an unknown id: 404 message_not_found.
    for target in [
        &secret_root["id"],
        &reply["id"],
        &json!(uuid::Uuid::now_v7()),
    ] {
        let (s, b) = app.get(&path(&room, target), &alice).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (404, Some("message_not_found")),
            "{b}"
        );
    }
    let (s, b) = app
        .get(&format!("/chat/rooms/{room}/threads/nope/messages"), &alice)
        .await;
    assert_eq!(s, 400, "{b}");
    // After leaving, the thread is closed to bob too.
    let (s, _) = app
        .post(&format!("/chat/rooms/{room}/leave"), json!({}), &bob)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app.get(&path(&room, &root["id"]), &bob).await;
    assert_eq!(s, 403);
    app.stop().await;
}

async fn thread_replies_are_room_events_covered_by_resume(backend: Backend) {
    let Some(app) = common::start(backend, "thread_replies_resume").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let mut ws = app.connect(&bob).await;
    let root = app.send(&room, &alice, "root").await;
    let seen = ws.next_of("event").await;
    assert_eq!(seen["seq"], root["seq"]);
    drop(ws);
    // While bob is away: two thread replies and a top-level message.
    let mut sent = Vec::new();
    for body in ["r1", "r2"] {
        sent.push(
            post_message(
                &app,
                &room,
                &alice,
                json!({"body": body, "thread_root_id": root["id"]}),
            )
            .await,
        );
    }
    sent.push(app.send(&room, &alice, "top").await);
    let mut ws = app.connect(&bob).await;
    ws.send(json!({"type": "resume", "rooms": {room.clone(): root["seq"]}}))
        .await;
    let events = common::events_until(&mut ws, &room, sent[2]["seq"].as_i64().unwrap()).await;
    let seqs: Vec<i64> = common::seqs(&events);
    let want: Vec<i64> = sent.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, want, "gap-free, the thread replies included");
    assert_eq!(events[0]["event"]["message"]["thread_root_id"], root["id"]);
    assert_eq!(events[2]["event"]["message"]["thread_root_id"], Value::Null);
    // And in the catch-up log.
    let seqs = app
        .event_seqs(&room, &format!("after={}", root["seq"]), &bob)
        .await;
    assert_eq!(seqs, want);
    app.stop().await;
}

async fn mentions_resolve_members_only(backend: Backend) {
    let Some(app) = common::start(backend, "mentions_members_only").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    let dave = app.user("dave").await;
    app.join(&room, &dave).await;
    app.register_names(&[&alice, &bob, &carol, &dave]).await;
    // Case-insensitive, at word starts; carol is not a member (plain text); the sender is
    // never mentioned; an address is not a mention; duplicates count once.
    let m = app
        .send(
            &room,
            &alice,
            "hi @BOB and @carol, cc @alice @Dave. mail dave@example.com @bob",
        )
        .await;
    assert_eq!(
        ids(&m["mentions"]),
        sorted(vec![bob.id.to_string(), dave.id.to_string()])
    );
    // The same in history and in the event the other member receives.
    let (_, page) = app.get(&format!("/chat/rooms/{room}/messages"), &bob).await;
    let listed = page["items"].as_array().unwrap().last().unwrap();
    assert_eq!(listed["mentions"], m["mentions"]);
    let (_, log) = app
        .get(
            &format!(
                "/chat/rooms/{room}/events?after={}",
                m["seq"].as_i64().unwrap() - 1
            ),
            &bob,
        )
        .await;
    assert_eq!(log["items"][0]["message"]["mentions"], m["mentions"]);
    // No mention at all: an empty list.
    let plain = app.send(&room, &alice, "no one @ all, @x").await;
    assert_eq!(plain["mentions"], json!([]));
    // Over the WebSocket as well.
    let mut ws = app.connect(&bob).await;
    ws.send(json!({"type": "send", "room_id": room, "body": "@alice look", "client_msg_id": "m1"}))
        .await;
    let ack = ws.next_of("ack").await;
    assert_eq!(ack["message"]["mentions"], json!([alice.id]));
    app.stop().await;
}

async fn room_mentions_need_owner_or_admin(backend: Backend) {
    let Some(app) = common::start(backend, "mentions_at_room").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    app.join(&room, &carol).await;
    app.register_names(&[&alice, &bob, &carol]).await;
    // The owner: every member but herself.
    let m = app.send(&room, &alice, "@room meeting now").await;
    assert_eq!(
        ids(&m["mentions"]),
        sorted(vec![bob.id.to_string(), carol.id.to_string()])
    );
    // A member: plain text (but named mentions still count).
    let m = app.send(&room, &bob, "@room hello @carol").await;
    assert_eq!(m["mentions"], json!([carol.id]));
    // Made an admin, bob may.
    let (s, b) = app
        .patch(
            &format!("/chat/rooms/{room}/members/{}", bob.id),
            json!({"role": "admin"}),
            &alice,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let m = app.send(&room, &bob, "@room hello").await;
    assert_eq!(
        ids(&m["mentions"]),
        sorted(vec![alice.id.to_string(), carol.id.to_string()])
    );
    app.stop().await;
}

async fn edits_add_and_remove_mentions(backend: Backend) {
    let Some(app) = common::start(backend, "mentions_on_edit").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    app.join(&room, &carol).await;
    app.register_names(&[&alice, &bob, &carol]).await;
    let events = app.observe_events();
    let m = app.send(&room, &alice, "hey @bob").await;
    assert_eq!(m["mentions"], json!([bob.id]));
    let id = m["id"].as_str().unwrap();
    let (s, edited) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{id}"),
            json!({"body": "hey @carol"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(edited["mentions"], json!([carol.id]));
    let updated = events.of("chat.message.updated", id).await;
    assert_eq!(updated.data["added_mention_ids"], json!([carol.id]));
    assert_eq!(updated.data["removed_mention_ids"], json!([bob.id]));
    assert_eq!(updated.data["mentioned_user_ids"], json!([carol.id]));
    assert_eq!(updated.data["room_kind"], "channel");
    assert_eq!(updated.data["preview"], "hey @carol");
    assert_eq!(updated.data["sender_id"], alice.id.to_string());
    // The room event shows the new mentions; history too.
    let (_, log) = app
        .get(
            &format!("/chat/rooms/{room}/events?after={}", m["seq"]),
            &bob,
        )
        .await;
    let last = log["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "message.updated");
    assert_eq!(last["message"]["mentions"], json!([carol.id]));
    assert_eq!(updated.data["seq"], last["seq"]);
    // An edit that keeps a mention neither adds nor removes it.
    let (s, _) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{id}"),
            json!({"body": "hey @carol, again"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    let (_, log) = app
        .get(
            &format!("/chat/rooms/{room}/events?after={}", last["seq"]),
            &bob,
        )
        .await;
    let again = log["items"][0]["seq"].clone();
    for _ in 0..200 {
        if events
            .all("chat.message.updated")
            .iter()
            .any(|e| e.data["seq"] == again)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let second = events
        .all("chat.message.updated")
        .into_iter()
        .find(|e| e.data["seq"] == again)
        .expect("a second chat.message.updated");
    assert_eq!(second.data["added_mention_ids"], json!([]));
    assert_eq!(second.data["removed_mention_ids"], json!([]));
    app.stop().await;
}

async fn created_event_carries_what_notifications_need(backend: Backend) {
    let Some(app) = common::start(backend, "created_event_payload").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    app.register_names(&[&alice, &bob]).await;
    let events = app.observe_events();
    let root = app.send(&room, &bob, "a question").await;
    let long = format!("@bob {}", "é".repeat(300));
    let reply = post_message(
        &app,
        &room,
        &alice,
        json!({"body": long, "thread_root_id": root["id"], "reply_to": root["id"]}),
    )
    .await;
    let e = events
        .of("chat.message.created", reply["id"].as_str().unwrap())
        .await;
    assert_eq!(e.source, "chat");
    let d = &e.data;
    assert_eq!(d["room_id"], room.as_str());
    assert_eq!(d["seq"], reply["seq"]);
    assert_eq!(d["sender_id"], alice.id.to_string());
    assert_eq!(d["sender_username"], "alice");
    assert_eq!(d["room_kind"], "channel");
    assert_eq!(d["room_name"], "r");
    assert_eq!(d["mentioned_user_ids"], json!([bob.id]));
    assert_eq!(d["mentioned_room"], false);
    assert_eq!(d["thread_root_id"], root["id"]);
    assert_eq!(d["thread_root_sender_id"], bob.id.to_string());
    assert_eq!(d["reply_to"], root["id"]);
    assert_eq!(d["reply_to_sender_id"], bob.id.to_string());
    assert_eq!(d["recipient_ids"], json!([]));
    assert_eq!(d["created_at"], reply["created_at"]);
    let preview = d["preview"].as_str().unwrap();
    assert_eq!(
        preview.chars().count(),
        141,
        "140 characters and an ellipsis"
    );
    assert!(preview.starts_with("@bob éé") && preview.ends_with('…'));
    // A plain top-level message: nulls and empty lists, not missing keys.
    let plain = app.send(&room, &bob, "plain").await;
    let e = events
        .of("chat.message.created", plain["id"].as_str().unwrap())
        .await;
    assert_eq!(e.data["thread_root_id"], Value::Null);
    assert_eq!(e.data["reply_to_sender_id"], Value::Null);
    assert_eq!(e.data["mentioned_user_ids"], json!([]));
    assert_eq!(e.data["preview"], "plain");
    app.stop().await;
}

async fn dm_events_name_the_recipient(backend: Backend) {
    let Some(app) = common::start_with(backend, "dm_event_recipient", |o| {
        o.with_users = true;
    })
    .await
    else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let (s, dm) = app
        .post("/chat/dms", json!({"user_id": bob.id}), &alice)
        .await;
    assert_eq!(s, 201, "{dm}");
    let dm = dm["id"].as_str().unwrap().to_owned();
    let events = app.observe_events();
    let m = app.send(&dm, &alice, "psst").await;
    let id = m["id"].as_str().unwrap();
    let e = events.of("chat.message.created", id).await;
    assert_eq!(e.data["room_kind"], "dm");
    assert_eq!(e.data["room_name"], "");
    assert_eq!(e.data["recipient_ids"], json!([bob.id]));
    let (s, _) = app
        .patch(
            &format!("/chat/rooms/{dm}/messages/{id}"),
            json!({"body": "psst!"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    let e = events.of("chat.message.updated", id).await;
    assert_eq!(e.data["recipient_ids"], json!([bob.id]));
    assert_eq!(e.data["room_kind"], "dm");
    app.stop().await;
}

async fn deleted_event_and_tombstone_clear_mentions(backend: Backend) {
    let Some(app) = common::start(backend, "deleted_event").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    app.register_names(&[&alice, &bob]).await;
    let events = app.observe_events();
    let root = app.send(&room, &alice, "root").await;
    let m = post_message(
        &app,
        &room,
        &bob,
        json!({"body": "@alice see", "thread_root_id": root["id"]}),
    )
    .await;
    assert_eq!(m["mentions"], json!([alice.id]));
    let id = m["id"].as_str().unwrap();
    // The owner removes bob's reply.
    let (s, _) = app
        .delete(&format!("/chat/rooms/{room}/messages/{id}"), &alice)
        .await;
    assert_eq!(s, 204);
    let e = events.of("chat.message.deleted", id).await;
    assert_eq!(e.data["sender_id"], bob.id.to_string());
    assert_eq!(e.data["deleted_by"], alice.id.to_string());
    assert_eq!(e.data["thread_root_id"], root["id"]);
    assert_eq!(e.data["room_kind"], "channel");
    // The tombstone stays in the thread, with no body and no mentions; the root keeps its
    // count (tombstones included, as the listing shows them).
    let (_, t) = app
        .get(
            &format!(
                "/chat/rooms/{room}/threads/{}/messages",
                root["id"].as_str().unwrap()
            ),
            &alice,
        )
        .await;
    assert_eq!(t["items"][0]["deleted"], true);
    assert_eq!(t["items"][0]["body"], "");
    assert_eq!(t["items"][0]["mentions"], json!([]));
    let (_, page) = app
        .get(&format!("/chat/rooms/{room}/messages"), &alice)
        .await;
    assert_eq!(page["items"][0]["reply_count"], 1);
    app.stop().await;
}
