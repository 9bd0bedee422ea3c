//! The file record, its JSON form (API.md `File`), and the header values derived from it.

use serde::Serialize;
use uuid::Uuid;

/// A row of `files`.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    /// Lower-case hex SHA-256 of the stored bytes (after metadata stripping).
    pub sha256: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub has_thumbnail: bool,
    pub created_at: i64,
}

/// API.md `File`.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    #[serde(with = "kit::time::ser_rfc3339")]
    pub created_at: i64,
    pub url: String,
    pub thumbnail_url: Option<String>,
}

impl From<&StoredFile> for FileView {
    fn from(f: &StoredFile) -> Self {
        Self {
            id: f.id,
            filename: f.filename.clone(),
            content_type: f.content_type.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            width: f.width,
            height: f.height,
            created_at: f.created_at,
            url: format!("/files/{}", f.id),
            thumbnail_url: f
                .has_thumbnail
                .then(|| format!("/files/{}/thumbnail", f.id)),
        }
    }
}

/// Longest stored file name, in characters (common file systems allow 255 bytes; names
/// are shown, never used as paths).
pub const MAX_FILENAME_CHARS: usize = 255;

/// The name to store: the last path component (browsers and old clients send
/// `C:\dir\a.txt`), without control characters, trimmed, at most 255 characters;
/// `file` when nothing is left.
pub fn clean_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `Content-Disposition` (RFC 6266) with an ASCII `filename` fallback (anything outside
/// printable ASCII, quotes and backslashes become `_`) and the exact name as
/// `filename*=UTF-8''…` (RFC 5987 percent-encoding of everything but attr-chars).
pub fn content_disposition(inline: bool, filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(filename.len() * 3);
    for b in filename.bytes() {
        let attr_char = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if attr_char {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_controls() {
        assert_eq!(clean_filename("C:\\Users\\a\\report.pdf"), "report.pdf");
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("a\r\nb.txt"), "ab.txt");
        assert_eq!(clean_filename(".."), "file");
        assert_eq!(clean_filename(""), "file");
        assert_eq!(clean_filename(&"x".repeat(300)).chars().count(), 255);
    }

    #[test]
    fn disposition_is_safe_and_exact() {
        assert_eq!(
            content_disposition(false, "rés\"umé;.pdf"),
            "attachment; filename=\"r_s_um_;.pdf\"; filename*=UTF-8''r%C3%A9s%22um%C3%A9%3B.pdf"
        );
        assert!(content_disposition(true, "a b.png").starts_with("inline; filename=\"a b.png\""));
    }
}
