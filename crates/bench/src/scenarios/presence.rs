//! `presence`: N connected users (one account and one socket each), each subscribed to the
//! presence of `watch` others (every user is watched by exactly `watch` subscribers), while
//! `churn` users per second disconnect and, one second later, reconnect (and subscribe
//! again, as a client would). The server runs with a presence grace period of 0, so every
//! disconnect is an `offline` change and every reconnect an `online` change.
//!
//! Measured per change and watcher: from the moment the bench sends the Close frame
//! (offline) or starts the TCP connect of the new socket (online) to the moment a
//! watcher's socket reads the `presence` frame — the whole path: socket close/handshake,
//! local tracker, store, subscriber index, hub inbox, socket. The first `watch` frames
//! after a (re)subscribe are the current statuses, not changes, and are not counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::Cli;
use crate::api::{self, Account};
use crate::procstat::{self, CpuMeter};
use crate::stats::{Check, Latencies, Report, Row};
use crate::system::{Env, System};
use crate::ws;

const SHARDS: usize = 64;
/// How long a churned user stays away before reconnecting: long enough that its offline
/// change is out before it comes back (grace period 0), short enough that the users
/// away at any time are few (churn × 1 s).
const AWAY: Duration = Duration::from_secs(1);
/// After the window, time for its last changes to arrive.
const DRAIN: Duration = Duration::from_secs(3);
const TARGET_P99_MS: f64 = 1000.0;

struct Shared {
    base: Instant,
    server: std::net::SocketAddr,
    /// Subscriptions per socket (= initial frames after each subscribe).
    watch: usize,
    ids: HashMap<String, usize>,
    /// Per user: when the bench closed its socket / started reconnecting it (ns from base).
    off_ns: Vec<AtomicU64>,
    on_ns: Vec<AtomicU64>,
    start_ns: AtomicU64,
    end_ns: AtomicU64,
    /// Cleared before the bench closes every socket at the end (those offline frames are
    /// not churn).
    measuring: std::sync::atomic::AtomicBool,
    /// Sockets that got all their initial frames.
    ready: AtomicU64,
    frames: AtomicU64,
    /// Per shard: (offline, online) latencies of changes made in the window.
    shards: Vec<Mutex<(Latencies, Latencies)>>,
    session_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    fn in_window(&self, t: u64) -> bool {
        t != 0
            && t >= self.start_ns.load(Ordering::Relaxed)
            && t < self.end_ns.load(Ordering::Relaxed)
    }
    fn error(&self, e: anyhow::Error) {
        self.session_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock()
            && f.is_none()
        {
            *f = Some(format!("{e:#}"));
        }
    }
}

/// The `watch` users that user `i` of `n` subscribes to: `i + 1 + k·(n / watch)`, so each
/// user is watched by exactly `watch` others and nobody watches itself.
fn targets(i: usize, n: usize, watch: usize) -> Vec<usize> {
    let step = (n / watch.max(1)).max(1);
    (0..watch.min(n - 1))
        .map(|k| (i + 1 + k * step) % n)
        .collect()
}

/// One socket of user `i`: subscribes, then reads presence frames until `stop`, when it
/// sends a Close frame.
async fn session(
    i: usize,
    token: String,
    subscribe: Arc<String>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) {
    let permit = match &gate {
        Some(g) => g.clone().acquire_owned().await.ok(),
        None => None,
    };
    let mut sock = match ws::connect(shared.server, &token).await {
        Ok(s) => s,
        Err(e) => return shared.error(e),
    };
    if let Err(e) = sock.send(Message::text(subscribe.as_str())).await {
        return shared.error(e.into());
    }
    let mut initial = shared.watch;
    let mut permit = permit;
    loop {
        let msg = tokio::select! {
            _ = &mut stop => {
                let _ = sock.close(None).await;
                return;
            }
            m = sock.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return shared.error(e.into()),
            None => return shared.error(anyhow::anyhow!("socket {i} closed by the server")),
        };
        if !ws::is_type(&text, "presence") {
            continue;
        }
        let now = shared.now_ns();
        shared.frames.fetch_add(1, Ordering::Relaxed);
        if initial > 0 {
            initial -= 1;
            if initial == 0 {
                shared.ready.fetch_add(1, Ordering::Relaxed);
                permit.take();
            }
            continue;
        }
        let Some(user) = ws::str_field(&text, "user_id").and_then(|u| shared.ids.get(u)) else {
            continue;
        };
        let (offline, t0) = match ws::str_field(&text, "status") {
            Some("offline") => (true, shared.off_ns[*user].load(Ordering::Relaxed)),
            Some("online") => (false, shared.on_ns[*user].load(Ordering::Relaxed)),
            _ => continue,
        };
        if !shared.in_window(t0) || !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let lat = Duration::from_nanos(now.saturating_sub(t0));
        if let Ok(mut s) = shared.shards[i % SHARDS].lock() {
            if offline {
                s.0.record(lat);
            } else {
                s.1.record(lat);
            }
        }
    }
}

fn subscribe_frame(i: usize, accounts: &[Account], watch: usize) -> Arc<String> {
    let ids: Vec<&str> = targets(i, accounts.len(), watch)
        .into_iter()
        .map(|t| accounts[t].id.as_str())
        .collect();
    Arc::new(serde_json::json!({"type": "presence.subscribe", "user_ids": ids}).to_string())
}

pub async fn run(cli: &Cli, nofile: u64) -> anyhow::Result<Report> {
    let n = cli.connections.max(2);
    let watch = cli.watch.clamp(1, n - 1);
    let churn = cli.churn.max(0.1);
    anyhow::ensure!(
        nofile >= n as u64 + 512,
        "{n} connections need more open files than the limit {nofile} allows (raise `ulimit -Hn`)"
    );
    anyhow::ensure!(
        (churn * AWAY.as_secs_f64()) < n as f64 / 2.0,
        "--churn {churn}/s keeps too many of the {n} users away at once"
    );
    // Grace period 0: a disconnect is an offline change at once (the bench measures the
    // change's delivery, not the grace period); raised send limits are irrelevant here.
    // With --redis-url, keys of this run only (a shared Redis may hold others').
    let env: Env = vec![
        ("INTELLICOLAB_CHAT__PRESENCE_GRACE_MS".into(), "0".into()),
        (
            "INTELLICOLAB_CHAT__PRESENCE_PREFIX".into(),
            format!("bench:presence:{}", api::run_tag()),
        ),
    ];
    let system = System::start(&cli.system_options(), &env).await?;
    let pid = system.pid();
    let backend = system.backend;
    let http = api::client()?;
    let setup_started = Instant::now();
    let accounts = api::register_many(
        &http,
        &System::url(system.ports.auth),
        &format!("pr{}_", api::run_tag()),
        n,
        2 * procstat::cores(),
    )
    .await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    anyhow::ensure!(
        accounts.iter().all(|a| !a.id.is_empty()),
        "the register answer carries no user.id"
    );
    let server = System::addr(system.ports.chat);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        server,
        watch,
        ids: accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect(),
        off_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        on_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        start_ns: AtomicU64::new(u64::MAX),
        end_ns: AtomicU64::new(0),
        measuring: std::sync::atomic::AtomicBool::new(true),
        ready: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        shards: (0..SHARDS)
            .map(|_| Mutex::new((Latencies::new(), Latencies::new())))
            .collect(),
        session_errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let frames: Vec<Arc<String>> = (0..n)
        .map(|i| subscribe_frame(i, &accounts, watch))
        .collect();
    // Per user: what closes its current socket.
    let stops: Vec<Mutex<Option<oneshot::Sender<()>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let stops = Arc::new(stops);

    // Everyone connects and subscribes (256 at a time, each until its initial frames).
    let connect_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for (i, a) in accounts.iter().enumerate() {
        let (tx, stop) = oneshot::channel();
        if let Ok(mut s) = stops[i].lock() {
            *s = Some(tx);
        }
        tokio::spawn(session(
            i,
            a.token.clone(),
            frames[i].clone(),
            shared.clone(),
            stop,
            Some(gate.clone()),
        ));
    }
    let bar = crate::progress::counted("connecting and subscribing", n as u64);
    loop {
        let ready = shared.ready.load(Ordering::Relaxed);
        bar.set_position(ready);
        if ready >= n as u64 {
            break;
        }
        anyhow::ensure!(
            connect_started.elapsed() < Duration::from_secs(300),
            "only {ready} of {n} sockets subscribed after 300 s (first error: {:?})",
            shared.first_error.lock().ok().and_then(|f| f.clone())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let initial_frames = shared.frames.load(Ordering::Relaxed);

    // Idle: every socket subscribed, nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_meter = CpuMeter::start(&[pid]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_usage = idle_meter.finish();
    let rss_idle = procstat::rss_kib(&[pid]);

    // Churn: `churn` users per second leave and come back AWAY later, in an order that
    // spreads them over the population (a stride coprime with n).
    let warmup = cli.warmup();
    let start_ns = shared.now_ns() + warmup.as_nanos() as u64;
    let end_ns = start_ns + cli.duration().as_nanos() as u64;
    shared.end_ns.store(end_ns, Ordering::Relaxed);
    shared.start_ns.store(start_ns, Ordering::Relaxed);
    let label = format!("presence churn {churn}/s");
    let meter = super::Meter::start(cli, &label, &[pid], warmup);
    let frames_at_start = Arc::new(AtomicU64::new(0));
    {
        let (shared, fas) = (shared.clone(), frames_at_start.clone());
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            fas.store(shared.frames.load(Ordering::Relaxed), Ordering::Relaxed);
        });
    }
    let bar = crate::progress::timed(&label, warmup + cli.duration());
    let stride = (1..n)
        .map(|s| (s * 7919) % n)
        .find(|s| *s > 1 && gcd(*s, n) == 1)
        .unwrap_or(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / churn));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut transitions_in_window, mut k) = (0u64, 0usize);
    let mut away_until: Vec<Option<Instant>> = vec![None; n];
    loop {
        tick.tick().await;
        let now = shared.now_ns();
        if now >= end_ns {
            break;
        }
        let mut u = (k * stride) % n;
        k += 1;
        // Never churn a user that is still away (only with tiny populations).
        if away_until[u].is_some_and(|t| t > Instant::now()) {
            u = (k * stride) % n;
            k += 1;
        }
        away_until[u] = Some(Instant::now() + AWAY + Duration::from_millis(500));
        shared.off_ns[u].store(now, Ordering::Relaxed);
        if shared.in_window(now) {
            transitions_in_window += 1;
        }
        if let Some(stop) = stops[u].lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
        let (shared, stops, token, frame) = (
            shared.clone(),
            stops.clone(),
            accounts[u].token.clone(),
            frames[u].clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(AWAY).await;
            let (tx, stop) = oneshot::channel();
            if let Ok(mut s) = stops[u].lock() {
                *s = Some(tx);
            }
            let t = shared.now_ns();
            shared.on_ns[u].store(t, Ordering::Relaxed);
            session(u, token, frame, shared, stop, None).await;
        });
    }
    let usage = meter.finish().await;
    let change_frames_window = shared
        .frames
        .load(Ordering::Relaxed)
        .saturating_sub(frames_at_start.load(Ordering::Relaxed));
    // Reconnects of users who left near the end, and the last changes, still arrive.
    tokio::time::sleep(AWAY + DRAIN).await;
    bar.finish_and_clear();
    shared.measuring.store(false, Ordering::Relaxed);
    for s in stops.iter() {
        if let Some(stop) = s.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.stop().await;

    let (mut offline, mut online) = (Latencies::new(), Latencies::new());
    for s in &shared.shards {
        if let Ok(s) = s.lock() {
            offline.merge(&s.0);
            online.merge(&s.1);
        }
    }
    let mut all = Latencies::new();
    all.merge(&offline);
    all.merge(&online);
    let secs = cli.duration();
    let nominal = transitions_in_window * watch as u64;
    let mut rows = vec![
        Row::measured(
            "offline changes (Close sent → watcher's frame)",
            "frame",
            offline.count(),
            0,
            secs,
            &offline,
        )
        .with_server(usage.server.clone().unwrap_or_default()),
        Row::measured(
            "online changes (connect started → watcher's frame)",
            "frame",
            online.count(),
            0,
            secs,
            &online,
        ),
        Row::measured("all changes", "frame", all.count(), 0, secs, &all),
    ];
    rows[0].bench_cpu_percent = usage.bench_cpu_percent;
    rows[0].note = format!(
        "{transitions_in_window} users left in the window: {nominal} offline frames owed to watchers (fewer when a watcher was itself away)"
    );
    let errors = shared.session_errors.load(Ordering::Relaxed);
    let p99 = all.percentile_ms(0.99);
    let mut report = Report {
        scenario: "presence".into(),
        command: Cli::command_line(),
        config: vec![
            ("backend".into(), backend.into()),
            ("connected users".into(), n.to_string()),
            ("subscriptions per user".into(), watch.to_string()),
            (
                "churn".into(),
                format!(
                    "{churn} disconnects/s, each followed {} s later by a reconnect and a new subscribe",
                    AWAY.as_secs_f64()
                ),
            ),
            ("presence grace period".into(), "0 ms".into()),
            (
                "presence store".into(),
                if cli.redis_url.is_some() {
                    "Redis (one node)".into()
                } else {
                    "in-process".into()
                },
            ),
            (
                "duration".into(),
                format!("{} s (+{} s warm-up)", cli.duration, cli.warmup),
            ),
        ],
        tables: vec![("Presence changes, per watcher".into(), rows)],
        ..Report::default()
    };
    report.facts = vec![
        (
            "registering the accounts".into(),
            format!("{setup_secs:.1} s"),
        ),
        (
            "connecting + subscribing all sockets".into(),
            format!(
                "{connect_secs:.1} s ({initial_frames} presence frames: the initial ones, and changes of users coming online meanwhile)"
            ),
        ),
        (
            "server CPU with all sockets subscribed, no changes".into(),
            format!("{:.1}%", idle_usage.cpu_percent),
        ),
        (
            "server RSS with all sockets subscribed".into(),
            format!("{:.1} MiB", rss_idle as f64 / 1024.0),
        ),
        (
            "presence frames read in the window (changes + initial frames of resubscribes)".into(),
            format!(
                "{change_frames_window} ({:.0}/s)",
                change_frames_window as f64 / secs.as_secs_f64()
            ),
        ),
        ("socket errors".into(), errors.to_string()),
    ];
    if let Some(e) = shared.first_error.lock().ok().and_then(|f| f.clone()) {
        report.facts.push(("first socket error".into(), e));
    }
    report.checks = vec![Check::new(
        "change delivery p99 ≤ 1 s",
        format!("p99 {p99:.1} ms over {} frames", all.count()),
        (all.count() > 0).then_some(p99 <= TARGET_P99_MS),
    )];
    report.notes.push(format!(
        "Latency per watcher and change: offline = from the bench sending the Close frame of the leaving user's socket to a watcher's socket reading the `offline` frame; online = from the start of the returning user's TCP connect (so including the WebSocket handshake and token check) to the `online` frame. Only changes made in the window count; the initial frames of each (re)subscribe ({watch} per reconnect) are not changes and are not counted. All {n} client sockets live in the bench process on the same {} cores as the server.",
        procstat::cores()
    ));
    Ok(report)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everyone_is_watched_by_exactly_watch_others() {
        let (n, watch) = (1000, 100);
        let mut watchers = vec![0usize; n];
        for i in 0..n {
            let t = targets(i, n, watch);
            assert_eq!(t.len(), watch);
            assert!(!t.contains(&i));
            let distinct: std::collections::HashSet<_> = t.iter().collect();
            assert_eq!(distinct.len(), watch);
            for u in t {
                watchers[u] += 1;
            }
        }
        assert!(watchers.iter().all(|w| *w == watch));
        assert_eq!(targets(0, 3, 100), vec![1, 2]);
    }
}
