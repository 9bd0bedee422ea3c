//! People search: normalisation, the trigram index keys, and ranking.
//!
//! # Why this mechanism
//! The same results are required on SQLite and PostgreSQL, so the search does not use
//! `pg_trgm` or FTS5 (different tokenisers, different similarity scores). Instead the
//! service keeps its own portable index, written in the same transaction as every name
//! change:
//!
//! - `profiles.username_norm` / `display_norm`: the name lower-cased, NFKD-decomposed with
//!   combining marks removed (`Zoë` → `zoe`), a few letters without a decomposition
//!   folded (`ß` → `ss`, `ø` → `o`), whitespace collapsed. Byte-ordered B-tree indexes on
//!   them (`COLLATE "C"` on PostgreSQL) serve equality and prefix ranges
//!   `norm >= q AND norm < q || U+10FFFF`.
//! - `profile_trigrams(trigram, user_id)`: the character trigrams of both normalised names
//!   (characters, not bytes, so CJK works), plus two start-of-word trigrams per word
//!   (`\x01\x01a`, `\x01al`) and one end-of-name trigram (`ce\x03`).
//!
//! A page is filled tier by tier, in rank order, and a tier is only queried while the
//! page is not full (`api::search::search_page`):
//!
//! 0. exact — equality on the normalised names;
//! 1. prefix — the prefix ranges;
//! 2. substring — users holding a few selective trigrams of the query, then the real
//!    substring checked with `instr`/`strpos` (for a 2-character CJK query: trigrams that
//!    start with it);
//!
//! each sorted by followers then id and cut to the page size by the database; then
//!
//! 3. fuzzy — users sharing at least `k` of the query's trigrams and start-of-word
//!    trigrams, where `k = distinct − 4·edits` is the least a name within the allowed
//!    edits must share (one edit, an OSA transposition included, touches at most 4
//!    trigram positions); the best-sharing 1,000 are ranked in Rust by edit distance,
//!    then followers, then id.
//!
//! The order is total and identical on both backends, so a cursor is simply the sort key
//! `(tier, distance, followers, id)` of the last row returned.
//!
//! Fuzzy matching is an optimal-string-alignment distance between the query and the best
//! *prefix* of the name or of one of its words (search-as-you-type): one edit for queries of
//! 4–7 characters, two from 8. Queries shorter than 3 characters match by prefix only, except
//! a 2-character query of CJK script, which also matches as a substring (two ideographs carry
//! as much as a Latin word).
//!
//! Known limits: when `distinct − 4·edits < 1` (e.g. a typo in the first two characters of
//! a 4-character query) a fuzzy match may share no trigram and is not found; a fuzzy
//! match beyond the 1,000 best-sharing candidates is not found either. Cost grows with the
//! posting lists of common trigrams — see `users-search-bench` and `BENCHMARKS.md`.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Marks the start of a word in start-of-word trigrams.
pub const WORD_START: char = '\u{1}';
/// Marks the end of a name in the end-of-name trigram.
pub const NAME_END: char = '\u{3}';
/// Upper bound for prefix ranges: sorts after every valid string with the same prefix.
pub const MAX_CHAR: char = '\u{10FFFF}';

pub const QUERY_MAX_CHARS: usize = 64;

/// Lower-cased, accent-free, whitespace-collapsed form used for matching.
pub fn normalize(s: &str) -> String {
    let lowered: String = s.chars().flat_map(char::to_lowercase).collect();
    let mut out = String::with_capacity(lowered.len());
    let mut pending_space = false;
    for c in lowered.nfkd() {
        if is_combining_mark(c) || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        match c {
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'ø' => out.push('o'),
            'ł' => out.push('l'),
            'đ' | 'ð' => out.push('d'),
            'þ' => out.push_str("th"),
            'ı' => out.push('i'),
            _ => out.push(c),
        }
    }
    out
}

/// Words of a normalised name: runs of letters and digits.
pub fn words(norm: &str) -> impl Iterator<Item = &str> {
    norm.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn push_windows(chars: &[char], out: &mut BTreeSet<String>) {
    for w in chars.windows(3) {
        out.insert(w.iter().collect());
    }
}

fn start_trigrams(word: &str, out: &mut BTreeSet<String>) {
    let mut it = word.chars();
    if let Some(a) = it.next() {
        out.insert([WORD_START, WORD_START, a].iter().collect());
        if let Some(b) = it.next() {
            out.insert([WORD_START, a, b].iter().collect());
        }
    }
}

/// Every trigram the index stores for a profile with these normalised names.
pub fn index_trigrams(names: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in names.iter().filter(|n| !n.is_empty()) {
        let chars: Vec<char> = name.chars().collect();
        push_windows(&chars, &mut out);
        start_trigrams(name, &mut out);
        for w in words(name) {
            start_trigrams(w, &mut out);
        }
        let n = chars.len();
        let tail: String = chars[n.saturating_sub(2)..]
            .iter()
            .chain([NAME_END].iter())
            .collect();
        out.insert(tail);
    }
    out
}

/// Edits tolerated for a normalised query of `chars` characters.
pub fn allowed_edits(chars: usize) -> usize {
    match chars {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// How the store finds substring (tier 2) matches of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Substring {
    /// Prefix matching only (queries under 3 characters).
    None,
    /// Users holding every one of these (few, rare) query trigrams, then checked for the
    /// substring itself.
    AllOf(Vec<String>),
    /// Users holding a trigram that starts with the query (2-character CJK queries).
    TrigramPrefix,
}

/// How the store finds fuzzy (tier 3) candidates: users sharing at least `min_shared`
/// of `trigrams`, the least any name within the allowed edits must share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fuzzy {
    pub trigrams: Vec<String>,
    pub min_shared: usize,
}

/// A normalised, validated query.
#[derive(Debug, Clone)]
pub struct Query {
    pub norm: String,
    pub chars: usize,
    pub edits: usize,
    pub substring: Substring,
    pub fuzzy: Option<Fuzzy>,
}

/// Trigrams probed to find substring candidates; the store then checks the substring
/// itself, so fewer (and rarer) trigrams only mean fewer index entries to read.
const SUBSTRING_PROBES: usize = 3;

/// Rough rarity of a character in names (lower = rarer); digits and non-Latin rank rare.
fn commonness(c: char) -> u32 {
    match c {
        'e' | 'a' | 'n' | 'i' | 'r' | 'o' | 'l' | 's' | 't' => 10,
        'h' | 'c' | 'd' | 'm' | 'u' | 'b' | 'g' => 6,
        ' ' | '_' | '.' | 'y' | 'k' | 'p' | 'w' | 'f' | 'v' => 4,
        'a'..='z' => 2,
        _ => 1,
    }
}

/// The `n` rarest of `trigrams` by [`commonness`], in a stable order.
fn selective_trigrams(trigrams: &BTreeSet<String>, n: usize) -> Vec<String> {
    let mut scored: Vec<(u32, &String)> = trigrams
        .iter()
        .map(|t| (t.chars().map(commonness).sum(), t))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, t)| t.clone()).collect()
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x9FFF | 0xA960..=0xA97F | 0xAC00..=0xD7FF | 0xF900..=0xFAFF
        | 0xFF66..=0xFF9F | 0x20000..=0x3134F)
}

impl Query {
    /// `None` when the normalised query is empty or longer than [`QUERY_MAX_CHARS`].
    pub fn parse(raw: &str) -> Option<Query> {
        if raw.chars().count() > QUERY_MAX_CHARS * 2 {
            return None;
        }
        let norm = normalize(raw);
        let chars = norm.chars().count();
        if chars == 0 || chars > QUERY_MAX_CHARS {
            return None;
        }
        let edits = allowed_edits(chars);
        let chars_vec: Vec<char> = norm.chars().collect();
        let mut inner = BTreeSet::new();
        push_windows(&chars_vec, &mut inner);
        let substring = if chars >= 3 {
            Substring::AllOf(selective_trigrams(&inner, SUBSTRING_PROBES))
        } else if chars == 2 && norm.chars().all(is_cjk) {
            Substring::TrigramPrefix
        } else {
            Substring::None
        };
        let fuzzy = (edits > 0).then(|| {
            let mut all = inner;
            start_trigrams(&norm, &mut all);
            // One edit (an OSA transposition included) touches at most 4 trigram positions.
            let min_shared = all.len().saturating_sub(4 * edits).max(1);
            Fuzzy {
                trigrams: all.into_iter().collect(),
                min_shared,
            }
        });
        Some(Query {
            norm,
            chars,
            edits,
            substring,
            fuzzy,
        })
    }
}

/// Position of a result: lower sorts first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankKey {
    /// 0 exact, 1 prefix, 2 substring, 3 fuzzy.
    pub tier: u8,
    pub distance: u8,
    pub followers: i64,
    pub id: String,
}

impl Ord for RankKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tier
            .cmp(&other.tier)
            .then(self.distance.cmp(&other.distance))
            .then(other.followers.cmp(&self.followers))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One candidate as the store returns it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub username_norm: String,
    pub display_norm: String,
    pub followers: i64,
}

/// Where `c` ranks for `q`, or `None` if it does not match.
pub fn rank(q: &Query, c: &Candidate) -> Option<RankKey> {
    let names = [c.username_norm.as_str(), c.display_norm.as_str()];
    let key = |tier, distance| {
        Some(RankKey {
            tier,
            distance,
            followers: c.followers,
            id: c.id.clone(),
        })
    };
    if names.contains(&q.norm.as_str()) {
        return key(0, 0);
    }
    if names.iter().any(|n| n.starts_with(&q.norm)) {
        return key(1, 0);
    }
    let substring_allowed = q.substring != Substring::None;
    if substring_allowed && names.iter().any(|n| n.contains(&q.norm)) {
        return key(2, 0);
    }
    if q.edits == 0 {
        return None;
    }
    let query: Vec<char> = q.norm.chars().collect();
    let mut best = usize::MAX;
    'names: for name in names {
        for target in std::iter::once(name).chain(words(name)) {
            let t: Vec<char> = target.chars().collect();
            best = best.min(prefix_distance(&query, &t, q.edits));
            // Not a substring, so 1 is the least possible distance.
            if best <= 1 {
                break 'names;
            }
        }
    }
    (best <= q.edits).then(|| key(3, best as u8)).flatten()
}

/// Optimal-string-alignment distance between `q` and the closest prefix of `t`,
/// or `max + 1` when it exceeds `max` (computation stops early).
pub fn prefix_distance(q: &[char], t: &[char], max: usize) -> usize {
    let m = q.len();
    let over = max + 1;
    // Prefixes longer than m + max are more than `max` edits away.
    let n = t.len().min(m + max);
    // Columns of the DP matrix over `q` (rows 0..=m), for t-prefix lengths j-2, j-1, j.
    let mut prev2: Vec<usize> = vec![0; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut best = prev[m];
    let mut cur = vec![0usize; m + 1];
    for j in 1..=n {
        cur[0] = j;
        let tj = t[j - 1];
        for i in 1..=m {
            let cost = usize::from(q[i - 1] != tj);
            let mut v = (prev[i - 1] + cost).min(prev[i] + 1).min(cur[i - 1] + 1);
            if i > 1 && j > 1 && q[i - 1] == t[j - 2] && q[i - 2] == tj {
                v = v.min(prev2[i - 2] + 1);
            }
            cur[i] = v;
        }
        best = best.min(cur[m]);
        let column_min = cur.iter().copied().min().unwrap_or(over);
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
        if column_min > max {
            break;
        }
    }
    best.min(over)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, u: &str, d: &str, followers: i64) -> Candidate {
        Candidate {
            id: id.into(),
            username_norm: normalize(u),
            display_norm: normalize(d),
            followers,
        }
    }

    fn dist(q: &str, t: &str, max: usize) -> usize {
        let q: Vec<char> = q.chars().collect();
        let t: Vec<char> = t.chars().collect();
        prefix_distance(&q, &t, max)
    }

    #[test]
    fn normalizes_case_accents_and_space() {
        assert_eq!(normalize("  Zoë   SALDAÑA "), "zoe saldana");
        assert_eq!(normalize("Straße Øre"), "strasse ore");
        assert_eq!(normalize("山田 太郎"), "山田 太郎");
        assert_eq!(normalize("ＡＢＣ"), "abc");
        assert_eq!(normalize("a\u{7}b"), "ab");
    }

    #[test]
    fn prefix_distance_is_bounded_osa() {
        assert_eq!(dist("alice", "alice_smith", 1), 0);
        assert_eq!(dist("alcie", "alice", 1), 1);
        assert_eq!(dist("alxce", "alice", 1), 1);
        assert_eq!(dist("alce", "alice", 1), 1);
        assert_eq!(dist("alicee", "alice", 1), 1);
        assert_eq!(dist("bob", "alice", 1), 2);
        assert_eq!(dist("christphr", "christopher", 2), 2);
        assert_eq!(dist("xyzxyzxy", "christopher", 2), 3);
        assert_eq!(dist("", "abc", 1), 0);
    }

    #[test]
    fn ranks_by_tier_then_followers() {
        let q = Query::parse("Ali").unwrap();
        assert_eq!(rank(&q, &cand("1", "ali", "Ali", 0)).unwrap().tier, 0);
        assert_eq!(rank(&q, &cand("2", "alison", "A", 0)).unwrap().tier, 1);
        assert_eq!(rank(&q, &cand("3", "kalinda", "K", 0)).unwrap().tier, 2);
        assert!(rank(&q, &cand("4", "bob", "Bob", 0)).is_none());
        let q = Query::parse("smiht").unwrap();
        let k = rank(&q, &cand("5", "jsmith", "John Smith", 0)).unwrap();
        assert_eq!((k.tier, k.distance), (3, 1));
        let a = RankKey {
            tier: 1,
            distance: 0,
            followers: 5,
            id: "b".into(),
        };
        let b = RankKey {
            tier: 1,
            distance: 0,
            followers: 9,
            id: "c".into(),
        };
        assert!(b < a);
    }

    #[test]
    fn short_queries_match_prefix_only_except_cjk() {
        let q = Query::parse("li").unwrap();
        assert_eq!(q.substring, Substring::None);
        assert!(rank(&q, &cand("1", "alice", "Alice", 0)).is_none());
        let q = Query::parse("太郎").unwrap();
        assert_eq!(q.substring, Substring::TrigramPrefix);
        assert_eq!(
            rank(&q, &cand("1", "yamada", "山田太郎", 0)).unwrap().tier,
            2
        );
    }

    #[test]
    fn matches_share_the_trigrams_the_store_requires() {
        // Substrings hold every inner trigram; fuzzy matches share at least min_shared.
        let substrings = [
            ("ali", "alice"),
            ("田太郎", "山田太郎"),
            ("e sal", "zoe saldana"),
            ("mith", "john smith"),
        ];
        for (q, name) in substrings {
            let q = Query::parse(q).unwrap();
            let Substring::AllOf(trigrams) = &q.substring else {
                panic!("{q:?}")
            };
            assert!(!trigrams.is_empty() && trigrams.len() <= SUBSTRING_PROBES);
            let idx = index_trigrams(&[&normalize(name)]);
            assert!(trigrams.iter().all(|t| idx.contains(t)), "{q:?} vs {name}");
        }
        let fuzzy = [
            ("alcie", "alice_smith"),
            ("smiht", "john smith"),
            ("christphr", "christopher"),
            ("christofer", "christopher"),
            ("robni", "christopher robin"),
        ];
        for (q, name) in fuzzy {
            let q = Query::parse(q).unwrap();
            let f = q.fuzzy.as_ref().unwrap();
            let idx = index_trigrams(&[&normalize(name)]);
            let shared = f.trigrams.iter().filter(|t| idx.contains(*t)).count();
            assert!(shared >= f.min_shared, "{q:?} vs {name}: {shared}");
        }
        assert!(Query::parse("abc").unwrap().fuzzy.is_none());
    }

    #[test]
    fn rejects_empty_and_long_queries() {
        assert!(Query::parse("   ").is_none());
        assert!(Query::parse(&"a".repeat(65)).is_none());
        assert!(Query::parse(&"a".repeat(64)).is_some());
    }
}
