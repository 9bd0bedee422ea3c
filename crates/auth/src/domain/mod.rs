//! Account values that parse, not validate: once a `Username` exists it is valid.

mod password;

pub use password::Password;

use kit::error::FieldError;

/// 3–32 characters of `a-z 0-9 _ .` after lower-casing (`Alice` registers `alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let v = raw.trim().to_lowercase();
        let len = v.chars().count();
        if !(3..=32).contains(&len) {
            return Err(field("username", "must be 3 to 32 characters"));
        }
        if !v
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            return Err(field(
                "username",
                "may contain only letters a-z, digits, '_' and '.'",
            ));
        }
        Ok(Self(v))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address as given (trimmed) plus its case-insensitive uniqueness key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    key: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let v = raw.trim();
        let invalid = || field("email", "is not a valid email address");
        if v.len() > 254 || v.chars().any(char::is_whitespace) || !kit::text::is_clean_label(v) {
            return Err(invalid());
        }
        let (local, domain) = v.rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || local.contains('@')
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(invalid());
        }
        Ok(Self {
            display: v.to_owned(),
            key: v.to_lowercase(),
        })
    }
    pub fn as_str(&self) -> &str {
        &self.display
    }
    /// Lower-cased form used for uniqueness and lookup.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Trimmed, 1–64 characters, no control characters or bidi overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        // Checked before trimming: NEL (U+0085) is both a C1 control and white space.
        if !kit::text::is_clean_label(raw) {
            return Err(field(
                "display_name",
                "must not contain control characters or bidirectional overrides",
            ));
        }
        let v = raw.trim();
        let len = v.chars().count();
        if !(1..=64).contains(&len) {
            return Err(field("display_name", "must be 1 to 64 characters"));
        }
        Ok(Self(v.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn field(name: &str, message: &str) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_lowercase_and_restrict_charset() {
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("a.b_c9").unwrap().as_str(), "a.b_c9");
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("ålice").is_err());
        assert!(Username::parse("al-ice").is_err());
    }

    #[test]
    fn emails_are_case_insensitive_keys() {
        let e = Email::parse(" Bob@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Bob@Example.COM");
        assert_eq!(e.key(), "bob@example.com");
        for bad in [
            "",
            "bob",
            "bob@",
            "@x.io",
            "bob@localhost",
            "b ob@x.io",
            "bob@x..io",
            "bob\u{202e}@x.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ann  ").unwrap().as_str(), "Ann");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        for bad in [
            "\0", "\u{1b}", "\u{7f}", "\u{85}", "\u{9f}", "\u{202a}", "\u{202e}", "\u{2066}",
            "\u{2069}",
        ] {
            assert!(
                DisplayName::parse(&format!("Ann{bad}x")).is_err(),
                "{bad:?}"
            );
            assert!(DisplayName::parse(bad).is_err(), "{bad:?} alone");
        }
        assert!(DisplayName::parse("שלום \u{200f}Ann").is_ok());
        assert!(DisplayName::parse(&"x".repeat(65)).is_err());
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
    }
}
