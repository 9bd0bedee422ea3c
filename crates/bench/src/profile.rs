//! Optional CPU profiles of the server during a measurement (`--profile`): `perf record`
//! on the server process for the measured window, summarised as a flat top-symbols list
//! that goes into the report, so a missed target comes with what limited it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::process::Command;

static PROFILES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Profiles `pid` for `duration` (call it when the measured window starts).
pub async fn record(label: &str, pid: u32, duration: Duration) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let data = dir.path().join("perf.data");
    let recorded = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string(), "--", "sleep"])
        .arg(format!("{:.1}", duration.as_secs_f64()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    let text = match recorded {
        Ok(s) if s.success() => Command::new("perf")
            .args(["report", "--stdio", "--no-children", "-g", "none"])
            .args(["--sort", "dso,symbol", "--percent-limit", "1.5", "-i"])
            .arg(&data)
            .output()
            .await
            .map(|o| summarise(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_else(|e| format!("perf report failed: {e}")),
        Ok(s) => format!("perf record failed ({s}); is perf allowed here?"),
        Err(e) => format!("perf is not available: {e}"),
    };
    if let Ok(mut p) = PROFILES.lock() {
        p.push((label.to_owned(), text));
    }
}

/// The sample lines of a `perf report --stdio` output, without comments and blank lines.
pub fn summarise(report: &str) -> String {
    report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .take(25)
        .map(|l| l.trim_end_matches([' ', '-']).to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn take() -> Vec<(String, String)> {
    PROFILES
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_sample_lines_only() {
        let r = "# Samples: 10\n#\n    40.00%  intellicolab  [.] argon2::compress\n\n    10.00%  [kernel]  [k] tcp_sendmsg\n";
        assert_eq!(
            summarise(r),
            "    40.00%  intellicolab  [.] argon2::compress\n    10.00%  [kernel]  [k] tcp_sendmsg"
        );
    }
}
