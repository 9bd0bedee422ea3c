//! The Users section of API.md through HTTP on a real port, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, assert_problem, usernames};
use kit::db::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

kit::backend_tests!(
    profile_from_registered_event,
    duplicate_and_out_of_order_events,
    me_before_the_event_arrives,
    patch_me_and_validation,
    tokens_are_checked_and_revocations_honoured,
    get_user_with_relationship,
    follow_rules_and_events,
    block_removes_follows_and_hides_the_blocker,
    lists_paginate_stably,
    parallel_follows_keep_exact_counts,
    internal_relationships,
    internal_blocks_backfill,
    internal_usernames_backfill,
    blockers_hidden_from_third_party_lists,
    profile_texts_refuse_controls_and_bidi,
    unreachable_database_is_503,
    suggested_people,
    openapi_lists_every_route,
    metrics_are_exported,
    migrate_is_idempotent,
);

async fn profile_from_registered_event(backend: Backend) {
    let Some(app) = App::start(backend, "profile_from_registered_event").await else {
        return;
    };
    let alice = app.register("alice", "Alice Liddell").await;
    let (s, me) = app.get(&alice, "/users/me").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(
        me,
        json!({
            "id": alice.id(), "username": "alice", "display_name": "Alice Liddell", "bio": "",
            "avatar_url": "", "created_at": "2026-01-02T03:04:05.678Z",
            "followers_count": 0, "following_count": 0,
        })
    );
    // Without a display name the username stands in.
    let bob = app.account("bob");
    app.publish(&app.registered_event(&bob, None, "2026-01-01T00:00:00Z"))
        .await;
    let p = app.wait_for(&bob, |_| true).await;
    assert_eq!(p["display_name"], "bob");
    app.stop().await;
}

async fn duplicate_and_out_of_order_events(backend: Backend) {
    let Some(app) = App::start(backend, "duplicate_and_out_of_order_events").await else {
        return;
    };
    // Redelivery of the same event is applied once: a PATCH in between survives it.
    let carol = app.account("carol");
    let registered = app.registered_event(&carol, Some("Carol"), "2026-02-03T04:05:06Z");
    app.publish(&registered).await;
    app.wait_for(&carol, |p| p["display_name"] == "Carol").await;
    let (s, _) = app
        .patch(&carol, json!({"display_name": "Caroline", "bio": "hi"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    app.publish(&registered).await;
    app.publish(&registered).await;
    // An event after the duplicates proves they were consumed before it.
    let marker = app.register("marker", "Marker").await;
    let p = app.profile(&marker, &carol).await;
    assert_eq!(
        (p["display_name"].as_str(), p["bio"].as_str()),
        (Some("Caroline"), Some("hi"))
    );

    // user.updated overtakes user.registered: the newer display name and username win,
    // and the late registration still sets the creation time.
    let dave = app.account("dave");
    let registered = app.registered_event(&dave, Some("Dave Old"), "2025-05-05T05:05:05Z");
    let renamed = app.updated_event(&dave, Some("david"), Some("David New"));
    let bio_only = app.updated_event(&dave, None, None);
    app.publish(&renamed).await;
    app.publish(&bio_only).await;
    app.publish(&registered).await;
    let p = app
        .wait_for(&dave, |p| p["created_at"] == "2025-05-05T05:05:05Z")
        .await;
    assert_eq!(p["username"], "david");
    assert_eq!(p["display_name"], "David New");
    // An older rename arriving last changes nothing either.
    let eve = app.account("eve");
    let registered = app.registered_event(&eve, Some("Eve"), "2026-01-01T00:00:00Z");
    let first = app.updated_event(&eve, None, Some("Eve One"));
    let second = app.updated_event(&eve, None, Some("Eve Two"));
    app.publish(&registered).await;
    app.publish(&second).await;
    app.publish(&first).await;
    app.publish(&app.registered_event(&app.account("marker2"), None, "2026-01-01T00:00:00Z"))
        .await;
    let marker2_done = app.register("marker3", "M3").await;
    assert_eq!(
        app.profile(&marker2_done, &eve).await["display_name"],
        "Eve Two"
    );
    // Renames are announced as profile.updated.
    app.wait_published("profile.updated", |d| {
        d["user_id"] == eve.id() && d["display_name"] == "Eve Two"
    })
    .await;
    // Renamed users are found under the new name only.
    let (_, found) = app.get(&eve, "/users/search?q=david").await;
    assert_eq!(usernames(found["items"].as_array().unwrap()), ["david"]);
    let (_, found) = app.get(&eve, "/users/search?q=dave old").await;
    assert_eq!(found["items"], json!([]));
    app.stop().await;
}

async fn me_before_the_event_arrives(backend: Backend) {
    let Some(app) = App::start(backend, "me_before_the_event_arrives").await else {
        return;
    };
    let frank = app.account("frank");
    // Another user's unknown profile is a 404, never a 500.
    let (s, body) = app
        .get(&frank, &format!("/users/{}", uuid::Uuid::now_v7()))
        .await;
    assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
    // The caller's own profile is created from the token.
    let (s, me) = app.get(&frank, "/users/me").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(
        (me["id"].as_str(), me["username"].as_str()),
        (Some(frank.id().as_str()), Some("frank"))
    );
    assert_eq!(me["display_name"], "frank");
    // The late event fills in the display name and creation time.
    app.publish(&app.registered_event(&frank, Some("Frank Zappa"), "2024-04-04T04:04:04Z"))
        .await;
    let p = app
        .wait_for(&frank, |p| p["display_name"] == "Frank Zappa")
        .await;
    assert_eq!(p["created_at"], "2024-04-04T04:04:04Z");
    // ... but not over a display name the user set in the meantime.
    // (The event was emitted before the PATCH but is delivered after it.)
    let gina = app.account("gina");
    let late = app.registered_event(&gina, Some("Gina Old"), "2024-04-04T04:04:04Z");
    let (s, _) = app.patch(&gina, json!({"display_name": "Gina G"})).await;
    assert_eq!(s, StatusCode::OK);
    app.publish(&late).await;
    let p = app
        .wait_for(&gina, |p| p["created_at"] == "2024-04-04T04:04:04Z")
        .await;
    assert_eq!(p["display_name"], "Gina G");
    app.stop().await;
}

async fn patch_me_and_validation(backend: Backend) {
    let Some(app) = App::start(backend, "patch_me_and_validation").await else {
        return;
    };
    let hank = app.register("hank", "Hank").await;
    let (s, p) = app
        .patch(&hank, json!({"display_name": "  Hank Hill  ", "bio": "Propane 🔥\nand accessories", "avatar_url": "https://cdn.example.test/h.png"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["display_name"], "Hank Hill");
    assert_eq!(p["bio"], "Propane 🔥\nand accessories");
    assert_eq!(p["avatar_url"], "https://cdn.example.test/h.png");
    let (_, me) = app.get(&hank, "/users/me").await;
    assert_eq!(me, p);
    app.wait_published("profile.updated", |d| {
        d["user_id"] == hank.id() && d["display_name"] == "Hank Hill"
    })
    .await;
    // Null or absent fields are unchanged; empty avatar_url clears it.
    let (s, p) = app
        .patch(&hank, json!({"bio": null, "avatar_url": ""}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (p["bio"].as_str(), p["avatar_url"].as_str()),
        (Some("Propane 🔥\nand accessories"), Some(""))
    );
    // The new display name is searchable, the old one is not.
    let (_, found) = app.get(&hank, "/users/search?q=hill").await;
    assert_eq!(usernames(found["items"].as_array().unwrap()), ["hank"]);
    // Limits count characters, not bytes.
    let (s, _) = app
        .patch(
            &hank,
            json!({"display_name": "é".repeat(64), "bio": "é".repeat(500)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let cases = [
        (json!({"display_name": "   "}), vec!["display_name"]),
        (
            json!({"display_name": "x".repeat(65)}),
            vec!["display_name"],
        ),
        (
            json!({"display_name": "bad\u{0007}name"}),
            vec!["display_name"],
        ),
        (json!({"bio": "b".repeat(501)}), vec!["bio"]),
        (
            json!({"avatar_url": "http://cdn.example.test/a.png"}),
            vec!["avatar_url"],
        ),
        (
            json!({"avatar_url": "javascript:alert(1)"}),
            vec!["avatar_url"],
        ),
        (
            json!({"display_name": "", "bio": "b".repeat(501), "avatar_url": "ftp://x"}),
            vec!["display_name", "bio", "avatar_url"],
        ),
    ];
    for (body, fields) in cases {
        let (s, problem) = app.patch(&hank, body.clone()).await;
        assert_problem(s, &problem, StatusCode::BAD_REQUEST, "validation_failed");
        let got: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(got, fields, "{body}");
    }
    // Failed validation changed nothing.
    let (_, me) = app.get(&hank, "/users/me").await;
    assert_eq!(me["display_name"], "é".repeat(64));
    // Wrong types, malformed JSON and content type.
    let (s, problem) = app.patch(&hank, json!({"bio": 5})).await;
    assert_problem(s, &problem, StatusCode::BAD_REQUEST, "validation_failed");
    let res = app
        .http
        .patch(format!("{}/users/me", app.url))
        .bearer_auth(&hank.token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .http
        .patch(format!("{}/users/me", app.url))
        .bearer_auth(&hank.token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

async fn tokens_are_checked_and_revocations_honoured(backend: Backend) {
    let Some(app) = App::start(backend, "tokens_are_checked").await else {
        return;
    };
    let ivy = app.register("ivy", "Ivy").await;
    let (s, body) = app.send(Method::GET, None, "/users/me", None).await;
    assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, body) = app
        .send(Method::GET, Some("not.a.jwt"), "/users/me", None)
        .await;
    assert_problem(s, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    let other_issuer = token::testing::TestIssuer::start().await;
    let forged = other_issuer.token(ivy.id, "ivy");
    let (s, body) = app
        .send(Method::GET, Some(&forged), "/users/me", None)
        .await;
    assert_problem(s, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    // Logout elsewhere: the auth service announces the revoked session.
    let sid = uuid::Uuid::now_v7();
    let token = app.issuer.token_for_session(ivy.id, "ivy", sid);
    let (s, _) = app.send(Method::GET, Some(&token), "/users/me", None).await;
    assert_eq!(s, StatusCode::OK);
    let until = kit::time::now_ms() / 1000 + 900;
    app.publish(&bus::Envelope::new(
        "auth",
        "session.revoked",
        json!({"session_id": sid, "user_id": ivy.id, "until": until}),
    ))
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (s, body) = app.send(Method::GET, Some(&token), "/users/me", None).await;
        if s == StatusCode::UNAUTHORIZED {
            assert_eq!(body["code"], "session_revoked");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "revoked session still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Other sessions of the same user still work; undecodable events are skipped.
    app.publish(&bus::Envelope::new(
        "auth",
        "user.registered",
        json!({"nonsense": true}),
    ))
    .await;
    app.register("after_garbage", "After").await;
    let (s, _) = app.get(&ivy, "/users/me").await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

async fn get_user_with_relationship(backend: Backend) {
    let Some(app) = App::start(backend, "get_user_with_relationship").await else {
        return;
    };
    let a = app.register("jack", "Jack").await;
    let b = app.register("jill", "Jill").await;
    let rel = |v: &Value| v["relationship"].clone();
    let none =
        json!({"following": false, "followed_by": false, "friends": false, "blocking": false});
    let p = app.profile(&a, &b).await;
    assert_eq!(p["username"], "jill");
    assert_eq!(p["followers_count"], 0);
    assert_eq!(rel(&p), none);
    app.follow(&a, &b).await;
    assert_eq!(
        rel(&app.profile(&a, &b).await),
        json!({"following": true, "followed_by": false, "friends": false, "blocking": false})
    );
    assert_eq!(
        rel(&app.profile(&b, &a).await),
        json!({"following": false, "followed_by": true, "friends": false, "blocking": false})
    );
    app.follow(&b, &a).await;
    let p = app.profile(&a, &b).await;
    assert_eq!(
        rel(&p),
        json!({"following": true, "followed_by": true, "friends": true, "blocking": false})
    );
    assert_eq!(
        (p["followers_count"].as_i64(), p["following_count"].as_i64()),
        (Some(1), Some(1))
    );
    // Own profile by id: no relationship with oneself.
    assert_eq!(rel(&app.profile(&a, &a).await), none);
    // Blocking: the blocker sees `blocking`, the blocked gets 404.
    let (s, _) = app.put(&a, &format!("/users/me/blocks/{}", b.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        rel(&app.profile(&a, &b).await),
        json!({"following": false, "followed_by": false, "friends": false, "blocking": true})
    );
    let (s, body) = app.get(&b, &format!("/users/{}", a.id)).await;
    assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
    for path in [
        format!("/users/{}/followers", a.id),
        format!("/users/{}/following", a.id),
    ] {
        let (s, body) = app.get(&b, &path).await;
        assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
    }
    // Malformed and unknown ids.
    for path in [
        "/users/not-a-uuid",
        "/users/123/followers",
        "/users/me/following/xyz",
        "/users/me/blocks/%20",
    ] {
        let method = if path.contains("/me/") {
            Method::PUT
        } else {
            Method::GET
        };
        let (s, body) = app.send(method, Some(&a.token), path, None).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_id");
    }
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/users/{unknown}"),
        format!("/users/{unknown}/followers"),
        format!("/users/{unknown}/following"),
    ] {
        let (s, body) = app.get(&a, &path).await;
        assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
    }
    app.stop().await;
}

async fn follow_rules_and_events(backend: Backend) {
    let Some(app) = App::start(backend, "follow_rules_and_events").await else {
        return;
    };
    let a = app.register("kim", "Kim").await;
    let b = app.register("lee", "Lee").await;
    let path = format!("/users/me/following/{}", b.id);
    // Idempotent: twice is once.
    app.follow(&a, &b).await;
    app.follow(&a, &b).await;
    assert_eq!(app.profile(&a, &b).await["followers_count"], 1);
    assert_eq!(app.profile(&a, &a).await["following_count"], 1);
    app.wait_published("user.followed", |d| {
        d == &json!({"follower_id": a.id(), "followee_id": b.id()})
    })
    .await;
    let (s, _) = app.delete(&a, &path).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.delete(&a, &path).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.profile(&a, &b).await["followers_count"], 0);
    assert_eq!(app.profile(&a, &a).await["following_count"], 0);
    app.wait_published("user.unfollowed", |d| {
        d == &json!({"follower_id": a.id(), "followee_id": b.id()})
    })
    .await;
    assert_eq!(app.published_count("user.followed"), 1);
    assert_eq!(app.published_count("user.unfollowed"), 1);
    // Self and unknown users.
    let (s, body) = app.put(&a, &format!("/users/me/following/{}", a.id)).await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "cannot_follow_self");
    let unknown = uuid::Uuid::now_v7();
    for method in [Method::PUT, Method::DELETE] {
        let (s, body) = app
            .send(
                method,
                Some(&a.token),
                &format!("/users/me/following/{unknown}"),
                None,
            )
            .await;
        assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
    }
    // Blocks either way forbid following.
    let (s, _) = app.put(&b, &format!("/users/me/blocks/{}", a.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = app.put(&a, &path).await;
    assert_problem(s, &body, StatusCode::FORBIDDEN, "blocked");
    let (s, body) = app.put(&b, &format!("/users/me/following/{}", a.id)).await;
    assert_problem(s, &body, StatusCode::FORBIDDEN, "blocked");
    // A caller whose registration event has not arrived can follow already.
    let newbie = app.account("newbie");
    app.follow(&newbie, &b).await;
    assert_eq!(app.profile(&newbie, &b).await["followers_count"], 1);
    // No token: 401.
    let (s, body) = app.send(Method::PUT, None, &path, None).await;
    assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

async fn block_removes_follows_and_hides_the_blocker(backend: Backend) {
    let Some(app) = App::start(backend, "block_removes_follows").await else {
        return;
    };
    let a = app.register("mia", "Mia").await;
    let b = app.register("ned", "Ned").await;
    let c = app.register("ola", "Ola").await;
    app.follow(&a, &b).await;
    app.follow(&b, &a).await;
    app.follow(&c, &a).await;
    let block = format!("/users/me/blocks/{}", b.id);
    let (s, _) = app.put(&a, &block).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.put(&a, &block).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let me = app.profile(&a, &a).await;
    assert_eq!(
        (
            me["followers_count"].as_i64(),
            me["following_count"].as_i64()
        ),
        (Some(1), Some(0))
    );
    let nb = app.profile(&a, &b).await;
    assert_eq!(
        (
            nb["followers_count"].as_i64(),
            nb["following_count"].as_i64()
        ),
        (Some(0), Some(0))
    );
    let (_, friends) = app.get(&a, "/users/me/friends").await;
    assert_eq!(friends, json!({"items": [], "next_cursor": null}));
    let (_, blocks) = app.get(&a, "/users/me/blocks").await;
    assert_eq!(usernames(blocks["items"].as_array().unwrap()), ["ned"]);
    assert_eq!(blocks["items"][0]["id"], b.id());
    app.wait_published("user.blocked", |d| {
        d == &json!({"blocker_id": a.id(), "blocked_id": b.id()})
    })
    .await;
    assert_eq!(app.published_count("user.blocked"), 1);
    assert_eq!(app.published_count("user.unfollowed"), 2);
    // Self-block and unknown users.
    let (s, body) = app.put(&a, &format!("/users/me/blocks/{}", a.id)).await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "cannot_block_self");
    let (s, body) = app
        .put(&a, &format!("/users/me/blocks/{}", uuid::Uuid::now_v7()))
        .await;
    assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
    // Unblock: listed no more, and following works again.
    let (s, _) = app.delete(&a, &block).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.delete(&a, &block).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.wait_published("user.unblocked", |d| {
        d == &json!({"blocker_id": a.id(), "blocked_id": b.id()})
    })
    .await;
    assert_eq!(app.published_count("user.unblocked"), 1);
    let (_, blocks) = app.get(&a, "/users/me/blocks").await;
    assert_eq!(blocks["items"], json!([]));
    app.follow(&b, &a).await;
    let p = app.profile(&b, &a).await;
    assert_eq!(p["relationship"]["following"], true);
    app.stop().await;
}

async fn lists_paginate_stably(backend: Backend) {
    let Some(app) = App::start(backend, "lists_paginate_stably").await else {
        return;
    };
    let star = app.register("star", "Star").await;
    let mut fans = Vec::new();
    for i in 0..7 {
        let fan = app.register(&format!("fan{i}"), &format!("Fan {i}")).await;
        app.follow(&fan, &star).await;
        fans.push(fan);
    }
    // Star follows back fans 0..3: friends.
    for fan in &fans[..3] {
        app.follow(&star, fan).await;
    }
    let path = format!("/users/{}/followers", star.id);
    let (s, first) = app.get(&star, &format!("{path}?limit=3")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        usernames(first["items"].as_array().unwrap()),
        ["fan6", "fan5", "fan4"]
    );
    // A follower arriving between pages does not shift the pages that follow.
    let late = app.register("late", "Late").await;
    app.follow(&late, &star).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&star, &format!("{path}?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(
        usernames(second["items"].as_array().unwrap()),
        ["fan3", "fan2", "fan1"]
    );
    let cursor = second["next_cursor"].as_str().unwrap();
    let (_, third) = app
        .get(&star, &format!("{path}?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(usernames(third["items"].as_array().unwrap()), ["fan0"]);
    assert_eq!(third["next_cursor"], Value::Null);
    // Whole lists through every page size.
    let all = app.all_pages(&fans[0], &path, 2).await;
    assert_eq!(all.len(), 8);
    assert_eq!(usernames(&all)[0], "late");
    assert_eq!(
        app.all_pages(&star, "/users/me/followers", 100).await.len(),
        8
    );
    let following = app.all_pages(&star, "/users/me/following", 2).await;
    assert_eq!(usernames(&following), ["fan2", "fan1", "fan0"]);
    assert_eq!(
        app.all_pages(&fans[0], &format!("/users/{}/following", star.id), 1)
            .await
            .len(),
        3
    );
    let friends = app.all_pages(&star, "/users/me/friends", 2).await;
    assert_eq!(usernames(&friends), ["fan2", "fan1", "fan0"]);
    let (_, f) = app.get(&fans[0], "/users/me/friends").await;
    assert_eq!(usernames(f["items"].as_array().unwrap()), ["star"]);
    // Default limit 50, max 100; bad limits and cursors are 400.
    for q in ["limit=0", "limit=101", "limit=-1"] {
        let (s, body) = app.get(&star, &format!("{path}?{q}")).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let (s, body) = app.get(&star, &format!("{path}?limit=x")).await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_query");
    for c in ["garbage!", "AAAA", "ZXwxfGFiYw"] {
        let (s, body) = app.get(&star, &format!("{path}?cursor={c}")).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    }
    app.stop().await;
}

async fn parallel_follows_keep_exact_counts(backend: Backend) {
    let Some(app) = App::start(backend, "parallel_follows").await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let star = app.register("celebrity", "Celebrity").await;
    let mut fans = Vec::new();
    for i in 0..50 {
        fans.push(app.register(&format!("p{i:02}"), &format!("P {i}")).await);
    }
    // 50 follows, each sent twice at once.
    let tasks: Vec<_> = fans
        .iter()
        .flat_map(|f| [f.clone(), f.clone()])
        .map(|f| {
            let (app, star) = (app.clone(), star.clone());
            tokio::spawn(async move {
                let (s, b) = app
                    .put(&f, &format!("/users/me/following/{}", star.id))
                    .await;
                assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    assert_eq!(app.profile(&star, &star).await["followers_count"], 50);
    // Then 25 unfollow (twice each) while the star follows all 50 back.
    let mut tasks = Vec::new();
    for f in fans.iter().take(25).flat_map(|f| [f.clone(), f.clone()]) {
        let (app, star) = (app.clone(), star.clone());
        tasks.push(tokio::spawn(async move {
            let (s, _) = app
                .delete(&f, &format!("/users/me/following/{}", star.id))
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        }));
    }
    for f in fans.iter().cloned() {
        let (app, star) = (app.clone(), star.clone());
        tasks.push(tokio::spawn(async move {
            let (s, _) = app
                .put(&star, &format!("/users/me/following/{}", f.id))
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        }));
    }
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let me = app.profile(&star, &star).await;
    assert_eq!(
        (
            me["followers_count"].as_i64(),
            me["following_count"].as_i64()
        ),
        (Some(25), Some(50))
    );
    assert_eq!(
        app.all_pages(&star, "/users/me/followers", 100).await.len(),
        25
    );
    assert_eq!(app.all_pages(&star, "/users/me/friends", 7).await.len(), 25);
    for (i, f) in fans.iter().enumerate() {
        let p = app.profile(&star, f).await;
        let following = if i < 25 { 0 } else { 1 };
        assert_eq!(
            (p["followers_count"].as_i64(), p["following_count"].as_i64()),
            (Some(1), Some(following)),
            "{p}"
        );
    }
    // One event per edge really created or removed, however many requests raced.
    app.wait_count("user.followed", 100).await;
    app.wait_count("user.unfollowed", 25).await;
    let app = std::sync::Arc::try_unwrap(app).ok().unwrap();
    app.stop().await;
}

async fn internal_relationships(backend: Backend) {
    let Some(app) = App::start(backend, "internal_relationships").await else {
        return;
    };
    let a = app.register("pam", "Pam").await;
    let b = app.register("quinn", "Quinn").await;
    app.follow(&a, &b).await;
    let path = format!("/internal/relationships/{}/{}", a.id, b.id);
    // No token needed: the gateway never exposes /internal.
    let (s, body) = app.send(Method::GET, None, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"a_blocks_b": false, "b_blocks_a": false, "a_follows_b": true, "b_follows_a": false, "a_exists": true, "b_exists": true})
    );
    let (s, _) = app.put(&b, &format!("/users/me/blocks/{}", a.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, body) = app.send(Method::GET, None, &path, None).await;
    assert_eq!(
        body,
        json!({"a_blocks_b": false, "b_blocks_a": true, "a_follows_b": false, "b_follows_a": false, "a_exists": true, "b_exists": true})
    );
    let (_, body) = app
        .send(
            Method::GET,
            None,
            &format!("/internal/relationships/{}/{}", b.id, a.id),
            None,
        )
        .await;
    assert_eq!(
        body,
        json!({"a_blocks_b": true, "b_blocks_a": false, "a_follows_b": false, "b_follows_a": false, "a_exists": true, "b_exists": true})
    );
    // An id no account has: still 200 (chat treats any non-2xx as the user service being
    // down), with `b_exists: false` so chat can answer 404 for a DM or invite to it.
    let ghost = uuid::Uuid::now_v7();
    for (path, want) in [
        (
            format!("/internal/relationships/{}/{ghost}", a.id),
            json!({"a_blocks_b": false, "b_blocks_a": false, "a_follows_b": false, "b_follows_a": false, "a_exists": true, "b_exists": false}),
        ),
        (
            format!("/internal/relationships/{ghost}/{}", a.id),
            json!({"a_blocks_b": false, "b_blocks_a": false, "a_follows_b": false, "b_follows_a": false, "a_exists": false, "b_exists": true}),
        ),
    ] {
        let (s, body) = app.send(Method::GET, None, &path, None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body, want);
    }
    // A token-only account (its registration event not consumed yet) exists once it
    // called /users/me, which creates its profile.
    let early = app.account("early");
    let path = format!("/internal/relationships/{}/{}", a.id, early.id);
    let (_, body) = app.send(Method::GET, None, &path, None).await;
    assert_eq!(body["b_exists"], false);
    let (s, _) = app.get(&early, "/users/me").await;
    assert_eq!(s, StatusCode::OK);
    let (_, body) = app.send(Method::GET, None, &path, None).await;
    assert_eq!(body["b_exists"], true);
    let (s, body) = app
        .send(Method::GET, None, "/internal/relationships/x/y", None)
        .await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_id");
    app.stop().await;
}

async fn internal_blocks_backfill(backend: Backend) {
    let Some(app) = App::start(backend, "internal_blocks_backfill").await else {
        return;
    };
    let (s, body) = app.send(Method::GET, None, "/internal/blocks", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"items": [], "next_cursor": null}));
    let mut people = Vec::new();
    for name in ["bk0", "bk1", "bk2", "bk3"] {
        people.push(app.register(name, name).await);
    }
    // 9 edges: everyone blocks the next two (mod 4), and bk0 blocks bk3 too.
    let mut want = Vec::new();
    for (i, blocker) in people.iter().enumerate() {
        let mut targets = vec![(i + 1) % 4, (i + 2) % 4];
        if i == 0 {
            targets.push(3);
        }
        for t in targets {
            let (s, _) = app
                .put(blocker, &format!("/users/me/blocks/{}", people[t].id))
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT);
            want.push((blocker.id(), people[t].id()));
        }
    }
    want.sort();
    let backfill = |limit: usize| {
        let app = &app;
        async move {
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            for _ in 0..100 {
                let mut path = format!("/internal/blocks?limit={limit}");
                if let Some(c) = &after {
                    path.push_str(&format!("&after={c}"));
                }
                let (s, body) = app.send(Method::GET, None, &path, None).await;
                assert_eq!(s, StatusCode::OK, "{body}");
                let items = body["items"].as_array().unwrap();
                for e in items {
                    assert_eq!(e.as_object().unwrap().len(), 2, "{e}");
                    got.push((
                        e["blocker_id"].as_str().unwrap().to_owned(),
                        e["blocked_id"].as_str().unwrap().to_owned(),
                    ));
                }
                match body["next_cursor"].as_str() {
                    Some(c) => {
                        assert_eq!(items.len(), limit, "only the last page is short");
                        after = Some(c.to_owned());
                    }
                    None => return got,
                }
            }
            panic!("backfill did not end");
        }
    };
    // Every edge once, in (blocker_id, blocked_id) order, whatever the page size.
    for limit in [1, 3, 9, 1000] {
        assert_eq!(backfill(limit).await, want, "limit {limit}");
    }
    let (_, body) = app.send(Method::GET, None, "/internal/blocks", None).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 9);
    // A cursor stays valid when the edge it names is gone.
    let (_, first) = app
        .send(Method::GET, None, "/internal/blocks?limit=2", None)
        .await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second_id = first["items"][1]["blocked_id"].as_str().unwrap().to_owned();
    let blocker = people
        .iter()
        .find(|p| p.id() == first["items"][1]["blocker_id"])
        .unwrap();
    let (s, _) = app
        .delete(blocker, &format!("/users/me/blocks/{second_id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, rest) = app
        .send(
            Method::GET,
            None,
            &format!("/internal/blocks?after={cursor}"),
            None,
        )
        .await;
    let rest: Vec<(String, String)> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["blocker_id"].as_str().unwrap().to_owned(),
                e["blocked_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(rest, want[2..]);
    assert_eq!(backfill(1000).await.len(), 8);
    for q in ["limit=0", "limit=1001", "limit=-5"] {
        let (s, body) = app
            .send(Method::GET, None, &format!("/internal/blocks?{q}"), None)
            .await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    // A cursor of another list, or garbage.
    let (_, followers) = app.get(&people[0], "/users/me/blocks?limit=1").await;
    let foreign = followers["next_cursor"].as_str().unwrap().to_owned();
    for c in ["garbage!", "AAAA", foreign.as_str()] {
        let (s, body) = app
            .send(
                Method::GET,
                None,
                &format!("/internal/blocks?after={c}"),
                None,
            )
            .await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    }
    app.stop().await;
}

async fn blockers_hidden_from_third_party_lists(backend: Backend) {
    let Some(app) = App::start(backend, "blockers_hidden_from_lists").await else {
        return;
    };
    let a = app.register("abby", "Abby").await;
    let b = app.register("bert", "Bert").await;
    let c = app.register("cleo", "Cleo").await;
    let d = app.register("dana", "Dana").await;
    // C's followers, newest first: f4, f3, abby, f2, f1, f0 — abby in the middle of a page.
    let mut fans = Vec::new();
    for i in 0..5 {
        let fan = app.register(&format!("cfan{i}"), &format!("Fan {i}")).await;
        if i == 3 {
            app.follow(&a, &c).await;
        }
        app.follow(&fan, &c).await;
        fans.push(fan);
    }
    app.follow(&c, &a).await;
    app.follow(&c, &fans[0]).await;
    let (s, _) = app.put(&a, &format!("/users/me/blocks/{}", b.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let followers = format!("/users/{}/followers", c.id);
    let following = format!("/users/{}/following", c.id);

    // B: abby is absent from C's lists, and every page but the last is full (filtered
    // before LIMIT, not after it).
    for limit in [1, 2, 3, 100] {
        let all = app.all_pages(&b, &followers, limit).await;
        assert_eq!(
            usernames(&all),
            ["cfan4", "cfan3", "cfan2", "cfan1", "cfan0"],
            "limit {limit}"
        );
    }
    let (_, page) = app.get(&b, &format!("{followers}?limit=3")).await;
    assert_eq!(
        usernames(page["items"].as_array().unwrap()),
        ["cfan4", "cfan3", "cfan2"]
    );
    let (_, page) = app
        .get(
            &b,
            &format!(
                "{followers}?limit=3&cursor={}",
                page["next_cursor"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(
        usernames(page["items"].as_array().unwrap()),
        ["cfan1", "cfan0"]
    );
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(
        usernames(&app.all_pages(&b, &following, 1).await),
        ["cfan0"]
    );

    // An unrelated caller, C and abby herself still see abby.
    for viewer in [&d, &c, &a] {
        let all = app.all_pages(viewer, &followers, 2).await;
        assert_eq!(
            usernames(&all),
            ["cfan4", "cfan3", "abby", "cfan2", "cfan1", "cfan0"]
        );
        assert_eq!(
            usernames(&app.all_pages(viewer, &following, 1).await),
            ["cfan0", "abby"]
        );
    }
    let (_, friends) = app.get(&c, "/users/me/friends").await;
    assert_eq!(
        usernames(friends["items"].as_array().unwrap()),
        ["cfan0", "abby"]
    );
    // B blocking abby back does not hide her from B's own block list.
    let (s, _) = app.put(&b, &format!("/users/me/blocks/{}", a.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, blocks) = app.get(&b, "/users/me/blocks").await;
    assert_eq!(usernames(blocks["items"].as_array().unwrap()), ["abby"]);
    // Once abby unblocks B, B sees her in C's lists again.
    let (s, _) = app.delete(&a, &format!("/users/me/blocks/{}", b.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.all_pages(&b, &followers, 2).await.len(), 6);
    assert_eq!(
        usernames(&app.all_pages(&b, &following, 2).await),
        ["cfan0", "abby"]
    );
    app.stop().await;
}

async fn profile_texts_refuse_controls_and_bidi(backend: Backend) {
    let Some(app) = App::start(backend, "profile_texts_refuse_controls").await else {
        return;
    };
    let u = app.register("ivy", "Ivy").await;
    let bad = [
        "\u{0}", "\u{8}", "\u{1b}", "\u{7f}", "\u{85}", "\u{9b}", "\u{202a}", "\u{202b}",
        "\u{202c}", "\u{202d}", "\u{202e}", "\u{2066}", "\u{2067}", "\u{2068}", "\u{2069}",
    ];
    for c in bad {
        for (field, value, fields) in [
            (
                "display_name",
                json!({"display_name": format!("Ivy{c}exe.txt")}),
                vec!["display_name"],
            ),
            ("bio", json!({"bio": format!("about{c}me")}), vec!["bio"]),
            (
                "both",
                json!({"display_name": format!("I{c}vy"), "bio": format!("{c}")}),
                vec!["display_name", "bio"],
            ),
        ] {
            let (s, problem) = app.patch(&u, value).await;
            assert_problem(s, &problem, StatusCode::BAD_REQUEST, "validation_failed");
            let got: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert_eq!(
                got,
                fields,
                "{field} with U+{:04X}",
                c.chars().next().unwrap() as u32
            );
        }
    }
    // Line breaks and tabs: fine in a bio, not in a name; a lone CR is refused, CRLF is
    // kept as LF.
    for v in ["a\nb", "a\tb", "a\rb"] {
        let (s, problem) = app.patch(&u, json!({"display_name": v})).await;
        assert_problem(s, &problem, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let (s, problem) = app.patch(&u, json!({"bio": "over\rwrite"})).await;
    assert_problem(s, &problem, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "bio");
    let (s, p) = app
        .patch(&u, json!({"bio": "line one\r\n\tline two\n"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["bio"], "line one\n\tline two\n");
    // Right-to-left text itself, marks and joiners are fine.
    let (s, p) = app
        .patch(&u, json!({"display_name": "שלום \u{200f}Ivy 👩\u{200d}💻"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["display_name"], "שלום \u{200f}Ivy 👩\u{200d}💻");
    app.stop().await;
}

/// GET /users/me and the internal relationship check while the database cannot be
/// reached: 503 `database_unavailable` with `Retry-After`, never 500; and service again
/// once it is back, without a restart. PostgreSQL: the service reaches the shared server
/// through a [`kit::testing::FaultProxy`] the test cuts. SQLite: another connection holds the write
/// lock past the busy timeout (10 s), which only writes notice (WAL readers go on), so
/// there the write — `/users/me` creating a profile — is what gets the 503.
async fn unreachable_database_is_503(backend: Backend) {
    let proxy = match backend {
        Backend::Postgres => match kit::testing::env_url("TEST_DATABASE_URL") {
            Some(url) => Some(
                kit::testing::FaultProxy::start(&kit::testing::url_addr(&url))
                    .await
                    .unwrap(),
            ),
            None => None,
        },
        Backend::Sqlite => None,
    };
    let Some(app) = App::start_with(backend, "unreachable_database_is_503", |url| {
        match (&proxy, url) {
            (Some(p), Some(url)) => Some(kit::testing::with_addr(&url, &p.addr().to_string())),
            (_, url) => url,
        }
    })
    .await
    else {
        return;
    };
    let a = app.register("una", "Una").await;
    let b = app.register("vic", "Vic").await;
    let newcomer = app.account("newcomer");
    let relationship = format!("/internal/relationships/{}/{}", a.id, b.id);
    let assert_503 = |s: StatusCode, body: &Value, headers: &reqwest::header::HeaderMap| {
        assert_problem(
            s,
            body,
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
        );
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
    };
    let get = |token: Option<String>, path: String| {
        let app = &app;
        async move {
            let mut req = app.http.get(format!("{}{path}", app.url));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.unwrap();
            let (status, headers) = (res.status(), res.headers().clone());
            (
                status,
                res.json::<Value>().await.unwrap_or(Value::Null),
                headers,
            )
        }
    };
    match &proxy {
        Some(proxy) => {
            proxy.cut();
            let (s, body, h) = get(Some(a.token.clone()), "/users/me".into()).await;
            assert_503(s, &body, &h);
            let (s, body, h) = get(None, relationship.clone()).await;
            assert_503(s, &body, &h);
            let (s, body, h) = get(Some(newcomer.token.clone()), "/users/me".into()).await;
            assert_503(s, &body, &h);
            let (s, body, h) =
                get(Some(a.token.clone()), format!("/users/{}/followers", b.id)).await;
            assert_503(s, &body, &h);
            proxy.restore();
        }
        None => {
            use sqlx::{Connection, Executor};
            let path = app.data_dir().join("users.db");
            let mut holder =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
            holder.execute("BEGIN IMMEDIATE").await.unwrap();
            let (s, body, h) = get(Some(newcomer.token.clone()), "/users/me".into()).await;
            assert_503(s, &body, &h);
            holder.execute("ROLLBACK").await.unwrap();
            holder.close().await.unwrap();
        }
    }
    // Back without a restart (the pool reconnects within its acquire timeout).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (s, body, _) = get(Some(newcomer.token.clone()), "/users/me".into()).await;
        if s == StatusCode::OK {
            assert_eq!(body["username"], "newcomer");
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(std::time::Instant::now() < deadline, "still {s} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, body, _) = get(None, relationship).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["a_exists"], true);
    app.stop().await;
}

async fn suggested_people(backend: Backend) {
    let Some(app) = App::start(backend, "suggested_people").await else {
        return;
    };
    let me = app.register("me", "Me").await;
    let b = app.register("bea", "Bea").await;
    let c = app.register("cal", "Cal").await;
    let d = app.register("dee", "Dee").await;
    let e = app.register("eli", "Eli").await;
    let f = app.register("fay", "Fay").await;
    let g = app.register("gus", "Gus").await;
    let h = app.register("hal", "Hal").await;
    // me → b, c. b → c, d, e, f, g, me. c → d, e, h.
    for (x, y) in [
        (&me, &b),
        (&me, &c),
        (&b, &c),
        (&b, &d),
        (&b, &e),
        (&b, &f),
        (&b, &g),
        (&b, &me),
        (&c, &d),
        (&c, &e),
        (&c, &h),
    ] {
        app.follow(x, y).await;
    }
    // I block f; g blocks me: neither is suggested.
    assert_eq!(
        app.put(&me, &format!("/users/me/blocks/{}", f.id)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.put(&g, &format!("/users/me/blocks/{}", me.id)).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, body) = app.get(&me, "/users/suggested").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    let got: Vec<(String, i64)> = items
        .iter()
        .map(|p| {
            (
                p["username"].as_str().unwrap().to_owned(),
                p["mutual_count"].as_i64().unwrap(),
            )
        })
        .collect();
    // d and e are followed by both of my follows (tie broken by id = registration order).
    assert_eq!(
        got,
        [
            ("dee".to_owned(), 2),
            ("eli".to_owned(), 2),
            ("hal".to_owned(), 1)
        ]
    );
    assert_eq!(items[0]["id"], d.id());
    assert_eq!(body["next_cursor"], Value::Null);
    let paged = app.all_pages(&me, "/users/suggested", 1).await;
    assert_eq!(usernames(&paged), ["dee", "eli", "hal"]);
    // Following a suggestion removes it.
    app.follow(&me, &e).await;
    let (_, body) = app.get(&me, "/users/suggested").await;
    assert_eq!(usernames(body["items"].as_array().unwrap()), ["dee", "hal"]);
    let (s, body) = app.get(&me, "/users/suggested?cursor=bad").await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    app.stop().await;
}

async fn openapi_lists_every_route(backend: Backend) {
    let Some(app) = App::start(backend, "openapi").await else {
        return;
    };
    let (s, doc) = app.send(Method::GET, None, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("/users/me", "get"),
        ("/users/me", "patch"),
        ("/users/{id}", "get"),
        ("/users/search", "get"),
        ("/users/suggested", "get"),
        ("/users/me/following/{id}", "put"),
        ("/users/me/following/{id}", "delete"),
        ("/users/{id}/followers", "get"),
        ("/users/{id}/following", "get"),
        ("/users/me/friends", "get"),
        ("/users/me/blocks/{id}", "put"),
        ("/users/me/blocks/{id}", "delete"),
        ("/users/me/blocks", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // Every documented route answers (not the 404 fallback) for a real caller.
    let u = app.register("doc", "Doc").await;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &u.id())
                + if path.ends_with("search") {
                    "?q=doc"
                } else {
                    ""
                };
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (m == Method::PATCH).then(|| json!({}));
            let (s, b) = app.send(m, Some(&u.token), &concrete, body).await;
            assert!(
                s != StatusCode::NOT_FOUND || b["code"] != "not_found",
                "{method} {path}: {s} {b}"
            );
            assert!(!s.is_server_error(), "{method} {path}: {s} {b}");
        }
    }
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let (s, _) = app.send(Method::GET, None, probe, None).await;
        assert_eq!(s, StatusCode::OK, "{probe}");
    }
    app.stop().await;
}

async fn metrics_are_exported(backend: Backend) {
    // Install the process-wide recorder first (the binary does this at start).
    let _ = kit::telemetry::metrics_handle();
    let Some(app) = App::start(backend, "metrics_are_exported").await else {
        return;
    };
    let a = app.register("rex", "Rex").await;
    let b = app.register("sue", "Sue").await;
    app.follow(&a, &b).await;
    let (s, _) = app.get(&a, "/users/search?q=sue").await;
    assert_eq!(s, StatusCode::OK);
    let res = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(text.contains("users_follows_total"), "{text}");
    assert!(text.contains("users_search_duration_seconds"), "{text}");
    app.stop().await;
}

async fn migrate_is_idempotent(backend: Backend) {
    let Some(db) = kit::testing::test_db(backend, "migrate_is_idempotent").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A reachable auth service: readiness waits until the revoked sessions are loaded.
    let issuer = token::testing::TestIssuer::start().await;
    let common = kit::config::CommonConfig {
        auth_url: issuer.auth_url.clone(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let config = users::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
    };
    users::migrate(&common, &config).await.unwrap();
    users::migrate(&common, &config).await.unwrap();
    // The service starts on the migrated database.
    let service = users::build(&common, &config, bus::Bus::memory(), Default::default())
        .await
        .unwrap();
    let running = service.spawn();
    // Ready once start-up work (loading revoked sessions from auth) is done: 503 until then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = reqwest::get(format!("{}/readyz", running.url()))
            .await
            .unwrap();
        let status = res.status();
        if status == StatusCode::OK {
            break;
        }
        let body = res.text().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.stop().await;
}

/// `GET /internal/usernames`: every visible profile once, in id order, whatever the page
/// size (chat's mention resolution copies it once).
async fn internal_usernames_backfill(backend: Backend) {
    let Some(app) = App::start(backend, "internal_usernames_backfill").await else {
        return;
    };
    let mut want = Vec::new();
    for name in ["un0", "un1", "un2", "un3", "un4"] {
        let u = app.register(name, name).await;
        want.push((u.id(), name.to_owned()));
    }
    want.sort();
    for limit in [1, 2, 5, 1000] {
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/internal/usernames?limit={limit}");
            if let Some(c) = &after {
                path.push_str(&format!("&after={c}"));
            }
            let (s, body) = app.send(Method::GET, None, &path, None).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            for e in body["items"].as_array().unwrap() {
                got.push((
                    e["user_id"].as_str().unwrap().to_owned(),
                    e["username"].as_str().unwrap().to_owned(),
                ));
            }
            match body["next_cursor"].as_str() {
                Some(c) => after = Some(c.to_owned()),
                None => break,
            }
            assert!(got.len() <= want.len(), "limit {limit}: pages overlap");
        }
        assert_eq!(got, want, "limit {limit}");
    }
    let (s, body) = app
        .send(Method::GET, None, "/internal/usernames?after=nope", None)
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
    app.stop().await;
}
