//! Why an image could not be imported. Every hostile input has its own variant so that callers
//! (CLI, HTTP API, tests) can tell a refused archive from a broken disk.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("not an OCI image layout: {0}")]
    InvalidLayout(String),
    #[error("unsupported digest '{0}' (only sha256 is supported)")]
    UnsupportedDigest(String),
    #[error("the image names blob {0}, which is not in the layout")]
    MissingBlob(String),
    #[error("blob {expected} does not match its digest (content hashes to {actual})")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {layer}: uncompressed content hashes to {actual}, the config's diff_id is {expected}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("unsupported media type '{0}'")]
    UnsupportedMediaType(String),
    #[error("no manifest for linux in the image index")]
    NoManifest,
    #[error("archive entry '{entry}': {reason}")]
    UnsafePath { entry: String, reason: String },
    #[error("archive entry '{entry}' links to '{target}', outside the image root")]
    LinkEscapes { entry: String, target: String },
    #[error("archive entry '{entry}' is a {kind}, which images may not contain")]
    SpecialFile { entry: String, kind: String },
    #[error("archive is truncated: {0}")]
    Truncated(String),
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("corrupt archive: {0}")]
    Corrupt(String),
}

impl ImageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
