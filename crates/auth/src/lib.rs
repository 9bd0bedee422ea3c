//! The auth service: registration, login, EdDSA access tokens with a JWKS, rotating
//! refresh tokens in revocable sessions, password change and reset, email change with a
//! mailed confirmation, email verification, TOTP two-factor login with recovery codes,
//! account deletion, brute-force throttling with device tokens. Publishes
//! `user.registered`, `user.updated`, `user.deleted`, `session.revoked` and
//! `user.password_changed` through its outbox, and lists recently ended sessions for other services at
//! `GET /internal/revocations` (not under `/auth`, so the gateway never exposes it).

mod api;
pub mod domain;
mod events;
mod hashing;
mod state;
mod store;
pub mod totp;
mod webauthn;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use state::ApiContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` (`AUTH_DATABASE_URL`); unset = `<data dir>/auth.db`.
    pub database_url: Option<String>,
    pub access_token_ttl_secs: i64,
    /// A session ends after this long without a refresh…
    pub session_idle_days: i64,
    /// …and at the latest this long after login.
    pub session_absolute_days: i64,
    /// Failed logins per account (username and email share it) within the window after
    /// which that account's logins are slowed down — never refused for the account alone
    /// (anyone could lock anyone out) — and an address that already failed twice on it
    /// is refused (429) for the rest of the window.
    pub login_max_failures_per_account: i64,
    /// Failed logins per (account, client IP) within the window before 429 for that pair.
    pub login_max_failures_per_account_ip: i64,
    /// Failed logins per client IP (any accounts) within the window before 429.
    pub login_max_failures_per_ip: i64,
    pub login_window_secs: i64,
    /// Longest delay before answering a login of an account over its failure limit.
    pub login_slowdown_max_ms: i64,
    /// Lifetime of the device token a successful login returns; a login presenting one
    /// of its account's passes the per-account and per-address limits (OWASP "device
    /// cookies").
    pub device_token_ttl_days: i64,
    pub password_reset_ttl_secs: i64,
    /// Lifetime of the confirmation token mailed to a new email address.
    pub email_change_ttl_secs: i64,
    /// Lifetime of the verification link token mailed at registration and on request.
    pub email_verify_ttl_secs: i64,
    /// Least time between two verification mails of one account (`POST
    /// /auth/email/verify/request` answers 429 sooner): nobody fills a mailbox with them.
    pub email_verify_resend_secs: i64,
    /// Lifetime of the `mfa_token` a login with two-factor authentication returns.
    pub mfa_token_ttl_secs: i64,
    /// How long the username and email of a deleted account stay reserved.
    pub deleted_name_reserve_secs: i64,
    /// `smtp://…` / `smtps://…`; unset = `.eml` files in `<data dir>/outbox/`.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// Where people open the app (used in reset and confirmation mails).
    pub public_url: String,
    /// WebAuthn relying-party id: the domain passkeys are bound to — the host of
    /// `passkey_origin` or a parent domain of it, never an IP address (browsers refuse
    /// those, so passkeys need the app opened at a name such as `localhost`).
    pub passkey_rp_id: String,
    /// The origin the web client is served from, exactly as browsers write it in a
    /// ceremony (`scheme://host[:port]`); ceremonies from any other origin are refused.
    pub passkey_origin: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            database_url: None,
            access_token_ttl_secs: 15 * 60,
            session_idle_days: 30,
            session_absolute_days: 90,
            login_max_failures_per_account: 10,
            login_max_failures_per_account_ip: 5,
            login_max_failures_per_ip: 50,
            login_window_secs: 15 * 60,
            login_slowdown_max_ms: 3000,
            device_token_ttl_days: 180,
            password_reset_ttl_secs: 30 * 60,
            email_change_ttl_secs: 24 * 3600,
            email_verify_ttl_secs: 24 * 3600,
            email_verify_resend_secs: 60,
            mfa_token_ttl_secs: 5 * 60,
            // 30 days: long enough that contacts notice the account is gone before anyone
            // else can appear under its name; the address can be re-registered after.
            deleted_name_reserve_secs: 30 * 86_400,
            smtp_url: None,
            mail_from: "IntelliColab <no-reply@intellicolab.local>".to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            passkey_rp_id: "localhost".to_owned(),
            passkey_origin: "http://localhost:8080".to_owned(),
        }
    }
}

impl Config {
    /// Refuses values below their minimum, naming the key (at load, instead of silently
    /// raising them when a login is slowed down).
    pub fn validate(&self) -> anyhow::Result<()> {
        // 0 turns the slowdown off; a negative delay has no meaning.
        if self.login_slowdown_max_ms < 0 {
            anyhow::bail!(
                "invalid configuration: auth.login_slowdown_max_ms = {}, the minimum is 0",
                self.login_slowdown_max_ms
            );
        }
        self.validate_passkeys()
    }

    /// The relying-party id must be the origin's host or a parent domain of it (WebAuthn
    /// L2 §5.1.3 "is a registrable domain suffix of or is equal to"): otherwise every
    /// browser refuses every ceremony, which is better said at start-up.
    fn validate_passkeys(&self) -> anyhow::Result<()> {
        let host = self
            .passkey_origin
            .strip_prefix("https://")
            .or_else(|| self.passkey_origin.strip_prefix("http://"))
            .map(|rest| rest.split(['/', ':']).next().unwrap_or_default())
            .unwrap_or_default();
        let rp = self.passkey_rp_id.as_str();
        if rp.parse::<std::net::IpAddr>().is_ok() {
            anyhow::bail!(
                "invalid configuration: auth.passkey_rp_id = {rp:?} is an IP address; browsers accept only domain names (e.g. localhost)"
            );
        }
        let suffix = !rp.is_empty()
            && (host == rp || host.strip_suffix(rp).is_some_and(|h| h.ends_with('.')));
        if !suffix {
            anyhow::bail!(
                "invalid configuration: auth.passkey_rp_id = {rp:?} is neither the host of auth.passkey_origin = {:?} nor a parent domain of it",
                self.passkey_origin
            );
        }
        Ok(())
    }
}

/// Service name: database file, metrics label.
pub const NAME: &str = "auth";

fn setup<'a>(common: &'a kit::config::CommonConfig, config: &'a Config) -> kit::server::Setup<'a> {
    kit::server::Setup {
        name: NAME,
        database_url: config.database_url.as_deref(),
        data_dir: &common.data_dir,
        migrations: store::MIGRATIONS,
        listen: config.listen,
    }
}

/// Applies the auth database migrations.
pub async fn migrate(common: &kit::config::CommonConfig, config: &Config) -> anyhow::Result<()> {
    setup(common, config).open_db().await?.close().await;
    Ok(())
}

pub async fn build(
    common: &kit::config::CommonConfig,
    config: &Config,
    bus: bus::Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<kit::server::Service> {
    config.validate()?;
    let trusted = kit::net::TrustedProxies::parse(&common.trusted_proxies)?;
    let kit::server::Started {
        db,
        listener,
        ready,
    } = setup(common, config).start(bus.probe()).await?;
    let shutdown = shutdown.child_token();
    let keys = Arc::new(token::KeySet::load_or_generate(
        &common.data_dir.join("keys"),
    )?);
    let verifier = token::Verifier::from_jwks(&keys.jwks())?;
    let mailer = mail::Mailer::new(
        config.smtp_url.as_deref(),
        &config.mail_from,
        common.data_dir.join("outbox"),
    )?;
    // Everything that can fail is done: only now start the relay.
    let (outbox, relay) =
        bus::outbox::Relay::spawn(events::SOURCE, db.clone(), bus.clone(), shutdown.clone());
    let ctx = ApiContext {
        db: db.clone(),
        keys,
        verifier,
        config: Arc::new(config.clone()),
        outbox,
        hasher: hashing::Hasher::default(),
        mailer: Arc::new(mailer),
        relying_party: Arc::new(webauthn::RelyingParty::new(
            &config.passkey_rp_id,
            "IntelliColab",
            &config.passkey_origin,
        )),
    };
    let router = kit::server::finish_router(NAME, api::router(ctx), ready, trusted);
    Ok(kit::server::Service {
        name: NAME,
        listener,
        router,
        shutdown,
        background: vec![relay],
        event_loops: 0,
    })
}
