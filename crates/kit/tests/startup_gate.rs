//! `/readyz` of a service stays 503 while its start-up work is pending, and only its own.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

async fn readyz(router: axum::Router) -> (StatusCode, String) {
    let res = router
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn readiness_waits_for_its_own_startup_gate() {
    let dir = tempfile::tempdir().unwrap();
    let db = kit::db::Db::open(None, dir.path(), "t").await.unwrap();
    let router = |gate: kit::server::StartupGate| {
        let ready = kit::server::readiness(db.clone(), || async { Ok(()) });
        kit::server::finish_router(
            "t",
            axum::Router::new(),
            kit::server::gated(ready, gate, "revoked sessions not loaded"),
            kit::net::TrustedProxies::new(Vec::new()),
        )
    };
    let (mine, another) = (
        kit::server::StartupGate::new(),
        kit::server::StartupGate::new(),
    );
    let (s, body) = readyz(router(mine.clone())).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("starting: revoked sessions not loaded"),
        "{body}"
    );
    mine.open();
    // Another service's pending start-up does not hold this one.
    assert_eq!(readyz(router(mine.clone())).await.0, StatusCode::OK);
    assert_eq!(
        readyz(router(another.clone())).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
