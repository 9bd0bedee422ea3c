//! CPU time and resident memory of the processes under test, from `/proc`, and a
//! description of the machine for the report.

use std::time::Instant;

use crate::stats::ProcUsage;

/// Kernel clock ticks per second for `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// `(ppid, utime + stime ticks)` from the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_rss_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `pids` and all their descendants (nginx workers, node helpers).
fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&text)?.0))
        })
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !all.contains(pid) {
                all.push(*pid);
            }
        }
        i += 1;
    }
    all
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|t| parse_stat(&t).map(|(_, ticks)| ticks))
        .sum()
}

pub fn rss_kib(pids: &[u32]) -> u64 {
    with_descendants(pids)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|t| parse_rss_kib(&t))
        .sum()
}

/// Measures CPU use of a set of processes (and their children) between `start` and `finish`.
pub struct CpuMeter {
    pids: Vec<u32>,
    ticks: u64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self::start_exact(with_descendants(pids))
    }

    /// Only these processes, not their children (the bench itself: its children are the server).
    pub fn start_exact(pids: Vec<u32>) -> Self {
        Self {
            ticks: cpu_ticks(&pids),
            pids,
            at: Instant::now(),
        }
    }

    pub fn finish(self) -> ProcUsage {
        let ticks = cpu_ticks(&self.pids).saturating_sub(self.ticks);
        let wall = self.at.elapsed().as_secs_f64();
        let cpu_seconds = ticks as f64 / clock_ticks();
        ProcUsage {
            cpu_seconds,
            cpu_percent: if wall > 0.0 {
                cpu_seconds / wall * 100.0
            } else {
                0.0
            },
            rss_mib: rss_kib(&self.pids) as f64 / 1024.0,
        }
    }
}

/// Cores, memory, kernel and CPU model, from `/proc`.
pub fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let kernel = kernel
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("cores".to_owned(), cores().to_string()),
        ("cpu".to_owned(), model),
        (
            "memory".to_owned(),
            format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        ),
        ("kernel".to_owned(), kernel),
        (
            "load average (1, 5, 15 min) before the run".to_owned(),
            load_average(),
        ),
    ]
}

/// The 1, 5 and 15 minute load averages: how busy the shared machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let line =
            "1234 (my (odd) proc) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 1 1";
        assert_eq!(parse_stat(line), Some((77, 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_line() {
        let status = "Name:\tx\nVmPeak:\t 999 kB\nVmRSS:\t   20480 kB\nThreads: 3\n";
        assert_eq!(parse_rss_kib(status), Some(20480));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn this_process_is_measurable() {
        let me = std::process::id();
        assert!(rss_kib(&[me]) > 0);
        let meter = CpuMeter::start(&[me]);
        let usage = meter.finish();
        assert!(usage.rss_mib > 0.0);
    }
}
