//! Wiring of the `intellicolab` binary: configuration, and starting the services —
//! all in one process (the embedded default) or one per process (containers).
//! Even in one process the gateway reaches the services over real HTTP.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The whole configuration file: shared settings at the top level, one table per service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub common: kit::config::CommonConfig,
    pub auth: auth::Config,
    pub users: users::Config,
    pub chat: chat::Config,
    pub notifications: notifications::Config,
    pub files: files::Config,
    pub gateway: gateway::Config,
}

/// Conventional environment names accepted besides `INTELLICOLAB_*`.
const ALIASES: &[(&str, &str)] = &[
    ("REDIS_URL", "redis_url"),
    ("AUTH_DATABASE_URL", "auth.database_url"),
    ("USERS_DATABASE_URL", "users.database_url"),
    ("CHAT_DATABASE_URL", "chat.database_url"),
    ("NOTIFICATIONS_DATABASE_URL", "notifications.database_url"),
    ("FILES_DATABASE_URL", "files.database_url"),
];

const LIST_KEYS: &[&str] = &[
    "trusted_proxies",
    "gateway.upstreams.auth",
    "gateway.upstreams.users",
    "gateway.upstreams.chat",
    "gateway.upstreams.notifications",
    "gateway.upstreams.files",
    "gateway.cors_origins",
    "notifications.push_http_origins",
];

impl Settings {
    /// Defaults → `file` → environment; `data_dir` (from `--data-dir`) wins over all.
    pub fn load(file: Option<&Path>, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut s: Settings = kit::config::load(file, ALIASES, LIST_KEYS)?;
        if let Some(dir) = data_dir {
            s.common.data_dir = dir;
        }
        // Every command (also `migrate` and `replay-events`) refuses a configuration a
        // service would refuse at start, with the key and its minimum.
        s.auth.validate()?;
        s.chat.validate()?;
        s.notifications.validate()?;
        s.files.validate()?;
        s.gateway.validate()?;
        Ok(s)
    }

    /// `DATABASE_URL` applies to the one service a process runs (`serve <service>`).
    pub fn apply_database_url(&mut self, service: Role) {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            return;
        };
        let slot = match service {
            Role::Auth => &mut self.auth.database_url,
            Role::Users => &mut self.users.database_url,
            Role::Chat => &mut self.chat.database_url,
            Role::Notifications => &mut self.notifications.database_url,
            Role::Files => &mut self.files.database_url,
            Role::All | Role::Gateway => return,
        };
        if slot.is_none() {
            *slot = Some(url);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    All,
    Gateway,
    Auth,
    Users,
    Chat,
    Notifications,
    Files,
}

/// Builds the services of `role` (not yet serving).
pub async fn build(
    settings: &Settings,
    role: Role,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<kit::server::Service>> {
    let bus = bus::Bus::from_config(settings.common.redis_url()).await?;
    let c = &settings.common;
    let mut services = Vec::new();
    if matches!(role, Role::All | Role::Auth) {
        services.push(auth::build(c, &settings.auth, bus.clone(), shutdown.clone()).await?);
    }
    if matches!(role, Role::All | Role::Users) {
        services.push(users::build(c, &settings.users, bus.clone(), shutdown.clone()).await?);
    }
    if matches!(role, Role::All | Role::Chat) {
        services.push(chat::build(c, &settings.chat, bus.clone(), shutdown.clone()).await?);
    }
    if matches!(role, Role::All | Role::Notifications) {
        services.push(
            notifications::build(c, &settings.notifications, bus.clone(), shutdown.clone()).await?,
        );
    }
    if matches!(role, Role::All | Role::Files) {
        services.push(files::build(c, &settings.files, bus.clone(), shutdown.clone()).await?);
    }
    if matches!(role, Role::All | Role::Gateway) {
        services.push(gateway::build(c, &settings.gateway, bus.clone(), shutdown.clone()).await?);
    }
    Ok(services)
}

/// Applies the migrations of the services `role` names, without binding ports or starting
/// any background task (for `intellicolab migrate`, e.g. a Kubernetes init container).
pub async fn migrate(settings: &Settings, role: Role) -> anyhow::Result<()> {
    let c = &settings.common;
    if matches!(role, Role::All | Role::Auth) {
        auth::migrate(c, &settings.auth).await?;
    }
    if matches!(role, Role::All | Role::Users) {
        users::migrate(c, &settings.users).await?;
    }
    if matches!(role, Role::All | Role::Chat) {
        chat::migrate(c, &settings.chat).await?;
    }
    if matches!(role, Role::All | Role::Notifications) {
        notifications::migrate(c, &settings.notifications).await?;
    }
    if matches!(role, Role::All | Role::Files) {
        files::migrate(c, &settings.files).await?;
    }
    if matches!(role, Role::All | Role::Gateway) {
        gateway::migrate(c, &settings.gateway).await?;
    }
    Ok(())
}

/// Marks the events `service` published since `since_ms` as unpublished so its relay sends
/// them again (`intellicolab replay-events`); returns how many.
pub async fn replay_events(
    settings: &Settings,
    service: Role,
    since_ms: i64,
) -> anyhow::Result<u64> {
    let (url, name) = match service {
        Role::Auth => (&settings.auth.database_url, "auth"),
        Role::Users => (&settings.users.database_url, "users"),
        Role::Chat => (&settings.chat.database_url, "chat"),
        Role::Notifications => (&settings.notifications.database_url, "notifications"),
        Role::All | Role::Gateway | Role::Files => {
            anyhow::bail!("only auth, users, chat and notifications publish events")
        }
    };
    let db = kit::db::Db::open(url.as_deref(), &settings.common.data_dir, name).await?;
    Ok(bus::outbox::replay_since(&db, since_ms).await?)
}

/// Runs the services until `shutdown` is cancelled.
pub async fn run(services: Vec<kit::server::Service>) -> anyhow::Result<()> {
    let tasks: Vec<_> = services
        .into_iter()
        .map(|s| tokio::spawn(s.run()))
        .collect();
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(anyhow::anyhow!("service task failed: {e}")),
        }
    }
    result
}
