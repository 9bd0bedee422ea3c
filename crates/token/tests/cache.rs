//! The verified-token cache never outlives what it caches: a revoked session's token is
//! refused after it was cached, and a tampered copy of a cached token is checked in full.
#![allow(clippy::unwrap_used)]

use token::{KeySet, TokenError, Verifier};

fn claims(sid: uuid::Uuid, exp_in: i64) -> token::Claims {
    let now = kit::time::now_ms() / 1000;
    token::Claims {
        iss: token::ISSUER.into(),
        aud: token::AUDIENCE.into(),
        sub: uuid::Uuid::now_v7(),
        sid,
        exp: now + exp_in,
        iat: now,
        jti: uuid::Uuid::now_v7(),
        username: "u".into(),
    }
}

#[tokio::test]
async fn revocation_applies_to_cached_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeySet::load_or_generate(dir.path()).unwrap();
    let verifier = Verifier::from_jwks(&keys.jwks()).unwrap();
    let sid = uuid::Uuid::now_v7();
    let token = keys.sign(&claims(sid, 600)).unwrap();
    // Verified twice: the second answer comes from the cache.
    assert_eq!(verifier.verify(&token).await.unwrap().sid, sid);
    assert_eq!(verifier.verify(&token).await.unwrap().sid, sid);
    verifier.revoke_session(sid, kit::time::now_ms() / 1000 + 600);
    assert_eq!(verifier.verify(&token).await, Err(TokenError::Revoked));
}

#[tokio::test]
async fn a_tampered_copy_of_a_cached_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeySet::load_or_generate(dir.path()).unwrap();
    let verifier = Verifier::from_jwks(&keys.jwks()).unwrap();
    let token = keys.sign(&claims(uuid::Uuid::now_v7(), 600)).unwrap();
    assert!(verifier.verify(&token).await.is_ok());
    // Change one character in the middle of the signature.
    let mut bytes = token.into_bytes();
    let i = bytes.len() - 20;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(verifier.verify(&tampered).await, Err(TokenError::Invalid));
}

#[tokio::test]
async fn keys_changing_empties_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeySet::load_or_generate(dir.path()).unwrap();
    let token = keys.sign(&claims(uuid::Uuid::now_v7(), 600)).unwrap();
    let verifier = Verifier::from_jwks(&keys.jwks()).unwrap();
    assert!(verifier.verify(&token).await.is_ok());
    // A different key set (the signing key gone) must refuse the cached token.
    let other_dir = tempfile::tempdir().unwrap();
    let other = KeySet::load_or_generate(other_dir.path()).unwrap();
    verifier.replace_keys(&other.jwks()).unwrap();
    assert_eq!(verifier.verify(&token).await, Err(TokenError::Invalid));
}
