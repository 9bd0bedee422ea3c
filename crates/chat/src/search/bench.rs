//! Benchmark data for message search (the bench crate's `message-search` scenario):
//! rooms and messages written straight into chat's schema through chat's own store and
//! index functions (`store::insert_messages`, `store::search::index`, the same
//! normalisation as the service), because 1,000,000 sends through the API would take
//! longer than the measurement. Message bodies draw words from a Zipf-distributed
//! vocabulary (s = 1: the commonest word is in most messages, most words are rare), a
//! few of them accented, Cyrillic, Arabic or CJK; the queries mix common words, rare
//! words, prefixes, two-word searches, phrases and those other scripts.

use std::collections::HashMap;

use anyhow::Context;
use kit::db::Db;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::domain::{Message, Role};
use crate::store;

/// The 80 commonest words of English chat, in order (the head of the Zipf curve).
const COMMON: &[&str] = &[
    "the", "to", "i", "a", "and", "is", "it", "you", "that", "in", "we", "for", "this", "on", "of",
    "be", "have", "can", "will", "just", "with", "do", "not", "are", "so", "but", "at", "if", "me",
    "what", "my", "was", "there", "now", "get", "ok", "thanks", "yes", "know", "think", "like",
    "up", "need", "out", "one", "about", "all", "time", "today", "build", "release", "deploy",
    "test", "fix", "meeting", "review", "merge", "branch", "server", "issue", "team", "please",
    "done", "check", "tomorrow", "update", "change", "code", "error", "customer", "design", "data",
    "week", "call", "working", "looks", "good", "problem", "plan", "ticket",
];

/// Words of other scripts, placed at ranks 100, 150, 200, … of the vocabulary.
const OTHER: &[&str] = &[
    "café",
    "réunion",
    "déploiement",
    "équipe",
    "straße",
    "größe",
    "überprüfung",
    "mañana",
    "canción",
    "açúcar",
    "привет",
    "сервер",
    "релиз",
    "ошибка",
    "встреча",
    "مرحبا",
    "اجتماع",
    "خادم",
    "東京",
    "会議",
    "项目",
    "服务器",
    "問題",
    "테스트",
];

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
    "cl", "dr", "fl", "gr", "pl", "st", "tr", "sh", "ch", "th",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"];

/// A vocabulary and its Zipf sampler.
pub struct Corpus {
    pub words: Vec<String>,
    /// Cumulative weights (rank r has weight 1 / (r + 1)).
    cdf: Vec<f64>,
}

impl Corpus {
    /// `size` words: [`COMMON`], then made-up words of 2–4 syllables, with [`OTHER`]
    /// spread among them from rank 100.
    pub fn new(size: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(11);
        let mut words: Vec<String> = COMMON.iter().map(|w| (*w).to_owned()).collect();
        let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
        let mut other = OTHER.iter();
        while words.len() < size {
            if words.len() >= 100
                && words.len().is_multiple_of(50)
                && let Some(w) = other.next()
            {
                words.push((*w).to_owned());
                continue;
            }
            let syllables = rng.random_range(2..=4);
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(ONSETS[rng.random_range(0..ONSETS.len())]);
                w.push_str(VOWELS[rng.random_range(0..VOWELS.len())]);
            }
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut cdf = Vec::with_capacity(size);
        let mut total = 0.0;
        for r in 0..size {
            total += 1.0 / (r as f64 + 1.0);
            cdf.push(total);
        }
        Self { words, cdf }
    }

    /// A word's rank, Zipf-distributed.
    pub fn rank(&self, rng: &mut impl Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * total;
        self.cdf
            .partition_point(|&c| c < x)
            .min(self.words.len() - 1)
    }

    /// A message body of 4–20 words.
    pub fn body(&self, rng: &mut impl Rng) -> String {
        let n = rng.random_range(4..=20);
        let mut out = String::new();
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[self.rank(rng)]);
        }
        out
    }

    /// `n` queries of one kind: `common` (top-20 word), `rare` (rank 5,000 or more),
    /// `prefix` (3 letters of a rank 50–2,000 word), `two-words` (a common and a
    /// mid-frequency word), `phrase` (two words in a row from a generated message,
    /// quoted), `scripts` (the accented, Cyrillic, Arabic and CJK words).
    pub fn queries(&self, kind: &str, rng: &mut impl Rng, n: usize) -> Vec<String> {
        let size = self.words.len();
        (0..n)
            .map(|_| match kind {
                "common" => self.words[rng.random_range(0..20)].clone(),
                "rare" => self.words[rng.random_range(5_000.min(size - 1)..size)].clone(),
                "prefix" => {
                    let w = &self.words[rng.random_range(50..2_000.min(size))];
                    w.chars().take(3).collect()
                }
                "two-words" => format!(
                    "{} {}",
                    self.words[rng.random_range(0..20)],
                    self.words[rng.random_range(100..1_000.min(size))]
                ),
                "phrase" => {
                    let body = self.body(rng);
                    let words: Vec<&str> = body.split(' ').collect();
                    let i = rng.random_range(0..words.len() - 1);
                    format!("\"{} {}\"", words[i], words[i + 1])
                }
                _ => OTHER[rng.random_range(0..OTHER.len())].to_owned(),
            })
            .collect()
    }
}

/// What [`load`] created.
pub struct Loaded {
    pub rooms: Vec<Uuid>,
}

/// Creates the schema (chat's migrations), `rooms` rooms and `messages` messages spread
/// evenly over them at random, one every 2.6 s of the last `messages` × 2.6 s, stored
/// and indexed in transactions of 5,000 with chat's own store functions. `progress` gets
/// the count stored so far. Then `ANALYZE` (PostgreSQL), as autovacuum would after a
/// load this size, so the planner knows the tables.
pub async fn load(
    url: &str,
    rooms: usize,
    messages: usize,
    seed: u64,
    progress: impl Fn(usize),
) -> anyhow::Result<Loaded> {
    let db = Db::connect(url).await?;
    db.migrate(store::MIGRATIONS).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let corpus = Corpus::new(20_000);
    let now = kit::time::now_ms();
    let start = now - messages as i64 * 2_600;
    let mut room_ids = Vec::with_capacity(rooms);
    let mut tx = db.begin().await?;
    for i in 0..rooms {
        let id = Uuid::now_v7();
        let owner = Uuid::new_v4();
        let name = format!("room-{i}");
        store::insert_room(
            tx.conn(),
            &store::NewRoom {
                id,
                kind: "channel",
                name: &name,
                topic: "",
                visibility: "public",
                owner_id: owner,
                dm_key: None,
                created_at: start,
            },
        )
        .await?;
        store::add_member(tx.conn(), id, owner, Role::Owner, start).await?;
        room_ids.push(id);
    }
    tx.commit().await?;

    let senders: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let mut seqs: HashMap<Uuid, i64> = HashMap::new();
    let mut done = 0;
    while done < messages {
        let n = (messages - done).min(5_000);
        let mut batch = Vec::with_capacity(n);
        for k in 0..n {
            let room = room_ids[rng.random_range(0..room_ids.len())];
            let seq = seqs.entry(room).or_default();
            *seq += 1;
            let created_at = start + (done + k) as i64 * 2_600;
            let m: Message = serde_json::from_value(serde_json::json!({
                "id": Uuid::now_v7(), "room_id": room, "seq": *seq,
                "sender_id": senders[rng.random_range(0..senders.len())],
                "body": corpus.body(&mut rng), "client_msg_id": null, "reply_to": null,
                "created_at": kit::time::rfc3339(created_at), "edited_at": null,
                "deleted": false,
            }))
            .context("building a message")?;
            batch.push((m, created_at));
        }
        let rows: Vec<(&Message, i64)> = batch.iter().map(|(m, c)| (m, *c)).collect();
        let mut tx = db.begin().await?;
        store::insert_messages(tx.conn(), &rows).await?;
        store::search::index(tx.conn(), &rows).await?;
        tx.commit().await?;
        done += n;
        progress(done);
    }
    let mut counts: Vec<(Uuid, i64)> = seqs.into_iter().collect();
    counts.sort_unstable();
    let mut tx = db.begin().await?;
    store::take_seqs(tx.conn(), &counts).await?;
    tx.commit().await?;
    if db.backend() == kit::db::Backend::Postgres {
        sqlx::query("ANALYZE").execute(db.pool()).await?;
    }
    db.close().await;
    Ok(Loaded { rooms: room_ids })
}

/// Makes `user` a member of `rooms` (the searching user, registered after the load).
pub async fn join(url: &str, user: Uuid, rooms: &[Uuid]) -> anyhow::Result<()> {
    let db = Db::connect(url).await?;
    let mut tx = db.begin().await?;
    for room in rooms {
        store::add_member(tx.conn(), *room, user, Role::Member, kit::time::now_ms()).await?;
    }
    tx.commit().await?;
    db.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_zipf_and_queries_are_well_formed() {
        let c = Corpus::new(20_000);
        assert_eq!(c.words.len(), 20_000);
        assert!(c.words.iter().any(|w| w == "東京"));
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..10_000).map(|_| c.rank(&mut rng)).collect();
        // Rank 0 takes 1/H(20000) ≈ 9.4% of draws; ranks ≥ 5,000 about 14%.
        let top = draws.iter().filter(|&&r| r == 0).count();
        assert!((700..1_200).contains(&top), "{top}");
        let tail = draws.iter().filter(|&&r| r >= 5_000).count();
        assert!((1_000..1_900).contains(&tail), "{tail}");
        for kind in ["common", "rare", "prefix", "two-words", "phrase", "scripts"] {
            for q in c.queries(kind, &mut rng, 50) {
                assert!(!crate::search::parse_query(&q).is_empty(), "{kind}: {q}");
            }
        }
    }
}
