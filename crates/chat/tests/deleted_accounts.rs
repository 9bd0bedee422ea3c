//! Auth's `user.deleted` in chat (API.md "Auth additions — v1.1", `DELETE /auth/me`): the
//! account leaves every room through the ordinary leave (room events, owner handover),
//! its messages stay with `sender_id` null in every representation — messages, the
//! event log, live events — and a redelivery changes nothing. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(a_deleted_account_leaves_and_its_messages_lose_their_sender);

fn deleted(user: &common::User) -> bus::Envelope {
    bus::Envelope::new("auth", "user.deleted", json!({"user_id": user.id}))
}

async fn a_deleted_account_leaves_and_its_messages_lose_their_sender(backend: Backend) {
    let Some(app) = common::start(backend, "deleted_account").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    app.join(&room, &carol).await;
    let (s, _) = app
        .post(
            &format!("/chat/rooms/{room}/messages"),
            json!({"body": "hello from alice", "client_msg_id": "a-1"}),
            &alice,
        )
        .await;
    assert_eq!(s, 201);
    let from_bob = app.send(&room, &bob, "hello from bob").await;
    let mut ws = app.connect(&carol).await;

    let deletion = deleted(&alice);
    app.bus.publish(&deletion).await.unwrap();

    // Carol sees Alice leave and Bob (the longest-standing member, no admin) take over.
    let left = ws.next_of("event").await;
    assert_eq!(left["event"]["kind"], "member.left", "{left}");
    assert_eq!(left["event"]["user_id"], json!(alice.id));
    let handover = ws.next_of("event").await;
    assert_eq!(
        handover["event"]["kind"], "member.role_changed",
        "{handover}"
    );
    assert_eq!(handover["event"]["user_id"], json!(bob.id));
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &bob).await;
    assert_eq!(r["owner_id"], json!(bob.id), "{r}");
    let (_, members) = app.get(&format!("/chat/rooms/{room}/members"), &bob).await;
    let ids: Vec<&Value> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user_id"])
        .collect();
    assert!(!ids.contains(&&json!(alice.id)), "{members}");

    // Messages stay; Alice's lose their sender (in the page and in the event log).
    let mut page = Value::Null;
    for _ in 0..250 {
        (_, page) = app.get(&format!("/chat/rooms/{room}/messages"), &bob).await;
        if page["items"][0]["sender_id"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["body"], "hello from alice");
    assert!(items[0]["sender_id"].is_null(), "{page}");
    assert!(items[0]["client_msg_id"].is_null(), "{page}");
    assert_eq!(items[1]["sender_id"], from_bob["sender_id"]);
    let (_, events) = app.get(&format!("/chat/rooms/{room}/events"), &bob).await;
    let created: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message.created")
        .collect();
    assert_eq!(created.len(), 2, "{events}");
    assert!(created[0]["message"]["sender_id"].is_null(), "{events}");
    assert_eq!(created[1]["message"]["sender_id"], json!(bob.id));
    assert!(
        !events
            .to_string()
            .contains(&format!("\"sender_id\":\"{}\"", alice.id)),
        "{events}"
    );

    // A redelivery (or a second instance's delivery) adds nothing.
    let (_, before) = app.get(&format!("/chat/rooms/{room}"), &bob).await;
    app.bus.publish(&deletion).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, after) = app.get(&format!("/chat/rooms/{room}"), &bob).await;
    assert_eq!(before["last_seq"], after["last_seq"]);
    // Another account's messages keep their sender, and the room goes on.
    let later = app.send(&room, &carol, "still here").await;
    assert_eq!(later["sender_id"], json!(carol.id));
    app.stop().await;
}
