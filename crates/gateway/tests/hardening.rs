//! Issue 14 through real sockets: no `/metrics` for clients (the admin listener has it),
//! every upstream fault a 503 with `Retry-After` and refused connections retried
//! whatever the method, readiness that is neither broad nor sticky, `Cache-Control:
//! no-store` on authenticated responses, and a CSP that lets the client connect only
//! to its own origin.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Api, Call, Env, assert_problem, config, eventually, problem_code, raw_get, upstream,
    upstream_at,
};
use serde_json::{Value, json};

/// The `Retry-After` of every 503 the gateway makes up.
const RETRY_AFTER: &str = "2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_only_on_the_admin_listener() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let token = env.any_token();
    // Through every door a client has: the gateway's own path, the services' through
    // their routes, and spellings that a lenient router might normalise to them.
    for path in [
        "/metrics",
        "/metrics/",
        "//metrics",
        "/%6detrics",
        "/%6D%65trics",
        "/METRICS",
        "/auth/metrics",
        "/users/metrics",
        "/chat/metrics",
        "/chat//metrics",
        "/users/me/../../metrics",
        "/chat/../metrics",
        "/chat/%2e%2e/metrics",
    ] {
        for auth in [true, false] {
            let bearer = if auth { token.as_str() } else { "x" };
            let (status, text) = raw_get(s.gw.addr, path, bearer).await;
            assert!(status == 404 || status == 400, "{path}: {status}\n{text}");
            assert!(
                !text.contains("gateway_") && !text.contains("upstream secret"),
                "{path} leaked metrics: {text}"
            );
        }
    }
    assert_eq!(s.auth.hits() + s.users.hits() + s.chat.hits(), 0);

    // Operators scrape the admin listener, which has the probes too.
    let metrics = s.api.metrics().await;
    assert!(metrics.contains("gateway_requests_total"), "{metrics}");
    assert!(!metrics.contains("upstream secret"));
    assert_eq!(s.api.admin_get("/healthz").await.status(), 200);
    let ready = s.api.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
    assert_eq!(s.api.admin_get("/users/me").await.status(), 404);
    // The public probes stay where the orchestrator looks for them.
    assert_eq!(s.api.status("/healthz").await, 200);
    assert_eq!(s.api.status("/readyz").await, 200);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_instance_whatever_the_method() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (u1, u2) = (upstream("users-1").await, upstream("users-2").await);
    let mut cfg = config(&[&a], &[&u1, &u2], &[&c]);
    // Taking turns makes every other request go to the killed instance, and the active
    // check (once a minute here) cannot have noticed: only passive detection counts.
    cfg.load_balancing = gateway::LoadBalancing::RoundRobin;
    cfg.health_check_interval_ms = 60_000;
    let gw = env.gateway(&cfg).await;
    let api = Api::new(&gw);
    let token = env.any_token();
    for _ in 0..4 {
        assert_eq!(api.get_as("/users/me", &token).await.status(), 200);
    }
    u1.kill().await;
    let body = json!({"text": "x".repeat(3000)});
    let sent_len = serde_json::to_vec(&body).unwrap().len();
    let hits_before = u2.hits();
    for (i, method) in ["POST", "PATCH", "POST", "DELETE", "POST", "PUT"]
        .into_iter()
        .enumerate()
    {
        let res = api
            .http
            .request(method.parse().unwrap(), api.url("/users/things"))
            .bearer_auth(&token)
            .json(&body)
            .call()
            .await;
        assert_eq!(res.status(), 200, "{method} #{i}");
        let seen: Value = res.json().await.unwrap();
        assert_eq!(seen["instance"], "users-2");
        assert_eq!(seen["method"], method);
        // The whole body arrived, though the first attempt went to a dead instance.
        assert_eq!(seen["body_len"], sent_len, "{method} #{i}");
    }
    assert_eq!(
        u2.hits() - hits_before,
        6,
        "each request reached users-2 once"
    );
    let metrics = api.metrics().await;
    let retries = metrics
        .lines()
        .find(|l| l.starts_with("gateway_upstream_retries_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(retries >= 1.0, "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_is_a_503_with_retry_after() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let token = env.any_token();
    let gw_addr = s.gw.addr;
    s.users.kill().await;
    s.chat.kill().await;
    let started = Instant::now();
    let res = s.api.get_as("/users/me", &token).await;
    assert_eq!(res.headers()["retry-after"], RETRY_AFTER);
    assert_problem(res, 503, "upstream_unavailable").await;
    let res = s
        .api
        .post("/users/things")
        .bearer_auth(&token)
        .json(&json!({"a": 1}))
        .call()
        .await;
    assert_eq!(res.headers()["retry-after"], RETRY_AFTER);
    assert_problem(res, 503, "upstream_unavailable").await;
    // Fast: nothing waits for a route timeout when nobody listens.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The WebSocket handshake takes the same path (and gives the same answer).
    let url = format!("ws://{gw_addr}/chat/ws?access_token={token}");
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 503);
            assert_eq!(res.headers()["retry-after"], RETRY_AFTER);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "upstream_unavailable");
        }
        other => panic!("handshake to a dead chat: {other:?}"),
    }
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_is_retried_on_another_instance() {
    let env = Env::new().await;
    let (a, u) = (upstream("auth").await, upstream("users").await);
    let (c1, c2) = (upstream("chat-1").await, upstream("chat-2").await);
    let mut cfg = config(&[&a], &[&u], &[&c1, &c2]);
    cfg.load_balancing = gateway::LoadBalancing::RoundRobin;
    cfg.health_check_interval_ms = 60_000;
    let gw = env.gateway(&cfg).await;
    c1.kill().await;
    let token = env.any_token();
    for _ in 0..4 {
        let mut ws =
            common::ws_connect(&format!("ws://{}/chat/ws?access_token={token}", gw.addr)).await;
        assert_eq!(common::next_json(&mut ws).await["instance"], "chat-2");
    }
    gw.stop().await;
}

/// Polls readyz; `Ok(body)` once `check` accepts it. Readiness must never fail meanwhile.
async fn readyz_until(api: &Api, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
    eventually(within, || async {
        let res = api.get("/readyz").call().await;
        assert_eq!(res.status(), 200, "readyz failed");
        let body: Value = res.json().await.unwrap();
        if check(&body) {
            Ok(body)
        } else {
            Err(format!("readyz: {body}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_upstream_is_used_again_within_a_second_and_readyz_is_never_sticky() {
    let env = Env::new().await;
    let (a, c) = (upstream("auth").await, upstream("chat").await);
    let (u1, u2) = (upstream("users-1").await, upstream("users-2").await);
    let mut cfg = config(&[&a], &[&u1, &u2], &[&c]);
    cfg.load_balancing = gateway::LoadBalancing::RoundRobin;
    // The shipped probe interval, and ejections long enough to be sticky if they counted.
    cfg.health_check_interval_ms = 2_000;
    cfg.eject_after_failures = 1;
    cfg.eject_base_ms = 60_000;
    cfg.eject_max_ms = 60_000;
    let gw = env.gateway(&cfg).await;
    let api = Api::new(&gw);
    let token = env.any_token();
    let (u1_addr, c_addr) = (u1.url.replace("http://", ""), c.url.replace("http://", ""));

    u1.kill().await;
    c.kill().await;
    for _ in 0..4 {
        assert_eq!(api.get_as("/users/me", &token).await.status(), 200);
    }
    let res = api.get_as("/chat/rooms", &token).await;
    assert_problem(res, 503, "upstream_unavailable").await;
    let body = readyz_until(&api, Duration::from_secs(1), |b| b["status"] == "degraded").await;
    assert_eq!(
        body["upstreams"]["chat"],
        json!({"available": 0, "instances": 1})
    );
    assert_eq!(
        body["upstreams"]["users"],
        json!({"available": 1, "instances": 2})
    );

    // Both come back on their ports: traffic and readiness follow within a second,
    // not after the 60 s ejection nor the 2 s check interval.
    let u1 = upstream_at("users-1", &u1_addr).await;
    let c = upstream_at("chat", &c_addr).await;
    let back = Instant::now();
    readyz_until(&api, Duration::from_millis(1_500), |b| {
        b["status"] == "ready" && b["upstreams"]["users"]["available"] == 2
    })
    .await;
    eventually(Duration::from_millis(1_500), || async {
        let res = api.get_as("/users/me", &token).await;
        assert_eq!(res.status(), 200);
        match res.headers()["x-upstream-instance"].to_str().unwrap() {
            "users-1" => Ok(()),
            other => Err(format!("still routed to {other}")),
        }
    })
    .await;
    assert_eq!(api.get_as("/chat/rooms", &token).await.status(), 200);
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "{:?}",
        back.elapsed()
    );
    assert!(u1.hits() > 0 && c.hits() > 0);
    // (Its value is not asserted: every gateway of this test process shares the recorder.)
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("gateway_upstream_available_instances{upstream=\"users\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_responses_are_not_stored() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    let token = env.any_token();
    let cache_control = |res: &reqwest::Response| {
        res.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let res = s.api.get_as("/users/me", &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(cache_control(&res).as_deref(), Some("no-store"));
    let res = s
        .api
        .post("/chat/rooms")
        .bearer_auth(&token)
        .json(&json!({"name": "r"}))
        .call()
        .await;
    assert_eq!(cache_control(&res).as_deref(), Some("no-store"));
    // Refusals of a token-bearing request too (they may say which session ended).
    let res = s.api.get_as("/users/me", "not-a-token").await;
    assert_eq!(res.status(), 401);
    assert_eq!(cache_control(&res).as_deref(), Some("no-store"));
    // A service's own choice stands.
    let res = s.api.get_as("/users/cached", &token).await;
    assert_eq!(cache_control(&res).as_deref(), Some("private, max-age=60"));
    // /auth is never stored, with or without a token; public key material may be.
    let res = s.api.post_json("/auth/login", &json!({"login": "a"})).await;
    assert_eq!(cache_control(&res).as_deref(), Some("no-store"));
    let res = s.api.get("/auth/.well-known/jwks.json").call().await;
    assert_eq!(res.status(), 200);
    assert_eq!(cache_control(&res), None);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_may_connect_only_to_its_own_origin() {
    let env = Env::new().await;
    let s = env.stack(|_| {}).await;
    for path in ["/", "/docs/"] {
        let res = s.api.get(path).call().await;
        assert_eq!(res.status(), 200);
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let connect = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("connect-src"))
            .unwrap_or_default();
        // 'self' covers the same-origin WebSocket; `ws:`/`wss:` would allow any host.
        assert_eq!(connect, "connect-src 'self'", "{path}: {csp}");
    }
    let (status, _) = problem_code(s.api.get("/metrics").call().await).await;
    assert_eq!(status, 404);
    s.gw.stop().await;
}
