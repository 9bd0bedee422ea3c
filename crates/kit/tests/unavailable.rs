//! A database that cannot serve gives 503 `database_unavailable` with `Retry-After`
//! (never 500), and `/readyz` fails only for the database: a bus outage is reported in
//! the body while the service keeps serving.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use kit::db::Db;
use kit::error::ApiError;
use tower::ServiceExt;

async fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(None, dir.path(), "t").await.unwrap();
    (dir, db)
}

#[tokio::test]
async fn a_closed_pool_is_a_503_with_retry_after() {
    let (_dir, db) = sqlite().await;
    db.close().await;
    let err = db.begin().await.err().expect("closed pool");
    assert!(kit::db::is_unavailable(&err));
    assert!(db.is_known_down());
    let res = ApiError::from(err).into_response();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "2");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "database_unavailable");
}

#[tokio::test]
async fn statement_errors_stay_internal() {
    let (_dir, db) = sqlite().await;
    let err = sqlx::query("SELECT * FROM no_such_table")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(!kit::db::is_unavailable(&err));
    let res = ApiError::from(err).into_response();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

async fn readyz(router: axum::Router) -> (StatusCode, Option<String>, serde_json::Value) {
    let res = router
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, retry, serde_json::from_slice(&body).unwrap())
}

fn router(db: Db, bus_up: bool, bus_hangs: bool) -> axum::Router {
    let ready = kit::server::readiness(db, move || async move {
        if bus_hangs {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if bus_up {
            Ok(())
        } else {
            Err(anyhow::anyhow!("connection refused"))
        }
    });
    kit::server::finish_router(
        "t",
        axum::Router::new(),
        ready,
        kit::net::TrustedProxies::new(Vec::new()),
    )
}

#[tokio::test]
async fn readiness_fails_for_the_database_only_and_answers_within_a_second() {
    let (_dir, db) = sqlite().await;
    let (status, _, body) = readyz(router(db.clone(), true, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");

    // Bus down: still ready (events wait in the outbox), reported as degraded.
    let (status, _, body) = readyz(router(db.clone(), false, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded");
    assert!(body["checks"]["bus"].as_str().unwrap().contains("refused"));

    // A bus that does not answer does not hold the probe past its timeout.
    let started = Instant::now();
    let (status, _, body) = readyz(router(db.clone(), true, true)).await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded");

    db.close().await;
    let (status, retry, body) = readyz(router(db, true, false)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("2"));
    assert_eq!(body["code"], "not_ready");
}
