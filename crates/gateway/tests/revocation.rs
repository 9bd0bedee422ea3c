//! `session.revoked` reaches every gateway instance: two gateways sharing one Redis
//! (each its own bus connection, as separate processes would have) both drop a revoked
//! token they had cached. Skipped with a printed reason when `TEST_REDIS_URL` is unset.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Api, Env, config, publish_revoked, session_token, start_gateway, upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_instance_drops_a_revoked_token() {
    let Some(redis_url) = kit::testing::redis_url("every_gateway_instance_drops_a_revoked_token")
    else {
        return;
    };
    let env = Env::new().await;
    let (a, u, c) = upstreams().await;
    let cfg = config(&[&a], &[&u], &[&c]);
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let bus = bus::Bus::redis(&redis_url).await.unwrap();
        gateways.push(start_gateway(&env.common, &cfg, bus).await);
    }
    let apis: Vec<Api> = gateways.iter().map(Api::new).collect();
    let (token, user, sid) = session_token(&env.issuer);
    // Both instances verify and cache the token (the second request is a cache hit).
    for api in &apis {
        for _ in 0..2 {
            assert_eq!(api.get_as("/users/me", &token).await.status(), 200);
        }
    }

    let publisher = bus::Bus::redis(&redis_url).await.unwrap();
    publish_revoked(&publisher, user, sid).await;

    // The echo upstream accepts anything: a 401 can only come from the edge.
    for (n, api) in apis.iter().enumerate() {
        let what = format!("gateway instance {n} still accepts the revoked token");
        api.until_revoked("/users/me", &token, Duration::from_secs(10), &what)
            .await;
    }
    for gw in gateways {
        gw.stop().await;
    }
}
