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
            } else if !kit::text::is_clean_label(d) {
                err(
                    "display_name",
                    "must not contain control characters or bidirectional overrides",
                );
            }
        }
        // CRLF from a browser form or a Windows client is a line break like LF: kept as LF,
        // so only a lone CR (which overprints a line on terminals) is refused below.
        let bio = self.bio.map(|b| b.replace("\r\n", "\n"));
        if let Some(b) = &bio {
            if b.chars().count() > BIO_MAX_CHARS {
                err("bio", "must be at most 500 characters");
            } else if kit::text::has_control(b, true) || b.chars().any(kit::text::is_bidi_control) {
                err(
                    "bio",
                    "must not contain control characters (other than line breaks and tabs) or bidirectional overrides",
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
                bio,
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
        for bad in [
            "\0", "\u{1b}", "\u{7f}", "\u{85}", "\u{9f}", "\u{202a}", "\u{202e}", "\u{2066}",
            "\u{2069}", "\n", "\t",
        ] {
            let name = format!("a{bad}b");
            assert!(
                patch(Some(&name), None, None).validate().is_err(),
                "{bad:?}"
            );
        }
        for bad in ["\0", "\u{1b}", "\r", "\u{85}", "\u{202d}", "\u{2067}"] {
            let bio = format!("a{bad}b");
            assert!(patch(None, Some(&bio), None).validate().is_err(), "{bad:?}");
        }
        // Neighbours of the refused ranges stay allowed (LRM, ZWJ in emoji, U+2070).
        let ok = patch(
            Some("a\u{200e}b\u{2070}👩\u{200d}💻"),
            Some("x\r\ny\tz\n"),
            None,
        )
        .validate()
        .unwrap();
        assert_eq!(ok.bio.as_deref(), Some("x\ny\tz\n"));
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
