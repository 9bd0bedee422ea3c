//! The files API over HTTP on a real port, on SQLite and PostgreSQL, with the bytes on the
//! local disk (tests/s3.rs repeats what depends on the store against a real S3 server).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kit::db::Backend;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

kit::backend_tests!(
    raw_upload_round_trip,
    multipart_upload,
    ranges_validators_and_not_modified,
    over_the_limit_is_refused_while_streaming,
    image_metadata_is_stripped_and_thumbnailed,
    decompression_bomb_is_refused,
    sniffing_ignores_the_client_and_active_types_are_attachments,
    quota_counts_concurrent_uploads,
    access_matrix,
    delete_rules,
    internal_lookup,
    collector_deletes_old_unattached_uploads,
    lookup_restarts_the_collection_clock,
    account_deletion_deletes_unattached_files,
);

async fn raw_upload_round_trip(backend: Backend) {
    let Some(app) = App::start(backend, "files_raw_round_trip").await else {
        return;
    };
    let alice = app.user();
    let bytes = b"hello, files\n".to_vec();
    let r = app
        .upload(&alice, "r\u{e9}sum\u{e9} \"final\".txt", bytes.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let f = r.json();
    let id = id_of(&f);
    assert_eq!(r.header("location"), format!("/files/{id}"));
    assert_eq!(f["filename"], "r\u{e9}sum\u{e9} \"final\".txt");
    assert_eq!(f["content_type"], "text/plain; charset=utf-8");
    assert_eq!(f["size"], bytes.len());
    assert_eq!(f["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(f["width"], serde_json::Value::Null);
    assert_eq!(f["height"], serde_json::Value::Null);
    assert_eq!(f["thumbnail_url"], serde_json::Value::Null);
    assert_eq!(f["url"], format!("/files/{id}"));
    assert!(f["created_at"].as_str().unwrap().ends_with('Z'));

    let d = app.get(&alice, &format!("/files/{id}"), &[]).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.bytes, bytes);
    assert_eq!(
        d.header("etag"),
        format!("\"{}\"", f["sha256"].as_str().unwrap())
    );
    assert_eq!(d.header("x-content-type-options"), "nosniff");
    assert!(d.header("cache-control").starts_with("private"));
    assert_eq!(d.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        d.header("content-disposition"),
        "attachment; filename=\"r_sum_ _final_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt"
    );
    assert_eq!(d.header("accept-ranges"), "bytes");
    assert_eq!(app.object_keys().await, vec![format!("files/{id}")]);

    // A raw body needs its name.
    let res = app
        .http
        .post(format!("{}/files", app.url))
        .bearer_auth(&alice.token)
        .body("x")
        .send()
        .await
        .unwrap();
    App::reply(res)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "validation_failed");
    // Without a token: 401.
    let res = app
        .http
        .post(format!("{}/files?filename=a", app.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Malformed id: 400.
    app.get(&alice, "/files/nope", &[])
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
    app.get(&alice, &format!("/files/{}", Uuid::now_v7()), &[])
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    app.stop().await;
}

async fn multipart_upload(backend: Backend) {
    let Some(app) = App::start(backend, "files_multipart").await else {
        return;
    };
    let alice = app.user();
    let bytes = vec![0u8, 1, 2, 3, 255, 254];
    let r = app
        .upload_multipart(
            &alice,
            &[
                ("comment", None, b"ignored"),
                ("file", Some("C:\\Users\\alice\\data.bin"), &bytes),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let f = r.json();
    assert_eq!(f["filename"], "data.bin");
    assert_eq!(f["content_type"], "application/octet-stream");
    assert_eq!(f["size"], 6);
    let d = app.get(&alice, &format!("/files/{}", id_of(&f)), &[]).await;
    assert_eq!(d.bytes, bytes);

    // No file part; two file parts.
    app.upload_multipart(&alice, &[("other", None, b"x")])
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "validation_failed");
    app.upload_multipart(
        &alice,
        &[("file", Some("a"), b"1"), ("file", Some("b"), b"2")],
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST, "validation_failed");
    // Neither stored anything.
    assert_eq!(app.object_keys().await.len(), 1);
    app.stop().await;
}

async fn ranges_validators_and_not_modified(backend: Backend) {
    let Some(app) = App::start(backend, "files_ranges").await else {
        return;
    };
    let alice = app.user();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let f = app.uploaded(&alice, "data.bin", bytes.clone()).await;
    let path = format!("/files/{}", id_of(&f));
    let etag = format!("\"{}\"", f["sha256"].as_str().unwrap());

    let r = app.get(&alice, &path, &[("range", "bytes=10-19")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 10-19/1000");
    assert_eq!(r.bytes, bytes[10..20]);
    let r = app.get(&alice, &path, &[("range", "bytes=-5")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 995-999/1000");
    assert_eq!(r.bytes, bytes[995..]);
    let r = app.get(&alice, &path, &[("range", "bytes=990-5000")]).await;
    assert_eq!((r.status, r.bytes.len()), (StatusCode::PARTIAL_CONTENT, 10));
    let r = app.get(&alice, &path, &[("range", "bytes=1000-")]).await;
    r.assert_problem(StatusCode::RANGE_NOT_SATISFIABLE, "validation_failed");
    assert_eq!(r.header("content-range"), "bytes */1000");
    // Several ranges: the whole file.
    let r = app.get(&alice, &path, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((r.status, r.bytes.len()), (StatusCode::OK, 1000));
    // A stale If-Range: the whole file.
    let r = app
        .get(
            &alice,
            &path,
            &[("range", "bytes=0-1"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!((r.status, r.bytes.len()), (StatusCode::OK, 1000));
    let r = app
        .get(
            &alice,
            &path,
            &[("range", "bytes=0-1"), ("if-range", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);

    let r = app.get(&alice, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.bytes.is_empty());
    assert_eq!(r.header("etag"), etag);
    let r = app
        .get(&alice, &path, &[("if-none-match", "\"stale\"")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.stop().await;
}

const MIB: usize = 1024 * 1024;

/// Sends a chunked upload of `total` bytes on a raw connection without ever finishing the
/// body, and returns the status line the server answers with meanwhile.
async fn chunked_without_end(app: &App, user: &User, total: usize) -> String {
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /files?filename=big.bin HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ntransfer-encoding: chunked\r\n\r\n",
        user.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        let frame = format!("{n:x}\r\n");
        // The server may stop reading once it answered: a write error is expected then.
        if s.write_all(frame.as_bytes()).await.is_err()
            || s.write_all(&chunk[..n]).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += n;
    }
    // No terminating `0\r\n\r\n`: the body is never finished.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server waited for the end of a body already over the limit")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn over_the_limit_is_refused_while_streaming(backend: Backend) {
    let Some(app) = App::start(backend, "files_limit").await else {
        return;
    };
    let alice = app.user();
    // Exactly 25 MiB is accepted.
    let f = app.uploaded(&alice, "max.bin", vec![7u8; 25 * MIB]).await;
    assert_eq!(f["size"], 25 * MIB);
    // 25 MiB + 1 byte announced: refused before any byte is read.
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /files?filename=big.bin HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        alice.token,
        25 * MIB + 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // 25 MiB + 1 byte streamed without a length: refused at the 25 MiB + 1st byte, while
    // the client has not finished its body (so the server did not wait to buffer it).
    let status = chunked_without_end(&app, &alice, 25 * MIB + 1).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // 25 MiB streamed and not finished: no answer yet (the limit is not crossed).
    // Nothing of the refused uploads was stored, and no reservation is left.
    assert_eq!(app.object_keys().await.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upload_reservations")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    app.stop().await;
}

async fn image_metadata_is_stripped_and_thumbnailed(backend: Backend) {
    let Some(app) = App::start(backend, "files_images").await else {
        return;
    };
    let alice = app.user();
    let original = png_with_gps(640, 480);
    assert!(contains(&original, GPS_MARKER));
    let f = app.uploaded(&alice, "photo.png", original.clone()).await;
    assert_eq!(f["content_type"], "image/png");
    assert_eq!(
        (f["width"].as_i64(), f["height"].as_i64()),
        (Some(640), Some(480))
    );
    let id = id_of(&f);
    assert_eq!(f["thumbnail_url"], format!("/files/{id}/thumbnail"));
    let d = app.get(&alice, &format!("/files/{id}"), &[]).await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(!contains(&d.bytes, GPS_MARKER), "GPS data came back");
    assert!(!contains(&d.bytes, b"eXIf") && !contains(&d.bytes, b"tEXt"));
    // The pixels are untouched: the stripped file decodes to the same image.
    let a = image::load_from_memory(&original).unwrap().to_rgb8();
    let b = image::load_from_memory(&d.bytes).unwrap().to_rgb8();
    assert_eq!(a, b);
    assert_eq!(f["size"], d.bytes.len());
    assert_eq!(f["sha256"], hex::encode(Sha256::digest(&d.bytes)));
    assert!(d.header("content-disposition").starts_with("inline;"));
    assert_eq!(d.header("content-type"), "image/png");

    let t = app
        .get(&alice, &format!("/files/{id}/thumbnail"), &[])
        .await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.header("content-type"), "image/png");
    let thumb = image::load_from_memory(&t.bytes).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 240));
    let r = app
        .get(
            &alice,
            &format!("/files/{id}/thumbnail"),
            &[("if-none-match", t.header("etag"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    // JPEG: the APP1 Exif segment goes, the rest is byte for byte the same.
    let jpeg = jpeg_with_gps(100, 400);
    let f = app.uploaded(&alice, "photo.jpg", jpeg.clone()).await;
    assert_eq!(f["content_type"], "image/jpeg");
    assert_eq!(
        (f["width"].as_i64(), f["height"].as_i64()),
        (Some(100), Some(400))
    );
    let d = app.get(&alice, &format!("/files/{}", id_of(&f)), &[]).await;
    assert!(!contains(&d.bytes, GPS_MARKER) && !contains(&d.bytes, b"Exif"));
    assert_eq!(d.bytes.len(), jpeg.len() - (4 + 14 + GPS_MARKER.len()));
    let t = app
        .get(&alice, &format!("/files/{}/thumbnail", id_of(&f)), &[])
        .await;
    let thumb = image::load_from_memory(&t.bytes).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (80, 320));

    // Not an image: no thumbnail.
    let f = app.uploaded(&alice, "a.txt", b"text".to_vec()).await;
    app.get(&alice, &format!("/files/{}/thumbnail", id_of(&f)), &[])
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    app.stop().await;
}

async fn decompression_bomb_is_refused(backend: Backend) {
    let Some(app) = App::start(backend, "files_bomb").await else {
        return;
    };
    let alice = app.user();
    let bomb = png_declaring(100_000, 100_000);
    assert!(bomb.len() < 100);
    app.upload(&alice, "bomb.png", bomb)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_image");
    // Within the side limit but over the allocation limit (16 000² RGB = 768 MB).
    app.upload(&alice, "bomb2.png", png_declaring(16_000, 16_000))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_image");
    // Starts like a PNG, is not one.
    let mut broken = b"\x89PNG\r\n\x1a\n".to_vec();
    broken.extend_from_slice(b"garbage");
    app.upload(&alice, "broken.png", broken)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_image");
    assert!(app.object_keys().await.is_empty());
    app.stop().await;
}

async fn sniffing_ignores_the_client_and_active_types_are_attachments(backend: Backend) {
    let Some(app) = App::start(backend, "files_sniffing").await else {
        return;
    };
    let alice = app.user();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "page.png",
            b"<!DOCTYPE html><script>alert(1)</script>",
            "text/html",
        ),
        (
            "logo.png",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>",
            "image/svg+xml",
        ),
        ("doc.txt", b"%PDF-1.7\n...", "application/pdf"),
        ("x.html", b"\x89PNG\r\n\x1a\nnot really", "invalid"),
    ];
    for (name, bytes, want) in cases {
        let r = app
            .upload_as(&alice, name, "image/png", bytes.to_vec())
            .await;
        if want == "invalid" {
            r.assert_problem(StatusCode::BAD_REQUEST, "invalid_image");
            continue;
        }
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        let f = r.json();
        assert_eq!(f["content_type"], want, "{name}");
        let d = app.get(&alice, &format!("/files/{}", id_of(&f)), &[]).await;
        assert_eq!(d.header("content-type"), want);
        assert!(
            d.header("content-disposition").starts_with("attachment;"),
            "{name}"
        );
        assert_eq!(d.header("x-content-type-options"), "nosniff");
        assert!(d.header("content-security-policy").contains("sandbox"));
    }
    app.stop().await;
}

async fn quota_counts_concurrent_uploads(backend: Backend) {
    let Some(app) = App::start_with(backend, Store::Local, "files_quota", |c| {
        c.quota_bytes = 1000
    })
    .await
    else {
        return;
    };
    let alice = app.user();
    let bob = app.user();
    let first = app.uploaded(&alice, "a.bin", vec![1u8; 600]).await;
    app.upload(&alice, "b.bin", vec![1u8; 600])
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded");
    // Another user's quota is their own.
    app.uploaded(&bob, "b.bin", vec![1u8; 600]).await;
    assert_eq!(
        app.delete(&alice, &format!("/files/{}", id_of(&first)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Two at once with 1000 bytes free: one fits, not both (each reserved its length).
    let (a, b) = tokio::join!(
        app.upload(&alice, "c.bin", vec![2u8; 600]),
        app.upload(&alice, "d.bin", vec![3u8; 600]),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::PAYLOAD_TOO_LARGE]
    );
    // A failed upload gives its reservation back: 400 bytes still fit.
    app.upload(&alice, "bomb.png", png_declaring(100_000, 1))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_image");
    app.uploaded(&alice, "e.bin", vec![4u8; 400]).await;
    app.stop().await;
}

async fn access_matrix(backend: Backend) {
    let Some(app) = App::start_with(backend, Store::Local, "files_access", |c| {
        c.membership_cache_ms = 0
    })
    .await
    else {
        return;
    };
    let (owner, member, ex_member, stranger) = (app.user(), app.user(), app.user(), app.user());
    let f = app.uploaded(&owner, "photo.png", png(40, 20)).await;
    let id = id_of(&f);
    let (file, thumb) = (format!("/files/{id}"), format!("/files/{id}/thumbnail"));
    // Not attached: the uploader only.
    assert_eq!(app.get(&owner, &file, &[]).await.status, StatusCode::OK);
    app.get(&member, &file, &[])
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");

    let room = Uuid::now_v7();
    app.chat.join(room, &owner);
    app.chat.join(room, &member);
    app.chat.join(room, &ex_member);
    let message = Uuid::now_v7();
    app.apply(&message_created(room, message, &owner, &[id]))
        .await;
    for u in [&owner, &member, &ex_member] {
        assert_eq!(app.get(u, &file, &[]).await.status, StatusCode::OK);
        assert_eq!(app.get(u, &thumb, &[]).await.status, StatusCode::OK);
    }
    for path in [&file, &thumb] {
        app.get(&stranger, path, &[])
            .await
            .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    }
    app.chat.leave(room, &ex_member);
    app.get(&ex_member, &file, &[])
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    // Attached in a second room too: a member of either may read it.
    let other_room = Uuid::now_v7();
    app.chat.join(other_room, &stranger);
    app.apply(&message_created(other_room, Uuid::now_v7(), &owner, &[id]))
        .await;
    assert_eq!(app.get(&stranger, &file, &[]).await.status, StatusCode::OK);
    // Chat down: 503, never a silent allow — except for the uploader, who needs no answer.
    app.chat
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = app.get(&member, &file, &[]).await;
    r.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable");
    assert!(!r.header("retry-after").is_empty());
    assert_eq!(app.get(&owner, &file, &[]).await.status, StatusCode::OK);
    app.chat
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Only the uploader deletes (others: 404 as if absent), and only unattached files.
    app.delete(&member, &file)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    app.stop().await;
}

async fn delete_rules(backend: Backend) {
    let Some(app) = App::start(backend, "files_delete").await else {
        return;
    };
    let alice = app.user();
    let f = app.uploaded(&alice, "photo.png", png(10, 10)).await;
    let id = id_of(&f);
    let path = format!("/files/{id}");
    let room = Uuid::now_v7();
    let message = Uuid::now_v7();
    app.apply(&message_created(room, message, &alice, &[id]))
        .await;
    app.delete(&alice, &path)
        .await
        .assert_problem(StatusCode::CONFLICT, "file_attached");
    app.apply(&message_deleted(room, message, &[id])).await;
    assert_eq!(
        app.delete(&alice, &path).await.status,
        StatusCode::NO_CONTENT
    );
    app.get(&alice, &path, &[])
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    assert!(
        app.object_keys().await.is_empty(),
        "{:?}",
        app.object_keys().await
    );
    app.delete(&alice, &path)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "file_not_found");
    app.stop().await;
}

async fn internal_lookup(backend: Backend) {
    let Some(app) = App::start(backend, "files_lookup").await else {
        return;
    };
    let (alice, bob) = (app.user(), app.user());
    let a1 = id_of(&app.uploaded(&alice, "1.txt", b"1".to_vec()).await);
    let a2 = id_of(&app.uploaded(&alice, "2.png", png(8, 8)).await);
    let b1 = id_of(&app.uploaded(&bob, "3.txt", b"3".to_vec()).await);
    let r = app
        .lookup(alice.id, &[a2, b1, Uuid::now_v7(), a1, a2])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    let items = r.json()["items"].as_array().unwrap().clone();
    let ids: Vec<Uuid> = items.iter().map(id_of).collect();
    assert_eq!(ids, vec![a2, a1]);
    assert_eq!(items[0]["width"], 8);
    assert_eq!(items[0]["thumbnail_url"], format!("/files/{a2}/thumbnail"));
    assert_eq!(items[1]["url"], format!("/files/{a1}"));
    let too_many: Vec<Uuid> = (0..101).map(|_| Uuid::now_v7()).collect();
    app.lookup(alice.id, &too_many)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "validation_failed");
    app.stop().await;
}

async fn collector_deletes_old_unattached_uploads(backend: Backend) {
    let Some(app) = App::start_with(backend, Store::Local, "files_gc", |c| {
        c.gc_interval_secs = 1
    })
    .await
    else {
        return;
    };
    let alice = app.user();
    let old = id_of(&app.uploaded(&alice, "old.png", png(10, 10)).await);
    let attached = id_of(&app.uploaded(&alice, "attached.txt", b"a".to_vec()).await);
    let fresh = id_of(&app.uploaded(&alice, "fresh.txt", b"f".to_vec()).await);
    let detached = id_of(&app.uploaded(&alice, "detached.txt", b"d".to_vec()).await);
    let room = Uuid::now_v7();
    app.apply(&message_created(room, Uuid::now_v7(), &alice, &[attached]))
        .await;
    let message = Uuid::now_v7();
    app.apply(&message_created(room, message, &alice, &[detached]))
        .await;
    // Everything but `fresh` was uploaded 25 h ago; `detached` lost its message just now.
    let long_ago = kit::time::now_ms() - 25 * 3600 * 1000;
    for id in [old, attached, detached] {
        sqlx::query("UPDATE files SET detached_at = $1, created_at = $1 WHERE id = $2")
            .bind(long_ago)
            .bind(id.to_string())
            .execute(app.db.pool())
            .await
            .unwrap();
    }
    app.apply(&message_deleted(room, message, &[detached]))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.get(&alice, &format!("/files/{old}"), &[]).await.status != StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the old upload was never collected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another pass for good measure: the others stay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in [attached, fresh, detached] {
        assert_eq!(
            app.get(&alice, &format!("/files/{id}"), &[]).await.status,
            StatusCode::OK
        );
    }
    let keys = app.object_keys().await;
    assert!(
        !keys.iter().any(|k| k.contains(&old.to_string())),
        "{keys:?}"
    );
    assert_eq!(keys.len(), 3, "{keys:?}");
    app.stop().await;
}

async fn account_deletion_deletes_unattached_files(backend: Backend) {
    let Some(app) = App::start(backend, "files_user_deleted").await else {
        return;
    };
    let (alice, bob) = (app.user(), app.user());
    let loose = id_of(&app.uploaded(&alice, "loose.txt", b"l".to_vec()).await);
    let sent = id_of(&app.uploaded(&alice, "sent.txt", b"s".to_vec()).await);
    let bobs = id_of(&app.uploaded(&bob, "bob.txt", b"b".to_vec()).await);
    app.apply(&message_created(
        Uuid::now_v7(),
        Uuid::now_v7(),
        &alice,
        &[sent],
    ))
    .await;
    let e = user_deleted(&alice);
    app.apply(&e).await;
    // Redelivery is harmless.
    app.bus.publish(&e).await.unwrap();
    let r = app.lookup(alice.id, &[loose, sent]).await;
    let ids: Vec<Uuid> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, vec![sent]);
    assert_eq!(
        app.lookup(bob.id, &[bobs]).await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.object_keys().await.len(), 2);
    app.stop().await;
}

/// Chat looks a file up just before the 24 h are over: the collector must not delete it
/// before the message event that attaches it arrives.
async fn lookup_restarts_the_collection_clock(backend: Backend) {
    let Some(app) = App::start_with(backend, Store::Local, "files_gc_lookup", |c| {
        c.gc_interval_secs = 1
    })
    .await
    else {
        return;
    };
    let alice = app.user();
    let looked_up = id_of(&app.uploaded(&alice, "soon.txt", b"s".to_vec()).await);
    let forgotten = id_of(&app.uploaded(&alice, "gone.txt", b"g".to_vec()).await);
    // Both 3 s short of the 24 h (the collector runs every second): the lookup comes well
    // inside those 3 s, so without its touch both would be collected within about 4 s.
    let almost = kit::time::now_ms() - 24 * 3600 * 1000 + 3_000;
    for id in [looked_up, forgotten] {
        sqlx::query("UPDATE files SET detached_at = $1, created_at = $1 WHERE id = $2")
            .bind(almost)
            .bind(id.to_string())
            .execute(app.db.pool())
            .await
            .unwrap();
    }
    let r = app.lookup(alice.id, &[looked_up]).await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app
        .get(&alice, &format!("/files/{forgotten}"), &[])
        .await
        .status
        != StatusCode::NOT_FOUND
    {
        assert!(std::time::Instant::now() < deadline, "never collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.get(&alice, &format!("/files/{looked_up}"), &[])
            .await
            .status,
        StatusCode::OK,
        "a file chat looked up was collected before its message arrived"
    );
    app.stop().await;
}
