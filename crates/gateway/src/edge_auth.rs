//! Edge authentication: access tokens are verified with the common verifier (JWKS,
//! EdDSA only) before a request reaches a service. The verifier caches verified tokens
//! (keyed by a SHA-256 of the token, bounded, until their `exp`, revocation checked on
//! every hit), so the signature check runs once per token, not once per request; this
//! module counts the cache's hits and misses. `session.revoked` events revoke the session
//! in the verifier — in **every** gateway instance: they arrive through a broadcast
//! subscription (each instance reads every event, and on start the events of the last
//! access-token lifetime), not a consumer group.

use std::sync::Arc;

use token::{TokenError, Verifier};

#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub user_id: uuid::Uuid,
}

pub struct EdgeAuth {
    pub verifier: Arc<Verifier>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl EdgeAuth {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self {
            verifier,
            hits: metrics::counter!("gateway_token_cache_hits_total"),
            misses: metrics::counter!("gateway_token_cache_misses_total"),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let result = self.verifier.verify_cached_shared(token).await;
        match &result {
            Ok((_, true)) => self.hits.increment(1),
            _ => self.misses.increment(1),
        }
        let (claims, _) = result?;
        Ok(Identity {
            user_id: claims.sub,
        })
    }

    pub fn revoke(&self, sid: uuid::Uuid, until: i64) {
        self.verifier.revoke_session(sid, until);
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
