//! The isolation core of sandpit: one call runs one program in a fresh sandbox and returns an
//! [`Outcome`] that says what it used and why it ended.
//!
//! Every run gets its own user, pid, mount, network, ipc, uts and cgroup namespaces, a
//! read-only root filesystem with a tmpfs work directory and /tmp, no capabilities,
//! `no_new_privs`, a seccomp filter, rlimits, and its own cgroup (v1 or v2, detected at run
//! time) below the engine's own cgroup. Verdicts come from kernel evidence: the cgroup's OOM
//! kill counter, `pids.events`, seccomp notifications.
//!
//! The spawn path is safe in a multi-threaded program: everything the child needs is prepared
//! before `clone3` (or written later into a shared arena), and the child runs raw system calls
//! only (no allocation, no locks).
//!
//! A run is two steps, which [`Sandbox::run`] composes: [`Sandbox::prepare`] sets a sandbox up
//! for an [`EnvSpec`] (namespaces, cgroup, root filesystem; init waiting), and
//! [`Prepared::run`] starts the program in it, supervises it and ends the sandbox. A run
//! returns once its verdict is in; the sandbox's end (init's exit and the namespaces'
//! teardown, the cgroup's removal) is the engine's background work ([`Sandbox::settle`] waits
//! for it). Network namespaces and run cgroups are made ahead, also in the background
//! (`ahead`).
//!
//! ```no_run
//! use sandbox::{Io, RootFs, Sandbox, SandboxConfig, Spec};
//! use std::time::Duration;
//!
//! let engine = Sandbox::new(SandboxConfig::default())?;
//! let mut spec = Spec::new(
//!     RootFs::Dir("/var/lib/sandpit/rootfs/busybox".into()),
//!     vec!["/bin/sh".into(), "-c".into(), "echo hello".into()],
//! );
//! spec.limits.memory_bytes = Some(64 << 20);
//! spec.limits.cpu_time = Some(Duration::from_secs(1));
//! let outcome = engine.run(&spec, Io::default())?;
//! assert_eq!(outcome.end_reason.as_str(), "normal");
//! assert_eq!(outcome.stdout, b"hello\n");
//! # Ok::<(), sandbox::Error>(())
//! ```

mod ahead;
mod capabilities;
mod cgroup;
mod child;
mod config;
mod engine;
mod error;
mod files;
mod fork_guard;
mod group;
pub mod host;
mod ids;
mod io;
mod mount_template;
mod namespaces;
mod netns;
mod outcome;
mod paths;
mod plan;
mod pool;
mod prepared;
mod reaper;
mod report;
mod rlimits;
mod root_mount;
mod rootfs;
mod seccomp;
mod signals;
mod spawn;
mod spawner;
mod spec;
mod supervisor;
mod sys;
mod timeline;

pub use cgroup::CgroupVersion;
pub use config::SandboxConfig;
pub use engine::Sandbox;
pub use error::Error;
pub use group::{Group, GroupOutcome, Pipe, PipeCapture, PipeEnd, MAX_PIPE_FD, MAX_PROGRAMS};
pub use io::{Io, StopHandle};
pub use outcome::{EndReason, Outcome, SeccompViolation, TimeoutKind};
pub use paths::{RelPath, RelPathError, MAX_REL_PATH};
pub use pool::{Pool, PoolConfig, PoolRuns};
pub use prepared::Prepared;
pub use signals::signal_name;
pub use spec::{
    EnvSpec, FileIn, FileSource, Limits, RootFs, Spec, Stdin, DEFAULT_UID, DEFAULT_WORKDIR,
};
pub use supervisor::MAX_REPORTED_DENIALS;
