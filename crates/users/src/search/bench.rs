//! Benchmark data for people search, shared by `users-search-bench` (in-process) and the
//! `bench` crate's `search` scenario (over HTTP): realistic mixes of Latin, accented and
//! CJK names with heavy-tailed follower counts, written straight into the user service's
//! schema with its own normalisation, and the typical queries people type.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{AssertSqlSafe, Connection};

use super::normalize;

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

/// Query kinds of [`queries`].
pub const QUERY_KINDS: &[&str] = &["prefix", "substring", "typo", "typo-2", "cjk"];

/// One generated profile.
#[derive(Debug, Clone)]
pub struct Generated {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub followers: i64,
}

fn fold(s: &str) -> String {
    normalize(s)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn capitalised(word: &str) -> String {
    word.split(' ')
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn pick(rng: &mut StdRng, list: &[&'static str]) -> &'static str {
    list[rng.random_range(0..list.len())]
}

/// Profile number `i`: 1 in 20 with a CJK display name, the others "First Last" with a
/// username like `first_last17`; followers heavy-tailed, as in real social graphs.
pub fn generate(rng: &mut StdRng, i: usize) -> Generated {
    let (username, display_name) = if rng.random_ratio(1, 20) {
        let (f, g) = (pick(rng, CJK_FAMILY), pick(rng, CJK_GIVEN));
        (format!("user{i}"), format!("{f}{g}"))
    } else {
        let (first, last) = (pick(rng, FIRST), pick(rng, LAST));
        let sep = ["_", ".", ""][rng.random_range(0..3)];
        (
            format!("{}{sep}{}{i}", fold(first), fold(last)),
            format!("{} {}", capitalised(first), capitalised(last)),
        )
    };
    let u: f64 = rng.random_range(0.0001..1.0);
    Generated {
        id: uuid::Uuid::now_v7().to_string(),
        username,
        display_name,
        followers: ((1.0 / (u * u)) as i64 - 1).min(5_000_000),
    }
}

// Small statements: sqlx looks every parameter up by name, quadratic in their number.
const BATCH: usize = 50;
const TX_PROFILES: usize = 10_000;

/// Inserts `n` generated profiles (seeded by `seed`) into the migrated users database at
/// `url`, as the service stores them; `progress` is called with the count done.
/// One connection of its own, large transactions, and on SQLite a big page cache and no
/// fsync: this is test data.
pub async fn load_profiles(
    url: &str,
    n: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    if sqlite {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = OFF",
            "PRAGMA cache_size = -262144",
        ] {
            sqlx::query(pragma).execute(&mut conn).await?;
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let now = kit::time::now_ms();
    let mut done = 0;
    while done < n {
        let count = TX_PROFILES.min(n - done);
        let rows: Vec<Generated> = (done..done + count)
            .map(|i| generate(&mut rng, i))
            .collect();
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
                q = q
                    .bind(p.id.clone())
                    .bind(p.username.clone())
                    .bind(p.display_name.clone())
                    .bind(now)
                    .bind(p.followers)
                    .bind(normalize(&p.username))
                    .bind(normalize(&p.display_name));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        done += count;
        progress(done);
    }
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

fn transpose_middle(word: &str, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 4 {
        let i = rng.random_range(1..chars.len() - 2);
        chars.swap(i, i + 1);
    }
    chars.into_iter().collect()
}

/// `n` typical queries of `kind` (one of [`QUERY_KINDS`]), from the generator's names:
/// `prefix` the first 2–4 letters of a first name (what a person types before the list
/// narrows), `substring` 4 letters from inside a surname, `typo` a first name of 5+
/// letters with two neighbours swapped, `typo-2` a first name of 8+ letters with a swap
/// and a deletion, `cjk` a CJK given name (a 2-character substring). Unknown kinds give
/// nothing.
pub fn queries(kind: &str, rng: &mut StdRng, n: usize) -> Vec<String> {
    if !QUERY_KINDS.contains(&kind) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let first = fold(pick(rng, FIRST));
        let last = fold(pick(rng, LAST));
        let q = match kind {
            "prefix" => first.chars().take(rng.random_range(2..=4)).collect(),
            "substring" => {
                let chars: Vec<char> = last.chars().collect();
                if chars.len() < 6 {
                    continue;
                }
                chars[1..5].iter().collect()
            }
            "typo" => {
                if first.chars().count() < 5 {
                    continue;
                }
                transpose_middle(&first, rng)
            }
            "typo-2" => {
                if first.chars().count() < 8 {
                    continue;
                }
                let mut chars: Vec<char> = transpose_middle(&first, rng).chars().collect();
                chars.remove(chars.len() - 2);
                chars.into_iter().collect()
            }
            _ => {
                let given = pick(rng, CJK_GIVEN);
                if given.chars().count() != 2 {
                    continue;
                }
                given.to_owned()
            }
        };
        out.push(q);
    }
    out
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
        for q in queries("typo-2", &mut rng, 50) {
            assert!(q.chars().count() >= 7, "{q}");
        }
        for q in queries("cjk", &mut rng, 20) {
            assert_eq!(q.chars().count(), 2, "{q}");
        }
        assert!(queries("nope", &mut rng, 5).is_empty());
    }

    #[test]
    fn generation_is_plausible() {
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..200 {
            let p = generate(&mut rng, i);
            assert!(p.username.ends_with(&i.to_string()), "{}", p.username);
            assert!(!p.display_name.is_empty());
            assert!(p.followers >= 0);
        }
    }
}
