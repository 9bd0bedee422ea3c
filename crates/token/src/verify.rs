//! Token verification for every service and the gateway.
//!
//! Accepts only EdDSA with `typ: at+jwt`, the expected `iss`/`aud`, an unexpired
//! `exp` (30 s leeway) and a `kid` from the JWKS. The JWKS is fetched from the auth
//! service and cached; an unknown `kid` triggers a refetch at most every few seconds.
//! Sessions reported revoked (`session.revoked` events) are rejected until their
//! tokens would have expired anyway. The revocation list is one per **process**, shared by
//! every verifier in it: in one-process mode the auth service's `logout` enters the session
//! before its 204 ([`revoke_in_process`]), so no service of that process accepts the token
//! afterwards, without waiting for the event. A (re)started process loads the sessions
//! still to refuse from the auth service ([`Verifier::spawn_revocation_sync`]), so a
//! restart forgets nothing.
//!
//! Verified tokens are cached (keyed by their SHA-256, bounded, until `exp`): a client sends
//! the same token on every request for 15 minutes, and the Ed25519 check was the largest
//! single cost of an authenticated request in the gateway benchmark. Expiry and revocation
//! are still checked on every hit, and the cache is emptied whenever the keys change.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{AUDIENCE, Claims, ISSUER, TOKEN_TYPE};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("session revoked")]
    Revoked,
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

/// Minimum time between JWKS refetches triggered by unknown `kid`s.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
const LEEWAY_SECS: u64 = 30;
/// Verified tokens kept by default (see [`Verifier::with_cache_capacity`]).
const CACHE_CAPACITY: usize = 50_000;
/// The cache is sharded so concurrent requests rarely wait on one lock.
const CACHE_SHARDS: usize = 32;

type CacheShard = Mutex<HashMap<[u8; 32], Arc<Claims>>>;

/// Verified tokens by the SHA-256 of the token, bounded per shard: when a shard is full,
/// expired entries go first, then an arbitrary live one (whose token is simply verified
/// again on its next use).
struct TokenCache {
    shards: Vec<CacheShard>,
    per_shard: usize,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_shard: (capacity / CACHE_SHARDS).max(16),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> &CacheShard {
        &self.shards[digest[0] as usize % CACHE_SHARDS]
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Arc<Claims>> {
        self.shard(digest)
            .lock()
            .ok()
            .and_then(|m| m.get(digest).cloned())
    }

    fn insert(&self, digest: [u8; 32], claims: Arc<Claims>, now: i64) {
        if let Ok(mut map) = self.shard(&digest).lock() {
            if map.len() >= self.per_shard {
                map.retain(|_, c| c.exp + LEEWAY_SECS as i64 >= now);
                if map.len() >= self.per_shard
                    && let Some(k) = map.keys().next().copied()
                {
                    map.remove(&k);
                }
            }
            map.insert(digest, claims);
        }
    }

    fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.clear();
            }
        }
    }
}

enum Source {
    Url { url: String, http: reqwest::Client },
    Static,
}

pub struct Verifier {
    source: Source,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    verified: TokenCache,
    validation: Validation,
}

/// Revoked sessions of this process: session id → unix seconds until which its tokens
/// are refused (their last `exp`). Shared by every [`Verifier`] of the process.
static REVOKED: LazyLock<Mutex<HashMap<uuid::Uuid, i64>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Refuses tokens of session `sid` until `until` (unix seconds) in every verifier of this
/// process, at once. The auth service calls it when it ends a session, before answering.
pub fn revoke_in_process(sid: uuid::Uuid, until: i64) {
    if let Ok(mut revoked) = REVOKED.lock() {
        let now = kit::time::now_ms() / 1000;
        revoked.retain(|_, exp| *exp + LEEWAY_SECS as i64 >= now);
        revoked.insert(sid, until);
    }
}

fn is_revoked_in_process(sid: uuid::Uuid) -> bool {
    REVOKED
        .lock()
        .map(|r| r.contains_key(&sid))
        .unwrap_or(false)
}

/// Path of the auth service's internal list of sessions whose tokens must still be
/// refused (never routed by the gateway: only `/auth/...` is).
pub const REVOCATIONS_PATH: &str = "/internal/revocations";

#[derive(Deserialize)]
struct RevocationPage {
    items: Vec<Revocation>,
}

#[derive(Deserialize)]
struct Revocation {
    session_id: uuid::Uuid,
    until: i64,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: String,
}

impl Verifier {
    fn with_source(source: Source, cache_capacity: usize) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // `nbf`, when a token carries one, must have passed (RFC 7519 §4.1.5).
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            source,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            verified: TokenCache::new(cache_capacity),
            validation,
        }
    }

    /// A verifier that fetches its keys from `jwks_url`.
    pub fn from_url(jwks_url: impl Into<String>) -> Arc<Self> {
        Self::from_url_with_cache(jwks_url, CACHE_CAPACITY)
    }

    /// [`Verifier::from_url`], keeping up to `cache_capacity` verified tokens.
    pub fn from_url_with_cache(jwks_url: impl Into<String>, cache_capacity: usize) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Arc::new(Self::with_source(
            Source::Url {
                url: jwks_url.into(),
                http,
            },
            cache_capacity,
        ))
    }

    /// A verifier with a fixed JWKS (the auth service verifies with its own keys).
    pub fn from_jwks(jwks: &serde_json::Value) -> anyhow::Result<Arc<Self>> {
        let v = Self::with_source(Source::Static, CACHE_CAPACITY);
        v.install(serde_json::from_value(jwks.clone())?);
        Ok(Arc::new(v))
    }

    /// Replaces the keys with those of `jwks` (as a refetch does).
    pub fn replace_keys(&self, jwks: &serde_json::Value) -> anyhow::Result<()> {
        self.install(serde_json::from_value(jwks.clone())?);
        Ok(())
    }

    fn install(&self, jwks: Jwks) {
        let mut map = HashMap::new();
        for k in jwks.keys {
            if k.kty != "OKP" || k.crv != "Ed25519" {
                continue;
            }
            let (Some(kid), Ok(key)) = (k.kid, DecodingKey::from_ed_components(&k.x)) else {
                continue;
            };
            map.insert(kid, key);
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = map;
        }
        // A removed key must stop verifying at once, cached tokens included.
        self.verified.clear();
    }

    async fn refetch(&self) -> Result<(), TokenError> {
        let Source::Url { url, http } = &self.source else {
            return Ok(());
        };
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let fetched = async {
            let res = http.get(url).send().await?.error_for_status()?;
            res.json::<Jwks>().await
        }
        .await;
        match fetched {
            Ok(jwks) => {
                self.install(jwks);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the JWKS");
                Err(TokenError::KeysUnavailable)
            }
        }
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().ok().and_then(|k| k.get(kid).cloned())
    }

    /// Verifies an access token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_cached(token).await.map(|(claims, _)| claims)
    }

    /// [`Verifier::verify`], also telling whether the answer came from the cache (for the
    /// gateway's hit-ratio metrics).
    pub async fn verify_cached(&self, token: &str) -> Result<(Claims, bool), TokenError> {
        self.verify_cached_shared(token)
            .await
            .map(|(claims, hit)| (Claims::clone(&claims), hit))
    }

    /// [`Verifier::verify_cached`] without copying the claims out of the cache: a hit
    /// costs no allocation (the copy of `iss`, `aud` and `username` was three per
    /// request in the gateway).
    pub async fn verify_cached_shared(
        &self,
        token: &str,
    ) -> Result<(Arc<Claims>, bool), TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = kit::time::now_ms() / 1000;
        if let Some(claims) = self.verified.get(&digest)
            && claims.exp + LEEWAY_SECS as i64 >= now
        {
            if self.is_revoked(claims.sid) {
                return Err(TokenError::Revoked);
            }
            return Ok((claims, true));
        }
        let claims = Arc::new(self.verify_signed(token).await?);
        self.verified.insert(digest, claims.clone(), now);
        Ok((claims, false))
    }

    /// The full check: header, key, signature, claims, revocation.
    async fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                self.refetch().await?;
                self.key(&kid).ok_or(TokenError::Invalid)?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            }
        })?;
        if self.is_revoked(data.claims.sid) {
            return Err(TokenError::Revoked);
        }
        Ok(data.claims)
    }

    /// Rejects tokens of session `sid` until `until` (unix seconds: its tokens' last `exp`),
    /// in every verifier of this process (see [`revoke_in_process`]).
    pub fn revoke_session(&self, sid: uuid::Uuid, until: i64) {
        revoke_in_process(sid, until);
    }

    pub fn is_revoked(&self, sid: uuid::Uuid) -> bool {
        is_revoked_in_process(sid)
    }

    /// Loads the sessions ended within the last day whose tokens may still be live from
    /// the auth service at `auth_url`, retrying every second until it answers (a process
    /// started before auth learns them as soon as auth is up; meanwhile `session.revoked`
    /// events keep arriving). Without this a restarted process would accept a logged-out
    /// token until it expired: the in-process bus keeps nothing across restarts.
    ///
    /// Returns the gate the service's readiness waits on (see [`kit::server::gated`]): no
    /// traffic is routed to a restarted service that would still accept an ended session.
    pub fn spawn_revocation_sync(auth_url: &str) -> kit::server::StartupGate {
        let url = format!("{}{REVOCATIONS_PATH}", auth_url.trim_end_matches('/'));
        let gate = kit::server::StartupGate::new();
        let opens = gate.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            let mut attempt = 0u32;
            loop {
                match fetch_revocations(&http, &url).await {
                    Ok(n) => {
                        tracing::info!(sessions = n, "revoked sessions loaded from auth");
                        opens.open();
                        return;
                    }
                    Err(e) => {
                        attempt += 1;
                        // Quiet while the process starts beside auth; loud if it stays down.
                        if attempt == 5 || attempt.is_multiple_of(60) {
                            tracing::warn!(error = %e, attempt, "cannot load revoked sessions from auth; retrying");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        gate
    }
}

async fn fetch_revocations(http: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    let since_ms = kit::time::now_ms() - 24 * 3600 * 1000;
    let res = http
        .get(format!("{url}?since_ms={since_ms}"))
        .send()
        .await?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        // An auth service older than this route (during a rolling upgrade): nothing to
        // load; `session.revoked` events still arrive.
        tracing::warn!("auth serves no revocation list; relying on session.revoked events");
        return Ok(0);
    }
    let page: RevocationPage = res.error_for_status()?.json().await?;
    let now = kit::time::now_ms() / 1000;
    let mut n = 0;
    for r in page.items {
        // `until` is unix seconds (as in `session.revoked`); tolerate milliseconds.
        let until = if r.until > 100_000_000_000 {
            r.until / 1000
        } else {
            r.until
        };
        if until + LEEWAY_SECS as i64 >= now {
            revoke_in_process(r.session_id, until);
            n += 1;
        }
    }
    Ok(n)
}
