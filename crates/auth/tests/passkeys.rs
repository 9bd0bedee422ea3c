//! Passkeys (API.md v1.1) through the HTTP API on SQLite and PostgreSQL, with a software
//! authenticator (P-256, below) that builds real attestation and assertion objects: the
//! full ceremony, wrong origin, replayed challenge, a cloned authenticator (counter going
//! backwards), and another user's passkey.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{assert_problem, spawn, token};
use kit::db::Backend;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The service's default relying party (auth::Config).
const ORIGIN: &str = "http://localhost:8080";

kit::backend_tests!(
    full_ceremony_end_to_end,
    wrong_origin_is_refused,
    a_challenge_is_single_use,
    a_cloned_authenticator_is_refused,
    only_the_owner_deletes_a_passkey,
    a_deleted_account_passkey_no_longer_logs_in,
    an_expired_challenge_is_refused,
);

async fn a_deleted_account_passkey_no_longer_logs_in(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_account_deleted").await else {
        return;
    };
    let a = app.register("wren").await;
    let access = token(&a, "access_token");
    let mut key = SoftAuthenticator::new();
    let (status, _) = enrol(&app, &mut key, &access, Attestation::None, None).await;
    assert_eq!(status, 201);
    let req = app
        .http
        .delete(format!("{}/auth/me", app.url))
        .bearer_auth(&access)
        .json(&json!({"current_password": common::PASSWORD}));
    let (status, body) = common::read(req.send().await.unwrap()).await;
    assert_eq!(status, 204, "{body}");
    let (status, problem) = log_in(&app, &mut key, ORIGIN).await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    app.stop().await;
}

async fn full_ceremony_end_to_end(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_ceremony").await else {
        return;
    };
    let a = app.register("pia").await;
    let access = token(&a, "access_token");
    let (status, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access))
        .await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(
        options["user"]["id"],
        B64.encode(
            uuid::Uuid::parse_str(a["user"]["id"].as_str().unwrap())
                .unwrap()
                .as_bytes()
        )
    );
    assert_eq!(options["user"]["name"], "pia");
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "preferred"
    );
    assert_eq!(options["attestation"], "none");
    assert_eq!(options["excludeCredentials"], json!([]));
    assert_eq!(options["pubKeyCredParams"][0]["alg"], -7);

    let mut key = SoftAuthenticator::new();
    let (status, created) = app
        .post(
            "/auth/passkeys/register/finish",
            key.create(&options, ORIGIN, Attestation::None, Some("Laptop")),
            Some(&access),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Laptop");
    let id = created["id"].as_str().unwrap().to_owned();

    // A second authenticator with packed self-attestation (its signature is checked).
    let (_, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access))
        .await;
    assert_eq!(
        options["excludeCredentials"],
        json!([{"type": "public-key", "id": B64.encode(&key.credential_id)}])
    );
    let mut phone = SoftAuthenticator::new();
    let (status, second) = app
        .post(
            "/auth/passkeys/register/finish",
            phone.create(&options, ORIGIN, Attestation::PackedSelf, None),
            Some(&access),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["name"], "Passkey");
    // A self-attestation signed by some other key is refused.
    let (_, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access))
        .await;
    let mut body =
        SoftAuthenticator::new().create(&options, ORIGIN, Attestation::PackedForged, None);
    let (status, problem) = app
        .post("/auth/passkeys/register/finish", body.take(), Some(&access))
        .await;
    assert_problem(status, &problem, 400, "invalid_passkey");
    // The same authenticator again: 409.
    let (status, problem) = enrol(&app, &mut key, &access, Attestation::None, None).await;
    assert_problem(status, &problem, 409, "passkey_exists");

    let (status, list) = app.get("/auth/passkeys", Some(&access)).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["last_used_at"], Value::Null);

    // Passwordless login: no token, discoverable credential.
    for round in 1..=2 {
        let (status, options) = app
            .post("/auth/passkeys/login/start", json!({}), None)
            .await;
        assert_eq!(status, 200, "{options}");
        assert_eq!(options["rpId"], "localhost");
        assert_eq!(options["allowCredentials"], json!([]));
        assert_eq!(options["userVerification"], "preferred");
        let (status, tokens) = app
            .post(
                "/auth/passkeys/login/finish",
                key.get(&options, ORIGIN),
                None,
            )
            .await;
        assert_eq!(status, 200, "round {round}: {tokens}");
        assert_eq!(tokens["user"]["username"], "pia");
        assert!(tokens.get("mfa_required").is_none(), "{tokens}");
        let (status, me) = app
            .get("/auth/me", Some(&token(&tokens, "access_token")))
            .await;
        assert_eq!((status, me["username"].as_str()), (200, Some("pia")));
    }
    let (_, list) = app.get("/auth/passkeys", Some(&access)).await;
    assert!(list["items"][0]["last_used_at"].is_string(), "{list}");
    assert_eq!(list["items"][1]["last_used_at"], Value::Null, "{list}");

    // A signature that does not verify.
    let (_, options) = app
        .post("/auth/passkeys/login/start", json!({}), None)
        .await;
    let mut assertion = key.get(&options, ORIGIN);
    let mut sig = B64
        .decode(assertion["response"]["signature"].as_str().unwrap())
        .unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    assertion["response"]["signature"] = json!(B64.encode(sig));
    let (status, problem) = app
        .post("/auth/passkeys/login/finish", assertion, None)
        .await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    // An authenticator the service never saw.
    let (_, options) = app
        .post("/auth/passkeys/login/start", json!({}), None)
        .await;
    let mut stranger = SoftAuthenticator::new();
    stranger.user_handle = key.user_handle.clone();
    let (status, problem) = app
        .post(
            "/auth/passkeys/login/finish",
            stranger.get(&options, ORIGIN),
            None,
        )
        .await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    app.stop().await;
}

async fn wrong_origin_is_refused(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_origin").await else {
        return;
    };
    let a = app.register("quinn").await;
    let access = token(&a, "access_token");
    let mut key = SoftAuthenticator::new();
    for origin in [
        "https://evil.example",
        "http://localhost:8081",
        "http://127.0.0.1:8080",
    ] {
        let (_, options) = app
            .post("/auth/passkeys/register/start", json!({}), Some(&access))
            .await;
        let (status, problem) = app
            .post(
                "/auth/passkeys/register/finish",
                key.create(&options, origin, Attestation::None, None),
                Some(&access),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_passkey")),
            "{origin}: {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("origin"),
            "{problem}"
        );
    }
    // A credential for another relying party (rp id hash) is refused too.
    let (_, mut options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access))
        .await;
    options["rp"]["id"] = json!("evil.example");
    let (status, problem) = app
        .post(
            "/auth/passkeys/register/finish",
            key.create(&options, ORIGIN, Attestation::None, None),
            Some(&access),
        )
        .await;
    assert_problem(status, &problem, 400, "invalid_passkey");
    let (_, list) = app.get("/auth/passkeys", Some(&access)).await;
    assert_eq!(list["items"], json!([]));

    let (status, _) = enrol(&app, &mut key, &access, Attestation::None, None).await;
    assert_eq!(status, 201);
    let (status, problem) = log_in(&app, &mut key, "https://evil.example").await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    app.stop().await;
}

async fn a_challenge_is_single_use(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_challenge").await else {
        return;
    };
    let a = app.register("rosa").await;
    let b = app.register("sven").await;
    let (access_a, access_b) = (token(&a, "access_token"), token(&b, "access_token"));
    let mut key = SoftAuthenticator::new();
    // Rosa's registration challenge cannot serve Sven (and is then used up).
    let (_, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access_a))
        .await;
    let (status, problem) = app
        .post(
            "/auth/passkeys/register/finish",
            key.create(&options, ORIGIN, Attestation::None, None),
            Some(&access_b),
        )
        .await;
    assert_problem(status, &problem, 400, "invalid_passkey");
    let (status, _) = app
        .post(
            "/auth/passkeys/register/finish",
            key.create(&options, ORIGIN, Attestation::None, None),
            Some(&access_a),
        )
        .await;
    assert_eq!(status, 400, "a challenge presented once is gone");

    let (_, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access_a))
        .await;
    let body = key.create(&options, ORIGIN, Attestation::None, None);
    let (status, _) = app
        .post(
            "/auth/passkeys/register/finish",
            body.clone(),
            Some(&access_a),
        )
        .await;
    assert_eq!(status, 201);
    let (status, problem) = app
        .post("/auth/passkeys/register/finish", body, Some(&access_a))
        .await;
    assert_problem(status, &problem, 400, "invalid_passkey");

    // A login assertion replayed: its challenge is gone.
    let (_, options) = app
        .post("/auth/passkeys/login/start", json!({}), None)
        .await;
    let assertion = key.get(&options, ORIGIN);
    let (status, _) = app
        .post("/auth/passkeys/login/finish", assertion.clone(), None)
        .await;
    assert_eq!(status, 200);
    let (status, problem) = app
        .post("/auth/passkeys/login/finish", assertion, None)
        .await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    // Even signed anew with a fresh counter, an old challenge is refused; so is one the
    // server never issued, and a registration challenge used to log in.
    let (status, _) = app
        .post(
            "/auth/passkeys/login/finish",
            key.get(&options, ORIGIN),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let made_up = json!({"challenge": B64.encode([7u8; 32]), "rpId": "localhost"});
    let (status, _) = app
        .post(
            "/auth/passkeys/login/finish",
            key.get(&made_up, ORIGIN),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (_, reg) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access_a))
        .await;
    let as_login = json!({"challenge": reg["challenge"], "rpId": "localhost"});
    let (status, _) = app
        .post(
            "/auth/passkeys/login/finish",
            key.get(&as_login, ORIGIN),
            None,
        )
        .await;
    assert_eq!(status, 401);
    // The legitimate next login still works.
    let (status, tokens) = log_in(&app, &mut key, ORIGIN).await;
    assert_eq!(
        (status, tokens["user"]["username"].as_str()),
        (200, Some("rosa")),
        "{tokens}"
    );
    app.stop().await;
}

async fn a_cloned_authenticator_is_refused(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_clone").await else {
        return;
    };
    let a = app.register("tova").await;
    let access = token(&a, "access_token");
    let mut key = SoftAuthenticator::new();
    let (status, _) = enrol(&app, &mut key, &access, Attestation::None, None).await;
    assert_eq!(status, 201);
    // A copy of the authenticator taken now…
    let mut clone = key.clone();
    // …while the original goes on logging in (counter 2, 3).
    for _ in 0..2 {
        let (status, _) = log_in(&app, &mut key, ORIGIN).await;
        assert_eq!(status, 200);
    }
    // The clone signs with counter 2: not above the stored 3.
    let (status, problem) = log_in(&app, &mut clone, ORIGIN).await;
    assert_problem(status, &problem, 401, "passkey_clone_detected");
    // Equal is refused too (counter 3 again).
    let (status, _) = log_in(&app, &mut clone, ORIGIN).await;
    assert_eq!(status, 401);
    // The original, ahead of the stored counter, still logs in.
    let (status, _) = log_in(&app, &mut key, ORIGIN).await;
    assert_eq!(status, 200);

    // An authenticator that keeps no counter (always 0, like synced passkeys) is fine.
    let mut synced = SoftAuthenticator::new();
    synced.counts = false;
    let (status, _) = enrol(&app, &mut synced, &access, Attestation::None, None).await;
    assert_eq!(status, 201);
    for _ in 0..2 {
        let (status, body) = log_in(&app, &mut synced, ORIGIN).await;
        assert_eq!(status, 200, "{body}");
    }
    app.stop().await;
}

async fn only_the_owner_deletes_a_passkey(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_delete").await else {
        return;
    };
    let a = app.register("uma").await;
    let b = app.register("viggo").await;
    let (access_a, access_b) = (token(&a, "access_token"), token(&b, "access_token"));
    let mut key = SoftAuthenticator::new();
    let (_, created) = enrol(&app, &mut key, &access_a, Attestation::None, Some("Yubi")).await;
    let path = format!("/auth/passkeys/{}", created["id"].as_str().unwrap());

    let (status, _) = app.get("/auth/passkeys", None).await;
    assert_eq!(status, 401);
    let (status, _) = app.delete(&path, None).await;
    assert_eq!(status, 401);
    let (status, problem) = app.delete(&path, Some(&access_b)).await;
    assert_problem(status, &problem, 404, "passkey_not_found");
    let (_, list) = app.get("/auth/passkeys", Some(&access_b)).await;
    assert_eq!(list["items"], json!([]), "Viggo sees none of Uma's");
    let (_, list) = app.get("/auth/passkeys", Some(&access_a)).await;
    assert_eq!(list["items"][0]["name"], "Yubi");

    let (status, _) = app.delete(&path, Some(&access_a)).await;
    assert_eq!(status, 204);
    let (status, _) = app.delete(&path, Some(&access_a)).await;
    assert_eq!(status, 404);
    let (_, list) = app.get("/auth/passkeys", Some(&access_a)).await;
    assert_eq!(list["items"], json!([]));
    // A deleted passkey no longer logs in.
    let (status, problem) = log_in(&app, &mut key, ORIGIN).await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    app.stop().await;
}

// ---- a software authenticator -------------------------------------------------------

/// A challenge answered after its lifetime is refused, for a login and a registration.
async fn an_expired_challenge_is_refused(backend: Backend) {
    let Some(app) = spawn(backend, "passkey_expired").await else {
        return;
    };
    let a = app.register("xena").await;
    let access = token(&a, "access_token");
    let mut key = SoftAuthenticator::new();
    let (status, _) = enrol(&app, &mut key, &access, Attestation::None, None).await;
    assert_eq!(status, 201);
    let db = app.db().await;
    let age_challenges = || async {
        sqlx::query("UPDATE passkey_challenges SET expires_at = 1")
            .execute(db.pool())
            .await
            .unwrap();
    };
    let (_, options) = app
        .post("/auth/passkeys/login/start", json!({}), None)
        .await;
    age_challenges().await;
    let (status, problem) = app
        .post(
            "/auth/passkeys/login/finish",
            key.get(&options, ORIGIN),
            None,
        )
        .await;
    assert_problem(status, &problem, 401, "invalid_passkey");
    let mut second = SoftAuthenticator::new();
    let (_, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(&access))
        .await;
    age_challenges().await;
    let (status, problem) = app
        .post(
            "/auth/passkeys/register/finish",
            second.create(&options, ORIGIN, Attestation::None, None),
            Some(&access),
        )
        .await;
    assert_problem(status, &problem, 400, "invalid_passkey");
    // A fresh ceremony still works: only the aged challenges were refused.
    let (status, body) = log_in(&app, &mut key, ORIGIN).await;
    assert_eq!(status, 200, "{body}");
    db.close().await;
    app.stop().await;
}

/// Registers `key` for the holder of `access`: start, then finish with the answer.
async fn enrol(
    app: &common::TestAuth,
    key: &mut SoftAuthenticator,
    access: &str,
    attestation: Attestation,
    name: Option<&str>,
) -> (u16, Value) {
    let (_, options) = app
        .post("/auth/passkeys/register/start", json!({}), Some(access))
        .await;
    app.post(
        "/auth/passkeys/register/finish",
        key.create(&options, ORIGIN, attestation, name),
        Some(access),
    )
    .await
}

/// A passwordless login with `key`, its client data claiming `origin`.
async fn log_in(app: &common::TestAuth, key: &mut SoftAuthenticator, origin: &str) -> (u16, Value) {
    let (_, options) = app
        .post("/auth/passkeys/login/start", json!({}), None)
        .await;
    app.post(
        "/auth/passkeys/login/finish",
        key.get(&options, origin),
        None,
    )
    .await
}

#[derive(Clone, Copy)]
enum Attestation {
    None,
    /// "packed" signed by the credential's own key.
    PackedSelf,
    /// "packed" signed by another key: must be refused.
    PackedForged,
}

/// A P-256 authenticator holding one discoverable credential, as a CTAP2 authenticator
/// builds its objects (WebAuthn L2 §6.1, §6.5, §8.2 and §8.7).
#[derive(Clone)]
struct SoftAuthenticator {
    pkcs8: Vec<u8>,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
    /// False: the counter stays 0.
    counts: bool,
}

impl SoftAuthenticator {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        Self {
            pkcs8,
            credential_id: rand::random::<[u8; 16]>().to_vec(),
            user_handle: Vec::new(),
            counter: 0,
            counts: true,
        }
    }

    fn sign(pkcs8: &[u8], msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng).unwrap();
        pair.sign(&rng, msg).unwrap().as_ref().to_vec()
    }

    fn point(&self) -> Vec<u8> {
        let rng = SystemRandom::new();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.pkcs8, &rng)
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec()
    }

    fn tick(&mut self) -> u32 {
        if self.counts {
            self.counter += 1;
        }
        self.counter
    }

    /// `navigator.credentials.create()` answered, as `PublicKeyCredential.toJSON()`.
    fn create(
        &mut self,
        options: &Value,
        origin: &str,
        att: Attestation,
        name: Option<&str>,
    ) -> Value {
        self.user_handle = B64.decode(options["user"]["id"].as_str().unwrap()).unwrap();
        let client_data = client_data(
            "webauthn.create",
            options["challenge"].as_str().unwrap(),
            origin,
        );
        let point = self.point();
        let cose = cbor_map(&[
            (cbor_int(1), cbor_int(2)),
            (cbor_int(3), cbor_int(-7)),
            (cbor_int(-1), cbor_int(1)),
            (cbor_int(-2), cbor_bytes(&point[1..33])),
            (cbor_int(-3), cbor_bytes(&point[33..65])),
        ]);
        let counter = self.tick();
        let mut auth_data = auth_data_head(options["rp"]["id"].as_str().unwrap(), 0x45, counter);
        auth_data.extend_from_slice(&[0u8; 16]); // aaguid
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&cose);
        let signed = [auth_data.clone(), Sha256::digest(&client_data).to_vec()].concat();
        let (fmt, stmt) = match att {
            Attestation::None => ("none", cbor_map(&[])),
            Attestation::PackedSelf => (
                "packed",
                cbor_map(&[
                    (cbor_text("alg"), cbor_int(-7)),
                    (
                        cbor_text("sig"),
                        cbor_bytes(&Self::sign(&self.pkcs8, &signed)),
                    ),
                ]),
            ),
            Attestation::PackedForged => (
                "packed",
                cbor_map(&[
                    (cbor_text("alg"), cbor_int(-7)),
                    (
                        cbor_text("sig"),
                        cbor_bytes(&Self::sign(&SoftAuthenticator::new().pkcs8, &signed)),
                    ),
                ]),
            ),
        };
        let attestation = cbor_map(&[
            (cbor_text("fmt"), cbor_text(fmt)),
            (cbor_text("attStmt"), stmt),
            (cbor_text("authData"), cbor_bytes(&auth_data)),
        ]);
        let mut body = json!({
            "id": B64.encode(&self.credential_id),
            "rawId": B64.encode(&self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": B64.encode(&client_data),
                "attestationObject": B64.encode(&attestation),
                "transports": ["internal"],
            },
        });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        body
    }

    /// `navigator.credentials.get()` answered with the discoverable credential.
    fn get(&mut self, options: &Value, origin: &str) -> Value {
        let client_data = client_data(
            "webauthn.get",
            options["challenge"].as_str().unwrap(),
            origin,
        );
        let counter = self.tick();
        // UP and UV.
        let auth_data = auth_data_head(options["rpId"].as_str().unwrap(), 0x05, counter);
        let signed = [auth_data.clone(), Sha256::digest(&client_data).to_vec()].concat();
        json!({
            "id": B64.encode(&self.credential_id),
            "rawId": B64.encode(&self.credential_id),
            "type": "public-key",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": B64.encode(&client_data),
                "authenticatorData": B64.encode(&auth_data),
                "signature": B64.encode(Self::sign(&self.pkcs8, &signed)),
                "userHandle": B64.encode(&self.user_handle),
            },
        })
    }
}

fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false}),
    )
    .unwrap()
}

/// rpIdHash ‖ flags ‖ signCount.
fn auth_data_head(rp_id: &str, flags: u8, counter: u32) -> Vec<u8> {
    let mut d = Sha256::digest(rp_id.as_bytes()).to_vec();
    d.push(flags);
    d.extend_from_slice(&counter.to_be_bytes());
    d
}

fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
        _ => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
    }
}

fn cbor_int(i: i64) -> Vec<u8> {
    if i >= 0 {
        cbor_head(0, i as u64)
    } else {
        cbor_head(1, (-1 - i) as u64)
    }
}

fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    [cbor_head(2, b.len() as u64), b.to_vec()].concat()
}

fn cbor_text(s: &str) -> Vec<u8> {
    [cbor_head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
}

fn cbor_map(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = cbor_head(5, entries.len() as u64);
    for (k, v) in entries {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}
