//! Brute-force throttling of password checks (logins, and the current password of a
//! password or email change) that keeps guessing slow without letting anyone lock a
//! victim out. Failures are counted in the database (every auth instance sees them; they
//! survive restarts) per account — username and email share one counter; an unknown
//! login counts under its normalised string — per (account, client address) and per
//! client address (an IPv6 client by its /64). The address and the pair are refused with
//! 429 over their limits; the account alone only slows its attempts down. A valid device
//! token of the account (OWASP "device cookies") skips the account and address limits;
//! its own failures count per token, and one that keeps failing no longer helps.
//!
//! Skipping the per-address limit too is deliberate: a device token is bound to one
//! account and can only have come from a successful login to it, so it lets its holder
//! past an address that others (behind the same NAT, say) pushed over its limit, but
//! gives no one extra guesses at any other account.

use kit::{ApiError, ApiResult};
use sqlx::AnyConnection;

use crate::state::ApiContext;
use crate::store;

/// The throttle keys of one attempt.
pub struct ThrottleKeys {
    /// `account:<id>`, or `login:<normalised login>` when no account has that login.
    account: String,
    /// `account_ip:<account key>|<client address>`.
    account_ip: String,
    /// `ip:<client address>`.
    ip: String,
}

impl ThrottleKeys {
    pub fn new(account: Option<uuid::Uuid>, login: &str, ip: std::net::IpAddr) -> Self {
        let account = match account {
            Some(id) => format!("account:{id}"),
            None => format!("login:{login}"),
        };
        // An IPv6 client is counted by its /64: one subscriber or host usually gets a
        // whole /64 (RFC 6177), i.e. 2^64 addresses to rotate through.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            v4 => v4.to_string(),
        };
        Self {
            account_ip: format!("account_ip:{account}|{ip}"),
            account,
            ip: format!("ip:{ip}"),
        }
    }
}

/// How an attempt may proceed.
pub enum Gate {
    /// A valid device token of the account: no account or address limit; failures count
    /// under `key` (`device:<token hash>`).
    Device { key: String },
    /// Within every limit.
    Open,
    /// The account is over its failure limit: answer after `delay_ms`.
    Slowed { delay_ms: u64 },
}

/// Failures an address may have on an account over its limit before that address is
/// refused for the rest of the window: a typo and one more try. Every address still
/// gets its first guesses, so someone with the password on a new device is never locked
/// out by others' failures; a guesser spread over many addresses gets about two guesses
/// per address and window instead of `login_max_failures_per_account_ip`.
const FAILURES_PER_ADDRESS_UNDER_ATTACK: i64 = 2;

/// First delay for an account over its limit; it doubles with each further failure up
/// to `login_slowdown_max_ms` (250, 500, 1000, 2000, 3000 ms by default).
const SLOWDOWN_BASE_MS: u64 = 250;

/// Decides whether a login may proceed: 429 (with `Retry-After`) when the client IP or
/// the (account, IP) pair is over its limit; slowed down when only the account is.
pub async fn admit(ctx: &ApiContext, keys: &ThrottleKeys, device: Option<&str>) -> ApiResult<Gate> {
    let config = &ctx.config;
    let now = kit::time::now_ms();
    let window_ms = config.login_window_secs * 1000;
    let since = now - window_ms;
    let mut conn = ctx.db.pool().acquire().await?;
    if let Some(hash) = device {
        let key = format!("device:{hash}");
        let (n, _) = store::throttle::failures(&mut conn, &key, since).await?;
        if n < config.login_max_failures_per_account_ip {
            return Ok(Gate::Device { key });
        }
        // A device token that keeps failing no longer helps: the ordinary limits apply.
    }
    let refuse = |max: i64, oldest: Option<i64>| {
        let retry_ms = oldest
            .map(|o| o + window_ms - now)
            .unwrap_or(window_ms)
            .max(1000);
        metrics::counter!("auth_logins_total", "outcome" => "throttled").increment(1);
        ApiError::rate_limited(retry_ms as u64, max as u32)
    };
    let (n, oldest) = store::throttle::failures(&mut conn, &keys.ip, since).await?;
    if n >= config.login_max_failures_per_ip {
        return Err(refuse(config.login_max_failures_per_ip, oldest));
    }
    let (account_failures, _) = store::throttle::failures(&mut conn, &keys.account, since).await?;
    let under_attack = account_failures >= config.login_max_failures_per_account;
    let pair_max = if under_attack {
        config
            .login_max_failures_per_account_ip
            .min(FAILURES_PER_ADDRESS_UNDER_ATTACK)
    } else {
        config.login_max_failures_per_account_ip
    };
    let (n, oldest) = store::throttle::failures(&mut conn, &keys.account_ip, since).await?;
    if n >= pair_max {
        return Err(refuse(pair_max, oldest));
    }
    if !under_attack {
        return Ok(Gate::Open);
    }
    let over = (account_failures - config.login_max_failures_per_account).clamp(0, 16) as u32;
    let delay_ms = SLOWDOWN_BASE_MS
        .saturating_mul(1 << over)
        .min(config.login_slowdown_max_ms as u64);
    Ok(Gate::Slowed { delay_ms })
}

impl ThrottleKeys {
    /// Records a failed password check: against the device token that passed the
    /// limits, or else against the account, the pair and the address.
    pub async fn record_failure(
        &self,
        conn: &mut AnyConnection,
        gate: &Gate,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        match gate {
            Gate::Device { key } => store::throttle::record(conn, key, now).await,
            Gate::Open | Gate::Slowed { .. } => {
                for key in [&self.account, &self.account_ip, &self.ip] {
                    store::throttle::record(&mut *conn, key, now).await?;
                }
                Ok(())
            }
        }
    }
}

impl ThrottleKeys {
    /// After a success, forgives the failures of what it came through: the device token,
    /// or else the address. The account's own counter is left to age out (a success of
    /// the owner must not give guessers elsewhere a fresh allowance), and so is an
    /// address's when a device token succeeded there (others may guess from behind the
    /// same NAT).
    pub async fn forgive(&self, conn: &mut AnyConnection, gate: &Gate) -> Result<(), sqlx::Error> {
        let key = match gate {
            Gate::Device { key } => key,
            Gate::Open | Gate::Slowed { .. } => &self.account_ip,
        };
        store::throttle::clear(conn, key).await
    }
}

impl Gate {
    /// Sleeps out the slowdown, if any.
    pub async fn wait(&self) {
        if let Gate::Slowed { delay_ms } = self {
            metrics::counter!("auth_logins_total", "outcome" => "slowed").increment(1);
            tokio::time::sleep(std::time::Duration::from_millis(*delay_ms)).await;
        }
    }
}

/// Checks the current password of a password or email change under the login limits: a
/// wrong one counts as a failed login of the account, so a stolen access token (or
/// refresh token) gives no more guesses at the password than the login form does.
/// `Ok(false)` for a wrong password; 429 when the caller's address is over its limits.
pub async fn check_current_password(
    ctx: &ApiContext,
    user: &crate::store::users::UserRow,
    password: &str,
    ip: std::net::IpAddr,
) -> ApiResult<bool> {
    let keys = ThrottleKeys::new(Some(user.id), &user.username, ip);
    let gate = admit(ctx, &keys, None).await?;
    gate.wait().await;
    if ctx
        .hasher
        .verify(password, Some(&user.password_hash))
        .await?
    {
        return Ok(true);
    }
    let mut tx = ctx.db.begin().await?;
    keys.record_failure(tx.conn(), &gate, kit::time::now_ms())
        .await?;
    tx.commit().await?;
    Ok(false)
}
