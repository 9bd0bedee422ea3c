//! One module per scenario; each starts its own system and returns a `Report`.

pub mod fanout;
pub mod files;
pub mod gateway;
pub mod ingest;
pub mod login;
pub mod message_search;
pub mod notify;
pub mod presence;
pub mod reactions;
pub mod resume;
pub mod search;

use std::net::SocketAddr;
use std::time::Duration;

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
    let meter = Meter::start(cli, label, pids, cli.warmup());
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
    (result, meter.finish().await)
}

/// Meters one measured window: from `warmup` after its start, the CPU (and RSS) of the
/// server processes `pids` and the bench's own CPU, so only measured traffic is charged;
/// with `--profile`, `perf` records the first pid for the window's duration.
pub struct Meter(tokio::task::JoinHandle<MeterParts>);

type MeterParts = (
    Option<CpuMeter>,
    CpuMeter,
    Option<tokio::task::JoinHandle<()>>,
);

impl Meter {
    pub fn start(cli: &Cli, label: &str, pids: &[u32], warmup: Duration) -> Self {
        let pids = pids.to_vec();
        let profile =
            (cli.profile && !pids.is_empty()).then(|| (label.to_owned(), pids[0], cli.duration()));
        Self(tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let perf = profile.map(|(label, pid, duration)| {
                tokio::spawn(async move { crate::profile::record(&label, pid, duration).await })
            });
            (
                (!pids.is_empty()).then(|| CpuMeter::start(&pids)),
                CpuMeter::start_exact(vec![std::process::id()]),
                perf,
            )
        }))
    }

    /// Ends the window now (and waits for the profile, if any).
    pub async fn finish(self) -> Usage {
        match self.0.await {
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
        }
    }
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
