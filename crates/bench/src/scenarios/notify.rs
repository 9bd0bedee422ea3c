//! `notify` (notifications, issue #17): a room of `--room-size` members (1,000 by
//! default); its owner posts one `@room` message, which notifies the other 999.
//!
//! - Half of them hold a chat WebSocket: the time until each receives
//!   `{"type":"notifications","unread_count":1}` (send → frame).
//! - The other half have no socket (they are offline, so they are pushed to) and a Web
//!   Push subscription at a push service this bench runs on 127.0.0.1: the time until
//!   each push is accepted there (send → request). The push service checks what a real
//!   one checks before accepting: the VAPID JWT (RFC 8292: ES256 signature against the
//!   `k=` key, `aud` = its origin, `exp` within 24 h), `Content-Encoding: aes128gcm`, a
//!   TTL, and a body at least the size of the RFC 8188 header plus a tag. It cannot
//!   decrypt (that needs the subscription's private key, which a browser keeps; the
//!   notifications tests decrypt with one).
//! - Sustained: the owner then posts `--mentions` more `@room` messages back to back (the
//!   push subscriptions deleted first, so the push worker stays idle and the figure is the
//!   inbox path alone); notifications per second = notifications created ÷ time from the
//!   first post to the last row, counted in the notifications database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::fanout::{connect_all, setup_rooms};
use super::ingest::chat_env;
use crate::stats::{Check, Latencies, Report, Row};
use crate::system::{System, SystemOptions};
use crate::{Cli, api, procstat, ws};

/// The target for sustained notifications per second (PostgreSQL).
const TARGET_PER_SEC: f64 = 5_000.0;
/// How often the push worker looks for due notifications in this run (its default is
/// 500 ms; 100 ms keeps the poll from dominating the push latency measured).
const PUSH_POLL_MS: &str = "100";
/// How long deliveries may take before the run gives up on the missing ones.
const DRAIN: Duration = Duration::from_secs(60);

/// The bench's push service: who was pushed to, when, and what failed verification.
#[derive(Clone)]
struct PushService {
    origin: String,
    vapid_key: Arc<Mutex<String>>,
    accepted: Arc<Mutex<HashMap<usize, Instant>>>,
    pushes: Arc<std::sync::atomic::AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl PushService {
    async fn start() -> anyhow::Result<PushService> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let svc = PushService {
            origin: format!("http://{}", listener.local_addr()?),
            vapid_key: Arc::default(),
            accepted: Arc::default(),
            pushes: Arc::default(),
            errors: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/push/{member}", axum::routing::post(receive))
            .with_state(svc.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(svc)
    }
}

/// RFC 8292 as a push service checks it: `vapid t=<JWT>, k=<key>`.
fn verify_vapid(svc: &PushService, authorization: &str) -> Result<(), String> {
    let rest = authorization
        .strip_prefix("vapid ")
        .ok_or("not the vapid scheme")?;
    let (mut t, mut k) = (None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    let expected = svc.vapid_key.lock().map(|k| k.clone()).unwrap_or_default();
    if k != expected {
        return Err("k= is not the service's VAPID key".into());
    }
    let (signed, sig) = t.rsplit_once('.').ok_or("JWT without signature")?;
    let claims = signed.split('.').nth(1).ok_or("JWT without claims")?;
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or("claims are not base64url JSON")?;
    if claims["aud"].as_str() != Some(svc.origin.as_str()) {
        return Err(format!("aud {} is not {}", claims["aud"], svc.origin));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err("exp out of range".into());
    }
    let key = URL_SAFE_NO_PAD.decode(k).map_err(|e| e.to_string())?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| "the JWT's signature does not verify".to_owned())
}

async fn receive(
    axum::extract::State(svc): axum::extract::State<PushService>,
    axum::extract::Path(member): axum::extract::Path<usize>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> http::StatusCode {
    let arrived = Instant::now();
    svc.pushes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let check = verify_vapid(&svc, &header("authorization")).and_then(|()| {
        if header("content-encoding") != "aes128gcm" {
            return Err("Content-Encoding is not aes128gcm".into());
        }
        if !header("ttl").parse::<u64>().is_ok_and(|t| t > 0) {
            return Err("no TTL".into());
        }
        // salt 16 + rs 4 + idlen 1 + key 65 + tag 16 + delimiter 1
        if body.len() < 103 {
            return Err(format!("a {}-byte body cannot be aes128gcm", body.len()));
        }
        Ok(())
    });
    match check {
        Ok(()) => {
            if let Ok(mut a) = svc.accepted.lock() {
                a.entry(member).or_insert(arrived);
            }
            http::StatusCode::CREATED
        }
        Err(e) => {
            if let Ok(mut errors) = svc.errors.lock() {
                errors.push(e);
            }
            http::StatusCode::BAD_REQUEST
        }
    }
}

/// A subscription's public keys: a fresh P-256 point (the private half is not kept:
/// nothing here decrypts) and a 16-byte auth secret.
fn subscription_keys() -> anyhow::Result<(String, String)> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let private = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| anyhow::anyhow!("cannot compute a P-256 public key"))?;
    let mut auth = [0u8; 16];
    rng.fill(&mut auth)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok((
        URL_SAFE_NO_PAD.encode(public.as_ref()),
        URL_SAFE_NO_PAD.encode(auth),
    ))
}

/// Reads a member's socket: when its unread count first reached each value.
async fn watch(
    mut sock: ws::Socket,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (HashMap<i64, Instant>, Option<String>) {
    let mut reached: HashMap<i64, Instant> = HashMap::new();
    let mut error = None;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            m = sock.next() => m,
        };
        match frame {
            Some(Ok(Message::Text(t))) => {
                if ws::is_type(&t, "notifications")
                    && let Some(n) = ws::int_field(&t, "unread_count")
                {
                    reached.entry(n).or_insert_with(Instant::now);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            None => {
                error = Some("closed by the server".into());
                break;
            }
        }
    }
    let _ = futures::SinkExt::close(&mut sock).await;
    (reached, error)
}

/// The notifications database's row count.
async fn created(db: &kit::db::Db) -> i64 {
    let n: Result<i64, _> = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(db.pool())
        .await;
    n.unwrap_or(-1)
}

struct Outcome {
    rows: Vec<Row>,
    facts: Vec<(String, String)>,
    checks: Vec<Check>,
}

async fn one_backend(cli: &Cli, opts: &SystemOptions, nofile: u64) -> anyhow::Result<Outcome> {
    let members = cli.room_size.max(3);
    let others = members - 1;
    // Members 1..=half hold sockets; the rest are offline with a push subscription.
    let with_socket = others / 2;
    let pushed = others - with_socket;
    anyhow::ensure!(
        nofile >= with_socket as u64 + 512,
        "{with_socket} sockets need more open files than the limit {nofile} allows"
    );
    let push = PushService::start().await?;
    let mut env = chat_env();
    env.push((
        "INTELLICOLAB_NOTIFICATIONS__PUSH_HTTP_ORIGINS".into(),
        push.origin.clone(),
    ));
    env.push((
        "INTELLICOLAB_NOTIFICATIONS__PUSH_POLL_MS".into(),
        PUSH_POLL_MS.into(),
    ));
    let system = System::start(opts, &env).await?;
    let backend = system.backend;
    let pid = system.pid();
    let chat = System::url(system.ports.chat);
    let notifications = System::url(system.ports.notifications);
    let http = api::client()?;
    let rooms = setup_rooms(&system, members, members, &format!("nt{}_", api::run_tag())).await?;
    let (room, _) = rooms.rooms.first().context("no room")?.clone();
    let accounts = rooms.accounts;
    let owner = accounts[0].clone();

    let key: serde_json::Value = http
        .get(format!(
            "{notifications}/notifications/push/vapid-public-key"
        ))
        .bearer_auth(&owner.token)
        .send()
        .await?
        .json()
        .await?;
    *push
        .vapid_key
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))? =
        key["key"].as_str().context("no VAPID key")?.to_owned();
    let subscribe = futures::stream::iter(accounts[1 + with_socket..].iter().enumerate())
        .map(|(i, a)| {
            let (http, url) = (http.clone(), format!("{notifications}/notifications/push/subscriptions"));
            let endpoint = format!("{}/push/{}", push.origin, 1 + with_socket + i);
            let token = a.token.clone();
            async move {
                let (p256dh, auth) = subscription_keys()?;
                let resp = http
                    .post(url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}))
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "subscribe: HTTP {}", resp.status());
                let v: serde_json::Value = resp.json().await?;
                Ok::<(String, String), anyhow::Error>((token, v["id"].as_str().unwrap_or_default().to_owned()))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let subscriptions: Vec<(String, String)> =
        subscribe.into_iter().collect::<anyhow::Result<_>>()?;

    let server = System::addr(system.ports.chat);
    let sockets = connect_all(server, &accounts[1..=with_socket], 256).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = sockets
        .into_iter()
        .map(|s| tokio::spawn(watch(s, stop_rx.clone())))
        .collect();

    // One `@room` message: latency to every unread count and every push.
    let meter = procstat::CpuMeter::start(&[pid]);
    let sent = Instant::now();
    api::post_message(&http, &chat, &owner.token, &room, "@room one for everyone").await?;
    let pushes_due = pushed;
    let drain = Instant::now();
    while drain.elapsed() < DRAIN {
        let pushes = push.accepted.lock().map(|a| a.len()).unwrap_or(0);
        if pushes >= pushes_due {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut count_lat = Latencies::new();
    let mut socket_errors = 0u64;
    let mut last_count = Duration::ZERO;
    for w in watchers {
        let (reached, error) = w.await?;
        socket_errors += u64::from(error.is_some());
        if let Some(at) = reached.get(&1) {
            let took = at.duration_since(sent);
            last_count = last_count.max(took);
            count_lat.record(took);
        }
    }
    let mut push_lat = Latencies::new();
    let mut last_push = Duration::ZERO;
    for at in push
        .accepted
        .lock()
        .map(|a| a.values().copied().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let took = at.duration_since(sent);
        last_push = last_push.max(took);
        push_lat.record(took);
    }
    let usage = meter.finish();
    let push_errors = push.errors.lock().map(|e| e.clone()).unwrap_or_default();

    // Sustained: `--mentions` more `@room` messages, the push worker idle.
    for (token, id) in &subscriptions {
        let _ = http
            .delete(format!(
                "{notifications}/notifications/push/subscriptions/{id}"
            ))
            .bearer_auth(token)
            .send()
            .await;
    }
    let db = kit::db::Db::open(
        system.notifications_db.as_deref(),
        system.data_dir(),
        "notifications",
    )
    .await?;
    let before = created(&db).await;
    let mentions = cli.mentions.max(1);
    let expected = (mentions * others) as i64;
    let meter = procstat::CpuMeter::start(&[pid]);
    let bar = crate::progress::counted("notifications", expected as u64);
    let started = Instant::now();
    for i in 0..mentions {
        api::post_message(
            &http,
            &chat,
            &owner.token,
            &room,
            &format!("@room number {i}"),
        )
        .await?;
    }
    let posted = started.elapsed();
    let mut now_created = created(&db).await - before;
    while now_created < expected && started.elapsed() < DRAIN {
        bar.set_position(now_created.max(0) as u64);
        tokio::time::sleep(Duration::from_millis(10)).await;
        now_created = created(&db).await - before;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let sustained_usage = meter.finish();
    db.close().await;
    system.stop().await;

    let per_sec = now_created as f64 / elapsed.as_secs_f64();
    let mut count_row = Row::measured(
        format!("{backend}: unread count over the socket ({with_socket} members)"),
        "frame",
        count_lat.count(),
        (with_socket as u64).saturating_sub(count_lat.count()),
        last_count,
        &count_lat,
    )
    .with_server(usage);
    count_row.note = "latency from the @room POST to the member's `notifications` frame".into();
    let mut push_row = Row::measured(
        format!("{backend}: Web Push accepted ({pushed} offline members)"),
        "push",
        push_lat.count(),
        (pushed as u64).saturating_sub(push_lat.count()),
        last_push,
        &push_lat,
    );
    push_row.note = format!(
        "latency from the @room POST to the push at the push service (poll every {PUSH_POLL_MS} ms, 8 in flight per origin)"
    );
    let mut sustained_row = Row::measured(
        format!("{backend}: notifications created ({mentions} × @room of {members})"),
        "notification",
        now_created.max(0) as u64,
        (expected - now_created).max(0) as u64,
        elapsed,
        &Latencies::new(),
    )
    .with_server(sustained_usage);
    sustained_row.note = format!(
        "from the first POST to the last row; the {mentions} POSTs took {:.2} s",
        posted.as_secs_f64()
    );
    let all_counts = count_lat.count() == with_socket as u64 && socket_errors == 0;
    let all_pushes = push_lat.count() == pushed as u64 && push_errors.is_empty();
    let mut checks = vec![
        Check::new(
            format!("{backend}: every member's unread count and push"),
            format!(
                "{} of {with_socket} counts in {:.0} ms, {} of {pushed} pushes in {:.0} ms",
                count_lat.count(),
                last_count.as_secs_f64() * 1000.0,
                push_lat.count(),
                last_push.as_secs_f64() * 1000.0
            ),
            Some(all_counts && all_pushes),
        ),
        Check::new(
            format!("{backend}: exactly {expected} notifications for {mentions} @room messages"),
            format!("{now_created}"),
            Some(now_created == expected),
        ),
    ];
    if backend == "postgres" {
        checks.push(Check::new(
            format!("{backend}: ≥ {TARGET_PER_SEC:.0} notifications/s sustained"),
            format!("{per_sec:.0}/s"),
            Some(per_sec >= TARGET_PER_SEC),
        ));
    }
    Ok(Outcome {
        rows: vec![count_row, push_row, sustained_row],
        facts: vec![
            (
                format!("{backend}: pushes received / accepted / refused"),
                format!(
                    "{} / {} / {}{}",
                    push.pushes.load(std::sync::atomic::Ordering::Relaxed),
                    push_lat.count(),
                    push_errors.len(),
                    push_errors
                        .first()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                ),
            ),
            (
                format!("{backend}: socket errors"),
                socket_errors.to_string(),
            ),
        ],
        checks,
    })
}

pub async fn run(cli: &Cli, nofile: u64) -> anyhow::Result<Report> {
    let mut backends = vec![SystemOptions {
        database_url: None,
        ..cli.system_options()
    }];
    if cli.database_url.is_some() {
        backends.push(cli.system_options());
    }
    let mut report = Report {
        scenario: "notify".into(),
        command: Cli::command_line(),
        config: vec![
            ("room members".into(), cli.room_size.max(3).to_string()),
            (
                "members with a socket / offline with a push subscription".into(),
                format!(
                    "{} / {}",
                    (cli.room_size.max(3) - 1) / 2,
                    cli.room_size.max(3) - 1 - (cli.room_size.max(3) - 1) / 2
                ),
            ),
            (
                "@room messages for the sustained rate".into(),
                cli.mentions.to_string(),
            ),
            ("push poll interval".into(), format!("{PUSH_POLL_MS} ms")),
        ],
        ..Report::default()
    };
    let mut rows = Vec::new();
    for opts in &backends {
        let out = one_backend(cli, opts, nofile).await?;
        rows.extend(out.rows);
        report.facts.extend(out.facts);
        report.checks.extend(out.checks);
    }
    report
        .tables
        .push(("One @room message, then a burst of them".into(), rows));
    report.notes.push(
        "Everything runs in one `serve all` process on the bench's machine; the push service and the sockets are the bench's.".into(),
    );
    Ok(report)
}
