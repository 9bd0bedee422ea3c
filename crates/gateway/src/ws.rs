//! WebSocket relays: once a handshake was answered `101` (the handshake itself goes
//! upstream like any request, through `upstream::send`, see `handler::upgrade`), both
//! connections are upgraded and bytes are relayed both ways. The relay tracks frame
//! boundaries (headers only, payloads pass untouched) so that on shutdown it can end
//! each direction with a proper Close frame (1001 going away) instead of cutting a frame
//! in half. Imports no other module of the crate.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

    /// Relays between the two connections once both upgrades complete, holding `guard`
    /// (the instance's in-flight slot) until the relay ends.
    pub fn relay<G: Send + 'static>(&self, client: OnUpgrade, upstream: OnUpgrade, guard: G) {
        let hub = self.clone();
        self.tracker.spawn(async move {
            let _guard = guard;
            let (client, upstream) = match tokio::join!(client, upstream) {
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
    // A direction that ends cleanly (EOF after the Close handshake) leaves the other to
    // finish; one that fails (a killed chat node resets its socket) ends the relay, and
    // dropping both halves closes the other side too — otherwise a client whose upstream
    // vanished would sit on an open, silent connection until it next wrote (seen in the
    // kill -9 fault drill).
    let both = async {
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                r = &mut up, if !up_done => { up_done = true; if r.is_err() { return; } }
                r = &mut down, if !down_done => { down_done = true; if r.is_err() { return; } }
            }
        }
    };
    tokio::pin!(both);
    tokio::select! {
        _ = &mut both => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(CLOSE_GRACE).await } => {}
    }
}

/// Copies one direction until EOF; on shutdown, finishes the current frame, then sends
/// `close` and ends the direction. When reading fails (the peer reset the connection),
/// the writer still gets `close` at a frame boundary — 1001 "going away", so a client
/// reconnects and resumes — before the direction ends with the error.
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
            n = r.read(&mut buf) => match n {
                Ok(n) => n,
                Err(e) => {
                    if frames.at_boundary() {
                        let _ = w.write_all(close).await;
                        let _ = w.flush().await;
                    }
                    let _ = w.shutdown().await;
                    return Err(e);
                }
            },
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

    /// An upstream whose every read fails as a reset socket does (its process was killed).
    struct ResetUpstream;

    impl AsyncRead for ResetUpstream {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
    }

    impl AsyncWrite for ResetUpstream {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A killed upstream must not leave the client on an open, silent connection: the
    /// client gets a Close 1001 and then the end of the stream, without writing anything.
    #[tokio::test]
    async fn a_reset_upstream_closes_the_client_side() {
        let (mut client, gateway_side) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(gateway_side, ResetUpstream, CancellationToken::new()));
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got));
        assert!(read.await.is_ok(), "the client side was left open");
        assert_eq!(got, CLOSE_TO_CLIENT);
        assert!(
            tokio::time::timeout(Duration::from_secs(2), relay)
                .await
                .is_ok(),
            "the relay ended"
        );
    }
}
