//! Web Push for real: VAPID (RFC 8292, ES256) and message encryption (RFC 8291,
//! `aes128gcm` of RFC 8188), on `ring` (already in the lock through rustls): ECDH P-256,
//! HKDF-SHA-256, AES-128-GCM and ECDSA P-256 signatures.

pub mod worker;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use ring::{aead, agreement, hkdf};

/// Record size announced in the header: one record holds the whole payload (a
/// Notification is a few hundred bytes; push services accept 4096-byte payloads).
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext that fits one record: rs − 16 (tag) − 1 (delimiter), minus the
/// 86-byte header a 4096-byte push message also carries.
pub const MAX_PAYLOAD: usize = 3993;

/// The service's VAPID key pair.
pub struct Vapid {
    key: EcdsaKeyPair,
    /// base64url of the uncompressed public point (65 bytes): `GET vapid-public-key`.
    pub public_b64: String,
    /// `sub` of the JWT (a `mailto:` or `https:` contact for push services).
    subject: String,
    rng: SystemRandom,
}

impl Vapid {
    /// `configured` (base64url PKCS#8), else the key under `<data_dir>/vapid/private.pk8`,
    /// generated there on first start (mode 0600).
    pub fn load(configured: Option<&str>, data_dir: &Path, subject: &str) -> anyhow::Result<Vapid> {
        let rng = SystemRandom::new();
        let pkcs8 = match configured.filter(|s| !s.trim().is_empty()) {
            Some(b64) => URL_SAFE_NO_PAD.decode(b64.trim()).map_err(|_| {
                anyhow::anyhow!("notifications.vapid_private_key is not base64url PKCS#8")
            })?,
            None => {
                let dir = data_dir.join("vapid");
                let path = dir.join("private.pk8");
                if path.exists() {
                    std::fs::read(&path)?
                } else {
                    std::fs::create_dir_all(&dir)?;
                    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|_| anyhow::anyhow!("cannot generate a VAPID key"))?;
                    write_private(&path, doc.as_ref())?;
                    tracing::info!(path = %path.display(), "generated the VAPID key");
                    doc.as_ref().to_vec()
                }
            }
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| anyhow::anyhow!("the VAPID key is not a P-256 PKCS#8 key"))?;
        Ok(Vapid {
            public_b64: URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
            key,
            subject: subject.to_owned(),
            rng,
        })
    }

    /// `Authorization: vapid t=<JWT>, k=<public key>` for a push to `endpoint`: the JWT's
    /// `aud` is the endpoint's origin, `exp` 12 h ahead (RFC 8292 allows up to 24 h).
    pub fn authorization(&self, endpoint: &str, now_secs: i64) -> anyhow::Result<String> {
        let url = reqwest::Url::parse(endpoint)?;
        let aud = url.origin().ascii_serialization();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&serde_json::json!({
            "aud": aud,
            "exp": now_secs + 12 * 3600,
            "sub": self.subject,
        }))?);
        let signing_input = format!("{header}.{claims}");
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("VAPID signing failed"))?;
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            URL_SAFE_NO_PAD.encode(sig.as_ref()),
            self.public_b64
        ))
    }

    /// Encrypts `plaintext` for a subscription (RFC 8291): the body of the push request.
    pub fn encrypt(&self, p256dh: &[u8], auth: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        encrypt(&self.rng, p256dh, auth, plaintext)
    }
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// An HKDF output length for ring.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) -> anyhow::Result<()> {
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| anyhow::anyhow!("HKDF expand failed"))
}

/// RFC 8291 §3–4 with RFC 8188's `aes128gcm` framing, one record.
pub fn encrypt(
    rng: &dyn SecureRandom,
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(plaintext.len() <= MAX_PAYLOAD, "push payload too large");
    let as_private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng)
        .map_err(|_| anyhow::anyhow!("cannot generate an ECDH key"))?;
    let as_public = as_private
        .compute_public_key()
        .map_err(|_| anyhow::anyhow!("cannot compute the ECDH public key"))?;
    let as_public = as_public.as_ref().to_vec();
    let ecdh_secret = agreement::agree_ephemeral(
        as_private,
        &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public),
        |s| s.to_vec(),
    )
    .map_err(|_| anyhow::anyhow!("the subscription's p256dh is not a P-256 point"))?;
    // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" 0x00 ua_public as_public, 32)
    let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, auth_secret).extract(&ecdh_secret);
    let mut ikm = [0u8; 32];
    hkdf_expand(
        &prk_key,
        &[b"WebPush: info\0", ua_public, &as_public],
        &mut ikm,
    )?;
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&ikm);
    let mut cek = [0u8; 16];
    hkdf_expand(&prk, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
    let mut nonce = [0u8; 12];
    hkdf_expand(&prk, &[b"Content-Encoding: nonce\0"], &mut nonce)?;
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| anyhow::anyhow!("bad CEK"))?,
    );
    // The last (only) record ends with the delimiter 0x02; no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 17);
    record.extend_from_slice(plaintext);
    record.push(2);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| anyhow::anyhow!("AES-GCM failed"))?;
    let mut body = Vec::with_capacity(16 + 4 + 1 + as_public.len() + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// Validates a subscription's keys: `p256dh` an uncompressed P-256 point (65 bytes,
/// 0x04 first), `auth` 16 bytes; both base64url (padding tolerated).
pub fn decode_keys(p256dh: &str, auth: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let dec = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok();
    let (p, a) = (dec(p256dh)?, dec(auth)?);
    (p.len() == 65 && p[0] == 4 && a.len() == 16).then_some((p, a))
}
