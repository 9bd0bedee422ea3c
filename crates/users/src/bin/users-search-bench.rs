//! Search benchmark: generates N profiles (realistic mixes of Latin, accented and CJK
//! names, skewed follower counts) straight into a fresh users database with the service's
//! own schema and indexing code, then times typical queries through the same function the
//! `GET /users/search` handler uses, and prints p50/p99 per kind of query.
//!
//! ```text
//! cargo run --release -p users --bin users-search-bench -- --profiles 100000 --backend sqlite
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p users --bin users-search-bench -- --profiles 100000 --backend postgres
//! ```
//! PostgreSQL uses a new database created from `TEST_DATABASE_URL` and dropped at the end.

use std::time::{Duration, Instant};

use kit::db::{Backend, Db};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::AssertSqlSafe;
use users::search;

const FIRST: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "david",
    "emma",
    "frank",
    "grace",
    "henry",
    "isabel",
    "jack",
    "karen",
    "liam",
    "maria",
    "noah",
    "olivia",
    "peter",
    "quinn",
    "rachel",
    "samuel",
    "sophia",
    "thomas",
    "ursula",
    "victor",
    "wendy",
    "xavier",
    "yasmin",
    "zoë",
    "josé",
    "françois",
    "björn",
    "søren",
    "łukasz",
    "andré",
    "chloé",
    "mathéo",
    "inès",
    "jürgen",
    "ana",
    "christopher",
    "alexander",
    "benjamin",
    "charlotte",
    "elizabeth",
    "jonathan",
    "matthew",
    "nicholas",
    "stephanie",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcía",
    "miller",
    "davis",
    "rodríguez",
    "martínez",
    "hernández",
    "lópez",
    "gonzález",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "pérez",
    "thompson",
    "white",
    "harris",
    "sánchez",
    "clark",
    "müller",
    "schröder",
    "dubois",
    "lefèvre",
    "nørgaard",
    "kowalski",
    "novák",
    "rossi",
    "bianchi",
    "saldaña",
    "ødegaard",
    "straße",
    "o'connor",
    "van der berg",
    "nakamura",
    "kim",
    "nguyen",
    "ivanova",
];
const CJK_FAMILY: &[&str] = &[
    "山田", "田中", "佐藤", "鈴木", "高橋", "王", "李", "张", "刘", "陈", "김", "이", "박",
];
const CJK_GIVEN: &[&str] = &[
    "太郎", "花子", "一郎", "美咲", "健太", "伟", "芳", "娜", "秀英", "민준", "서연", "지우",
];

struct Args {
    profiles: usize,
    /// SQLite only: keep the database here and reuse it on the next run.
    data_dir: Option<std::path::PathBuf>,
    /// PostgreSQL only: keep the generated database (its URL is printed) for inspection.
    keep: bool,
    queries: usize,
    backend: Backend,
    seed: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        keep: false,
        data_dir: None,
        profiles: 100_000,
        queries: 200,
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
            "--backend" => {
                args.backend = match value()?.as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" => Backend::Postgres,
                    other => anyhow::bail!("unknown backend {other}"),
                }
            }
            _ => anyhow::bail!(
                "usage: users-search-bench [--profiles N] [--queries N] [--backend sqlite|postgres] [--seed S] [--data-dir DIR] [--keep]"
            ),
        }
    }
    Ok(args)
}

struct Generated {
    id: String,
    username: String,
    display_name: String,
    followers: i64,
}

fn ascii_fold(s: &str) -> String {
    search::normalize(s)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn generate(rng: &mut StdRng, i: usize) -> Generated {
    let pick = |rng: &mut StdRng, list: &[&'static str]| list[rng.random_range(0..list.len())];
    let (username, display_name) = if rng.random_ratio(1, 20) {
        let (f, g) = (pick(rng, CJK_FAMILY), pick(rng, CJK_GIVEN));
        (format!("user{i}"), format!("{f}{g}"))
    } else {
        let (first, last) = (pick(rng, FIRST), pick(rng, LAST));
        let sep = ["_", ".", ""][rng.random_range(0..3)];
        let username = format!("{}{sep}{}{}", ascii_fold(first), ascii_fold(last), i);
        let mut display = String::new();
        for (n, word) in [first, last].iter().enumerate() {
            if n > 0 {
                display.push(' ');
            }
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                display.extend(c.to_uppercase());
                display.push_str(chars.as_str());
            }
        }
        (username, display)
    };
    // Heavy-tailed follower counts, as in real social graphs.
    let u: f64 = rng.random_range(0.0001..1.0);
    let followers = ((1.0 / (u * u)) as i64 - 1).min(5_000_000);
    Generated {
        id: uuid::Uuid::now_v7().to_string(),
        username,
        display_name,
        followers,
    }
}

async fn load(db: &Db, args: &Args, rng: &mut StdRng) -> anyhow::Result<Vec<Generated>> {
    let mut samples = Vec::new();
    let batch = 500;
    let mut done = 0;
    let started = Instant::now();
    while done < args.profiles {
        let n = batch.min(args.profiles - done);
        let rows: Vec<Generated> = (done..done + n).map(|i| generate(rng, i)).collect();
        let mut tx = db.begin().await?;
        let values: Vec<String> = (0..n)
            .map(|r| {
                let b = r * 7;
                // created_at and updated_at share one parameter.
                let p: Vec<String> = [1, 2, 3, 4, 4, 5, 6, 7]
                    .iter()
                    .map(|k| format!("${}", b + k))
                    .collect();
                format!("({}, 1)", p.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO profiles (id, username, display_name, created_at, updated_at, followers_count, username_norm, display_norm, registered) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        let mut trigrams: Vec<(String, String)> = Vec::new();
        let now = kit::time::now_ms();
        for g in &rows {
            let (un, dn) = (
                search::normalize(&g.username),
                search::normalize(&g.display_name),
            );
            for t in search::index_trigrams(&[&un, &dn]) {
                trigrams.push((t, g.id.clone()));
            }
            q = q
                .bind(g.id.clone())
                .bind(g.username.clone())
                .bind(g.display_name.clone())
                .bind(now)
                .bind(g.followers)
                .bind(un)
                .bind(dn);
        }
        q.execute(tx.conn()).await?;
        for chunk in trigrams.chunks(2000) {
            let values: Vec<String> = (0..chunk.len())
                .map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2))
                .collect();
            let sql = format!(
                "INSERT INTO profile_trigrams (trigram, user_id) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (t, id) in chunk {
                q = q.bind(t.as_str()).bind(id.as_str());
            }
            q.execute(tx.conn()).await?;
        }
        tx.commit().await?;
        done += n;
        for g in rows {
            if samples.len() < 5000 && rng.random_ratio(1, 10) {
                samples.push(g);
            }
        }
        if done % 50_000 == 0 || done == args.profiles {
            eprintln!("loaded {done} profiles in {:.1?}", started.elapsed());
        }
    }
    // As autovacuum would in a steady state (PostgreSQL index-only scans need the visibility map).
    let analyze = if db.backend() == Backend::Postgres {
        "VACUUM ANALYZE"
    } else {
        "ANALYZE"
    };
    sqlx::query(analyze).execute(db.pool()).await?;
    Ok(samples)
}

async fn reload_samples(db: &Db) -> anyhow::Result<Vec<Generated>> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT id, username, display_name, followers_count FROM profiles ORDER BY random() LIMIT 5000")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Generated {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
                display_name: r.try_get("display_name")?,
                followers: r.try_get("followers_count")?,
            })
        })
        .collect()
}

fn transpose_middle(word: &str, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 4 {
        let i = rng.random_range(1..chars.len() - 2);
        chars.swap(i, i + 1);
    }
    chars.into_iter().collect()
}

fn queries(kind: &str, samples: &[Generated], rng: &mut StdRng, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let g = &samples[rng.random_range(0..samples.len())];
        let dn = search::normalize(&g.display_name);
        let first_word = search::words(&dn).next().unwrap_or("").to_owned();
        let q = match kind {
            "prefix-2" => g.username.chars().take(2).collect(),
            "prefix-4" => g.username.chars().take(4).collect(),
            "exact" => g.username.clone(),
            "substring" => {
                let Some(last) = search::words(&dn).nth(1) else {
                    continue;
                };
                let chars: Vec<char> = last.chars().collect();
                if chars.len() < 6 {
                    continue;
                }
                chars[1..5].iter().collect()
            }
            "typo-1" => {
                if first_word.chars().count() < 5 || !first_word.is_ascii() {
                    continue;
                }
                transpose_middle(&first_word, rng)
            }
            "typo-2" => {
                if first_word.chars().count() < 8 || !first_word.is_ascii() {
                    continue;
                }
                let once = transpose_middle(&first_word, rng);
                let mut chars: Vec<char> = once.chars().collect();
                chars.remove(chars.len() - 2);
                chars.into_iter().collect()
            }
            "cjk-2" => {
                let chars: Vec<char> = dn.chars().collect();
                if !chars.iter().all(|c| !c.is_ascii()) || chars.len() < 3 {
                    continue;
                }
                chars[chars.len() - 2..].iter().collect()
            }
            _ => continue,
        };
        out.push(q);
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let test_db = kit::testing::test_db(args.backend, "users-search-bench").await;
    let url = match (&test_db, args.backend) {
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
    let db = Db::open(url.as_deref(), &data_dir, "users").await?;
    db.migrate(users::MIGRATIONS).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profiles")
        .fetch_one(db.pool())
        .await?;
    let samples = if existing as usize >= args.profiles {
        eprintln!("reusing {existing} profiles");
        reload_samples(&db).await?
    } else {
        load(&db, &args, &mut rng).await?
    };
    let trigram_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profile_trigrams")
        .fetch_one(db.pool())
        .await?;
    println!(
        "backend {:?}, {} profiles, {} trigram rows",
        args.backend, args.profiles, trigram_rows
    );
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "query", "n", "p50 ms", "p99 ms", "max ms", "avg hits"
    );
    let caller = uuid::Uuid::now_v7().to_string();
    for kind in [
        "exact",
        "prefix-2",
        "prefix-4",
        "substring",
        "typo-1",
        "typo-2",
        "cjk-2",
    ] {
        let qs = queries(kind, &samples, &mut rng, args.queries);
        let mut times = Vec::with_capacity(qs.len());
        let mut hits = 0usize;
        for (i, raw) in qs.iter().enumerate() {
            let Some(q) = search::Query::parse(raw) else {
                continue;
            };
            let start = Instant::now();
            let (items, _) = users::api::search::search_page(&db, &q, &caller, None, 20).await?;
            // The first few queries warm caches and are not counted.
            if i >= 5 {
                times.push(start.elapsed());
                hits += items.len();
            }
        }
        if times.is_empty() {
            continue;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<10} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>9.1}",
            kind,
            times.len(),
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
            hits as f64 / times.len() as f64
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
