//! `search`: generates profiles straight into the user service's database — its own
//! migrations, and its own normalisation and trigram indexing code (`users::search`), so
//! the rows are exactly what the service would have written — then starts the server on
//! that data and measures `GET /users/search` for prefix, substring and typo queries.
//! SQLite always; PostgreSQL too when a database URL is given.

use std::sync::Arc;
use std::time::Instant;

use kit::db::Db;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::AssertSqlSafe;
use users::search;

use crate::load::{self, Mode};
use crate::stats::{Check, Report, Row};
use crate::system::{ScratchDb, System, SystemOptions};
use crate::{Cli, api};

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
    "andré",
    "chloé",
    "inès",
    "jürgen",
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
    "kowalski",
    "novák",
    "rossi",
    "bianchi",
    "nakamura",
    "nguyen",
    "ivanova",
    "fernandez",
    "oconnor",
    "vanderberg",
];
const CJK: &[&str] = &[
    "山田太郎",
    "田中花子",
    "佐藤一郎",
    "鈴木美咲",
    "王伟",
    "李芳",
    "张娜",
    "김민준",
    "이서연",
];

// Small statements: sqlx looks every parameter up by name, quadratic in their number.
const BATCH: usize = 50;
const TX_PROFILES: usize = 10_000;
const TRIGRAMS_PER_STATEMENT: usize = 100;

struct Profile {
    id: String,
    username: String,
    display_name: String,
    followers: i64,
}

fn fold(s: &str) -> String {
    search::normalize(s)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn generate(rng: &mut StdRng, i: usize) -> Profile {
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    let (username, display_name) = if rng.random_ratio(1, 20) {
        (
            format!("user{i}"),
            CJK[rng.random_range(0..CJK.len())].to_owned(),
        )
    } else {
        let sep = ["_", ".", ""][rng.random_range(0..3)];
        (
            format!("{}{sep}{}{i}", fold(first), fold(last)),
            format!("{} {}", capitalised(first), capitalised(last)),
        )
    };
    // Heavy-tailed follower counts, as in real social graphs.
    let u: f64 = rng.random_range(0.0001..1.0);
    Profile {
        id: uuid::Uuid::now_v7().to_string(),
        username,
        display_name,
        followers: ((1.0 / (u * u)) as i64 - 1).min(5_000_000),
    }
}

/// Inserts `n` profiles and their trigram rows, the way the user service stores them.
/// Inserts `n` profiles and their trigram rows, the way the user service stores them.
/// One connection of its own, large transactions, and on SQLite a big page cache and no
/// fsync: this is test data, and the default 2 MiB cache makes random B-tree inserts crawl.
async fn load_profiles(url: &str, sqlite: bool, n: usize, rng: &mut StdRng) -> anyhow::Result<()> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    if sqlite {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = OFF",
            "PRAGMA cache_size = -1048576",
        ] {
            sqlx::query(pragma).execute(&mut conn).await?;
        }
    }
    let bar = crate::progress::counted("generating profiles", n as u64);
    let now = kit::time::now_ms();
    let mut done = 0;
    while done < n {
        let count = TX_PROFILES.min(n - done);
        let rows: Vec<Profile> = (done..done + count).map(|i| generate(rng, i)).collect();
        let mut trigrams: Vec<(String, String)> = Vec::new();
        let mut tx = conn.begin().await?;
        for chunk in rows.chunks(BATCH) {
            let values: Vec<String> = (0..chunk.len())
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
            for p in chunk {
                let (un, dn) = (
                    search::normalize(&p.username),
                    search::normalize(&p.display_name),
                );
                for t in search::index_trigrams(&[&un, &dn]) {
                    trigrams.push((t, p.id.clone()));
                }
                q = q
                    .bind(p.id.clone())
                    .bind(p.username.clone())
                    .bind(p.display_name.clone())
                    .bind(now)
                    .bind(p.followers)
                    .bind(un)
                    .bind(dn);
            }
            q.execute(&mut *tx).await?;
        }
        // In key order, so each B-tree page is visited once per transaction.
        trigrams.sort_unstable();
        for chunk in trigrams.chunks(TRIGRAMS_PER_STATEMENT) {
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
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        done += count;
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Typical queries of one kind, derived from the same name lists as the profiles.
pub fn queries(kind: &str, rng: &mut StdRng, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let first = fold(FIRST[rng.random_range(0..FIRST.len())]);
        let last = fold(LAST[rng.random_range(0..LAST.len())]);
        let q = match kind {
            // What a person types before the list narrows: the first letters of a username.
            "prefix" => first.chars().take(rng.random_range(2..=4)).collect(),
            // A piece from inside a surname.
            "substring" => {
                let chars: Vec<char> = last.chars().collect();
                if chars.len() < 6 {
                    continue;
                }
                chars[1..5].iter().collect()
            }
            // A first name with two neighbouring letters swapped.
            "typo" => {
                let mut chars: Vec<char> = first.chars().collect();
                if chars.len() < 5 {
                    continue;
                }
                let i = rng.random_range(1..chars.len() - 2);
                chars.swap(i, i + 1);
                chars.into_iter().collect()
            }
            _ => continue,
        };
        out.push(q);
    }
    out
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
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    load_profiles(&url, scratch.is_none(), cli.profiles, &mut rng).await?;
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
            queries(kind, &mut rng, 500)
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
    fn query_kinds_have_their_shape() {
        let mut rng = StdRng::seed_from_u64(1);
        for q in queries("prefix", &mut rng, 50) {
            assert!((2..=4).contains(&q.chars().count()), "{q}");
        }
        for q in queries("substring", &mut rng, 50) {
            assert_eq!(q.chars().count(), 4, "{q}");
        }
        for q in queries("typo", &mut rng, 50) {
            assert!(q.chars().count() >= 5 && q.is_ascii(), "{q}");
        }
        assert_eq!(queries("nope", &mut rng, 0).len(), 0);
    }

    #[test]
    fn encoding_and_generation() {
        assert_eq!(encode("zoë smith"), "zo%C3%AB%20smith");
        let mut rng = StdRng::seed_from_u64(3);
        let p = generate(&mut rng, 12);
        assert!(p.username.ends_with("12"), "{}", p.username);
        assert!(!p.display_name.is_empty());
        assert!(p.followers >= 0);
    }
}
