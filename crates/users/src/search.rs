//! People search: normalisation, trigram keys, query analysis and ranking; the index
//! itself is [`index`], kept in step across instances by [`feed`].
//!
//! # Why this mechanism
//! The same results are required on SQLite and PostgreSQL, so the search uses neither
//! `pg_trgm` nor FTS5 (different tokenisers, different similarity scores). It used to keep
//! a portable trigram *table* in the database, but every tier then had to materialise and
//! sort its whole match set (a common prefix matches tens of thousands of profiles), which
//! measured 136 ms – 1.9 s at p99 for 1,000,000 profiles. The index now lives in the
//! memory of each users-service instance ([`index::SearchIndex`]): the same Rust code on
//! both backends, so results are identical by construction, and a query costs a few
//! posting-list walks instead of SQL sorts.
//!
//! - Built at startup by streaming `profiles` (id, normalised names, visibility, follower
//!   count); the time is logged (`search index loaded`).
//! - Kept in step by the service's own writes (applied right after their commit) and, for
//!   other instances, by the change feed [`feed`]: every write that changes a name or a
//!   follower count inserts a `search_changes(seq, user_id)` row in the same transaction;
//!   each instance polls the table every 250 ms and re-reads the profiles named there.
//! - The database stays the source of truth; the index can always be rebuilt from it.
//!
//! Normalisation: `profiles.username_norm` / `display_norm` hold the name lower-cased,
//! NFKD-decomposed with combining marks removed (`Zoë` → `zoe`), a few letters without a
//! decomposition folded (`ß` → `ss`, `ø` → `o`), whitespace collapsed. The index stores,
//! per profile, the character trigrams of both normalised names (characters, not bytes,
//! so CJK works), two start-of-word trigrams per word (`\x01\x01a`, `\x01al`) and one
//! end-of-name trigram (`ce\x03`), each as a `u64` key pointing to a sorted posting list
//! of `u32` document numbers; and a sorted array of all names for prefix ranges.
//!
//! A page is filled tier by tier, in rank order, and a tier is only evaluated while the
//! page is not full:
//!
//! 0. exact — the names equal to the query (a binary search in the sorted names);
//! 1. prefix — the names in the prefix range;
//! 2. substring — the intersection of the posting lists of the query's trigrams (shortest
//!    first), each candidate then checked for the substring itself (for a 2-character CJK
//!    query: the union of the lists of trigrams that start with it);
//! 3. fuzzy — users sharing at least `k` of the query's trigrams and start-of-word
//!    trigrams, where `k = distinct − 4·edits` is the least a name within the allowed
//!    edits must share (one edit, an OSA transposition included, touches at most 4
//!    trigram positions); of those, the [`index::FUZZY_CANDIDATES`] sharing the most (ties
//!    by id) are ranked by edit distance.
//!
//! Within a tier: edit distance, then followers (most first), then id. Each tier keeps
//! only the best `limit + 1` hits after the cursor in a bounded heap, so the cost of a
//! query is the size of the posting lists / ranges it walks, never a sort of the match
//! set. The order is total, so a cursor is simply the sort key `(tier, distance,
//! followers, id)` of the last row returned. Users who block the caller are skipped (one
//! indexed SQL query per search fetches them).
//!
//! Fuzzy matching is an optimal-string-alignment distance between the query and the best
//! *prefix* of the name or of one of its words (search-as-you-type): one edit for queries of
//! 4–7 characters, two from 8. Queries shorter than 3 characters match by prefix only, except
//! a 2-character query of CJK script, which also matches as a substring (two ideographs carry
//! as much as a Latin word).
//!
//! Known limits: when `distinct − 4·edits < 1` (e.g. a typo in the first two characters of
//! a 4-character query) a fuzzy match may share no trigram and is not found; a fuzzy
//! match beyond the best-sharing [`index::FUZZY_CANDIDATES`] candidates is not found
//! either. Work per query is bounded by the posting lists it reads: the prefix tier walks
//! its whole range (at most two entries per profile), the substring tier at most the
//! shortest posting list of the query, the fuzzy tier the posting lists of its ≤ 66
//! trigrams. Memory and latency at 1,000,000 profiles: `users-search-bench` and
//! `docs/benchmarks.md`. An index update lags its commit by at most one poll (≈ 250 ms)
//! on the other instances.

pub mod bench;
pub mod feed;
pub mod index;

use std::cmp::Ordering;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Marks the start of a word in start-of-word trigrams.
pub const WORD_START: char = '\u{1}';
/// Marks the end of a name in the end-of-name trigram.
pub const NAME_END: char = '\u{3}';

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

/// A trigram as a number: 21 bits per character, so keys sharing their first two
/// characters form one contiguous range.
pub fn trigram_key(a: char, b: char, c: char) -> u64 {
    (u64::from(a) << 42) | (u64::from(b) << 21) | u64::from(c)
}

/// The range of keys of the trigrams starting with `a`, `b`.
pub fn trigram_prefix_range(a: char, b: char) -> std::ops::Range<u64> {
    let lo = (u64::from(a) << 42) | (u64::from(b) << 21);
    lo..lo + (1 << 21)
}

fn push_windows(chars: &[char], out: &mut Vec<u64>) {
    for w in chars.windows(3) {
        out.push(trigram_key(w[0], w[1], w[2]));
    }
}

fn start_trigrams(word: &str, out: &mut Vec<u64>) {
    let mut it = word.chars();
    if let Some(a) = it.next() {
        out.push(trigram_key(WORD_START, WORD_START, a));
        if let Some(b) = it.next() {
            out.push(trigram_key(WORD_START, a, b));
        }
    }
}

/// Every trigram the index stores for a profile with these normalised names, sorted and
/// distinct.
pub fn index_trigrams(names: &[&str]) -> Vec<u64> {
    let mut out = Vec::new();
    for name in names.iter().filter(|n| !n.is_empty()) {
        let chars: Vec<char> = name.chars().collect();
        push_windows(&chars, &mut out);
        start_trigrams(name, &mut out);
        for w in words(name) {
            start_trigrams(w, &mut out);
        }
        let n = chars.len();
        let tail: Vec<char> = chars[n.saturating_sub(2)..]
            .iter()
            .copied()
            .chain([NAME_END])
            .collect();
        if let [a, b, c] = tail[..] {
            out.push(trigram_key(a, b, c));
        }
    }
    out.sort_unstable();
    out.dedup();
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

/// How the index finds substring (tier 2) matches of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Substring {
    /// Prefix matching only (queries under 3 characters).
    None,
    /// Users holding every one of these query trigrams (sorted, distinct), then checked
    /// for the substring itself.
    AllOf(Vec<u64>),
    /// Users holding a trigram that starts with the query (2-character CJK queries).
    TrigramPrefix(char, char),
}

/// How the index finds fuzzy (tier 3) candidates: users sharing at least `min_shared`
/// of `trigrams`, the least any name within the allowed edits must share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fuzzy {
    pub trigrams: Vec<u64>,
    pub min_shared: usize,
}

/// A normalised, validated query.
#[derive(Debug, Clone)]
pub struct Query {
    pub norm: String,
    /// `norm` as characters (for edit distances).
    pub chars: Vec<char>,
    pub edits: usize,
    pub substring: Substring,
    pub fuzzy: Option<Fuzzy>,
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
        let chars: Vec<char> = norm.chars().collect();
        if chars.is_empty() || chars.len() > QUERY_MAX_CHARS {
            return None;
        }
        let edits = allowed_edits(chars.len());
        let mut inner = Vec::new();
        push_windows(&chars, &mut inner);
        inner.sort_unstable();
        inner.dedup();
        let substring = match chars[..] {
            [a, b] if is_cjk(a) && is_cjk(b) => Substring::TrigramPrefix(a, b),
            _ if chars.len() >= 3 => Substring::AllOf(inner.clone()),
            _ => Substring::None,
        };
        let fuzzy = (edits > 0).then(|| {
            let mut all = inner;
            start_trigrams(&norm, &mut all);
            all.sort_unstable();
            all.dedup();
            // One edit (an OSA transposition included) touches at most 4 trigram positions.
            let min_shared = all.len().saturating_sub(4 * edits).max(1);
            Fuzzy {
                trigrams: all,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankKey {
    /// 0 exact, 1 prefix, 2 substring, 3 fuzzy.
    pub tier: u8,
    pub distance: u8,
    pub followers: i64,
    /// The user id (a uuid) as a number: numeric order is the order of its text form.
    pub id: u128,
}

impl Ord for RankKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tier
            .cmp(&other.tier)
            .then(self.distance.cmp(&other.distance))
            .then(other.followers.cmp(&self.followers))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `(tier, distance)` of a profile with these normalised names for `q`, or `None` if it
/// does not match.
pub fn classify(q: &Query, username_norm: &str, display_norm: &str) -> Option<(u8, u8)> {
    let names = [username_norm, display_norm];
    if names.contains(&q.norm.as_str()) {
        return Some((0, 0));
    }
    if names.iter().any(|n| n.starts_with(&q.norm)) {
        return Some((1, 0));
    }
    let substring_allowed = q.substring != Substring::None;
    if substring_allowed && names.iter().any(|n| n.contains(&q.norm)) {
        return Some((2, 0));
    }
    if q.edits == 0 {
        return None;
    }
    let mut best = usize::MAX;
    let mut target: Vec<char> = Vec::with_capacity(32);
    'names: for name in names {
        for word in std::iter::once(name).chain(words(name)) {
            target.clear();
            target.extend(word.chars());
            best = best.min(prefix_distance(&q.chars, &target, q.edits));
            // Not a substring, so 1 is the least possible distance.
            if best <= 1 {
                break 'names;
            }
        }
    }
    (best <= q.edits).then_some((3, best as u8))
}

/// Optimal-string-alignment distance between `q` and the closest prefix of `t`,
/// or `max + 1` when it exceeds `max` (computation stops early).
pub fn prefix_distance(q: &[char], t: &[char], max: usize) -> usize {
    let m = q.len();
    let over = max + 1;
    if m > QUERY_MAX_CHARS {
        return over;
    }
    // Prefixes longer than m + max are more than `max` edits away.
    let n = t.len().min(m + max);
    // Three columns of the DP matrix over `q` (rows 0..=m), for t-prefix lengths j-2,
    // j-1, j, on the stack; cells stay below 256 as m <= QUERY_MAX_CHARS and n <= m + max.
    const ROWS: usize = QUERY_MAX_CHARS + 1;
    let mut cols = [[0u16; ROWS]; 3];
    for (i, cell) in cols[1].iter_mut().enumerate().take(m + 1) {
        *cell = i as u16;
    }
    let mut best = usize::from(cols[1][m]);
    let (mut p2, mut p1, mut c) = (0, 1, 2);
    for j in 1..=n {
        cols[c][0] = j as u16;
        let tj = t[j - 1];
        let mut column_min = j;
        for i in 1..=m {
            let cost = u16::from(q[i - 1] != tj);
            let mut v = (cols[p1][i - 1] + cost)
                .min(cols[p1][i] + 1)
                .min(cols[c][i - 1] + 1);
            if i > 1 && j > 1 && q[i - 1] == t[j - 2] && q[i - 2] == tj {
                v = v.min(cols[p2][i - 2] + 1);
            }
            cols[c][i] = v;
            column_min = column_min.min(usize::from(v));
        }
        best = best.min(usize::from(cols[c][m]));
        (p2, p1, c) = (p1, c, p2);
        if column_min > max {
            break;
        }
    }
    best.min(over)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(q: &Query, u: &str, d: &str) -> Option<(u8, u8)> {
        classify(q, &normalize(u), &normalize(d))
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
        assert_eq!(tier(&q, "ali", "Ali").unwrap().0, 0);
        assert_eq!(tier(&q, "alison", "A").unwrap().0, 1);
        assert_eq!(tier(&q, "kalinda", "K").unwrap().0, 2);
        assert!(tier(&q, "bob", "Bob").is_none());
        let q = Query::parse("smiht").unwrap();
        assert_eq!(tier(&q, "jsmith", "John Smith"), Some((3, 1)));
        let a = RankKey {
            tier: 1,
            distance: 0,
            followers: 5,
            id: 2,
        };
        let b = RankKey {
            tier: 1,
            distance: 0,
            followers: 9,
            id: 3,
        };
        assert!(b < a);
        // The numeric order of uuids is the order of their text.
        let (x, y) = (uuid::Uuid::now_v7(), uuid::Uuid::new_v4());
        assert_eq!(
            x.as_u128().cmp(&y.as_u128()),
            x.to_string().cmp(&y.to_string())
        );
    }

    #[test]
    fn short_queries_match_prefix_only_except_cjk() {
        let q = Query::parse("li").unwrap();
        assert_eq!(q.substring, Substring::None);
        assert!(tier(&q, "alice", "Alice").is_none());
        let q = Query::parse("太郎").unwrap();
        assert_eq!(q.substring, Substring::TrigramPrefix('太', '郎'));
        assert_eq!(tier(&q, "yamada", "山田太郎").unwrap().0, 2);
        // The end-of-name trigram is what finds a CJK pair at the end of a name.
        let idx = index_trigrams(&["山田太郎"]);
        let range = trigram_prefix_range('太', '郎');
        assert!(idx.iter().any(|t| range.contains(t)));
    }

    #[test]
    fn matches_share_the_trigrams_the_index_requires() {
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
            assert!(!trigrams.is_empty());
            let idx = index_trigrams(&[&normalize(name)]);
            assert!(
                trigrams.iter().all(|t| idx.binary_search(t).is_ok()),
                "{q:?} vs {name}"
            );
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
            let shared = f
                .trigrams
                .iter()
                .filter(|t| idx.binary_search(t).is_ok())
                .count();
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
