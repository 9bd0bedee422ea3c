//! Issue 14 items on the auth service: reset tokens voided by a reset and a password
//! change, control characters refused in names, the internal revocation list, and 503
//! (not 500) on registration while the database is unreachable. On SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{PASSWORD, assert_problem, mailed_token, spawn, spawn_with, token};
use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    confirming_a_reset_voids_the_other_tokens,
    a_password_change_voids_reset_tokens,
    display_names_refuse_controls_and_bidi_overrides,
    internal_revocations_list_ended_sessions,
    register_with_the_database_unreachable_is_503,
    openapi_documents_the_changes,
);

async fn request_reset(app: &common::TestAuth, email: &str, n: usize) -> String {
    let (status, _) = app
        .post(
            "/auth/password-reset/request",
            json!({"email": email}),
            None,
        )
        .await;
    assert_eq!(status, 202);
    mailed_token(&app.mails_to(email, n).await[n - 1])
}

async fn confirm_reset(app: &common::TestAuth, token: &str, password: &str) -> (u16, Value) {
    app.post(
        "/auth/password-reset/confirm",
        json!({"token": token, "new_password": password}),
        None,
    )
    .await
}

async fn confirming_a_reset_voids_the_other_tokens(backend: Backend) {
    let Some(app) = spawn(backend, "reset_voids_others").await else {
        return;
    };
    app.register("uma").await;
    let first = request_reset(&app, "uma@example.com", 1).await;
    let second = request_reset(&app, "uma@example.com", 2).await;
    assert_ne!(first, second);
    let (status, body) = confirm_reset(&app, &second, "brand new phrase").await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = confirm_reset(&app, &first, "attacker's phrase").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_token")),
        "the older token died with the reset: {body}"
    );
    assert_eq!(app.login("uma", "brand new phrase").await.0, 200);
    app.stop().await;
}

async fn a_password_change_voids_reset_tokens(backend: Backend) {
    let Some(app) = spawn(backend, "password_change_voids_resets").await else {
        return;
    };
    let a = app.register("vera").await;
    let reset = request_reset(&app, "vera@example.com", 1).await;
    let (status, _) = app
        .post(
            "/auth/password",
            json!({"current_password": PASSWORD, "new_password": "changed phrase 1"}),
            Some(&token(&a, "access_token")),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = confirm_reset(&app, &reset, "attacker's phrase").await;
    assert_problem(status, &body, 400, "invalid_token");
    assert_eq!(app.login("vera", "changed phrase 1").await.0, 200);
    app.stop().await;
}

async fn display_names_refuse_controls_and_bidi_overrides(backend: Backend) {
    let Some(app) = spawn(backend, "display_name_controls").await else {
        return;
    };
    let a = app.register("wade").await;
    let access = token(&a, "access_token");
    let bad = [
        "\0",
        "\u{1}",
        "\u{1b}[31m",
        "\n",
        "\u{7f}",
        "\u{85}",
        "\u{9f}",
        "\u{202a}",
        "\u{202b}",
        "\u{202c}",
        "\u{202d}",
        "\u{202e}",
        "\u{2066}",
        "\u{2067}",
        "\u{2068}",
        "\u{2069}",
    ];
    for (i, c) in bad.iter().enumerate() {
        for name in [format!("Wade{c}gro"), c.to_string()] {
            let (status, problem) = app
                .post(
                    "/auth/register",
                    json!({"username": format!("user{i}"), "email": format!("u{i}@example.com"),
                           "password": PASSWORD, "display_name": name}),
                    None,
                )
                .await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("validation_failed")),
                "register {name:?}: {problem}"
            );
            assert_eq!(problem["errors"][0]["field"], "display_name");
            let (status, problem) = app
                .patch("/auth/me", json!({"display_name": name}), Some(&access))
                .await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("validation_failed")),
                "patch {name:?}: {problem}"
            );
            assert_eq!(problem["errors"][0]["field"], "display_name");
        }
    }
    // Right-to-left text, marks and joiners are fine.
    let name = "שלום \u{200f}Wade 👩\u{200d}💻";
    let (status, me) = app
        .patch("/auth/me", json!({"display_name": name}), Some(&access))
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["display_name"], name);
    app.stop().await;
}

async fn internal_revocations_list_ended_sessions(backend: Backend) {
    let Some(app) = spawn(backend, "internal_revocations").await else {
        return;
    };
    let seen = common::capture(&app.bus);
    let before = kit::time::now_ms();
    let a = app.register("xena").await;
    let (_, kept) = app.login("xena", PASSWORD).await;
    let b = app.register("yuri").await;
    let ended = [session_id(&a), session_id(&b)];
    // Two ways a session ends: logout, and refresh-token reuse.
    let (status, _) = app
        .post("/auth/logout", json!({}), Some(&token(&a, "access_token")))
        .await;
    assert_eq!(status, 204);
    let r1 = token(&b, "refresh_token");
    app.post("/auth/refresh", json!({"refresh_token": r1}), None)
        .await;
    let (status, _) = app
        .post("/auth/refresh", json!({"refresh_token": r1}), None)
        .await;
    assert_eq!(status, 401);
    let after = kit::time::now_ms();

    let (status, list) = app
        .get(&format!("/internal/revocations?since_ms={before}"), None)
        .await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let listed: Vec<&str> = items
        .iter()
        .map(|i| i["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{list}");
    for sid in &ended {
        assert!(listed.contains(&sid.as_str()), "{sid} in {list}");
    }
    assert!(
        !listed.contains(&session_id(&kept).as_str()),
        "active sessions are not listed"
    );
    // `until` in ms: the end plus the token lifetime (900 s) and 60 s of leeway — the
    // moment of the `session.revoked` event's `until` (in seconds).
    for item in items {
        let until = item["until"].as_i64().unwrap();
        assert!(
            (before + 960_000..=after + 960_000).contains(&until),
            "{item}"
        );
    }
    common::eventually(|| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == "session.revoked")
            .count()
            == 2
    })
    .await;
    for event in seen.lock().unwrap().iter() {
        if event.kind != "session.revoked" {
            continue;
        }
        let item = items
            .iter()
            .find(|i| i["session_id"] == event.data["session_id"])
            .unwrap();
        let listed_secs = item["until"].as_i64().unwrap() / 1000;
        let event_secs = event.data["until"].as_i64().unwrap();
        assert!(
            (listed_secs - event_secs).abs() <= 1,
            "{item} vs {}",
            event.data
        );
    }
    // Nothing ended after `after`; no parameter = everything whose tokens may live.
    let (_, list) = app
        .get(
            &format!("/internal/revocations?since_ms={}", after + 1),
            None,
        )
        .await;
    assert_eq!(list["items"], json!([]), "{list}");
    let (_, list) = app.get("/internal/revocations", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let (status, problem) = app
        .get("/internal/revocations?since_ms=yesterday", None)
        .await;
    assert_eq!(status, 400, "{problem}");
    // The verifier of every service reads the same route at start.
    assert_eq!(token::verify::REVOCATIONS_PATH, "/internal/revocations");
    app.stop().await;
}

/// The `sid` claim of a token response's access token.
fn session_id(tokens: &Value) -> String {
    use base64::Engine;
    let access = token(tokens, "access_token");
    let claims = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// Registration while the database cannot be reached: 503 `database_unavailable` with
/// `Retry-After`, never 500; and 201 again once it is back, without a restart.
/// PostgreSQL: the service reaches the shared server through a [`kit::testing::FaultProxy`]
/// the test cuts. SQLite: another connection holds the write lock past the busy timeout
/// (10 s).
async fn register_with_the_database_unreachable_is_503(backend: Backend) {
    let proxy = match (backend, kit::testing::env_url("TEST_DATABASE_URL")) {
        (Backend::Postgres, Some(url)) => Some(
            kit::testing::FaultProxy::start(&kit::testing::url_addr(&url))
                .await
                .unwrap(),
        ),
        _ => None,
    };
    let addr = proxy.as_ref().map(|p| p.addr().to_string());
    let Some(app) = spawn_with(backend, "register_database_down", |c| {
        if let Some(addr) = &addr {
            c.database_url = c
                .database_url
                .as_deref()
                .map(|u| kit::testing::with_addr(u, addr));
        }
    })
    .await
    else {
        return;
    };
    let body = json!({"username": "zoe", "email": "zoe@example.com", "password": PASSWORD});
    let register = || async {
        let res = app
            .http
            .post(format!("{}/auth/register", app.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, problem) = common::read(res).await;
        (status, problem, retry)
    };
    let assert_503 = |(status, problem, retry): (u16, Value, Option<String>)| {
        assert_problem(status, &problem, 503, "database_unavailable");
        assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    };
    match &proxy {
        Some(proxy) => {
            proxy.cut();
            assert_503(register().await);
            proxy.restore();
        }
        None => {
            use sqlx::{Connection, Executor};
            let path = app.dir.path().join("auth.db");
            let mut holder =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
            holder.execute("BEGIN IMMEDIATE").await.unwrap();
            assert_503(register().await);
            holder.execute("ROLLBACK").await.unwrap();
            holder.close().await.unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, body, _) = register().await;
        if status == 201 {
            assert_eq!(body["user"]["username"], "zoe");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.stop().await;
}

async fn openapi_documents_the_changes(backend: Backend) {
    let Some(app) = spawn(backend, "openapi_changes").await else {
        return;
    };
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = &doc["paths"];
    assert!(paths["/auth/email"]["post"]["responses"]["202"].is_object());
    assert!(paths["/auth/email"]["post"]["responses"]["409"].is_object());
    assert!(paths["/auth/email/verify/confirm"]["post"]["responses"]["204"].is_object());
    assert!(paths["/auth/me"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
        ["properties"]["email"]
        .is_null());
    let login = &paths["/auth/login"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        ["properties"];
    assert!(login["device_token"].is_object());
    assert!(
        doc["components"]["schemas"]["TokenResponse"]["properties"]["device_token"].is_object()
    );
    assert!(
        paths["/internal/revocations"].is_null(),
        "internal routes are not public API"
    );
    app.stop().await;
}

/// A negative `login_slowdown_max_ms` used to be read as 0 silently; now the service
/// refuses to start and names the key and its minimum.
#[tokio::test]
async fn a_negative_login_slowdown_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let common = kit::config::CommonConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let config = auth::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        login_slowdown_max_ms: -1,
        ..Default::default()
    };
    let err = match auth::build(&common, &config, bus::Bus::memory(), Default::default()).await {
        Ok(_) => panic!("a negative login slowdown was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("auth.login_slowdown_max_ms") && err.contains("minimum is 0"),
        "{err}"
    );
}
