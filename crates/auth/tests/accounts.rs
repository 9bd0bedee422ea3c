//! Every Auth row of API.md through HTTP on a real port, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{PASSWORD, assert_problem, spawn, spawn_with, token};
use kit::db::Backend;
use serde_json::json;

kit::backend_tests!(
    register_login_me,
    registration_validation_and_conflicts,
    malformed_requests_get_problems,
    invalid_credentials_are_identical,
    refresh_rotates_and_reuse_revokes_the_session,
    logout_ends_the_session,
    sessions_list_and_end,
    logout_all_ends_every_session,
    password_change,
    password_reset,
    login_throttling,
    profile_update_publishes_user_updated,
    events_are_published,
);

async fn register_login_me(backend: Backend) {
    let Some(app) = spawn(backend, "register_login_me").await else {
        return;
    };
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "Alice", "email": "Alice@Example.com", "password": PASSWORD, "display_name": "  Alice A. "}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["user"]["email"], "Alice@Example.com");
    assert_eq!(body["user"]["display_name"], "Alice A.");
    assert!(
        body["refresh_token"].as_str().unwrap().len() >= 43,
        "≥ 256 bits"
    );
    let id = body["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert!(body["user"]["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, me) = app
        .get("/auth/me", Some(&token(&body, "access_token")))
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["username"], "alice");

    // Login by username or email, case-insensitively.
    for login in ["alice", "ALICE", "alice@example.com", "ALICE@EXAMPLE.COM"] {
        let (status, body) = app.login(login, PASSWORD).await;
        assert_eq!(status, 200, "{login}: {body}");
        assert_eq!(body["user"]["id"], id.as_str());
    }
    // No token / garbage token.
    let (status, body) = app.get("/auth/me", None).await;
    assert_problem(status, &body, 401, "unauthorized");
    let (status, body) = app.get("/auth/me", Some("not.a.jwt")).await;
    assert_problem(status, &body, 401, "invalid_token");
    app.stop().await;
}

async fn registration_validation_and_conflicts(backend: Backend) {
    let Some(app) = spawn(backend, "registration_validation").await else {
        return;
    };
    let cases = [
        (
            json!({"username": "ab", "email": "a@b.io", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "bad name", "email": "a@b.io", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "okname", "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "okname", "email": "a@b.io", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "okname", "email": "a@b.io", "password": "password123"}),
            "password",
        ),
        (
            json!({"username": "okname", "email": "a@b.io", "password": "x".repeat(129)}),
            "password",
        ),
        (
            json!({"username": "okname", "email": "a@b.io", "password": PASSWORD, "display_name": "a\u{0}b"}),
            "display_name",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post("/auth/register", body.clone(), None).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["code"], "validation_failed");
        let fields: Vec<_> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert!(fields.contains(&field.to_owned()), "{body}: {problem}");
    }
    app.register("alice").await;
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "ALICE", "email": "other@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_problem(status, &body, 409, "username_taken");
    let (status, body) = app
        .post(
            "/auth/register",
            json!({"username": "alice2", "email": "ALICE@example.COM", "password": PASSWORD}),
            None,
        )
        .await;
    assert_problem(status, &body, 409, "email_taken");
    app.stop().await;
}

async fn malformed_requests_get_problems(backend: Backend) {
    let Some(app) = spawn(backend, "malformed_requests").await else {
        return;
    };
    let url = format!("{}/auth/register", app.url);
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().contains_key("x-request-id"));
    let (_, body) = common::read(res).await;
    assert_eq!(body["code"], "malformed_json");
    assert_eq!(body["status"], 400);

    let res = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(common::read(res).await.1["code"], "unsupported_media_type");

    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    // Its own client: the server answers 413 before reading the body and closes the
    // connection, which a pooled client could otherwise pick for the next request
    // (IncompleteMessage).
    let res = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(common::read(res).await.1["code"], "payload_too_large");

    let (status, body) = app
        .post("/auth/register", json!({"username": "x"}), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_failed")),
        "missing fields: {body}"
    );

    let res = app
        .http
        .get(format!("{}/auth/nope", app.url))
        .header("x-request-id", "client-id_1.2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()["x-request-id"],
        "client-id_1.2",
        "a valid client request id is echoed"
    );
    let res = app
        .http
        .get(format!("{}/healthz", app.url))
        .header("x-request-id", "bad id!")
        .send()
        .await
        .unwrap();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(rid, "bad id!");
    assert!(uuid::Uuid::parse_str(&rid).is_ok());

    let res = app
        .http
        .get(format!("{}/auth/login", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(common::read(res).await.1["code"], "method_not_allowed");
    let (status, body) = app.delete("/auth/sessions/not-a-uuid", Some("x")).await;
    assert!(status == 400 || status == 401, "{status} {body}");
    app.stop().await;
}

async fn invalid_credentials_are_identical(backend: Backend) {
    let Some(app) = spawn(backend, "invalid_credentials").await else {
        return;
    };
    app.register("bob").await;
    let (s1, wrong_pw) = app.login("bob", "wrong password!").await;
    let (s2, unknown) = app.login("nobody", "wrong password!").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        wrong_pw, unknown,
        "the same body for a wrong password and an unknown user"
    );
    assert_eq!(wrong_pw["code"], "invalid_credentials");
    app.stop().await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let Some(app) = spawn(backend, "refresh_rotation").await else {
        return;
    };
    let first = app.register("carol").await;
    let r1 = token(&first, "refresh_token");
    let (status, second) = app
        .post("/auth/refresh", json!({"refresh_token": r1}), None)
        .await;
    assert_eq!(status, 200, "{second}");
    let r2 = token(&second, "refresh_token");
    assert_ne!(r1, r2);
    let a2 = token(&second, "access_token");
    assert_eq!(app.get("/auth/me", Some(&a2)).await.0, 200);

    // The session id stays the same across refreshes.
    let (_, sessions) = app.get("/auth/sessions", Some(&a2)).await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);

    // Presenting the rotated token again ends the whole session.
    let (status, body) = app
        .post("/auth/refresh", json!({"refresh_token": r1}), None)
        .await;
    assert_problem(status, &body, 401, "refresh_token_reused");
    let (status, body) = app
        .post("/auth/refresh", json!({"refresh_token": r2}), None)
        .await;
    assert_eq!(
        status, 401,
        "the newest token died with the session: {body}"
    );
    let (status, body) = app.get("/auth/me", Some(&a2)).await;
    assert_problem(status, &body, 401, "session_revoked");

    let (status, body) = app
        .post("/auth/refresh", json!({"refresh_token": "made-up"}), None)
        .await;
    assert_problem(status, &body, 401, "invalid_token");
    app.stop().await;
}

async fn logout_ends_the_session(backend: Backend) {
    let Some(app) = spawn(backend, "logout").await else {
        return;
    };
    let t = app.register("dave").await;
    let access = token(&t, "access_token");
    let (status, _) = app.post("/auth/logout", json!({}), Some(&access)).await;
    assert_eq!(status, 204);
    assert_eq!(app.get("/auth/me", Some(&access)).await.0, 401);
    let (status, _) = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": token(&t, "refresh_token")}),
            None,
        )
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}

async fn sessions_list_and_end(backend: Backend) {
    let Some(app) = spawn(backend, "sessions").await else {
        return;
    };
    let a = app.register("erin").await;
    let (_, b) = app.login("erin", PASSWORD).await;
    let other = app.register("frank").await;
    let access = token(&a, "access_token");
    let (status, list) = app.get("/auth/sessions", Some(&access)).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    for s in items {
        for f in ["id", "created_at", "last_used_at", "user_agent", "ip"] {
            assert!(s.get(f).is_some(), "{f} in {s}");
        }
        assert_eq!(s["ip"], "127.0.0.1");
    }
    let b_sid = items.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Someone else's session is not found.
    let (_, frank_sessions) = app
        .get("/auth/sessions", Some(&token(&other, "access_token")))
        .await;
    let frank_sid = frank_sessions["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.delete(&format!("/auth/sessions/{frank_sid}"), Some(&access))
            .await
            .0,
        404
    );
    assert_eq!(
        app.delete(
            &format!("/auth/sessions/{}", uuid::Uuid::now_v7()),
            Some(&access)
        )
        .await
        .0,
        404
    );
    let (status, body) = app.delete("/auth/sessions/not-a-uuid", Some(&access)).await;
    assert_problem(status, &body, 400, "invalid_id");

    assert_eq!(
        app.delete(&format!("/auth/sessions/{b_sid}"), Some(&access))
            .await
            .0,
        204
    );
    assert_eq!(
        app.get("/auth/me", Some(&token(&b, "access_token")))
            .await
            .0,
        401
    );
    let (status, _) = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": token(&b, "refresh_token")}),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (_, list) = app.get("/auth/sessions", Some(&access)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/auth/me", Some(&token(&other, "access_token")))
            .await
            .0,
        200,
        "other users unaffected"
    );
    app.stop().await;
}

async fn logout_all_ends_every_session(backend: Backend) {
    let Some(app) = spawn(backend, "logout_all").await else {
        return;
    };
    let a = app.register("gina").await;
    let (_, b) = app.login("gina", PASSWORD).await;
    assert_eq!(
        app.post(
            "/auth/logout-all",
            json!({}),
            Some(&token(&a, "access_token"))
        )
        .await
        .0,
        204
    );
    for t in [&a, &b] {
        assert_eq!(
            app.get("/auth/me", Some(&token(t, "access_token"))).await.0,
            401
        );
        let (status, _) = app
            .post(
                "/auth/refresh",
                json!({"refresh_token": token(t, "refresh_token")}),
                None,
            )
            .await;
        assert_eq!(status, 401);
    }
    app.stop().await;
}

async fn password_change(backend: Backend) {
    let Some(app) = spawn(backend, "password_change").await else {
        return;
    };
    let a = app.register("hank").await;
    let (_, b) = app.login("hank", PASSWORD).await;
    let access = token(&a, "access_token");
    let (status, body) = app
        .post(
            "/auth/password",
            json!({"current_password": "wrong one!", "new_password": "new secret phrase"}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 403, "invalid_credentials");
    let (status, body) = app
        .post(
            "/auth/password",
            json!({"current_password": PASSWORD, "new_password": "password"}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 400, "validation_failed");
    assert_eq!(body["errors"][0]["field"], "new_password");
    let (status, _) = app
        .post(
            "/auth/password",
            json!({"current_password": PASSWORD, "new_password": "new secret phrase"}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        app.get("/auth/me", Some(&access)).await.0,
        200,
        "the current session stays"
    );
    assert_eq!(
        app.get("/auth/me", Some(&token(&b, "access_token")))
            .await
            .0,
        401,
        "other sessions end"
    );
    assert_eq!(app.login("hank", PASSWORD).await.0, 401);
    assert_eq!(app.login("hank", "new secret phrase").await.0, 200);
    app.stop().await;
}

async fn password_reset(backend: Backend) {
    let Some(app) = spawn(backend, "password_reset").await else {
        return;
    };
    let a = app.register("ivy").await;
    let outbox = app.dir.path().join("outbox");
    let (status, _) = app
        .post(
            "/auth/password-reset/request",
            json!({"email": "nobody@example.com"}),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = app
        .post(
            "/auth/password-reset/request",
            json!({"email": "IVY@example.com"}),
            None,
        )
        .await;
    assert_eq!(status, 202);
    // Two files: the registration's verification mail and the one reset (none for the
    // unknown address).
    common::eventually(|| {
        std::fs::read_dir(&outbox)
            .map(|d| d.count() == 2)
            .unwrap_or(false)
    })
    .await;
    let file = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .contains(common::VERIFY_SUBJECT)
        })
        .unwrap();
    assert_eq!(file.extension().unwrap(), "eml");
    let mail = std::fs::read_to_string(&file).unwrap();
    assert!(mail.contains("To: ivy@example.com"), "{mail}");
    assert!(mail.contains("Subject: Reset your IntelliColab password"));
    let reset_token = mail
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 43 && !l.contains(' '))
        .unwrap()
        .to_owned();

    let (status, body) = app
        .post(
            "/auth/password-reset/confirm",
            json!({"token": "bogus", "new_password": "brand new phrase"}),
            None,
        )
        .await;
    assert_problem(status, &body, 400, "invalid_token");
    let (status, body) = app
        .post(
            "/auth/password-reset/confirm",
            json!({"token": reset_token, "new_password": "brand new phrase"}),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = app
        .post(
            "/auth/password-reset/confirm",
            json!({"token": reset_token, "new_password": "another phrase!"}),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_token")),
        "single use"
    );
    assert_eq!(
        app.get("/auth/me", Some(&token(&a, "access_token")))
            .await
            .0,
        401,
        "every session ends"
    );
    assert_eq!(app.login("ivy", "brand new phrase").await.0, 200);
    app.stop().await;
}

async fn login_throttling(backend: Backend) {
    let Some(app) = spawn_with(backend, "login_throttling", |c| c.login_window_secs = 4).await
    else {
        return;
    };
    app.register("jack").await;
    // Five failures per (account, address) by default.
    for _ in 0..5 {
        assert_eq!(app.login("jack", "wrong password!").await.0, 401);
    }
    let res = app
        .http
        .post(format!("{}/auth/login", app.url))
        .json(&json!({"login": "jack", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        429,
        "from that address even the right password is throttled"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry), "{retry}");
    for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(res.headers().contains_key(h), "{h}");
    }
    assert_eq!(common::read(res).await.1["code"], "rate_limited");
    // Another account from the same IP is not locked (the per-IP limit is higher).
    app.register("kate").await;
    assert_eq!(app.login("kate", PASSWORD).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(4200)).await;
    assert_eq!(
        app.login("jack", PASSWORD).await.0,
        200,
        "after the window a correct password works"
    );
    app.stop().await;
}

async fn profile_update_publishes_user_updated(backend: Backend) {
    let Some(app) = spawn(backend, "profile_update").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let a = app.register("lena").await;
    let access = token(&a, "access_token");
    let res = app
        .http
        .patch(format!("{}/auth/me", app.url))
        .bearer_auth(&access)
        .json(&json!({"display_name": " Lena L "}))
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display_name"], "Lena L");
    assert_eq!(body["email"], "lena@example.com");
    common::eventually(|| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == "user.updated")
    })
    .await;
    let events = seen.lock().unwrap().clone();
    let updated = events.iter().find(|e| e.kind == "user.updated").unwrap();
    assert_eq!(updated.data["display_name"], "Lena L");
    assert_eq!(updated.data["username"], "lena");
    assert_eq!(updated.data["email"], "lena@example.com");
    app.stop().await;
}

async fn events_are_published(backend: Backend) {
    let Some(app) = spawn(backend, "events_published").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let a = app.register("nina").await;
    app.post("/auth/logout", json!({}), Some(&token(&a, "access_token")))
        .await;
    common::eventually(|| seen.lock().unwrap().len() >= 2).await;
    let events = seen.lock().unwrap().clone();
    let registered = events.iter().find(|e| e.kind == "user.registered").unwrap();
    assert_eq!(registered.source, "auth");
    assert_eq!(registered.version, 1);
    assert_eq!(registered.data["user_id"], a["user"]["id"]);
    assert_eq!(registered.data["username"], "nina");
    assert_eq!(registered.data["email"], "nina@example.com");
    assert_eq!(registered.data["display_name"], "nina");
    assert!(registered.data["created_at"].is_string());
    assert_eq!(registered.id.get_version_num(), 7);
    let revoked = events.iter().find(|e| e.kind == "session.revoked").unwrap();
    assert_eq!(revoked.data["user_id"], a["user"]["id"]);
    assert!(revoked.data["session_id"].is_string());
    assert!(revoked.data["until"].as_i64().unwrap() > kit::time::now_ms() / 1000 + 800);
    app.stop().await;
}
