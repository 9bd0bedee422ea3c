//! Files embedded in the binary: the web client (`web/` at the workspace root, served at
//! `/`) and the API explorer (`assets/docs`, served at `/docs`). Names are not hashed, so
//! everything is `Cache-Control: no-cache` with a strong ETag (revalidation is a 304).

use std::collections::HashMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use include_dir::{Dir, include_dir};
use sha2::{Digest, Sha256};

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web");
static DOCS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets/docs");

/// No inline scripts or styles; the client talks only to this origin. `connect-src
/// 'self'` covers its WebSocket too (same-origin `ws:`/`wss:` match `'self'` in CSP
/// Level 3, as Chromium, Firefox and Safari implement it); `ws: wss:` would allow any host.
/// `img-src blob:`: attachment images are fetched with the bearer token (`/files` needs
/// `Authorization`, which an `<img src>` cannot send) and shown from blob URLs the page
/// itself made.
pub const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' https: data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

struct Asset {
    body: &'static [u8],
    content_type: HeaderValue,
    etag: HeaderValue,
}

pub struct Assets {
    web: HashMap<String, Asset>,
    docs: HashMap<String, Asset>,
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Files that belong to the web client's development, not to what browsers load.
fn served(path: &str) -> bool {
    !path.split('/').any(|seg| {
        seg.starts_with('.')
            || matches!(seg, "e2e" | "node_modules" | "test" | "tests")
            || seg.ends_with(".md")
            || seg == "package.json"
            || seg == "package-lock.json"
    })
}

fn collect(dir: &'static Dir<'static>, out: &mut HashMap<String, Asset>) {
    for file in dir.files() {
        let path = file.path().to_string_lossy().replace('\\', "/");
        if !served(&path) {
            continue;
        }
        let digest = Sha256::digest(file.contents());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        out.insert(
            path.clone(),
            Asset {
                body: file.contents(),
                content_type: HeaderValue::from_static(content_type(&path)),
                etag: HeaderValue::try_from(etag)
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
            },
        );
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

impl Assets {
    pub fn load() -> Self {
        let mut web = HashMap::new();
        collect(&WEB, &mut web);
        let mut docs = HashMap::new();
        collect(&DOCS, &mut docs);
        Self { web, docs }
    }

    /// A file of the web client for `path`; paths without a file extension that accept
    /// HTML get `index.html` (client-side routes).
    pub fn web(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "index.html" } else { rel };
        if let Some(a) = self.web.get(rel) {
            return Some(respond(a, method, headers));
        }
        let last = rel.rsplit('/').next().unwrap_or("");
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if !last.contains('.') && wants_html {
            return self
                .web
                .get("index.html")
                .map(|a| respond(a, method, headers));
        }
        None
    }

    pub fn docs(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let rel = path
            .strip_prefix("/docs")
            .unwrap_or(path)
            .trim_start_matches('/');
        let rel = if rel.is_empty() { "index.html" } else { rel };
        self.docs.get(rel).map(|a| respond(a, method, headers))
    }
}

fn respond(a: &Asset, method: &Method, headers: &HeaderMap) -> Response {
    let not_modified = headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == a.etag.as_bytes() || t.trim_ascii() == b"*")
    });
    let mut res = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(a.body.len()));
        r
    } else {
        Response::new(Body::from(a.body))
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, a.content_type.clone());
    h.insert(header::ETAG, a.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}
