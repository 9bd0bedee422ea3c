//! The gateway through real sockets: routing, headers, edge auth, limits, failures.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, client, config, problem_code, upstream};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_rewritten_headers_and_never_passes_spoofed_identity() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let gw = env.gateway(&config(&[&a], &[&u], &[&c])).await;
    let user = uuid::Uuid::now_v7();
    let res = client()
        .get(format!("{}/users/me?x=1", gw.url()))
        .bearer_auth(env.token(user))
        .header("x-user-id", "00000000-0000-0000-0000-000000000666")
        .header("x-session-id", "spoofed")
        .header("x-internal-token", "spoofed")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-request-id", "client-id-123")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("connection", "x-hop")
        .header("x-hop", "must-not-pass")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["x-request-id"], "client-id-123");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h.get("keep-alive").is_none(),
        "hop-by-hop response header passed"
    );
    assert!(
        h.get("ratelimit-limit").is_some()
            && h.get("ratelimit-remaining").is_some()
            && h.get("ratelimit-reset").is_some()
    );
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["path"], "/users/me");
    assert_eq!(seen["query"], "x=1");
    let sh = &seen["headers"];
    // Identity is the gateway's (from the verified token), never the client's.
    assert_eq!(sh["x-user-id"][0], user.to_string());
    assert!(sh.get("x-session-id").is_none());
    assert!(sh.get("x-internal-token").is_none());
    assert!(sh.get("x-hop").is_none());
    assert_eq!(sh["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(sh["x-forwarded-host"][0], gw.addr.to_string());
    assert_eq!(sh["x-forwarded-proto"][0], "http");
    assert_eq!(sh["x-request-id"][0], "client-id-123");
    let tp = sh["traceparent"][0].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !tp.contains("00f067aa0ba902b7")
    );
    assert_eq!(sh["host"][0], u.url.trim_start_matches("http://"));

    // An invalid request id is replaced by a fresh one, and a trace is started.
    let res = client()
        .get(format!("{}/users/me", gw.url()))
        .bearer_auth(env.token(user))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&rid).is_ok());
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"][0], rid);
    assert_eq!(
        seen["headers"]["traceparent"][0].as_str().unwrap().len(),
        55
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy_is_extended() {
    let mut env = Env::new().await;
    env.common.trusted_proxies = vec!["127.0.0.1".to_owned()];
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let gw = env.gateway(&config(&[&a], &[&u], &[&c])).await;
    let res = client()
        .post(format!("{}/auth/login", gw.url()))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .json(&serde_json::json!({"login": "a", "password": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let seen: Value = res.json().await.unwrap();
    assert_eq!(
        seen["headers"]["x-forwarded-for"][0],
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_auth_rejects_before_the_service_and_honours_revocation() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let gw = env.gateway(&config(&[&a], &[&u], &[&c])).await;
    let http = client();
    let url = format!("{}/users/me", gw.url());

    let (status, code) = problem_code(http.get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let (status, code) = problem_code(
        http.get(&url)
            .bearer_auth("not.a.jwt")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    // A token from another key set.
    let other = token::testing::TestIssuer::start().await;
    let foreign = other.token(uuid::Uuid::now_v7(), "mallory");
    let (status, code) =
        problem_code(http.get(&url).bearer_auth(&foreign).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    assert_eq!(
        u.hits(),
        0,
        "an unauthenticated request reached the service"
    );

    // Public routes need no token.
    let res = http
        .post(format!("{}/auth/register", gw.url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(format!("{}/auth/.well-known/jwks.json", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // …but the rest of /auth does.
    let (status, _) = problem_code(
        http.get(format!("{}/auth/me", gw.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // A valid token passes (twice: the second time from the cache), until its session is revoked.
    let user = uuid::Uuid::now_v7();
    let sid = uuid::Uuid::now_v7();
    let token = env.issuer.token_for_session(user, "alice", sid);
    for _ in 0..2 {
        assert_eq!(
            http.get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let until = kit::time::now_ms() / 1000 + 900;
    env.bus
        .publish(&bus::Envelope::new(
            "auth",
            "session.revoked",
            serde_json::json!({"session_id": sid, "user_id": user, "until": until}),
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = http.get(&url).bearer_auth(&token).send().await.unwrap();
        if res.status() == 401 {
            let (_, code) = problem_code(res).await;
            assert_eq!(code, "session_revoked");
            break;
        }
        assert!(Instant::now() < deadline, "revoked session still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gateway_token_cache_hits_total"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_fails_no_idempotent_request() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (u1, u2) = (upstream("users-1").await, upstream("users-2").await);
    let gw = env.gateway(&config(&[&a], &[&u1, &u2], &[&c])).await;
    let http = client();
    let token = env.token(uuid::Uuid::now_v7());
    let url = format!("{}/users/me", gw.url());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let res = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 200);
        seen.insert(
            res.headers()["x-upstream-instance"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen.len(), 2, "both instances should serve: {seen:?}");

    u1.kill().await;
    // Right away (retried on the other instance) and after detection alike.
    for i in 0..60 {
        let res = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {i} failed");
        assert_eq!(res.headers()["x-upstream-instance"], "users-2");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_upstream_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_upstream_ejections_total"));
    // Still ready: one healthy users instance is enough.
    assert_eq!(
        http.get(format!("{}/readyz", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    u2.kill().await;
    let (status, code) =
        problem_code(http.get(&url).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = http
            .get(format!("{}/readyz", gw.url()))
            .send()
            .await
            .unwrap();
        if res.status() == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz stayed ready with no users instance"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_504_within_the_route_timeout() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    for r in cfg.routes.iter_mut().filter(|r| r.prefix == "/users") {
        r.timeout_ms = 300;
    }
    let gw = env.gateway(&cfg).await;
    let started = Instant::now();
    let res = client()
        .get(format!("{}/users/slow", gw.url()))
        .bearer_auth(env.token(uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let (status, code) = problem_code(res).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    assert!(elapsed < Duration::from_millis(2_000), "took {elapsed:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_wrongly_typed_bodies_are_refused_at_the_edge() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let gw = env.gateway(&config(&[&a], &[&u], &[&c])).await;
    let http = client();
    let token = env.token(uuid::Uuid::now_v7());
    let url = format!("{}/chat/rooms", gw.url());

    let big = vec![b' '; 1024 * 1024 + 1];
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    // The unread body makes the connection unusable; the client is told so.
    assert_eq!(res.headers()["connection"], "close");
    let (status, code) = problem_code(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    let res = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, code) = problem_code(res).await;
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    assert_eq!(c.hits(), 0, "a refused body reached the service");

    // Streamed without Content-Length: cut off while streaming (the service sees an
    // aborted request, never a complete oversized body).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    match res {
        Ok(res) => {
            let (status, code) = problem_code(res).await;
            assert_eq!((status, code.as_str()), (413, "payload_too_large"));
        }
        // The gateway may answer and close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    // Within the limit, as JSON: streamed through.
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["body_len"], 12);

    // Methods a route does not allow.
    let res = http
        .post(format!("{}/auth/.well-known/jwks.json", gw.url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(res.headers()["allow"].to_str().unwrap().contains("GET"));
    let (status, code) = problem_code(res).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_internals_are_hidden() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    // Even a prefix-stripping route cannot reach the service's own endpoints.
    cfg.routes.push(gateway::RouteConfig {
        prefix: "/u".to_owned(),
        upstream: "users".to_owned(),
        rewrite: Some("/".to_owned()),
        auth: gateway::AuthPolicy::Public,
        ..Default::default()
    });
    let gw = env.gateway(&cfg).await;
    let http = client();
    let token = env.token(uuid::Uuid::now_v7());
    for path in [
        "/internal/relationships/a/b",
        "/users/internal/relationships/a/b",
        "/u/internal/relationships/a/b",
        "/u/metrics",
        "/u/readyz",
        "/u/openapi.json",
    ] {
        let res = http
            .get(format!("{}{path}", gw.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let (status, code) = problem_code(res).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    // Sent raw: HTTP clients would normalise these paths before sending.
    for path in [
        "/users/../internal/x",
        "/users/./me",
        "/users/%2e%2e/metrics",
        "/users/a%2fb",
    ] {
        assert_eq!(
            common::raw_get_status(gw.addr, path, &token).await,
            400,
            "{path}"
        );
    }
    // The rewrite works for ordinary paths.
    let seen: Value = http
        .get(format!("{}/u/users/me", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["path"], "/users/me");
    // /metrics is the gateway's own.
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("upstream secret"));
    assert_eq!(u.hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_at_the_edge() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    cfg.cors_origins = vec!["https://app.example".to_owned()];
    let gw = env.gateway(&cfg).await;
    let http = client();
    let preflight = |origin: &str| {
        http.request(reqwest::Method::OPTIONS, format!("{}/users/me", gw.url()))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let res = preflight("https://app.example").await.unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let (status, code) = problem_code(preflight("https://evil.example").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "cors_origin_not_allowed"));
    assert_eq!(u.hits(), 0);

    let res = http
        .get(format!("{}/users/me", gw.url()))
        .header("origin", "https://app.example")
        .bearer_auth(env.token(uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("ratelimit-remaining")
    );
    let res = http
        .get(format!("{}/healthz", gw.url()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_headers() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    cfg.rate_limits.insert(
        "strict".to_owned(),
        gateway::RateLimitPolicy {
            rate: 10,
            period_ms: 60_000,
            burst: 3,
        },
    );
    cfg.rate_limits.insert(
        "default".to_owned(),
        gateway::RateLimitPolicy {
            rate: 2,
            period_ms: 1_000,
            burst: 2,
        },
    );
    let gw = env.gateway(&cfg).await;
    let http = client();
    let login = || {
        http.post(format!("{}/auth/login", gw.url()))
            .json(&serde_json::json!({"login": "a", "password": "b"}))
            .send()
    };
    for remaining in [2, 1, 0] {
        let res = login().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-limit"], "3");
        assert_eq!(
            res.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let res = login().await.unwrap();
    let h = res.headers().clone();
    let (status, code) = problem_code(res).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry), "retry-after {retry}");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(h.get("ratelimit-reset").is_some());
    assert_eq!(a.hits(), 3);

    // Per user on token routes: another user has their own budget.
    let (alice, bob) = (
        env.token(uuid::Uuid::now_v7()),
        env.token(uuid::Uuid::now_v7()),
    );
    let me = |t: &str| {
        http.get(format!("{}/users/me", gw.url()))
            .bearer_auth(t.to_owned())
            .send()
    };
    assert_eq!(me(&alice).await.unwrap().status(), 200);
    assert_eq!(me(&alice).await.unwrap().status(), 200);
    assert_eq!(me(&alice).await.unwrap().status(), 429);
    assert_eq!(me(&bob).await.unwrap().status(), 200);
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_ratelimited_total{route=\"/auth/login\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_limit_is_shared_by_two_gateways() {
    let Some(redis_url) = kit::testing::redis_url("a_redis_limit_is_shared_by_two_gateways") else {
        return;
    };
    let mut env = Env::new().await;
    env.common.redis_url = Some(redis_url);
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    // A policy name of its own: other runs share the Redis keyspace.
    let policy = format!("test-{}", uuid::Uuid::now_v7().simple());
    cfg.rate_limits.insert(
        policy.clone(),
        gateway::RateLimitPolicy {
            rate: 1,
            period_ms: 60_000,
            burst: 3,
        },
    );
    for r in cfg.routes.iter_mut().filter(|r| r.prefix == "/auth/login") {
        r.rate_limit = Some(policy.clone());
    }
    let (gw1, gw2) = (env.gateway(&cfg).await, env.gateway(&cfg).await);
    let http = client();
    let login = |gw: &kit::server::Running| {
        http.post(format!("{}/auth/login", gw.url()))
            .json(&serde_json::json!({}))
            .send()
    };
    assert_eq!(login(&gw1).await.unwrap().status(), 200);
    assert_eq!(login(&gw2).await.unwrap().status(), 200);
    let res = login(&gw1).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    let (status, code) = problem_code(login(&gw2).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    gw1.stop().await;
    gw2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_falls_back_to_local_limits() {
    let mut env = Env::new().await;
    env.common.redis_url = Some("redis://127.0.0.1:1".to_owned());
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    cfg.rate_limits.insert(
        "strict".to_owned(),
        gateway::RateLimitPolicy {
            rate: 1,
            period_ms: 60_000,
            burst: 2,
        },
    );
    let gw = env.gateway(&cfg).await;
    let http = client();
    let login = || {
        http.post(format!("{}/auth/login", gw.url()))
            .json(&serde_json::json!({}))
            .send()
    };
    assert_eq!(login().await.unwrap().status(), 200);
    assert_eq!(login().await.unwrap().status(), 200);
    assert_eq!(login().await.unwrap().status(), 429);
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The fallback gauge is process-wide and other tests' gateways (same process) reset
    // it concurrently; the fallback counter only grows, and only this test's Redis fails.
    let fallbacks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_ratelimit_fallback_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(fallbacks >= 3.0, "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_openapi_has_every_service_and_docs_and_web_are_served() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let gw = env.gateway(&config(&[&a], &[&u], &[&c])).await;
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc = loop {
        let doc: Value = http
            .get(format!("{}/openapi.json", gw.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if doc["paths"].as_object().is_some_and(|p| p.len() == 3) {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "merged document incomplete: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(doc["openapi"], "3.1.0");
    for p in ["/auth/things", "/users/things", "/chat/things"] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} missing");
    }
    assert_eq!(doc["servers"][0]["url"], "/");
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let res = http
        .get(format!("{}/docs/", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    let html = res.text().await.unwrap();
    assert!(!html.contains("<script>"), "inline script in the explorer");
    let res = http
        .get(format!("{}/docs/docs.js", gw.url()))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = res.headers()["etag"].clone();
    let res = http
        .get(format!("{}/docs/docs.js", gw.url()))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    let res = http.get(format!("{}/", gw.url())).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert!(res.headers().get("content-security-policy").is_some());
    let (status, _) = problem_code(
        http.get(format!("{}/nope.js", gw.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        http.get(format!("{}/healthz", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/readyz", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_json_responses_are_compressed() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let gw = env.gateway(&config(&[&a], &[&u], &[&c])).await;
    let http = client();
    let token = env.token(uuid::Uuid::now_v7());
    let res = http
        .get(format!("{}/users/big", gw.url()))
        .bearer_auth(&token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let compressed = res.bytes().await.unwrap();
    assert!(compressed.len() < 4 * 1024, "{} bytes", compressed.len());
    let res = http
        .get(format!("{}/users/me", gw.url()))
        .bearer_auth(&token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        res.headers().get("content-encoding").is_none(),
        "small bodies stay as they are"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_at_its_in_flight_limit_takes_no_more() {
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let mut cfg = config(&[&a], &[&u], &[&c]);
    cfg.max_outstanding_per_instance = 1;
    for r in cfg.routes.iter_mut().filter(|r| r.prefix == "/users") {
        r.timeout_ms = 1_500;
    }
    let gw = env.gateway(&cfg).await;
    let token = env.token(uuid::Uuid::now_v7());
    let slow = tokio::spawn(
        client()
            .get(format!("{}/users/slow", gw.url()))
            .bearer_auth(token.clone())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = client()
        .get(format!("{}/users/me", gw.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let (status, code) = problem_code(res).await;
    assert_eq!((status, code.as_str()), (503, "upstream_overloaded"));
    let (status, code) = problem_code(slow.await.unwrap().unwrap()).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    // The slot is free again.
    let res = client()
        .get(format!("{}/users/me", gw.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_with_5xx_is_ejected_though_its_health_check_passes() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (good, broken) = (upstream("users-good").await, upstream("users-broken").await);
    let mut cfg = config(&[&a], &[&good, &broken], &[&c]);
    cfg.eject_base_ms = 60_000;
    let gw = env.gateway(&cfg).await;
    let http = client();
    let token = env.token(uuid::Uuid::now_v7());
    let mut failures = 0;
    for _ in 0..40 {
        let res = http
            .get(format!("{}/users/me", gw.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if res.status() == 500 {
            failures += 1;
        }
    }
    // A 500 is not retried (the request reached a service), but after three in a row the
    // instance is out for the backoff.
    assert!(failures <= 3, "{failures} failures");
    let hits_before = broken.hits();
    for _ in 0..20 {
        let res = http
            .get(format!("{}/users/me", gw.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        broken.hits(),
        hits_before,
        "an ejected instance still got traffic"
    );
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ejections = metrics
        .lines()
        .find(|l| l.starts_with("gateway_upstream_ejections_total") && l.contains(&broken.url))
        .unwrap_or_default()
        .to_owned();
    assert!(ejections.ends_with(" 1"), "{ejections}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_its_readiness_check_gets_no_traffic() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (ok, unready) = (upstream("users-ok").await, upstream("users-unready").await);
    let gw = env.gateway(&config(&[&a], &[&ok, &unready], &[&c])).await;
    // Two health-check rounds (200 ms apart) are enough to notice.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let http = client();
    let token = env.token(uuid::Uuid::now_v7());
    for _ in 0..20 {
        let res = http
            .get(format!("{}/users/me", gw.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-upstream-instance"], "users-ok");
    }
    assert_eq!(unready.hits(), 0);
    assert_eq!(
        http.get(format!("{}/readyz", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}
