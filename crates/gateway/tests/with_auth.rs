//! The real auth service behind the gateway, on SQLite and PostgreSQL: accounts work
//! through the gateway exactly as directly, and a logout reaches the edge.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Api, Call, assert_problem, start_gateway};
use kit::db::Backend;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

kit::backend_tests!(accounts_through_the_gateway);

async fn accounts_through_the_gateway(backend: Backend) {
    let Some(db) = kit::testing::test_db(backend, "accounts_through_the_gateway").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bus = bus::Bus::memory();
    let mut common = kit::config::CommonConfig {
        data_dir: dir.path().to_owned(),
        // The auth service believes the gateway's X-Forwarded-For.
        trusted_proxies: vec!["127.0.0.1".to_owned()],
        ..Default::default()
    };
    let auth_cfg = auth::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        ..Default::default()
    };
    let auth = auth::build(&common, &auth_cfg, bus.clone(), CancellationToken::new())
        .await
        .unwrap()
        .spawn();
    common.auth_url = auth.url();
    let (users, chat) = (
        common::upstream("users").await,
        common::upstream("chat").await,
    );
    let mut cfg = gateway::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    cfg.upstreams.auth = vec![auth.url()];
    cfg.upstreams.users = vec![users.url.clone()];
    cfg.upstreams.chat = vec![chat.url.clone()];
    let gw = start_gateway(&common, &cfg, bus.clone()).await;
    let api = Api::new(&gw);

    let res = api
        .post_json(
            "/auth/register",
            &json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().get("ratelimit-remaining").is_some());
    let body: Value = res.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();

    // Verified at the edge with the auth service's real JWKS, then by the service.
    let res = api
        .get("/auth/me")
        .bearer_auth(&access)
        .header("x-request-id", "req-1")
        .call()
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "req-1");
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["username"], "alice");

    // The service's own problems pass through unchanged.
    let res = api
        .post("/auth/login")
        .header("content-type", "application/json")
        .body("{not json")
        .call()
        .await;
    assert_problem(res, 400, "malformed_json").await;
    let res = api
        .post_json(
            "/auth/login",
            &json!({"login": "alice", "password": "wrong password"}),
        )
        .await;
    assert_problem(res, 401, "invalid_credentials").await;

    // The session the client sees records the real client address (via X-Forwarded-For).
    let sessions: Value = api
        .get_as("/auth/sessions", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["items"][0]["ip"], "127.0.0.1");

    // An email change through the gateway: requested with the password (token needed),
    // confirmed with the mailed token alone (the link may be opened logged out).
    let res = api
        .post_json(
            "/auth/email",
            &json!({"email": "alice@new.example", "current_password": "correct horse battery"}),
        )
        .await;
    assert_problem(res, 401, "unauthorized").await;
    let res = api
        .post("/auth/email")
        .bearer_auth(&access)
        .json(&json!({"email": "alice@new.example", "current_password": "correct horse battery"}))
        .call()
        .await;
    assert_eq!(res.status(), 202);
    let mail = mailed_to(dir.path(), "alice@new.example").await;
    let token = mail
        .lines()
        .map(str::trim)
        .find(|l| {
            l.len() == 43
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
        .unwrap_or_else(|| panic!("no token in {mail}"))
        .to_owned();
    let res = api
        .post_json("/auth/email/verify/confirm", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), 204);
    let me: Value = api.get_as("/auth/me", &access).await.json().await.unwrap();
    assert_eq!(me["email"], "alice@new.example");

    // Logout: the session.revoked event reaches the gateway (asynchronously, through the
    // outbox), which then refuses the token itself — the echo upstream behind /users
    // accepts anything, so the 401 can only come from the edge.
    let res = api.post("/auth/logout").bearer_auth(&access).call().await;
    assert_eq!(res.status(), 204);
    api.until_revoked(
        "/users/me",
        &access,
        Duration::from_secs(5),
        "the edge still accepts a logged-out token",
    )
    .await;
    gw.stop().await;
    auth.stop().await;
}

/// The first mail to `to` in the auth service's `.eml` outbox (waits up to 5 s).
async fn mailed_to(data_dir: &std::path::Path, to: &str) -> String {
    let header = format!("To: {to}");
    for _ in 0..50 {
        if let Ok(dir) = std::fs::read_dir(data_dir.join("outbox")) {
            for f in dir.flatten() {
                let mail = std::fs::read_to_string(f.path()).unwrap_or_default();
                if mail.lines().any(|l| l == header) {
                    return mail;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no mail to {to}");
}
