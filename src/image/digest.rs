//! sha256 digests: parsing (the hex is used as a path component, so it is validated strictly),
//! and readers that hash and count what flows through them.

use std::io::{self, Read};

use sha2::Digest as _;

use super::error::{ImageError, Result};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(String);

impl Sha256 {
    /// Parses `sha256:<hex>`; anything else (other algorithms, odd characters) is refused.
    pub fn parse(text: &str) -> Result<Self> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::UnsupportedDigest(text.to_string()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ImageError::UnsupportedDigest(text.to_string()));
        }
        Ok(Sha256(hex.to_string()))
    }

    /// The hex part: safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0
    }

    fn from_hasher(h: sha2::Sha256) -> Self {
        Sha256(to_hex(&h.finalize()))
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The sha256 of some bytes, as a digest.
pub fn sha256_of(data: &[u8]) -> Sha256 {
    Sha256(to_hex(&sha2::Sha256::digest(data)))
}

/// A reader that hashes and counts everything read through it, and refuses to read more than
/// `limit` bytes (an error, not a silent stop: a too-large input must not look complete).
pub struct HashReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
    limit: u64,
    what: &'static str,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R, limit: u64, what: &'static str) -> Self {
        HashReader {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
            limit,
            what,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads whatever is left (a tar reader may stop at its end marker before EOF) and returns
    /// the digest of everything and the byte count.
    pub fn finish(mut self) -> io::Result<(Sha256, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Sha256::from_hasher(self.hasher), self.count))
    }
}

/// The marker inside an `io::Error` that says "over the size limit".
#[derive(Debug)]
pub struct OverLimit {
    pub what: &'static str,
    pub limit: u64,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is larger than {} bytes", self.what, self.limit)
    }
}

impl std::error::Error for OverLimit {}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(OverLimit {
                what: self.what,
                limit: self.limit,
            }));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Turns an I/O error from a reader chain into the right image error: over the limit, a
/// truncated stream, or plain I/O.
pub fn classify(context: &str, e: io::Error) -> ImageError {
    if let Some(over) = e.get_ref().and_then(|i| i.downcast_ref::<OverLimit>()) {
        return ImageError::TooLarge {
            what: format!("{context} ({})", over.what),
            limit: over.limit,
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ImageError::Truncated(format!("{context}: {e}")),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
            ImageError::Corrupt(format!("{context}: {e}"))
        }
        _ => ImageError::io(context.to_string(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let hex = "a".repeat(64);
        assert_eq!(Sha256::parse(&format!("sha256:{hex}")).unwrap().hex(), hex);
        assert!(Sha256::parse("sha512:abc").is_err());
        assert!(Sha256::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Sha256::parse(&format!("sha256:../{}", "a".repeat(61))).is_err());
    }

    #[test]
    fn hashes_and_limits() {
        let r = HashReader::new(&b"abc"[..], 10, "x");
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_of(b"abc"), d);
        let r = HashReader::new(&b"abcdef"[..], 4, "x");
        let e = r.finish().unwrap_err();
        assert!(matches!(classify("t", e), ImageError::TooLarge { .. }));
    }
}
