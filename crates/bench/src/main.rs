//! `intellicolab-bench`: starts the real server binary, creates its users and rooms through
//! the public API, runs one scenario for a bounded time against 127.0.0.1 and prints a
//! table (or JSON). See docs/benchmarks.md and `crates/bench/run-all.sh`.

mod api;
mod load;
mod peers;
mod procstat;
mod profile;
mod progress;
mod scenarios;
mod stats;
mod system;
mod wrk;
mod ws;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Authenticated GET /users/me: direct vs our gateway vs nginx vs the express gateway.
    Gateway,
    /// Logins/s against the argon2 limit; latency of unrelated requests during the storm.
    LoginStorm,
    /// Durable messages/s with concurrent HTTP senders (SQLite, and Postgres when given).
    Ingest,
    /// WebSocket fan-out: deliveries/s, send→receive latency, RSS per idle connection.
    Fanout,
    /// Search latency over generated profiles.
    Search,
    /// Message search latency over 1,000,000 stored messages (SQLite, and Postgres when given).
    MessageSearch,
    /// Reconnect storm: clients resume after missing events.
    Resume,
    /// Chat v1.1: members of one room react to one message while sockets watch.
    Reactions,
    /// Presence: N users each watching `--watch` others while `--churn` users/s leave and
    /// come back; change-delivery latency and server CPU.
    Presence,
    /// Notifications: one `@room` message of a `--room-size` room → every unread count
    /// (sockets) and every Web Push; then notifications/s for `--mentions` of them.
    Notify,
    /// Files: upload/download MiB/s through the gateway vs direct; server RSS growth while
    /// ten 25 MiB uploads stream at once.
    Files,
    /// Only print the machine description (for the report header).
    Machine,
}

/// The gateway scenario's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GatewayTables {
    /// The production topology (each proxy alone on a pinned core), then `serve all`.
    Both,
    /// Only the production topology.
    Production,
    /// Only the `serve all` table (gateway and services in one process).
    ServeAll,
}

#[derive(Parser, Debug, Clone)]
#[command(version, about = "IntelliColab load generator and benchmark suite")]
pub struct Cli {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up before each measurement (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Concurrent HTTP connections (closed-loop workers).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The server binary to start.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/intellicolab"))]
    pub server_bin: PathBuf,
    /// PostgreSQL admin URL: fresh databases are created on it for every service (and
    /// dropped afterwards). `ingest` and `search` then run on both backends.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for the event bus and chat fan-out (default: in-process).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Never install peers (nginx, node packages); their rows then say "not available".
    #[arg(long)]
    pub no_install: bool,
    /// ingest: concurrent senders (each its own account).
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// ingest: rooms the senders are spread over.
    #[arg(long, default_value_t = 16)]
    pub rooms: usize,
    /// ingest: sends each WebSocket sender keeps unacknowledged (pipelined).
    #[arg(long, default_value_t = 16)]
    pub ws_window: usize,
    /// gateway: the gateway's `event_loops` setting (0 = the shared runtime) in the
    /// `serve all` table.
    #[arg(long, default_value_t = 0)]
    pub gateway_event_loops: usize,
    /// gateway: which tables to measure.
    #[arg(long, value_enum, default_value_t = GatewayTables::Both)]
    pub gateway_tables: GatewayTables,
    /// gateway: runs per row of the production-topology table (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub gateway_runs: usize,
    /// fanout: WebSocket connections (one account each).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// fanout: members per room.
    #[arg(long, default_value_t = 1_000)]
    pub room_size: usize,
    /// fanout: messages per second in total (open loop), each delivered to a whole room.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// fanout: offered rates (msg/s, comma-separated) measured one after the other on the
    /// same sockets. Default: 50,100,150,200,250,300, or only --rate when that is given.
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    pub rates: Option<Vec<f64>>,
    /// presence: users each connected user subscribes to (--connections users in all).
    #[arg(long, default_value_t = 100)]
    pub watch: usize,
    /// presence: users per second that disconnect (each reconnects 1 s later).
    #[arg(long, default_value_t = 100.0)]
    pub churn: f64,
    /// search: profiles to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub profiles: usize,
    /// message-search: messages to store (over 1,000 rooms).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// resume: clients that reconnect.
    #[arg(long, default_value_t = 5_000)]
    pub clients: usize,
    /// resume: events each client misses while away.
    #[arg(long, default_value_t = 100)]
    pub missed: usize,
    /// reactions: members that each react once, spread over --duration.
    #[arg(long, default_value_t = 1_000)]
    pub reactors: usize,
    /// reactions: members among them that hold a WebSocket during the run.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// notify: `@room` messages posted back to back for the sustained rate.
    #[arg(long, default_value_t = 20)]
    pub mentions: usize,
    /// Record a `perf` profile of the server during each measurement and add the top
    /// symbols to the report.
    #[arg(long)]
    pub profile: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also append the Markdown section to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

impl Cli {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }
    pub fn system_options(&self) -> system::SystemOptions {
        system::SystemOptions {
            server_bin: self.server_bin.clone(),
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
        }
    }
    /// The command line as typed, with credentials in URLs masked.
    pub fn command_line() -> String {
        shown_command(std::env::args().skip(1))
    }
}

/// The command line for the report: credentials masked, `--markdown <file>` left out
/// (where the report goes is not part of what was measured).
pub fn shown_command(args: impl Iterator<Item = String>) -> String {
    let mut shown = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
        } else if a == "--markdown" {
            skip_value = true;
        } else if !a.starts_with("--markdown=") {
            shown.push(mask_credentials(&a));
        }
    }
    format!("intellicolab-bench {}", shown.join(" "))
}

/// `postgres://user:secret@host` → `postgres://user:***@host`.
pub fn mask_credentials(s: &str) -> String {
    let Some(scheme) = s.find("://") else {
        return s.to_owned();
    };
    let rest = &s[scheme + 3..];
    let Some(at) = rest.find('@') else {
        return s.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &s[..scheme + 3], &rest[at..]),
        None => s.to_owned(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = system::raise_nofile();
    let load_before = procstat::load_average();
    let report = match cli.scenario {
        Scenario::Machine => {
            for (k, v) in procstat::machine() {
                println!("- {k}: {v}");
            }
            return Ok(());
        }
        Scenario::Gateway => scenarios::gateway::run(&cli).await?,
        Scenario::LoginStorm => scenarios::login::run(&cli).await?,
        Scenario::Ingest => scenarios::ingest::run(&cli).await?,
        Scenario::Fanout => scenarios::fanout::run(&cli, nofile).await?,
        Scenario::Search => scenarios::search::run(&cli).await?,
        Scenario::MessageSearch => scenarios::message_search::run(&cli).await?,
        Scenario::Resume => scenarios::resume::run(&cli, nofile).await?,
        Scenario::Reactions => scenarios::reactions::run(&cli, nofile).await?,
        Scenario::Presence => scenarios::presence::run(&cli, nofile).await?,
        Scenario::Notify => scenarios::notify::run(&cli, nofile).await?,
        Scenario::Files => scenarios::files::run(&cli).await?,
    };
    let mut report = report;
    report.profiles = profile::take();
    report.config.push((
        "machine load average before → after".into(),
        format!("{load_before} → {}", procstat::load_average()),
    ));
    let md = report.markdown();
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{md}");
    }
    if let Some(path) = &cli.markdown {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(md.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(
            mask_credentials("postgres://bob:hunter2@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(
            mask_credentials("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(mask_credentials("--duration"), "--duration");
        let args = [
            "fanout",
            "--markdown",
            "/tmp/x.md",
            "--database-url",
            "postgres://a:b@h/d",
        ];
        assert_eq!(
            shown_command(args.iter().map(|s| s.to_string())),
            "intellicolab-bench fanout --database-url postgres://a:***@h/d"
        );
    }

    #[test]
    fn cli_parses_a_scenario_with_options() {
        let cli = Cli::try_parse_from([
            "bench",
            "fanout",
            "--connections",
            "200",
            "--duration",
            "3",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.scenario, Scenario::Fanout);
        assert_eq!(cli.connections, 200);
        assert_eq!(cli.duration(), Duration::from_secs(3));
        assert!(cli.json);
        assert!(Cli::try_parse_from(["bench", "nope"]).is_err());
    }
}
