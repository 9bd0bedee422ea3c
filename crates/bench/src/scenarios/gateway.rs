//! `gateway`, two tables.
//!
//! 1. The production topology: each proxy alone on core 0 (`taskset`), in front of an
//!    nginx `return 200` standing in for the users service, with wrk (or the bench's
//!    own load generator) on core 1: our gateway (`serve gateway`, `event_loops = 1`,
//!    EdDSA bearer token and rate limiting on), nginx (1 worker) and HAProxy (1 thread)
//!    as plain keep-alive proxies, the seed's express gateway with its JWT check.
//!    Requests/s, the proxy's CPU per request (its CPU time from /proc over the window ÷
//!    requests) and p99; the median of `--gateway-runs` runs.
//! 2. `serve all`: authenticated `GET /users/me` direct to the users service, through
//!    our gateway, through nginx as a plain keep-alive proxy, and through the seed's
//!    express gateway with a JWT check — same machine, same run; then the p99 our
//!    gateway adds at half of its maximum throughput (open loop, same rate direct and
//!    through the gateway).

use std::path::PathBuf;
use std::process::Stdio;

use crate::load::{self, Mode};
use crate::peers::{self, Peer};
use crate::stats::{Check, Report, Row, ratio};
use crate::system::{Env, System, free_port};
use crate::{Cli, GatewayTables, api, wrk};

/// The gateway keeps authenticating and rate limiting every request, but the per-user
/// limit is raised so one benchmark account is not turned away (the default is 50/s).
pub fn gateway_env(event_loops: usize) -> Env {
    let mut env = vec![(
        "INTELLICOLAB_GATEWAY__EVENT_LOOPS".to_owned(),
        event_loops.to_string(),
    )];
    for (policy, rate, period, burst) in [
        ("DEFAULT", 1_000_000_000u64, 1_000u64, 1_000_000_000u64),
        ("STRICT", 10, 60_000, 5),
    ] {
        env.push((
            format!("INTELLICOLAB_GATEWAY__RATE_LIMITS__{policy}__RATE"),
            rate.to_string(),
        ));
        env.push((
            format!("INTELLICOLAB_GATEWAY__RATE_LIMITS__{policy}__PERIOD_MS"),
            period.to_string(),
        ));
        env.push((
            format!("INTELLICOLAB_GATEWAY__RATE_LIMITS__{policy}__BURST"),
            burst.to_string(),
        ));
    }
    env
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let system =
        System::start(&cli.system_options(), &gateway_env(cli.gateway_event_loops)).await?;
    let backend = system.backend;
    let http = api::client()?;
    let auth = System::url(system.ports.auth);
    let account = api::register(&http, &auth, &format!("gw{}", api::run_tag())).await?;
    api::wait_profile(&http, &System::url(system.ports.users), &account.token).await?;

    let mut report = Report {
        scenario: "gateway".into(),
        command: Cli::command_line(),
        config: vec![("backend".into(), backend.into())],
        ..Report::default()
    };
    // `serve all` first: the production topology pins that process to the load core.
    let shared = if cli.gateway_tables == GatewayTables::Production {
        None
    } else {
        Some(serve_all(cli, &system, &account.token).await)
    };
    let production = if cli.gateway_tables == GatewayTables::ServeAll {
        None
    } else {
        Some(production(cli, &system, &account.token).await)
    };
    system.stop().await;

    // The production topology's table comes first: it is the figure that matters.
    let mut tables = Vec::new();
    let mut versions = Vec::new();
    for p in [production, shared].into_iter().flatten() {
        tables.extend(p.tables);
        report.config.extend(p.config);
        report.facts.extend(p.facts);
        report.checks.extend(p.checks);
        report.notes.extend(p.notes);
        versions.extend(p.versions);
    }
    report.tables = tables;
    versions.sort();
    versions.dedup();
    if !versions.is_empty() {
        report.facts.push(("peers".into(), versions.join("; ")));
    }
    Ok(report)
}

/// What one table group adds to the report.
#[derive(Default)]
struct Part {
    config: Vec<(String, String)>,
    tables: Vec<(String, Vec<Row>)>,
    facts: Vec<(String, String)>,
    checks: Vec<Check>,
    notes: Vec<String>,
    versions: Vec<String>,
}

/// The `serve all` tables: our gateway shares its process with the services.
async fn serve_all(cli: &Cli, system: &System, token: &str) -> Part {
    let pid = system.pid();
    let http = match api::client() {
        Ok(h) => h,
        Err(e) => {
            return Part {
                notes: vec![format!("serve all table not measured: {e}")],
                ..Part::default()
            };
        }
    };
    let via_gateway = http
        .get(format!("{}/users/me", System::url(system.ports.gateway)))
        .bearer_auth(token)
        .send()
        .await;
    let gateway_ok = matches!(&via_gateway, Ok(r) if r.status().is_success());
    let gateway_status = match &via_gateway {
        Ok(r) => r.status().to_string(),
        Err(e) => e.to_string(),
    };

    let token = Some(token);
    let c = cli.concurrency;
    let mut rows = Vec::new();
    let mut versions = Vec::new();

    let direct_addr = System::addr(system.ports.users);
    let (direct, usage) = super::measure(
        cli,
        "direct",
        direct_addr,
        load::get(direct_addr, "/users/me", token),
        c,
        Mode::Closed,
        &[pid],
    )
    .await;
    let direct_row = super::row("direct to the users service", "req", &direct, usage);
    rows.push(direct_row.clone());

    let gw_addr = System::addr(system.ports.gateway);
    let gateway_row = if gateway_ok {
        let (r, usage) = super::measure(
            cli,
            "our gateway",
            gw_addr,
            load::get(gw_addr, "/users/me", token),
            c,
            Mode::Closed,
            &[pid],
        )
        .await;
        super::row("our gateway (auth + rate limit on)", "req", &r, usage)
    } else {
        Row::unavailable(
            "our gateway (auth + rate limit on)",
            format!("GET /users/me through the gateway answered {gateway_status}"),
        )
    };
    rows.push(gateway_row.clone());

    let install = !cli.no_install;
    let nginx_row = match peers::start_nginx(install, system.ports.users).await {
        Ok(peer) => {
            versions.push(peer.version.clone());
            let addr = System::addr(peer.port);
            let (r, usage) = super::measure(
                cli,
                "nginx",
                addr,
                load::get(addr, "/users/me", token),
                c,
                Mode::Closed,
                &[pid, peer.pid()],
            )
            .await;
            peer.stop().await;
            super::row("nginx, plain keep-alive proxy", "req", &r, usage)
        }
        Err(e) => Row::unavailable("nginx, plain keep-alive proxy", e.to_string()),
    };
    rows.push(nginx_row.clone());

    let express_row =
        match peers::start_express(install, system.ports.users, system.ports.auth, None).await {
            Ok(peer) => {
                versions.push(peer.version.clone());
                let addr = System::addr(peer.port);
                let (r, usage) = super::measure(
                    cli,
                    "express",
                    addr,
                    load::get(addr, "/users/me", token),
                    c,
                    Mode::Closed,
                    &[pid, peer.pid()],
                )
                .await;
                peer.stop().await;
                super::row("seed's express gateway + JWT check", "req", &r, usage)
            }
            Err(e) => Row::unavailable("seed's express gateway + JWT check", e.to_string()),
        };
    rows.push(express_row.clone());

    // Half of our gateway's maximum, the same open-loop rate direct and through it.
    let mut half_rows = Vec::new();
    let mut added_p99 = None;
    if gateway_row.ok && gateway_row.throughput > 0.0 {
        let rate = gateway_row.throughput / 2.0;
        let (d, du) = super::measure(
            cli,
            "direct @ half",
            direct_addr,
            load::get(direct_addr, "/users/me", token),
            c,
            Mode::Open(rate),
            &[pid],
        )
        .await;
        let (g, gu) = super::measure(
            cli,
            "gateway @ half",
            gw_addr,
            load::get(gw_addr, "/users/me", token),
            c,
            Mode::Open(rate),
            &[pid],
        )
        .await;
        let dr = super::row(&format!("direct @ {rate:.0}/s open loop"), "req", &d, du);
        let gr = super::row(
            &format!("our gateway @ {rate:.0}/s open loop"),
            "req",
            &g,
            gu,
        );
        added_p99 = Some(gr.latency.p99_ms - dr.latency.p99_ms);
        half_rows = vec![dr, gr];
    }
    let mut part = Part {
        versions,
        config: vec![
            ("serve all: connections".into(), c.to_string()),
            (
                "serve all: duration".into(),
                format!("{} s (+{} s warm-up) per row", cli.duration, cli.warmup),
            ),
            (
                "serve all: gateway event loops".into(),
                match cli.gateway_event_loops {
                    0 => "0 (proxies on the process's shared runtime, the default)".into(),
                    n => format!("{n} (dedicated single-threaded event loops)"),
                },
            ),
        ],
        tables: vec![(
            "serve all: maximum throughput (closed loop), GET /users/me with a bearer token".into(),
            rows,
        )],
        ..Part::default()
    };
    if !half_rows.is_empty() {
        part.tables.push((
            "serve all: at half of our gateway's maximum".into(),
            half_rows,
        ));
    }
    let vs_nginx = ratio(gateway_row.throughput, nginx_row.throughput);
    let vs_express = ratio(gateway_row.throughput, express_row.throughput);
    let fmt = |r: Option<f64>| {
        r.map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "n/a".into())
    };
    part.facts = vec![
        (
            "serve all: our gateway ÷ direct (throughput)".into(),
            fmt(ratio(gateway_row.throughput, direct_row.throughput)),
        ),
        ("serve all: our gateway ÷ nginx".into(), fmt(vs_nginx)),
        ("serve all: our gateway ÷ express".into(), fmt(vs_express)),
        (
            "serve all: nginx ÷ direct".into(),
            fmt(ratio(nginx_row.throughput, direct_row.throughput)),
        ),
        (
            "serve all: p99 added by our gateway at half load".into(),
            added_p99
                .map(|a| format!("{a:.2} ms"))
                .unwrap_or_else(|| "n/a".into()),
        ),
    ];
    part.checks = vec![
        Check::new(
            "serve all: our gateway ≥ 1.0× nginx plain proxy",
            fmt(vs_nginx),
            vs_nginx.map(|r| r >= 1.0),
        ),
        Check::new(
            "serve all: our gateway ≥ 20× the express gateway",
            fmt(vs_express),
            vs_express.map(|r| r >= 20.0),
        ),
        Check::new(
            "serve all: our gateway adds ≤ 1 ms p99 at half its maximum load",
            added_p99
                .map(|a| format!("{a:.2} ms"))
                .unwrap_or_else(|| "n/a".into()),
            added_p99.map(|a| a <= 1.0),
        ),
    ];
    part.notes.push(format!(
        "Server CPU/RSS is that of the `intellicolab serve all` process (gateway and users service share it), plus nginx/node (all their processes) on their rows. The load generator runs on the same {} cores. Our gateway's per-user rate limit is raised (limiter still on) so a single benchmark account is not throttled; it caches verified tokens, express verifies every request.",
        crate::procstat::cores()
    ));
    part
}

/// The core the proxy under test has to itself in the production topology.
const PROXY_CORE: usize = 0;
/// The core of the stand-in upstream, the load generator and the `serve all` process
/// (auth's JWKS; idle while a proxy is measured: tokens are verified once and cached).
const LOAD_CORE: usize = 1;
/// wrk's connections in the production topology.
const PROD_CONNECTIONS: usize = 64;

/// Who generates the production topology's load.
enum Generator {
    Wrk(PathBuf),
    /// The bench's own closed-loop generator, the bench pinned to the load core.
    Own,
}

/// The production topology (see the module comment).
async fn production(cli: &Cli, system: &System, token: &str) -> Part {
    let mut part = Part::default();
    let title = "Production topology: each proxy alone on core 0, upstream nginx `return 200` and the load generator on core 1; GET /users/me with an EdDSA bearer token".to_owned();
    let names = [
        "nginx, 1 worker, plain keep-alive proxy",
        "our gateway, serve gateway, event_loops = 1 (auth + rate limit on)",
        "HAProxy, 1 thread, plain keep-alive proxy",
        "seed's express gateway + JWT check",
    ];
    let all_unavailable = |why: String| -> Vec<Row> {
        names
            .iter()
            .map(|n| Row::unavailable(*n, why.clone()))
            .collect()
    };
    if crate::procstat::cores() < 2 {
        part.tables
            .push((title, all_unavailable("needs 2 cores".into())));
        return part;
    }
    if let Err(e) = peers::pin_process(system.pid(), LOAD_CORE).await {
        part.notes.push(format!(
            "The `serve all` process (auth, JWKS) could not be pinned to core {LOAD_CORE}: {e}"
        ));
    }
    let install = !cli.no_install;
    let upstream =
        match peers::start_nginx_with(install, Some(LOAD_CORE), peers::nginx_static_config).await {
            Ok(u) => u,
            Err(e) => {
                part.tables.push((
                    title,
                    all_unavailable(format!("the nginx upstream could not start: {e}")),
                ));
                return part;
            }
        };
    let up = upstream.port;
    part.versions.push(upstream.version.clone());
    let generator = match wrk::binary(install).await {
        Ok(bin) => {
            let v = std::process::Command::new(&bin)
                .arg("-v")
                .output()
                .map(|o| {
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                    let first = text.lines().next().unwrap_or("wrk");
                    first
                        .split(" Copyright")
                        .next()
                        .unwrap_or(first)
                        .trim()
                        .to_owned()
                })
                .unwrap_or_else(|_| "wrk".into());
            part.config.push((
                "production: load generator".into(),
                format!("{v}, 1 thread, {PROD_CONNECTIONS} connections, on core {LOAD_CORE}"),
            ));
            Generator::Wrk(bin)
        }
        Err(e) => {
            let pinned = peers::pin_process(std::process::id(), LOAD_CORE).await;
            part.config.push((
                "production: load generator".into(),
                format!(
                    "the bench's own ({PROD_CONNECTIONS} connections{}); wrk not available: {e}",
                    match pinned {
                        Ok(()) => format!(", pinned to core {LOAD_CORE}"),
                        Err(p) => format!(", not pinned: {p}"),
                    }
                ),
            ));
            Generator::Own
        }
    };
    let runs = cli.gateway_runs.max(1);
    part.config.push((
        "production: per row".into(),
        format!(
            "median of {runs} runs of {} s after {} s of warm-up",
            cli.duration, cli.warmup
        ),
    ));

    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let started = match i {
            0 => {
                peers::start_nginx_with(install, Some(PROXY_CORE), |dir, port| {
                    peers::nginx_config(dir, port, up, 1)
                })
                .await
            }
            1 => start_gateway_alone(cli, system, up).await,
            2 => peers::start_haproxy(install, up, Some(PROXY_CORE)).await,
            _ => peers::start_express(install, up, system.ports.auth, Some(PROXY_CORE)).await,
        };
        let peer = match started {
            Ok(p) => p,
            Err(e) => {
                rows.push(Row::unavailable(*name, e.to_string()));
                continue;
            }
        };
        part.versions.push(peer.version.clone());
        let row = match answers(peer.port, token).await {
            Ok(()) => measure_production(cli, &generator, name, &peer, token, runs).await,
            Err(e) => Row::unavailable(*name, e),
        };
        peer.stop().await;
        rows.push(row);
    }
    upstream.stop().await;

    let (nginx, ours, haproxy, express) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    let us = |r: &Row| r.cpu_us_per_op.filter(|_| r.ok);
    let fmt = |r: Option<f64>| {
        r.map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "n/a".into())
    };
    let vs_nginx = ratio(ours.throughput, nginx.throughput);
    let vs_express = ratio(ours.throughput, express.throughput);
    let cpu_vs_nginx = match (us(ours), us(nginx)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let cpu_fmt = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{a:.1} µs vs {b:.1} µs"),
        _ => "n/a".into(),
    };
    part.facts = vec![
        (
            "production: our gateway ÷ nginx (req/s)".into(),
            fmt(vs_nginx),
        ),
        (
            "production: our gateway ÷ HAProxy (req/s)".into(),
            fmt(ratio(ours.throughput, haproxy.throughput)),
        ),
        (
            "production: our gateway ÷ express (req/s)".into(),
            fmt(vs_express),
        ),
        (
            "production: our gateway's CPU per request ÷ nginx's".into(),
            fmt(cpu_vs_nginx),
        ),
    ];
    part.checks = vec![
        Check::new(
            "production: our gateway's CPU per request ≤ nginx's",
            cpu_fmt(us(ours), us(nginx)),
            cpu_vs_nginx.map(|r| r <= 1.0),
        ),
        Check::new(
            "production: our gateway ≥ 1.0× nginx (req/s)",
            fmt(vs_nginx),
            vs_nginx.map(|r| r >= 1.0),
        ),
        Check::new(
            "production: our gateway ≥ 30× the express gateway (req/s)",
            fmt(vs_express),
            vs_express.map(|r| r >= 30.0),
        ),
    ];
    part.notes.push(format!(
        "Production topology: server CPU is that of the proxy's process (nginx: master and worker) from /proc over the measured window; CPU µs/op = that CPU time ÷ requests answered. The proxy has core {PROXY_CORE} to itself; the upstream nginx (1 worker), the load generator and the idle `serve all` process (auth's JWKS) share core {LOAD_CORE}, so a proxy that needs less than a core is limited by core {LOAD_CORE} and its req/s understates it — compare CPU per request. Our gateway runs without Redis (local rate limiter, in-process bus), with the benchmark account's rate limit raised as in the `serve all` table."
    ));
    part.tables.push((title, rows));
    part
}

/// `GET /users/me` through the proxy on `port` answers 2xx with the token.
async fn answers(port: u16, token: &str) -> Result<(), String> {
    let http = api::client().map_err(|e| e.to_string())?;
    match http
        .get(format!("{}/users/me", System::url(port)))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("GET /users/me answered {}", r.status())),
        Err(e) => Err(format!("GET /users/me failed: {e}")),
    }
}

/// `intellicolab serve gateway` alone, pinned to the proxy core with one event loop,
/// routing `/users` to the stand-in upstream and verifying tokens with auth's JWKS from
/// the `serve all` process.
async fn start_gateway_alone(cli: &Cli, system: &System, upstream: u16) -> anyhow::Result<Peer> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let admin = free_port()?;
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = peers::pinned_command(&cli.server_bin, Some(PROXY_CORE));
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "gateway"])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .envs(gateway_env(1))
        .env("INTELLICOLAB_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("INTELLICOLAB_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "INTELLICOLAB_GATEWAY__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        )
        .env(
            "INTELLICOLAB_GATEWAY__UPSTREAMS__USERS",
            System::url(upstream),
        )
        .env(
            "INTELLICOLAB_GATEWAY__UPSTREAMS__AUTH",
            System::url(system.ports.auth),
        )
        .env(
            "INTELLICOLAB_GATEWAY__UPSTREAMS__CHAT",
            System::url(system.ports.chat),
        )
        .env(
            "INTELLICOLAB_GATEWAY__UPSTREAMS__NOTIFICATIONS",
            System::url(system.ports.notifications),
        )
        .env("INTELLICOLAB_AUTH_URL", System::url(system.ports.auth))
        .env("INTELLICOLAB_USERS_URL", System::url(upstream))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    peers::start_process(
        cmd,
        port,
        dir,
        Some(log_path),
        "intellicolab serve gateway".into(),
        "our gateway",
    )
    .await
}

/// One measured run: requests answered, seconds, latencies, the proxy's CPU.
struct Run {
    ok: u64,
    errors: u64,
    seconds: f64,
    latency: crate::stats::LatencySummary,
    server: crate::stats::ProcUsage,
    first_error: Option<String>,
}

impl Run {
    fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
    fn cpu_us(&self) -> f64 {
        if self.ok > 0 {
            self.server.cpu_seconds * 1e6 / self.ok as f64
        } else {
            0.0
        }
    }
}

/// `runs` measured runs after one warm-up; the row of the median run (by req/s), the
/// others in its note.
async fn measure_production(
    cli: &Cli,
    generator: &Generator,
    name: &str,
    peer: &Peer,
    token: &str,
    runs: usize,
) -> Row {
    let url = format!("{}/users/me", System::url(peer.port));
    let addr = System::addr(peer.port);
    let pids = [peer.pid()];
    let mut done: Vec<Run> = Vec::new();
    if let Generator::Wrk(bin) = generator
        && cli.warmup >= 1.0
        && let Err(e) = wrk::run(
            bin,
            &url,
            token,
            PROD_CONNECTIONS,
            cli.warmup(),
            Some(LOAD_CORE),
        )
        .await
    {
        return Row::unavailable(name, format!("warm-up: {e}"));
    }
    for run in 0..runs {
        // `--profile` records the first run only.
        let mut run_cli = cli.clone();
        run_cli.profile = cli.profile && run == 0;
        let label = format!("production: {name}");
        let measured = match generator {
            Generator::Wrk(bin) => {
                let meter = super::Meter::start(&run_cli, &label, &pids, std::time::Duration::ZERO);
                let result = wrk::run(
                    bin,
                    &url,
                    token,
                    PROD_CONNECTIONS,
                    cli.duration(),
                    Some(LOAD_CORE),
                )
                .await;
                let usage = meter.finish().await;
                match result {
                    Ok(r) => Run {
                        ok: r.ok,
                        errors: r.errors,
                        seconds: r.seconds,
                        latency: r.latency,
                        server: usage.server.unwrap_or_default(),
                        first_error: None,
                    },
                    Err(e) => return Row::unavailable(name, e.to_string()),
                }
            }
            Generator::Own => {
                let (r, usage) = super::measure(
                    &run_cli,
                    &label,
                    addr,
                    load::get(addr, "/users/me", Some(token)),
                    PROD_CONNECTIONS,
                    Mode::Closed,
                    &pids,
                )
                .await;
                Run {
                    ok: r.ok,
                    errors: r.errors,
                    seconds: r.elapsed.as_secs_f64(),
                    latency: r.latencies.summary(),
                    server: usage.server.unwrap_or_default(),
                    first_error: r.first_error.clone(),
                }
            }
        };
        done.push(measured);
    }
    let mut order: Vec<usize> = (0..done.len()).collect();
    order.sort_by(|a, b| done[*a].throughput().total_cmp(&done[*b].throughput()));
    let median = &done[order[order.len() / 2]];
    let mut note = if done.len() > 1 {
        format!(
            "runs: {} req/s; {} µs/req",
            done.iter()
                .map(|r| format!("{:.0}", r.throughput()))
                .collect::<Vec<_>>()
                .join(", "),
            done.iter()
                .map(|r| format!("{:.1}", r.cpu_us()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    if let Some(e) = &median.first_error {
        note.push_str(&format!("; first error: {e}"));
    }
    Row {
        name: name.to_owned(),
        ok: true,
        requests: median.ok,
        errors: median.errors,
        seconds: median.seconds,
        throughput: median.throughput(),
        unit: "req".into(),
        latency: median.latency,
        server: Some(median.server.clone()),
        bench_cpu_percent: None,
        cpu_us_per_op: Some(median.cpu_us()),
        note,
    }
}
