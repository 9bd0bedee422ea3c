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
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub(crate) static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static REFERRER_POLICY: HeaderName = HeaderName::from_static("referrer-policy");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Whether `name` is one of the well-known hop-by-hop headers of RFC 9110 §7.6.1.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it
/// names, plus the well-known ones.
///
/// One pass over the names finds the ones present, and only those are removed: most
/// requests carry none, most responses only `Connection: keep-alive`, and the nine
/// unconditional `remove`s (each hashing a name and probing the map) plus a `Vec` and a
/// parsed `HeaderName` per token cost 1.8 % of the gateway's CPU per proxied request in
/// the production-topology profile (docs/gateway-perf-notes.md).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // At most the nine well-known names: `keys()` yields each name once.
    let mut found: [Option<HeaderName>; 9] = Default::default();
    let mut n = 0;
    for name in headers.keys() {
        if is_hop_by_hop(name) && n < found.len() {
            found[n] = Some(name.clone());
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        for token in conn.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            // The named header, if present (names are lower case; tokens need not be).
            let named = headers
                .keys()
                .find(|k| k.as_str().eq_ignore_ascii_case(token))
                .cloned();
            if let Some(name) = named {
                headers.remove(name);
            }
        }
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
}

/// Removes identity headers a client must not set, and forwarding headers from peers
/// that are not trusted proxies. One pass over the names; the map is only touched when
/// one is found (rare: a plain request pays no `remove`).
fn strip_untrusted(headers: &mut HeaderMap, peer_trusted: bool) {
    let mut drop: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n == X_USER_ID.as_str()
            || n == X_SESSION_ID.as_str()
            || n.starts_with("x-internal-")
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
        .unwrap_or_else(|| uuid_header(new_request_id()))
}

/// A version-7 uuid (unix milliseconds, then random bits) for a request without an id.
/// `Uuid::now_v7` draws its random bits with a `getrandom` syscall on every call: one
/// syscall per request, 2.3 % of the gateway's CPU in the production-topology profile.
/// The thread's RNG (seeded from the OS, never a syscall per call) is as good for ids,
/// which need to be unique, not secret.
fn new_request_id() -> uuid::Uuid {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// `X-Forwarded-For` for a direct (untrusted) peer: its address, formatted once per
/// thread and address rather than per request (`Ipv4Addr`'s `Display`, a `String` and
/// a header value per request: 1 % of the CPU per request in the profile). Behind a
/// proxy or load balancer every connection comes from a handful of addresses.
fn peer_xff(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, v)) = last.as_ref()
            && *cached == ip
        {
            return v.clone();
        }
        let v = HeaderValue::try_from(ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((ip, v.clone()));
        v
    })
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
    let prior = if peer_trusted {
        headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(|prior| format!("{prior}, {}", ctx.peer.ip()))
    } else {
        None
    };
    let xff = match prior {
        Some(chain) => HeaderValue::try_from(chain).ok(),
        None => Some(peer_xff(ctx.peer.ip())),
    };
    if let Some(v) = xff {
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
    // The limit is the policy's burst: formatted once per thread and value, not per
    // request (a `HeaderValue` from a number is a formatting and an allocation).
    thread_local! {
        static LIMIT: std::cell::RefCell<Option<(u32, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let limit = LIMIT.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some((l, v)) if *l == d.limit => v.clone(),
            _ => {
                let v = HeaderValue::from(d.limit);
                *last = Some((d.limit, v.clone()));
                v
            }
        }
    });
    headers.insert(RATELIMIT_LIMIT.clone(), limit);
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
        // Tokens are case-insensitive; nothing hop-by-hop: nothing removed.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("X-Other"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        // The limit is cached per value.
        for (limit, remaining) in [(5u32, 4u32), (5, 3), (7, 6)] {
            let d = Decision {
                allowed: true,
                limit,
                remaining,
                reset_ms: 1500,
                retry_after_ns: 0,
            };
            let mut h = HeaderMap::new();
            ratelimit_headers(&mut h, &d);
            assert_eq!(h[&RATELIMIT_LIMIT], limit.to_string().as_str());
            assert_eq!(h[&RATELIMIT_REMAINING], remaining.to_string().as_str());
            assert_eq!(h[&RATELIMIT_RESET], "2");
        }
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
        let parsed = uuid::Uuid::parse_str(rid.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let (secs, nanos) = parsed.get_timestamp().unwrap().to_unix();
        let id_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(id_ms <= ms && ms - id_ms < 5_000, "{id_ms} vs {ms}");
        assert_ne!(request_id(&HeaderMap::new()), rid);
        assert_eq!(
            peer_xff(IpAddr::from([10, 1, 2, 3])),
            HeaderValue::from_static("10.1.2.3")
        );
        assert_eq!(
            peer_xff(IpAddr::from([10, 1, 2, 4])),
            HeaderValue::from_static("10.1.2.4")
        );
    }
}
