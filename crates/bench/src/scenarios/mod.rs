//! One module per scenario; each starts its own system and returns a `Report`.

pub mod fanout;
pub mod gateway;
pub mod ingest;
pub mod login;
pub mod resume;
pub mod search;

use std::net::SocketAddr;

use crate::Cli;
use crate::load::{self, LoadResult, MakeRequest, Mode};
use crate::procstat::CpuMeter;
use crate::stats::{ProcUsage, Row};

/// Runs one load phase while metering the given processes.
pub async fn measure(
    cli: &Cli,
    label: &str,
    addr: SocketAddr,
    make: MakeRequest,
    connections: usize,
    mode: Mode,
    pids: &[u32],
) -> (LoadResult, Usage) {
    // Metering starts after the warm-up so only measured traffic is charged.
    let warmup = cli.warmup();
    let pids = pids.to_vec();
    let profile =
        (cli.profile && !pids.is_empty()).then(|| (label.to_owned(), pids[0], cli.duration()));
    let meter = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let perf = profile.map(|(label, pid, duration)| {
            tokio::spawn(async move { crate::profile::record(&label, pid, duration).await })
        });
        (
            (!pids.is_empty()).then(|| CpuMeter::start(&pids)),
            CpuMeter::start_exact(vec![std::process::id()]),
            perf,
        )
    });
    let result = load::run(load::LoadSpec {
        addr,
        make,
        connections,
        duration: cli.duration(),
        warmup: cli.warmup(),
        mode,
        label: label.to_owned(),
    })
    .await;
    let usage = match meter.await {
        Ok((server, bench, perf)) => {
            let usage = Usage {
                server: server.map(CpuMeter::finish),
                bench_cpu_percent: Some(bench.finish().cpu_percent),
            };
            if let Some(perf) = perf {
                let _ = perf.await;
            }
            usage
        }
        Err(_) => Usage::default(),
    };
    (result, usage)
}

/// CPU/RSS of the server processes and CPU of the bench during one measurement.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub server: Option<ProcUsage>,
    pub bench_cpu_percent: Option<f64>,
}

/// A table row from a load phase (first error in the note, when there were errors).
pub fn row(name: &str, unit: &str, r: &LoadResult, usage: Usage) -> Row {
    let mut row = Row::measured(name, unit, r.ok, r.errors, r.elapsed, &r.latencies);
    row.server = usage.server;
    row.bench_cpu_percent = usage.bench_cpu_percent;
    if let Some(e) = &r.first_error {
        row.note = format!("first error: {e}");
    }
    row
}
