//! `reactions` (chat v1.1): N members of one room (1,000 by default) each react once to
//! one message, their HTTP `PUT …/reactions/{emoji}` spread evenly over the measured
//! window (open loop: request i is due at i × duration / N), while W of them (100 by
//! default) hold WebSockets. Checks that the counts are exact (the "who reacted" route
//! and the history's `reactions`), and that every connected client got every
//! `reaction.added` event exactly once, in seq order, with no other event between them.
//! Reports the PUT throughput and latency and the delivery latency (PUT sent → event
//! frame received by a client).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::fanout::{connect_all, setup_rooms};
use super::ingest::chat_env;
use crate::stats::{Check, Latencies, Report, Row};
use crate::system::{System, SystemOptions};
use crate::{Cli, api, procstat, ws};

/// What the reactors send, round robin: emoji (single, modifier, ZWJ, flag, keycap) and
/// shortcodes — 8 distinct, under the 20-per-message limit.
const EMOJI: [&str; 8] = ["👍", "👍🏽", "❤️", "👨‍👩‍👧", "🇫🇷", "1️⃣", ":+1:", ":tada:"];

/// Percent-encodes everything but unreserved characters (RFC 3986) for a path segment.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one connected client received.
#[derive(Default)]
struct Received {
    /// `(seq, user_id, when)` of each `reaction.added` of the message.
    added: Vec<(i64, String, Instant)>,
    /// Event frames of the room whose seq was not above the previous one's.
    out_of_order: u64,
    /// Event frames of the room other than `reaction.added` after the start.
    other_events: u64,
    error: Option<String>,
}

async fn watch(
    mut sock: ws::Socket,
    room: String,
    message: String,
    delivered: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Received {
    let mut out = Received::default();
    let mut last_seq = i64::MIN;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            m = sock.next() => m,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                out.error = Some(format!("socket: {e}"));
                break;
            }
            None => {
                out.error = Some("closed by the server".into());
                break;
            }
        };
        if !ws::is_type(&text, "event") {
            continue;
        }
        let now = Instant::now();
        // Field extraction instead of a JSON parse per frame: with 1,000 sockets this
        // client reads 100,000 frames a second on the same 2 cores as the server. The
        // event's keys are unique within the frame but for `room_id`/`seq`, which are the
        // same inside and outside the event.
        if ws::str_field(&text, "room_id") != Some(room.as_str()) {
            continue;
        }
        let seq = ws::int_field(&text, "seq").unwrap_or(i64::MIN);
        if seq <= last_seq {
            out.out_of_order += 1;
        }
        last_seq = last_seq.max(seq);
        if ws::str_field(&text, "kind") == Some("reaction.added")
            && ws::str_field(&text, "message_id") == Some(message.as_str())
        {
            let user = ws::str_field(&text, "user_id")
                .unwrap_or_default()
                .to_owned();
            out.added.push((seq, user, now));
            delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            out.other_events += 1;
        }
    }
    let _ = futures::SinkExt::close(&mut sock).await;
    out
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let resp = http.get(url).bearer_auth(token).send().await?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}");
    Ok(resp.json().await?)
}

struct Outcome {
    rows: Vec<Row>,
    facts: Vec<(String, String)>,
    checks: Vec<Check>,
}

async fn one_backend(cli: &Cli, opts: &SystemOptions, nofile: u64) -> anyhow::Result<Outcome> {
    let n = cli.reactors.max(1);
    let w = cli.watchers.min(n);
    anyhow::ensure!(
        nofile >= w as u64 + 512,
        "{w} sockets need more open files than the limit {nofile} allows"
    );
    let system = System::start(opts, &chat_env()).await?;
    let backend = system.backend;
    let pid = system.pid();
    let server = System::addr(system.ports.chat);
    let chat = System::url(system.ports.chat);
    let http = api::client()?;
    let rooms = setup_rooms(&system, n, n, &format!("rx{}_", api::run_tag())).await?;
    let (room, _) = rooms.rooms.first().context("no room")?.clone();
    let accounts = rooms.accounts;
    let owner = &accounts[0];
    let resp = http
        .post(format!("{chat}/chat/rooms/{room}/messages"))
        .bearer_auth(&owner.token)
        .json(&serde_json::json!({"body": "react to this", "client_msg_id": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "post: HTTP {}", resp.status());
    let message: Value = resp.json().await?;
    let message_id = message["id"].as_str().context("message id")?.to_owned();
    let seq_before =
        get_json(&http, &format!("{chat}/chat/rooms/{room}"), &owner.token).await?["last_seq"]
            .as_i64()
            .context("last_seq")?;

    // The watchers: the first W members (the owner among them).
    let sockets = connect_all(server, &accounts[..w], 256).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            tokio::spawn(watch(
                s,
                room.clone(),
                message_id.clone(),
                delivered.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // The reactions: member i's PUT is due at i × window / N (open loop; latency counted
    // from the due time, so a stall is not hidden).
    let window = cli.duration();
    let bar = crate::progress::timed("reacting", window);
    let meter = procstat::CpuMeter::start(&[pid]);
    let bench_meter = procstat::CpuMeter::start_exact(vec![std::process::id()]);
    let start = Instant::now();
    let mut puts = Vec::with_capacity(n);
    for (i, account) in accounts.iter().enumerate() {
        let due = start + window.mul_f64(i as f64 / n as f64);
        let emoji = EMOJI[i % EMOJI.len()];
        let url = format!(
            "{chat}/chat/rooms/{room}/messages/{message_id}/reactions/{}",
            encode(emoji)
        );
        let (http, token, user) = (http.clone(), account.token.clone(), account.id.clone());
        puts.push(tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let r = http.put(&url).bearer_auth(&token).send().await;
            let took = due.elapsed();
            let r = match r {
                Ok(resp) if resp.status().as_u16() == 204 => Ok(()),
                Ok(resp) => Err(format!("HTTP {}", resp.status())),
                Err(e) => Err(e.to_string()),
            };
            (user, emoji, due, took, r)
        }));
    }
    let mut put_lat = Latencies::new();
    let mut put_errors = 0u64;
    let mut first_error = None;
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut per_emoji: HashMap<&str, i64> = HashMap::new();
    let mut last_answer = Duration::ZERO;
    for p in puts {
        let (user, emoji, due, took, r) = p.await?;
        last_answer = last_answer.max((due + took).duration_since(start));
        match r {
            Ok(()) => {
                put_lat.record(took);
                sent_at.insert(user, due);
                *per_emoji.entry(emoji).or_default() += 1;
            }
            Err(e) => {
                put_errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let usage = meter.finish();
    let bench_cpu = bench_meter.finish().cpu_percent;
    bar.finish_and_clear();
    let ok = put_lat.count();

    // Every delivery, or 30 s more.
    let wanted = ok * w as u64;
    let drain = Instant::now();
    while delivered.load(Ordering::Relaxed) < wanted && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut delivery = Latencies::new();
    let (mut missing, mut duplicates, mut out_of_order, mut others, mut socket_errors) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut gaps = 0u64;
    let expected_seqs: Vec<i64> = (seq_before + 1..=seq_before + ok as i64).collect();
    for t in watchers {
        let got = t.await?;
        socket_errors += u64::from(got.error.is_some());
        out_of_order += got.out_of_order;
        others += got.other_events;
        let mut users = HashSet::new();
        for (_, user, at) in &got.added {
            if !users.insert(user.clone()) {
                duplicates += 1;
            } else if let Some(sent) = sent_at.get(user) {
                delivery.record(at.duration_since(*sent));
            }
        }
        missing += (ok as usize).saturating_sub(users.len()) as u64;
        let seqs: Vec<i64> = got.added.iter().map(|(s, _, _)| *s).collect();
        gaps += u64::from(seqs != expected_seqs);
    }

    // The counts, as the API reports them.
    let who = get_json(
        &http,
        &format!("{chat}/chat/rooms/{room}/messages/{message_id}/reactions"),
        &owner.token,
    )
    .await?;
    let mut counted: HashMap<String, i64> = HashMap::new();
    let mut listed_users = 0usize;
    for item in who["items"].as_array().cloned().unwrap_or_default() {
        counted.insert(
            item["emoji"].as_str().unwrap_or_default().to_owned(),
            item["count"].as_i64().unwrap_or(-1),
        );
        listed_users += item["user_ids"].as_array().map_or(0, Vec::len);
    }
    let history = get_json(
        &http,
        &format!("{chat}/chat/rooms/{room}/messages?limit=1"),
        &owner.token,
    )
    .await?;
    let mut in_history: HashMap<String, i64> = HashMap::new();
    for r in history["items"][0]["reactions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        in_history.insert(
            r["emoji"].as_str().unwrap_or_default().to_owned(),
            r["count"].as_i64().unwrap_or(-1),
        );
    }
    let sent: HashMap<String, i64> = per_emoji
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    let counts_exact = counted == sent && in_history == sent && listed_users as u64 == ok;
    let last_seq =
        get_json(&http, &format!("{chat}/chat/rooms/{room}"), &owner.token).await?["last_seq"]
            .as_i64()
            .unwrap_or(-1);
    system.stop().await;

    let mut put_row = Row::measured(
        format!(
            "{backend}: PUT reaction (open loop, {n} over {:.0} s)",
            window.as_secs_f64()
        ),
        "req",
        ok,
        put_errors,
        last_answer,
        &put_lat,
    )
    .with_server(usage);
    put_row.bench_cpu_percent = Some(bench_cpu);
    put_row.note = format!(
        "latency from the due time to the 204{}",
        first_error
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    let mut delivery_row = Row::measured(
        format!("{backend}: reaction.added to {w} sockets"),
        "delivery",
        delivery.count(),
        missing + duplicates,
        last_answer,
        &delivery,
    );
    delivery_row.note = "latency from the PUT's due time to the event frame at a client".into();
    let delivered_all = missing == 0 && duplicates == 0 && socket_errors == 0;
    let in_order = out_of_order == 0 && gaps == 0 && others == 0;
    Ok(Outcome {
        rows: vec![put_row, delivery_row],
        facts: vec![
            (
                format!("{backend}: reactions stored / PUTs answered 204"),
                format!("{} / {ok}", counted.values().sum::<i64>()),
            ),
            (
                format!("{backend}: room seq before → after"),
                format!("{seq_before} → {last_seq}"),
            ),
            (
                format!("{backend}: deliveries"),
                format!(
                    "{} of {wanted}; missing {missing}, duplicates {duplicates}, out of order {out_of_order}, sockets whose seqs were not exactly {}..={} {gaps}, other events {others}, socket errors {socket_errors}",
                    delivery.count(),
                    seq_before + 1,
                    seq_before + ok as i64
                ),
            ),
        ],
        checks: vec![
            Check::new(
                format!("{backend}: counts exact (who-reacted, history, per emoji)"),
                if counts_exact {
                    format!(
                        "{} emoji, {} reactions: the same per emoji in who-reacted and history",
                        sent.len(),
                        sent.values().sum::<i64>()
                    )
                } else {
                    format!("sent {sent:?}; who-reacted {counted:?}; history {in_history:?}")
                },
                Some(counts_exact && put_errors == 0),
            ),
            Check::new(
                format!("{backend}: every reaction.added reaches every socket"),
                format!("{} of {wanted}", delivery.count()),
                Some(delivered_all),
            ),
            Check::new(
                format!("{backend}: in seq order, gap-free"),
                format!("{out_of_order} out of order, {gaps} sockets with other seqs"),
                Some(in_order),
            ),
        ],
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
        scenario: "reactions".into(),
        command: Cli::command_line(),
        config: vec![
            ("members reacting".into(), cli.reactors.to_string()),
            (
                "connected members (WebSocket)".into(),
                cli.watchers.min(cli.reactors).to_string(),
            ),
            ("window".into(), format!("{} s", cli.duration)),
            ("emoji (round robin)".into(), EMOJI.join(" ")),
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
        .push(("Reactions on one message of one room".into(), rows));
    report.notes.push(
        "Every reaction takes the room's next seq in its own transaction (the room's row lock), so reactions to one room are serialised by design.".into(),
    );
    Ok(report)
}
