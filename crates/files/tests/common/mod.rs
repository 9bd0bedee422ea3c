//! A files service on a real port, a real JWKS issuer, an in-process bus, a stand-in for
//! chat's internal membership route, and — for the S3 variant — a real S3-compatible
//! server (`moto_server`, started per test when it is on PATH).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Envelope};
use kit::db::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use token::testing::TestIssuer;
use uuid::Uuid;

/// What the stand-in chat knows: `(room, user)` memberships; `down` answers 500.
#[derive(Clone, Default)]
pub struct FakeChat {
    pub members: Arc<Mutex<HashSet<(Uuid, Uuid)>>>,
    pub down: Arc<AtomicBool>,
    pub asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeChat {
    pub fn join(&self, room: Uuid, user: &User) {
        self.members.lock().unwrap().insert((room, user.id));
    }

    pub fn leave(&self, room: Uuid, user: &User) {
        self.members.lock().unwrap().remove(&(room, user.id));
    }

    async fn start(&self) -> String {
        use axum::extract::{Path, State};
        use axum::http::StatusCode as S;
        let app = axum::Router::new()
            .route(
                "/internal/rooms/{room}/members/{user}",
                axum::routing::get(
                    |State(chat): State<FakeChat>, Path((room, user)): Path<(Uuid, Uuid)>| async move {
                        chat.asked.fetch_add(1, Ordering::SeqCst);
                        if chat.down.load(Ordering::SeqCst) {
                            return (S::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
                        }
                        if chat.members.lock().unwrap().contains(&(room, user)) {
                            (S::OK, axum::Json(json!({"role": "member", "room_kind": "channel"})))
                        } else {
                            (S::NOT_FOUND, axum::Json(json!({"code": "room_not_found"})))
                        }
                    },
                ),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }
}

/// Where the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Local,
    S3,
}

/// A `moto_server` child process (killed on drop) with one bucket.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
    pub bucket: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Moto {
    /// Starts `moto_server` on a free port, or None (with the reason printed) when it is
    /// not installed (`pip install 'moto[server]'`).
    pub async fn start(test: &str) -> Option<Moto> {
        let Some(program) = on_path("moto_server") else {
            eprintln!("skipping {test}: moto_server not on PATH (pip install 'moto[server]')");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = std::process::Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let bucket = format!("files-{}", Uuid::now_v7().simple());
        let moto = Moto {
            child,
            endpoint,
            bucket,
        };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http
                .put(format!("{}/{}", moto.endpoint, moto.bucket))
                .send()
                .await
                && r.status().is_success()
            {
                return Some(moto);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The service's settings for this bucket.
    pub fn config(&self) -> files::storage::StorageConfig {
        files::storage::StorageConfig {
            s3_bucket: Some(self.bucket.clone()),
            s3_endpoint: Some(self.endpoint.clone()),
            s3_region: Some("us-east-1".to_owned()),
            s3_allow_http: true,
            s3_access_key_id: Some("test".to_owned()),
            s3_secret_access_key: Some(files::storage::Secret("test".to_owned())),
            local_dir: None,
        }
    }

    /// Deletes an object behind the service's back (signed, as moto wants for deletes).
    pub async fn delete_object(&self, key: &str) {
        let unused = tempfile::tempdir().unwrap();
        let store = files::storage::Storage::open(&self.config(), unused.path()).unwrap();
        store
            .delete(vec![object_store::path::Path::from(key)])
            .await
            .unwrap();
        assert!(
            !self.keys().await.contains(&key.to_owned()),
            "{key} still there"
        );
    }

    /// Stops the server (an outage of the object store).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The object keys in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let xml = reqwest::get(format!("{}/{}?list-type=2", self.endpoint, self.bucket))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

pub struct App {
    pub url: String,
    pub issuer: TestIssuer,
    pub bus: Bus,
    pub http: reqwest::Client,
    pub chat: FakeChat,
    pub db: kit::db::Db,
    pub dir: tempfile::TempDir,
    pub moto: Option<Moto>,
    running: Option<kit::server::Running>,
    _db: kit::testing::TestDb,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub token: String,
}

/// `chat.message.created` carrying `files` in `room`.
pub fn message_created(room: Uuid, message: Uuid, sender: &User, files: &[Uuid]) -> Envelope {
    let attachments: Vec<Value> = files.iter().map(|f| json!({ "id": f })).collect();
    Envelope::new(
        "chat",
        "chat.message.created",
        json!({
            "message_id": message, "room_id": room, "seq": 1, "sender_id": sender.id,
            "room_kind": "channel", "attachments": attachments, "preview": "",
            "created_at": "2026-12-03T10:00:00Z",
        }),
    )
}

pub fn message_deleted(room: Uuid, message: Uuid, files: &[Uuid]) -> Envelope {
    Envelope::new(
        "chat",
        "chat.message.deleted",
        json!({ "message_id": message, "room_id": room, "seq": 2, "attachment_ids": files }),
    )
}

pub fn user_deleted(user: &User) -> Envelope {
    Envelope::new("auth", "user.deleted", json!({ "user_id": user.id }))
}

/// A response as a client sees it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    pub fn assert_problem(&self, status: StatusCode, code: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["code"], code, "{body}");
    }
}

impl App {
    pub async fn start(backend: Backend, test: &str) -> Option<App> {
        Self::start_with(backend, Store::Local, test, |_| {}).await
    }

    /// [`App::start`] on `store`, with the configuration changed by `tweak` first.
    pub async fn start_with(
        backend: Backend,
        store: Store,
        test: &str,
        tweak: impl FnOnce(&mut files::Config),
    ) -> Option<App> {
        let moto = match store {
            Store::Local => None,
            Store::S3 => Some(Moto::start(test).await?),
        };
        let db = kit::testing::test_db(backend, test).await?;
        let dir = tempfile::tempdir().unwrap();
        let issuer = TestIssuer::start().await;
        let chat = FakeChat::default();
        let chat_url = chat.start().await;
        let common = kit::config::CommonConfig {
            auth_url: issuer.auth_url.clone(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let mut config = files::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            chat_url,
            ..Default::default()
        };
        if let Some(m) = &moto {
            config.storage = m.config();
        }
        tweak(&mut config);
        let bus = Bus::memory();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let service = files::build(&common, &config, bus.clone(), shutdown.clone())
            .await
            .unwrap();
        let running = service.spawn();
        let handle = kit::db::Db::open(db.url.as_deref(), dir.path(), files::NAME)
            .await
            .unwrap();
        Some(App {
            url: running.url(),
            issuer,
            bus,
            http: reqwest::Client::new(),
            chat,
            db: handle,
            dir,
            moto,
            running: Some(running),
            _db: db,
        })
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub fn user(&self) -> User {
        let id = Uuid::now_v7();
        User {
            id,
            token: self
                .issuer
                .token(id, &format!("u{}", &id.simple().to_string()[24..])),
        }
    }

    /// Publishes `e` and waits until the service applied it (its `processed_events` row).
    pub async fn apply(&self, e: &Envelope) {
        self.bus.publish(e).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM processed_events WHERE consumer = 'files' AND event_id = $1",
            )
            .bind(e.id.to_string())
            .fetch_one(self.db.pool())
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never applied",
                e.kind
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn reply(res: reqwest::Response) -> Reply {
        Reply {
            status: res.status(),
            headers: res.headers().clone(),
            bytes: res.bytes().await.unwrap().to_vec(),
        }
    }

    /// `POST /files?filename=` with a raw body and the given (ignored) `Content-Type`.
    pub async fn upload_as(
        &self,
        user: &User,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Reply {
        let res = self
            .http
            .post(format!("{}/files?filename={}", self.url, percent(filename)))
            .bearer_auth(&user.token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        Self::reply(res).await
    }

    pub async fn upload(&self, user: &User, filename: &str, bytes: Vec<u8>) -> Reply {
        self.upload_as(user, filename, "application/octet-stream", bytes)
            .await
    }

    /// Uploads and returns the `File` JSON (asserting 201).
    pub async fn uploaded(&self, user: &User, filename: &str, bytes: Vec<u8>) -> Value {
        let r = self.upload(user, filename, bytes).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        r.json()
    }

    pub async fn get(&self, user: &User, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(&user.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn delete(&self, user: &User, path: &str) -> Reply {
        let req = self
            .http
            .delete(format!("{}{}", self.url, path))
            .bearer_auth(&user.token);
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn lookup(&self, owner: Uuid, ids: &[Uuid]) -> Reply {
        let req = self
            .http
            .post(format!("{}/internal/files/lookup", self.url))
            .json(&json!({ "owner_id": owner, "ids": ids }));
        Self::reply(req.send().await.unwrap()).await
    }

    /// The stored objects (keys relative to the store's root).
    pub async fn object_keys(&self) -> Vec<String> {
        if let Some(m) = &self.moto {
            return m.keys().await;
        }
        let root = self.dir.path().join("files");
        let mut keys = Vec::new();
        for sub in ["files", "thumbnails"] {
            if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
                for e in entries.flatten() {
                    keys.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        keys.sort();
        keys
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.cancel();
        }
    }
}

/// Percent-encodes everything but unreserved characters (a query value).
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A `multipart/form-data` body of `(name, filename, bytes)` parts: `(content type, body)`.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("b{}", Uuid::now_v7().simple());
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("content-disposition: {disposition}\r\n").as_bytes());
        // The client's claim, which the service must ignore.
        body.extend_from_slice(b"content-type: image/png\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl App {
    /// `POST /files` with a multipart body.
    pub async fn upload_multipart(
        &self,
        user: &User,
        parts: &[(&str, Option<&str>, &[u8])],
    ) -> Reply {
        let (content_type, body) = multipart(parts);
        let res = self
            .http
            .post(format!("{}/files", self.url))
            .bearer_auth(&user.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        Self::reply(res).await
    }
}

pub fn id_of(file: &Value) -> Uuid {
    file["id"].as_str().unwrap().parse().unwrap()
}

/// CRC-32 (IEEE) of PNG chunks.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for part in parts {
        for &b in *part {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
    }
    !crc
}

pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&(data.len() as u32).to_be_bytes());
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    c
}

/// A `w × h` RGB PNG (a gradient) made by the image crate.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// What the test puts in EXIF: a GPS position a client must never get back.
pub const GPS_MARKER: &[u8] = b"GPSLatitude=48.8584N;GPSLongitude=2.2945E";

/// `png(w, h)` with an `eXIf` chunk and a `tEXt` comment carrying [`GPS_MARKER`],
/// inserted right after IHDR.
pub fn png_with_gps(w: u32, h: u32) -> Vec<u8> {
    let plain = png(w, h);
    let ihdr_end = 8 + 8 + 13 + 4;
    let mut exif = b"MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend_from_slice(GPS_MARKER);
    let mut text = b"Comment\0".to_vec();
    text.extend_from_slice(GPS_MARKER);
    let mut out = plain[..ihdr_end].to_vec();
    out.extend(png_chunk(b"eXIf", &exif));
    out.extend(png_chunk(b"tEXt", &text));
    out.extend_from_slice(&plain[ihdr_end..]);
    out
}

/// A `w × h` JPEG with an APP1 `Exif` segment carrying [`GPS_MARKER`] after SOI.
pub fn jpeg_with_gps(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 64])
    });
    let mut plain = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut plain),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let mut payload = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    payload.extend_from_slice(GPS_MARKER);
    let len = (payload.len() + 2) as u16;
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// A PNG of a few dozen bytes declaring `w × h` pixels (a decompression bomb).
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    // A zlib stream of zeros would inflate to w*h*3 bytes; a stub is enough to be refused.
    out.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
