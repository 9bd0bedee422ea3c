//! `wrk` (Debian package) as the load generator of the gateway's production-topology
//! table: a C event loop on its own pinned core costs the proxy under test nothing and
//! reports what nginx's and HAProxy's own benchmarks report, so the rows compare.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::peers;
use crate::stats::LatencySummary;
use anyhow::Context;

/// What one `wrk` run printed.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    /// Responses with a 2xx/3xx status.
    pub ok: u64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
    pub seconds: f64,
    pub latency: LatencySummary,
}

/// Finds wrk, installing it with apt-get when allowed.
pub async fn binary(install: bool) -> anyhow::Result<PathBuf> {
    peers::debian_binary("wrk", &["wrk"], install).await
}

/// `wrk -t1 -c<connections> -d<duration> --latency` against `url` with a bearer token,
/// pinned to `core` when one is given.
pub async fn run(
    bin: &PathBuf,
    url: &str,
    token: &str,
    connections: usize,
    duration: Duration,
    core: Option<usize>,
) -> anyhow::Result<WrkResult> {
    let secs = duration.as_secs().max(1);
    let out = peers::pinned_command(bin, core)
        .args(["-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`, `1.5m`) in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

/// Reads the text `wrk --latency` prints.
pub fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut total = None;
    let mut bad = 0u64;
    for line in text.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("50%") => r.latency.p50_ms = duration_ms(words.next()?)?,
            Some("90%") => r.latency.p90_ms = duration_ms(words.next()?)?,
            Some("99%") => r.latency.p99_ms = duration_ms(words.next()?)?,
            Some("Latency") => {
                // "Latency   1.02ms  300.00us  12.00ms   80.00%": avg, stdev, max, ±stdev.
                let cols: Vec<&str> = words.collect();
                if cols.len() >= 3
                    && let Some(max) = duration_ms(cols[2])
                {
                    r.latency.max_ms = max;
                }
            }
            Some("Non-2xx") => {
                bad += t.rsplit(' ').next()?.parse::<u64>().ok()?;
            }
            Some("Socket") => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                bad += t
                    .split([',', ':'])
                    .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            Some(n) if t.contains(" requests in ") => {
                total = Some(n.parse::<u64>().ok()?);
                let secs = t.split(" requests in ").nth(1)?.split(',').next()?;
                r.seconds = duration_ms(secs)? / 1000.0;
            }
            _ => {}
        }
    }
    let total = total?;
    r.ok = total.saturating_sub(bad.min(total));
    r.errors = bad;
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text = "Running 10s test @ http://127.0.0.1:8080/users/me
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.38ms  208.63us  12.41ms   91.20%
    Req/Sec    46.59k     1.70k   49.21k    77.00%
  Latency Distribution
     50%    1.35ms
     75%    1.42ms
     90%    1.53ms
     99%    1.98ms
  463527 requests in 10.00s, 95.48MB read
  Non-2xx or 3xx responses: 27
Requests/sec:  46343.21
Transfer/sec:      9.55MB
";
        let r = parse(text).unwrap();
        assert_eq!(r.ok, 463_500);
        assert_eq!(r.errors, 27);
        assert!((r.seconds - 10.0).abs() < 1e-9);
        assert!((r.latency.p50_ms - 1.35).abs() < 1e-9);
        assert!((r.latency.p90_ms - 1.53).abs() < 1e-9);
        assert!((r.latency.p99_ms - 1.98).abs() < 1e-9);
        assert!((r.latency.max_ms - 12.41).abs() < 1e-9);
        let errs = "  10 requests in 1.00s, 1KB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n     99%  812.00us\n";
        let r = parse(errs).unwrap();
        assert_eq!((r.ok, r.errors), (4, 6));
        assert!((r.latency.p99_ms - 0.812).abs() < 1e-9);
        assert!(parse("garbage").is_none());
    }
}
