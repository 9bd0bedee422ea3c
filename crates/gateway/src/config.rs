//! Declarative gateway configuration: upstream clusters, routes and their policies.
//! Every field has a default, so an empty `[gateway]` table gives the standard setup.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    /// Operators' listener (default `127.0.0.1:9080`): `/metrics`, `/healthz`, `/readyz`.
    /// The public listener has no `/metrics`. Keep this one off public networks.
    pub admin_listen: Option<SocketAddr>,
    /// Instances of each upstream cluster, as base URLs (`http://127.0.0.1:3001`).
    pub upstreams: Upstreams,
    /// Routes by path prefix; the longest matching prefix wins.
    pub routes: Vec<RouteConfig>,
    pub load_balancing: LoadBalancing,
    /// Active health check: `GET <instance>/readyz` this often.
    pub health_check_interval_ms: u64,
    pub health_check_timeout_ms: u64,
    /// Passive health: this many consecutive connect errors or 5xx eject an instance.
    pub eject_after_failures: u32,
    /// First ejection lasts this long, doubling on each repeated ejection up to the max.
    pub eject_base_ms: u64,
    pub eject_max_ms: u64,
    /// Circuit breaker: an instance with this many requests in flight takes no more.
    pub max_outstanding_per_instance: usize,
    pub connect_timeout_ms: u64,
    /// How many other instances an idempotent request may be retried on after a connect failure.
    pub max_retries: u32,
    /// Named rate-limit policies; routes refer to them by name.
    pub rate_limits: BTreeMap<String, RateLimitPolicy>,
    /// Where limits are counted: `auto` (Redis when `redis_url` is set), `local`, `redis`.
    pub rate_limit_backend: RateLimitBackend,
    /// Origins allowed to call the API from a browser (exact match, or `*`).
    pub cors_origins: Vec<String>,
    /// Base URL clients use, for the `servers` of the merged OpenAPI document.
    pub public_url: Option<String>,
    /// Compress JSON responses at least this large.
    pub compression_min_bytes: u64,
    /// Idle keep-alive connections kept per upstream instance (per event loop).
    pub pool_max_idle_per_host: usize,
    /// Proxying threads: 0 = on the process's shared runtime; n = n single-threaded
    /// event loops (nginx-style workers), each with its own upstream connections.
    pub event_loops: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9080))),
            upstreams: Upstreams::default(),
            routes: default_routes(),
            load_balancing: LoadBalancing::default(),
            health_check_interval_ms: 2_000,
            health_check_timeout_ms: 1_000,
            eject_after_failures: 3,
            eject_base_ms: 1_000,
            eject_max_ms: 30_000,
            max_outstanding_per_instance: 4_096,
            connect_timeout_ms: 1_000,
            max_retries: 2,
            rate_limits: default_rate_limits(),
            rate_limit_backend: RateLimitBackend::Auto,
            cors_origins: Vec::new(),
            public_url: None,
            compression_min_bytes: 1024,
            pool_max_idle_per_host: 512,
            event_loops: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Upstreams {
    pub auth: Vec<String>,
    pub users: Vec<String>,
    pub chat: Vec<String>,
    pub notifications: Vec<String>,
    pub files: Vec<String>,
    /// Further clusters a custom route may name.
    #[serde(flatten)]
    pub other: BTreeMap<String, Vec<String>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            auth: vec!["http://127.0.0.1:3001".to_owned()],
            users: vec!["http://127.0.0.1:3003".to_owned()],
            chat: vec!["http://127.0.0.1:3002".to_owned()],
            notifications: vec!["http://127.0.0.1:3004".to_owned()],
            files: vec!["http://127.0.0.1:3005".to_owned()],
            other: BTreeMap::new(),
        }
    }
}

impl Upstreams {
    pub fn clusters(&self) -> Vec<(String, Vec<String>)> {
        let mut out = vec![
            ("auth".to_owned(), self.auth.clone()),
            ("users".to_owned(), self.users.clone()),
            ("chat".to_owned(), self.chat.clone()),
            ("notifications".to_owned(), self.notifications.clone()),
            ("files".to_owned(), self.files.clone()),
        ];
        out.extend(self.other.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    RoundRobin,
    /// Power of two choices on outstanding requests.
    #[default]
    P2c,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBackend {
    /// Redis when `redis_url` is set (limits shared by every gateway), else local.
    #[default]
    Auto,
    /// Per gateway process, even with Redis configured.
    Local,
    /// Redis; an error at startup if `redis_url` is unset.
    Redis,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthPolicy {
    Public,
    #[default]
    Token,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// Path prefix, matched at a segment boundary (`/auth` matches `/auth` and
    /// `/auth/me`, not `/authx`). A prefix ending in `/` matches anything below it.
    pub prefix: String,
    /// Name of the upstream cluster.
    pub upstream: String,
    /// A WebSocket route: only upgrade requests are accepted.
    pub websocket: bool,
    /// Replace the matched prefix with this before forwarding (`None`: forward as is).
    pub rewrite: Option<String>,
    pub auth: AuthPolicy,
    /// Name of a rate-limit policy (`None`: the `default` policy).
    pub rate_limit: Option<String>,
    /// Time allowed until the upstream's response headers arrive.
    pub timeout_ms: u64,
    pub body_limit: u64,
    /// Allowed methods (empty: all).
    pub methods: Vec<String>,
    /// Requests with a body must be `application/json`.
    pub json: bool,
    /// Sets these request headers before forwarding.
    pub request_headers_add: BTreeMap<String, String>,
    pub request_headers_remove: Vec<String>,
    pub response_headers_add: BTreeMap<String, String>,
    pub response_headers_remove: Vec<String>,
    /// `Cache-Control: no-store` on every response of this route.
    pub no_store: bool,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            prefix: "/".to_owned(),
            upstream: String::new(),
            websocket: false,
            rewrite: None,
            auth: AuthPolicy::Token,
            rate_limit: None,
            timeout_ms: 30_000,
            body_limit: kit::http::DEFAULT_BODY_LIMIT as u64,
            methods: Vec::new(),
            json: true,
            request_headers_add: BTreeMap::new(),
            request_headers_remove: Vec::new(),
            response_headers_add: BTreeMap::new(),
            response_headers_remove: Vec::new(),
            no_store: false,
        }
    }
}

fn route(prefix: &str, upstream: &str, auth: AuthPolicy) -> RouteConfig {
    RouteConfig {
        prefix: prefix.to_owned(),
        upstream: upstream.to_owned(),
        auth,
        no_store: upstream == "auth",
        ..RouteConfig::default()
    }
}

fn strict(mut r: RouteConfig) -> RouteConfig {
    r.rate_limit = Some("strict".to_owned());
    r
}

pub fn default_routes() -> Vec<RouteConfig> {
    use AuthPolicy::{Public, Token};
    let mut jwks = route("/auth/.well-known/jwks.json", "auth", Public);
    // Public key material: caching it is the point.
    jwks.no_store = false;
    jwks.methods = vec!["GET".to_owned(), "HEAD".to_owned()];
    let mut ws = route("/chat/ws", "chat", Token);
    ws.websocket = true;
    ws.methods = vec!["GET".to_owned()];
    vec![
        strict(route("/auth/register", "auth", Public)),
        strict(route("/auth/login", "auth", Public)),
        strict(route("/auth/password-reset/", "auth", Public)),
        // The link mailed to the new address may be opened on any device, logged in or not.
        strict(route("/auth/email/verify/confirm", "auth", Public)),
        // Checks the current password: as strict as a login.
        strict(route("/auth/email", "auth", Token)),
        // TOTP setup/enable/disable check a password or a code: as strict as a login
        // (`/auth/login` above already covers the second step, `/auth/login/mfa`).
        strict(route("/auth/mfa", "auth", Token)),
        route("/auth/refresh", "auth", Public),
        // Passwordless passkey login (start and finish): no token yet; each start stores a
        // challenge, so as strict as a login.
        strict(route("/auth/passkeys/login/", "auth", Public)),
        jwks,
        route("/auth", "auth", Token),
        route("/users", "users", Token),
        ws,
        route("/chat", "chat", Token),
        // The one-click opt-out of notification mails (RFC 8058): a mail client POSTs
        // it with no login; the HMAC token in the URL is the authority.
        strict(route("/notifications/unsubscribe", "notifications", Public)),
        route("/notifications", "notifications", Token),
        files_route(),
    ]
}

/// Largest upload the files service takes by default (API.md: 25 MiB), plus room for a
/// multipart envelope (the service allows 64 KiB of it); the body is streamed through,
/// never buffered, and the service refuses the 25 MiB + 1st byte itself.
pub const FILES_BODY_LIMIT: u64 = 25 * 1024 * 1024 + 64 * 1024;

/// `/files`: uploads are not JSON, may be 25 MiB, and the timeout (until the response
/// headers, which come after the whole body) must cover sending them: 120 s is 25 MiB
/// at about 1.7 Mbit/s.
fn files_route() -> RouteConfig {
    let mut r = route("/files", "files", AuthPolicy::Token);
    r.body_limit = FILES_BODY_LIMIT;
    r.json = false;
    r.timeout_ms = 120_000;
    r
}

/// GCRA: `rate` requests per `period_ms` sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RateLimitPolicy {
    pub rate: u32,
    pub period_ms: u64,
    pub burst: u32,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self {
            rate: 50,
            period_ms: 1_000,
            burst: 100,
        }
    }
}

/// Shortest active health-check period: a shorter one would load every instance's
/// `/readyz` (and its database probe) more than 10 times a second per gateway.
pub const MIN_HEALTH_CHECK_INTERVAL_MS: u64 = 100;
/// Shortest health-check timeout: a local `/readyz` answers in about 1 ms, but a probe
/// given less than 50 ms would eject healthy instances on a scheduling hiccup.
pub const MIN_HEALTH_CHECK_TIMEOUT_MS: u64 = 50;

impl Config {
    /// Refuses values below their minimum, naming the key (at load, instead of silently
    /// raising them when the gateway starts).
    pub fn validate(&self) -> anyhow::Result<()> {
        at_least(
            "gateway.health_check_interval_ms",
            self.health_check_interval_ms,
            MIN_HEALTH_CHECK_INTERVAL_MS,
        )?;
        at_least(
            "gateway.health_check_timeout_ms",
            self.health_check_timeout_ms,
            MIN_HEALTH_CHECK_TIMEOUT_MS,
        )?;
        // An instance is ejected after at least one failure, and may take at least one request.
        at_least(
            "gateway.eject_after_failures",
            u64::from(self.eject_after_failures),
            1,
        )?;
        at_least(
            "gateway.max_outstanding_per_instance",
            self.max_outstanding_per_instance as u64,
            1,
        )?;
        // The back-off grows from the base to the maximum, so the maximum is at least the base.
        at_least(
            "gateway.eject_max_ms",
            self.eject_max_ms,
            self.eject_base_ms,
        )?;
        for r in &self.routes {
            at_least(
                &format!("gateway.routes[{}].timeout_ms", r.prefix),
                r.timeout_ms,
                1,
            )?;
        }
        Ok(())
    }

    /// The configured policies over the built-in ones: configuring only `default` (as the
    /// environment does) keeps `strict`.
    pub fn effective_rate_limits(&self) -> BTreeMap<String, RateLimitPolicy> {
        let mut all = default_rate_limits();
        all.extend(self.rate_limits.iter().map(|(k, v)| (k.clone(), *v)));
        all
    }
}

fn at_least(key: &str, value: u64, min: u64) -> anyhow::Result<()> {
    if value < min {
        anyhow::bail!("invalid configuration: {key} = {value}, the minimum is {min}");
    }
    Ok(())
}

pub fn default_rate_limits() -> BTreeMap<String, RateLimitPolicy> {
    BTreeMap::from([
        (
            "strict".to_owned(),
            RateLimitPolicy {
                rate: 10,
                period_ms: 60_000,
                burst: 5,
            },
        ),
        (
            "default".to_owned(),
            RateLimitPolicy {
                rate: 50,
                period_ms: 1_000,
                burst: 100,
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Settings {
        gateway: Config,
    }

    #[test]
    fn a_config_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
[gateway]
listen = "0.0.0.0:9000"
admin_listen = "0.0.0.0:9100"
load_balancing = "round_robin"
cors_origins = ["https://app.example"]

[gateway.upstreams]
users = ["http://10.0.0.1:3003", "http://10.0.0.2:3003"]
search = ["http://10.0.0.9:4000"]

[gateway.rate_limits.default]
rate = 5
period_ms = 1000
burst = 10

[[gateway.routes]]
prefix = "/search"
upstream = "search"
auth = "public"
rewrite = "/"
timeout_ms = 500
methods = ["GET"]
request_headers_add = { "x-from" = "gateway" }
"#,
        )
        .unwrap();
        let s: Settings = kit::config::load(Some(&path), &[], &[]).unwrap();
        let g = s.gateway;
        assert_eq!(g.listen.port(), 9000);
        assert_eq!(g.admin_listen, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(
            Config::default().admin_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9080)))
        );
        assert_eq!(g.load_balancing, LoadBalancing::RoundRobin);
        assert_eq!(g.upstreams.users.len(), 2);
        assert_eq!(g.upstreams.auth, Upstreams::default().auth);
        assert_eq!(g.upstreams.other["search"], vec!["http://10.0.0.9:4000"]);
        assert_eq!(g.rate_limits["default"].burst, 10);
        let effective = g.effective_rate_limits();
        assert_eq!(effective["default"].rate, 5);
        assert_eq!(effective["strict"], default_rate_limits()["strict"]);
        assert_eq!(g.routes.len(), 1);
        let r = &g.routes[0];
        assert_eq!(
            (r.auth, r.timeout_ms, r.rewrite.as_deref()),
            (AuthPolicy::Public, 500, Some("/"))
        );
        assert_eq!(r.body_limit, 1024 * 1024);
        assert_eq!(r.request_headers_add["x-from"], "gateway");
    }

    #[test]
    fn values_below_their_minimum_are_refused_naming_the_key() {
        assert!(Config::default().validate().is_ok());
        let cases: [(&str, Config); 4] = [
            (
                "gateway.eject_after_failures",
                Config {
                    eject_after_failures: 0,
                    ..Config::default()
                },
            ),
            (
                "gateway.max_outstanding_per_instance",
                Config {
                    max_outstanding_per_instance: 0,
                    ..Config::default()
                },
            ),
            (
                "gateway.eject_max_ms",
                Config {
                    eject_base_ms: 5_000,
                    eject_max_ms: 1_000,
                    ..Config::default()
                },
            ),
            ("gateway.routes[/chat].timeout_ms", {
                let mut c = Config::default();
                for r in c.routes.iter_mut().filter(|r| r.prefix == "/chat") {
                    r.timeout_ms = 0;
                }
                c
            }),
        ];
        for (key, config) in cases {
            let err = config.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn default_routes_cover_the_public_api() {
        let routes = default_routes();
        let find = |p: &str| routes.iter().find(|r| r.prefix == p).unwrap();
        for p in [
            "/auth/register",
            "/auth/login",
            "/auth/password-reset/",
            "/auth/email/verify/confirm",
            "/notifications/unsubscribe",
        ] {
            assert_eq!(find(p).auth, AuthPolicy::Public);
            assert_eq!(find(p).rate_limit.as_deref(), Some("strict"));
        }
        assert_eq!(find("/auth/refresh").auth, AuthPolicy::Public);
        assert_eq!(find("/auth/passkeys/login/").auth, AuthPolicy::Public);
        assert_eq!(
            find("/auth/passkeys/login/").rate_limit.as_deref(),
            Some("strict")
        );
        assert_eq!(find("/auth/.well-known/jwks.json").auth, AuthPolicy::Public);
        assert_eq!(find("/auth/email").auth, AuthPolicy::Token);
        assert_eq!(find("/auth/email").rate_limit.as_deref(), Some("strict"));
        assert_eq!(find("/auth/mfa").rate_limit.as_deref(), Some("strict"));
        assert_eq!(find("/auth").auth, AuthPolicy::Token);
        assert!(find("/chat/ws").websocket);
        let files = find("/files");
        assert_eq!((files.upstream.as_str(), files.json), ("files", false));
        assert_eq!(files.body_limit, FILES_BODY_LIMIT);
        assert_eq!(find("/chat").body_limit, 1024 * 1024);
    }
}
