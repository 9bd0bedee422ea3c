//! HTTP load generation on raw hyper HTTP/1.1 keep-alive connections (one per worker, so
//! the client side costs as little CPU as possible on a machine shared with the server).
//!
//! - closed loop: N workers, each sends its next request when the previous answer arrived;
//!   measures the maximum throughput at that concurrency;
//! - open loop: a fixed request rate spread over the workers; latency counts from the
//!   moment a request was *due*, so a stalled server is not hidden (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::Latencies;

/// Builds the request a worker sends next: `(worker index, request number of that worker)`.
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> http::Request<Full<Bytes>> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Closed,
    /// Requests per second in total.
    Open(f64),
}

pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    pub first_error: Option<String>,
}

pub struct LoadSpec {
    pub addr: SocketAddr,
    pub make: MakeRequest,
    pub connections: usize,
    pub duration: Duration,
    /// Requests before this much time has passed are not counted.
    pub warmup: Duration,
    pub mode: Mode,
    pub label: String,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer; `Err` for transport errors and non-2xx.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body.to_bytes())
            .chars()
            .take(200)
            .collect::<String>();
        Err(format!("HTTP {status}: {text}"))
    }
}

struct WorkerOut {
    ok: u64,
    errors: u64,
    lat: Latencies,
    first_error: Option<String>,
}

pub async fn run(spec: LoadSpec) -> LoadResult {
    let done = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let bar = crate::progress::timed(&spec.label, spec.warmup + spec.duration);
    let ticker = {
        let (bar, counter, done) = (bar.clone(), counter.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = counter.load(Ordering::Relaxed);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!("{:.0}/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    };
    let mut tasks = Vec::with_capacity(spec.connections);
    for w in 0..spec.connections {
        let make = spec.make.clone();
        let addr = spec.addr;
        let counter = counter.clone();
        let mode = spec.mode;
        let n = spec.connections;
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut {
                ok: 0,
                errors: 0,
                lat: Latencies::new(),
                first_error: None,
            };
            // Open loop: this worker's share of the rate, staggered across workers.
            let interval = match mode {
                Mode::Open(rate) if rate > 0.0 => Some(Duration::from_secs_f64(n as f64 / rate)),
                _ => None,
            };
            let mut due = start
                + interval
                    .map(|i| i.mul_f64(w as f64 / n as f64))
                    .unwrap_or_default();
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let mut seq = 0u64;
            loop {
                if interval.is_some() {
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    if due >= end {
                        break;
                    }
                } else if Instant::now() >= end {
                    break;
                }
                let began = if interval.is_some() {
                    due
                } else {
                    Instant::now()
                };
                if let Some(i) = interval {
                    due += i;
                }
                if sender.is_none() {
                    match connect(addr).await {
                        Ok(s) => sender = Some(s),
                        Err(e) => {
                            out.errors += 1;
                            out.first_error
                                .get_or_insert_with(|| format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                let req = make(w, seq);
                seq += 1;
                let result = exchange(s, req).await;
                let finished = Instant::now();
                counter.fetch_add(1, Ordering::Relaxed);
                if began < measure_from || finished > end {
                    if result.is_err() {
                        sender = None;
                    }
                    continue;
                }
                match result {
                    Ok(()) => {
                        out.ok += 1;
                        out.lat.record(finished - began);
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                        // The connection may be unusable; start a fresh one.
                        sender = None;
                    }
                }
            }
            out
        }));
    }
    let mut result = LoadResult {
        ok: 0,
        errors: 0,
        elapsed: spec.duration,
        latencies: Latencies::new(),
        first_error: None,
    };
    for t in tasks {
        if let Ok(out) = t.await {
            result.ok += out.ok;
            result.errors += out.errors;
            result.latencies.merge(&out.lat);
            if result.first_error.is_none() {
                result.first_error = out.first_error;
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();
    result
}

/// A GET with optional bearer token.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> MakeRequest {
    let host = addr.to_string();
    let path = path.to_owned();
    let auth = token.map(|t| format!("Bearer {t}"));
    Arc::new(move |_, _| {
        let mut b = http::Request::get(path.as_str()).header(http::header::HOST, host.as_str());
        if let Some(a) = &auth {
            b = b.header(http::header::AUTHORIZATION, a.as_str());
        }
        b.body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
    })
}

/// A JSON request (`POST` etc.) with a bearer token.
pub fn json_request(
    method: http::Method,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    // The parts above are all valid; a failure would be a bug, sent as an empty request.
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}
