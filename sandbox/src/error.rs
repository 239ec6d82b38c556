//! Errors a caller can get back before a sandbox exists.

use std::path::PathBuf;

/// An error of the sandbox engine. A failure *inside* a run (a mount that failed, say) is not
/// an `Error`: it is an [`crate::Outcome`] with `end_reason: internal-error` and a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is not runnable as given (the caller's input).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The root filesystem is missing or unusable.
    #[error("root filesystem {path}: {reason}")]
    RootFs { path: PathBuf, reason: String },
    /// cgroups could not be found or used.
    #[error("cgroups: {0}")]
    Cgroup(String),
    /// The engine's cgroup (or the configured parent) lacks the controllers runs need; the
    /// message says what to enable.
    #[error("{0}")]
    NotDelegated(String),
    /// The seccomp policy did not compile.
    #[error("seccomp policy: {0}")]
    Seccomp(String),
    /// The engine itself could not start (not root, kernel too old, …).
    #[error("engine setup: {0}")]
    Setup(String),
    /// A sandbox could not be set up (a mount that failed, a cgroup that could not be made);
    /// never the program's fault. [`crate::Sandbox::run`] reports it as an `internal-error`
    /// outcome instead.
    #[error("{0}")]
    SandboxFailed(String),
}
