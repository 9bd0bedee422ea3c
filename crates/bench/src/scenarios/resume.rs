//! `resume`: a reconnect storm. K clients (one account each, rooms of `room_size`) are
//! connected, all disconnect, each room receives `missed` messages, then every client
//! reconnects at once and sends `resume` with the last seq it had. Measures the time until
//! every client holds every missed event, and checks that none was skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::fanout::{connect_all, setup_rooms};
use super::ingest::chat_env;
use crate::stats::{Check, Latencies, Report, Row};
use crate::system::System;
use crate::{Cli, api, procstat, ws};

/// Per client: how long after the storm began it had all missed events, or why not.
type Outcome = Result<Duration, String>;

async fn catch_up(
    server: std::net::SocketAddr,
    token: String,
    room: String,
    from_seq: i64,
    to_seq: i64,
    storm: Instant,
) -> Outcome {
    let mut sock = ws::connect(server, &token)
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    let resume =
        serde_json::json!({"type": "resume", "rooms": {room.clone(): from_seq}}).to_string();
    sock.send(Message::text(resume))
        .await
        .map_err(|e| format!("send resume: {e}"))?;
    let mut seen: HashSet<i64> = HashSet::new();
    let wanted = (to_seq - from_seq).max(0) as usize;
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    while seen.len() < wanted {
        tokio::select! {
            _ = &mut deadline => return Err(format!("timed out with {}/{wanted} events", seen.len())),
            m = sock.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if ws::is_type(&t, "event")
                        && let Some(seq) = ws::int_field(&t, "seq")
                        && seq > from_seq
                        && seq <= to_seq
                    {
                        seen.insert(seq);
                    } else if ws::is_type(&t, "error") {
                        return Err(format!("error frame: {}", t.chars().take(200).collect::<String>()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("socket: {e}")),
                None => return Err(format!("closed with {}/{wanted} events", seen.len())),
            }
        }
    }
    let took = storm.elapsed();
    let _ = sock.close(None).await;
    Ok(took)
}

async fn room_last_seq(
    http: &reqwest::Client,
    chat: &str,
    token: &str,
    room: &str,
) -> anyhow::Result<i64> {
    let v: serde_json::Value = http
        .get(format!("{chat}/chat/rooms/{room}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    v["last_seq"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("room without last_seq"))
}

pub async fn run(cli: &Cli, nofile: u64) -> anyhow::Result<Report> {
    let k = cli.clients.max(1);
    anyhow::ensure!(
        nofile >= k as u64 + 256,
        "{k} clients need more open files than the limit {nofile} allows"
    );
    let room_size = cli.room_size.clamp(1, k);
    let system = System::start(&cli.system_options(), &chat_env()).await?;
    let pid = system.pid();
    let backend = system.backend;
    let server = System::addr(system.ports.chat);
    let chat = System::url(system.ports.chat);
    let http = api::client()?;
    let rooms = setup_rooms(&system, k, room_size, &format!("rs{}_", api::run_tag())).await?;

    // Every client sees its room up to here, then goes away.
    let sockets = connect_all(server, &rooms.accounts, 256).await?;
    let mut before = Vec::with_capacity(rooms.rooms.len());
    for (id, members) in &rooms.rooms {
        before.push(room_last_seq(&http, &chat, &rooms.accounts[members[0]].token, id).await?);
    }
    for mut s in sockets {
        let _ = s.close(None).await;
    }

    // Each room gets `missed` messages while nobody is connected.
    let bar = crate::progress::counted(
        "posting missed events",
        (rooms.rooms.len() * cli.missed) as u64,
    );
    let mut after = Vec::with_capacity(rooms.rooms.len());
    let posts = rooms.rooms.iter().map(|(id, members)| {
        let (http, chat, bar) = (http.clone(), chat.clone(), bar.clone());
        let token = rooms.accounts[members[0]].token.clone();
        let id = id.clone();
        let missed = cli.missed;
        async move {
            let mut last = 0;
            for i in 0..missed {
                last = api::post_message(&http, &chat, &token, &id, &format!("missed event {i}"))
                    .await?;
                bar.inc(1);
            }
            anyhow::Ok(last)
        }
    });
    for r in futures::future::join_all(posts).await {
        after.push(r?);
    }
    bar.finish_and_clear();
    for (i, (id, members)) in rooms.rooms.iter().enumerate() {
        // The room's own count, in case anything else happened in between.
        after[i] = room_last_seq(&http, &chat, &rooms.accounts[members[0]].token, id)
            .await?
            .max(after[i]);
    }

    // The storm: everyone reconnects and resumes at once.
    let bar = crate::progress::counted("reconnect + resume", k as u64);
    let meter = procstat::CpuMeter::start(&[pid]);
    let storm = Instant::now();
    let mut tasks = Vec::with_capacity(k);
    let gate = Arc::new(tokio::sync::Semaphore::new(1024));
    for (r, (id, members)) in rooms.rooms.iter().enumerate() {
        for &m in members {
            let (token, room, bar, gate) = (
                rooms.accounts[m].token.clone(),
                id.clone(),
                bar.clone(),
                gate.clone(),
            );
            let (from, to) = (before[r], after[r]);
            tasks.push(tokio::spawn(async move {
                // Handshakes in flight are bounded; a client holds its permit only while connecting.
                let permit = gate.acquire_owned().await;
                let out = catch_up(server, token, room, from, to, storm).await;
                drop(permit);
                bar.inc(1);
                out
            }));
        }
    }
    let mut lat = Latencies::new();
    let mut failures = 0u64;
    let mut first_failure = None;
    let mut last_done = Duration::ZERO;
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => {
                lat.record(d);
                last_done = last_done.max(d);
            }
            Ok(Err(e)) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e.to_string());
            }
        }
    }
    let usage = meter.finish();
    bar.finish_and_clear();
    system.stop().await;

    let events: i64 = rooms
        .rooms
        .iter()
        .enumerate()
        .map(|(r, (_, m))| (after[r] - before[r]) * m.len() as i64)
        .sum();
    let all_secs = last_done.as_secs_f64();
    let mut row = Row::measured(
        "clients caught up",
        "client",
        lat.count(),
        failures,
        last_done,
        &lat,
    )
    .with_server(usage);
    row.note = format!(
        "latency = time from the start of the storm until that client had every missed event{}",
        first_failure
            .map(|e| format!("; first failure: {e}"))
            .unwrap_or_default()
    );
    let mut report = Report {
        scenario: "resume".into(),
        command: Cli::command_line(),
        config: vec![
            ("backend".into(), backend.into()),
            ("clients".into(), k.to_string()),
            (
                "rooms × members".into(),
                format!("{} × {room_size}", rooms.rooms.len()),
            ),
            ("missed events per client".into(), cli.missed.to_string()),
        ],
        tables: vec![("Reconnect storm".into(), vec![row])],
        ..Report::default()
    };
    report.facts = vec![
        (
            "time until every client caught up".into(),
            format!("{all_secs:.2} s"),
        ),
        (
            "events replayed".into(),
            format!("{events} ({:.0}/s)", events as f64 / all_secs.max(1e-9)),
        ),
        (
            "clients that failed or missed an event".into(),
            failures.to_string(),
        ),
    ];
    report.checks = vec![Check::new(
        "every client resumes without a gap",
        format!("{failures} of {k} failed"),
        Some(failures == 0),
    )];
    report.notes.push(
        "Issue 8 sets no time target for the reconnect storm; the figure is recorded for comparison between runs.".into(),
    );
    Ok(report)
}
