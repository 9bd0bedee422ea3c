use std::path::PathBuf;

use clap::{Parser, Subcommand};
use intellicolab::{Role, Settings};
use tokio_util::sync::CancellationToken;

/// IntelliColab: chat, people and accounts as microservices in one binary.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Every setting can also come from the environment.
    #[arg(long, global = true, env = "INTELLICOLAB_CONFIG")]
    config: Option<PathBuf>,
    /// Where SQLite files, signing keys and the mail outbox live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every service (default) or one of them.
    Serve {
        #[arg(value_enum, default_value = "all")]
        role: Role,
    },
    /// Apply database migrations and exit (they also run at start).
    Migrate {
        #[arg(value_enum, default_value = "all")]
        role: Role,
    },
    /// Add a new access-token signing key; the newest key signs, older ones still verify.
    RotateKey,
    /// Re-publish a service's events from its outbox (e.g. after restoring Redis or a
    /// database from a backup): every event it published since `--since` is sent again by
    /// its running relay; consumers skip what they had applied. Only the outbox retention
    /// window (24 h) can be replayed.
    ReplayEvents {
        /// The producing service: auth, users, chat or notifications.
        #[arg(long, value_enum)]
        service: Role,
        /// RFC 3339 time (2026-12-03T09:00:00Z) or epoch milliseconds.
        #[arg(long)]
        since: String,
    },
}

// Returns memory to the OS far better than glibc's per-thread arenas (argon2's 19 MiB
// blocks, WebSocket buffers) and allocates faster on the request path.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref(), cli.data_dir)?;
    let command = cli.command.unwrap_or(Command::Serve { role: Role::All });
    match command {
        Command::Serve { role } => {
            let service_name = match role {
                Role::All => "intellicolab",
                Role::Gateway => "gateway",
                Role::Auth => "auth",
                Role::Users => "users",
                Role::Chat => "chat",
                Role::Notifications => "notifications",
                Role::Files => "files",
            };
            let telemetry = kit::telemetry::init(service_name, &settings.common.log_format);
            settings.apply_database_url(role);
            let shutdown = CancellationToken::new();
            let services = intellicolab::build(&settings, role, shutdown.clone()).await?;
            let stop = shutdown.clone();
            tokio::spawn(async move {
                kit::server::shutdown_signal().await;
                tracing::info!("shutting down");
                stop.cancel();
            });
            let result = intellicolab::run(services).await;
            telemetry.shutdown();
            result
        }
        Command::Migrate { role } => {
            kit::telemetry::init_logging(&settings.common.log_format);
            settings.apply_database_url(role);
            intellicolab::migrate(&settings, role).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::ReplayEvents { service, since } => {
            kit::telemetry::init_logging(&settings.common.log_format);
            settings.apply_database_url(service);
            let since_ms = bus::outbox::parse_since(&since)?;
            let n = intellicolab::replay_events(&settings, service, since_ms).await?;
            println!(
                "{n} events published since {} marked for re-publication; the service's running relay sends them within a second",
                kit::time::rfc3339(since_ms)
            );
            Ok(())
        }
        Command::RotateKey => {
            let dir = settings.common.data_dir.join("keys");
            let path = token::KeySet::generate_into(&dir)?;
            println!("new signing key: {}", path.display());
            Ok(())
        }
    }
}
