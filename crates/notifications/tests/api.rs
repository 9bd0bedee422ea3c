//! The Notifications routes of API.md through HTTP on a real port, on SQLite and
//! PostgreSQL: paging, reading, preferences, room levels, errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, Msg, assert_problem};
use kit::db::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

kit::backend_tests!(
    pages_newest_first_with_unread_filter,
    read_by_ids_and_all,
    preferences_defaults_and_validation,
    room_levels_for_members_only,
    tokens_are_required,
    openapi_lists_every_route,
);

async fn pages_newest_first_with_unread_filter(backend: Backend) {
    let Some(app) = App::start(backend, "pages_newest_first_with_unread_filter").await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    let room = Uuid::now_v7();
    for seq in 1..=5 {
        app.apply(&Msg::dm(room, seq, &a, &b).created()).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/notifications?limit=2&cursor={c}"),
            None => "/notifications?limit=2".to_owned(),
        };
        let (s, body) = app.get(&b, &path).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|n| n["seq"].as_i64().unwrap()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);
    // Read the newest two: the unread filter leaves the other three.
    let items = app.inbox(&b).await;
    let ids: Vec<&str> = items[..2]
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let (s, _) = app
        .post(&b, "/notifications/read", json!({"ids": ids}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, body) = app.get(&b, "/notifications?unread=true").await;
    let unread: Vec<i64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(unread, [3, 2, 1]);
    let (_, body) = app.get(&b, "/notifications").await;
    assert!(!body["items"][0]["read_at"].is_null());
    // Bad parameters.
    let (s, body) = app.get(&b, "/notifications?cursor=nonsense").await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    for bad in ["0", "101"] {
        let (s, body) = app.get(&b, &format!("/notifications?limit={bad}")).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let (s, body) = app.get(&b, "/notifications?unread=maybe").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // Someone else's list is their own.
    assert!(app.inbox(&a).await.is_empty());
    app.stop().await;
}

async fn read_by_ids_and_all(backend: Backend) {
    let Some(app) = App::start(backend, "read_by_ids_and_all").await else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    let room = Uuid::now_v7();
    for seq in 1..=3 {
        app.apply(&Msg::channel(room, seq, &a).mention(&[&b, &c]).created())
            .await;
    }
    // c cannot read b's notifications by id.
    let b_ids: Vec<String> = app
        .inbox(&b)
        .await
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    let (s, _) = app
        .post(&c, "/notifications/read", json!({"ids": b_ids}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.unread(&b).await, 3);
    assert_eq!(app.unread(&c).await, 3);
    let (s, _) = app
        .post(&b, "/notifications/read", json!({"ids": [b_ids[0]]}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.unread(&b).await, 2);
    // Reading again changes nothing and publishes nothing.
    let (s, _) = app
        .post(&b, "/notifications/read", json!({"ids": [b_ids[0]]}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .post(&b, "/notifications/read", json!({"all": true}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.unread(&b).await, 0);
    assert_eq!(app.counts_published(&b, 0).await, [1, 2, 3, 2, 0]);
    // Bodies that are neither form.
    for bad in [
        json!({}),
        json!({"all": false}),
        json!({"ids": ["x"]}),
        json!({"ids": [], "all": true}),
        json!({"ids": vec![Uuid::nil().to_string(); 501]}),
    ] {
        let (s, body) = app.post(&b, "/notifications/read", bad.clone()).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    app.stop().await;
}

async fn preferences_defaults_and_validation(backend: Backend) {
    let Some(app) = App::start(backend, "preferences_defaults_and_validation").await else {
        return;
    };
    let b = app.user("b");
    let (s, body) = app.get(&b, "/notifications/preferences").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"email": "instant", "web_push": true, "previews": true, "timezone": "UTC"})
    );
    let (s, body) = app
        .put(
            &b,
            "/notifications/preferences",
            json!({"email": "daily", "timezone": "America/Argentina/Buenos_Aires"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"email": "daily", "web_push": true, "previews": true, "timezone": "America/Argentina/Buenos_Aires"})
    );
    let (s, body) = app
        .put(&b, "/notifications/preferences", json!({"web_push": false}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "daily");
    assert_eq!(body["web_push"], false);
    let (_, got) = app.get(&b, "/notifications/preferences").await;
    assert_eq!(got, body);
    // Not IANA names (a made-up zone, an abbreviation, an offset, a path), a bad mode.
    for tz in [
        "Mars/Olympus_Mons",
        "Europe/Berlin ",
        "../etc/passwd",
        "+02:00",
        "",
    ] {
        let (s, body) = app
            .put(&b, "/notifications/preferences", json!({"timezone": tz}))
            .await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "timezone", "{tz}: {body}");
    }
    let (s, body) = app
        .put(&b, "/notifications/preferences", json!({"email": "hourly"}))
        .await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(body["errors"][0]["field"], "email");
    let (s, _) = app
        .put(&b, "/notifications/preferences", json!({"web_push": "yes"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, got) = app.get(&b, "/notifications/preferences").await;
    assert_eq!(got["timezone"], "America/Argentina/Buenos_Aires");
    app.stop().await;
}

async fn room_levels_for_members_only(backend: Backend) {
    let Some(app) = App::start(backend, "room_levels_for_members_only").await else {
        return;
    };
    let (b, c) = (app.user("b"), app.user("c"));
    let (room, dm) = (Uuid::now_v7(), Uuid::now_v7());
    app.chat.join(room, &b, "channel");
    app.chat.join(dm, &b, "dm");
    let path = format!("/notifications/rooms/{room}");
    let (s, body) = app.get(&b, &path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"room_id": room.to_string(), "level": "mentions", "muted_until": null})
    );
    let (_, body) = app.get(&b, &format!("/notifications/rooms/{dm}")).await;
    assert_eq!(body["level"], "all");
    let until = "2026-12-31T23:00:00Z";
    let (s, body) = app
        .put(&b, &path, json!({"level": "none", "muted_until": until}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"room_id": room.to_string(), "level": "none", "muted_until": until})
    );
    // An explicit null unmutes; an absent field keeps.
    let (_, body) = app.put(&b, &path, json!({"muted_until": null})).await;
    assert_eq!(body["muted_until"], json!(null));
    assert_eq!(body["level"], "none");
    let (_, got) = app.get(&b, &path).await;
    assert_eq!(got, body);
    // Validation.
    for bad in [json!({"level": "loud"}), json!({"muted_until": "tomorrow"})] {
        let (s, body) = app.put(&b, &path, bad).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let (s, body) = app.get(&b, "/notifications/rooms/not-a-uuid").await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_id");
    // Not a member (or no such room): 404, for reading and for writing.
    let (s, body) = app.get(&c, &path).await;
    assert_problem(s, &body, StatusCode::NOT_FOUND, "room_not_found");
    let (s, body) = app.put(&c, &path, json!({"level": "all"})).await;
    assert_problem(s, &body, StatusCode::NOT_FOUND, "room_not_found");
    // Chat cannot answer: 503, not a guess.
    app.chat
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, body) = app.get(&b, &path).await;
    assert_problem(
        s,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    );
    app.stop().await;
}

async fn tokens_are_required(backend: Backend) {
    let Some(app) = App::start(backend, "tokens_are_required").await else {
        return;
    };
    for (method, path) in [
        (Method::GET, "/notifications"),
        (Method::GET, "/notifications/unread-count"),
        (Method::POST, "/notifications/read"),
        (Method::GET, "/notifications/preferences"),
        (Method::PUT, "/notifications/preferences"),
    ] {
        let (s, body) = app.send(method.clone(), None, path, Some(json!({}))).await;
        assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let (s, body) = app
            .send(method, Some("garbage"), path, Some(json!({})))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    app.stop().await;
}

async fn openapi_lists_every_route(backend: Backend) {
    let Some(app) = App::start(backend, "openapi_lists_every_route").await else {
        return;
    };
    let (s, doc) = app.send(Method::GET, None, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/notifications", &["get"][..]),
        ("/notifications/unread-count", &["get"]),
        ("/notifications/read", &["post"]),
        ("/notifications/preferences", &["get", "put"]),
        ("/notifications/rooms/{room_id}", &["get", "put"]),
        ("/notifications/push/vapid-public-key", &["get"]),
        ("/notifications/push/subscriptions", &["post"]),
        ("/notifications/push/subscriptions/{id}", &["delete"]),
    ] {
        for m in methods {
            assert!(paths[path][m].is_object(), "{m} {path}");
        }
    }
    app.stop().await;
}
