//! WebSocket proxying: the handshake goes to a chosen instance like any request (through
//! [`upstream::send`], so with the same retries, health and failure answers); on
//! `101` both connections are upgraded and bytes are relayed both ways. The relay
//! tracks frame boundaries (headers only, payloads pass untouched) so that on shutdown
//! it can end each direction with a proper Close frame (1001 going away) instead of
//! cutting a frame in half.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use kit::ApiError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{GuardedBody, Replayable};
use crate::edge_auth::Identity;
use crate::proxy::{
    Gateway, Route, failure_response, query_without_token, strip_hop_by_hop, upstream_headers,
};
use crate::upstream::{self, Outgoing};

/// Live relays, so shutdown can close them and wait for them.
#[derive(Clone)]
pub struct WsHub {
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    active: metrics::Gauge,
}

impl WsHub {
    pub fn new(shutdown: CancellationToken) -> Self {
        let active = metrics::gauge!("gateway_ws_active");
        active.set(0.0);
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            active,
        }
    }

    /// Waits (after shutdown) until every relay has closed, at most `grace`.
    pub async fn drain(&self, grace: Duration) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
    }
}

/// How long a relay may take to reach a frame boundary and send its Close on shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
pub async fn proxy(
    gw: &Gateway,
    route: &Route,
    peer: SocketAddr,
    mut req: Request,
    upstream_path: &str,
    token: Option<String>,
    identity: Option<Identity>,
    request_id: &HeaderValue,
    peer_trusted: bool,
) -> Response {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    let query = parts.uri.query().map(query_without_token);
    upstream_headers(
        &mut parts.headers,
        route,
        peer,
        peer_trusted,
        request_id,
        identity,
    );
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Some(token) = token {
        // The query parameter travels upstream as a header, out of URLs and their logs.
        if let Ok(v) = HeaderValue::try_from(format!("Bearer {token}")) {
            parts.headers.insert(header::AUTHORIZATION, v);
        }
    }
    let deadline = tokio::time::Instant::now() + route.timeout.min(Duration::from_secs(10));
    let Ok(handshake) = http::Request::builder()
        .method(http::Method::GET)
        .version(http::Version::HTTP_11)
        .body(())
    else {
        return ApiError::internal("cannot build the upstream request").into_response();
    };
    let (mut handshake, ()) = handshake.into_parts();
    handshake.headers = parts.headers;
    let outgoing = Outgoing {
        parts: handshake,
        body: Replayable::empty(),
        path: upstream_path,
        query: query.as_deref(),
        deadline,
    };
    let upstream_res = match upstream::send(gw.clients.get(), &route.cluster, outgoing).await {
        Ok(r) => r,
        Err(e) => return failure_response(route, e),
    };
    let (mut res, in_flight) = upstream_res;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The service refused the handshake (401, 400, …): pass its answer on.
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, Body::new(GuardedBody::new(body, in_flight)));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut res);
    let (parts, _) = res.into_parts();
    let hub = gw.ws.clone();
    hub.tracker.clone().spawn(async move {
        let _in_flight = in_flight;
        let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(c), Ok(u)) => (TokioIo::new(c), TokioIo::new(u)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        hub.active.increment(1.0);
        relay(client, upstream, hub.shutdown.clone()).await;
        hub.active.decrement(1.0);
    });
    // The 101 carries the service's handshake answer (Sec-WebSocket-Accept, protocol).
    Response::from_parts(parts, Body::empty())
}

/// Close frame, status 1001 (going away), as the server sends it (unmasked).
const CLOSE_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];
/// The same from a client (masked; a zero mask leaves the payload as is).
const CLOSE_TO_SERVER: [u8; 8] = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9];

async fn relay<C, U>(client: C, upstream: U, shutdown: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    U: AsyncRead + AsyncWrite + Send + 'static,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let up = pump(client_r, upstream_w, shutdown.clone(), &CLOSE_TO_SERVER);
    let down = pump(upstream_r, client_w, shutdown.clone(), &CLOSE_TO_CLIENT);
    let both = async { tokio::join!(up, down) };
    tokio::pin!(both);
    tokio::select! {
        _ = &mut both => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(CLOSE_GRACE).await } => {}
    }
}

/// Copies one direction until EOF; on shutdown, finishes the current frame, then sends
/// `close` and ends the direction.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    shutdown: CancellationToken,
    close: &[u8],
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = FrameTracker::default();
    loop {
        let n = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if frames.at_boundary() => {
                w.write_all(close).await?;
                w.flush().await?;
                let _ = w.shutdown().await;
                return Ok(());
            }
            n = r.read(&mut buf) => n?,
        };
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        frames.feed(&buf[..n]);
        w.write_all(&buf[..n]).await?;
    }
}

/// Follows WebSocket frame boundaries in a byte stream (RFC 6455 §5.2).
#[derive(Default)]
struct FrameTracker {
    header: Vec<u8>,
    remaining: u64,
}

impl FrameTracker {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            if let Some(len) = payload_len(&self.header) {
                self.remaining = len;
                self.header.clear();
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }
}

/// The payload length once `h` holds a complete frame header.
fn payload_len(h: &[u8]) -> Option<u64> {
    if h.len() < 2 {
        return None;
    }
    let masked = h[1] & 0x80 != 0;
    let len7 = h[1] & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    if h.len() < 2 + ext + if masked { 4 } else { 0 } {
        return None;
    }
    Some(match ext {
        0 => u64::from(len7),
        2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        _ => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_across_reads() {
        let mut t = FrameTracker::default();
        // Unmasked text frame "hello", then a masked frame with a 16-bit length of 200.
        let mut stream = vec![0x81, 5];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x81, 0x80 | 126, 0, 200, 1, 2, 3, 4]);
        stream.extend(std::iter::repeat_n(0u8, 200));
        t.feed(&stream[..3]);
        assert!(!t.at_boundary());
        t.feed(&stream[3..7]);
        assert!(t.at_boundary());
        t.feed(&stream[7..10]);
        assert!(!t.at_boundary());
        t.feed(&stream[10..100]);
        assert!(!t.at_boundary());
        t.feed(&stream[100..]);
        assert!(t.at_boundary());
    }
}
