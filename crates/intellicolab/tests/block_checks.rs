//! The chat service asks the user service (its internal relationship endpoint) before it
//! opens a DM or adds someone to a room. Tested against the real binary, through the
//! gateway like a client: in one process (`serve all`) and with one process per service,
//! where stopping the user service must make DM creation answer 503 — never a silent allow.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Account, Client, Ports, Proc};

const PROBLEM: &str = "application/problem+json";

fn assert_problem(status: u16, body: &Value, ctype: &str, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert!(ctype.starts_with(PROBLEM), "content type {ctype}: {body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
}

/// Registers and logs in `a` and `b`, and makes sure both have a profile at the user
/// service (a block needs the target's profile).
async fn two_users(api: &Client, a: &str, b: &str) -> (Account, Account) {
    let mut alice = api.register(a).await;
    let mut bob = api.register(b).await;
    api.login(&mut alice).await;
    api.login(&mut bob).await;
    for who in [&alice, &bob] {
        let (s, me, _) = api.call("GET", "/users/me", Some(&who.access), None).await;
        assert_eq!(s, 200, "{me}");
        assert_eq!(me["id"], who.id.as_str());
    }
    (alice, bob)
}

async fn open_dm(api: &Client, from: &Account, to: &Account) -> (u16, Value, String) {
    api.call(
        "POST",
        "/chat/dms",
        Some(&from.access),
        Some(json!({"user_id": to.id})),
    )
    .await
}

async fn members(api: &Client, owner: &Account, room: &str) -> Vec<String> {
    let (s, page, _) = api
        .call(
            "GET",
            &format!("/chat/rooms/{room}/members"),
            Some(&owner.access),
            None,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_refuses_dms_and_invites_until_it_is_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let _system = Proc::start(dir.path(), "all", &["serve", "all"], &ports.env(dir.path()));
    ports.wait_all_ready().await;
    let api = Client::new(&ports.gateway_url());
    let (alice, bob) = two_users(&api, "alice", "bob").await;

    // Bob blocks Alice.
    let (s, body, _) = api
        .call(
            "PUT",
            &format!("/users/me/blocks/{}", alice.id),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 204, "{body}");

    // Neither side can open the DM.
    let (s, body, ct) = open_dm(&api, &alice, &bob).await;
    assert_problem(s, &body, &ct, 403, "blocked");
    let (s, body, ct) = open_dm(&api, &bob, &alice).await;
    assert_problem(s, &body, &ct, 403, "blocked");

    // Alice cannot add Bob to her room.
    let (s, room, _) = api
        .call(
            "POST",
            "/chat/rooms",
            Some(&alice.access),
            Some(json!({"name": "alices-room", "visibility": "private"})),
        )
        .await;
    assert_eq!(s, 201, "{room}");
    let room = room["id"].as_str().unwrap().to_owned();
    let invite = json!({"user_id": bob.id});
    let (s, body, ct) = api
        .call(
            "POST",
            &format!("/chat/rooms/{room}/members"),
            Some(&alice.access),
            Some(invite.clone()),
        )
        .await;
    assert_problem(s, &body, &ct, 403, "blocked");
    assert_eq!(members(&api, &alice, &room).await, vec![alice.id.clone()]);
    // Bob does not see the room either.
    let (s, body, _) = api
        .call(
            "GET",
            &format!("/chat/rooms/{room}"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 404, "{body}");

    // Bob lifts the block: the DM opens, and it is the same room every time, from both sides.
    let (s, body, _) = api
        .call(
            "DELETE",
            &format!("/users/me/blocks/{}", alice.id),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, dm, _) = open_dm(&api, &alice, &bob).await;
    assert_eq!(s, 201, "{dm}");
    assert_eq!(dm["kind"], "dm", "{dm}");
    let dm_id = dm["id"].as_str().unwrap().to_owned();
    for (from, to) in [(&alice, &bob), (&bob, &alice), (&alice, &bob)] {
        let (s, again, _) = open_dm(&api, from, to).await;
        assert_eq!(s, 200, "{again}");
        assert_eq!(again["id"], dm_id.as_str(), "{again}");
    }
    let mut dm_members = members(&api, &alice, &dm_id).await;
    dm_members.sort();
    let mut pair = vec![alice.id.clone(), bob.id.clone()];
    pair.sort();
    assert_eq!(dm_members, pair);

    // And the invitation goes through.
    let (s, body, _) = api
        .call(
            "POST",
            &format!("/chat/rooms/{room}/members"),
            Some(&alice.access),
            Some(invite),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert!(members(&api, &alice, &room).await.contains(&bob.id));
    let (s, body, _) = api
        .call(
            "GET",
            &format!("/chat/rooms/{room}"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");

    // Blocking again closes the DM to new openings from either side.
    let (s, body, _) = api
        .call(
            "PUT",
            &format!("/users/me/blocks/{}", bob.id),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body, ct) = open_dm(&api, &bob, &alice).await;
    assert_problem(s, &body, &ct, 403, "blocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_user_service_a_dm_is_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let env = ports.env(dir.path());
    // One process per service, sharing the data dir; the others get the signing keys'
    // public half from the auth service's JWKS.
    let serve = |role: &str| Proc::start(dir.path(), role, &["serve", role], &env);
    let _auth = serve("auth");
    support::wait_ready(&format!("{}/readyz", ports.auth_url())).await;
    let mut users = serve("users");
    let _chat = serve("chat");
    let _gateway = serve("gateway");
    ports.wait_all_ready().await;
    let api = Client::new(&ports.gateway_url());
    let (alice, bob) = two_users(&api, "alice", "bob").await;
    let carol = api.register("carol").await;

    // The relationship check crosses processes: a block is seen by the chat service.
    let (s, body, _) = api
        .call(
            "PUT",
            &format!("/users/me/blocks/{}", alice.id),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body, ct) = open_dm(&api, &alice, &bob).await;
    assert_problem(s, &body, &ct, 403, "blocked");
    let (s, body, _) = api
        .call(
            "DELETE",
            &format!("/users/me/blocks/{}", alice.id),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, dm, _) = open_dm(&api, &alice, &bob).await;
    assert_eq!(s, 201, "{dm}");
    let dm_id = dm["id"].as_str().unwrap().to_owned();
    let (s, room, _) = api
        .call(
            "POST",
            "/chat/rooms",
            Some(&alice.access),
            Some(json!({"name": "alices-room", "visibility": "public"})),
        )
        .await;
    assert_eq!(s, 201, "{room}");
    let room = room["id"].as_str().unwrap().to_owned();

    // The user service stops: the chat service cannot know whether a block exists.
    assert!(
        users.terminate().success(),
        "users exits cleanly on SIGTERM"
    );
    for _ in 0..4 {
        // Also once the chat service's circuit breaker has opened (after 3 failures).
        let (s, body, ct) = open_dm(&api, &alice, &bob).await;
        assert_problem(s, &body, &ct, 503, "dependency_unavailable");
        let (s, body, ct) = open_dm(&api, &bob, &alice).await;
        assert_problem(s, &body, &ct, 503, "dependency_unavailable");
        // Nor is a new conversation opened unchecked.
        let (s, body, ct) = open_dm(&api, &alice, &carol).await;
        assert_problem(s, &body, &ct, 503, "dependency_unavailable");
    }
    let (s, body, ct) = api
        .call(
            "POST",
            &format!("/chat/rooms/{room}/members"),
            Some(&alice.access),
            Some(json!({"user_id": bob.id})),
        )
        .await;
    assert_problem(s, &body, &ct, 503, "dependency_unavailable");
    assert_eq!(members(&api, &alice, &room).await, vec![alice.id.clone()]);
    // What does not need the user service keeps working.
    let (s, body, _) = api
        .call(
            "POST",
            &format!("/chat/rooms/{dm_id}/messages"),
            Some(&alice.access),
            Some(json!({"body": "still here", "client_msg_id": "m1"})),
        )
        .await;
    assert_eq!(s, 201, "{body}");

    // The user service comes back: the same DM opens again (once the breaker half-opens).
    let _users = serve("users");
    support::wait_ready(&format!("{}/readyz", ports.users_url())).await;
    let mut last = (0, Value::Null);
    for _ in 0..300 {
        let (s, body, _) = open_dm(&api, &alice, &bob).await;
        if s == 200 {
            assert_eq!(body["id"], dm_id.as_str(), "{body}");
            last = (s, body);
            break;
        }
        assert_eq!(s, 503, "only 503 while the breaker is open: {body}");
        last = (s, body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "the DM did not open again: {}", last.1);
    // Alice's DM with Carol was not created while the check was impossible.
    let (s, body, _) = open_dm(&api, &alice, &carol).await;
    assert_eq!(s, 201, "{body}");
    let (s, rooms, _) = api
        .call("GET", "/chat/rooms", Some(&carol.access), None)
        .await;
    assert_eq!(s, 200, "{rooms}");
    assert_eq!(rooms["items"].as_array().unwrap().len(), 1, "{rooms}");
}
