//! Edge authentication: access tokens are verified with the common verifier (JWKS,
//! EdDSA only) before a request reaches a service, and verified tokens are cached —
//! keyed by a SHA-256 of the token, bounded, until their `exp` — so the signature check
//! runs once per token, not once per request. `session.revoked` events revoke the
//! session in the verifier and drop its cached tokens — in **every** gateway instance:
//! they arrive through a broadcast subscription (each instance reads every event, and
//! on start the events of the last access-token lifetime), not a consumer group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use token::{TokenError, Verifier};

#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub user_id: uuid::Uuid,
    pub session_id: uuid::Uuid,
    exp: i64,
}

const SHARDS: usize = 32;

pub struct EdgeAuth {
    pub verifier: Arc<Verifier>,
    shards: Vec<Mutex<HashMap<[u8; 32], Identity>>>,
    per_shard: usize,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl EdgeAuth {
    pub fn new(verifier: Arc<Verifier>, capacity: usize) -> Self {
        Self {
            verifier,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(16),
            hits: metrics::counter!("gateway_token_cache_hits_total"),
            misses: metrics::counter!("gateway_token_cache_misses_total"),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Identity>> {
        &self.shards[digest[0] as usize % SHARDS]
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = kit::time::now_ms() / 1000;
        let cached = self
            .shard(&digest)
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).copied());
        if let Some(id) = cached
            && id.exp > now
        {
            self.hits.increment(1);
            return Ok(id);
        }
        self.misses.increment(1);
        let claims = self.verifier.verify(token).await?;
        let id = Identity {
            user_id: claims.sub,
            session_id: claims.sid,
            exp: claims.exp,
        };
        if let Ok(mut map) = self.shard(&digest).lock() {
            if map.len() >= self.per_shard {
                map.retain(|_, v| v.exp > now);
                if map.len() >= self.per_shard {
                    // Still full of live tokens: forget an arbitrary one.
                    if let Some(k) = map.keys().next().copied() {
                        map.remove(&k);
                    }
                }
            }
            map.insert(digest, id);
        }
        // A revocation may have landed between verify() and the insert.
        if self.verifier.is_revoked(id.session_id) {
            self.forget_session(id.session_id);
            return Err(TokenError::Revoked);
        }
        Ok(id)
    }

    pub fn forget_session(&self, sid: uuid::Uuid) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, v| v.session_id != sid);
            }
        }
    }

    pub fn revoke(&self, sid: uuid::Uuid, until: i64) {
        self.verifier.revoke_session(sid, until);
        self.forget_session(sid);
    }
}

#[derive(serde::Deserialize)]
struct SessionRevoked {
    session_id: uuid::Uuid,
    until: i64,
}

/// Applies the auth service's `session.revoked` events until `shutdown`, in this
/// instance whatever other instances do (a broadcast subscription). Idempotent:
/// revoking a session twice changes nothing.
pub fn subscribe_revocations(
    auth: Arc<EdgeAuth>,
    bus: &bus::Bus,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let handler = bus::handler(move |event: bus::Envelope| {
        let auth = auth.clone();
        async move {
            if event.kind == "session.revoked" {
                match event.payload::<SessionRevoked>() {
                    Ok(p) => auth.revoke(p.session_id, p.until),
                    Err(e) => {
                        tracing::warn!(event = %event.id, error = %e, "undecodable session.revoked skipped")
                    }
                }
            }
            Ok(())
        }
    });
    bus.subscribe_broadcast(bus::Broadcast::new("gateway", &["auth"]), handler, shutdown)
}
