//! Email verification (API.md "Auth additions — v1.1"): a single-use link token mailed
//! at registration and on request, confirmed at `POST /auth/email/verify/confirm`;
//! `email_verified` on `user` and in the `user.registered` / `user.updated` events.
//! Security mails greet with the username, never the display name. SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PASSWORD, assert_problem, mailed_token, spawn, spawn_with, token};
use kit::db::Backend;
use serde_json::json;

kit::backend_tests!(
    registration_mails_a_single_use_link,
    requests_are_throttled_and_void_older_links,
    links_expire,
    a_link_for_an_old_address_is_refused,
    security_mails_greet_with_the_username_only,
);

async fn confirm(app: &common::TestAuth, token: &str) -> (u16, serde_json::Value) {
    app.post("/auth/email/verify/confirm", json!({"token": token}), None)
        .await
}

async fn registration_mails_a_single_use_link(backend: Backend) {
    let Some(app) = spawn(backend, "verify_at_registration").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let a = app.register("ada").await;
    let access = token(&a, "access_token");
    assert_eq!(a["user"]["email_verified"], false, "{a}");
    assert_eq!(a["user"]["mfa_enabled"], false, "{a}");
    let mail = app.verification_mails("ada@example.com", 1).await.remove(0);
    assert!(mail.contains("Hello ada,"), "{mail}");
    let link = mailed_token(&mail);

    let (status, body) = confirm(&app, &link).await;
    assert_eq!(status, 204, "{body}");
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["email_verified"], true, "{me}");
    let (status, body) = confirm(&app, &link).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_token")),
        "single use: {body}"
    );
    // A login answers the same flag.
    let (_, login) = app.login("ada", PASSWORD).await;
    assert_eq!(login["user"]["email_verified"], true, "{login}");

    common::eventually(|| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == "user.updated" && e.data["email_verified"] == true)
    })
    .await;
    let events = seen.lock().unwrap().clone();
    let registered = events.iter().find(|e| e.kind == "user.registered").unwrap();
    assert_eq!(
        registered.data["email_verified"], false,
        "{:?}",
        registered.data
    );
    let updated = events.iter().find(|e| e.kind == "user.updated").unwrap();
    assert_eq!(updated.data["user_id"], a["user"]["id"]);
    assert_eq!(updated.data["email"], "ada@example.com");
    app.stop().await;
}

async fn requests_are_throttled_and_void_older_links(backend: Backend) {
    let Some(app) = spawn_with(backend, "verify_requests", |c| {
        c.email_verify_resend_secs = 1
    })
    .await
    else {
        return;
    };
    let a = app.register("bea").await;
    let access = token(&a, "access_token");
    let first = mailed_token(&app.verification_mails("bea@example.com", 1).await[0]);
    let (status, _) = app
        .post("/auth/email/verify/request", json!({}), None)
        .await;
    assert_eq!(status, 401, "needs a login");
    // The registration's mail was just sent: too soon for another.
    let res = app
        .http
        .post(format!("{}/auth/email/verify/request", app.url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = app
        .post("/auth/email/verify/request", json!({}), Some(&access))
        .await;
    assert_eq!(status, 202, "{body}");
    let second = mailed_token(&app.verification_mails("bea@example.com", 2).await[1]);
    assert_ne!(first, second);
    let (status, body) = confirm(&app, &first).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_token")),
        "a newer link voids the older one: {body}"
    );
    assert_eq!(confirm(&app, &second).await.0, 204);
    // Verified: nothing more is sent.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = app
        .post("/auth/email/verify/request", json!({}), Some(&access))
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.verification_mails("bea@example.com", 2).await.len(),
        2,
        "no mail for a verified address"
    );
    app.stop().await;
}

async fn links_expire(backend: Backend) {
    let Some(app) = spawn_with(backend, "verify_expiry", |c| c.email_verify_ttl_secs = 1).await
    else {
        return;
    };
    let a = app.register("cleo").await;
    let link = mailed_token(&app.verification_mails("cleo@example.com", 1).await[0]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = confirm(&app, &link).await;
    assert_problem(status, &body, 400, "invalid_token");
    let (_, me) = app.get("/auth/me", Some(&token(&a, "access_token"))).await;
    assert_eq!(me["email_verified"], false);
    app.stop().await;
}

async fn a_link_for_an_old_address_is_refused(backend: Backend) {
    let Some(app) = spawn(backend, "verify_old_address").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let a = app.register("dora").await;
    let access = token(&a, "access_token");
    let link = mailed_token(&app.verification_mails("dora@example.com", 1).await[0]);
    let (status, body) = app
        .post(
            "/auth/email",
            json!({"email": "dora@new.example", "current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let change = mailed_token(&app.mails_to("dora@new.example", 1).await[0]);
    assert_eq!(confirm(&app, &change).await.0, 204);
    // A confirmed change proves the new address.
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(
        (me["email"].as_str(), me["email_verified"].as_bool()),
        (Some("dora@new.example"), Some(true)),
        "{me}"
    );
    common::eventually(|| {
        seen.lock().unwrap().iter().any(|e| {
            e.kind == "user.updated"
                && e.data["email"] == "dora@new.example"
                && e.data["email_verified"] == true
        })
    })
    .await;
    // The registration's link was for the old address.
    let (status, body) = confirm(&app, &link).await;
    assert_problem(status, &body, 400, "invalid_token");
    app.stop().await;
}

async fn security_mails_greet_with_the_username_only(backend: Backend) {
    let Some(app) = spawn(backend, "mail_greetings").await else {
        return;
    };
    // A display name is text the account holder chose: it must not speak in our mails.
    let display = "Support Team: call +1 555 0100";
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "eve", "email": "eve@example.com", "password": PASSWORD,
                   "display_name": display}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let access = token(&body, "access_token");
    app.post(
        "/auth/password-reset/request",
        json!({"email": "eve@example.com"}),
        None,
    )
    .await;
    app.post(
        "/auth/email",
        json!({"email": "eve@new.example", "current_password": PASSWORD}),
        Some(&access),
    )
    .await;
    let mut mails = app.mails_to("eve@example.com", 2).await;
    mails.extend(app.mails_to("eve@new.example", 1).await);
    mails.extend(app.verification_mails("eve@example.com", 1).await);
    assert_eq!(mails.len(), 4);
    for mail in &mails {
        assert!(mail.contains("Hello eve,"), "{mail}");
        assert!(!mail.contains("Support Team"), "{mail}");
    }
    app.stop().await;
}
