//! Opaque page cursors: the sort key of the last row returned, base64url-encoded.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kit::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 100;

/// `limit` query parameter: default 50, 1..=100 else 400.
pub fn limit(raw: Option<i64>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation("limit", "must be between 1 and 100")),
    }
}

fn invalid() -> ApiError {
    ApiError::bad_request(
        kit::error::code::INVALID_CURSOR,
        "the cursor is malformed or from another list",
    )
}

/// Encodes the parts of a sort key (none may contain `|`).
pub fn encode(kind: &str, parts: &[&str]) -> String {
    let mut s = kind.to_owned();
    for p in parts {
        s.push('|');
        s.push_str(p);
    }
    URL_SAFE_NO_PAD.encode(s)
}

/// Decodes a cursor made by [`encode`] with the same `kind` and `n` parts.
pub fn decode(kind: &str, n: usize, cursor: &str) -> Result<Vec<String>, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.split('|');
    if parts.next() != Some(kind) {
        return Err(invalid());
    }
    let parts: Vec<String> = parts.map(str::to_owned).collect();
    if parts.len() != n {
        return Err(invalid());
    }
    Ok(parts)
}

pub fn parse_i64(s: &str) -> Result<i64, ApiError> {
    s.parse().map_err(|_| invalid())
}

/// Keyset position of edge lists: `(created_at, user id)` of the last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCursor {
    pub at: i64,
    pub id: String,
}

impl EdgeCursor {
    /// Sorts before every real row (lists run newest first).
    pub fn start() -> Self {
        Self {
            at: i64::MAX,
            id: String::new(),
        }
    }

    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw.filter(|s| !s.is_empty()) {
            None => Ok(Self::start()),
            Some(c) => {
                let p = decode("e", 2, c)?;
                uuid::Uuid::parse_str(&p[1]).map_err(|_| invalid())?;
                Ok(Self {
                    at: parse_i64(&p[0])?,
                    id: p[1].clone(),
                })
            }
        }
    }

    pub fn encode(&self) -> String {
        encode("e", &[&self.at.to_string(), &self.id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = EdgeCursor {
            at: 42,
            id: uuid::Uuid::nil().to_string(),
        };
        assert_eq!(EdgeCursor::parse(Some(&c.encode())).unwrap(), c);
        assert!(EdgeCursor::parse(Some("!!")).is_err());
        assert!(EdgeCursor::parse(Some(&encode("s", &["1", "2"]))).is_err());
        assert_eq!(EdgeCursor::parse(None).unwrap(), EdgeCursor::start());
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
        assert_eq!(limit(None).unwrap(), 50);
    }
}
