//! `message-search`: loads `--messages` messages (1,000,000 by default) over 1,000 rooms
//! straight into the chat database with chat's own store, index and normalisation
//! (`chat::search::bench`: a bench-only seeder; sends through the API would take longer
//! than the measurement), starts the server on that data, registers a user, makes them
//! a member of 50 of the rooms, and measures `GET /chat/search` direct to the chat
//! service for each query kind: common words, rare words, prefixes, two words, quoted
//! phrases, other scripts. SQLite always; PostgreSQL too when a database URL is given.

use std::sync::Arc;
use std::time::Instant;

use chat::search::bench as data;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::load::{self, Mode};
use crate::scenarios::search::encode;
use crate::stats::{Check, Report, Row};
use crate::system::{ScratchDb, System, SystemOptions};
use crate::{Cli, api};

const ROOMS: usize = 1_000;
const MEMBER_OF: usize = 50;
const KINDS: [&str; 6] = ["common", "rare", "prefix", "two-words", "phrase", "scripts"];

async fn one_backend(
    cli: &Cli,
    postgres: bool,
) -> anyhow::Result<(Vec<Row>, Vec<(String, String)>)> {
    let dir = tempfile::tempdir()?;
    let scratch = match (&cli.database_url, postgres) {
        (Some(admin), true) => Some(ScratchDb::create(admin, "chat").await?),
        _ => None,
    };
    let url = match &scratch {
        Some(s) => s.url.clone(),
        // The file the service opens in its data dir.
        None => format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display()),
    };
    let started = Instant::now();
    let bar = crate::progress::counted("storing and indexing messages", cli.messages as u64);
    let loaded = data::load(&url, ROOMS, cli.messages, 7, |done| {
        bar.set_position(done as u64)
    })
    .await?;
    bar.finish_and_clear();
    let load_secs = started.elapsed().as_secs_f64();

    let opts = SystemOptions {
        database_url: if postgres {
            cli.database_url.clone()
        } else {
            None
        },
        ..cli.system_options()
    };
    let system = System::start_prepared(&opts, &Vec::new(), Some((dir, scratch))).await?;
    let pid = system.pid();
    let http = api::client()?;
    let caller = api::register(
        &http,
        &System::url(system.ports.auth),
        &format!("ms{}", api::run_tag()),
    )
    .await?;
    let users = System::url(system.ports.users);
    api::wait_profile(&http, &users, &caller.token).await?;
    let me: serde_json::Value = http
        .get(format!("{users}/users/me"))
        .bearer_auth(&caller.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let user_id: uuid::Uuid = me["id"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|e| anyhow::anyhow!("users/me: no id ({e})"))?;
    // Every 20th room: 50 of the 1,000, about 50,000 of the messages.
    let mine: Vec<uuid::Uuid> = loaded
        .rooms
        .iter()
        .step_by(ROOMS / MEMBER_OF)
        .copied()
        .collect();
    // The same database the service runs on (SQLite in WAL mode takes this short
    // write beside it).
    data::join(&url, user_id, &mine).await?;

    let chat = System::url(system.ports.chat);
    let addr = System::addr(system.ports.chat);
    let backend = system.backend;
    let workers = cli.concurrency.clamp(1, 2);
    let corpus = data::Corpus::new(20_000);
    let mut rng = StdRng::seed_from_u64(9);
    let mut rows = Vec::new();
    let mut facts = vec![(
        format!("storing and indexing {} messages ({backend})", cli.messages),
        format!("{load_secs:.0} s"),
    )];
    for kind in KINDS {
        let qs: Arc<Vec<String>> = Arc::new(
            corpus
                .queries(kind, &mut rng, 500)
                .iter()
                .map(|q| format!("/chat/search?q={}&limit=20", encode(q)))
                .collect(),
        );
        // Sanity: the queries must find something, or fast answers would mean nothing.
        let mut hits = 0usize;
        let sample = qs.len().min(20);
        for path in qs.iter().take(sample) {
            let v: serde_json::Value = http
                .get(format!("{chat}{path}"))
                .bearer_auth(&caller.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            hits += v["items"].as_array().map(Vec::len).unwrap_or(0);
        }
        facts.push((
            format!("{backend} {kind}: results per query (first {sample} queries, limit 20)"),
            format!("{:.1}", hits as f64 / sample.max(1) as f64),
        ));
        let host = addr.to_string();
        let token = format!("Bearer {}", caller.token);
        let make: load::MakeRequest = Arc::new(move |w, seq| {
            let path = &qs[(w * 7919 + seq as usize) % qs.len()];
            http::Request::get(path.as_str())
                .header(http::header::HOST, host.as_str())
                .header(http::header::AUTHORIZATION, token.as_str())
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap_or_default()
        });
        let (r, usage) = super::measure(
            cli,
            &format!("message search {kind} ({backend})"),
            addr,
            make,
            workers,
            Mode::Closed,
            &[pid],
        )
        .await;
        rows.push(super::row(
            &format!("{backend}: {kind}"),
            "query",
            &r,
            usage,
        ));
    }
    system.stop().await;
    Ok((rows, facts))
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let mut rows = Vec::new();
    let mut facts = Vec::new();
    for postgres in [false, true] {
        let name = if postgres { "postgres" } else { "sqlite" };
        if postgres && cli.database_url.is_none() {
            rows.push(Row::unavailable(
                name,
                "no --database-url / DATABASE_URL given",
            ));
            continue;
        }
        match one_backend(cli, postgres).await {
            Ok((r, f)) => {
                rows.extend(r);
                facts.extend(f);
            }
            Err(e) => rows.push(Row::unavailable(name, format!("{e:#}"))),
        }
    }
    let mut report = Report {
        scenario: "message-search".into(),
        command: Cli::command_line(),
        config: vec![
            ("messages".into(), cli.messages.to_string()),
            (
                "rooms".into(),
                format!("{ROOMS}, the searching user in {MEMBER_OF}"),
            ),
            ("workers".into(), cli.concurrency.clamp(1, 2).to_string()),
            (
                "duration".into(),
                format!(
                    "{} s (+{} s warm-up) per query kind",
                    cli.duration, cli.warmup
                ),
            ),
        ],
        ..Report::default()
    };
    for r in rows.iter().filter(|r| r.ok) {
        report.checks.push(Check::new(
            format!("p99 < 30 ms @ {} messages ({})", cli.messages, r.name),
            format!("{:.1} ms", r.latency.p99_ms),
            Some(r.latency.p99_ms < 30.0 && r.errors == 0),
        ));
    }
    report.tables.push((
        "GET /chat/search?q=…&limit=20, direct to the chat service".into(),
        rows,
    ));
    report.facts = facts;
    if cli.messages < 1_000_000 {
        report.notes.push(format!(
            "Run with {} messages; the target is stated for 1,000,000.",
            cli.messages
        ));
    }
    Ok(report)
}
