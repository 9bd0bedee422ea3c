//! WebSocket clients for `/chat/ws`: connecting many sockets (spread over several
//! 127.0.0.x source addresses so ephemeral ports do not run out) and cheap extraction of
//! the few fields the scenarios need from server frames without a full JSON parse.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};

use anyhow::Context;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket = WebSocketStream<TcpStream>;

/// How many loopback source addresses connections rotate over (127.0.0.1 ..= 127.0.0.N).
const SOURCE_ADDRESSES: usize = 8;
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);
/// Bytes read from a socket at a time (server frames are a few hundred bytes).
const READ_BUFFER: usize = 4096;

pub async fn connect(server: SocketAddr, token: &str) -> anyhow::Result<Socket> {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCE_ADDRESSES;
    let source = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1 + n as u8), 0));
    let socket = TcpSocket::new_v4()?;
    // Fall back to the default source if this loopback alias is not usable.
    let stream = if socket.bind(source).is_ok() {
        socket.connect(server).await?
    } else {
        TcpStream::connect(server).await?
    };
    stream.set_nodelay(true)?;
    let mut req = format!("ws://{server}/chat/ws").into_client_request()?;
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .context("token is not a header value")?,
    );
    // Small buffers: tungstenite's default 128 KiB read buffer is refilled on every read,
    // which for 10,000 sockets made the load generator spend a core on memory traffic.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .context("websocket handshake")?;
    Ok(ws)
}

/// Sends `{"type":"ping"}` and reads until the `pong` (other frames are skipped).
pub async fn ping_pong(sock: &mut Socket, limit: Duration) -> anyhow::Result<()> {
    sock.send(Message::text(r#"{"type":"ping"}"#)).await?;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => anyhow::bail!("no pong within {limit:?}"),
            m = sock.next() => match m {
                Some(Ok(Message::Text(t))) if is_type(&t, "pong") => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("closed before pong"),
            }
        }
    }
}

/// The integer after the first `"<key>":` in `text`.
pub fn int_field(text: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let rest = text[at..].trim_start();
    let end = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The number right after `marker` (message bodies carry `<marker><nanos>`).
pub fn marked_number(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The string after the first `"<key>":"` in `text`, up to the next quote (for values
/// without escapes, such as ids).
pub fn str_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let at = text.find(&pat)? + pat.len();
    let rest = &text[at..];
    rest.find('"').map(|end| &rest[..end])
}

pub fn is_type(text: &str, ty: &str) -> bool {
    // `"type":"<ty>"` without building the pattern (called for every frame received).
    text.match_indices("\"type\":\"").any(|(at, pat)| {
        let rest = &text[at + pat.len()..];
        rest.strip_prefix(ty).is_some_and(|r| r.starts_with('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_from_frames() {
        let f = r#"{"type":"event","room_id":"r","seq": 42,"event":{"seq":42,"message":{"body":"fo:123456 x","seq":42}}}"#;
        assert!(is_type(f, "event"));
        assert!(!is_type(f, "ack"));
        assert_eq!(int_field(f, "seq"), Some(42));
        assert_eq!(int_field(r#"{"x":-7}"#, "x"), Some(-7));
        assert_eq!(int_field(f, "nope"), None);
        assert_eq!(marked_number(f, "fo:"), Some(123456));
        assert_eq!(marked_number(f, "zz:"), None);
        let ack = r#"{"type":"ack","client_msg_id":"ws1-2-3","message":{"seq":4}}"#;
        assert_eq!(str_field(ack, "client_msg_id"), Some("ws1-2-3"));
        assert_eq!(str_field(ack, "nope"), None);
    }
}
