//! The gateway through real sockets: routing, headers, edge auth, limits, failures.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Api, Call, Env, assert_problem, config, eventually, for_routes, problem_code, publish_revoked,
    session_token, set_rate_limit, upstream, upstreams,
};
use serde_json::{Value, json};

/// The `Retry-After` of every 503 the gateway makes up.
const RETRY_AFTER: &str = "2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_rewritten_headers_and_never_passes_spoofed_identity() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let user = uuid::Uuid::now_v7();
    let res = s
        .api
        .get("/users/me?x=1")
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
        .call()
        .await;
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
    assert_eq!(sh["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(sh["x-forwarded-host"][0], s.gw.addr.to_string());
    assert_eq!(sh["x-forwarded-proto"][0], "http");
    assert_eq!(sh["x-request-id"][0], "client-id-123");
    let tp = sh["traceparent"][0].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !tp.contains("00f067aa0ba902b7")
    );
    assert_eq!(sh["host"][0], s.users.url.trim_start_matches("http://"));

    // An invalid request id is replaced by a fresh one, and a trace is started.
    let res = s
        .api
        .get("/users/me")
        .bearer_auth(env.token(user))
        .header("x-request-id", "bad id with spaces")
        .call()
        .await;
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&rid).is_ok());
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"][0], rid);
    assert_eq!(
        seen["headers"]["traceparent"][0].as_str().unwrap().len(),
        55
    );
    s.gw.stop().await;
}

/// The gateway continues a client's trace only when its `traceparent` passes the
/// workspace's one rule (`kit::trace::TraceParentRef::parse`, W3C Trace Context §3.2):
/// a higher version's trace is kept (passed on as version 00); upper case, version `ff`
/// and a version-00 value longer than 55 characters start a new trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_continued_only_when_valid() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let token = env.token(uuid::Uuid::now_v7());
    let forwarded = |incoming: &'static str| {
        let req = s.api.get("/users/me").bearer_auth(&token);
        async move {
            let seen: Value = req
                .header("traceparent", incoming)
                .call()
                .await
                .json()
                .await
                .unwrap();
            let tp = seen["headers"]["traceparent"][0]
                .as_str()
                .unwrap()
                .to_owned();
            let fields: Vec<&str> = tp.split('-').collect();
            assert_eq!(fields.len(), 4, "{incoming} → {tp}");
            assert_eq!(
                (fields[0], fields[1].len(), fields[2].len()),
                ("00", 32, 16)
            );
            assert!(
                tp.bytes()
                    .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_ne!(
                fields[2], "00f067aa0ba902b7",
                "the gateway makes its own span"
            );
            tp
        }
    };
    for kept in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-fields",
    ] {
        let tp = forwarded(kept).await;
        assert!(
            tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-01"),
            "{kept} → {tp}"
        );
    }
    for fresh in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    ] {
        let tp = forwarded(fresh).await;
        assert!(!tp.contains(TRACE), "{fresh} kept its trace: {tp}");
    }
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy_is_extended() {
    let mut env = Env::new().await;
    env.common.trusted_proxies = vec!["127.0.0.1".to_owned()];
    let s = env.stack(|_| {}).await;
    let res = s
        .api
        .post("/auth/login")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .json(&json!({"login": "a", "password": "b"}))
        .call()
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let seen: Value = res.json().await.unwrap();
    assert_eq!(
        seen["headers"]["x-forwarded-for"][0],
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_auth_rejects_before_the_service_and_honours_revocation() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let api = &s.api;

    assert_problem(api.get("/users/me").call().await, 401, "unauthorized").await;
    assert_problem(
        api.get_as("/users/me", "not.a.jwt").await,
        401,
        "invalid_token",
    )
    .await;
    // A token from another key set.
    let other = token::testing::TestIssuer::start().await;
    let foreign = other.token(uuid::Uuid::now_v7(), "mallory");
    assert_problem(
        api.get_as("/users/me", &foreign).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(
        s.users.hits(),
        0,
        "an unauthenticated request reached the service"
    );

    // Public routes need no token.
    let res = api.post_json("/auth/register", &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(api.status("/auth/.well-known/jwks.json").await, 200);
    // …but the rest of /auth does.
    let (status, _) = problem_code(api.get("/auth/me").call().await).await;
    assert_eq!(status, 401);

    // A valid token passes (twice: the second time from the cache), until its session is revoked.
    let (token, user, sid) = session_token(&env.issuer);
    for _ in 0..2 {
        assert_eq!(api.get_as("/users/me", &token).await.status(), 200);
    }
    publish_revoked(&env.bus, user, sid).await;
    api.until_revoked(
        "/users/me",
        &token,
        Duration::from_secs(5),
        "revoked session still accepted",
    )
    .await;
    let metrics = api.metrics().await;
    assert!(metrics.contains("gateway_token_cache_hits_total"));
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_fails_no_idempotent_request() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (u1, u2) = (upstream("users-1").await, upstream("users-2").await);
    let gw = env.gateway(&config(&[&a], &[&u1, &u2], &[&c])).await;
    let api = Api::new(&gw);
    let token = env.any_token();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let res = api.get_as("/users/me", &token).await;
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
        let res = api.get_as("/users/me", &token).await;
        assert_eq!(res.status(), 200, "request {i} failed");
        assert_eq!(res.headers()["x-upstream-instance"], "users-2");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("gateway_upstream_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_upstream_ejections_total"));
    // Still ready: one healthy users instance is enough.
    assert_eq!(api.status("/readyz").await, 200);

    u2.kill().await;
    let res = api.get_as("/users/me", &token).await;
    assert_eq!(res.headers()["retry-after"], RETRY_AFTER);
    assert_problem(res, 503, "upstream_unavailable").await;
    // The gateway stays in service (it serves everything else) and says what is missing.
    eventually(Duration::from_secs(5), || async {
        let res = api.get("/readyz").call().await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        match (status, body["status"].as_str()) {
            (200, Some("degraded")) if body["upstreams"]["users"]["available"] == 0 => Ok(()),
            _ => Err(format!("readyz: {status} {body}")),
        }
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_503_within_the_route_timeout() {
    let env = Env::new().await;
    let s = env
        .stack(|cfg| for_routes(cfg, "/users", |r| r.timeout_ms = 300))
        .await;
    let started = Instant::now();
    let res = s.api.get_as("/users/slow", &env.any_token()).await;
    let elapsed = started.elapsed();
    // 503 + Retry-After, not 504: the client may retry (a send with the same client_msg_id).
    assert_eq!(res.headers()["retry-after"], RETRY_AFTER);
    assert_problem(res, 503, "upstream_timeout").await;
    assert!(elapsed < Duration::from_millis(2_000), "took {elapsed:?}");
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_wrongly_typed_bodies_are_refused_at_the_edge() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let token = env.any_token();
    let post = || s.api.post("/chat/rooms").bearer_auth(&token);

    let big = vec![b' '; 1024 * 1024 + 1];
    let res = post()
        .header("content-type", "application/json")
        .body(big.clone())
        .call()
        .await;
    // The unread body makes the connection unusable; the client is told so.
    assert_eq!(res.headers()["connection"], "close");
    assert_problem(res, 413, "payload_too_large").await;

    let res = post()
        .header("content-type", "text/plain")
        .body("{}")
        .call()
        .await;
    assert_problem(res, 415, "unsupported_media_type").await;
    assert_eq!(s.chat.hits(), 0, "a refused body reached the service");

    // Streamed without Content-Length: cut off while streaming (the service sees an
    // aborted request, never a complete oversized body).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let res = post()
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    match res {
        Ok(res) => assert_problem(res, 413, "payload_too_large").await,
        // The gateway may answer and close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    // Within the limit, as JSON: streamed through.
    let res = post().json(&json!({"name": "x"})).call().await;
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["body_len"], 12);

    // Methods a route does not allow.
    let res = s
        .api
        .post_json("/auth/.well-known/jwks.json", &json!({}))
        .await;
    assert!(res.headers()["allow"].to_str().unwrap().contains("GET"));
    assert_problem(res, 405, "method_not_allowed").await;
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_internals_are_hidden() {
    let env = Env::new().await;
    let s = env
        .stack(|cfg| {
            // Even a prefix-stripping route cannot reach the service's own endpoints.
            cfg.routes.push(gateway::RouteConfig {
                prefix: "/u".to_owned(),
                upstream: "users".to_owned(),
                rewrite: Some("/".to_owned()),
                auth: gateway::AuthPolicy::Public,
                ..Default::default()
            });
        })
        .await;
    let token = env.any_token();
    for path in [
        "/internal/relationships/a/b",
        "/users/internal/relationships/a/b",
        "/u/internal/relationships/a/b",
        "/u/metrics",
        "/u/readyz",
        "/u/openapi.json",
    ] {
        let (status, code) = problem_code(s.api.get_as(path, &token).await).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    // Sent raw: HTTP clients would normalise these paths before sending.
    for path in [
        "/users/../internal/x",
        "/users/./me",
        "/users/%2e%2e/me",
        "/users/a%2fb",
    ] {
        assert_eq!(
            common::raw_get_status(s.gw.addr, path, &token).await,
            400,
            "{path}"
        );
    }
    // The rewrite works for ordinary paths.
    let seen = s.api.json("/u/users/me").await;
    assert_eq!(seen["path"], "/users/me");
    // The admin listener's /metrics is the gateway's own.
    let metrics = s.api.metrics().await;
    assert!(!metrics.contains("upstream secret"));
    assert_eq!(s.users.hits(), 1);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_at_the_edge() {
    let env = Env::new().await;
    let s = env
        .stack(|cfg| cfg.cors_origins = vec!["https://app.example".to_owned()])
        .await;
    let preflight = |origin: &str| {
        s.api
            .http
            .request(reqwest::Method::OPTIONS, s.api.url("/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .call()
    };
    let res = preflight("https://app.example").await;
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
    assert_problem(
        preflight("https://evil.example").await,
        403,
        "cors_origin_not_allowed",
    )
    .await;
    assert_eq!(s.users.hits(), 0);

    let res = s
        .api
        .get("/users/me")
        .header("origin", "https://app.example")
        .bearer_auth(env.any_token())
        .call()
        .await;
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
    let res = s
        .api
        .get("/healthz")
        .header("origin", "https://evil.example")
        .call()
        .await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_headers() {
    let env = Env::new().await;
    let s = env
        .stack(|cfg| {
            set_rate_limit(cfg, "strict", 10, 60_000, 3);
            set_rate_limit(cfg, "default", 2, 1_000, 2);
        })
        .await;
    let login = || {
        s.api
            .post("/auth/login")
            .json(&json!({"login": "a", "password": "b"}))
            .call()
    };
    for remaining in [2, 1, 0] {
        let res = login().await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-limit"], "3");
        assert_eq!(
            res.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let res = login().await;
    let h = res.headers().clone();
    assert_problem(res, 429, "rate_limited").await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry), "retry-after {retry}");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(h.get("ratelimit-reset").is_some());
    assert_eq!(s.auth.hits(), 3);

    // Per user on token routes: another user has their own budget.
    let (alice, bob) = (env.any_token(), env.any_token());
    let me = |t: &str| s.api.get("/users/me").bearer_auth(t).call();
    assert_eq!(me(&alice).await.status(), 200);
    assert_eq!(me(&alice).await.status(), 200);
    assert_eq!(me(&alice).await.status(), 429);
    assert_eq!(me(&bob).await.status(), 200);
    let metrics = s.api.metrics().await;
    assert!(
        metrics.contains("gateway_ratelimited_total{route=\"/auth/login\"}"),
        "{metrics}"
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_limit_is_shared_by_two_gateways() {
    let Some(redis_url) = kit::testing::redis_url("a_redis_limit_is_shared_by_two_gateways") else {
        return;
    };
    let mut env = Env::new().await;
    env.common.redis_url = Some(redis_url);
    let (a, u, c) = upstreams().await;
    let mut cfg = config(&[&a], &[&u], &[&c]);
    // A policy name of its own: other runs share the Redis keyspace.
    let policy = format!("test-{}", uuid::Uuid::now_v7().simple());
    set_rate_limit(&mut cfg, &policy, 1, 60_000, 3);
    for_routes(&mut cfg, "/auth/login", |r| {
        r.rate_limit = Some(policy.clone())
    });
    let (gw1, gw2) = (env.gateway(&cfg).await, env.gateway(&cfg).await);
    let (api1, api2) = (Api::new(&gw1), Api::new(&gw2));
    let login = |api: &Api| api.post("/auth/login").json(&json!({})).call();
    assert_eq!(login(&api1).await.status(), 200);
    assert_eq!(login(&api2).await.status(), 200);
    let res = login(&api1).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    assert_problem(login(&api2).await, 429, "rate_limited").await;
    gw1.stop().await;
    gw2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_falls_back_to_local_limits() {
    let mut env = Env::new().await;
    env.common.redis_url = Some("redis://127.0.0.1:1".to_owned());
    let s = env
        .stack(|cfg| set_rate_limit(cfg, "strict", 1, 60_000, 2))
        .await;
    let login = || s.api.post("/auth/login").json(&json!({})).call();
    assert_eq!(login().await.status(), 200);
    assert_eq!(login().await.status(), 200);
    assert_eq!(login().await.status(), 429);
    let metrics = s.api.metrics().await;
    // The fallback gauge is process-wide and other tests' gateways (same process) reset
    // it concurrently; the fallback counter only grows, and only this test's Redis fails.
    let fallbacks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_ratelimit_fallback_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(fallbacks >= 3.0, "{metrics}");
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_openapi_has_every_service_and_docs_and_web_are_served() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let api = &s.api;
    let doc = eventually(Duration::from_secs(10), || async {
        let doc = api.json("/openapi.json").await;
        if doc["paths"].as_object().is_some_and(|p| p.len() == 3) {
            Ok(doc)
        } else {
            Err(format!("merged document incomplete: {doc}"))
        }
    })
    .await;
    assert_eq!(doc["openapi"], "3.1.0");
    for p in ["/auth/things", "/users/things", "/chat/things"] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} missing");
    }
    assert_eq!(doc["servers"][0]["url"], "/");
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let content_type =
        |res: &reqwest::Response| res.headers()["content-type"].to_str().unwrap().to_owned();
    let res = api.get("/docs/").call().await;
    assert_eq!(res.status(), 200);
    assert!(content_type(&res).starts_with("text/html"));
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    let html = res.text().await.unwrap();
    assert!(!html.contains("<script>"), "inline script in the explorer");
    let res = api.get("/docs/docs.js").call().await;
    assert!(content_type(&res).starts_with("text/javascript"));
    let etag = res.headers()["etag"].clone();
    let res = api
        .get("/docs/docs.js")
        .header("if-none-match", etag)
        .call()
        .await;
    assert_eq!(res.status(), 304);

    let res = api.get("/").call().await;
    assert_eq!(res.status(), 200);
    assert!(content_type(&res).starts_with("text/html"));
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert!(res.headers().get("content-security-policy").is_some());
    let (status, _) = problem_code(api.get("/nope.js").call().await).await;
    assert_eq!(status, 404);
    assert_eq!(api.status("/healthz").await, 200);
    assert_eq!(api.status("/readyz").await, 200);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_json_responses_are_compressed() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let token = env.any_token();
    let gzipped = |path: &str| {
        s.api
            .get(path)
            .bearer_auth(&token)
            .header("accept-encoding", "gzip")
            .call()
    };
    let res = gzipped("/users/big").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let compressed = res.bytes().await.unwrap();
    assert!(compressed.len() < 4 * 1024, "{} bytes", compressed.len());
    let res = gzipped("/users/me").await;
    assert!(
        res.headers().get("content-encoding").is_none(),
        "small bodies stay as they are"
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_at_its_in_flight_limit_takes_no_more() {
    let env = Env::new().await;
    let s = env
        .stack(|cfg| {
            cfg.max_outstanding_per_instance = 1;
            for_routes(cfg, "/users", |r| r.timeout_ms = 1_500);
        })
        .await;
    let token = env.any_token();
    let slow = tokio::spawn(s.api.get("/users/slow").bearer_auth(token.clone()).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = s.api.get_as("/users/me", &token).await;
    assert_eq!(res.headers()["retry-after"], RETRY_AFTER);
    assert_problem(res, 503, "upstream_overloaded").await;
    assert_problem(slow.await.unwrap().unwrap(), 503, "upstream_timeout").await;
    // The slot is free again.
    assert_eq!(s.api.get_as("/users/me", &token).await.status(), 200);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_with_5xx_is_ejected_though_its_health_check_passes() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (good, broken) = (upstream("users-good").await, upstream("users-broken").await);
    let mut cfg = config(&[&a], &[&good, &broken], &[&c]);
    cfg.eject_base_ms = 60_000;
    cfg.eject_max_ms = 60_000;
    let gw = env.gateway(&cfg).await;
    let api = Api::new(&gw);
    let token = env.any_token();
    let mut failures = 0;
    for _ in 0..40 {
        if api.get_as("/users/me", &token).await.status() == 500 {
            failures += 1;
        }
    }
    // A 500 is not retried (the request reached a service), but after three in a row the
    // instance is out for the backoff.
    assert!(failures <= 3, "{failures} failures");
    let hits_before = broken.hits();
    for _ in 0..20 {
        assert_eq!(api.get_as("/users/me", &token).await.status(), 200);
    }
    assert_eq!(
        broken.hits(),
        hits_before,
        "an ejected instance still got traffic"
    );
    let metrics = api.metrics().await;
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
    let api = Api::new(&gw);
    let token = env.any_token();
    for _ in 0..20 {
        let res = api.get_as("/users/me", &token).await;
        assert_eq!(res.headers()["x-upstream-instance"], "users-ok");
    }
    assert_eq!(unready.hits(), 0);
    assert_eq!(api.status("/readyz").await, 200);
    gw.stop().await;
}
