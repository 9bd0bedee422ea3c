//! `search`: generates profiles straight into the user service's database with the users
//! crate's own migrations, normalisation and generator (`users::search::bench`, shared
//! with `users-search-bench`), so the rows are exactly what the service would have
//! written — then starts the server on that data (it builds its in-memory search index at
//! startup) and measures `GET /users/search` for prefix, substring and typo queries.
//! SQLite always; PostgreSQL too when a database URL is given.

use std::sync::Arc;
use std::time::Instant;

use kit::db::Db;
use rand::SeedableRng;
use rand::rngs::StdRng;
use users::search::bench as data;

use crate::load::{self, Mode};
use crate::stats::{Check, Report, Row};
use crate::system::{ScratchDb, System, SystemOptions};
use crate::{Cli, api};

/// Inserts `n` profiles with the users crate's own generator (`users::search::bench`, also
/// used by `users-search-bench`), with a progress bar.
async fn load_profiles(url: &str, n: usize) -> anyhow::Result<()> {
    let bar = crate::progress::counted("generating profiles", n as u64);
    data::load_profiles(url, n, 7, |done| bar.set_position(done as u64)).await?;
    bar.finish_and_clear();
    Ok(())
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn one_backend(
    cli: &Cli,
    postgres: bool,
) -> anyhow::Result<(Vec<Row>, Vec<(String, String)>)> {
    let dir = tempfile::tempdir()?;
    let scratch = match (&cli.database_url, postgres) {
        (Some(admin), true) => Some(ScratchDb::create(admin, "users").await?),
        _ => None,
    };
    let db = Db::open(
        scratch.as_ref().map(|s| s.url.as_str()),
        dir.path(),
        users::NAME,
    )
    .await?;
    db.migrate(users::MIGRATIONS).await?;
    db.close().await;
    let url = match &scratch {
        Some(s) => s.url.clone(),
        // The file `Db::open` created for the service.
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join(format!("{}.db", users::NAME)).display()
        ),
    };
    let mut rng = StdRng::seed_from_u64(8);
    let started = Instant::now();
    load_profiles(&url, cli.profiles).await?;
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
        &format!("se{}", api::run_tag()),
    )
    .await?;
    api::wait_profile(&http, &System::url(system.ports.users), &caller.token).await?;
    let addr = System::addr(system.ports.users);
    let backend = system.backend;
    let workers = cli.concurrency.clamp(1, 2);
    let mut rows = Vec::new();
    let mut facts = vec![(
        format!("loading {} profiles into {backend}", cli.profiles),
        format!("{load_secs:.0} s"),
    )];
    for kind in ["prefix", "substring", "typo"] {
        let qs: Arc<Vec<String>> = Arc::new(
            data::queries(kind, &mut rng, 500)
                .iter()
                .map(|q| format!("/users/search?q={}&limit=20", encode(q)))
                .collect(),
        );
        // Sanity: the queries must find something, or fast answers would mean nothing.
        let mut hits = 0usize;
        let sample = qs.len().min(20);
        for path in qs.iter().take(sample) {
            let v: serde_json::Value = http
                .get(format!("{}{path}", System::url(system.ports.users)))
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
            &format!("search {kind} ({backend})"),
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
        scenario: "search".into(),
        command: Cli::command_line(),
        config: vec![
            ("profiles".into(), cli.profiles.to_string()),
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
            format!("p99 < 20 ms @ {} profiles ({})", cli.profiles, r.name),
            format!("{:.1} ms", r.latency.p99_ms),
            Some(r.latency.p99_ms < 20.0 && r.errors == 0),
        ));
    }
    report.tables.push((
        "GET /users/search?q=…&limit=20, direct to the users service".into(),
        rows,
    ));
    report.facts = facts;
    if cli.profiles < 1_000_000 {
        report.notes.push(format!(
            "Run with {} profiles; the target is stated for 1,000,000.",
            cli.profiles
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(encode("zoë smith"), "zo%C3%AB%20smith");
        assert_eq!(encode("a-b_c.d~"), "a-b_c.d~");
    }
}
