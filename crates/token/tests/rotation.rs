//! Key rotation: the newest key signs, older keys keep verifying; unknown kids are
//! refetched from the JWKS endpoint.
#![allow(clippy::unwrap_used)]

use token::testing::TestIssuer;
use token::{KeySet, TokenError, Verifier};

#[tokio::test]
async fn rotated_keys_keep_verifying_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let old = KeySet::load_or_generate(dir.path()).unwrap();
    let old_kid = old.signing_kid().to_owned();
    let claims = |sid| token::Claims {
        iss: token::ISSUER.into(),
        aud: token::AUDIENCE.into(),
        sub: uuid::Uuid::now_v7(),
        sid,
        exp: kit::time::now_ms() / 1000 + 600,
        iat: kit::time::now_ms() / 1000,
        jti: uuid::Uuid::now_v7(),
        username: "u".into(),
    };
    let old_token = old.sign(&claims(uuid::Uuid::now_v7())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    KeySet::generate_into(dir.path()).unwrap();
    let rotated = KeySet::load_or_generate(dir.path()).unwrap();
    assert_ne!(rotated.signing_kid(), old_kid, "the newest key signs");
    assert_eq!(
        rotated.jwks()["keys"].as_array().unwrap().len(),
        2,
        "both keys are published"
    );
    let verifier = Verifier::from_jwks(&rotated.jwks()).unwrap();
    let new_token = rotated.sign(&claims(uuid::Uuid::now_v7())).unwrap();
    assert!(verifier.verify(&old_token).await.is_ok());
    assert!(verifier.verify(&new_token).await.is_ok());
    // Once the old key file is gone, its tokens stop verifying.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains(&old_kid) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let pruned = KeySet::load_or_generate(dir.path()).unwrap();
    let verifier = Verifier::from_jwks(&pruned.jwks()).unwrap();
    assert_eq!(verifier.verify(&old_token).await, Err(TokenError::Invalid));
    assert!(verifier.verify(&new_token).await.is_ok());
}

#[tokio::test]
async fn url_verifier_fetches_keys_and_reports_an_unreachable_jwks() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::from_url(format!("{}/auth/.well-known/jwks.json", issuer.auth_url));
    let user = uuid::Uuid::now_v7();
    let claims = verifier.verify(&issuer.token(user, "ann")).await.unwrap();
    assert_eq!(claims.sub, user);
    let down = Verifier::from_url("http://127.0.0.1:9/auth/.well-known/jwks.json");
    assert_eq!(
        down.verify(&issuer.token(user, "ann")).await,
        Err(TokenError::KeysUnavailable)
    );
}
