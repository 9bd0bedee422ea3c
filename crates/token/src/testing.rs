//! For tests of services other than auth: a real JWKS endpoint on a random port,
//! backed by a real [`KeySet`], and tokens issued by it exactly as the auth service
//! issues them. Full cross-service flows are tested against the real auth service in
//! the `intellicolab` crate's system tests.

use std::sync::Arc;

use axum::routing::get;

use crate::{AUDIENCE, Claims, ISSUER, KeySet};

pub struct TestIssuer {
    pub keys: Arc<KeySet>,
    /// Base URL to use as `auth_url` (serves `/auth/.well-known/jwks.json`).
    pub auth_url: String,
    _dir: tempfile::TempDir,
    shutdown: tokio_util::sync::CancellationToken,
}

impl TestIssuer {
    #[allow(clippy::unwrap_used)]
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeySet::load_or_generate(dir.path()).unwrap());
        let jwks = keys.jwks();
        let app = axum::Router::new()
            .route(
                "/auth/.well-known/jwks.json",
                get(move || {
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            )
            // No session was ever ended by this issuer.
            .route(
                crate::verify::REVOCATIONS_PATH,
                get(|| async { axum::Json(serde_json::json!({ "items": [] })) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Self {
            keys,
            auth_url: format!("http://{addr}"),
            _dir: dir,
            shutdown,
        }
    }

    /// An access token for `user_id`, valid for 15 minutes, with a fresh session id.
    #[allow(clippy::unwrap_used)]
    pub fn token(&self, user_id: uuid::Uuid, username: &str) -> String {
        self.token_for_session(user_id, username, uuid::Uuid::now_v7())
    }

    #[allow(clippy::unwrap_used)]
    pub fn token_for_session(
        &self,
        user_id: uuid::Uuid,
        username: &str,
        sid: uuid::Uuid,
    ) -> String {
        let now = kit::time::now_ms() / 1000;
        self.keys
            .sign(&Claims {
                iss: ISSUER.to_owned(),
                aud: AUDIENCE.to_owned(),
                sub: user_id,
                sid,
                exp: now + 900,
                iat: now,
                jti: uuid::Uuid::now_v7(),
                username: username.to_owned(),
            })
            .unwrap()
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
