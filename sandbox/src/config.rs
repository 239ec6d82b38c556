//! Engine-wide settings.

use std::path::PathBuf;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Parent cgroup (a path relative to each hierarchy's root, v1, or to the unified root,
    /// v2) under which run cgroups are created. Default: the engine's own cgroup.
    pub cgroup_parent: Option<PathBuf>,
    /// First host uid/gid of the ranges sandboxes map their user namespace to: sandbox *k* of
    /// those that exist at once gets `host_id_base + k * 65536 ..` (65536 ids). Engines that
    /// share a runtime directory share the ranges: each is held by a lock file in its `ids/`.
    pub host_id_base: u32,
    /// How many sandboxes may exist at once (each holds one id range while it exists).
    pub max_sandboxes: u32,
    /// A directory the engine owns (it must be reachable by every user: sandboxes mount on
    /// directories below it, inside their own mount namespace; nothing is mounted on the host).
    pub runtime_dir: PathBuf,
    /// The engine runs one sandbox and ends (`sandpit run`): what is made ahead for the next
    /// sandboxes (a network namespace) is made for the first one only.
    pub one_shot: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cgroup_parent: None,
            host_id_base: 1_000_000,
            max_sandboxes: 1024,
            runtime_dir: PathBuf::from("/run/sandpit"),
            one_shot: false,
        }
    }
}
