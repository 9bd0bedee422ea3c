//! Layered configuration: serde defaults → TOML file → environment.
//!
//! Every key can be set from the environment as `INTELLICOLAB_<KEY>` with `__`
//! between nesting levels (`INTELLICOLAB_AUTH__LISTEN=0.0.0.0:3001`); a few
//! conventional names (`REDIS_URL`, `AUTH_DATABASE_URL`, …) are accepted as aliases.

use std::path::Path;

use serde::de::DeserializeOwned;

pub const ENV_PREFIX: &str = "INTELLICOLAB";

/// Loads `T` from its defaults, then `file` (if any), then the environment.
/// `aliases` maps conventional env names to config keys; `list_keys` are keys whose env
/// values are comma-separated lists.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    aliases: &[(&str, &str)],
    list_keys: &[&str],
) -> anyhow::Result<T> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).required(true));
    }
    let mut env = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true);
    if !list_keys.is_empty() {
        env = env.list_separator(",");
        for key in list_keys {
            env = env.with_list_parse_key(key);
        }
    }
    builder = builder.add_source(env);
    for (var, key) in aliases {
        if let Ok(value) = std::env::var(var) {
            if list_keys.contains(key) {
                let items: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                builder = builder.set_override(*key, items)?;
            } else {
                builder = builder.set_override(*key, value)?;
            }
        }
    }
    let cfg = builder.build()?;
    cfg.try_deserialize::<T>()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// Settings every service shares (top level of the config file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct CommonConfig {
    /// SQLite files, signing keys and the mail outbox live here.
    pub data_dir: std::path::PathBuf,
    /// Redis for the event bus, chat fan-out and shared rate limits; unset = in-process.
    pub redis_url: Option<String>,
    /// `auto`, `json` or `pretty`.
    pub log_format: String,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDRs).
    pub trusted_proxies: Vec<String>,
    /// Base URL of the auth service (JWKS: `<auth_url>/auth/.well-known/jwks.json`).
    pub auth_url: String,
    /// Base URL of the user service (internal relationship checks).
    pub users_url: String,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            data_dir: "./data".into(),
            redis_url: None,
            log_format: "auto".to_owned(),
            trusted_proxies: vec!["127.0.0.1".to_owned(), "::1".to_owned()],
            auth_url: "http://127.0.0.1:3001".to_owned(),
            users_url: "http://127.0.0.1:3003".to_owned(),
        }
    }
}

impl CommonConfig {
    pub fn jwks_url(&self) -> String {
        format!(
            "{}/auth/.well-known/jwks.json",
            self.auth_url.trim_end_matches('/')
        )
    }
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// Refuses the first `(key, value, minimum)` of `service`'s settings below its minimum, with
/// an error naming the key (every service's `Config::validate` states its minimums this way).
pub fn check_minimums(service: &str, checks: &[(&str, u64, u64)]) -> anyhow::Result<()> {
    for &(key, value, min) in checks {
        if value < min {
            anyhow::bail!("invalid configuration: {service}.{key} = {value}, the minimum is {min}");
        }
    }
    Ok(())
}

/// Refuses a setting that is not an `http://` or `https://` URL (another service's address,
/// a public URL used in links).
pub fn check_http_url(service: &str, key: &str, url: &str) -> anyhow::Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        anyhow::bail!("invalid configuration: {service}.{key} = {url:?} is not an http(s) URL")
    }
}
