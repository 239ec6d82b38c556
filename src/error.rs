//! The engine's domain error: what went wrong, in classes a caller can act on. The HTTP layer
//! maps each class to a status and an error code (`server/errors.rs`); the domain never
//! speaks HTTP.

use crate::env::EnvError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field or parameter has a wrong or missing value.
    #[error("{0}")]
    Invalid(String),
    /// A path leaves the work directory.
    #[error("{0}")]
    BadPath(String),
    /// A requested limit is over the server's maximum or the API key's.
    #[error("{0}")]
    OverLimit(String),
    /// Over a storage quota: files per execution, bytes kept on disk (executions and kept
    /// files together).
    #[error("{0}")]
    OverQuota(String),
    /// Too many executions at once for this API key; try again after `retry_after` seconds.
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// A per-key quota on how many things are kept is used up (files kept by reference).
    #[error("{0}")]
    OverCountQuota(String),
    /// No token, or an unknown one.
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource is in the wrong state for this.
    #[error("{0}")]
    WrongState(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// An output the program left is not a regular file, or was never collected.
    #[error("{0}")]
    OutputRefused(String),
    #[error("{0}")]
    InUse(String),
    /// The engine failed (never the caller's fault). The text is for the server's log: the
    /// API shows a fixed message instead (it may name host paths).
    #[error("{0}")]
    Internal(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<EnvError> for Error {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::NotFound(id) => Error::NotFound(format!("no environment '{id}'")),
            EnvError::AlreadyExists(id) => {
                Error::AlreadyExists(format!("environment '{id}' already exists"))
            }
            EnvError::InUse(id) => Error::InUse(format!(
                "environment '{id}' is in use by a running execution"
            )),
            e @ EnvError::Fixed(_) => Error::Forbidden(e.to_string()),
            EnvError::InvalidId(id) => {
                Error::Invalid(format!("'{id}' is not a valid environment id"))
            }
            e @ (EnvError::Io { .. } | EnvError::Corrupt { .. }) => {
                Error::Internal(format!("environment store: {e}"))
            }
            // The image itself is wrong: a bad archive, a digest mismatch, an escaping entry.
            other => Error::Invalid(format!("environment: {other}")),
        }
    }
}

/// Runs blocking work (file systems, image unpacking) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))?
}
