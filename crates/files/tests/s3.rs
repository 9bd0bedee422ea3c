//! The bytes in an S3-compatible store: a real one, `moto_server` (`pip install
//! 'moto[server]'`), started per test when it is on PATH (skipped with the reason
//! printed otherwise), on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kit::db::Backend;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

kit::backend_tests!(s3_round_trip, s3_images_and_deletion);

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
