//! The JWT attack matrix (RFC 8725): every forged or altered token is a 401.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{spawn, token};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(forged_tokens_are_rejected, jwks_publishes_the_signing_key);

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

async fn forged_tokens_are_rejected(backend: Backend) {
    let Some(app) = spawn(backend, "forged_tokens").await else {
        return;
    };
    let t = app.register("mallory").await;
    let good = token(&t, "access_token");
    assert_eq!(app.get("/auth/me", Some(&good)).await.0, 200);

    let parts: Vec<&str> = good.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    for c in ["iss", "aud", "sub", "sid", "exp", "iat", "jti", "username"] {
        assert!(claims.get(c).is_some(), "claim {c}");
    }

    // The real private key, to sign tokens that are valid except for one thing.
    let key_file = std::fs::read_dir(app.dir.path().join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pem = std::fs::read_to_string(key_file).unwrap();
    let sk =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
            .unwrap();
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&sk).unwrap();
    let key = EncodingKey::from_ed_der(der.as_bytes());
    let sign =
        |header: Header, claims: &Value| jsonwebtoken::encode(&header, claims, &key).unwrap();
    let ed_header = |typ: &str, kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some(typ.to_owned());
        h.kid = Some(kid.to_owned());
        h
    };
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let jwks = app.get("/auth/.well-known/jwks.json", None).await.1;
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();

    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.typ = Some("at+jwt".into());
    hs256.kid = Some(kid.clone());
    let forged = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                parts[1]
            ),
        ),
        (
            "HS256 with the public key as secret",
            jsonwebtoken::encode(
                &hs256,
                &claims,
                &EncodingKey::from_secret(public_x.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "HS256 with the raw public key",
            jsonwebtoken::encode(
                &hs256,
                &claims,
                &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&public_x).unwrap()),
            )
            .unwrap(),
        ),
        (
            "wrong aud",
            sign(
                ed_header("at+jwt", &kid),
                &with("aud", json!("someone-else")),
            ),
        ),
        (
            "wrong iss",
            sign(
                ed_header("at+jwt", &kid),
                &with("iss", json!("https://evil.example")),
            ),
        ),
        ("wrong typ", sign(ed_header("JWT", &kid), &claims)),
        (
            "unknown kid",
            sign(ed_header("at+jwt", "0000000000000000"), &claims),
        ),
        (
            "expired",
            sign(
                ed_header("at+jwt", &kid),
                &with("exp", json!(kit::time::now_ms() / 1000 - 120)),
            ),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with("sub", json!(uuid::Uuid::now_v7()))),
                parts[2]
            ),
        ),
        ("tampered signature", {
            // Flip a middle character: the last one may carry only padding bits.
            let mut sig: Vec<char> = parts[2].chars().collect();
            sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                sig.into_iter().collect::<String>()
            )
        }),
        ("no signature", format!("{}.{}", parts[0], parts[1])),
    ];
    for (what, forged) in forged {
        let (status, body) = app.get("/auth/me", Some(&forged)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            ["invalid_token", "token_expired"].contains(&body["code"].as_str().unwrap()),
            "{what}: {body}"
        );
    }
    app.stop().await;
}

async fn jwks_publishes_the_signing_key(backend: Backend) {
    let Some(app) = spawn(backend, "jwks").await else {
        return;
    };
    let res = app
        .http
        .get(format!("{}/auth/.well-known/jwks.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("public")
    );
    let jwks: Value = res.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    // A token verifies with a verifier that only knows the published JWKS.
    let t = app.register("oscar").await;
    let verifier = token::Verifier::from_url(format!("{}/auth/.well-known/jwks.json", app.url));
    let claims = verifier.verify(&token(&t, "access_token")).await.unwrap();
    assert_eq!(claims.username, "oscar");
    verifier.revoke_session(claims.sid, claims.exp);
    assert_eq!(
        verifier.verify(&token(&t, "access_token")).await,
        Err(token::TokenError::Revoked)
    );
    app.stop().await;
}
