//! `fanout`: N WebSocket connections (one account each) in rooms of `room_size` members.
//! One sender per room posts messages over HTTP at a fixed total rate (open loop); every
//! member's socket receives each one. Measures deliveries/s, send→receive latency
//! (the body carries the send time), lost deliveries, and the server's RSS per idle socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::ingest::chat_env;
use crate::Cli;
use crate::api::{self, Account};
use crate::procstat::{self, CpuMeter};
use crate::stats::{Check, Latencies, Report, Row};
use crate::system::System;
use crate::ws;

const SHARDS: usize = 64;
const MARKER: &str = "fo:";

/// Accounts grouped into public rooms: the first member of each room owns it.
pub struct Rooms {
    pub accounts: Vec<Account>,
    /// Per room: id and the indices of its members in `accounts`.
    pub rooms: Vec<(String, Vec<usize>)>,
}

pub async fn setup_rooms(
    system: &System,
    n: usize,
    room_size: usize,
    prefix: &str,
) -> anyhow::Result<Rooms> {
    let http = api::client()?;
    let auth = System::url(system.ports.auth);
    let chat = System::url(system.ports.chat);
    let accounts = api::register_many(&http, &auth, prefix, n, 2 * procstat::cores()).await?;
    let room_size = room_size.max(1);
    let mut rooms = Vec::new();
    let mut joins = Vec::new();
    for (r, start) in (0..n).step_by(room_size).enumerate() {
        let members: Vec<usize> = (start..(start + room_size).min(n)).collect();
        let id = api::create_room(
            &http,
            &chat,
            &accounts[start].token,
            &format!("bench room {r}"),
        )
        .await?;
        for &m in &members[1..] {
            joins.push((accounts[m].token.clone(), id.clone()));
        }
        rooms.push((id, members));
    }
    api::join_all(&http, &chat, joins, 32).await?;
    Ok(Rooms { accounts, rooms })
}

/// Connects every account's socket, `concurrency` handshakes at a time. Each socket sends
/// a `ping` and waits for the `pong`: the server has then finished setting the connection
/// up (subscriptions included) — API.md promises nothing more specific.
pub async fn connect_all(
    server: std::net::SocketAddr,
    accounts: &[Account],
    concurrency: usize,
) -> anyhow::Result<Vec<ws::Socket>> {
    let bar = crate::progress::counted("connecting sockets", accounts.len() as u64);
    let results: Vec<anyhow::Result<ws::Socket>> = futures::stream::iter(accounts.iter().cloned())
        .map(|a| {
            let bar = bar.clone();
            async move {
                let mut sock = ws::connect(server, &a.token).await?;
                ws::ping_pong(&mut sock, Duration::from_secs(30)).await?;
                bar.inc(1);
                Ok(sock)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.into_iter().collect()
}

struct Shared {
    base: Instant,
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries (of any benchmark message) received while the window was open.
    received_in_window: AtomicU64,
    /// When the last delivery of a message sent in the window arrived.
    last_receive_ns: AtomicU64,
    duplicates: AtomicU64,
    total_frames: AtomicU64,
    shards: Vec<Mutex<Latencies>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

async fn read_socket(mut sock: ws::Socket, index: usize, shared: Arc<Shared>) {
    let mut last_seq = 0i64;
    while let Some(msg) = sock.next().await {
        let Ok(Message::Text(text)) = msg else {
            if msg.is_err() {
                break;
            }
            continue;
        };
        shared.total_frames.fetch_add(1, Ordering::Relaxed);
        if !ws::is_type(&text, "event") {
            continue;
        }
        let Some(sent_ns) = ws::marked_number(&text, MARKER) else {
            continue;
        };
        let seq = ws::int_field(&text, "seq").unwrap_or(0);
        if seq <= last_seq {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        last_seq = seq;
        let now = shared.now_ns();
        let (from, to) = (
            shared.window_start_ns.load(Ordering::Relaxed),
            shared.window_end_ns.load(Ordering::Relaxed),
        );
        if now >= from && now < to {
            shared.received_in_window.fetch_add(1, Ordering::Relaxed);
        }
        if sent_ns >= from && sent_ns < to {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            shared.last_receive_ns.fetch_max(now, Ordering::Relaxed);
            // Sharded so that sockets rarely wait on each other's lock.
            if let Ok(mut shard) = shared.shards[index % SHARDS].lock() {
                shard.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
            }
        }
    }
}

pub async fn run(cli: &Cli, nofile: u64) -> anyhow::Result<Report> {
    let n = cli.connections.max(1);
    anyhow::ensure!(
        nofile >= n as u64 + 256,
        "{n} connections need more open files than the limit {nofile} allows (raise `ulimit -Hn`)"
    );
    let room_size = cli.room_size.clamp(1, n);
    let system = System::start(&cli.system_options(), &chat_env()).await?;
    let pid = system.pid();
    let backend = system.backend;
    let setup_started = Instant::now();
    let rooms = setup_rooms(&system, n, room_size, &format!("fo{}_", api::run_tag())).await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = procstat::rss_kib(&[pid]);
    let connect_started = Instant::now();
    let sockets = connect_all(System::addr(system.ports.chat), &rooms.accounts, 256).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        window_start_ns: AtomicU64::new(u64::MAX),
        window_end_ns: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        received_in_window: AtomicU64::new(0),
        last_receive_ns: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        total_frames: AtomicU64::new(0),
        shards: (0..SHARDS).map(|_| Mutex::new(Latencies::new())).collect(),
    });
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(read_socket(s, i, shared.clone())))
        .collect();
    // Idle sockets: let allocations settle, then take the server's RSS.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_meter = CpuMeter::start(&[pid]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_usage = idle_meter.finish();
    let rss_idle = procstat::rss_kib(&[pid]);
    let per_conn_kib = rss_idle.saturating_sub(rss_before) as f64 / n as f64;

    // Open-loop senders: one per room (its owner), a new task per message so a slow
    // answer never delays the next send.
    let room_count = rooms.rooms.len();
    let per_room_interval = Duration::from_secs_f64(room_count as f64 / cli.rate.max(0.001));
    let start_ns = shared.now_ns() + cli.warmup().as_nanos() as u64;
    let end_ns = start_ns + cli.duration().as_nanos() as u64;
    shared.window_start_ns.store(start_ns, Ordering::Relaxed);
    shared.window_end_ns.store(end_ns, Ordering::Relaxed);
    let sent_in_window = Arc::new(
        (0..room_count)
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    let send_errors = Arc::new(AtomicU64::new(0));
    let first_send_error = Arc::new(Mutex::new(None::<String>));
    let send_lat = Arc::new(Mutex::new(Latencies::new()));
    let http = api::client()?;
    let chat_url = System::url(system.ports.chat);
    let bar = crate::progress::timed("fan-out", cli.warmup() + cli.duration());
    let meter_pid = pid;
    let warmup = cli.warmup();
    let profile = cli.profile.then(|| cli.duration());
    let meter = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let perf = profile.map(|duration| {
            tokio::spawn(
                async move { crate::profile::record("fan-out", meter_pid, duration).await },
            )
        });
        (
            CpuMeter::start(&[meter_pid]),
            CpuMeter::start_exact(vec![std::process::id()]),
            perf,
        )
    });
    let mut senders = Vec::new();
    for (r, (room_id, members)) in rooms.rooms.iter().enumerate() {
        let owner = rooms.accounts[members[0]].token.clone();
        let (room_id, http, chat_url, shared) = (
            room_id.clone(),
            http.clone(),
            chat_url.clone(),
            shared.clone(),
        );
        let (sent, errors, first_error, send_lat) = (
            sent_in_window.clone(),
            send_errors.clone(),
            first_send_error.clone(),
            send_lat.clone(),
        );
        let offset = per_room_interval.mul_f64(r as f64 / room_count as f64);
        senders.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, per_room_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut posts = Vec::new();
            loop {
                tick.tick().await;
                let sent_ns = shared.now_ns();
                if sent_ns >= end_ns {
                    break;
                }
                let (http, chat_url, owner, room_id) = (
                    http.clone(),
                    chat_url.clone(),
                    owner.clone(),
                    room_id.clone(),
                );
                let (sent, errors, first_error, send_lat) = (
                    sent.clone(),
                    errors.clone(),
                    first_error.clone(),
                    send_lat.clone(),
                );
                posts.push(tokio::spawn(async move {
                    let began = Instant::now();
                    let body = format!("{MARKER}{sent_ns}");
                    let result = api::post_message(&http, &chat_url, &owner, &room_id, &body).await;
                    let in_window = sent_ns >= start_ns && sent_ns < end_ns;
                    match result {
                        Ok(_) if in_window => {
                            sent[r].fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut l) = send_lat.lock() {
                                l.record(began.elapsed());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if in_window {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                    }
                }));
            }
            for p in posts {
                let _ = p.await;
            }
        }));
    }
    let progress = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = shared.delivered.load(Ordering::Relaxed);
                let since_start = shared
                    .now_ns()
                    .saturating_sub(start_ns.saturating_sub(warmup.as_nanos() as u64));
                bar.set_position(since_start / 1_000_000);
                bar.set_message(format!("{:.0} deliveries/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    };
    for s in senders {
        let _ = s.await;
    }
    let (usage, bench_cpu) = match meter.await {
        Ok((server, bench, perf)) => {
            let usage = (server.finish(), Some(bench.finish().cpu_percent));
            if let Some(perf) = perf {
                let _ = perf.await;
            }
            usage
        }
        Err(_) => (Default::default(), None),
    };
    // Let in-flight deliveries arrive: wait until the count stops moving (at most 10 s).
    let mut last = shared.delivered.load(Ordering::Relaxed);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    progress.abort();
    bar.finish_and_clear();
    for r in &readers {
        r.abort();
    }
    system.stop().await;

    let mut lat = Latencies::new();
    for s in &shared.shards {
        if let Ok(s) = s.lock() {
            lat.merge(&s);
        }
    }
    let expected: u64 = rooms
        .rooms
        .iter()
        .enumerate()
        .map(|(r, (_, members))| sent_in_window[r].load(Ordering::Relaxed) * members.len() as u64)
        .sum();
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let missing = expected.saturating_sub(delivered);
    let secs = cli.duration().as_secs_f64();
    let mut deliveries = Row::measured(
        "deliveries (send → receive)",
        "delivery",
        delivered,
        missing,
        cli.duration(),
        &lat,
    )
    .with_server(usage);
    deliveries.bench_cpu_percent = bench_cpu;
    // What the server sustained: deliveries that arrived while the window was open. (When it
    // falls behind, messages sent in the window keep arriving long after it closed.)
    let received_in_window = shared.received_in_window.load(Ordering::Relaxed);
    deliveries.throughput = received_in_window as f64 / cli.duration().as_secs_f64();
    let last_after = shared
        .last_receive_ns
        .load(Ordering::Relaxed)
        .saturating_sub(end_ns) as f64
        / 1e9;
    deliveries.note = format!(
        "throughput = deliveries received during the window; count, errors and latency = deliveries of the messages sent in it ({expected} expected; the last arrived {last_after:.1} s after the window closed)"
    );
    let sent_total: u64 = sent_in_window
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum();
    let send_lat = send_lat.lock().map(|l| l.summary()).unwrap_or_default();
    let mut sends = Row {
        name: "sends (POST …/messages → 201)".into(),
        ok: true,
        requests: sent_total,
        errors: send_errors.load(Ordering::Relaxed),
        seconds: secs,
        throughput: sent_total as f64 / secs,
        unit: "msg".into(),
        latency: send_lat,
        ..Row::default()
    };
    if let Ok(Some(e)) = first_send_error.lock().map(|f| f.clone()) {
        sends.note = format!("first error: {e}");
    }
    let mut report = Report {
        scenario: "fanout".into(),
        command: Cli::command_line(),
        config: vec![
            ("backend".into(), backend.into()),
            ("connections".into(), n.to_string()),
            (
                "rooms × members".into(),
                format!("{room_count} × {room_size}"),
            ),
            (
                "offered rate".into(),
                format!(
                    "{} msg/s = {:.0} deliveries/s",
                    cli.rate,
                    cli.rate * room_size as f64
                ),
            ),
            (
                "duration".into(),
                format!("{} s (+{} s warm-up)", cli.duration, cli.warmup),
            ),
        ],
        tables: vec![("Fan-out".into(), vec![deliveries.clone(), sends])],
        ..Report::default()
    };
    report.facts = vec![
        (
            "setup (accounts, rooms, joins)".into(),
            format!("{setup_secs:.1} s"),
        ),
        (
            "connecting all sockets".into(),
            format!(
                "{connect_secs:.1} s ({:.0}/s)",
                n as f64 / connect_secs.max(1e-9)
            ),
        ),
        (
            "server RSS before / with idle sockets".into(),
            format!(
                "{:.1} MiB / {:.1} MiB",
                rss_before as f64 / 1024.0,
                rss_idle as f64 / 1024.0
            ),
        ),
        (
            "RSS per idle connection".into(),
            format!("{per_conn_kib:.1} KiB"),
        ),
        (
            "server CPU with all sockets idle".into(),
            format!("{:.1}%", idle_usage.cpu_percent),
        ),
        (
            "duplicate deliveries dropped by clients".into(),
            shared.duplicates.load(Ordering::Relaxed).to_string(),
        ),
    ];
    report.checks = vec![
        Check::new(
            "≥ 250,000 deliveries/s",
            format!("{:.0}/s", deliveries.throughput),
            Some(deliveries.throughput >= 250_000.0),
        ),
        Check::new(
            "send → receive p99 ≤ 50 ms",
            format!("{:.1} ms", deliveries.latency.p99_ms),
            Some(delivered > 0 && deliveries.latency.p99_ms <= 50.0),
        ),
        Check::new(
            "≤ 20 KiB RSS per idle connection",
            format!("{per_conn_kib:.1} KiB"),
            Some(per_conn_kib <= 20.0),
        ),
    ];
    report.notes.push(format!(
        "Deliveries/s cannot exceed the offered rate × room size; raise --rate to look for the ceiling. All {n} client sockets live in the bench process on the same {} cores as the server, so the client's frame handling competes with the server for CPU.",
        procstat::cores()
    ));
    Ok(report)
}
