//! The bytes in an S3-compatible store: a real one, `moto_server` (`pip install
//! 'moto[server]'`), started per test when it is on PATH (skipped with the reason
//! printed otherwise), on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kit::db::Backend;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

kit::backend_tests!(
    s3_round_trip,
    s3_images_and_deletion,
    s3_lost_object_and_outage
);

async fn s3_round_trip(backend: Backend) {
    let Some(app) = App::start_with(backend, Store::S3, "files_s3_round_trip", |_| {}).await else {
        return;
    };
    let alice = app.user();
    // Small (one PUT) and large (a multipart upload of 5 MiB parts).
    for size in [1_000usize, 12 * 1024 * 1024 + 3] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let f = app.uploaded(&alice, "data.bin", bytes.clone()).await;
        assert_eq!(f["sha256"], hex::encode(Sha256::digest(&bytes)));
        let path = format!("/files/{}", id_of(&f));
        let d = app.get(&alice, &path, &[]).await;
        assert_eq!(d.status, StatusCode::OK);
        assert!(d.bytes == bytes, "the bytes differ");
        let r = app.get(&alice, &path, &[("range", "bytes=100-199")]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes, bytes[100..200]);
        assert_eq!(r.header("content-range"), format!("bytes 100-199/{size}"));
        let r = app
            .get(&alice, &path, &[("if-none-match", d.header("etag"))])
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    }
    assert_eq!(app.object_keys().await.len(), 2);
    app.stop().await;
}

async fn s3_images_and_deletion(backend: Backend) {
    let Some(app) = App::start_with(backend, Store::S3, "files_s3_images", |_| {}).await else {
        return;
    };
    let alice = app.user();
    let f = app
        .uploaded(&alice, "photo.png", png_with_gps(500, 100))
        .await;
    let id = id_of(&f);
    let d = app.get(&alice, &format!("/files/{id}"), &[]).await;
    assert!(!contains(&d.bytes, GPS_MARKER));
    let t = app
        .get(&alice, &format!("/files/{id}/thumbnail"), &[])
        .await;
    let thumb = image::load_from_memory(&t.bytes).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 64));
    let mut keys = app.object_keys().await;
    keys.sort();
    assert_eq!(
        keys,
        vec![format!("files/{id}"), format!("thumbnails/{id}")]
    );
    assert_eq!(
        app.delete(&alice, &format!("/files/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(app.object_keys().await.is_empty());
    app.stop().await;
}

/// An object removed behind the service is a 404, not a 500; the store down is a 503
/// with `Retry-After` on downloads and uploads, and `/readyz` reports it.
async fn s3_lost_object_and_outage(backend: Backend) {
    let Some(mut app) = App::start_with(backend, Store::S3, "files_s3_outage", |_| {}).await else {
        return;
    };
    let alice = app.user();
    let lost = id_of(&app.uploaded(&alice, "lost.bin", vec![7u8; 2_000]).await);
    let kept = id_of(&app.uploaded(&alice, "kept.bin", vec![9u8; 2_000]).await);
    let moto = app.moto.as_mut().unwrap();
    moto.delete_object(&format!("files/{lost}")).await;
    app.get(&alice, &format!("/files/{lost}"), &[])
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");

    let readyz = format!("{}/readyz", app.url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.http.get(&readyz).send().await.unwrap().status() != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.moto.as_mut().unwrap().kill();
    let r = app.get(&alice, &format!("/files/{kept}"), &[]).await;
    r.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable");
    assert!(!r.header("retry-after").is_empty());
    let up = app.upload(&alice, "new.bin", vec![1u8; 2_000]).await;
    up.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable");
    let r = app.http.get(&readyz).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(body.contains("storage"), "{body}");
    app.stop().await;
}
