//! For tests: an SMTP sink (a TCP server speaking just enough SMTP — EHLO/HELO, MAIL,
//! RCPT, DATA, RSET, NOOP, QUIT — to take mail from lettre) and a parser of what it
//! received (or of an `.eml` in the outbox): headers unfolded and RFC 2047-decoded, the
//! text and HTML parts with their transfer encoding (quoted-printable, base64) undone.
//!
//! ```ignore
//! let (sink, url) = mail::testing::SmtpSink::start().await;   // url: smtp://127.0.0.1:port
//! let m = sink.next_message(Duration::from_secs(10)).await;
//! assert_eq!(m.header("Subject"), Some("Hello"));
//! ```
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

/// A mail as received: the SMTP envelope and the parsed message.
#[derive(Debug, Clone, Default)]
pub struct ParsedMail {
    /// `MAIL FROM` (empty for an `.eml`).
    pub envelope_from: String,
    /// `RCPT TO`, in order (empty for an `.eml`).
    pub envelope_to: Vec<String>,
    /// Top-level headers, unfolded and decoded, in order.
    pub headers: Vec<(String, String)>,
    /// The `text/plain` part (or the whole body of a plain mail), decoded.
    pub text: Option<String>,
    /// The `text/html` part, decoded.
    pub html: Option<String>,
    /// The message as sent (dot-stuffing undone), CRLF line ends.
    pub raw: String,
}

impl ParsedMail {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The text part; panics (naming the mail) when there is none.
    pub fn text(&self) -> &str {
        self.text
            .as_deref()
            .unwrap_or_else(|| panic!("no text part in:\n{}", self.raw))
    }

    /// The HTML part; panics (naming the mail) when there is none.
    pub fn html(&self) -> &str {
        self.html
            .as_deref()
            .unwrap_or_else(|| panic!("no HTML part in:\n{}", self.raw))
    }
}

/// The SMTP server. Dropping it stops accepting connections.
pub struct SmtpSink {
    rx: Mutex<mpsc::UnboundedReceiver<ParsedMail>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Listens on 127.0.0.1 (a free port); returns the sink and its `smtp://` URL.
    pub async fn start() -> (SmtpSink, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(stream, tx).await {
                        eprintln!("smtp sink: session ended: {e}");
                    }
                });
            }
        });
        (
            SmtpSink {
                rx: Mutex::new(rx),
                task,
            },
            url,
        )
    }

    /// The next mail received; panics when none arrives within `timeout`.
    pub async fn next_message(&self, timeout: Duration) -> ParsedMail {
        self.try_next_message(timeout)
            .await
            .unwrap_or_else(|| panic!("no mail received within {timeout:?}"))
    }

    /// The next mail received within `timeout`, or None (to check that nothing is sent).
    pub async fn try_next_message(&self, timeout: Duration) -> Option<ParsedMail> {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(timeout, rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// One SMTP session (RFC 5321's minimum, no extensions advertised: lettre then sends
/// 7-bit-safe bodies and no AUTH or STARTTLS).
async fn session(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<ParsedMail>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end();
        let verb = cmd
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "MAIL" => {
                from = angle(cmd);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                to.push(angle(cmd));
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with .\r\n").await?;
                let mut raw = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    raw.push_str(l.strip_prefix('.').unwrap_or(l));
                    raw.push_str("\r\n");
                }
                // lettre ends DATA with CRLF.CRLF after the message even when the message
                // ends with a CRLF itself: that empty last line is not the message's.
                if raw.ends_with("\r\n\r\n") {
                    raw.truncate(raw.len() - 2);
                }
                let mut m = parse(&raw);
                m.envelope_from = std::mem::take(&mut from);
                m.envelope_to = std::mem::take(&mut to);
                let _ = tx.send(m);
                b"250 OK queued\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The address between `<` and `>` of `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn angle(cmd: &str) -> String {
    let start = cmd.find('<').map_or(0, |i| i + 1);
    let end = cmd[start..].find('>').map_or(cmd.len(), |i| start + i);
    cmd[start..end].to_owned()
}

/// Parses an RFC 5322 message (an `.eml` file's content, or what the sink received).
pub fn parse(raw: &str) -> ParsedMail {
    let raw = raw.replace("\r\n", "\n");
    let (headers, body) = split_entity(&raw);
    let mut m = ParsedMail {
        headers: headers.clone(),
        raw: raw.replace('\n', "\r\n"),
        ..ParsedMail::default()
    };
    collect_parts(&headers, body, false, &mut m);
    m
}

/// Headers (unfolded, decoded) and the body of one entity.
fn split_entity(entity: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match entity.find("\n\n") {
        Some(i) => (&entity[..i], &entity[i + 2..]),
        None => (entity, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim_start());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    for (_, v) in &mut headers {
        *v = decode_words(v);
    }
    (headers, body)
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parameter of a header value: `boundary` of `multipart/alternative; boundary="x"`.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn collect_parts(headers: &[(String, String)], body: &str, in_multipart: bool, m: &mut ParsedMail) {
    let ctype = find(headers, "Content-Type").unwrap_or("text/plain");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let Some(boundary) = param(ctype, "boundary") else {
            return;
        };
        let delimiter = format!("--{boundary}");
        for part in body.split(&delimiter).skip(1) {
            if part.starts_with("--") {
                break; // the closing delimiter
            }
            let part = part.strip_prefix('\n').unwrap_or(part);
            let (h, b) = split_entity(part);
            collect_parts(&h, b, true, m);
        }
        return;
    }
    // The line break before a boundary belongs to the boundary (RFC 2046 §5.1.1).
    let body = if in_multipart {
        body.strip_suffix('\n').unwrap_or(body)
    } else {
        body
    };
    let decoded = match find(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase()
        .as_str()
    {
        "quoted-printable" => quoted_printable(body),
        "base64" => {
            let compact: String = body.split_whitespace().collect();
            String::from_utf8_lossy(&STANDARD.decode(compact).unwrap_or_default()).into_owned()
        }
        _ => body.to_owned(),
    };
    match mime.as_str() {
        "text/html" if m.html.is_none() => m.html = Some(decoded),
        "text/plain" if m.text.is_none() => m.text = Some(decoded),
        _ => {}
    }
}

/// RFC 2045 §6.7: `=XX` bytes, `=` at a line end joins lines.
fn quoted_printable(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let lines: Vec<&str> = s.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_end_matches([' ', '\t']);
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let b = line.as_bytes();
        let mut j = 0;
        while j < b.len() {
            let hex = line
                .get(j + 1..j + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) if b[j] == b'=' => {
                    out.push(v);
                    j += 3;
                }
                _ => {
                    out.push(b[j]);
                    j += 1;
                }
            }
        }
        if !soft && i + 1 < lines.len() {
            out.push(b'\n');
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) of a header value; the
/// space between two adjacent encoded words is dropped.
fn decode_words(v: &str) -> String {
    if !v.contains("=?") {
        return v.to_owned();
    }
    let mut out = String::new();
    let mut last_was_word = false;
    for token in v.split(' ') {
        let word = token
            .strip_prefix("=?")
            .and_then(|t| t.strip_suffix("?="))
            .and_then(|t| {
                let mut it = t.splitn(3, '?');
                let (_charset, enc, text) = (it.next()?, it.next()?, it.next()?);
                let bytes = match enc.to_ascii_lowercase().as_str() {
                    "b" => STANDARD.decode(text).ok()?,
                    "q" => quoted_printable(&text.replace('_', " ")).into_bytes(),
                    _ => return None,
                };
                Some(String::from_utf8_lossy(&bytes).into_owned())
            });
        match word {
            Some(w) => {
                if !out.is_empty() && !last_was_word {
                    out.push(' ');
                }
                out.push_str(&w);
                last_was_word = true;
            }
            None => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(token);
                last_was_word = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_decodes_bytes_and_soft_breaks() {
        assert_eq!(
            quoted_printable("caf=C3=A9 ok=\nnext\nline"),
            "café oknext\nline"
        );
        assert_eq!(quoted_printable("a=3Db"), "a=b");
    }

    #[test]
    fn encoded_words_decode() {
        assert_eq!(decode_words("=?utf-8?b?Y2Fmw6k=?= x"), "café x");
        assert_eq!(decode_words("plain"), "plain");
    }
}
