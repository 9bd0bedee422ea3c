//! TOTP (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1, 6 digits, 30 s steps — what every
//! authenticator app supports by default. About 30 lines on `hmac` + `sha1` (already in
//! the dependency tree) instead of the `totp-rs` crate, whose extras (QR codes, URL
//! parsing, several hashes) this service does not need. Public so tests compute codes.

use hmac::{Hmac, Mac};

/// Seconds per time step (RFC 6238's default, what authenticator apps assume).
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Secret length: 160 bits, RFC 4226 §4's recommendation (the HMAC-SHA-1 output size).
pub const SECRET_BYTES: usize = 20;

/// The time step of a moment (unix seconds).
pub fn step_at(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The code of `secret` for time step `step` (RFC 4226 §5.3 dynamic truncation).
pub fn code(secret: &[u8], step: i64) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// Which of `steps` (in order) `candidate` is the code of, comparing every one in
/// constant time.
pub fn matching_step(secret: &[u8], candidate: &str, steps: &[i64]) -> Option<i64> {
    let mut found = None;
    for &step in steps {
        let expected = code(secret, step);
        let same = expected.len() == candidate.len()
            && expected
                .bytes()
                .zip(candidate.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same && found.is_none() {
            found = Some(step);
        }
    }
    found
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (how otpauth URIs carry secrets).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes what [`base32_encode`] wrote (case-insensitive; `None` on a foreign char).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = BASE32.iter().position(|&x| x == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (the 8-digit values, last 6 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(code(secret, step_at(time)), expected, "t = {time}");
        }
    }

    /// RFC 4648 §10 test vectors, and the round trip.
    #[test]
    fn base32() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            assert_eq!(base32_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert!(base32_decode("MZ1").is_none());
    }

    #[test]
    fn matching_step_finds_the_step() {
        let secret = [7u8; SECRET_BYTES];
        let c = code(&secret, 1000);
        assert_eq!(matching_step(&secret, &c, &[999, 1000, 1001]), Some(1000));
        assert_eq!(matching_step(&secret, &c, &[1002, 1003]), None);
        assert_eq!(matching_step(&secret, "12345", &[1000]), None);
    }
}
