//! Message search: the text side (normalising, word breaking, query parsing, highlights).
//! The SQL is in `store::search`; the route in `api::search`.
//!
//! Both backends get text that Rust already normalised and segmented with ONE function,
//! [`tokens`], used at index time and at query time, so SQLite and PostgreSQL find the
//! same messages for the same query and no database tokenizer or stemmer gets a say:
//!
//! - words are UAX #29 word segments (`unicode-segmentation`); CJK ideographs are one
//!   segment each, so an ideographic query word is matched as a phrase of its ideographs
//!   (東京 finds 我在東京工作);
//! - each word is lower-cased, NFKD-decomposed with its combining marks dropped (é = e),
//!   folded for a few letters that do not decompose (ß → ss, æ → ae, ø → o, ł → l, …),
//!   and stripped of whatever is not a letter or a digit (don't = dont, 3.14 = 314): the
//!   indexed terms are then plain runs of letters and digits that SQLite's `ascii`
//!   tokenizer keeps whole and that PostgreSQL stores as given in a `tsvector` literal.
//!
//! A query is words (each matched as a prefix, search-as-you-type: `depl` finds
//! `deployment`; an exact match ranks higher) and `"quoted phrases"` (consecutive exact
//! words). All must match (AND). Offsets in highlights count Unicode scalar values
//! (what the body limit counts; JavaScript's `Array.from(body)` indexes the same way).

pub mod bench;

use tokio_util::sync::CancellationToken;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_segmentation::UnicodeSegmentation;

use crate::store;

/// The longest query, in characters (longer is 400 `validation_failed`).
pub const QUERY_MAX_CHARS: usize = 200;
/// A term is cut to this many characters at index and at query time alike: PostgreSQL
/// refuses lexemes over 2,047 bytes, and no one types a 64-letter prefix.
pub const TERM_MAX_CHARS: usize = 64;
/// Terms of one query at most (a 200-character query of 1-letter words would otherwise
/// be 100 index look-ups).
pub const MAX_TERMS: usize = 16;
/// Unquoted words shorter than this match whole words only: a 1-letter prefix matches
/// most of the index and ranks nothing.
const MIN_PREFIX_CHARS: usize = 2;

/// A word of a text: its normalised form and where it is, in Unicode scalar offsets
/// (`start..end`) of the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub term: String,
    pub start: usize,
    pub end: usize,
    /// The word is an ideograph (or a run UAX #29 does not split, of kana): such
    /// neighbours form one query word.
    pub ideographic: bool,
}

/// Normalises one word: lower case, no accents, letters and digits only.
pub fn normalise(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars().flat_map(char::to_lowercase).nfkd() {
        if is_combining_mark(c) {
            continue;
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
            c if c.is_alphanumeric() => out.push(c),
            _ => {}
        }
    }
    if let Some((cut, _)) = out.char_indices().nth(TERM_MAX_CHARS) {
        out.truncate(cut);
    }
    out
}

fn is_ideographic(c: char) -> bool {
    matches!(u32::from(c),
        0x2E80..=0x2FDF        // CJK radicals, Kangxi radicals
        | 0x3005..=0x3007      // 々 〆 〇
        | 0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF      // CJK extension A
        | 0x4E00..=0x9FFF      // CJK unified ideographs
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0x20000..=0x3FFFF) // CJK extensions B and later
}

/// The words of a text, in order (the one segmentation used for indexing and querying).
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    // Byte offsets to scalar offsets, walking forward once.
    let mut chars_before = 0usize;
    let mut bytes_seen = 0usize;
    for (at, word) in text.unicode_word_indices() {
        chars_before += text[bytes_seen..at].chars().count();
        let len = word.chars().count();
        bytes_seen = at + word.len();
        let start = chars_before;
        chars_before += len;
        let term = normalise(word);
        if term.is_empty() {
            continue;
        }
        out.push(Token {
            term,
            start,
            end: start + len,
            ideographic: word.chars().next().is_some_and(is_ideographic),
        });
    }
    out
}

/// The indexed form of a body: its terms in order (positions matter for phrases).
pub fn terms(body: &str) -> Vec<String> {
    tokens(body).into_iter().map(|t| t.term).collect()
}

/// One condition of a query: consecutive terms (a phrase when more than one), the last
/// one matched as a prefix when `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub words: Vec<String>,
    pub prefix: bool,
}

/// Parses a query: `"quoted phrases"` (exact words, consecutive) and words (prefixes; a
/// run of ideographs without spaces is one phrase). An unclosed quote runs to the end.
/// Duplicates are dropped and at most [`MAX_TERMS`] are kept.
pub fn parse_query(q: &str) -> Vec<Term> {
    let mut out: Vec<Term> = Vec::new();
    for (i, part) in q.split('"').enumerate() {
        let quoted = i % 2 == 1;
        let toks = tokens(part);
        if quoted {
            if !toks.is_empty() {
                out.push(Term {
                    words: toks.into_iter().map(|t| t.term).collect(),
                    prefix: false,
                });
            }
            continue;
        }
        // Unquoted: ideographs that touch (no gap between them) are one phrase.
        let mut group: Vec<Token> = Vec::new();
        let flush = |group: &mut Vec<Token>, out: &mut Vec<Term>| {
            if group.is_empty() {
                return;
            }
            let words: Vec<String> = group.drain(..).map(|t| t.term).collect();
            let prefix = words.len() == 1
                && !words[0].chars().any(is_ideographic)
                && words[0].chars().count() >= MIN_PREFIX_CHARS;
            out.push(Term { words, prefix });
        };
        for t in toks {
            let joins = group
                .last()
                .is_some_and(|l| l.end == t.start && (l.ideographic || t.ideographic));
            if !joins {
                flush(&mut group, &mut out);
            }
            group.push(t);
        }
        flush(&mut group, &mut out);
    }
    let mut seen = Vec::new();
    out.retain(|t| {
        if seen.contains(t) {
            false
        } else {
            seen.push(t.clone());
            true
        }
    });
    out.truncate(MAX_TERMS);
    out
}

/// BM25's term-frequency saturation and length normalisation (k1 = 1.2, b = 0.75), with
/// a fixed average length of 12 words instead of the corpus's: a score then depends only
/// on the message and the query, so pages of a query never shift as messages arrive and
/// both backends rank alike. BM25's IDF is left out: every result contains every term
/// (terms are ANDed), so it would add the same amount to every result of a query.
const K1: f64 = 1.2;
const B: f64 = 0.75;
const AVG_WORDS: f64 = 12.0;
/// A word that only starts with a query word counts half an exact occurrence: `release`
/// ranks above `releases` for the query `release`.
const PREFIX_WEIGHT: f64 = 0.5;

/// How well `body` matches the query (higher is better) and where: sorted, merged
/// `(start, end)` ranges in Unicode scalar offsets (a phrase is one range from its first
/// to its last word).
pub fn score(body: &str, query: &[Term]) -> (f64, Vec<(usize, usize)>) {
    let toks = tokens(body);
    let norm = K1 * (1.0 - B + B * toks.len() as f64 / AVG_WORDS);
    let mut total = 0.0;
    let mut ranges = Vec::new();
    for term in query {
        let n = term.words.len();
        if n == 0 || toks.len() < n {
            continue;
        }
        let mut f = 0.0;
        for i in 0..=toks.len() - n {
            let mut exact = true;
            let hit = term.words.iter().enumerate().all(|(k, w)| {
                let t = &toks[i + k].term;
                if t == w {
                    true
                } else if term.prefix && k == n - 1 && t.starts_with(w.as_str()) {
                    exact = false;
                    true
                } else {
                    false
                }
            });
            if hit {
                f += if exact { 1.0 } else { PREFIX_WEIGHT };
                ranges.push((toks[i].start, toks[i + n - 1].end));
            }
        }
        total += f * (K1 + 1.0) / (f + norm);
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    (total, merged)
}

/// Where the query's terms match in `body` (see [`score`]).
pub fn highlights(body: &str, query: &[Term]) -> Vec<(usize, usize)> {
    score(body, query).1
}

/// An FTS5 MATCH expression for the body column: every term (AND), phrases as one
/// quoted string, prefixes with `*`. Terms are letters and digits only, so the double
/// quotes need no escaping (done anyway).
pub fn fts5_query(terms: &[Term]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    terms
        .iter()
        .map(|t| {
            let phrase = quote(&t.words.join(" "));
            if t.prefix {
                format!("{phrase} *")
            } else {
                phrase
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A PostgreSQL `tsquery` literal (cast with `::tsquery`, no parser or dictionary
/// involved): `&` of the terms, phrases with `<->`, prefixes as `'w':*`.
pub fn tsquery(terms: &[Term]) -> String {
    terms
        .iter()
        .map(|t| {
            let n = t.words.len();
            let words: Vec<String> = t
                .words
                .iter()
                .enumerate()
                .map(|(k, w)| {
                    if t.prefix && k == n - 1 {
                        format!("{}:*", pg_lexeme(w))
                    } else {
                        pg_lexeme(w)
                    }
                })
                .collect();
            if n > 1 {
                format!("({})", words.join(" <-> "))
            } else {
                words.join("")
            }
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

/// A PostgreSQL `tsvector` literal of a body: each term with its position (1-based;
/// PostgreSQL caps positions at 16,383, far above a 4,000-character body's words).
pub fn tsvector(body: &str) -> String {
    let mut out = String::new();
    for (i, term) in terms(body).iter().enumerate() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&pg_lexeme(term));
        out.push(':');
        out.push_str(&(i + 1).min(16_383).to_string());
    }
    out
}

pub fn pg_lexeme(w: &str) -> String {
    format!("'{}'", w.replace('\\', "\\\\").replace('\'', "''"))
}

/// The one-time job that indexes messages stored before the index existed.
const SEARCH_BACKFILL: &str = "search-backfill";
/// Messages indexed per transaction by the backfill: short write transactions (a few
/// ms), so sends interleave with it on SQLite's single writer.
const BACKFILL_BATCH: i64 = 500;

/// Indexes, in the background and once per database, the messages stored before
/// migration 0006 (new ones are indexed by the change that stores them). Until it ends
/// a search may miss older messages; retried with backoff on errors.
pub fn backfill(db: kit::db::Db, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            let run = async {
                let mut conn = db.pool().acquire().await?;
                if kit::backfill::done(&mut *conn, SEARCH_BACKFILL).await? {
                    return Ok(0);
                }
                drop(conn);
                let mut total = 0;
                loop {
                    let mut tx = db.begin().await?;
                    let n = store::search::backfill(tx.conn(), BACKFILL_BATCH).await?;
                    if (n as i64) < BACKFILL_BATCH {
                        kit::backfill::mark_done(tx.conn(), SEARCH_BACKFILL).await?;
                    }
                    tx.commit().await?;
                    total += n;
                    if (n as i64) < BACKFILL_BATCH {
                        return Ok::<usize, sqlx::Error>(total);
                    }
                }
            };
            let result = tokio::select! {
                r = run => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(messages = n, "messages stored before search indexed");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot index older messages for search yet");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(words: &[&str], prefix: bool) -> Term {
        Term {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            prefix,
        }
    }

    #[test]
    fn normalises_case_accents_and_punctuation() {
        assert_eq!(normalise("Café"), "cafe");
        assert_eq!(normalise("ÉCOLE"), "ecole");
        assert_eq!(normalise("Straße"), "strasse");
        assert_eq!(normalise("Łódź"), "lodz");
        assert_eq!(normalise("don't"), "dont");
        assert_eq!(normalise("ﬁne"), "fine");
        assert_eq!(normalise("Привет"), "привет");
        assert_eq!(normalise("Ёлка"), "елка");
        assert_eq!(normalise(&"a".repeat(100)).len(), TERM_MAX_CHARS);
    }

    #[test]
    fn segments_words_with_scalar_offsets() {
        let t = tokens("Hello, wörld! 我在東京工作");
        let words: Vec<&str> = t.iter().map(|t| t.term.as_str()).collect();
        assert_eq!(
            words,
            ["hello", "world", "我", "在", "東", "京", "工", "作"]
        );
        assert_eq!((t[0].start, t[0].end), (0, 5));
        // "wörld" is 5 scalars although 6 bytes.
        assert_eq!((t[1].start, t[1].end), (7, 12));
        assert_eq!((t[4].start, t[4].end), (16, 17));
        assert!(t[4].ideographic && !t[1].ideographic);
        // Emoji and punctuation are not words; offsets after them still count scalars.
        let t = tokens("🎉🎉 ok");
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].start, t[0].end), (3, 5));
        assert_eq!(terms("مرحبا بالعالم"), ["مرحبا", "بالعالم"]);
    }

    #[test]
    fn parses_words_prefixes_phrases_and_cjk() {
        assert_eq!(
            parse_query("Deploy \"Release Notes\" x"),
            [
                term(&["deploy"], true),
                term(&["release", "notes"], false),
                term(&["x"], false),
            ]
        );
        assert_eq!(parse_query("東京"), [term(&["東", "京"], false)]);
        assert_eq!(
            parse_query("東京 tower"),
            [term(&["東", "京"], false), term(&["tower"], true)]
        );
        // Unclosed quote: a phrase to the end; duplicates once; punctuation only: nothing.
        assert_eq!(
            parse_query("a a \"b c"),
            [term(&["a"], false), term(&["b", "c"], false)]
        );
        assert!(parse_query("!!! ...").is_empty());
        let many = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(parse_query(&many).len(), MAX_TERMS);
    }

    #[test]
    fn highlights_in_scalar_offsets() {
        let q = parse_query("caf \"new york\"");
        assert_eq!(
            highlights("Un Café à New  York, cafés", &q),
            [(3, 7), (10, 19), (21, 26)]
        );
        let q = parse_query("東京");
        assert_eq!(highlights("我在東京工作", &q), [(2, 4)]);
        // A phrase needs its words in a row; a whole-word term does not match a prefix.
        let q = parse_query("\"york new\" a");
        assert!(highlights("new york a-ha", &q) == [(9, 10)]);
        assert!(highlights("nothing here", &parse_query("zzz")).is_empty());
    }

    #[test]
    fn scores_frequency_length_and_exactness() {
        let q = parse_query("deploy");
        let strong = score("deploy deploy deploy", &q).0;
        let weak = score("we could maybe deploy something else later this week", &q).0;
        let longer = score("deployment", &q).0;
        let exact = score("deploy", &q).0;
        assert!(strong > exact && exact > weak, "{strong} {exact} {weak}");
        assert!(exact > longer && longer > 0.0, "{exact} {longer}");
        assert_eq!(score("nothing here", &q), (0.0, vec![]));
        // Depends only on the body and the query.
        assert_eq!(score("deploy it", &q), score("deploy it", &q));
    }

    #[test]
    fn builds_backend_queries() {
        let q = parse_query("deploy \"new york\" 東京 a");
        assert_eq!(
            fts5_query(&q),
            "\"deploy\" * AND \"new york\" AND \"東 京\" AND \"a\""
        );
        assert_eq!(
            tsquery(&q),
            "'deploy':* & ('new' <-> 'york') & ('東' <-> '京') & 'a'"
        );
        assert_eq!(tsvector("It's  it"), "'its':1 'it':2");
        assert_eq!(pg_lexeme("o'k\\"), "'o''k\\\\'");
    }
}
