//! Profile types and the rules that parse client input into them.

use kit::error::FieldError;
use serde::{Deserialize, Serialize};

pub const DISPLAY_NAME_MAX_CHARS: usize = 64;
pub const BIO_MAX_CHARS: usize = 500;
pub const AVATAR_URL_MAX_BYTES: usize = 2048;

/// `Profile` of API.md. `bio` and `avatar_url` are empty strings when unset.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub bio: String,
    pub avatar_url: String,
    #[serde(with = "kit::time::ser_rfc3339")]
    pub created_at: i64,
    pub followers_count: i64,
    pub following_count: i64,
}

/// `relationship` of `GET /users/{id}`, from the caller's point of view.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct Relationship {
    pub following: bool,
    pub followed_by: bool,
    pub friends: bool,
    pub blocking: bool,
}

/// Body of `PATCH /users/me`; absent or null fields stay unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub avatar_url: Option<String>,
}

/// A validated [`ProfilePatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidPatch {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub avatar_url: Option<String>,
}

impl ValidPatch {
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.bio.is_none() && self.avatar_url.is_none()
    }
}

impl ProfilePatch {
    /// Validates every field, reporting all offending fields at once.
    pub fn validate(self) -> Result<ValidPatch, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: &str| {
            errors.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            })
        };
        let display_name = self.display_name.map(|d| d.trim().to_owned());
        if let Some(d) = &display_name {
            let n = d.chars().count();
            if n == 0 || n > DISPLAY_NAME_MAX_CHARS {
                err("display_name", "must be 1–64 characters after trimming");
            } else if d.chars().any(char::is_control) {
                err("display_name", "must not contain control characters");
            }
        }
        if let Some(b) = &self.bio {
            if b.chars().count() > BIO_MAX_CHARS {
                err("bio", "must be at most 500 characters");
            } else if b
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                err(
                    "bio",
                    "must not contain control characters other than line breaks and tabs",
                );
            }
        }
        let avatar_url = self.avatar_url.map(|a| a.trim().to_owned());
        if let Some(a) = &avatar_url
            && !a.is_empty()
            && !is_https_url(a)
        {
            err(
                "avatar_url",
                "must be an https:// URL (at most 2048 bytes) or empty",
            );
        }
        if errors.is_empty() {
            Ok(ValidPatch {
                display_name,
                bio: self.bio,
                avatar_url,
            })
        } else {
            Err(errors)
        }
    }
}

/// `https://host[...]` without whitespace or control characters.
fn is_https_url(s: &str) -> bool {
    if s.len() > AVATAR_URL_MAX_BYTES || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some(scheme) = s.get(..8) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("https://") {
        return false;
    }
    let rest = &s[8..];
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo (`https://evil@host`) is refused: it only serves to mislead.
    !host.is_empty() && !host.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(d: Option<&str>, b: Option<&str>, a: Option<&str>) -> ProfilePatch {
        ProfilePatch {
            display_name: d.map(str::to_owned),
            bio: b.map(str::to_owned),
            avatar_url: a.map(str::to_owned),
        }
    }

    #[test]
    fn validates_fields() {
        let ok = patch(
            Some("  Alice  "),
            Some("hi\nthere"),
            Some("https://x.test/a.png"),
        )
        .validate()
        .unwrap();
        assert_eq!(ok.display_name.as_deref(), Some("Alice"));
        assert!(patch(None, None, Some("")).validate().is_ok());
        let errs = patch(Some("   "), Some(&"x".repeat(501)), Some("http://x.test"))
            .validate()
            .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["display_name", "bio", "avatar_url"]);
        assert!(patch(Some("a\u{7}b"), None, None).validate().is_err());
        assert!(
            patch(Some(&"é".repeat(64)), Some(&"é".repeat(500)), None)
                .validate()
                .is_ok()
        );
        assert!(patch(Some(&"é".repeat(65)), None, None).validate().is_err());
        assert!(patch(None, None, Some("https://")).validate().is_err());
        assert!(patch(None, None, Some("https://a b")).validate().is_err());
        assert!(
            patch(None, None, Some("javascript:alert(1)"))
                .validate()
                .is_err()
        );
        assert!(
            patch(None, None, Some("HTTPS://cdn.test/x"))
                .validate()
                .is_ok()
        );
    }
}
