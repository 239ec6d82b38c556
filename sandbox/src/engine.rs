//! The engine: what every sandbox of this process shares (the cgroup hierarchy, the compiled
//! seccomp policy, the host id ranges), and the one-shot run.

use crate::capabilities;
use crate::cgroup::{CgroupManager, CgroupVersion};
use crate::config::SandboxConfig;
use crate::error::Error;
use crate::group::{Group, GroupOutcome};
use crate::ids::IdRanges;
use crate::io::Io;
use crate::netns::NetPool;
use crate::outcome::Outcome;
use crate::plan::{Arenas, EngineImage, InitConsts, PROGRAM_STACK_BYTES};
use crate::prepared::Prepared;
use crate::reaper::Reaper;
use crate::seccomp::{self, CompiledPolicy};
use crate::spawner::Spawner;
use crate::spec::{EnvSpec, Spec};

/// Below the runtime directory: where a sandbox attaches its root, mounts its scratch space,
/// and where the mount-point layers are kept.
pub(crate) const STAGE: &str = "stage";
pub(crate) const SCRATCH: &str = "scratch";
pub(crate) const POINTS: &str = "points";
/// Below the runtime directory: the lock files of the host id ranges.
const IDS: &str = "ids";

/// Creates a directory of the engine's, open to everyone: a sandbox's unprivileged root walks
/// to it in its own mount namespace.
fn make_runtime_dir(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |e: std::io::Error| Error::Setup(format!("creating {}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(failed)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
    // Every parent must let others through.
    for parent in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(parent)
            .map_err(failed)?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(Error::Setup(format!(
                "the runtime directory {} lies below {}, which only its owner may enter: \
                 sandboxes could not reach it",
                dir.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

/// The sandbox engine. Share it between threads (`&Sandbox` is `Sync`).
pub struct Sandbox {
    /// First: dropped (joined) before the cgroups its sandboxes' ends remove.
    pub(crate) reaper: Reaper,
    /// Clones the inits of an engine that runs many sandboxes (none: one-shot, the engine's
    /// thread clones). Ended before the engine leaves its cgroup, where the spawner is too.
    pub(crate) spawner: Option<Spawner>,
    pub(crate) netns: NetPool,
    pub(crate) config: SandboxConfig,
    pub(crate) cgroups: CgroupManager,
    /// The compiled seccomp filter `init_consts.filter` points into.
    _policy: CompiledPolicy,
    /// CPUs a sandbox may use at once: its CPU time grows at most this fast.
    pub(crate) cpus: u64,
    pub(crate) ids: IdRanges,
    /// Every program arena, mapped before the spawner was forked.
    pub(crate) arenas: Arenas,
    /// What every init of this engine shares (the spawner has a copy).
    pub(crate) init_consts: InitConsts,
    /// The memory `init_consts.program_stack` points at: never touched by the engine, copied
    /// (still zero) into each init.
    _program_stack: Box<[u8]>,
}

impl Sandbox {
    /// Prepares the engine: checks the kernel ([`crate::host`]), finds the cgroup hierarchy
    /// and places itself in it (on v2 in a leaf of its own, undone when the engine is dropped),
    /// compiles the seccomp policy. Needs root. Refuses a cgroup without memory and pids
    /// delegated with [`Error::NotDelegated`].
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Setup("sandpit must run as root".into()));
        }
        crate::host::require()?;
        for dir in [STAGE, SCRATCH, POINTS] {
            make_runtime_dir(&config.runtime_dir.join(dir))?;
        }
        // After the runtime directory exists, made open to all above.
        let ids = IdRanges::new(
            config.host_id_base,
            config.max_sandboxes,
            &config.runtime_dir.join(IDS),
        )?;
        let mut cgroups = CgroupManager::detect(config.cgroup_parent.as_deref())?;
        // Started as early as it may (once the engine sits where it stays, so the short-lived
        // maker processes never share the cgroup it checked): the first run's is then made
        // while the rest starts.
        let netns = NetPool::start(!config.one_shot)?;
        // A one-shot engine makes its one cgroup itself: a third thread beside the network
        // namespace's maker and the engine's start slowed `sandpit run` down on two CPUs.
        if !config.one_shot {
            cgroups.make_ahead()?;
        }
        let policy = seccomp::default_policy()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let reaper =
            Reaper::start().map_err(|e| Error::Setup(format!("starting the reaper: {e}")))?;
        let arenas = Arenas::new(config.max_sandboxes as usize)
            .map_err(|e| Error::Setup(format!("mapping the program arenas: {e}")))?;
        let program_stack = vec![0u8; PROGRAM_STACK_BYTES].into_boxed_slice();
        let consts = InitConsts {
            last_cap: capabilities::last_cap(),
            filter: policy.filter(),
            engine_image: EngineImage::of_this_process(),
            arenas: arenas.bounds(),
            program_stack: (program_stack.as_ptr() as usize, program_stack.len()),
        };
        let spawner = if config.one_shot {
            None
        } else {
            Some(Spawner::start(
                consts,
                cgroups.v1_home_of_this_thread()?,
                config.runtime_dir.clone(),
            )?)
        };
        Ok(Sandbox {
            reaper,
            spawner,
            netns,
            config,
            cgroups,
            _policy: policy,
            cpus,
            ids,
            arenas,
            init_consts: consts,
            _program_stack: program_stack,
        })
    }

    /// Returns once every sandbox whose run returned has ended too: init reaped, cgroup
    /// removed. (A run returns as soon as its verdict is in; the rest is done in the
    /// background, and dropping the engine waits for it.)
    pub fn settle(&self) {
        self.reaper.settle();
    }

    /// The cgroup interface in use.
    pub fn cgroup_version(&self) -> CgroupVersion {
        self.cgroups.version()
    }

    /// The name of the run cgroup this engine made ahead for its next sandbox, if one is
    /// ready (the one being made is waited for): the one cgroup of this engine's that
    /// outlives its runs (dropping the engine, or the process's exit, removes it).
    pub fn cgroup_made_ahead(&self) -> Option<String> {
        self.cgroups.made_ahead()
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

    /// Runs several programs at once, each in a fresh sandbox of its own, wired by pipes (see
    /// [`Group`]); `ios[i]` is program *i*'s. `Err` only for a group that cannot run as given
    /// (a bad graph names the pipe).
    pub fn run_group(&self, group: &Group, ios: Vec<Io>) -> Result<GroupOutcome, Error> {
        crate::group::run(self, group, ios)
    }

    /// Runs one program in a fresh sandbox. `Err` only for a spec that cannot run as given;
    /// a failure of the sandbox itself is an outcome with `end_reason: internal-error`.
    pub fn run(&self, spec: &Spec, io: Io) -> Result<Outcome, Error> {
        // The next fresh sandbox's cgroup is made ahead with these limits written: a stream of
        // runs that ask the same writes none on the run's path.
        self.cgroups.expect_limits(&spec.limits);
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
