//! The edge checks, in order, before anything goes upstream: the path (dot segments,
//! encoded separators, services' internal endpoints), the method, the body's declared
//! size and type, the access token, the rate limit. Each refusal is a problem+json.

use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};
use kit::ApiError;
use kit::error::code;
use token::TokenError;

use crate::config::AuthPolicy;
use crate::edge_auth::Identity;
use crate::headers::client_ip;
use crate::ratelimit::{ClientKey, Decision};
use crate::reply::{payload_too_large, problem, rate_limited};
use crate::state::{Ctx, Gateway, Route};

/// What the edge checks let through.
pub(crate) struct Admission {
    pub upstream_path: String,
    pub websocket: bool,
    pub identity: Option<Identity>,
    /// The token of a WebSocket handshake, which travels upstream as a header.
    pub token_for_upstream: Option<String>,
    pub decision: Decision,
}

/// The edge checks, in order; `Err` is the answer when a check fails.
pub(crate) async fn admit(
    gw: &Gateway,
    route: &Route,
    ctx: &Ctx,
    req: &http::request::Parts,
    body_expected: bool,
) -> Result<Admission, Response> {
    let path = req.uri.path();
    if suspicious_path(path) {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            code::INVALID_PATH,
            "dot segments and encoded separators are not allowed in paths",
        ));
    }
    let upstream_path = route.upstream_path(path).into_owned();
    if hidden_upstream_path(&upstream_path) {
        return Err(ApiError::not_found("no such route").into_response());
    }
    if !route.allows(&req.method) {
        let mut res = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            code::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
        );
        res.headers_mut().insert(header::ALLOW, route.allow.clone());
        return Err(res);
    }
    let websocket = route.websocket && is_upgrade(&req.headers);
    if body_expected {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.body_limit) {
            return Err(payload_too_large(route.body_limit));
        }
        if route.json
            && matches!(req.method, Method::POST | Method::PUT | Method::PATCH)
            && !is_json(&req.headers)
        {
            return Err(problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
    }

    let mut identity: Option<Identity> = None;
    let mut token_for_upstream: Option<String> = None;
    if route.auth == AuthPolicy::Token {
        let Some(token) = access_token(req, websocket) else {
            return Err(token::extract::rejection(TokenError::Missing).into_response());
        };
        let verified = gw.auth.verify(&token).await;
        if websocket && verified.is_ok() {
            token_for_upstream = Some(token.into_owned());
        }
        match verified {
            Ok(id) => identity = Some(id),
            Err(e) => {
                // Bad tokens still count against the caller's address.
                let key = ClientKey::Ip(client_ip(gw, ctx, &req.headers));
                let d = gw.limiter.check(route.rate_limit, key).await;
                if !d.allowed {
                    route.ratelimited.increment(1);
                    return Err(rate_limited(&d));
                }
                return Err(token::extract::rejection(e).into_response());
            }
        }
    }

    let key = match identity {
        Some(id) => ClientKey::User(id.user_id),
        None => ClientKey::Ip(client_ip(gw, ctx, &req.headers)),
    };
    let decision = gw.limiter.check(route.rate_limit, key).await;
    if !decision.allowed {
        route.ratelimited.increment(1);
        return Err(rate_limited(&decision));
    }

    Ok(Admission {
        upstream_path,
        websocket,
        identity,
        token_for_upstream,
        decision,
    })
}

/// Paths that could reach what a service keeps internal: dot segments and encoded
/// separators are refused outright rather than normalised differently than a service would.
fn suspicious_path(path: &str) -> bool {
    path.split('/').any(|seg| seg == "." || seg == "..") || {
        let lower = path.as_bytes();
        lower.windows(3).any(|w| {
            w[0] == b'%'
                && matches!(
                    (w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()),
                    (b'2', b'e') | (b'2', b'f') | (b'5', b'c')
                )
        })
    }
}

/// Whether any segment of `path` is `metrics`, however it is spelled (`%6detrics`,
/// `METRICS`, with empty segments or a trailing slash around it). No public route has
/// such a segment (path parameters are ids), so refusing them all is simpler and safer
/// than predicting how each service normalises a path.
pub(crate) fn names_metrics(path: &str) -> bool {
    path.split('/').any(|seg| {
        seg.len() >= "metrics".len()
            && if seg.contains('%') {
                percent_decode(seg).eq_ignore_ascii_case("metrics")
            } else {
                seg.eq_ignore_ascii_case("metrics")
            }
    })
}

/// Service endpoints that stay inside: the upstream path after rewriting.
fn hidden_upstream_path(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/readyz" | "/openapi.json")
        || path == "/internal"
        || path.starts_with("/internal/")
        || path.contains("/internal/")
        || path.ends_with("/internal")
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5
                    && m[..12.min(m.len())].eq_ignore_ascii_case("application/")
                    && m[m.len() - 5..].eq_ignore_ascii_case("+json"))
        })
        .unwrap_or(false)
}

/// The access token of a request: `Authorization: Bearer`, or on WebSocket routes the
/// `access_token` query parameter (browsers cannot set headers there).
fn access_token(req: &http::request::Parts, websocket: bool) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(t) = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token::extract::bearer)
    {
        return Some(t.into());
    }
    if websocket {
        return query_param(req.uri.query()?, "access_token").map(Into::into);
    }
    None
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query without `access_token` (it travels upstream as a header instead).
pub(crate) fn query_without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("access_token="))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    #[test]
    fn paths_that_could_escape_a_route_are_refused() {
        assert!(suspicious_path("/users/../internal/x"));
        assert!(suspicious_path("/users/%2e%2e/metrics"));
        assert!(suspicious_path("/users/a%2Fb"));
        assert!(!suspicious_path("/users/me"));
        assert!(hidden_upstream_path("/internal/relationships/a/b"));
        assert!(hidden_upstream_path("/users/internal/x"));
        assert!(hidden_upstream_path("/metrics"));
        assert!(!hidden_upstream_path("/users/me"));
        for p in [
            "/metrics",
            "//metrics",
            "/metrics/",
            "/%6detrics",
            "/%6D%65trics",
            "/METRICS",
            "/chat/metrics",
            "/chat/../metrics",
        ] {
            assert!(names_metrics(p), "{p}");
        }
        assert!(!names_metrics("/users/me"));
        assert!(!names_metrics("/chat/rooms/metricsroom"));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }

    #[test]
    fn access_token_query_param_is_decoded_and_removed() {
        assert_eq!(
            query_param("a=1&access_token=x%2By", "access_token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_without_token("access_token=abc&x=1"), "x=1");
    }
}
