//! `/readyz` stays 503 while start-up work of the process is pending (a file of its own:
//! the gates are process-wide).
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

#[tokio::test]
async fn readiness_waits_for_every_startup_gate() {
    let dir = tempfile::tempdir().unwrap();
    let db = kit::db::Db::open(None, dir.path(), "t").await.unwrap();
    let router = kit::server::finish_router(
        "t",
        axum::Router::new(),
        kit::server::readiness(db, || async { Ok(()) }),
        kit::net::TrustedProxies::new(Vec::new()),
    );
    let status = |router: axum::Router| async move {
        let res = router
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    assert_eq!(status(router.clone()).await.0, StatusCode::OK);

    let (a, b) = (
        kit::server::StartupGate::new(),
        kit::server::StartupGate::new(),
    );
    let (s, body) = status(router.clone()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("starting"), "{body}");
    a.open();
    a.open(); // once only: b still holds readiness
    assert_eq!(
        status(router.clone()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    drop(b); // a gate dropped (its task ended) no longer holds readiness
    assert_eq!(status(router).await.0, StatusCode::OK);
}
