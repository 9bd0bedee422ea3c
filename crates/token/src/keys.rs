//! Ed25519 signing keys in `<data dir>/keys/*.pem` (PKCS#8). The newest key signs;
//! every key in the directory is published in the JWKS so tokens signed by an older
//! key keep verifying until they expire (rotation: add a key, remove the old file
//! once the access-token lifetime has passed).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::TOKEN_TYPE;

struct Key {
    kid: String,
    public: [u8; 32],
    encoding: EncodingKey,
}

pub struct KeySet {
    /// Newest first; `keys[0]` signs.
    keys: Vec<Key>,
}

fn kid_of(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

fn key_from_signing(sk: &SigningKey) -> anyhow::Result<Key> {
    let public = sk.verifying_key().to_bytes();
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
    Ok(Key {
        kid: kid_of(&public),
        public,
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
    })
}

impl KeySet {
    /// Loads every key in `dir`, generating a first one if there is none.
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create key dir {}: {e}", dir.display()))?;
        let mut files = pem_files(dir)?;
        if files.is_empty() {
            files.push(Self::generate_into(dir)?);
        }
        // File names start with the creation time in ms, so the newest sorts last.
        files.sort();
        let mut keys = Vec::new();
        for path in files.iter().rev() {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", path.display()))?;
            let sk = SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| anyhow::anyhow!("invalid Ed25519 key {}: {e}", path.display()))?;
            keys.push(key_from_signing(&sk)?);
        }
        Ok(Self { keys })
    }

    /// Writes a new key into `dir` (mode 0600); the next load signs with it.
    pub fn generate_into(dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let sk = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let kid = kid_of(&sk.verifying_key().to_bytes());
        let pem = sk
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
        let path = dir.join(format!("{:013}-{kid}.pem", kit::time::now_ms()));
        write_private(&path, pem.as_bytes())?;
        tracing::info!(%kid, path = %path.display(), "generated a new signing key");
        Ok(path)
    }

    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// Signs `claims` (a [`Claims`](crate::Claims); tests also sign other shapes) as an access token
    /// with the newest key.
    pub fn sign<C: serde::Serialize>(&self, claims: &C) -> anyhow::Result<String> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// The public JWKS document (RFC 7517, OKP keys per RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "use": "sig",
                    "alg": "EdDSA",
                    "kid": k.kid,
                    "x": URL_SAFE_NO_PAD.encode(k.public),
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn pem_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem") {
            out.push(path);
        }
    }
    Ok(out)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write key {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
