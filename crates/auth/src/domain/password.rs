//! Password policy: 8–128 characters and not one of the 30,000 most common passwords
//! (list from zxcvbn, see data/common-passwords.SOURCE.md).

use std::collections::HashSet;
use std::sync::LazyLock;

use kit::error::FieldError;

use super::field;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// A password that meets the policy. Never logged: `Debug` is redacted.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub fn parse(raw: &str, field_name: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if len < 8 {
            return Err(field(field_name, "must be at least 8 characters"));
        }
        if len > 128 {
            return Err(field(field_name, "must be at most 128 characters"));
        }
        if COMMON.contains(raw.to_lowercase().as_str()) {
            return Err(field(
                field_name,
                "is too common; choose a less guessable password",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(COMMON.len() >= 10_000);
        assert!(Password::parse("password", "password").is_err());
        assert!(Password::parse("PassWord1", "password").is_err() || !COMMON.contains("password1"));
        assert!(Password::parse("1234567", "password").is_err());
        assert!(Password::parse(&"x".repeat(129), "password").is_err());
        assert!(Password::parse("correct horse battery", "password").is_ok());
        assert!(
            format!(
                "{:?}",
                Password::parse("correct horse battery", "p").unwrap()
            )
            .contains("redacted")
        );
    }
}
