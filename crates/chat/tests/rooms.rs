//! Rooms, membership, DMs and invitations through the HTTP API, on both backends.
#![allow(clippy::unwrap_used)]

mod common;

use kit::db::Backend;
use reqwest::Method;
use serde_json::{Value, json};

kit::backend_tests!(
    create_and_show_rooms,
    visibility_and_join,
    leave_and_ownership,
    invite_kick_and_roles,
    dms_are_one_room_per_pair,
    blocks_reported_by_the_user_service_refuse,
    user_service_down_is_503,
    my_rooms_and_discover,
    openapi_lists_every_route,
    internal_membership_lookup,
    internal_presence_lookup,
    reads_and_notification_counts_cross_the_bus,
);

async fn create_and_show_rooms(backend: Backend) {
    let Some(app) = common::start(backend, "create_and_show_rooms").await else {
        return;
    };
    let alice = app.user("alice").await;
    let (s, room) = app
        .post(
            "/chat/rooms",
            json!({"name": "  General ", "visibility": "public", "topic": "chit-chat"}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{room}");
    assert_eq!(room["name"], "General");
    assert_eq!(room["kind"], "channel");
    assert_eq!(room["topic"], "chit-chat");
    assert_eq!(room["visibility"], "public");
    assert_eq!(room["owner_id"], alice.id.to_string());
    assert_eq!(room["member_count"], 1);
    assert_eq!(
        room["last_seq"], 1,
        "creation records the owner's member.joined"
    );
    assert!(room["created_at"].as_str().unwrap().ends_with('Z'));
    let id = room["id"].as_str().unwrap();

    let (s, got) = app.get(&format!("/chat/rooms/{id}"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(got, room);

    let (s, events) = app.get(&format!("/chat/rooms/{id}/events"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(events["has_more"], false);
    let e = &events["items"][0];
    assert_eq!(
        (e["seq"].as_i64(), e["kind"].as_str()),
        (Some(1), Some("member.joined"))
    );
    assert_eq!(e["user_id"], alice.id.to_string());
    assert_eq!(e["room_id"], id);

    // Validation: every bad field is named.
    let (s, b) = app
        .post(
            "/chat/rooms",
            json!({"name": " ", "visibility": "secret"}),
            &alice,
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["code"], "validation_failed");
    let fields: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "visibility"]);
    let (s, b) = app
        .post(
            "/chat/rooms",
            json!({"name": "x".repeat(81), "visibility": "public"}),
            &alice,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let (s, b) = app.post("/chat/rooms", json!({"name": "x"}), &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));

    // Authentication, ids, unknown rooms.
    let (s, b) = app
        .call(Method::GET, &format!("/chat/rooms/{id}"), None, None)
        .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthorized")));
    let (s, b) = app
        .call(
            Method::GET,
            &format!("/chat/rooms/{id}"),
            None,
            Some("not-a-jwt"),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_token")));
    let (s, b) = app.get("/chat/rooms/not-a-uuid", &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_id")));
    let (s, b) = app
        .get(&format!("/chat/rooms/{}", uuid::Uuid::now_v7()), &alice)
        .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("room_not_found")));
    app.stop().await;
}

async fn visibility_and_join(backend: Backend) {
    let Some(app) = common::start(backend, "visibility_and_join").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let public = app.room(&alice, "public", "public").await;
    let private = app.room(&alice, "private", "private").await;

    // A private room does not exist for outsiders; a public one can be seen.
    for path in [
        format!("/chat/rooms/{private}"),
        format!("/chat/rooms/{private}/members"),
        format!("/chat/rooms/{private}/messages"),
        format!("/chat/rooms/{private}/events"),
    ] {
        let (s, b) = app.get(&path, &bob).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (404, Some("room_not_found")),
            "{path}"
        );
    }
    let (s, b) = app
        .post(&format!("/chat/rooms/{private}/join"), json!({}), &bob)
        .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("room_not_found")));
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{private}/messages"),
            json!({"body": "hi"}),
            &bob,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("room_not_found")));

    let (s, b) = app.get(&format!("/chat/rooms/{public}"), &bob).await;
    assert_eq!(s, 200, "{b}");
    // Members only, for a public room too.
    let (s, b) = app
        .get(&format!("/chat/rooms/{public}/members"), &bob)
        .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("not_member")));
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{public}/messages"),
            json!({"body": "hi"}),
            &bob,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("not_member")));

    let (s, room) = app
        .post(&format!("/chat/rooms/{public}/join"), json!({}), &bob)
        .await;
    assert_eq!(s, 200, "{room}");
    assert_eq!(room["member_count"], 2);
    assert_eq!(room["last_seq"], 2);
    // Joining again changes nothing.
    let (s, again) = app
        .post(&format!("/chat/rooms/{public}/join"), json!({}), &bob)
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["last_seq"], 2);

    let (s, members) = app
        .get(&format!("/chat/rooms/{public}/members"), &bob)
        .await;
    assert_eq!(s, 200);
    let mut roles: Vec<(String, String)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m["joined_at"].is_string());
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    roles.sort();
    let mut expected = vec![
        (alice.id.to_string(), "owner".to_owned()),
        (bob.id.to_string(), "member".to_owned()),
    ];
    expected.sort();
    assert_eq!(roles, expected);
    assert_eq!(members["next_cursor"], Value::Null);

    // Paging members.
    let (s, p1) = app
        .get(&format!("/chat/rooms/{public}/members?limit=1"), &bob)
        .await;
    assert_eq!(s, 200);
    assert_eq!(p1["items"].as_array().unwrap().len(), 1);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = app
        .get(
            &format!("/chat/rooms/{public}/members?limit=1&cursor={cursor}"),
            &bob,
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_ne!(p1["items"][0]["user_id"], p2["items"][0]["user_id"]);
    assert_eq!(p2["next_cursor"], Value::Null);
    let (s, b) = app
        .get(&format!("/chat/rooms/{public}/members?limit=0"), &bob)
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let (s, b) = app
        .get(&format!("/chat/rooms/{public}/members?cursor=zzz"), &bob)
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_cursor")));
    app.stop().await;
}

async fn leave_and_ownership(backend: Backend) {
    let Some(app) = common::start(backend, "leave_and_ownership").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    app.join(&room, &carol).await;

    let (s, _) = app
        .post(&format!("/chat/rooms/{room}/leave"), json!({}), &carol)
        .await;
    assert_eq!(s, 204);
    let (s, b) = app
        .post(&format!("/chat/rooms/{room}/leave"), json!({}), &carol)
        .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("not_member")));

    // The owner leaves: the longest-standing member becomes owner.
    let (s, _) = app
        .post(&format!("/chat/rooms/{room}/leave"), json!({}), &alice)
        .await;
    assert_eq!(s, 204);
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &bob).await;
    assert_eq!(r["owner_id"], bob.id.to_string());
    assert_eq!(r["member_count"], 1);
    let (_, events) = app.get(&format!("/chat/rooms/{room}/events"), &bob).await;
    let kinds: Vec<(i64, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "member.joined"),
            (2, "member.joined"),
            (3, "member.joined"),
            (4, "member.left"),
            (5, "member.left"),
            (6, "member.role_changed"),
        ]
    );
    assert_eq!(events["items"][3]["user_id"], carol.id.to_string());
    // A member who left no longer reads the room.
    let (s, _) = app
        .get(&format!("/chat/rooms/{room}/messages"), &alice)
        .await;
    assert_eq!(s, 403);
    app.stop().await;
}

async fn invite_kick_and_roles(backend: Backend) {
    let Some(app) =
        common::start_with(backend, "invite_kick_and_roles", |o| o.with_users = true).await
    else {
        return;
    };
    let [alice, bob, carol, dave] = app.users(["alice", "bob", "carol", "dave"]).await;
    let room = app.room(&alice, "secret", "private").await;
    let members = format!("/chat/rooms/{room}/members");

    let (s, b) = app.post(&members, json!({"user_id": bob.id}), &alice).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app.post(&members, json!({"user_id": bob.id}), &alice).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("already_member")));
    // Bob now sees the private room; a plain member may not invite.
    let (s, _) = app.get(&format!("/chat/rooms/{room}"), &bob).await;
    assert_eq!(s, 200);
    let (s, b) = app.post(&members, json!({"user_id": carol.id}), &bob).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")));
    // Outsiders do not even see the room.
    let (s, b) = app
        .post(&members, json!({"user_id": dave.id}), &carol)
        .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("room_not_found")));
    let (s, b) = app.post(&members, json!({"user_id": "nope"}), &alice).await;
    assert_eq!(s, 400, "{b}");

    // The owner makes Bob an admin; an admin invites and removes members.
    let (s, b) = app
        .patch(
            &format!("{members}/{}", bob.id),
            json!({"role": "admin"}),
            &alice,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = app
        .patch(
            &format!("{members}/{}", bob.id),
            json!({"role": "god"}),
            &alice,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let (s, _) = app.post(&members, json!({"user_id": carol.id}), &bob).await;
    assert_eq!(s, 201);
    let (s, b) = app
        .patch(
            &format!("{members}/{}", carol.id),
            json!({"role": "admin"}),
            &bob,
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("forbidden")),
        "only the owner changes roles"
    );
    let (s, b) = app.delete(&format!("{members}/{}", alice.id), &bob).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("forbidden")),
        "nobody removes the owner"
    );
    let (s, b) = app.delete(&format!("{members}/{}", bob.id), &carol).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("forbidden")),
        "members remove nobody"
    );
    let (s, b) = app.delete(&format!("{members}/{}", bob.id), &bob).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("use_leave")));
    let (s, _) = app.delete(&format!("{members}/{}", carol.id), &bob).await;
    assert_eq!(s, 204);
    let (s, b) = app.delete(&format!("{members}/{}", carol.id), &bob).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("member_not_found")));
    // Removed from a private room: it is gone for Carol.
    let (s, _) = app.get(&format!("/chat/rooms/{room}"), &carol).await;
    assert_eq!(s, 404);

    let (_, events) = app.get(&format!("/chat/rooms/{room}/events"), &alice).await;
    assert_eq!(
        common::page_kinds(&events),
        [
            "member.joined",
            "member.joined",
            "member.role_changed",
            "member.joined",
            "member.removed"
        ]
    );
    let removed = &events["items"][4];
    assert_eq!(removed["user_id"], carol.id.to_string());
    assert_eq!(removed["by"], bob.id.to_string());
    app.stop().await;
}

async fn dms_are_one_room_per_pair(backend: Backend) {
    let Some(app) = common::start_with(backend, "dms_are_one_room_per_pair", |o| {
        o.with_users = true
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
    assert_eq!(dm["kind"], "dm");
    assert_eq!(dm["visibility"], "private");
    assert_eq!(dm["member_count"], 2);
    assert_eq!(dm["last_seq"], 2);
    let (s, again) = app
        .post("/chat/dms", json!({"user_id": alice.id}), &bob)
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["id"], dm["id"]);

    // Concurrent first contact from both sides: still one room.
    let [carol, dave] = app.users(["carol", "dave"]).await;
    let opens = (0..10)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                (&carol, &dave)
            } else {
                (&dave, &carol)
            };
            ("/chat/dms".to_owned(), json!({"user_id": to.id}), from)
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for (s, b) in app.post_concurrently(opens).await {
        assert!(s == 200 || s == 201, "{s} {b}");
        created += usize::from(s == 201);
        ids.insert(b["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);

    let id = dm["id"].as_str().unwrap();
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{id}/members"),
            json!({"user_id": carol.id}),
            &alice,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("not_a_channel")));
    let (s, b) = app
        .post("/chat/dms", json!({"user_id": alice.id}), &alice)
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    // Outsiders cannot see a DM.
    let (s, _) = app.get(&format!("/chat/rooms/{id}"), &carol).await;
    assert_eq!(s, 404);
    // Leaving and opening again: the same room, with the member back.
    let (s, _) = app
        .post(&format!("/chat/rooms/{id}/leave"), json!({}), &bob)
        .await;
    assert_eq!(s, 204);
    let (s, back) = app
        .post("/chat/dms", json!({"user_id": alice.id}), &bob)
        .await;
    assert_eq!(s, 200);
    assert_eq!(back["id"], dm["id"]);
    assert_eq!(back["member_count"], 2);
    app.stop().await;
}

async fn blocks_reported_by_the_user_service_refuse(backend: Backend) {
    let Some(app) =
        common::start_with(backend, "blocks_are_checked", |o| o.with_users = true).await
    else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    app.block(&bob, &alice).await;
    // Either side blocking forbids a DM.
    let (s, b) = app
        .post("/chat/dms", json!({"user_id": bob.id}), &alice)
        .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("blocked")));
    let (s, b) = app
        .post("/chat/dms", json!({"user_id": alice.id}), &bob)
        .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("blocked")));
    // The invitee blocks the inviter: refused; another inviter is fine.
    let room = app.room(&alice, "r", "private").await;
    let members = format!("/chat/rooms/{room}/members");
    let (s, b) = app.post(&members, json!({"user_id": bob.id}), &alice).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("blocked")));
    let (s, _) = app
        .post(&members, json!({"user_id": carol.id}), &alice)
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .patch(
            &format!("{members}/{}", carol.id),
            json!({"role": "admin"}),
            &alice,
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = app.post(&members, json!({"user_id": bob.id}), &carol).await;
    assert_eq!(s, 201, "{b}");
    // Carol and Bob have no blocks: their DM works.
    let (s, _) = app
        .post("/chat/dms", json!({"user_id": bob.id}), &carol)
        .await;
    assert_eq!(s, 201);
    app.stop().await;
}

async fn user_service_down_is_503(backend: Backend) {
    let Some(app) = common::start(backend, "user_service_down_is_503").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let room = app.room(&alice, "r", "public").await;
    // Repeated failures open the circuit breaker; the answer stays a clear 503.
    for _ in 0..5 {
        let (s, b) = app
            .post("/chat/dms", json!({"user_id": bob.id}), &alice)
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (503, Some("dependency_unavailable")),
            "{b}"
        );
        let (s, b) = app
            .post(
                &format!("/chat/rooms/{room}/members"),
                json!({"user_id": bob.id}),
                &alice,
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (503, Some("dependency_unavailable")),
            "{b}"
        );
    }
    // Nothing was created or added on the way.
    let (_, r) = app.get(&format!("/chat/rooms/{room}"), &alice).await;
    assert_eq!(r["member_count"], 1);
    let (_, mine) = app.get("/chat/rooms", &alice).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn my_rooms_and_discover(backend: Backend) {
    let Some(app) = common::start(backend, "my_rooms_and_discover").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let rust = app.room(&alice, "Rust lovers", "public").await;
    let _secret = app.room(&alice, "Rust secret", "private").await;
    let _go = app.room(&bob, "Gophers", "public").await;
    app.join(&rust, &bob).await;
    app.send(&rust, &alice, "one").await;
    app.send(&rust, &alice, "two").await;
    let mine_last = app.send(&rust, &bob, "three").await;

    let (s, mine) = app.get("/chat/rooms", &bob).await;
    assert_eq!(s, 200);
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let r = items.iter().find(|r| r["id"] == rust.as_str()).unwrap();
    assert_eq!(
        r["unread_count"], 2,
        "Alice's two messages; Bob's own do not count"
    );
    assert_eq!(r["last_message"], mine_last);
    assert_eq!(r["role"], "member");
    let (s, _) = app
        .post(
            &format!("/chat/rooms/{rust}/read"),
            json!({"seq": mine_last["seq"]}),
            &bob,
        )
        .await;
    assert_eq!(s, 204);
    let (_, mine) = app.get("/chat/rooms", &bob).await;
    let r = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == rust.as_str())
        .unwrap();
    assert_eq!(r["unread_count"], 0);
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{rust}/read"),
            json!({"seq": -1}),
            &bob,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
    let (s, b) = app
        .post(
            &format!("/chat/rooms/{rust}/read"),
            json!({"seq": "x"}),
            &bob,
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));

    // Paging my rooms.
    let (_, p1) = app.get("/chat/rooms?limit=1", &bob).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 1);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = app
        .get(&format!("/chat/rooms?limit=1&cursor={c}"), &bob)
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["next_cursor"], Value::Null);

    // Discover: public channels only, case-insensitive.
    let (s, found) = app.get("/chat/rooms/discover?q=rUsT", &bob).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Rust lovers"]);
    let (_, all) = app.get("/chat/rooms/discover", &bob).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    // LIKE wildcards are literal.
    let (_, none) = app.get("/chat/rooms/discover?q=%25", &bob).await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    app.stop().await;
}

async fn openapi_lists_every_route(backend: Backend) {
    let Some(app) = common::start(backend, "openapi_lists_every_route").await else {
        return;
    };
    let res = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("/chat/rooms", "post"),
        ("/chat/rooms", "get"),
        ("/chat/rooms/discover", "get"),
        ("/chat/rooms/{id}", "get"),
        ("/chat/rooms/{id}/join", "post"),
        ("/chat/rooms/{id}/leave", "post"),
        ("/chat/rooms/{id}/members", "get"),
        ("/chat/rooms/{id}/members", "post"),
        ("/chat/rooms/{id}/members/{user_id}", "delete"),
        ("/chat/dms", "post"),
        ("/chat/rooms/{id}/messages", "post"),
        ("/chat/rooms/{id}/messages", "get"),
        ("/chat/rooms/{id}/messages/{message_id}", "patch"),
        ("/chat/rooms/{id}/messages/{message_id}", "delete"),
        ("/chat/rooms/{id}/read", "post"),
        ("/chat/rooms/{id}/events", "get"),
        ("/chat/ws", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for part in text.split("#/components/schemas/").skip(1) {
        let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(doc["components"]["schemas"][&name].is_object(), "{name}");
    }
    app.stop().await;
}

/// `GET /internal/rooms/{room_id}/members/{user_id}` (for the notifications service):
/// `{role, room_kind}` for members, 404 `member_not_found` otherwise (unknown room too).
async fn internal_membership_lookup(backend: Backend) {
    let Some(app) = common::start(backend, "internal_membership_lookup").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let carol = app.user("carol").await;
    let url = |room: &str, u: &common::User| {
        format!("{}/internal/rooms/{room}/members/{}", app.url, u.id)
    };
    for (u, role) in [(&alice, "owner"), (&bob, "member")] {
        let (s, b) = common::read(app.http.get(url(&room, u)).send().await.unwrap()).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b, json!({"role": role, "room_kind": "channel"}));
    }
    let missing = uuid::Uuid::now_v7().to_string();
    for (r, u) in [(room.as_str(), &carol), (missing.as_str(), &alice)] {
        let (s, b) = common::read(app.http.get(url(r, u)).send().await.unwrap()).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (404, Some("member_not_found")),
            "{b}"
        );
    }
    app.stop().await;
}

/// `GET /internal/presence?user_ids=` (for the notifications service): the same items as
/// `GET /chat/presence`, without a viewer.
async fn internal_presence_lookup(backend: Backend) {
    let Some(app) = common::start(backend, "internal_presence_lookup").await else {
        return;
    };
    let [alice, bob] = app.users(["alice", "bob"]).await;
    let _ws = app.connect(&alice).await;
    let url = format!(
        "{}/internal/presence?user_ids={},{}",
        app.url, alice.id, bob.id
    );
    let mut last = Value::Null;
    for _ in 0..100 {
        let (s, b) = common::read(app.http.get(&url).send().await.unwrap()).await;
        assert_eq!(s, 200, "{b}");
        if b["items"][0]["status"] == "online" {
            last = b;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last["items"][0]["user_id"], alice.id.to_string(), "{last}");
    assert_eq!(last["items"][0]["status"], "online");
    assert_eq!(last["items"][1]["user_id"], bob.id.to_string());
    assert_eq!(last["items"][1]["status"], "offline");
    let bad = format!("{}/internal/presence?user_ids=nope", app.url);
    let (s, b) = common::read(app.http.get(&bad).send().await.unwrap()).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_id")));
    app.stop().await;
}

/// A read marker that moves publishes `chat.room.read` (the notifications service reads
/// the room's notifications with it); one that does not move publishes nothing. And the
/// notifications service's `notifications.unread_count` reaches the user's sockets.
async fn reads_and_notification_counts_cross_the_bus(backend: Backend) {
    let Some(app) = common::start(backend, "reads_and_counts_bus").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let events = app.observe_events();
    let m = app.send(&room, &alice, "hello").await;
    let read = |seq: &Value| json!({"seq": seq});
    let (s, _) = app
        .post(&format!("/chat/rooms/{room}/read"), read(&m["seq"]), &bob)
        .await;
    assert_eq!(s, 204);
    // Again at the same seq: the marker does not move.
    let (s, _) = app
        .post(&format!("/chat/rooms/{room}/read"), read(&m["seq"]), &bob)
        .await;
    assert_eq!(s, 204);
    for _ in 0..100 {
        if !events.all("chat.room.read").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // Time for a (wrong) second one to arrive too.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let seen = events.all("chat.room.read");
    assert_eq!(seen.len(), 1, "only the move is published");
    assert_eq!(
        seen[0].data,
        json!({"room_id": room, "user_id": bob.id, "seq": m["seq"]})
    );

    let mut ws = app.connect(&bob).await;
    ws.ping_pong().await;
    for (user, count) in [(&alice, 7), (&bob, 3)] {
        app.bus
            .publish(&bus::Envelope::new(
                "notifications",
                "notifications.unread_count",
                json!({"user_id": user.id, "unread_count": count}),
            ))
            .await
            .unwrap();
    }
    let frame = ws.next_of("notifications").await;
    assert_eq!(frame, json!({"type": "notifications", "unread_count": 3}));
    app.stop().await;
}
