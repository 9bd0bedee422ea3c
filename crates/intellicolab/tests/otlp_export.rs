//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary exports its request spans over
//! OTLP/HTTP, continuing the caller's W3C trace; its JSON log lines carry the same
//! `trace_id` at the top level.
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Proc, free_port, wait_ready};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A minimal OTLP/HTTP collector: records (path, body) of every POST and answers 200.
async fn collector() -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    store.lock().unwrap().push((path, body));
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_in_the_callers_trace() {
    let (endpoint, seen) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proc = Proc::start(
        dir.path(),
        "auth",
        &["serve", "auth", "--data-dir", dir.path().to_str().unwrap()],
        &[
            ("INTELLICOLAB_AUTH__LISTEN", format!("127.0.0.1:{port}")),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            // Export quickly so the test does not wait for the default 5 s batch delay.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"login": "nobody", "password": "not-the-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // The span of that request reaches the collector, in the caller's trace (OTLP protobuf
    // carries the trace id as 16 raw bytes).
    let needle = unhex(trace_id);
    let mut exported = false;
    for _ in 0..300 {
        exported = seen.lock().unwrap().iter().any(|(path, body)| {
            path == "/v1/traces" && body.windows(needle.len()).any(|w| w == needle.as_slice())
        });
        if exported {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = proc.logs();
    assert!(
        exported,
        "no span of trace {trace_id} was exported; posts: {:?}\nlogs:\n{logs}",
        seen.lock()
            .unwrap()
            .iter()
            .map(|(p, b)| (p.clone(), b.len()))
            .collect::<Vec<_>>()
    );

    // The log lines of that request carry the trace id at the top level.
    let joined = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            v["trace_id"] == trace_id && v["service"] == "auth" && v["request_id"].is_string()
        });
    assert!(
        joined,
        "no log line with top-level trace_id/service/request_id:\n{logs}"
    );
}
