//! The engine object: configuration shared by runs, and `run`.

use std::io::Write;
use std::path::PathBuf;

use crate::error::Error;
use crate::outcome::Outcome;
use crate::spec::Spec;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Parent cgroup (a path relative to each hierarchy's root, v1, or to the unified root,
    /// v2) under which run cgroups are created. Default: the engine's own cgroup.
    pub cgroup_parent: Option<PathBuf>,
    /// First host uid/gid of the range the sandbox's user namespace maps to (65536 ids).
    pub host_id_base: u32,
    /// Network namespaces prepared ahead of time (0 disables the pool).
    pub netns_pool_size: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cgroup_parent: None,
            host_id_base: 1_000_000,
            netns_pool_size: 0,
        }
    }
}

/// Where a run's streams go besides the capture, and how to stop it from outside.
#[derive(Default)]
pub struct Io {
    /// Receives stdout as it is written (up to the output limit), e.g. a terminal or a live log.
    pub stdout_sink: Option<Box<dyn Write + Send>>,
    pub stderr_sink: Option<Box<dyn Write + Send>>,
    /// Ends the run with `stopped` when triggered.
    pub stop: Option<StopHandle>,
}

/// A handle that stops a running sandbox (end reason `stopped`). Clone it freely.
#[derive(Clone, Default)]
pub struct StopHandle {}

// Temporary (branch `server`): the names the server codes against until the core lands on main.
impl StopHandle {
    pub fn new() -> Self {
        StopHandle {}
    }

    pub fn stop(&self) {}
}

/// Removes what crashed runs left behind (cgroups, mounts, processes); returns how many.
/// Temporary stub (branch `server`) until the core provides it.
pub fn cleanup_stale(_config: &SandboxConfig) -> usize {
    0
}

/// The sandbox engine. Cheap to share between threads (`&Sandbox` is `Sync`).
pub struct Sandbox {
    _config: SandboxConfig,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        Ok(Sandbox { _config: config })
    }

    /// Runs one program in a fresh sandbox.
    pub fn run(&self, _spec: &Spec, _io: Io) -> Result<Outcome, Error> {
        Err(Error::Setup("the sandbox core is being written".into()))
    }
}
