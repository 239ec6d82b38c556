//! The engine: what every sandbox of this process shares (the cgroup hierarchy, the compiled
//! seccomp policy, the pool of network namespaces), and the one-shot run.

use crate::capabilities;
use crate::cgroup::{CgroupManager, CgroupVersion};
use crate::config::SandboxConfig;
use crate::error::Error;
use crate::ids::IdRanges;
use crate::io::Io;
use crate::netns_pool::NetnsPool;
use crate::outcome::Outcome;
use crate::prepared::Prepared;
use crate::seccomp::{self, CompiledPolicy};
use crate::spec::{EnvSpec, Spec};

/// The sandbox engine. Share it between threads (`&Sandbox` is `Sync`).
pub struct Sandbox {
    pub(crate) config: SandboxConfig,
    pub(crate) cgroups: CgroupManager,
    pub(crate) policy: CompiledPolicy,
    pub(crate) last_cap: u8,
    /// CPUs a sandbox may use at once: its CPU time grows at most this fast.
    pub(crate) cpus: u64,
    pub(crate) netns: Option<NetnsPool>,
    pub(crate) ids: IdRanges,
}

impl Sandbox {
    /// Prepares the engine: finds the cgroup hierarchy, compiles the seccomp policy, starts
    /// the network namespace pool. Needs root.
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Setup("sandpit must run as root".into()));
        }
        let ids = IdRanges::new(config.host_id_base, config.max_sandboxes)?;
        std::fs::create_dir_all(&config.runtime_dir)
            .map_err(|e| Error::Setup(format!("creating {}: {e}", config.runtime_dir.display())))?;
        let cgroups = CgroupManager::detect(config.cgroup_parent.as_deref())?;
        let policy = seccomp::default_policy()?;
        let netns = match config.netns_pool_size {
            0 => None,
            n => Some(NetnsPool::start(n)?),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Ok(Sandbox {
            config,
            cgroups,
            policy,
            last_cap: capabilities::last_cap(),
            cpus,
            netns,
            ids,
        })
    }

    /// The cgroup interface in use.
    pub fn cgroup_version(&self) -> CgroupVersion {
        self.cgroups.version()
    }

    /// Removes cgroups left by engines that died (crash, kill -9); returns how many.
    pub fn cleanup_stale(&self) -> usize {
        self.cgroups.cleanup_stale()
    }

    /// Sets up a sandbox for `env` (namespaces, cgroup, root filesystem) whose init waits for
    /// one program: see [`Prepared::run`]. `Err(Error::SandboxFailed)` when the sandbox itself
    /// could not be set up.
    pub fn prepare(&self, env: &EnvSpec) -> Result<Prepared, Error> {
        Prepared::create(self, env)
    }

    /// Runs one program in a fresh sandbox. `Err` only for a spec that cannot run as given;
    /// a failure of the sandbox itself is an outcome with `end_reason: internal-error`.
    pub fn run(&self, spec: &Spec, io: Io) -> Result<Outcome, Error> {
        match self.prepare(&spec.env_spec()) {
            Ok(prepared) => prepared.run(spec, io),
            Err(Error::SandboxFailed(message)) => Ok(Outcome::internal_error(message)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sandbox_is_shareable() {
        fn is_sync<T: Sync + Send>() {}
        is_sync::<super::Sandbox>();
        is_sync::<super::Prepared>();
    }
}
