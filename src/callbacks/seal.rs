//! The body on the wire, made once when the subject ends (every retry sends the same bytes,
//! so a receiver can tell a repeat by the body, the signature or `X-Sandpit-Callback`):
//!
//! - `plain`: the JSON, `application/json`.
//! - `hmac`: the JSON, `application/json`, and `X-Sphere-Engine-Signature: <hex>`, the
//!   lowercase hex HMAC-SHA256 of the raw body under the secret (Sphere Engine's webhook
//!   scheme). Receivers compare it in constant time before parsing the body.
//! - `aes-gcm`: `application/octet-stream`, `nonce (12 bytes) ‖ ciphertext ‖ tag (16
//!   bytes)`: AES-256-GCM of the JSON under the 32-byte key, a random nonce per message, no
//!   associated data. Authenticated: a body that does not decrypt is not ours.
//! - `railgun-cbc`: `application/octet-stream`, `IV (16 bytes) ‖ ciphertext`: AES-256-CBC of
//!   the JSON with PKCS#7 padding, a random IV per message, the key by Railgun's rule — what
//!   Railgun's `AESCipher.decrypt` reads. **Not authenticated**: anyone on the path can flip
//!   bits of the JSON undetected; use it only for a Railgun server that needs it.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::Aes256Gcm;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::target::{Mode, Secret};
use crate::image::digest::to_hex;

/// The header of the HMAC signature (Sphere Engine's name).
pub const SIGNATURE_HEADER: &str = "x-sphere-engine-signature";

/// A body ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub body: Vec<u8>,
    /// The hex HMAC for `X-Sphere-Engine-Signature` (mode `hmac` only).
    pub signature: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The stored key does not fit the mode (a damaged row; never the caller's input, which
    /// was checked when accepted).
    #[error("the key of a '{0}' callback is missing or does not fit the mode")]
    BadKey(Mode),
    #[error("encrypting: {0}")]
    Cipher(String),
}

pub fn content_type(mode: Mode) -> &'static str {
    match mode {
        Mode::Plain | Mode::Hmac => "application/json",
        Mode::AesGcm | Mode::RailgunCbc => "application/octet-stream",
    }
}

/// Seals `json` for `mode` under `key`.
pub fn seal(mode: Mode, key: Option<&Secret>, json: &[u8]) -> Result<Sealed, SealError> {
    let aes_key = || -> Result<&[u8], SealError> {
        key.map(Secret::bytes)
            .filter(|k| k.len() == 32)
            .ok_or(SealError::BadKey(mode))
    };
    match mode {
        Mode::Plain => Ok(Sealed {
            body: json.to_vec(),
            signature: None,
        }),
        Mode::Hmac => {
            let key = key.ok_or(SealError::BadKey(mode))?;
            Ok(Sealed {
                body: json.to_vec(),
                signature: Some(to_hex(&hmac_sha256(mode, key.bytes(), json)?)),
            })
        }
        Mode::AesGcm => {
            let cipher =
                Aes256Gcm::new_from_slice(aes_key()?).map_err(|_| SealError::BadKey(mode))?;
            let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
            let sealed = cipher
                .encrypt(&nonce, json)
                .map_err(|e| SealError::Cipher(e.to_string()))?;
            let mut body = Vec::with_capacity(nonce.len() + sealed.len());
            body.extend_from_slice(&nonce);
            body.extend_from_slice(&sealed);
            Ok(Sealed {
                body,
                signature: None,
            })
        }
        Mode::RailgunCbc => {
            let mut iv = [0u8; 16];
            OsRng.fill_bytes(&mut iv);
            let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(aes_key()?, &iv)
                .map_err(|_| SealError::BadKey(mode))?;
            // PKCS#7 always adds 1-16 bytes.
            let mut body = vec![0u8; 16 + (json.len() / 16 + 1) * 16];
            let n = enc
                .encrypt_padded_b2b_mut::<Pkcs7>(json, &mut body[16..])
                .map_err(|e| SealError::Cipher(e.to_string()))?
                .len();
            body[..16].copy_from_slice(&iv);
            body.truncate(16 + n);
            Ok(Sealed {
                body,
                signature: None,
            })
        }
    }
}

fn hmac_sha256(mode: Mode, key: &[u8], data: &[u8]) -> Result<Vec<u8>, SealError> {
    // HMAC takes a key of any length; the error exists only in the trait's signature.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| SealError::BadKey(mode))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use aes_gcm::aead::generic_array::GenericArray;
    use cbc::cipher::BlockDecryptMut;

    use super::*;
    use crate::callbacks::target::railgun_key;

    const JSON: &[u8] = br#"{"id":"exec_1","status":"ended","stdout":"hello\n"}"#;

    #[test]
    fn plain_and_hmac() {
        let s = seal(Mode::Plain, None, JSON).unwrap();
        assert_eq!((s.body.as_slice(), s.signature), (JSON, None));
        let key = Secret::new(b"key".to_vec());
        let s = seal(Mode::Hmac, Some(&key), JSON).unwrap();
        assert_eq!(s.body, JSON);
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let rfc = seal(
            Mode::Hmac,
            Some(&Secret::new(b"Jefe".to_vec())),
            b"what do ya want for nothing?",
        )
        .unwrap();
        assert_eq!(
            rfc.signature.as_deref(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert!(seal(Mode::Hmac, None, JSON).is_err());
    }

    #[test]
    fn aes_gcm_layout_and_authenticity() {
        let key = Secret::new([9u8; 32].to_vec());
        let a = seal(Mode::AesGcm, Some(&key), JSON).unwrap();
        let b = seal(Mode::AesGcm, Some(&key), JSON).unwrap();
        assert_ne!(a.body, b.body, "a fresh nonce per message");
        assert_eq!(a.body.len(), 12 + JSON.len() + 16);
        let cipher = Aes256Gcm::new_from_slice(key.bytes()).unwrap();
        let open = |body: &[u8]| cipher.decrypt(GenericArray::from_slice(&body[..12]), &body[12..]);
        assert_eq!(open(&a.body).unwrap(), JSON);
        let mut tampered = a.body.clone();
        tampered[20] ^= 1;
        assert!(open(&tampered).is_err(), "a flipped bit is caught");
        let other = Aes256Gcm::new_from_slice(&[8u8; 32]).unwrap();
        assert!(other
            .decrypt(GenericArray::from_slice(&a.body[..12]), &a.body[12..])
            .is_err());
        assert!(seal(Mode::AesGcm, Some(&Secret::new(vec![1; 16])), JSON).is_err());
    }

    #[test]
    fn railgun_cbc_opens_with_railgun_s_layout() {
        let key = Secret::new(railgun_key(b"railgun-comm-key").to_vec());
        for len in [0, 1, 15, 16, 17, JSON.len()] {
            let json = &JSON[..len];
            let s = seal(Mode::RailgunCbc, Some(&key), json).unwrap();
            assert_eq!(s.body.len(), 16 + (len / 16 + 1) * 16, "IV + padded blocks");
            let mut buf = s.body[16..].to_vec();
            let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(key.bytes(), &s.body[..16])
                .unwrap()
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .unwrap()
                .to_vec();
            assert_eq!(plain, json);
        }
    }

    /// An independent implementation reads the Railgun body: `openssl enc -d -aes-256-cbc`
    /// with the IV from the first 16 bytes (PKCS#7 is openssl's padding too).
    #[test]
    fn railgun_cbc_opens_with_openssl() {
        let key = railgun_key(b"railgun-comm-key");
        let s = seal(Mode::RailgunCbc, Some(&Secret::new(key.to_vec())), JSON).unwrap();
        let mut child = Command::new("openssl")
            .args(["enc", "-d", "-aes-256-cbc", "-K"])
            .arg(to_hex(&key))
            .arg("-iv")
            .arg(to_hex(&s.body[..16]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl (the test's independent implementation) is installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&s.body[16..])
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, JSON);
    }
}
