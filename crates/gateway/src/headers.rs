//! Header rewriting, both ways: hop-by-hop headers (RFC 9110 §7.6.1), identity and
//! forwarding headers for the upstream, request id and W3C trace context, rate-limit
//! and security headers on the answer.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use kit::trace::TraceParentRef;

use crate::edge_auth::Identity;
use crate::ratelimit::Decision;
use crate::state::{Ctx, Gateway, Route};

static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub(crate) static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static REFERRER_POLICY: HeaderName = HeaderName::from_static("referrer-policy");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it
/// names, plus the well-known ones.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::try_from(t.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
}

/// Removes identity headers a client must not set, and forwarding headers from peers
/// that are not trusted proxies.
fn strip_untrusted(headers: &mut HeaderMap, peer_trusted: bool) {
    headers.remove(&X_USER_ID);
    headers.remove(&X_SESSION_ID);
    let mut drop: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-internal-")
            || (!peer_trusted && (n.starts_with("x-forwarded-") || n == "forwarded"))
        {
            drop.push(name.clone());
        }
    }
    for name in drop {
        headers.remove(name);
    }
}

/// A W3C `traceparent` continuing the client's trace (parsed by the one rule,
/// [`kit::trace::TraceParentRef::parse`]), or starting one; always a new span. Built in
/// a stack buffer: this runs on every proxied request.
fn traceparent(incoming: Option<&HeaderValue>) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let span: u64 = rand::random::<u64>().max(1);
    // "00-" trace(32) "-" span(16) "-" flags(2)
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let parsed = incoming
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParentRef::parse);
    match parsed {
        Some(tp) => {
            out[3..35].copy_from_slice(tp.trace_id.as_bytes());
            out[53] = HEX[usize::from(tp.flags >> 4)];
            out[54] = HEX[usize::from(tp.flags & 0xf)];
        }
        None => {
            let trace = rand::random::<u128>().max(1);
            for (i, o) in out[3..35].iter_mut().enumerate() {
                *o = HEX[((trace >> (4 * (31 - i))) & 0xf) as usize];
            }
        }
    }
    for (i, o) in out[36..52].iter_mut().enumerate() {
        *o = HEX[((span >> (4 * (15 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
}

/// A uuid as a header value, formatted without an intermediate `String`.
fn uuid_header(id: uuid::Uuid) -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&kit::http::X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(kit::http::is_valid_request_id))
        .cloned()
        .unwrap_or_else(|| uuid_header(uuid::Uuid::now_v7()))
}

/// Rewrites the client's headers for the upstream, in place.
pub(crate) fn upstream_headers(
    headers: &mut HeaderMap,
    route: &Route,
    ctx: &Ctx,
    identity: Option<Identity>,
) {
    let peer_trusted = ctx.peer_trusted;
    strip_hop_by_hop(headers);
    strip_untrusted(headers, peer_trusted);
    let peer_ip = ctx.peer.ip().to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if peer_trusted => format!("{prior}, {peer_ip}"),
        _ => peer_ip,
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    headers.remove(&FORWARDED);
    // The client will set Host to the instance's authority.
    headers.remove(header::HOST);
    headers.insert(kit::http::X_REQUEST_ID.clone(), ctx.request_id.clone());
    let tp = traceparent(headers.get(&kit::http::TRACEPARENT));
    headers.insert(kit::http::TRACEPARENT.clone(), tp);
    if let Some(id) = identity {
        // A hint only: services verify the token themselves.
        headers.insert(X_USER_ID.clone(), uuid_header(id.user_id));
    }
    for name in &route.request_remove {
        headers.remove(name);
    }
    for (name, value) in &route.request_add {
        headers.insert(name.clone(), value.clone());
    }
}

/// The client's address: the peer's, or from `X-Forwarded-For` when the peer is a
/// trusted proxy.
pub(crate) fn client_ip(gw: &Gateway, ctx: &Ctx, headers: &HeaderMap) -> IpAddr {
    if !ctx.peer_trusted {
        return ctx.peer.ip();
    }
    let xff = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    gw.trusted.client_ip(ctx.peer.ip(), xff)
}

pub(crate) fn ratelimit_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(d.limit));
    headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(d.remaining));
    headers.insert(
        RATELIMIT_RESET.clone(),
        HeaderValue::from(d.reset_ms.div_ceil(1000)),
    );
}

/// The headers every answer carries, set last: request id, security, caching.
/// `no_store`: the route says so; `authenticated`: the request carried a token.
pub(crate) fn response_headers(
    headers: &mut HeaderMap,
    request_id: HeaderValue,
    no_store: bool,
    authenticated: bool,
) {
    headers.insert(kit::http::X_REQUEST_ID.clone(), request_id);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    headers
        .entry(REFERRER_POLICY.clone())
        .or_insert_with(|| NO_REFERRER.clone());
    if no_store {
        headers.insert(header::CACHE_CONTROL, NO_STORE.clone());
    } else if authenticated {
        // Unless the service chose its own (e.g. `private` on a file download).
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert_with(|| NO_STORE.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn traceparent_keeps_the_trace_and_makes_a_new_span() {
        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let out = traceparent(Some(&incoming));
        let s = out.to_str().unwrap();
        assert!(s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!s.contains("00f067aa0ba902b7"));
        assert!(s.ends_with("-01"));
        let fresh = traceparent(Some(&HeaderValue::from_static("garbage")));
        assert_eq!(fresh.to_str().unwrap().len(), 55);
        let shape = |v: &str| {
            let p: Vec<&str> = v.split('-').collect();
            p.len() == 4
                && p[0] == "00"
                && p[1].len() == 32
                && p[2].len() == 16
                && p[3].len() == 2
                && v.bytes()
                    .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        assert!(shape(fresh.to_str().unwrap()), "{fresh:?}");
        // A higher version's trace is kept (its first four fields are read) and passed
        // on as version 00; the flags are kept.
        let future = HeaderValue::from_static(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
        );
        let s = traceparent(Some(&future));
        let s = s.to_str().unwrap();
        assert!(s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{s}");
        assert!(s.ends_with("-00") && shape(s), "{s}");
        // Invalid ones (kit::trace's rule) start a new trace: all-zero trace id, version
        // ff, bad parent id, version 00 longer than 55, upper case.
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            let out = traceparent(Some(&HeaderValue::from_static(bad)));
            let out = out.to_str().unwrap();
            assert!(shape(out), "{out}");
            assert!(
                !out.to_ascii_lowercase()
                    .contains("4bf92f3577b34da6a3ce929d0e0e4736"),
                "{bad} kept"
            );
        }
    }

    #[test]
    fn uuid_headers_are_hyphenated_lower_case() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuid_header(id).to_str().unwrap(), id.to_string());
        let rid = request_id(&HeaderMap::new());
        assert!(uuid::Uuid::parse_str(rid.to_str().unwrap()).is_ok());
    }
}
