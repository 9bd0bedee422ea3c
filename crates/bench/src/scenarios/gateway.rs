//! `gateway`: authenticated `GET /users/me` direct to the users service, through our
//! gateway, through nginx as a plain keep-alive proxy, and through the seed's express
//! gateway with a JWT check — same machine, same run; then the p99 our gateway adds at
//! half of its maximum throughput (open loop, same rate direct and through the gateway).

use crate::load::{self, Mode};
use crate::peers;
use crate::stats::{Check, Report, Row, ratio};
use crate::system::{Env, System};
use crate::{Cli, api};

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
    let pid = system.pid();
    let backend = system.backend;
    let http = api::client()?;
    let auth = System::url(system.ports.auth);
    let account = api::register(&http, &auth, &format!("gw{}", api::run_tag())).await?;
    api::wait_profile(&http, &System::url(system.ports.users), &account.token).await?;
    let via_gateway = http
        .get(format!("{}/users/me", System::url(system.ports.gateway)))
        .bearer_auth(&account.token)
        .send()
        .await;
    let gateway_ok = matches!(&via_gateway, Ok(r) if r.status().is_success());
    let gateway_status = match &via_gateway {
        Ok(r) => r.status().to_string(),
        Err(e) => e.to_string(),
    };

    let token = Some(account.token.as_str());
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
        match peers::start_express(install, system.ports.users, system.ports.auth).await {
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
    system.stop().await;

    let mut report = Report {
        scenario: "gateway".into(),
        command: Cli::command_line(),
        config: vec![
            ("backend".into(), backend.into()),
            ("connections".into(), c.to_string()),
            (
                "duration".into(),
                format!("{} s (+{} s warm-up) per row", cli.duration, cli.warmup),
            ),
            (
                "gateway event loops".into(),
                match cli.gateway_event_loops {
                    0 => "0 (proxies on the process's shared runtime, the default)".into(),
                    n => format!("{n} (dedicated single-threaded event loops)"),
                },
            ),
        ],
        tables: vec![(
            "Maximum throughput (closed loop), GET /users/me with a bearer token".into(),
            rows,
        )],
        ..Report::default()
    };
    if !half_rows.is_empty() {
        report
            .tables
            .push(("At half of our gateway's maximum".into(), half_rows));
    }
    let vs_nginx = ratio(gateway_row.throughput, nginx_row.throughput);
    let vs_express = ratio(gateway_row.throughput, express_row.throughput);
    let fmt = |r: Option<f64>| {
        r.map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "n/a".into())
    };
    report.facts = vec![
        (
            "our gateway ÷ direct (throughput)".into(),
            fmt(ratio(gateway_row.throughput, direct_row.throughput)),
        ),
        ("our gateway ÷ nginx".into(), fmt(vs_nginx)),
        ("our gateway ÷ express".into(), fmt(vs_express)),
        (
            "nginx ÷ direct".into(),
            fmt(ratio(nginx_row.throughput, direct_row.throughput)),
        ),
        (
            "p99 added by our gateway at half load".into(),
            added_p99
                .map(|a| format!("{a:.2} ms"))
                .unwrap_or_else(|| "n/a".into()),
        ),
    ];
    if !versions.is_empty() {
        report.facts.push(("peers".into(), versions.join("; ")));
    }
    report.checks = vec![
        Check::new(
            "our gateway ≥ 1.0× nginx plain proxy",
            fmt(vs_nginx),
            vs_nginx.map(|r| r >= 1.0),
        ),
        Check::new(
            "our gateway ≥ 20× the express gateway",
            fmt(vs_express),
            vs_express.map(|r| r >= 20.0),
        ),
        Check::new(
            "our gateway adds ≤ 1 ms p99 at half its maximum load",
            added_p99
                .map(|a| format!("{a:.2} ms"))
                .unwrap_or_else(|| "n/a".into()),
            added_p99.map(|a| a <= 1.0),
        ),
    ];
    report.notes.push(format!(
        "Server CPU/RSS is that of the `intellicolab serve all` process (gateway and users service share it), plus nginx/node (all their processes) on their rows. The load generator runs on the same {} cores. Our gateway's per-user rate limit is raised (limiter still on) so a single benchmark account is not throttled; it caches verified tokens, express verifies every request.",
        crate::procstat::cores()
    ));
    Ok(report)
}
