//! Search benchmark, in process: generates N profiles into a fresh users database
//! (`users::search::bench`), loads the search index the way the service does at startup
//! (time and resident memory are printed), then times typical queries through the same
//! function the `GET /users/search` handler uses, and prints p50/p99 per kind of query.
//!
//! ```text
//! cargo build --release -p users --bin users-search-bench
//! target/release/users-search-bench --profiles 1000000 --backend sqlite
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   target/release/users-search-bench --profiles 1000000 --backend postgres
//! ```
//! PostgreSQL uses a new database created from `TEST_DATABASE_URL` and dropped at the end
//! (unless `--keep`), or the database given by `--database-url` (kept and reused); SQLite
//! a temporary file, or `--data-dir DIR` kept and reused.

use std::time::{Duration, Instant};

use kit::db::{Backend, Db};
use rand::SeedableRng;
use rand::rngs::StdRng;
use users::search::{self, bench};

struct Args {
    profiles: usize,
    data_dir: Option<std::path::PathBuf>,
    /// An existing database to use (and reuse) instead of a new one.
    database_url: Option<String>,
    keep: bool,
    queries: usize,
    backend: Backend,
    seed: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        keep: false,
        data_dir: None,
        database_url: None,
        profiles: 100_000,
        queries: 300,
        backend: Backend::Sqlite,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--profiles" => args.profiles = value()?.parse()?,
            "--queries" => args.queries = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--data-dir" => args.data_dir = Some(value()?.into()),
            "--keep" => args.keep = true,
            "--database-url" => args.database_url = Some(value()?),
            "--backend" => {
                args.backend = match value()?.as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" => Backend::Postgres,
                    other => anyhow::bail!("unknown backend {other}"),
                }
            }
            _ => anyhow::bail!(
                "usage: users-search-bench [--profiles N] [--queries N] [--backend sqlite|postgres] [--seed S] [--data-dir DIR] [--database-url URL] [--keep]"
            ),
        }
    }
    Ok(args)
}

/// Resident memory of this process, MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let test_db = match &args.database_url {
        Some(_) => None,
        None => kit::testing::test_db(args.backend, "users-search-bench").await,
    };
    let url = match (&test_db, args.backend) {
        _ if args.database_url.is_some() => args.database_url.clone(),
        (Some(t), _) => t.url.clone(),
        (None, Backend::Postgres) => {
            anyhow::bail!("set TEST_DATABASE_URL for the postgres backend")
        }
        (None, Backend::Sqlite) => None,
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| dir.path().to_path_buf());
    let db = Db::open(url.as_deref(), &data_dir, users::NAME).await?;
    db.migrate(users::store::MIGRATIONS).await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profiles")
        .fetch_one(db.pool())
        .await?;
    if existing as usize >= args.profiles {
        eprintln!("reusing {existing} profiles");
    } else {
        let load_url = url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join(format!("{}.db", users::NAME)).display()
            )
        });
        let started = Instant::now();
        bench::load_profiles(&load_url, args.profiles, args.seed, |done| {
            if done % 100_000 == 0 {
                eprintln!("generated {done} profiles in {:.1?}", started.elapsed());
            }
        })
        .await?;
        if args.backend == Backend::Postgres {
            // As autovacuum would in a steady state.
            sqlx::query("VACUUM ANALYZE").execute(db.pool()).await?;
        }
    }
    let rss_before = rss_mib();
    let started = Instant::now();
    let (index, _feed) = search::feed::load(&db).await?;
    let load_time = started.elapsed();
    let rss_after = rss_mib();
    let stats = index.stats();
    println!(
        "backend {:?}, {} profiles: index loaded in {:.2} s; RSS {:.0} MiB before, {:.0} MiB after (+{:.0} MiB); {} trigrams, {} postings",
        args.backend,
        stats.documents,
        load_time.as_secs_f64(),
        rss_before,
        rss_after,
        rss_after - rss_before,
        stats.trigrams,
        stats.postings
    );
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10} {:>9} {:>13} {:>13}",
        "query", "n", "p50 ms", "p99 ms", "max ms", "avg hits", "index p50 ms", "index p99 ms"
    );
    let nobody = std::collections::HashSet::new();
    let caller = uuid::Uuid::now_v7().to_string();
    let mut rng = StdRng::seed_from_u64(args.seed + 1);
    for kind in bench::QUERY_KINDS {
        let qs = bench::queries(kind, &mut rng, args.queries);
        let mut times = Vec::with_capacity(qs.len());
        let mut index_times = Vec::with_capacity(qs.len());
        let mut hits = 0usize;
        for (i, raw) in qs.iter().enumerate() {
            let Some(q) = search::Query::parse(raw) else {
                continue;
            };
            let start = Instant::now();
            let (items, _) =
                users::api::search::search_page(&db, &index, &q, &caller, None, 20).await?;
            let elapsed = start.elapsed();
            // The in-memory part alone (no SQL): what the index costs.
            let start = Instant::now();
            let keys = index.page(&q, &nobody, None, 21);
            let index_elapsed = start.elapsed();
            std::hint::black_box(keys);
            // The first few queries warm caches and are not counted.
            if i >= 5 {
                times.push(elapsed);
                index_times.push(index_elapsed);
                hits += items.len();
            }
        }
        if times.is_empty() {
            continue;
        }
        times.sort();
        index_times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<10} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>9.1} {:>13.2} {:>13.2}",
            kind,
            times.len(),
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
            hits as f64 / times.len() as f64,
            ms(percentile(&index_times, 0.50)),
            ms(percentile(&index_times, 0.99)),
        );
    }
    db.close().await;
    if args.keep
        && let Some(t) = test_db
    {
        println!("kept database {}", t.url.as_deref().unwrap_or("(sqlite)"));
        std::mem::forget(t);
    }
    Ok(())
}
