//! The files service through the gateway, in the real binary (`serve all`): the `/files`
//! route takes 25 MiB bodies (other routes keep 1 MiB) and streams them, an upload over
//! the limit is refused while the client is still sending, ranges and validators pass
//! through, and nobody but the uploader reads an unattached file.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{Client, Ports, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// The status line answered to a request whose head is `head` and whose chunked body of
/// `total` bytes is sent but never finished.
async fn status_while_sending(addr: &str, head: &str, total: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        if s.write_all(format!("{n:x}\r\n").as_bytes()).await.is_err()
            || s.write_all(&chunk[..n]).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += n;
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("no answer while the body was unfinished: the body was being buffered")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let _system = Proc::start(dir.path(), "all", &["serve", "all"], &ports.env(dir.path()));
    ports.wait_all_ready().await;
    let api = Client::new(&ports.gateway_url());
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let url = |p: &str| format!("{}{p}", ports.gateway_url());

    // A 2 MiB upload (over the 1 MiB of other routes) through the gateway.
    let bytes: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8).collect();
    let res = api
        .http
        .post(url("/files?filename=data.bin"))
        .bearer_auth(&alice.access)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let (s, file, _) = support::read(res).await;
    assert_eq!(s, 201, "{file}");
    assert_eq!(file["size"], 2 * MIB);
    let path = format!("/files/{}", file["id"].as_str().unwrap());

    let res = api
        .http
        .get(url(&path))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(res.bytes().await.unwrap() == bytes);
    let res = api
        .http
        .get(url(&path))
        .bearer_auth(&alice.access)
        .header("range", "bytes=1000-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 1000-1099/{}", 2 * MIB).as_str()
    );
    assert_eq!(res.bytes().await.unwrap(), bytes[1000..1100]);
    let res = api
        .http
        .get(url(&path))
        .bearer_auth(&alice.access)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // Bob shares no room with Alice's file: 404, as if it did not exist.
    let (s, body, _) = api.call("GET", &path, Some(&bob.access), None).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("file_not_found")),
        "{body}"
    );
    let (s, body, _) = api.call("DELETE", &path, Some(&bob.access), None).await;
    assert_eq!(s, 404, "{body}");
    // Without a token the gateway refuses it.
    let (s, _, _) = api.call("GET", &path, None, None).await;
    assert_eq!(s, 401);

    // 25 MiB + 1 byte, streamed: refused while the client is still sending.
    let addr = ports.gateway_url().trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /files?filename=big.bin HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        alice.access
    );
    let status = status_while_sending(&addr, &head, 25 * MIB + 1).await;
    assert!(status.contains(" 413"), "{status}");
    // Announced far over the limit: refused at once by the gateway.
    let res = api
        .http
        .post(url("/files?filename=big.bin"))
        .bearer_auth(&alice.access)
        .header("content-length", (30 * MIB).to_string())
        .body(vec![0u8; 30 * MIB])
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
    }
    // Other routes keep their 1 MiB.
    let res = api
        .http
        .post(url("/chat/rooms"))
        .bearer_auth(&alice.access)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * MIB])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    let (s, _, _) = api.call("DELETE", &path, Some(&alice.access), None).await;
    assert_eq!(s, 204);
    let (s, _, _) = api.call("GET", &path, Some(&alice.access), None).await;
    assert_eq!(s, 404);
}
