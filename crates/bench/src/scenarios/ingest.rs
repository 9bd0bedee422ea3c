//! `ingest`: durable messages/s — `senders` accounts, each posting
//! `POST /chat/rooms/{id}/messages` in a closed loop (the 201 arrives only after commit),
//! spread over `rooms` rooms; on SQLite, and on PostgreSQL when a database URL is given.

use std::sync::Arc;

use crate::load::{self, Mode};
use crate::stats::{Check, Report, Row};
use crate::system::{Env, System, SystemOptions};
use crate::{Cli, api};

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

async fn one_backend(cli: &Cli, opts: &SystemOptions) -> anyhow::Result<(Row, &'static str)> {
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
    system.stop().await;
    Ok((
        super::row(
            &format!("{backend}: {senders} senders, {rooms} rooms"),
            "msg",
            &r,
            usage,
        ),
        backend,
    ))
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let mut rows = Vec::new();
    let sqlite = SystemOptions {
        database_url: None,
        ..cli.system_options()
    };
    rows.push(match one_backend(cli, &sqlite).await {
        Ok((row, _)) => row,
        Err(e) => Row::unavailable("sqlite", format!("{e:#}")),
    });
    let mut pg_row = None;
    if cli.database_url.is_some() {
        let row = match one_backend(cli, &cli.system_options()).await {
            Ok((row, _)) => row,
            Err(e) => Row::unavailable("postgres", format!("{e:#}")),
        };
        pg_row = Some(row.clone());
        rows.push(row);
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
            (
                "duration".into(),
                format!("{} s (+{} s warm-up) per backend", cli.duration, cli.warmup),
            ),
        ],
        tables: vec![("Durable messages (HTTP 201 after commit)".into(), rows)],
        ..Report::default()
    };
    report.checks.push(match pg_row {
        Some(r) if r.ok => Check::new(
            "≥ 20,000 msg/s on PostgreSQL",
            format!(
                "{:.0} msg/s ({:.0}% of target)",
                r.throughput,
                r.throughput / 200.0
            ),
            Some(r.throughput >= 20_000.0),
        ),
        _ => Check::new("≥ 20,000 msg/s on PostgreSQL", "not measured", None),
    });
    report.notes.push(
        "Messages go straight to the chat service over keep-alive HTTP/1.1 (one connection per sender). The per-user send rate limit is raised for the run. The load generator shares the machine's cores with the server (and PostgreSQL)."
            .into(),
    );
    Ok(report)
}
