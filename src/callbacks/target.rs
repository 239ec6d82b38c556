//! A callback as asked for (`callback` in a create request) and as accepted: the receiver's
//! URL (on the allow-list), how the body is protected, and the shared key.
//!
//! ```json
//! "callback": {"url": "http://hooks.example.com/sandpit", "mode": "hmac", "secret": "…"}
//! ```
//!
//! | mode | `secret` | body |
//! |---|---|---|
//! | `plain` | none | the JSON |
//! | `hmac` (default when a secret is given) | text, 16-1024 bytes | the JSON, signed |
//! | `aes-gcm` | 32 bytes as 64 hex digits or base64 | AES-256-GCM |
//! | `railgun-cbc` | Railgun's `COMM_KEY` text | Railgun's AES-256-CBC |
//!
//! The secret is a per-request value: kept in the store only until the subject ends (then
//! the body is sealed and the key erased), never shown by any `GET`, never logged.

use std::fmt;

use base64::Engine;
use serde::Deserialize;

use super::allow::{AllowList, Host};
use super::{DeliveryState, Subject};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::ids::new_callback_id;
use crate::store::CallbackRow;

/// How the final object travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// JSON as it is.
    Plain,
    /// JSON, with the lowercase hex HMAC-SHA256 of the raw body in `X-Sphere-Engine-Signature`.
    Hmac,
    /// `application/octet-stream`: nonce (12 bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes).
    AesGcm,
    /// `application/octet-stream`: IV (16 bytes) ‖ AES-256-CBC ciphertext (PKCS#7), as Railgun
    /// reads it. Not authenticated.
    RailgunCbc,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Plain, Mode::Hmac, Mode::AesGcm, Mode::RailgunCbc];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Hmac => "hmac",
            Mode::AesGcm => "aes-gcm",
            Mode::RailgunCbc => "railgun-cbc",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key bytes. Never printed (`Debug` shows no byte of it) and never serialised to a view.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The secret as the request carries it (redacted in `Debug` too).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(…)")
    }
}

/// `callback` in a create request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    pub url: String,
    /// Default: `hmac` when a secret is given, else `plain`.
    pub mode: Option<Mode>,
    pub secret: Option<SecretText>,
}

/// Longest callback URL.
const MAX_URL: usize = 2048;
/// Longest secret (text).
const MAX_SECRET: usize = 1024;
/// Shortest HMAC secret: shorter ones are guessable.
const MIN_HMAC_SECRET: usize = 16;

/// A callback URL, checked: `http://HOST[:PORT]/path?query`, no user info, no fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    pub text: String,
    pub host: Host,
    pub port: u16,
}

impl CallbackUrl {
    pub fn parse(text: &str) -> std::result::Result<CallbackUrl, String> {
        if text.len() > MAX_URL {
            return Err(format!("longer than {MAX_URL} bytes"));
        }
        if text.contains('#') {
            return Err("a URL sent to has no fragment ('#…')".into());
        }
        let uri: hyper::Uri = text
            .parse()
            .map_err(|e| format!("'{text}' is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https is not available in this build: callbacks go over http, \
                            protected by their mode (hmac signs, aes-gcm encrypts); put a \
                            TLS-terminating proxy on the allow-list for https receivers"
                        .into(),
                )
            }
            _ => return Err(format!("'{text}' is not an http:// URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{text}' names no host"))?;
        if authority.as_str().contains('@') {
            return Err("user info ('user:pass@') is not sent; sign or encrypt instead".into());
        }
        let host = Host::parse(authority.host())?;
        let port = match authority.port_u16() {
            Some(0) => return Err("port 0 is not a port".into()),
            Some(p) => p,
            None => 80,
        };
        Ok(CallbackUrl {
            text: text.to_string(),
            host,
            port,
        })
    }
}

/// An accepted callback: its URL is on the allow-list and its key fits its mode.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: CallbackUrl,
    pub mode: Mode,
    pub key: Option<Secret>,
}

fn invalid(field: &str, why: impl fmt::Display) -> Error {
    Error::Invalid(format!("'callback.{field}': {why}"))
}

impl Callback {
    /// Checks a request against the allow-list and its mode's rules for the key.
    pub fn accept(req: CallbackRequest, allow: &AllowList) -> Result<Callback> {
        let url = CallbackUrl::parse(&req.url).map_err(|e| invalid("url", e))?;
        if !allow.allows_host(&url.host, url.port) {
            let why = if allow.is_empty() {
                "this server allows no callback hosts (the operator allows some with \
                 `sandpit serve --callback-allow HOST[:PORT]`)"
                    .to_string()
            } else {
                format!(
                    "{} port {} is not on this server's callback allow-list",
                    url.host, url.port
                )
            };
            return Err(invalid("url", why));
        }
        let mode = req.mode.unwrap_or(if req.secret.is_some() {
            Mode::Hmac
        } else {
            Mode::Plain
        });
        let secret = req.secret.map(|s| s.0);
        if secret.as_ref().is_some_and(|s| s.len() > MAX_SECRET) {
            return Err(invalid("secret", format!("longer than {MAX_SECRET} bytes")));
        }
        let key = match (mode, secret) {
            (Mode::Plain, None) => None,
            (Mode::Plain, Some(_)) => {
                return Err(invalid(
                    "secret",
                    "mode 'plain' takes no secret (say 'hmac', 'aes-gcm' or 'railgun-cbc')",
                ))
            }
            (_, None) => return Err(invalid("secret", format!("mode '{mode}' needs one"))),
            (Mode::Hmac, Some(s)) if s.len() < MIN_HMAC_SECRET => {
                return Err(invalid(
                    "secret",
                    format!("an HMAC secret has at least {MIN_HMAC_SECRET} bytes"),
                ))
            }
            (Mode::Hmac, Some(s)) => Some(Secret(s.into_bytes())),
            (Mode::AesGcm, Some(s)) => Some(Secret(aes_key(&s).ok_or_else(|| {
                invalid(
                    "secret",
                    "an AES-256 key is 32 bytes, as 64 hex digits or base64 \
                     (e.g. `openssl rand -hex 32`)",
                )
            })?)),
            (Mode::RailgunCbc, Some(s)) if s.is_empty() => {
                return Err(invalid("secret", "Railgun's COMM_KEY is not empty"))
            }
            (Mode::RailgunCbc, Some(s)) => Some(Secret(railgun_key(s.as_bytes()).to_vec())),
        };
        Ok(Callback { url, mode, key })
    }

    /// The outbox row written before the subject's own (state `waiting`).
    pub fn row(&self, subject: Subject, now: Micros) -> CallbackRow {
        CallbackRow {
            id: new_callback_id(),
            subject,
            url: self.url.text.clone(),
            mode: self.mode,
            key: self.key.clone(),
            state: DeliveryState::Waiting,
            attempts: 0,
            created_at: now,
            sealed_at: None,
            next_attempt_at: None,
            delivered_at: None,
            last_error: None,
        }
    }
}

/// 32 key bytes from 64 hex digits or base64 (standard, padded); the two never overlap
/// (base64 of 32 bytes is 44 characters).
fn aes_key(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    (bytes.len() == 32).then_some(bytes)
}

/// Railgun's key rule (`railgun/common/crypto.py`, `AESCipher`): the first 32 bytes of
/// `COMM_KEY`, or `COMM_KEY` padded with NUL bytes to 32.
pub fn railgun_key(comm_key: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    let n = comm_key.len().min(32);
    key[..n].copy_from_slice(&comm_key[..n]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, mode: Option<&str>, secret: Option<&str>) -> CallbackRequest {
        CallbackRequest {
            url: url.into(),
            mode: mode.map(|m| Mode::parse(m).unwrap()),
            secret: secret.map(|s| SecretText(s.into())),
        }
    }

    fn allow() -> AllowList {
        AllowList::parse(&["127.0.0.1:9000", "hooks.example.com"]).unwrap()
    }

    fn refused(r: CallbackRequest) -> String {
        match Callback::accept(r, &allow()) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("accepted {c:?}"),
        }
    }

    #[test]
    fn urls() {
        let u = CallbackUrl::parse("http://127.0.0.1:9000/hook?a=1").unwrap();
        assert_eq!(u.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(u.port, 9000);
        let u = CallbackUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!(u.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            CallbackUrl::parse("http://Hooks.Example.com").unwrap().port,
            80
        );
        for (bad, why) in [
            ("https://hooks.example.com/", "https"),
            ("ftp://hooks.example.com/", "http://"),
            ("hooks.example.com/x", "URL"),
            ("http://user:pw@hooks.example.com/", "user info"),
            ("http://hooks.example.com/#frag", "fragment"),
            ("http://hooks.example.com:0/", "port 0"),
            ("http://bad_host!/", "not"),
            ("http:///x", "not"),
        ] {
            let e = CallbackUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(CallbackUrl::parse(&format!("http://a.b/{}", "x".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn modes_and_keys() {
        let ok = |r| Callback::accept(r, &allow()).unwrap();
        let c = ok(req("http://127.0.0.1:9000/", None, None));
        assert_eq!((c.mode, c.key), (Mode::Plain, None));
        let c = ok(req(
            "http://hooks.example.com/",
            None,
            Some("0123456789abcdef"),
        ));
        assert_eq!(c.mode, Mode::Hmac, "a secret without a mode signs");
        assert_eq!(c.key.unwrap().bytes(), b"0123456789abcdef");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let c = ok(req("http://hooks.example.com/", Some("aes-gcm"), Some(hex)));
        assert_eq!(c.key.unwrap().bytes()[..3], [0x00, 0x11, 0x22]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let c = ok(req(
            "http://hooks.example.com/",
            Some("aes-gcm"),
            Some(&b64),
        ));
        assert_eq!(c.key.unwrap().bytes(), [7u8; 32]);
        let c = ok(req(
            "http://hooks.example.com/",
            Some("railgun-cbc"),
            Some("k"),
        ));
        let mut want = [0u8; 32];
        want[0] = b'k';
        assert_eq!(c.key.unwrap().bytes(), want);

        for (r, why) in [
            (req("http://127.0.0.1:9001/", None, None), "allow-list"),
            (req("http://localhost:9000/", None, None), "allow-list"),
            (req("http://evil.example.com/", None, None), "allow-list"),
            (
                req("http://hooks.example.com/", Some("plain"), Some("s")),
                "no secret",
            ),
            (
                req("http://hooks.example.com/", Some("hmac"), None),
                "needs one",
            ),
            (
                req("http://hooks.example.com/", None, Some("short")),
                "at least 16",
            ),
            (
                req("http://hooks.example.com/", Some("aes-gcm"), Some("abcd")),
                "32 bytes",
            ),
            (
                req(
                    "http://hooks.example.com/",
                    Some("aes-gcm"),
                    Some(&hex[..62]),
                ),
                "32 bytes",
            ),
            (
                req("http://hooks.example.com/", Some("railgun-cbc"), Some("")),
                "COMM_KEY",
            ),
            (
                req("http://hooks.example.com/", None, Some(&"s".repeat(1025))),
                "longer",
            ),
            (req("https://hooks.example.com/", None, None), "https"),
        ] {
            let e = refused(r);
            assert!(e.contains(why) && e.contains("'callback."), "{why}: {e}");
        }
        let e = Callback::accept(req("http://a.b/", None, None), &AllowList::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--callback-allow"), "{e}");
    }

    #[test]
    fn railgun_keys_follow_railgun() {
        assert_eq!(railgun_key(b"")[..], [0u8; 32]);
        let long = [b'x'; 40];
        assert_eq!(railgun_key(&long), [b'x'; 32]);
    }

    #[test]
    fn secrets_never_print() {
        let r = req("http://a.b/", None, Some("top-secret-value!"));
        assert!(!format!("{r:?}").contains("top-secret"));
        let c = Callback::accept(r, &AllowList::parse(&["a.b"]).unwrap()).unwrap();
        assert!(!format!("{c:?}").contains("top-secret"));
        assert!(
            !format!("{:?}", c.row(Subject::Execution("e".into()), Micros(0)))
                .contains("top-secret")
        );
    }
}
