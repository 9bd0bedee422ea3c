//! `session.revoked` reaches every gateway instance: two gateways sharing one Redis
//! (each its own bus connection, as separate processes would have) both drop a revoked
//! token they had cached. Skipped with a printed reason when `TEST_REDIS_URL` is unset.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, client, config, problem_code, upstream};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_instance_drops_a_revoked_token() {
    let Some(redis_url) = kit::testing::redis_url("every_gateway_instance_drops_a_revoked_token")
    else {
        return;
    };
    let env = Env::new().await;
    let (a, u, c) = (
        upstream("auth").await,
        upstream("users").await,
        upstream("chat").await,
    );
    let cfg = config(&[&a], &[&u], &[&c]);
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let bus = bus::Bus::redis(&redis_url).await.unwrap();
        let svc = gateway::build(&env.common, &cfg, bus, CancellationToken::new())
            .await
            .unwrap();
        gateways.push(svc.spawn());
    }
    let http = client();
    let user = uuid::Uuid::now_v7();
    let sid = uuid::Uuid::now_v7();
    let token = env.issuer.token_for_session(user, "alice", sid);
    // Both instances verify and cache the token (the second request is a cache hit).
    for gw in &gateways {
        for _ in 0..2 {
            let res = http
                .get(format!("{}/users/me", gw.url()))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    }

    let publisher = bus::Bus::redis(&redis_url).await.unwrap();
    let until = kit::time::now_ms() / 1000 + 900;
    publisher
        .publish(&bus::Envelope::new(
            "auth",
            "session.revoked",
            serde_json::json!({"session_id": sid, "user_id": user, "until": until}),
        ))
        .await
        .unwrap();

    // The echo upstream accepts anything: a 401 can only come from the edge.
    for (n, gw) in gateways.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let res = http
                .get(format!("{}/users/me", gw.url()))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if res.status() == 401 {
                let (_, code) = problem_code(res).await;
                assert_eq!(code, "session_revoked");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gateway instance {n} still accepts the revoked token"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for gw in gateways {
        gw.stop().await;
    }
}
