//! Changing the email address (API.md v1.1): never through `PATCH /auth/me`; through
//! `POST /auth/email` with the current password and a token mailed to the new address,
//! confirmed at `POST /auth/email/verify/confirm`. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{PASSWORD, assert_problem, mailed_token, spawn, token};
use kit::db::Backend;
use serde_json::json;

kit::backend_tests!(
    patch_me_cannot_change_the_email,
    email_change_flow,
    email_change_refusals,
    email_taken_between_request_and_confirm,
    a_newer_request_voids_the_older_token,
);

async fn patch_me_cannot_change_the_email(backend: Backend) {
    let Some(app) = spawn(backend, "patch_me_no_email").await else {
        return;
    };
    let a = app.register("lena").await;
    let access = token(&a, "access_token");
    for body in [
        json!({"email": "attacker@evil.example"}),
        json!({"email": "attacker@evil.example", "display_name": "Lena"}),
    ] {
        let (status, problem) = app.patch("/auth/me", body.clone(), Some(&access)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("validation_failed")),
            "{body}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("POST /auth/email"),
            "{problem}"
        );
    }
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["email"], "lena@example.com");
    assert_eq!(
        me["display_name"], "lena",
        "nothing of a refused patch applies"
    );
    // The display name alone still changes (and `"email": null` means "unchanged").
    let (status, me) = app
        .patch(
            "/auth/me",
            json!({"display_name": " Lena L ", "email": null}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["display_name"], "Lena L");
    assert_eq!(me["email"], "lena@example.com");
    app.stop().await;
}

async fn email_change_flow(backend: Backend) {
    let Some(app) = spawn(backend, "email_change_flow").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let a = app.register("nora").await;
    let access = token(&a, "access_token");
    // A reset token mailed to the old address before the change.
    let (status, _) = app
        .post(
            "/auth/password-reset/request",
            json!({"email": "nora@example.com"}),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let reset = mailed_token(&app.mails_to("nora@example.com", 1).await[0]);

    let (status, body) = app
        .post(
            "/auth/email",
            json!({"email": "Nora@New.example", "current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let confirm_mail = app.mails_to("Nora@New.example", 1).await.remove(0);
    assert!(
        confirm_mail.contains("Subject: Confirm your new IntelliColab email address"),
        "{confirm_mail}"
    );
    let change = mailed_token(&confirm_mail);
    // The old address hears of it, without the token.
    let old = app.mails_to("nora@example.com", 2).await;
    let notice = &old[1];
    assert!(
        notice.contains("Subject: Your IntelliColab email address is being changed"),
        "{notice}"
    );
    assert!(!notice.contains(&change), "no token in the notice");
    // Nothing changes before the confirmation.
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["email"], "nora@example.com");

    let (status, body) = app
        .post(
            "/auth/email/verify/confirm",
            json!({"token": "bogus"}),
            None,
        )
        .await;
    assert_problem(status, &body, 400, "invalid_token");
    // No login needed: the link may be opened anywhere.
    let (status, body) = app
        .post("/auth/email/verify/confirm", json!({"token": change}), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["email"], "Nora@New.example");
    let (status, body) = app
        .post("/auth/email/verify/confirm", json!({"token": change}), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_token")),
        "single use: {body}"
    );
    // The reset token went to the old address: void now.
    let (status, body) = app
        .post(
            "/auth/password-reset/confirm",
            json!({"token": reset, "new_password": "brand new phrase"}),
            None,
        )
        .await;
    assert_problem(status, &body, 400, "invalid_token");
    assert_eq!(app.login("nora@new.example", PASSWORD).await.0, 200);
    assert_eq!(app.login("nora@example.com", PASSWORD).await.0, 401);
    // The old address is free again.
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "nora2", "email": "nora@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    common::eventually(|| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == "user.updated" && e.data["email"] == "Nora@New.example")
    })
    .await;
    app.stop().await;
}

async fn email_change_refusals(backend: Backend) {
    let Some(app) = spawn(backend, "email_change_refusals").await else {
        return;
    };
    let a = app.register("olga").await;
    app.register("pete").await;
    let access = token(&a, "access_token");
    let cases = [
        (
            json!({"email": "olga@new.example", "current_password": "not my password"}),
            403,
            "invalid_credentials",
        ),
        // Taken by another account (case-insensitively).
        (
            json!({"email": "PETE@example.com", "current_password": PASSWORD}),
            409,
            "email_taken",
        ),
        (
            json!({"email": "not-an-email", "current_password": PASSWORD}),
            400,
            "validation_failed",
        ),
        (
            json!({"email": "olga\u{202e}@new.example", "current_password": PASSWORD}),
            400,
            "validation_failed",
        ),
        (
            json!({"email": "olga@example.com", "current_password": PASSWORD}),
            400,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let (s, problem) = app.post("/auth/email", body.clone(), Some(&access)).await;
        assert_eq!(
            (s, problem["code"].as_str()),
            (status, Some(code)),
            "{body}: {problem}"
        );
        if status == 400 {
            assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
        }
    }
    let (status, _) = app
        .post(
            "/auth/email",
            json!({"email": "olga@new.example", "current_password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(status, 401, "an access token is needed");
    // A wrong password is answered before the address is looked at: no probing of
    // which addresses have accounts.
    let (s, problem) = app
        .post(
            "/auth/email",
            json!({"email": "pete@example.com", "current_password": "not my password"}),
            Some(&access),
        )
        .await;
    assert_problem(s, &problem, 403, "invalid_credentials");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        app.mails()
            .iter()
            .all(|m| m.contains(common::VERIFY_SUBJECT)),
        "no mail for a refused request (only the registrations' verifications)"
    );
    app.stop().await;
}

async fn email_taken_between_request_and_confirm(backend: Backend) {
    let Some(app) = spawn(backend, "email_taken_at_confirm").await else {
        return;
    };
    let a = app.register("quinn").await;
    let access = token(&a, "access_token");
    let (status, _) = app
        .post(
            "/auth/email",
            json!({"email": "shared@example.com", "current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 202);
    let change = mailed_token(&app.mails_to("shared@example.com", 1).await[0]);
    // Someone registers the address before Quinn confirms.
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "rita", "email": "Shared@Example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post("/auth/email/verify/confirm", json!({"token": change}), None)
        .await;
    assert_problem(status, &body, 409, "email_taken");
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["email"], "quinn@example.com");
    app.stop().await;
}

async fn a_newer_request_voids_the_older_token(backend: Backend) {
    let Some(app) = spawn(backend, "email_newer_request").await else {
        return;
    };
    let a = app.register("sam").await;
    let access = token(&a, "access_token");
    for to in ["sam@first.example", "sam@second.example"] {
        let (status, _) = app
            .post(
                "/auth/email",
                json!({"email": to, "current_password": PASSWORD}),
                Some(&access),
            )
            .await;
        assert_eq!(status, 202);
        app.mails_to(to, 1).await;
    }
    let first = mailed_token(&app.mails_to("sam@first.example", 1).await[0]);
    let second = mailed_token(&app.mails_to("sam@second.example", 1).await[0]);
    let (status, _) = app
        .post("/auth/email/verify/confirm", json!({"token": first}), None)
        .await;
    assert_eq!(status, 400, "the first request was replaced");
    let (status, _) = app
        .post("/auth/email/verify/confirm", json!({"token": second}), None)
        .await;
    assert_eq!(status, 204);
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["email"], "sam@second.example");
    app.stop().await;
}
