//! Latency recording (HDR histograms, microsecond resolution) and the result rows every
//! scenario prints as a table or JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, 1 µs .. 10 min, 3 significant digits.
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 600_000_000, 3)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        // Values above the upper bound are clamped rather than lost.
        self.hist.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail; saturate if it ever did.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Percentile in milliseconds (0 when nothing was recorded).
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.max() as f64 / 1000.0
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50_ms: self.percentile_ms(0.50),
            p90_ms: self.percentile_ms(0.90),
            p99_ms: self.percentile_ms(0.99),
            max_ms: self.max_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// CPU and memory of the processes under test during one measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcUsage {
    /// CPU time used during the measurement divided by its wall time (100 = one core).
    pub cpu_percent: f64,
    /// Resident set size at the end, summed over the processes.
    pub rss_mib: f64,
    /// CPU time used during the measurement, in seconds (all cores).
    pub cpu_seconds: f64,
}

/// One line of a result table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub name: String,
    /// `None` when the row could not be measured; `note` says why.
    pub ok: bool,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Operations per second (requests, messages or deliveries; the unit says which).
    pub throughput: f64,
    pub unit: String,
    pub latency: LatencySummary,
    pub server: Option<ProcUsage>,
    /// CPU used by the load generator itself (it shares the machine with the server).
    pub bench_cpu_percent: Option<f64>,
    /// Server CPU time per operation, in microseconds (tables that meter one server).
    pub cpu_us_per_op: Option<f64>,
    pub note: String,
}

impl Row {
    pub fn measured(
        name: impl Into<String>,
        unit: &str,
        ok_count: u64,
        errors: u64,
        elapsed: Duration,
        lat: &Latencies,
    ) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            name: name.into(),
            ok: true,
            requests: ok_count,
            errors,
            seconds,
            throughput: if seconds > 0.0 {
                ok_count as f64 / seconds
            } else {
                0.0
            },
            unit: unit.to_owned(),
            latency: lat.summary(),
            server: None,
            bench_cpu_percent: None,
            cpu_us_per_op: None,
            note: String::new(),
        }
    }

    pub fn unavailable(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: false,
            note: why.into(),
            ..Self::default()
        }
    }

    pub fn with_server(mut self, usage: ProcUsage) -> Self {
        self.server = Some(usage);
        self
    }
}

/// A target from issue 8 and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    /// `None`: could not be evaluated in this run.
    pub met: Option<bool>,
}

impl Check {
    pub fn new(target: impl Into<String>, measured: impl Into<String>, met: Option<bool>) -> Self {
        Self {
            target: target.into(),
            measured: measured.into(),
            met,
        }
    }
}

/// Everything one scenario run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub command: String,
    pub config: Vec<(String, String)>,
    pub tables: Vec<(String, Vec<Row>)>,
    pub facts: Vec<(String, String)>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// `perf` summaries per measurement (`--profile`).
    pub profiles: Vec<(String, String)>,
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// GitHub-flavoured Markdown; the same text is printed to the terminal.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("### `{}`\n\n", self.scenario));
        out.push_str(&format!("Command: `{}`\n\n", self.command));
        if !self.config.is_empty() {
            let parts: Vec<String> = self
                .config
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            out.push_str(&format!("Settings: {}\n\n", parts.join(", ")));
        }
        for (title, rows) in &self.tables {
            out.push_str(&format!("**{title}**\n\n"));
            // The CPU-per-operation column only where some row has it.
            let per_op = rows.iter().any(|r| r.cpu_us_per_op.is_some());
            out.push_str(
                "| | count | errors | throughput | p50 ms | p90 ms | p99 ms | max ms | server CPU % |",
            );
            if per_op {
                out.push_str(" server CPU µs/op |");
            }
            out.push_str(" server RSS MiB | bench CPU % | note |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            if per_op {
                out.push_str("---:|");
            }
            out.push_str("---:|---:|---|\n");
            for r in rows {
                let per_op_cell = |v: String| {
                    if per_op {
                        format!(" {v} |")
                    } else {
                        String::new()
                    }
                };
                if !r.ok {
                    out.push_str(&format!(
                        "| {} | – | – | not available | – | – | – | – | – |{} – | – | {} |\n",
                        r.name,
                        per_op_cell("–".to_owned()),
                        r.note
                    ));
                    continue;
                }
                let (cpu, rss) = match &r.server {
                    Some(u) => (format!("{:.0}", u.cpu_percent), format!("{:.1}", u.rss_mib)),
                    None => ("–".to_owned(), "–".to_owned()),
                };
                let bench = r
                    .bench_cpu_percent
                    .map(|c| format!("{c:.0}"))
                    .unwrap_or_else(|| "–".to_owned());
                let us = per_op_cell(
                    r.cpu_us_per_op
                        .map(|v| format!("{v:.1}"))
                        .unwrap_or_else(|| "–".to_owned()),
                );
                out.push_str(&format!(
                    "| {} | {} | {} | {} {}/s | {} | {} | {} | {} | {} |{} {} | {} | {} |\n",
                    r.name,
                    r.requests,
                    r.errors,
                    fmt_num(r.throughput),
                    r.unit,
                    fmt_num(r.latency.p50_ms),
                    fmt_num(r.latency.p90_ms),
                    fmt_num(r.latency.p99_ms),
                    fmt_num(r.latency.max_ms),
                    cpu,
                    us,
                    rss,
                    bench,
                    r.note
                ));
            }
            out.push('\n');
        }
        if !self.facts.is_empty() {
            for (k, v) in &self.facts {
                out.push_str(&format!("- {k}: {v}\n"));
            }
            out.push('\n');
        }
        if !self.checks.is_empty() {
            out.push_str("| target | measured | met |\n|---|---|---|\n");
            for c in &self.checks {
                let met = match c.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not evaluated",
                };
                out.push_str(&format!("| {} | {} | {} |\n", c.target, c.measured, met));
            }
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("> {n}\n"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for (label, text) in &self.profiles {
            out.push_str(&format!(
                "<details><summary>perf profile of the server: {label}</summary>\n\n```text\n{text}\n```\n</details>\n\n"
            ));
        }
        out
    }
}

/// `a / b` as a ratio string, or "n/a" when either side is missing.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_values() {
        let mut l = Latencies::new();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        let s = l.summary();
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn merging_adds_counts_and_empty_is_zero() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        assert_eq!(a.summary().p99_ms, 0.0);
        a.record(Duration::from_micros(10));
        b.record(Duration::from_secs(2));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!((a.max_ms() - 2000.0).abs() < 2.0);
        // Sub-microsecond samples still count as 1 µs, beyond the bound they clamp.
        a.record(Duration::from_nanos(10));
        a.record(Duration::from_secs(3600));
        assert_eq!(a.count(), 4);
    }

    #[test]
    fn rows_compute_throughput_and_render() {
        let mut l = Latencies::new();
        l.record(Duration::from_millis(3));
        let row = Row::measured("direct", "req", 500, 2, Duration::from_secs(2), &l);
        assert_eq!(row.throughput, 250.0);
        let report = Report {
            scenario: "x".into(),
            command: "bench x".into(),
            tables: vec![(
                "t".into(),
                vec![row, Row::unavailable("nginx", "not installed")],
            )],
            checks: vec![Check::new("a ≥ b", "1.2×", Some(true))],
            ..Report::default()
        };
        let md = report.markdown();
        assert!(md.contains("| direct | 500 | 2 | 250 req/s |"), "{md}");
        assert!(md.contains("| nginx | – | – | not available |"), "{md}");
        assert!(md.contains("| a ≥ b | 1.2× | yes |"), "{md}");
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(3.0, 1.5), Some(2.0));
    }
}
