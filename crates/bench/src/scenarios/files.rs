//! `files` (files service, issue #18): upload and download throughput through the gateway
//! against the files service directly, and what ten 25 MiB uploads at once cost in memory.
//!
//! - Memory first, on the fresh server (so the allocator holds nothing from the throughput
//!   phases), after ten concurrent 1 MiB uploads (one-time costs of concurrency: database
//!   connections, HTTP connections): ten 25 MiB uploads through the gateway at once, each
//!   body sent in 256 KiB chunks over about 3 s so all ten are in flight together; the
//!   server's RSS is sampled every 10 ms, and the growth is the peak minus the RSS before.
//!   A server that held the bodies would grow by 250 MiB; the target (< 32 MiB) proves
//!   they are streamed.
//! - Throughput: `--concurrency` workers (at most 16; the report runs 4) upload an 8 MiB
//!   body back to back for `--duration`, direct to the files service and then through the
//!   gateway; then they download one 8 MiB file back to back. MiB/s = bytes moved ÷ wall
//!   time; the server CPU (all services, one process) is charged per MiB. Target:
//!   gateway ≥ 0.8× direct.
//!
//! Bytes are random (nothing compresses), `application/octet-stream` (no image work), in
//! the default local store under the server's data dir; uploads are deleted after each
//! phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use rand::RngCore;

use super::gateway::gateway_env;
use crate::stats::{Check, Latencies, ProcUsage, Report, Row, ratio};
use crate::system::System;
use crate::{Cli, api, procstat};

const MIB: usize = 1024 * 1024;
/// The body of the throughput phases: large enough that per-request costs (auth, the
/// metadata row, the rename into the store) are small beside the bytes.
const BODY: usize = 8 * MIB;
/// The largest upload the service takes by default.
const LARGE: usize = 25 * MIB;
const CONCURRENT_LARGE: usize = 10;
/// Chunks of the paced uploads and the pause between them: 100 chunks × 30 ms ≈ 3 s.
const CHUNK: usize = 256 * 1024;
const PACE: Duration = Duration::from_millis(30);
/// The targets.
const TARGET_RATIO: f64 = 0.8;
const TARGET_RSS_MIB: f64 = 32.0;

fn random_bytes(n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    Bytes::from(v)
}

/// Everything the phases need: where to send, as whom.
struct Target {
    http: reqwest::Client,
    token: String,
}

impl Target {
    async fn upload(&self, base: &str, body: reqwest::Body) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{base}/files?filename=bench.bin"))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        anyhow::ensure!(status.as_u16() == 201, "upload: HTTP {status}: {v}");
        v["id"]
            .as_str()
            .map(str::to_owned)
            .context("upload: no id in the reply")
    }

    /// Downloads and counts the bytes as they arrive (never holding the body).
    async fn download(&self, base: &str, id: &str) -> anyhow::Result<u64> {
        let r = self
            .http
            .get(format!("{base}/files/{id}"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "download: HTTP {}", r.status());
        let mut n = 0u64;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            n += chunk?.len() as u64;
        }
        Ok(n)
    }

    async fn delete(&self, base: &str, id: &str) {
        let _ = self
            .http
            .delete(format!("{base}/files/{id}"))
            .bearer_auth(&self.token)
            .send()
            .await;
    }
}

/// A body sent in `CHUNK`s with `PACE` between them.
fn paced_body(bytes: Bytes) -> reqwest::Body {
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
        .collect();
    let stream = futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(PACE).await;
        Ok::<_, std::io::Error>(c)
    });
    reqwest::Body::wrap_stream(stream)
}

/// Ten paced 25 MiB uploads through the gateway at once: peak RSS growth of the server.
async fn memory_phase(t: &Target, gateway: &str, pid: u32) -> anyhow::Result<(Row, f64)> {
    // Ten small uploads at once first: what the first concurrent requests allocate once
    // (database connections and their page caches, HTTP connections, spool files) is
    // not what the bodies cost; the measurement is then the part that grows with them.
    let body = random_bytes(MIB);
    let warm = futures::future::join_all(
        (0..CONCURRENT_LARGE).map(|_| t.upload(gateway, reqwest::Body::from(body.clone()))),
    )
    .await;
    for id in warm {
        t.delete(gateway, &id?).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procstat::rss_kib(&[pid]) as f64 / 1024.0;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(procstat::rss_kib(&[pid]));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak as f64 / 1024.0
        })
    };
    let body = random_bytes(LARGE);
    let started = Instant::now();
    let uploads = futures::future::join_all(
        (0..CONCURRENT_LARGE).map(|_| t.upload(gateway, paced_body(body.clone()))),
    )
    .await;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(before);
    let mut lat = Latencies::new();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for u in uploads {
        match u {
            Ok(id) => {
                ok += 1;
                lat.record(elapsed);
                t.delete(gateway, &id).await;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let growth = peak - before;
    let mut row = Row::measured(
        format!("{CONCURRENT_LARGE} × 25 MiB uploads at once via the gateway"),
        "upload",
        ok,
        errors,
        elapsed,
        &lat,
    )
    .with_server(ProcUsage {
        rss_mib: peak,
        ..ProcUsage::default()
    });
    row.note = match first_error {
        Some(e) => format!("first error: {e}"),
        None => format!("RSS {before:.1} MiB before, {peak:.1} MiB at the peak: +{growth:.1} MiB"),
    };
    Ok((row, growth))
}

/// Writes the dirty pages of the last phase back before the next one starts: an upload
/// phase leaves gigabytes of them, and their writeback would slow whichever phase came
/// next (one run measured direct downloads at 209 MiB/s right after the uploads and the
/// same downloads through the gateway at 344 MiB/s).
async fn settle_disk() {
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What one throughput phase moved.
struct Moved {
    row: Row,
    mib_per_sec: f64,
}

/// `workers` upload (or download `download`) back to back for the measured window.
async fn throughput(
    cli: &Cli,
    t: &Arc<Target>,
    name: &str,
    base: &str,
    download: Option<&str>,
    pid: u32,
) -> anyhow::Result<Moved> {
    let workers = cli.concurrency.clamp(1, 16);
    let body = random_bytes(BODY);
    let bytes = Arc::new(AtomicU64::new(0));
    let warmup = cli.warmup();
    let duration = cli.duration();
    let meter = super::Meter::start(cli, name, &[pid], warmup);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (t, base, body, bytes) = (t.clone(), base.to_owned(), body.clone(), bytes.clone());
            let download = download.map(str::to_owned);
            tokio::spawn(async move {
                let mut lat = Latencies::new();
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
                let mut uploaded = Vec::new();
                let end = started + warmup + duration;
                while Instant::now() < end {
                    let at = Instant::now();
                    let measured = at >= started + warmup;
                    let r = match &download {
                        Some(id) => t.download(&base, id).await,
                        None => t
                            .upload(&base, reqwest::Body::from(body.clone()))
                            .await
                            .map(|id| {
                                uploaded.push(id);
                                body.len() as u64
                            }),
                    };
                    match r {
                        Ok(n) if measured => {
                            ok += 1;
                            lat.record(at.elapsed());
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                (lat, ok, errors, first_error, uploaded)
            })
        })
        .collect();
    let mut lat = Latencies::new();
    let (mut ok, mut errors, mut first_error, mut uploaded) = (0, 0, None, Vec::new());
    for task in tasks {
        let (l, o, e, f, u) = task.await?;
        lat.merge(&l);
        ok += o;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
        uploaded.extend(u);
    }
    let elapsed = started.elapsed().saturating_sub(warmup);
    let usage = meter.finish().await;
    for id in &uploaded {
        t.delete(base, id).await;
    }
    settle_disk().await;
    let mib = bytes.load(Ordering::Relaxed) as f64 / MIB as f64;
    let mib_per_sec = mib / elapsed.as_secs_f64().max(1e-9);
    let mut row = Row::measured(name, "transfer", ok, errors, elapsed, &lat);
    row.server = usage.server.clone();
    row.bench_cpu_percent = usage.bench_cpu_percent;
    let cpu_ms_per_mib = usage
        .server
        .as_ref()
        .map(|s| s.cpu_seconds * 1000.0 / mib.max(1e-9));
    row.note = match first_error {
        Some(e) => format!("first error: {e}"),
        None => format!(
            "{mib_per_sec:.0} MiB/s; server CPU {} ms per MiB",
            cpu_ms_per_mib.map_or("?".into(), |c| format!("{c:.2}"))
        ),
    };
    Ok(Moved { row, mib_per_sec })
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let mut env = gateway_env(0);
    // The throughput phases move tens of GiB in a run; the per-user quota (1 GiB by
    // default) is not what is measured.
    env.push((
        "INTELLICOLAB_FILES__QUOTA_BYTES".into(),
        (1u64 << 40).to_string(),
    ));
    let system = System::start(&cli.system_options(), &env).await?;
    let pid = system.pid();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(64)
        .build()?;
    let auth = System::url(system.ports.auth);
    let account = api::register(&http, &auth, &format!("files{}", api::run_tag())).await?;
    let target = Arc::new(Target {
        http,
        token: account.token,
    });
    let (direct, gateway) = (
        System::url(system.ports.files),
        System::url(system.ports.gateway),
    );

    let (memory_row, growth) = memory_phase(&target, &gateway, pid).await?;
    let up_direct = throughput(cli, &target, "upload, direct to files", &direct, None, pid).await?;
    let up_gateway =
        throughput(cli, &target, "upload, via the gateway", &gateway, None, pid).await?;
    let sample = target
        .upload(&direct, reqwest::Body::from(random_bytes(BODY)))
        .await?;
    let down_direct = throughput(
        cli,
        &target,
        "download, direct from files",
        &direct,
        Some(&sample),
        pid,
    )
    .await?;
    let down_gateway = throughput(
        cli,
        &target,
        "download, via the gateway",
        &gateway,
        Some(&sample),
        pid,
    )
    .await?;
    let backend = system.backend;
    system.stop().await;

    let mut checks = Vec::new();
    for (what, d, g) in [
        ("upload", &up_direct, &up_gateway),
        ("download", &down_direct, &down_gateway),
    ] {
        let r = ratio(g.mib_per_sec, d.mib_per_sec);
        checks.push(Check::new(
            format!("{what} MiB/s via the gateway ≥ {TARGET_RATIO}× direct"),
            r.map_or("not measured".into(), |r| {
                format!(
                    "{r:.2}× ({:.0} vs {:.0} MiB/s)",
                    g.mib_per_sec, d.mib_per_sec
                )
            }),
            r.map(|r| r >= TARGET_RATIO),
        ));
    }
    let memory_ok = memory_row.errors == 0 && memory_row.requests == CONCURRENT_LARGE as u64;
    checks.push(Check::new(
        format!("server RSS growth during {CONCURRENT_LARGE} concurrent 25 MiB uploads < {TARGET_RSS_MIB} MiB"),
        format!("+{growth:.1} MiB"),
        memory_ok.then_some(growth < TARGET_RSS_MIB),
    ));

    Ok(Report {
        scenario: "files".into(),
        command: Cli::command_line(),
        config: vec![
            ("metadata backend".into(), backend.into()),
            ("storage".into(), "local disk (the data dir)".into()),
            (
                "throughput body / workers".into(),
                format!("8 MiB / {}", cli.concurrency.clamp(1, 16)),
            ),
            (
                "paced uploads".into(),
                format!(
                    "{CONCURRENT_LARGE} × 25 MiB, {} KiB every {} ms",
                    CHUNK / 1024,
                    PACE.as_millis()
                ),
            ),
        ],
        tables: vec![
            ("Memory while uploads stream".into(), vec![memory_row]),
            (
                "Throughput".into(),
                vec![
                    up_direct.row,
                    up_gateway.row,
                    down_direct.row,
                    down_gateway.row,
                ],
            ),
        ],
        checks,
        notes: vec![
            "One `serve all` process: the server CPU is every service's, the gateway's included; the bench's client shares the two cores.".into(),
        ],
        ..Report::default()
    })
}
