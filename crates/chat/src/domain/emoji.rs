//! What a reaction's `emoji` may be (API.md, Chat additions v1.1): ONE emoji grapheme
//! cluster, or a shortcode `:[a-z0-9_+-]{1,32}:`.
//!
//! Hand-written rather than a grapheme-segmentation crate (Cargo.lock has none): a
//! reaction is one emoji, so the check is the shape of one emoji sequence (UTS #51 ED-17)
//! rather than general grapheme breaking:
//!
//! ```text
//! sequence := element (ZWJ element)*
//! element  := flag | keycap | tag_seq | pictographic
//! flag     := RI RI                              (🇫🇷)
//! keycap   := [0-9#*] FE0F? 20E3                 (1️⃣)
//! tag_seq  := 1F3F4 tag{1,} E007F                (🏴 subdivision flags)
//! pictographic := ExtPict (FE0F|FE0E)? modifier? (👍 👍🏽 ❤️)
//! ```
//!
//! `Extended_Pictographic` is approximated by its blocks (a few unassigned code points
//! inside them pass; no letter, digit or punctuation does).

use kit::ApiError;
use kit::error::code;

/// Longest shortcode name, between the colons.
pub const MAX_SHORTCODE: usize = 32;
/// Code points in one emoji: the longest RGI sequences (a family with four skin tones,
/// `👩🏽‍❤️‍💋‍👨🏿`) are 10; 32 leaves room for future ones and bounds what is stored.
const MAX_EMOJI_CHARS: usize = 32;

const ZWJ: char = '\u{200D}';
const VS16: char = '\u{FE0F}';
const VS15: char = '\u{FE0E}';
const KEYCAP: char = '\u{20E3}';
const BLACK_FLAG: char = '\u{1F3F4}';
const CANCEL_TAG: char = '\u{E007F}';

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_modifier(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

fn is_tag(c: char) -> bool {
    ('\u{E0020}'..='\u{E007E}').contains(&c)
}

/// Approximately Unicode's `Extended_Pictographic` (emoji-data.txt, Unicode 15.1).
fn is_pictographic(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{2199}' | '\u{21A9}'..='\u{21AA}' | '\u{231A}'..='\u{231B}'
        | '\u{2328}' | '\u{2388}' | '\u{23CF}' | '\u{23E9}'..='\u{23F3}'
        | '\u{23F8}'..='\u{23FA}' | '\u{24C2}' | '\u{25AA}'..='\u{25AB}' | '\u{25B6}'
        | '\u{25C0}' | '\u{25FB}'..='\u{25FE}' | '\u{2600}'..='\u{27BF}'
        | '\u{2934}'..='\u{2935}' | '\u{2B05}'..='\u{2B07}' | '\u{2B1B}'..='\u{2B1C}'
        | '\u{2B50}' | '\u{2B55}' | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1F0FF}' | '\u{1F10D}'..='\u{1F10F}' | '\u{1F12F}'
        | '\u{1F16C}'..='\u{1F171}' | '\u{1F17E}'..='\u{1F17F}' | '\u{1F18E}'
        | '\u{1F191}'..='\u{1F19A}' | '\u{1F1AD}'..='\u{1F1E5}' | '\u{1F201}'..='\u{1F20F}'
        | '\u{1F21A}' | '\u{1F22F}' | '\u{1F232}'..='\u{1F23A}' | '\u{1F23C}'..='\u{1F23F}'
        | '\u{1F249}'..='\u{1F3FA}' | '\u{1F400}'..='\u{1F53D}' | '\u{1F546}'..='\u{1F64F}'
        | '\u{1F680}'..='\u{1F6FF}' | '\u{1F774}'..='\u{1F77F}' | '\u{1F7D5}'..='\u{1F7FF}'
        | '\u{1F80C}'..='\u{1F80F}' | '\u{1F848}'..='\u{1F84F}' | '\u{1F85A}'..='\u{1F85F}'
        | '\u{1F888}'..='\u{1F88F}' | '\u{1F8AE}'..='\u{1F8FF}' | '\u{1F90C}'..='\u{1F93A}'
        | '\u{1F93C}'..='\u{1F945}' | '\u{1F947}'..='\u{1FAFF}' | '\u{1FC00}'..='\u{1FFFD}'
    )
}

/// Consumes one element at the start of `s`; returns the rest, or None if `s` does not
/// start with one.
fn element(s: &[char]) -> Option<&[char]> {
    let (&first, rest) = s.split_first()?;
    if is_regional_indicator(first) {
        // A flag is exactly two regional indicators.
        return match rest.split_first() {
            Some((&second, rest)) if is_regional_indicator(second) => Some(rest),
            _ => None,
        };
    }
    if first.is_ascii_digit() || first == '#' || first == '*' {
        let rest = rest.strip_prefix(&[VS16]).unwrap_or(rest);
        return rest.strip_prefix(&[KEYCAP]);
    }
    if first == BLACK_FLAG && rest.first().copied().is_some_and(is_tag) {
        let n = rest.iter().take_while(|c| is_tag(**c)).count();
        return rest[n..].strip_prefix(&[CANCEL_TAG]);
    }
    if !is_pictographic(first) {
        return None;
    }
    let mut rest = rest;
    if let Some((&c, r)) = rest.split_first()
        && (c == VS16 || c == VS15)
    {
        rest = r;
    }
    if let Some((&c, r)) = rest.split_first()
        && is_modifier(c)
    {
        rest = r;
    }
    Some(rest)
}

fn is_one_emoji(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() || chars.len() > MAX_EMOJI_CHARS {
        return false;
    }
    let Some(mut rest) = element(&chars) else {
        return false;
    };
    while let Some((&c, after_zwj)) = rest.split_first() {
        if c != ZWJ {
            return false;
        }
        match element(after_zwj) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    true
}

fn is_shortcode(s: &str) -> bool {
    let Some(name) = s.strip_prefix(':').and_then(|r| r.strip_suffix(':')) else {
        return false;
    };
    (1..=MAX_SHORTCODE).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'+' | b'-'))
}

/// Checks a reaction's emoji as given (no trimming, no normalisation: `👍` and `👍\u{FE0F}`
/// are different strings, as clients send what their pickers produce).
pub fn parse_emoji(raw: &str) -> Result<&str, ApiError> {
    if is_shortcode(raw) || is_one_emoji(raw) {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            code::INVALID_EMOJI,
            format!(
                "emoji must be one emoji or a shortcode :name: of 1–{MAX_SHORTCODE} characters a-z 0-9 _ + -"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_emoji_and_sequences_are_accepted() {
        for ok in [
            "👍",                                                       // U+1F44D
            "👍🏽",                                                       // + skin tone modifier
            "👨‍👩‍👧",                                                       // ZWJ family
            "👩🏽‍❤️‍💋‍👨🏿",        // kiss with skin tones (10 code points)
            "🇫🇷",        // flag: two regional indicators
            "1️⃣",        // keycap with VS16
            "#\u{20E3}", // keycap without VS16
            "❤️",        // text-default pictograph + VS16
            "❤",         // and without
            "🏳️‍🌈",        // rainbow flag (VS16 then ZWJ)
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}", // England
            "©",
        ] {
            assert!(parse_emoji(ok).is_ok(), "{ok:?} refused");
        }
    }

    #[test]
    fn shortcodes_follow_the_pattern() {
        for ok in [
            ":+1:",
            ":smile:",
            ":a:",
            ":thumbs_up-2:",
            &format!(":{}:", "a".repeat(32)),
        ] {
            assert!(parse_emoji(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "::",
            ":UPPER:",
            ":a b:",
            ":é:",
            ":smile",
            "smile:",
            &format!(":{}:", "a".repeat(33)),
        ] {
            assert!(parse_emoji(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn anything_else_is_refused_as_invalid_emoji() {
        for bad in [
            "",
            "ab",
            "a",
            "1",    // a digit without the keycap
            "👍👍", // two emoji
            "👍 ",  // trailing space
            " 👍",
            "🇫",          // half a flag
            "🇫🇷🇫",        // a flag and a half
            "🏽",         // a modifier alone
            "👍\u{200D}", // dangling ZWJ
            "\u{200D}👍",
            "👍\u{0}",
            "🏴\u{E0067}\u{E0062}", // tag sequence without its cancel tag
            "<script>",
        ] {
            let err = parse_emoji(bad).expect_err(bad);
            assert_eq!(err.code, code::INVALID_EMOJI, "{bad:?}");
        }
        // 17 pictographs joined (33 code points) are over the length bound.
        let long = vec!["👍"; 17].join("\u{200D}");
        assert!(parse_emoji(&long).is_err());
    }
}
