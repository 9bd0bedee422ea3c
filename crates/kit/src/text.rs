//! Which characters user-written text may hold, one rule for every service.
//!
//! Control characters (Unicode `Cc`: NUL and the other C0 controls, DEL, the C1 controls)
//! are refused: a NUL truncates text in C clients and some databases, and the others
//! render unpredictably. Multi-line texts (message bodies, bios, topics) keep line feeds
//! and tabs, and a carriage return only right before a line feed (CRLF from a textarea).
//!
//! The bidi embeddings, overrides and isolates U+202A–U+202E and U+2066–U+2069 reorder the
//! text around them (a name ending in U+202E shows what follows it reversed: "Trojan
//! Source", CVE-2021-42574): refused in names and other short labels that identify someone
//! or something. Right-to-left letters and the marks U+200E/U+200F stay allowed everywhere.

/// Whether `c` is a bidi embedding, override or isolate (U+202A–U+202E, U+2066–U+2069).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` holds a control character; with `multiline`, line feeds, tabs and a
/// carriage return right before a line feed are allowed.
pub fn has_control(text: &str, multiline: bool) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_control() {
            continue;
        }
        if multiline && (c == '\n' || c == '\t' || (c == '\r' && chars.peek() == Some(&'\n'))) {
            continue;
        }
        return true;
    }
    false
}

/// A one-line label (a name): no control characters, no bidi controls.
pub fn is_clean_label(text: &str) -> bool {
    !has_control(text, false) && !text.chars().any(is_bidi_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_refuse_controls_and_bidi_overrides() {
        assert!(is_clean_label("Zoë שלום \u{200f}Ivy 👩\u{200d}💻"));
        for bad in [
            "a\0b",
            "a\nb",
            "a\tb",
            "a\u{7f}",
            "a\u{85}",
            "evil\u{202e}gpj.exe",
            "\u{2066}x",
        ] {
            assert!(!is_clean_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn multiline_texts_keep_line_feeds_tabs_and_crlf() {
        assert!(!has_control("one\ntwo\tthree\r\nfour", true));
        assert!(has_control("one\ntwo", false));
        assert!(has_control("lone\rcarriage return", true));
        assert!(has_control("trailing\r", true));
        assert!(has_control("nul\0", true));
        assert!(!has_control("bidi \u{202e} is not a control", true));
    }
}
