//! `GET /files/{id}` and `GET /files/{id}/thumbnail`: streamed from the store, with a
//! strong `ETag` (the SHA-256), `If-None-Match` → 304, one `Range` → 206 (several ranges
//! are answered with the whole file, as RFC 9110 §14.2 allows), unsatisfiable → 416.
//!
//! Only raster images are `inline`; everything else — SVG and HTML above all, which can
//! run script — is an `attachment`, with `X-Content-Type-Options: nosniff` and a
//! `sandbox` CSP in case a browser renders it anyway.

use std::ops::Range;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kit::error::code;
use kit::http::Path;
use kit::{ApiError, ApiResult};
use token::AuthUser;
use uuid::Uuid;

use crate::access::not_found;
use crate::domain::{StoredFile, content_disposition};
use crate::sniff::Raster;
use crate::state::ApiContext;
use crate::storage::{self, GetError};
use crate::store::files;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/files/{id}", get(download))
        .route("/files/{id}/thumbnail", get(thumbnail))
}

/// The file, if `user` may read it (404 otherwise).
async fn readable(ctx: &ApiContext, id: Uuid, user: Uuid) -> ApiResult<StoredFile> {
    let file = files::get(ctx.db.pool(), id).await?.ok_or_else(not_found)?;
    ctx.access.check(&ctx.db, &file, user).await?;
    Ok(file)
}

async fn download(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let file = readable(&ctx, id, user.id).await?;
    let inline = Raster::from_content_type(&file.content_type).is_some();
    let object = Object {
        key: storage::file_key(file.id),
        etag: format!("\"{}\"", file.sha256),
        size: u64::try_from(file.size).unwrap_or_default(),
        content_type: file.content_type.clone(),
        disposition: content_disposition(inline, &file.filename),
    };
    serve(&ctx, object, &headers).await
}

async fn thumbnail(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let file = readable(&ctx, id, user.id).await?;
    if !file.has_thumbnail {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code::FILE_NOT_FOUND,
            "this file has no thumbnail",
        ));
    }
    let object = Object {
        key: storage::thumbnail_key(file.id),
        // Derived from the original: a thumbnail changes only with its file, which never
        // changes; it must differ from the file's own tag.
        etag: format!("\"{}-thumbnail\"", file.sha256),
        // Unknown until fetched: no ranges on thumbnails (they are a few KiB).
        size: 0,
        content_type: "image/png".to_owned(),
        disposition: content_disposition(true, &format!("{}.thumbnail.png", file.filename)),
    };
    serve(&ctx, object, &headers).await
}

struct Object {
    key: object_store::path::Path,
    etag: String,
    /// Total size, for ranges; 0 = not known (ranges ignored).
    size: u64,
    content_type: String,
    disposition: String,
}

/// What a `Range` header asks of a `size`-byte representation.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`); anything else (other units, several ranges,
/// nonsense) is ignored and the whole representation served, as RFC 9110 §14.2 allows.
fn parse_range(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let range = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Some(start) = parse(a) else {
                return RangeAsk::Whole;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match parse(b) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeAsk::Whole,
                }
            };
            if start >= size {
                return RangeAsk::Unsatisfiable;
            }
            start..end + 1
        }
        (true, false) => {
            let Some(n) = parse(b) else {
                return RangeAsk::Whole;
            };
            if n == 0 || size == 0 {
                return RangeAsk::Unsatisfiable;
            }
            size.saturating_sub(n)..size
        }
        (true, true) => return RangeAsk::Whole,
    };
    RangeAsk::Part(range)
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

fn value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn serve(ctx: &ApiContext, o: Object, req: &HeaderMap) -> ApiResult<Response> {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, value(&o.etag));
    // Private: readable by its uploader and some rooms' members, never by shared caches;
    // a browser may keep it and revalidate with the ETag.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
        && etag_matches(inm, &o.etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    h.insert(header::CONTENT_TYPE, value(&o.content_type));
    h.insert(header::CONTENT_DISPOSITION, value(&o.disposition));
    let mut ask = RangeAsk::Whole;
    if o.size > 0 {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        // If-Range with another validator: the client's part is stale, send everything.
        let if_range_ok = req
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == o.etag);
        if let Some(r) = req.get(header::RANGE).and_then(|v| v.to_str().ok())
            && if_range_ok
        {
            ask = parse_range(r, o.size);
        }
    }
    let (status, range) = match ask {
        RangeAsk::Whole => (StatusCode::OK, None),
        RangeAsk::Part(r) => {
            h.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {}-{}/{}", r.start, r.end - 1, o.size)),
            );
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
        RangeAsk::Unsatisfiable => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                code::VALIDATION_FAILED,
                format!("the file has {} bytes", o.size),
            );
            e.headers
                .push(("content-range", format!("bytes */{}", o.size)));
            return Err(e);
        }
    };
    if let Some(r) = &range {
        h.insert(
            header::CONTENT_LENGTH,
            value(&(r.end - r.start).to_string()),
        );
    } else if o.size > 0 {
        h.insert(header::CONTENT_LENGTH, value(&o.size.to_string()));
    }
    let stream = match ctx.storage.get(&o.key, range).await {
        Ok(s) => s,
        Err(GetError::NotFound) => {
            tracing::warn!(key = %o.key, "file recorded but its object is missing");
            return Err(not_found());
        }
        Err(GetError::Other(e)) => return Err(e),
    };
    metrics::counter!("files_downloads_total", "status" => status.as_str().to_owned()).increment(1);
    Ok((status, h, Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAsk::Part(0..10));
        assert_eq!(parse_range("bytes=90-", 100), RangeAsk::Part(90..100));
        assert_eq!(parse_range("bytes=-10", 100), RangeAsk::Part(90..100));
        assert_eq!(parse_range("bytes=-1000", 100), RangeAsk::Part(0..100));
        assert_eq!(parse_range("bytes=50-1000", 100), RangeAsk::Part(50..100));
        assert_eq!(parse_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAsk::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=5-2", 100), RangeAsk::Whole);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"x\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
