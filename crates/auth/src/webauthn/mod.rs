//! WebAuthn Level 2 relying-party checks for passkeys: registration (§7.1) and
//! authentication (§7.2) ceremonies, ES256 and EdDSA credentials.
//!
//! Why not `webauthn-rs` (which issue #19 names): `webauthn-rs-core` verifies with the
//! `openssl` crate, i.e. a system OpenSSL with its headers (`libssl-dev`, absent on a fresh
//! machine, so `cargo run` alone would not build) or `openssl-src` vendored, a C build of
//! several minutes on the project's 2-core machines; it also brings ~40 crates (its
//! attestation CA handling, `serde_cbor_2`, `url`, …) for formats this service never
//! trusts. What the two ceremonies need is small and already in the lock: SHA-256
//! (`sha2`), ECDSA P-256 and Ed25519 verification (`ring`, there through rustls), and a
//! CBOR reader for attestation objects and COSE keys (`cbor.rs`, ~150 lines, bounded).
//!
//! Policy: the options ask for `attestation: "none"`, so formats "none" and "packed"
//! self-attestation (signed by the credential's own key, checked here) are accepted;
//! attestation certificates ("packed" with `x5c`, "fido-u2f", "tpm", …) are refused
//! rather than accepted unverified. User presence is required; user verification is
//! "preferred" (API.md), so its flag is not required.

pub mod cbor;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use cbor::Value;

/// COSE algorithm ids (IANA "COSE Algorithms").
pub const ES256: i64 = -7;
pub const EDDSA: i64 = -8;

/// What the relying party accepts, in the order the options offer them.
pub const ALGORITHMS: [i64; 2] = [ES256, EDDSA];

/// WebAuthn L2 §6.5.1: a credential id is at most 1023 bytes.
const MAX_CREDENTIAL_ID: usize = 1023;

const FLAG_UP: u8 = 0x01;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// Why a ceremony was refused; the message is safe to show the client.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(msg: impl Into<String>) -> Refusal {
    Refusal(msg.into())
}

/// The relying party: its id (a domain, never an IP address — browsers refuse those) and
/// the origins its pages are served from.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub id: String,
    pub name: String,
    pub origin: String,
    id_hash: [u8; 32],
}

impl RelyingParty {
    pub fn new(id: &str, name: &str, origin: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            origin: origin.trim_end_matches('/').to_owned(),
            id_hash: Sha256::digest(id.as_bytes()).into(),
        }
    }

    /// Reads clientDataJSON and checks its type (§7.1 steps 5–7 / §7.2 steps 9–11). The
    /// caller then takes the challenge it names (so a challenge is used up by any finish
    /// that presents it, whatever comes next) and calls `verify_registration` or
    /// `verify_assertion`, which check the origin and the rest.
    pub fn client_data(&self, json: &[u8], expected_type: &str) -> Result<ClientData, Refusal> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(rename = "type")]
            kind: String,
            challenge: String,
            origin: String,
            #[serde(default)]
            cross_origin: bool,
        }
        let raw: Raw = serde_json::from_slice(json)
            .map_err(|_| refuse("clientDataJSON is not the expected JSON"))?;
        if raw.kind != expected_type {
            return Err(refuse(format!(
                "clientDataJSON.type is not {expected_type}"
            )));
        }
        let challenge = URL_SAFE_NO_PAD
            .decode(raw.challenge.trim_end_matches('='))
            .map_err(|_| refuse("clientDataJSON.challenge is not base64url"))?;
        Ok(ClientData {
            challenge: URL_SAFE_NO_PAD.encode(challenge),
            origin: raw.origin,
            cross_origin: raw.cross_origin,
            hash: Sha256::digest(json).into(),
        })
    }

    /// §7.1 step 9 / §7.2 step 13: the ceremony ran on this site, not in a frame of another.
    fn check_origin(&self, client_data: &ClientData) -> Result<(), Refusal> {
        if client_data.origin != self.origin {
            return Err(refuse(format!(
                "the origin {:?} is not this site's ({:?})",
                client_data.origin, self.origin
            )));
        }
        if client_data.cross_origin {
            return Err(refuse("cross-origin ceremonies are not accepted"));
        }
        Ok(())
    }

    /// §7.1 steps 8–21 for a registration whose client data passed
    /// [`Self::client_data`] and whose challenge the caller consumed.
    pub fn verify_registration(
        &self,
        client_data: &ClientData,
        attestation_object: &[u8],
    ) -> Result<NewCredential, Refusal> {
        self.check_origin(client_data)?;
        let att = cbor::decode(attestation_object)
            .map_err(|e| refuse(format!("attestationObject: {e}")))?;
        let fmt = att
            .get_text("fmt")
            .and_then(Value::as_text)
            .ok_or_else(|| refuse("attestationObject has no fmt"))?;
        let stmt = att
            .get_text("attStmt")
            .ok_or_else(|| refuse("attestationObject has no attStmt"))?;
        let raw_auth_data = att
            .get_text("authData")
            .and_then(Value::as_bytes)
            .ok_or_else(|| refuse("attestationObject has no authData"))?;
        let auth_data = self.auth_data(raw_auth_data)?;
        let Some(attested) = auth_data.attested else {
            return Err(refuse("authenticator data has no attested credential"));
        };
        match fmt {
            "none" => {
                if stmt != &Value::Map(Vec::new()) {
                    return Err(refuse("a \"none\" attestation has an empty statement"));
                }
            }
            "packed" => {
                if stmt.get_text("x5c").is_some() {
                    return Err(refuse(
                        "attestation certificates are not accepted (the options ask for none)",
                    ));
                }
                let alg = stmt.get_text("alg").and_then(Value::as_int);
                let sig = stmt.get_text("sig").and_then(Value::as_bytes);
                let (Some(alg), Some(sig)) = (alg, sig) else {
                    return Err(refuse("a packed attestation needs alg and sig"));
                };
                if alg != attested.key.alg {
                    return Err(refuse("the self-attestation's alg is not the credential's"));
                }
                if !attested
                    .key
                    .verify(&signed_data(raw_auth_data, client_data), sig)
                {
                    return Err(refuse("the self-attestation signature does not verify"));
                }
            }
            other => {
                return Err(refuse(format!(
                    "attestation format {other:?} is not accepted (the options ask for none)"
                )));
            }
        }
        Ok(NewCredential {
            credential_id: attested.credential_id,
            key: attested.key,
            sign_count: auth_data.sign_count,
        })
    }

    /// §7.2 steps 11–20 for an assertion by `key`: the rp id hash, user presence and the
    /// signature over authenticator data ‖ SHA-256(clientDataJSON). Returns the
    /// authenticator's signature counter; comparing it with the stored one is the caller's.
    pub fn verify_assertion(
        &self,
        client_data: &ClientData,
        raw_auth_data: &[u8],
        signature: &[u8],
        key: &PublicKey,
    ) -> Result<u32, Refusal> {
        self.check_origin(client_data)?;
        let auth_data = self.auth_data(raw_auth_data)?;
        if !key.verify(&signed_data(raw_auth_data, client_data), signature) {
            return Err(refuse("the assertion signature does not verify"));
        }
        Ok(auth_data.sign_count)
    }

    /// Parses authenticator data (§6.1) and checks its rp id hash and UP flag.
    fn auth_data(&self, buf: &[u8]) -> Result<AuthData, Refusal> {
        if buf.len() < 37 {
            return Err(refuse("authenticator data is shorter than 37 bytes"));
        }
        if buf[..32] != self.id_hash {
            return Err(refuse(format!(
                "the credential is not for this relying party ({})",
                self.id
            )));
        }
        let flags = buf[32];
        if flags & FLAG_UP == 0 {
            return Err(refuse("the authenticator did not test user presence"));
        }
        let sign_count = u32::from_be_bytes([buf[33], buf[34], buf[35], buf[36]]);
        let mut rest = &buf[37..];
        let attested = if flags & FLAG_AT != 0 {
            // aaguid (16), credential id length (2), credential id, COSE key.
            if rest.len() < 18 {
                return Err(refuse("attested credential data is truncated"));
            }
            let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            if len > MAX_CREDENTIAL_ID || rest.len() < 18 + len {
                return Err(refuse("the credential id is truncated or too long"));
            }
            let credential_id = rest[18..18 + len].to_vec();
            let (cose, used) = cbor::decode_prefix(&rest[18 + len..])
                .map_err(|e| refuse(format!("credential public key: {e}")))?;
            rest = &rest[18 + len + used..];
            Some(Attested {
                credential_id,
                key: PublicKey::from_cose(&cose)?,
            })
        } else {
            None
        };
        if flags & FLAG_ED != 0 {
            let (_, used) = cbor::decode_prefix(rest)
                .map_err(|e| refuse(format!("authenticator extensions: {e}")))?;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(refuse("authenticator data has trailing bytes"));
        }
        Ok(AuthData {
            sign_count,
            attested,
        })
    }
}

/// What a client data check leaves for the rest of the ceremony.
pub struct ClientData {
    /// The challenge, base64url without padding (the form the options carried).
    pub challenge: String,
    origin: String,
    cross_origin: bool,
    hash: [u8; 32],
}

struct AuthData {
    sign_count: u32,
    attested: Option<Attested>,
}

struct Attested {
    credential_id: Vec<u8>,
    key: PublicKey,
}

/// A credential a registration ceremony accepted.
pub struct NewCredential {
    pub credential_id: Vec<u8>,
    pub key: PublicKey,
    pub sign_count: u32,
}

/// A credential public key: `alg` ES256 with an uncompressed SEC1 point (65 bytes) or
/// EdDSA with an Ed25519 key (32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub alg: i64,
    pub bytes: Vec<u8>,
}

impl PublicKey {
    /// Reads a COSE_Key (RFC 9053): kty 2 / crv 1 (P-256) for ES256, kty 1 / crv 6
    /// (Ed25519) for EdDSA.
    fn from_cose(key: &Value) -> Result<Self, Refusal> {
        let int = |k| key.get_int(k).and_then(Value::as_int);
        let bytes = |k| key.get_int(k).and_then(Value::as_bytes);
        match (int(1), int(3), int(-1)) {
            (Some(2), Some(ES256), Some(1)) => match (bytes(-2), bytes(-3)) {
                (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                    let mut point = Vec::with_capacity(65);
                    point.push(0x04);
                    point.extend_from_slice(x);
                    point.extend_from_slice(y);
                    Ok(Self {
                        alg: ES256,
                        bytes: point,
                    })
                }
                _ => Err(refuse("the P-256 key needs 32-byte x and y")),
            },
            (Some(1), Some(EDDSA), Some(6)) => match bytes(-2) {
                Some(x) if x.len() == 32 => Ok(Self {
                    alg: EDDSA,
                    bytes: x.to_vec(),
                }),
                _ => Err(refuse("the Ed25519 key needs a 32-byte x")),
            },
            _ => Err(refuse(
                "the credential's algorithm is not accepted (ES256 or EdDSA)",
            )),
        }
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.alg {
            ES256 => &ECDSA_P256_SHA256_ASN1,
            EDDSA => &ED25519,
            _ => return false,
        };
        UnparsedPublicKey::new(alg, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

/// What assertions and self-attestations sign: authenticator data ‖ SHA-256(clientDataJSON).
fn signed_data(auth_data: &[u8], client_data: &ClientData) -> Vec<u8> {
    let mut data = Vec::with_capacity(auth_data.len() + 32);
    data.extend_from_slice(auth_data);
    data.extend_from_slice(&client_data.hash);
    data
}
