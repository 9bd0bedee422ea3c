//! Claims beyond the signature: `nbf`, and revocations shared by every verifier of a
//! process and loaded from the auth service when a process (re)starts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use token::{KeySet, TokenError, Verifier};

fn claims(sid: uuid::Uuid) -> serde_json::Value {
    let now = kit::time::now_ms() / 1000;
    serde_json::json!({
        "iss": token::ISSUER, "aud": token::AUDIENCE, "sub": uuid::Uuid::now_v7(),
        "sid": sid, "exp": now + 600, "iat": now, "jti": uuid::Uuid::now_v7(), "username": "u",
    })
}

fn keys() -> (tempfile::TempDir, KeySet) {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeySet::load_or_generate(dir.path()).unwrap();
    (dir, keys)
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf() {
    let (_dir, keys) = keys();
    let verifier = Verifier::from_jwks(&keys.jwks()).unwrap();
    let now = kit::time::now_ms() / 1000;
    let mut early = claims(uuid::Uuid::now_v7());
    early["nbf"] = (now + 3600).into();
    let token = keys.sign(&early).unwrap();
    assert_eq!(verifier.verify(&token).await, Err(TokenError::Invalid));

    let mut valid = claims(uuid::Uuid::now_v7());
    valid["nbf"] = (now - 10).into();
    assert!(verifier.verify(&keys.sign(&valid).unwrap()).await.is_ok());
}

#[tokio::test]
async fn a_revocation_reaches_every_verifier_of_the_process_at_once() {
    let (_dir, keys) = keys();
    let (a, b) = (
        Verifier::from_jwks(&keys.jwks()).unwrap(),
        Verifier::from_jwks(&keys.jwks()).unwrap(),
    );
    let sid = uuid::Uuid::now_v7();
    let token = keys.sign(&claims(sid)).unwrap();
    assert!(b.verify(&token).await.is_ok());
    a.revoke_session(sid, kit::time::now_ms() / 1000 + 600);
    assert_eq!(b.verify(&token).await, Err(TokenError::Revoked));
}

/// A process that starts before the auth service answers keeps asking, and refuses the
/// sessions auth lists once it does (what a restarted service needs: its bus forgot).
#[tokio::test]
async fn revocations_are_loaded_from_auth_once_it_answers() {
    let (_dir, keys) = keys();
    let verifier = Verifier::from_jwks(&keys.jwks()).unwrap();
    let ended = uuid::Uuid::now_v7();
    let long_ago = uuid::Uuid::now_v7();
    let token = keys.sign(&claims(ended)).unwrap();
    let old_token = keys.sign(&claims(long_ago)).unwrap();

    // Reserve a port, then serve it only after the sync started.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let loaded = Verifier::spawn_revocation_sync(&format!("http://{addr}"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(verifier.verify(&token).await.is_ok(), "nothing loaded yet");
    assert!(
        !loaded.is_open(),
        "readiness waits while auth does not answer"
    );

    let now = kit::time::now_ms() / 1000;
    let body = serde_json::json!({ "items": [
        { "session_id": ended, "until": now + 600 },
        // Its tokens expired long ago: nothing to refuse, not kept.
        { "session_id": long_ago, "until": now - 3600 },
    ]});
    let app = axum::Router::new().route(
        token::verify::REVOCATIONS_PATH,
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::time::timeout(Duration::from_secs(5), async {
        while !loaded.is_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("loaded once auth answers");
    assert_eq!(verifier.verify(&token).await, Err(TokenError::Revoked));
    assert!(verifier.verify(&old_token).await.is_ok());
}
