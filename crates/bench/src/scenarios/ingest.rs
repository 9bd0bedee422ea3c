//! `ingest`: durable messages/s — `senders` accounts, each posting
//! `POST /chat/rooms/{id}/messages` in a closed loop (the 201 arrives only after commit),
//! spread over `rooms` rooms; then the same senders over the chat WebSocket, each keeping
//! up to `ws_window` sends unacknowledged (the `ack` also comes only after commit).
//! On SQLite, and on PostgreSQL when a database URL is given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::Usage;
use crate::api::Account;
use crate::load::{self, LoadResult, Mode};
use crate::stats::{Check, Latencies, Report, Row};
use crate::system::{Env, System, SystemOptions};
use crate::{Cli, api, ws};

/// How long WebSocket senders wait for outstanding acks after the window closed.
const DRAIN: Duration = Duration::from_secs(10);
/// Frames already buffered that are handled before the window is refilled.
const READ_BATCH: usize = 256;

/// The per-user send limit (10/s by default) is raised: a benchmark sender sends as fast
/// as the server acknowledges.
pub fn chat_env() -> Env {
    vec![
        (
            "INTELLICOLAB_CHAT__SEND_RATE_PER_SEC".into(),
            "1000000000".into(),
        ),
        ("INTELLICOLAB_CHAT__SEND_BURST".into(), "1000000000".into()),
    ]
}

/// The HTTP row, then the WebSocket row, for one backend.
async fn one_backend(cli: &Cli, opts: &SystemOptions) -> anyhow::Result<Vec<Row>> {
    let system = System::start(opts, &chat_env()).await?;
    let pid = system.pid();
    let http = api::client()?;
    let auth = System::url(system.ports.auth);
    let chat = System::url(system.ports.chat);
    let senders = cli.senders.max(1);
    let rooms = cli.rooms.clamp(1, senders);
    let accounts =
        api::register_many(&http, &auth, &format!("in{}_", api::run_tag()), senders, 4).await?;
    let mut room_ids = Vec::with_capacity(rooms);
    for (i, owner) in accounts.iter().take(rooms).enumerate() {
        room_ids.push(api::create_room(&http, &chat, &owner.token, &format!("ingest {i}")).await?);
    }
    let joins = accounts
        .iter()
        .enumerate()
        .skip(rooms)
        .map(|(i, a)| (a.token.clone(), room_ids[i % rooms].clone()))
        .collect();
    api::join_all(&http, &chat, joins, 16).await?;

    let addr = System::addr(system.ports.chat);
    let host = addr.to_string();
    let plan: Arc<Vec<(String, String)>> = Arc::new(
        accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    a.token.clone(),
                    format!("/chat/rooms/{}/messages", room_ids[i % rooms]),
                )
            })
            .collect(),
    );
    let tag = api::run_tag();
    let make: load::MakeRequest = Arc::new(move |w, seq| {
        let (token, path) = &plan[w % plan.len()];
        let body = serde_json::to_vec(&serde_json::json!({
            "body": format!("ingest message {seq} from sender {w}"),
            "client_msg_id": format!("{tag}-{w}-{seq}"),
        }))
        .unwrap_or_default();
        load::json_request(http::Method::POST, &host, path, Some(token), body)
    });
    let label = format!("ingest ({})", system.backend);
    let (r, usage) = super::measure(cli, &label, addr, make, senders, Mode::Closed, &[pid]).await;
    let backend = system.backend;
    let http_row = super::row(
        &format!("{backend}: {senders} senders over HTTP, {rooms} rooms"),
        "msg",
        &r,
        usage,
    );
    let window = cli.ws_window.max(1);
    let ws_name = format!("{backend}: {senders} senders over WebSocket, window {window}");
    let targets: Vec<(Account, String)> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), room_ids[i % rooms].clone()))
        .collect();
    let ws_row = match over_websocket(cli, addr, pid, backend, &targets, window).await {
        Ok((r, usage)) => super::row(&ws_name, "msg", &r, usage),
        Err(e) => Row::unavailable(ws_name, format!("{e:#}")),
    };
    system.stop().await;
    Ok(vec![http_row, ws_row])
}

/// The measured window of a WebSocket phase.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.end
    }
}

#[derive(Default)]
struct SenderOut {
    /// Acks received in the window.
    acked: u64,
    errors: u64,
    /// send → ack of the sends made in the window.
    lat: Latencies,
    first_error: Option<String>,
}

impl SenderOut {
    fn error(&mut self, e: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e());
        }
    }
}

/// One sender per `(account, room)`, each on its own socket, metered like `super::measure`.
async fn over_websocket(
    cli: &Cli,
    addr: SocketAddr,
    pid: u32,
    backend: &str,
    targets: &[(Account, String)],
    window: usize,
) -> anyhow::Result<(LoadResult, Usage)> {
    // In order (`buffered`, unlike `fanout::connect_all`): socket i is sender i's.
    let sockets: Vec<ws::Socket> = futures::stream::iter(targets)
        .map(|(a, _)| connect_ready(addr, &a.token))
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let label = format!("ingest ({backend}, ws)");
    let start = Instant::now();
    let win = Window {
        from: start + cli.warmup(),
        end: start + cli.warmup() + cli.duration(),
    };
    let meter = {
        // The window ends at `win.end`, not when the last ack has been waited for.
        let meter = super::Meter::start(cli, &label, &[pid], cli.warmup());
        tokio::spawn(async move {
            tokio::time::sleep_until(win.end.into()).await;
            meter.finish().await
        })
    };
    let acks = Arc::new(AtomicU64::new(0));
    let bar = crate::progress::timed(&label, win.end - start);
    let ticker = {
        let (bar, acks) = (bar.clone(), acks.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = acks.load(Ordering::Relaxed);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!("{:.0}/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    };
    // Distinct ids per run: a repeated client_msg_id would be answered from the dedup
    // path instead of being stored.
    let tag: Arc<str> = format!("ws{}", api::run_tag()).into();
    let tasks: Vec<_> = sockets
        .into_iter()
        .zip(targets.iter().cloned())
        .enumerate()
        .map(|(w, (sock, (account, room_id)))| {
            let sender = Sender {
                addr,
                w,
                token: account.token,
                room_id,
                window,
                win,
                tag: tag.clone(),
                acks: acks.clone(),
            };
            tokio::spawn(sender.run(sock))
        })
        .collect();
    let mut result = LoadResult {
        ok: 0,
        errors: 0,
        elapsed: cli.duration(),
        latencies: Latencies::new(),
        first_error: None,
    };
    for t in tasks {
        match t.await {
            Ok(out) => {
                result.ok += out.acked;
                result.errors += out.errors;
                result.latencies.merge(&out.lat);
                if result.first_error.is_none() {
                    result.first_error = out.first_error;
                }
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let usage = meter.await.unwrap_or_default();
    Ok((result, usage))
}

/// A socket the server has finished setting up (subscriptions included): the `pong` to a
/// `ping` comes after that, as in `fanout::connect_all`.
async fn connect_ready(addr: SocketAddr, token: &str) -> anyhow::Result<ws::Socket> {
    let mut sock = ws::connect(addr, token).await?;
    ws::ping_pong(&mut sock, Duration::from_secs(30)).await?;
    Ok(sock)
}

/// One WebSocket sender: keeps up to `window` sends unacknowledged until the window
/// closes, then waits (at most `DRAIN`) for the outstanding acks. A failed socket counts
/// as one error and is replaced while the window is open.
struct Sender {
    addr: SocketAddr,
    w: usize,
    token: String,
    room_id: String,
    window: usize,
    win: Window,
    tag: Arc<str>,
    acks: Arc<AtomicU64>,
}

impl Sender {
    async fn run(self, sock: ws::Socket) -> SenderOut {
        let mut out = SenderOut::default();
        let mut sock = Some(sock);
        let mut seq = 0u64;
        loop {
            let Some(s) = sock.as_mut() else {
                if Instant::now() >= self.win.end {
                    break;
                }
                match connect_ready(self.addr, &self.token).await {
                    Ok(s) => sock = Some(s),
                    Err(e) => {
                        out.error(|| format!("reconnect: {e:#}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                continue;
            };
            match self.pipeline(s, &mut seq, &mut out).await {
                Ok(()) => break,
                Err(e) => {
                    out.error(|| format!("socket: {e:#}"));
                    sock = None;
                }
            }
        }
        if let Some(mut s) = sock {
            let _ = s.close(None).await;
        }
        out
    }

    /// Sends and reads on one socket until the window closed and every send is answered
    /// (or `DRAIN` passed); `Err` when the socket fails.
    async fn pipeline(
        &self,
        sock: &mut ws::Socket,
        seq: &mut u64,
        out: &mut SenderOut,
    ) -> anyhow::Result<()> {
        // client_msg_id → when it was sent. Acks of one socket may come back in order or
        // not, depending on the server; the map works either way.
        let mut in_flight: HashMap<String, Instant> = HashMap::with_capacity(self.window);
        let deadline = self.win.end + DRAIN;
        loop {
            // Refill the window, then flush once: one write for the whole batch.
            let mut fed = false;
            while in_flight.len() < self.window && Instant::now() < self.win.end {
                let id = format!("{}-{}-{}", self.tag, self.w, *seq);
                let frame = format!(
                    r#"{{"type":"send","room_id":"{}","body":"ingest message {} from sender {}","client_msg_id":"{id}"}}"#,
                    self.room_id, *seq, self.w
                );
                *seq += 1;
                in_flight.insert(id, Instant::now());
                sock.feed(Message::text(frame)).await?;
                fed = true;
            }
            if fed {
                sock.flush().await?;
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let first = match tokio::time::timeout_at(deadline.into(), sock.next()).await {
                Ok(frame) => frame,
                Err(_) => {
                    let lost = in_flight
                        .values()
                        .filter(|&&t| self.win.contains(t))
                        .count();
                    if lost > 0 {
                        out.errors += lost as u64;
                        out.first_error.get_or_insert_with(|| {
                            format!("{lost} sends unanswered {DRAIN:?} after the window")
                        });
                    }
                    return Ok(());
                }
            };
            // Handle what is already buffered too before refilling, so that sends go
            // out in batches rather than one write per ack.
            let mut next = first;
            for _ in 0..READ_BATCH {
                match next {
                    Some(Ok(Message::Text(text))) => self.on_frame(&text, &mut in_flight, out),
                    Some(Ok(Message::Close(_))) | None => anyhow::bail!("closed by the server"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
                match sock.next().now_or_never() {
                    Some(frame) => next = frame,
                    None => break,
                }
            }
        }
    }

    fn on_frame(&self, text: &str, in_flight: &mut HashMap<String, Instant>, out: &mut SenderOut) {
        // Events (this sender's and the room's other senders' messages) are most frames.
        if ws::is_type(text, "event") {
            return;
        }
        let is_ack = ws::is_type(text, "ack");
        if !is_ack && !ws::is_type(text, "error") {
            return; // ready, pong, typing, …
        }
        let now = Instant::now();
        let sent = ws::str_field(text, "client_msg_id").and_then(|id| in_flight.remove(id));
        let sent_in_window = sent.is_some_and(|t| self.win.contains(t));
        if is_ack {
            self.acks.fetch_add(1, Ordering::Relaxed);
            if self.win.contains(now) {
                out.acked += 1;
            }
            if let Some(t) = sent.filter(|_| sent_in_window) {
                out.lat.record(now - t);
            }
        } else if sent_in_window || (sent.is_none() && self.win.contains(now)) {
            out.error(|| text.chars().take(200).collect());
        }
    }
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let mut rows = Vec::new();
    let sqlite = SystemOptions {
        database_url: None,
        ..cli.system_options()
    };
    match one_backend(cli, &sqlite).await {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(Row::unavailable("sqlite", format!("{e:#}"))),
    }
    let mut pg_rows = Vec::new();
    if cli.database_url.is_some() {
        pg_rows = match one_backend(cli, &cli.system_options()).await {
            Ok(r) => r,
            Err(e) => vec![Row::unavailable("postgres", format!("{e:#}"))],
        };
        rows.extend(pg_rows.iter().cloned());
    } else {
        rows.push(Row::unavailable(
            "postgres",
            "no --database-url / DATABASE_URL given",
        ));
    }
    let mut report = Report {
        scenario: "ingest".into(),
        command: Cli::command_line(),
        config: vec![
            ("senders".into(), cli.senders.to_string()),
            ("rooms".into(), cli.rooms.to_string()),
            ("WebSocket window".into(), cli.ws_window.max(1).to_string()),
            (
                "duration".into(),
                format!("{} s (+{} s warm-up) per backend", cli.duration, cli.warmup),
            ),
        ],
        tables: vec![(
            "Durable messages (HTTP 201 / WebSocket ack after commit)".into(),
            rows,
        )],
        ..Report::default()
    };
    let best = pg_rows
        .iter()
        .filter(|r| r.ok)
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput));
    report.checks.push(match best {
        Some(r) => Check::new(
            "≥ 20,000 msg/s on PostgreSQL (best row)",
            format!(
                "{:.0} msg/s ({:.0}% of target), row \"{}\"",
                r.throughput,
                r.throughput / 200.0,
                r.name
            ),
            Some(r.throughput >= 20_000.0),
        ),
        None => Check::new(
            "≥ 20,000 msg/s on PostgreSQL (best row)",
            "not measured",
            None,
        ),
    });
    report.notes.push(
        "Messages go straight to the chat service, one connection per sender: keep-alive HTTP/1.1 with one request in flight, or a WebSocket on which each sender keeps up to `window` sends unacknowledged (pipelined); both the 201 and the `ack` come only after commit. WebSocket senders also receive the `event` frame of every message in their room and skip it. Throughput counts acknowledgements received in the window; latency is send → acknowledgement of the messages sent in it. The per-user send rate limit is raised for the run. The load generator shares the machine's cores with the server (and PostgreSQL)."
            .into(),
    );
    Ok(report)
}
