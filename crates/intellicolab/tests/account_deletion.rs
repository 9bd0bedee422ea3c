//! One account deletion (`DELETE /auth/me`, API.md "Auth additions — v1.1") followed
//! through the real binary (`serve all`), as a client sees it through the gateway: the
//! login is refused and the tokens stop working at once; the user service drops the
//! profile and the follows both ways; chat drops the memberships (the room passes to the
//! next member) and keeps the messages with `sender_id` null; the username and email
//! cannot be registered again (reserved for 30 days).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, Ports, Proc};

/// Calls `GET path` as `token` until `ok` holds (10 s at most): the other services
/// follow the deletion through the bus, asynchronously.
async fn eventually(
    api: &Client,
    path: &str,
    token: &str,
    ok: impl Fn(u16, &Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let (s, body, _) = api.call("GET", path, Some(token), None).await;
        if ok(s, &body) {
            return body;
        }
        last = json!({"status": s, "body": body});
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("GET {path} never satisfied the check; last answer {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_is_gone_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let _system = Proc::start(dir.path(), "all", &["serve", "all"], &ports.env(dir.path()));
    ports.wait_all_ready().await;
    let api = Client::new(&ports.gateway_url());
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    for who in [&alice, &bob] {
        eventually(&api, "/users/me", &who.access, |s, _| s == 200).await;
    }
    for (from, to) in [(&alice, &bob), (&bob, &alice)] {
        let (s, body, _) = api
            .call(
                "PUT",
                &format!("/users/me/following/{}", to.id),
                Some(&from.access),
                None,
            )
            .await;
        assert_eq!(s, 204, "{body}");
    }
    let (s, room, _) = api
        .call(
            "POST",
            "/chat/rooms",
            Some(&alice.access),
            Some(json!({"name": "general", "visibility": "public"})),
        )
        .await;
    assert_eq!(s, 201, "{room}");
    let room = room["id"].as_str().unwrap().to_owned();
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/chat/rooms/{room}/join"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let messages = format!("/chat/rooms/{room}/messages");
    let (s, sent, _) = api
        .call(
            "POST",
            &messages,
            Some(&alice.access),
            Some(json!({"body": "bye all"})),
        )
        .await;
    assert_eq!(s, 201, "{sent}");

    let (s, body, _) = api
        .call(
            "DELETE",
            "/auth/me",
            Some(&alice.access),
            Some(json!({"current_password": alice.password})),
        )
        .await;
    assert_eq!(s, 204, "{body}");

    // At once: the tokens are refused by every service, the login and refresh too.
    for path in ["/auth/me", "/users/me", "/chat/rooms"] {
        let (s, body, _) = api.call("GET", path, Some(&alice.access), None).await;
        assert_eq!(s, 401, "{path}: {body}");
    }
    let (s, body, _) = api
        .call(
            "POST",
            "/auth/login",
            None,
            Some(json!({"login": "alice", "password": alice.password})),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (s, _, _) = api
        .call(
            "POST",
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": alice.refresh})),
        )
        .await;
    assert_eq!(s, 401);

    // The user service: the profile and the follows both ways go.
    eventually(
        &api,
        &format!("/users/{}", alice.id),
        &bob.access,
        |s, _| s == 404,
    )
    .await;
    let me = eventually(&api, "/users/me", &bob.access, |_, p| {
        p["followers_count"] == 0 && p["following_count"] == 0
    })
    .await;
    assert_eq!(me["username"], "bob");

    // Chat: the membership goes (Bob owns the room now); the message stays, sender null.
    let room_now = eventually(&api, &format!("/chat/rooms/{room}"), &bob.access, |_, r| {
        r["owner_id"] == bob.id.as_str()
    })
    .await;
    assert_eq!(room_now["member_count"], 1, "{room_now}");
    let page = eventually(&api, &messages, &bob.access, |_, p| {
        p["items"][0]["sender_id"].is_null()
    })
    .await;
    assert_eq!(page["items"][0]["id"], sent["id"], "{page}");
    assert_eq!(page["items"][0]["body"], "bye all");

    // The name and the address are reserved.
    for (body, code) in [
        (
            json!({"username": "alice", "email": "new@example.com", "password": "a long new password"}),
            "username_taken",
        ),
        (
            json!({"username": "alice2", "email": "alice@example.com", "password": "a long new password"}),
            "email_taken",
        ),
    ] {
        let (s, problem, _) = api.call("POST", "/auth/register", None, Some(body)).await;
        assert_eq!(
            (s, problem["code"].as_str()),
            (409, Some(code)),
            "{problem}"
        );
    }
}
