//! Web Push end to end against a push service written here that does what a real one
//! does: it verifies the VAPID JWT (RFC 8292, ES256, against the service's public key)
//! and DECRYPTS the body (RFC 8291 `aes128gcm`) with the subscription's private key. On
//! SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{App, Msg, User, assert_problem};
use kit::db::Backend;
use reqwest::StatusCode;
use ring::rand::SecureRandom;
use ring::{aead, hkdf};
use serde_json::{Value, json};
use uuid::Uuid;

kit::backend_tests!(
    pushes_are_signed_and_decrypt,
    gone_subscriptions_are_deleted,
    busy_push_services_are_retried,
    retry_after_is_honoured,
    one_slow_push_service_does_not_starve_the_others,
    nothing_pushed_once_read_or_opted_out,
    nothing_pushed_while_online,
    subscription_validation,
);

/// One browser subscription: its static ECDH key and auth secret.
struct Device {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Device {
    fn new() -> Device {
        let rng = ring::rand::SystemRandom::new();
        let mut k = [0u8; 32];
        rng.fill(&mut k).unwrap();
        let mut auth = [0u8; 16];
        rng.fill(&mut auth).unwrap();
        Device {
            secret: p256::SecretKey::from_slice(&k).unwrap(),
            auth,
        }
    }

    fn p256dh(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// RFC 8291 decryption of one `aes128gcm` record.
    fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let expand = |prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]| {
            prk.expand(info, Len(out.len()))
                .and_then(|o| o.fill(out))
                .map_err(|_| "hkdf".to_owned())
        };
        if body.len() < 21 {
            return Err("short body".into());
        }
        let salt = &body[..16];
        let idlen = body[20] as usize;
        let as_public = &body[21..21 + idlen];
        let ciphertext = &body[21 + idlen..];
        let server = p256::PublicKey::from_sec1_bytes(as_public).map_err(|e| e.to_string())?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), server.as_affine());
        let prk_key =
            hkdf::Salt::new(hkdf::HKDF_SHA256, &self.auth).extract(&shared.raw_secret_bytes()[..]);
        let mut ikm = [0u8; 32];
        expand(
            &prk_key,
            &[b"WebPush: info\0", &self.p256dh(), as_public],
            &mut ikm,
        )?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
        let mut cek = [0u8; 16];
        expand(&prk, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
        let mut nonce = [0u8; 12];
        expand(&prk, &[b"Content-Encoding: nonce\0"], &mut nonce)?;
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
        let mut buf = ciphertext.to_vec();
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut buf,
            )
            .map_err(|_| "AES-GCM open failed: not encrypted for this key".to_owned())?;
        // Strip the padding delimiter (0x02 for the last record) and any zero padding.
        let end = plain.iter().rposition(|&b| b != 0).ok_or("no delimiter")?;
        if plain[end] != 2 {
            return Err("bad record delimiter".into());
        }
        Ok(plain[..end].to_vec())
    }
}

#[derive(Clone, Default)]
struct PushService {
    url: String,
    /// The service's VAPID public key (base64url) the JWT must verify against.
    vapid_key: Arc<Mutex<String>>,
    devices: Arc<Mutex<HashMap<String, Arc<Device>>>>,
    /// Statuses to answer per endpoint, then 201.
    script: Arc<Mutex<HashMap<String, VecDeque<u16>>>>,
    /// Decrypted payloads and urgency of accepted pushes per endpoint.
    delivered: Arc<Mutex<Vec<(String, Value, String)>>>,
    /// Requests per endpoint (also refused ones).
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    /// Anything that failed verification.
    errors: Arc<Mutex<Vec<String>>>,
    /// `Retry-After` (seconds) sent with scripted answers.
    retry_after: Arc<Mutex<Option<u64>>>,
    /// When each request arrived, per endpoint.
    arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    /// How long the service takes to answer (a slow push service).
    delay_ms: Arc<AtomicU64>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

/// Counts a request in flight for as long as it lives.
struct InFlight(PushService);

impl InFlight {
    fn enter(svc: &PushService) -> InFlight {
        let now = svc.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        svc.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(svc.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PushService {
    async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut svc = PushService {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..Default::default()
        };
        svc.url = svc.url.clone();
        let app = axum::Router::new()
            .route("/push/{name}", axum::routing::post(receive))
            .with_state(svc.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        svc
    }

    fn device(&self, name: &str) -> (String, Arc<Device>) {
        let d = Arc::new(Device::new());
        self.devices
            .lock()
            .unwrap()
            .insert(name.to_owned(), d.clone());
        (format!("{}/push/{name}", self.url), d)
    }

    fn delivered_to(&self, name: &str) -> Vec<Value> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, v, _)| v.clone())
            .collect()
    }

    async fn wait_delivered(&self, name: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.delivered_to(name);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {n} pushes; errors {:?}",
                got.len(),
                self.errors.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn verify_vapid(svc: &PushService, headers: &HeaderMap) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization")?;
    let rest = auth.strip_prefix("vapid ").ok_or("not the vapid scheme")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (t, k) = (t.ok_or("no t")?, k.ok_or("no k")?);
    if k != *svc.vapid_key.lock().unwrap() {
        return Err("k is not the service's VAPID key".into());
    }
    let parts: Vec<&str> = t.split('.').collect();
    if parts.len() != 3 {
        return Err("JWT not three parts".into());
    }
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[0])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if header["alg"] != "ES256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[1])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if claims["aud"] != svc.url {
        return Err(format!("aud {} is not {}", claims["aud"], svc.url));
    }
    let now = kit::time::now_ms() / 1000;
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err("exp out of range".into());
    }
    if !claims["sub"]
        .as_str()
        .is_some_and(|s| s.starts_with("mailto:") || s.starts_with("https:"))
    {
        return Err("sub".into());
    }
    let key_bytes = URL_SAFE_NO_PAD.decode(k).map_err(|e| e.to_string())?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key_bytes).map_err(|e| e.to_string())?;
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    let sig = p256::ecdsa::Signature::from_slice(&sig_bytes).map_err(|e| e.to_string())?;
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .map_err(|_| "JWT signature does not verify".to_owned())
}

async fn receive(
    State(svc): State<PushService>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let _counted = InFlight::enter(&svc);
    svc.arrivals
        .lock()
        .unwrap()
        .entry(name.clone())
        .or_default()
        .push(Instant::now());
    let delay = svc.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    *svc.attempts
        .lock()
        .unwrap()
        .entry(name.clone())
        .or_default() += 1;
    let scripted = svc
        .script
        .lock()
        .unwrap()
        .get_mut(&name)
        .and_then(|q| q.pop_front());
    if let Some(code) = scripted {
        let status = axum::http::StatusCode::from_u16(code).unwrap();
        return match *svc.retry_after.lock().unwrap() {
            Some(secs) => (status, [("retry-after", secs.to_string())]).into_response(),
            None => status.into_response(),
        };
    }
    let check = (|| {
        verify_vapid(&svc, &headers)?;
        if headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            != Some("aes128gcm")
        {
            return Err("Content-Encoding is not aes128gcm".to_owned());
        }
        let ttl: u64 = headers
            .get("ttl")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or("no TTL")?;
        if ttl == 0 {
            return Err("TTL 0".into());
        }
        let device = svc
            .devices
            .lock()
            .unwrap()
            .get(&name)
            .cloned()
            .ok_or("unknown device")?;
        let plain = device.decrypt(&body)?;
        let payload: Value = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        let urgency = headers
            .get("urgency")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok((payload, urgency))
    })();
    match check {
        Ok((payload, urgency)) => {
            svc.delivered.lock().unwrap().push((name, payload, urgency));
            axum::http::StatusCode::CREATED.into_response()
        }
        Err(e) => {
            svc.errors.lock().unwrap().push(e);
            axum::http::StatusCode::BAD_REQUEST.into_response()
        }
    }
}

async fn setup(backend: Backend, test: &str, poll_ms: u64) -> Option<(App, PushService)> {
    let (app, mut services) = setup_many(backend, test, poll_ms, 1, 8).await?;
    Some((app, services.remove(0)))
}

/// `n` push services on their own origins, at most `per_origin` requests to each at once.
async fn setup_many(
    backend: Backend,
    test: &str,
    poll_ms: u64,
    n: usize,
    per_origin: u64,
) -> Option<(App, Vec<PushService>)> {
    let mut services = Vec::new();
    for _ in 0..n {
        services.push(PushService::start().await);
    }
    let origins: Vec<String> = services.iter().map(|s| s.url.clone()).collect();
    let app = App::start_with(backend, test, |c| {
        c.push_http_origins = origins;
        c.push_poll_ms = poll_ms;
        c.push_concurrency_per_origin = per_origin;
    })
    .await?;
    let u = app.user("keyreader");
    let (s, body) = app.get(&u, "/notifications/push/vapid-public-key").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let key = body["key"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(key).unwrap().len(), 65);
    for svc in &services {
        *svc.vapid_key.lock().unwrap() = key.to_owned();
    }
    Some((app, services))
}

async fn subscribe(app: &App, svc: &PushService, user: &User, name: &str) -> String {
    let (endpoint, device) = svc.device(name);
    let (s, body) = app
        .post(
            user,
            "/notifications/push/subscriptions",
            json!({"endpoint": endpoint, "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(device.p256dh()),
                "auth": URL_SAFE_NO_PAD.encode(device.auth),
            }}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn pushes_are_signed_and_decrypt(backend: Backend) {
    let Some((app, svc)) = setup(backend, "pushes_are_signed_and_decrypt", 100).await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    subscribe(&app, &svc, &b, "b-laptop").await;
    subscribe(&app, &svc, &b, "b-phone").await;
    let started = Instant::now();
    app.apply(&Msg::dm(Uuid::now_v7(), 1, &a, &b).created())
        .await;
    let inbox = app.inbox(&b).await;
    for device in ["b-laptop", "b-phone"] {
        let got = svc.wait_delivered(device, 1, Duration::from_secs(10)).await;
        // The payload is the Notification, exactly as the inbox shows it.
        assert_eq!(got, [inbox[0].clone()], "{device}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        svc.errors.lock().unwrap().is_empty(),
        "{:?}",
        svc.errors.lock().unwrap()
    );
    let urgencies: Vec<String> = svc
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.2.clone())
        .collect();
    assert_eq!(urgencies, ["high", "high"]);
    // Sent once: later rounds do not push it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(svc.delivered_to("b-laptop").len(), 1);
    app.stop().await;
}

async fn gone_subscriptions_are_deleted(backend: Backend) {
    let Some((app, svc)) = setup(backend, "gone_subscriptions_are_deleted", 100).await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    let gone = subscribe(&app, &svc, &b, "gone").await;
    let missing = subscribe(&app, &svc, &b, "missing").await;
    svc.script
        .lock()
        .unwrap()
        .insert("gone".into(), VecDeque::from([410]));
    svc.script
        .lock()
        .unwrap()
        .insert("missing".into(), VecDeque::from([404]));
    app.apply(&Msg::dm(Uuid::now_v7(), 1, &a, &b).created())
        .await;
    // Wait until both were tried, then until the service dropped them: the owner's
    // DELETE then finds nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in [gone, missing] {
        let path = format!("/notifications/push/subscriptions/{id}");
        loop {
            let tried = svc.attempts.lock().unwrap().len() == 2;
            if tried {
                // The row is deleted right after the answer; give it a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (s, body) = app
                    .send(reqwest::Method::DELETE, Some(&b.token), &path, None)
                    .await;
                assert_problem(s, &body, StatusCode::NOT_FOUND, "subscription_not_found");
                break;
            }
            assert!(Instant::now() < deadline, "never tried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // No more attempts go to them.
    app.apply(&Msg::dm(Uuid::now_v7(), 2, &a, &b).created())
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(svc.attempts.lock().unwrap().get("gone"), Some(&1));
    assert_eq!(svc.attempts.lock().unwrap().get("missing"), Some(&1));
    app.stop().await;
}

async fn busy_push_services_are_retried(backend: Backend) {
    let Some((app, svc)) = setup(backend, "busy_push_services_are_retried", 100).await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    subscribe(&app, &svc, &b, "busy").await;
    svc.script
        .lock()
        .unwrap()
        .insert("busy".into(), VecDeque::from([429, 503]));
    app.apply(&Msg::dm(Uuid::now_v7(), 1, &a, &b).created())
        .await;
    // 429, then 503 after 1 s, then accepted after 2 s more.
    let got = svc.wait_delivered("busy", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(svc.attempts.lock().unwrap().get("busy"), Some(&3));
    app.stop().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let Some((app, svc)) = setup(backend, "retry_after_is_honoured", 100).await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    subscribe(&app, &svc, &b, "throttled").await;
    // 429 with `Retry-After: 3`: the back-off alone would try again after 1 s.
    *svc.retry_after.lock().unwrap() = Some(3);
    svc.script
        .lock()
        .unwrap()
        .insert("throttled".into(), VecDeque::from([429]));
    app.apply(&Msg::dm(Uuid::now_v7(), 1, &a, &b).created())
        .await;
    svc.wait_delivered("throttled", 1, Duration::from_secs(10))
        .await;
    let arrivals = svc.arrivals.lock().unwrap()["throttled"].clone();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(gap >= Duration::from_secs(3), "tried again after {gap:?}");
    app.stop().await;
}

async fn one_slow_push_service_does_not_starve_the_others(backend: Backend) {
    // At most 2 requests at once per push service; `slow` takes 600 ms an answer.
    let Some((app, services)) =
        setup_many(backend, "one_slow_push_service_does_not_starve", 100, 2, 2).await
    else {
        return;
    };
    let (slow, fast) = (&services[0], &services[1]);
    slow.delay_ms.store(600, Ordering::SeqCst);
    let a = app.user("a");
    let mut slow_users = Vec::new();
    for i in 0..8 {
        let u = app.user(&format!("s{i}"));
        subscribe(&app, slow, &u, &format!("s{i}")).await;
        slow_users.push(u);
    }
    let f = app.user("f");
    subscribe(&app, fast, &f, "f").await;
    let started = Instant::now();
    // One `@room`-like mention of all 9; the slow service's 8 pushes are due first.
    let mut everyone: Vec<&common::User> = slow_users.iter().collect();
    everyone.push(&f);
    app.apply(
        &Msg::channel(Uuid::now_v7(), 1, &a)
            .mention(&everyone)
            .created(),
    )
    .await;
    fast.wait_delivered("f", 1, Duration::from_secs(10)).await;
    let fast_took = started.elapsed();
    for i in 0..8 {
        slow.wait_delivered(&format!("s{i}"), 1, Duration::from_secs(15))
            .await;
    }
    let slow_took = started.elapsed();
    // The fast service got its push while the slow one still had 6 of 8 to answer
    // (8 at 2 at a time × 600 ms ≥ 2.4 s).
    assert!(
        fast_took < Duration::from_millis(1_500),
        "the fast push service waited {fast_took:?}"
    );
    assert!(slow_took >= Duration::from_millis(2_400), "{slow_took:?}");
    // Never more than 2 at once at the slow service, and it did get 2 at once.
    assert_eq!(slow.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(slow.errors.lock().unwrap().is_empty());
    app.stop().await;
}

async fn nothing_pushed_once_read_or_opted_out(backend: Backend) {
    // A slow poll leaves time to read the notification before its push is due.
    let Some((app, svc)) = setup(backend, "nothing_pushed_once_read_or_opted_out", 2_000).await
    else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    subscribe(&app, &svc, &b, "b").await;
    subscribe(&app, &svc, &c, "c").await;
    let (s, _) = app
        .put(&c, "/notifications/preferences", json!({"web_push": false}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // The first round ran at start; the next is 2 s away.
    let room = Uuid::now_v7();
    app.apply(&Msg::channel(room, 1, &a).mention(&[&b, &c]).created())
        .await;
    let (s, _) = app
        .post(&b, "/notifications/read", json!({"all": true}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // A withdrawn one is not pushed either; an unread one is (the control).
    let m = Msg::channel(room, 2, &a).mention(&[&b]);
    app.apply(&m.created()).await;
    app.apply(&m.deleted(3)).await;
    app.apply(&Msg::dm(Uuid::now_v7(), 1, &a, &b).created())
        .await;
    let got = svc.wait_delivered("b", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let got_later = svc.delivered_to("b");
    assert_eq!(got_later.len(), 1, "{got_later:?}");
    assert_eq!(got[0]["kind"], "dm");
    assert!(svc.delivered_to("c").is_empty());
    app.stop().await;
}

async fn nothing_pushed_while_online(backend: Backend) {
    let Some((app, svc)) = setup(backend, "nothing_pushed_while_online", 100).await else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    subscribe(&app, &svc, &b, "b").await;
    subscribe(&app, &svc, &c, "c").await;
    // b has chat open and active; c does not (the control).
    app.chat.online.lock().unwrap().insert(b.id);
    app.apply(
        &Msg::channel(Uuid::now_v7(), 1, &a)
            .mention(&[&b, &c])
            .created(),
    )
    .await;
    svc.wait_delivered("c", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(svc.delivered_to("b").is_empty());
    assert_eq!(svc.attempts.lock().unwrap().get("b"), None);
    // Still in b's inbox, unread: the client shows it.
    assert_eq!(app.unread(&b).await, 1);
    app.stop().await;
}

async fn subscription_validation(backend: Backend) {
    let Some((app, svc)) = setup(backend, "subscription_validation", 100).await else {
        return;
    };
    let (b, c) = (app.user("b"), app.user("c"));
    let d = Device::new();
    let good_keys = json!({"p256dh": URL_SAFE_NO_PAD.encode(d.p256dh()), "auth": URL_SAFE_NO_PAD.encode(d.auth)});
    for (endpoint, keys) in [
        ("http://example.com/push/1".to_owned(), good_keys.clone()),
        ("ftp://example.com/x".to_owned(), good_keys.clone()),
        ("not a url".to_owned(), good_keys.clone()),
        // Addresses inside the deployment (the server would POST there: SSRF).
        ("https://127.0.0.1/push".to_owned(), good_keys.clone()),
        ("https://10.1.2.3:8443/push".to_owned(), good_keys.clone()),
        (
            "https://169.254.169.254/latest".to_owned(),
            good_keys.clone(),
        ),
        ("https://[::1]/push".to_owned(), good_keys.clone()),
        (
            "https://[::ffff:192.168.0.1]/push".to_owned(),
            good_keys.clone(),
        ),
        ("https://[fd00::1]/push".to_owned(), good_keys.clone()),
        ("https://localhost/push".to_owned(), good_keys.clone()),
        ("https://redis/push".to_owned(), good_keys.clone()),
        (
            "https://chat.default.svc.cluster.local/push".to_owned(),
            good_keys.clone(),
        ),
        (
            format!("{}/push/x", svc.url),
            json!({"p256dh": "AAAA", "auth": URL_SAFE_NO_PAD.encode(d.auth)}),
        ),
        (
            format!("{}/push/x", svc.url),
            json!({"p256dh": URL_SAFE_NO_PAD.encode(d.p256dh()), "auth": "AAAA"}),
        ),
    ] {
        let (s, body) = app
            .post(
                &b,
                "/notifications/push/subscriptions",
                json!({"endpoint": endpoint, "keys": keys}),
            )
            .await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    // https endpoints are accepted.
    let (s, body) = app
        .post(
            &b,
            "/notifications/push/subscriptions",
            json!({"endpoint": "https://push.example.com/abc", "keys": good_keys}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    // Only its owner deletes it.
    let path = format!("/notifications/push/subscriptions/{id}");
    let (s, body) = app
        .send(reqwest::Method::DELETE, Some(&c.token), &path, None)
        .await;
    assert_problem(s, &body, StatusCode::NOT_FOUND, "subscription_not_found");
    let (s, _) = app
        .send(reqwest::Method::DELETE, Some(&b.token), &path, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .send(reqwest::Method::DELETE, Some(&b.token), &path, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}
