//! sha256 digests: parsing (the hex is used as a path component, so it is validated strictly),
//! and readers that hash and count what flows through them.

use std::io::{self, Read};

use sha2::Digest as _;

use super::error::{ImageError, Limit, NoSpace, OverLimit, Result};

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

/// A reader that hashes and counts everything read through it; a capped one refuses to read
/// more than its cap (an error, not a silent stop: a too-large input must not look complete).
pub struct HashReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
    cap: Option<(Limit, u64)>,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
            cap: None,
        }
    }

    /// Refuses more than `max` bytes; `limit` names the setting in the error.
    pub fn capped(inner: R, limit: Limit, max: u64) -> Self {
        HashReader {
            cap: Some((limit, max)),
            ..Self::new(inner)
        }
    }

    /// Reads whatever is left (a tar reader may stop at its end marker before EOF) and returns
    /// the digest of everything and the byte count.
    pub fn finish(mut self) -> io::Result<(Sha256, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Sha256::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some((limit, max)) = self.cap {
            if self.count > max {
                return Err(io::Error::other(OverLimit {
                    limit,
                    max,
                    what: "stream".into(),
                }));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Finds an error of type `T` anywhere in an I/O error's chain (decompressors and the tar
/// reader may wrap what a reader below them returned).
fn find_in_chain<T: std::error::Error + 'static>(e: &io::Error) -> Option<&T> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(found) = cur.downcast_ref::<T>() {
            return Some(found);
        }
        // io::Error's own source() skips the error it wraps: step into it explicitly.
        let inner = cur
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        cur = match inner {
            Some(inner) => inner,
            None => cur.source()?,
        };
    }
}

/// Turns an I/O error from a reader chain into the right image error: over a limit, out of
/// room, a truncated stream, or plain I/O.
pub fn classify(context: &str, e: io::Error) -> ImageError {
    if let Some(over) = find_in_chain::<OverLimit>(&e) {
        return ImageError::OverLimit(OverLimit {
            what: context.to_string(),
            ..over.clone()
        });
    }
    if let Some(full) = find_in_chain::<NoSpace>(&e) {
        return ImageError::NoSpace(full.clone());
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
        let r = HashReader::new(&b"abc"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_of(b"abc"), d);
        let r = HashReader::capped(&b"abcdef"[..], Limit::BlobBytes, 4);
        let e = r.finish().unwrap_err();
        match classify("t", e) {
            ImageError::OverLimit(o) => assert_eq!(
                (o.limit, o.max, o.what.as_str()),
                (Limit::BlobBytes, 4, "t")
            ),
            other => panic!("{other}"),
        }
        // Found through layers of wrapping.
        let wrapped = io::Error::other(io::Error::other(OverLimit {
            limit: Limit::Entries,
            max: 1,
            what: String::new(),
        }));
        assert!(matches!(
            classify("w", wrapped),
            ImageError::OverLimit(OverLimit {
                limit: Limit::Entries,
                ..
            })
        ));
    }
}
