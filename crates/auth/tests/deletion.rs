//! Account deletion (`DELETE /auth/me`, API.md "Auth additions — v1.1"): every session
//! ends at once, the account is gone for every lookup, `user.deleted` is published, and
//! the username and email stay reserved for a configurable time. SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PASSWORD, assert_problem, spawn, spawn_with, token};
use kit::db::Backend;
use serde_json::json;

kit::backend_tests!(
    deleting_an_account,
    reserved_names_are_free_after_the_period,
);

async fn deleting_an_account(backend: Backend) {
    let Some(app) = spawn(backend, "delete_account").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let a = app.register("lia").await;
    let user_id = a["user"]["id"].as_str().unwrap().to_owned();
    let access = token(&a, "access_token");
    let (_, other) = app.login("lia", PASSWORD).await;
    let other_access = token(&other, "access_token");
    let other_refresh = token(&other, "refresh_token");
    app.register("max").await;

    let (status, body) = app.delete_json("/auth/me", json!({}), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = app
        .delete_json(
            "/auth/me",
            json!({"current_password": "not my password"}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 403, "invalid_credentials");
    let (status, _) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(status, 200, "a refused deletion changes nothing");

    let since = kit::time::now_ms();
    let (status, body) = app
        .delete_json(
            "/auth/me",
            json!({"current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    // Every session ended at once.
    for t in [&access, &other_access] {
        let (status, body) = app.get("/auth/me", Some(t)).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _) = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": other_refresh}),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (_, revocations) = app
        .get(&format!("/internal/revocations?since_ms={since}"), None)
        .await;
    let ended: Vec<_> = revocations["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ended.len(),
        2,
        "both sessions are reported to other services: {revocations}"
    );
    // The account is gone for every lookup.
    for login in ["lia", "lia@example.com"] {
        let (status, body) = app.login(login, PASSWORD).await;
        assert_problem(status, &body, 401, "invalid_credentials");
    }
    app.post(
        "/auth/password-reset/request",
        json!({"email": "lia@example.com"}),
        None,
    )
    .await;
    // Username and email are reserved.
    for (body, code) in [
        (
            json!({"username": "lia", "email": "new@example.com", "password": PASSWORD}),
            "username_taken",
        ),
        (
            json!({"username": "LIA", "email": "new@example.com", "password": PASSWORD}),
            "username_taken",
        ),
        (
            json!({"username": "lia2", "email": "LIA@example.com", "password": PASSWORD}),
            "email_taken",
        ),
    ] {
        let (status, problem) = app.post("/auth/register", body.clone(), None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (409, Some(code)),
            "{body}: {problem}"
        );
    }
    // Others are untouched.
    assert_eq!(app.login("max", PASSWORD).await.0, 200);

    common::eventually(|| {
        let events = seen.lock().unwrap();
        events.iter().any(|e| e.kind == "user.deleted")
            && events
                .iter()
                .filter(|e| e.kind == "session.revoked")
                .count()
                >= 2
    })
    .await;
    let events = seen.lock().unwrap().clone();
    let deleted = events.iter().find(|e| e.kind == "user.deleted").unwrap();
    assert_eq!(deleted.source, "auth");
    assert_eq!(deleted.data, json!({"user_id": user_id}));
    // A notice, and no reset mail for a deleted account.
    app.mails_to("lia@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = app.mails_to("lia@example.com", 1).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].contains("Subject: Your IntelliColab account was deleted"),
        "{}",
        mails[0]
    );
    app.stop().await;
}

async fn reserved_names_are_free_after_the_period(backend: Backend) {
    let Some(app) = spawn_with(backend, "delete_reserve", |c| {
        c.deleted_name_reserve_secs = 1
    })
    .await
    else {
        return;
    };
    let a = app.register("mia").await;
    let (status, body) = app
        .delete_json(
            "/auth/me",
            json!({"current_password": PASSWORD}),
            Some(&token(&a, "access_token")),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = app
        .post(
            "/auth/register",
            json!({"username": "mia", "email": "mia@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(status, 409);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "mia", "email": "mia@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["user"]["id"], a["user"]["id"], "a new account");
    assert_eq!(app.login("mia", PASSWORD).await.0, 200);
    app.stop().await;
}
