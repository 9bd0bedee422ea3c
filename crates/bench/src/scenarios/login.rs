//! `login-storm`: logins/s against the argon2 limit (cores ÷ single-hash time, measured
//! here with the same parameters as the auth service), and the p99 of unrelated requests
//! (`GET /auth/.well-known/jwks.json` on the same service) idle vs during the storm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};

use crate::load::{self, Mode};
use crate::stats::{Check, Report};
use crate::system::System;
use crate::{Cli, api, procstat};

/// Probe rate for the unrelated requests: light enough not to be load by itself.
const PROBE_RATE: f64 = 100.0;
const PROBE_CONNECTIONS: usize = 4;

/// Fastest and median wall time of one argon2id hash with m = 19456 KiB, t = 2, p = 1.
/// The fastest is the limit's basis: on a shared machine slower samples measure the
/// neighbours, not argon2.
pub fn argon2_hash_time(samples: usize) -> anyhow::Result<(Duration, Duration)> {
    let params = Params::new(19_456, 2, 1, Some(32)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    let salt = b"bench-salt-16byt";
    // One untimed run pages in the memory.
    argon
        .hash_password_into(b"password", salt, &mut out)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        argon
            .hash_password_into(b"password", salt, &mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[0], times[times.len() / 2]))
}

/// Hashes per second with `threads` threads hashing at once for `span`: what the machine
/// really delivers when every core hashes (vCPUs that are SMT siblings do not add up).
pub fn argon2_parallel_rate(threads: usize, span: Duration) -> anyhow::Result<f64> {
    let params = Params::new(19_456, 2, 1, Some(32)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let params = params.clone();
                scope.spawn(move || {
                    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                    let mut out = [0u8; 32];
                    let mut n = 0u64;
                    while started.elapsed() < span {
                        if argon
                            .hash_password_into(b"password", b"bench-salt-16byt", &mut out)
                            .is_ok()
                        {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    Ok(counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let (hash_time, hash_median) = tokio::task::spawn_blocking(|| argon2_hash_time(15)).await??;
    let cores = procstat::cores();
    let parallel_rate =
        tokio::task::spawn_blocking(move || argon2_parallel_rate(cores, Duration::from_secs(3)))
            .await??;
    let limit = cores as f64 / hash_time.as_secs_f64();

    let system = System::start(&cli.system_options(), &Vec::new()).await?;
    let pid = system.pid();
    let backend = system.backend;
    let auth = System::url(system.ports.auth);
    let auth_addr = System::addr(system.ports.auth);
    let http = api::client()?;
    let tag = api::run_tag();
    let accounts = api::register_many(
        &http,
        &auth,
        &format!("ls{tag}_"),
        cli.concurrency.min(64),
        4,
    )
    .await?;

    let probe = load::get(auth_addr, "/auth/.well-known/jwks.json", None);
    let (idle, idle_usage) = super::measure(
        cli,
        "idle probe",
        auth_addr,
        probe.clone(),
        PROBE_CONNECTIONS,
        Mode::Open(PROBE_RATE),
        &[pid],
    )
    .await;

    let host = auth_addr.to_string();
    let logins: Arc<Vec<Vec<u8>>> = Arc::new(
        accounts
            .iter()
            .map(|a| {
                serde_json::to_vec(
                    &serde_json::json!({"login": a.username, "password": api::PASSWORD}),
                )
                .unwrap_or_default()
            })
            .collect(),
    );
    let make_login: load::MakeRequest = Arc::new(move |w, _| {
        let body = logins[w % logins.len()].clone();
        load::json_request(http::Method::POST, &host, "/auth/login", None, body)
    });
    let server_pids = [pid];
    let storm = super::measure(
        cli,
        "login storm",
        auth_addr,
        make_login,
        cli.concurrency,
        Mode::Closed,
        &server_pids,
    );
    let probe_during = super::measure(
        cli,
        "probe during storm",
        auth_addr,
        probe,
        PROBE_CONNECTIONS,
        Mode::Open(PROBE_RATE),
        &[],
    );
    let ((storm, storm_usage), (during, _)) = tokio::join!(storm, probe_during);
    system.stop().await;

    let storm_row = super::row(
        &format!("POST /auth/login, {} workers", cli.concurrency),
        "login",
        &storm,
        storm_usage,
    );
    let idle_row = super::row("GET jwks, idle (100/s open loop)", "req", &idle, idle_usage);
    let during_row = super::row(
        "GET jwks, during the storm (100/s)",
        "req",
        &during,
        Default::default(),
    );
    let share = storm_row.throughput / limit;
    let p99_ratio = crate::stats::ratio(during_row.latency.p99_ms, idle_row.latency.p99_ms);

    let mut report = Report {
        scenario: "login-storm".into(),
        command: Cli::command_line(),
        config: vec![
            ("backend".into(), backend.into()),
            (
                "duration".into(),
                format!("{} s (+{} s warm-up)", cli.duration, cli.warmup),
            ),
            ("accounts".into(), accounts.len().to_string()),
        ],
        tables: vec![(
            "Logins and unrelated requests".into(),
            vec![storm_row.clone(), idle_row.clone(), during_row.clone()],
        )],
        ..Report::default()
    };
    report.facts = vec![
        (
            "argon2id hash time (m=19456, t=2, p=1; fastest / median of 15, in the bench process)"
                .into(),
            format!(
                "{:.1} ms / {:.1} ms",
                hash_time.as_secs_f64() * 1000.0,
                hash_median.as_secs_f64() * 1000.0
            ),
        ),
        (
            "argon2 limit (cores ÷ fastest hash time)".into(),
            format!(
                "{cores} ÷ {:.1} ms = {limit:.1} logins/s",
                hash_time.as_secs_f64() * 1000.0
            ),
        ),
        (
            format!("argon2 hashes/s measured with {cores} threads hashing at once (3 s)"),
            format!(
                "{parallel_rate:.1}/s — logins reached {:.0}% of it",
                storm_row.throughput / parallel_rate * 100.0
            ),
        ),
        (
            "logins/s achieved".into(),
            format!(
                "{:.1} ({:.0}% of the limit)",
                storm_row.throughput,
                share * 100.0
            ),
        ),
        (
            "unrelated p99 during storm ÷ idle".into(),
            match p99_ratio {
                Some(r) => format!(
                    "{:.2} ms ÷ {:.2} ms = {r:.2}×",
                    during_row.latency.p99_ms, idle_row.latency.p99_ms
                ),
                None => "n/a".into(),
            },
        ),
    ];
    report.checks = vec![
        Check::new(
            "logins ≥ 90% of the argon2 limit",
            format!("{:.0}%", share * 100.0),
            Some(share >= 0.9),
        ),
        Check::new(
            "unrelated p99 during the storm ≤ 2× idle",
            p99_ratio
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "n/a".into()),
            p99_ratio.map(|r| r <= 2.0),
        ),
    ];
    report.notes.push(
        "Logins go straight to the auth service: the gateway's strict `/auth/login` rate limit would turn a storm away by design. The bench client shares the machine's cores with the server."
            .into(),
    );
    Ok(report)
}
