//! Starting a sandbox's init: clone3 with every namespace but the network's (the cloning
//! thread joins the one made ahead for the clone alone), the user namespace owned by the
//! sandbox's host id range, into the run's cgroup (v2: CLONE_INTO_CGROUP; v1: the thread clones
//! from inside it); then the id maps and init's OOM protection.
//!
//! Who clones: an engine that runs many sandboxes asks its spawner (see `spawner`), a small
//! process forked when the engine started, so that no init is a copy of the engine's memory;
//! a one-shot engine (`sandpit run`), or one whose spawner is gone, clones from its own
//! thread. Both run [`clone_init`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::cgroup::{CloneInto, RunCgroup};
use crate::child;
use crate::engine::Sandbox;
use crate::error::Error;
use crate::ids::{ActingAs, IdRange};
use crate::mount_template::MountTemplate;
use crate::namespaces;
use crate::netns;
use crate::plan::{EnvPlan, ProgramPlan};
use crate::rootfs::RootPlan;
use crate::spawner::SpawnFailure;
use crate::sys::{self, CloneArgs, CLONE_INTO_CGROUP, CLONE_PIDFD};

/// One sandbox's init, as the engine asks for it.
pub(crate) struct InitRequest<'a> {
    pub root: RootPlan,
    /// The root filesystem as a detached mount.
    pub root_fd: RawFd,
    /// The child's end of the report socket.
    pub report: RawFd,
    /// Where the program's plan will be, in the engine's arena.
    pub program: *const ProgramPlan,
    pub cgroup: &'a RunCgroup,
    pub ids: &'a IdRange,
    /// The network namespace made ahead for this sandbox.
    pub net: RawFd,
}

/// Where and as whom the cloning thread makes init.
pub(crate) struct Site<'a> {
    /// The mount namespace init's is a copy of: the spawner's template (see
    /// `mount_template`), or none (the cloning thread's own).
    pub mounts: Option<&'a MountTemplate>,
    pub net: RawFd,
    /// The cloning thread's own network namespace, to return to.
    pub home_net: RawFd,
    pub cgroup: CloneInto,
    pub ids_base: u32,
    /// 0 from the engine (no SIGCHLD: nobody else's waitpid(-1) may reap our init); SIGCHLD
    /// from the spawner, which ignores it, so that the kernel reaps its inits as they end.
    pub exit_signal: u64,
}

/// Starts init for `request`, then writes its id maps and protects it from the OOM killer.
pub(crate) fn init(engine: &Sandbox, request: InitRequest) -> Result<(i32, OwnedFd), Error> {
    let ids_base = request.ids.base();
    let spawned = match &engine.spawner {
        Some(spawner) => match spawner.spawn(&request) {
            Ok(spawned) => Some(spawned),
            Err(SpawnFailure::Clone(e)) => return Err(e),
            Err(SpawnFailure::Gone(why)) => {
                static TOLD: std::sync::Once = std::sync::Once::new();
                TOLD.call_once(|| {
                    tracing::warn!(
                        "the spawner is gone ({why}): the engine clones sandboxes itself"
                    )
                });
                None
            }
        },
        None => None,
    };
    let (pid, pidfd) = match spawned {
        Some(spawned) => spawned,
        None => {
            let site = Site {
                mounts: None,
                net: request.net,
                home_net: engine.netns.host(),
                cgroup: request.cgroup.clone_into()?,
                ids_base,
                exit_signal: 0,
            };
            let plan = EnvPlan {
                root: request.root,
                root_fd: request.root_fd,
                report: request.report,
                program: request.program,
                consts: engine.init_consts,
            };
            let _no_writers = crate::fork_guard::cloning();
            clone_init(&plan, &site)?
        }
    };
    let setup = || -> Result<(), Error> {
        namespaces::write_id_maps(pid, ids_base)?;
        protect_init(pid);
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = sys::pidfd_send_signal(pidfd.as_raw_fd(), libc::SIGKILL);
        sys::pidfd_reap(&pidfd);
        return Err(e);
    }
    Ok((pid, pidfd))
}

/// clone3 from the calling thread with every namespace but the network's (init starts in
/// `site.net`, which this thread joins for the clone3 alone), the user namespace owned by the
/// sandbox's id range; the child runs `init_main` and never returns here.
pub(crate) fn clone_init(plan: &EnvPlan, site: &Site) -> Result<(i32, OwnedFd), Error> {
    let v2 = matches!(site.cgroup, CloneInto::Dir(_));
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: namespaces::clone_flags(v2) | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: site.exit_signal,
        ..Default::default()
    };
    if let CloneInto::Dir(dir) = site.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir as u64;
    }
    let pid = netns::cloned_into(site.net, site.home_net, || {
        site.cgroup.around(|| {
            let mut clone = || {
                let acting = ActingAs::new(site.ids_base)?;
                // SAFETY: the child only runs `init_main`, which uses raw syscalls on `plan`
                // (prepared above) and ends in _exit.
                let result = unsafe { sys::clone3(&mut args) };
                drop(acting);
                if let Ok(0) = result {
                    // SAFETY: we are the child of clone3.
                    unsafe { child::init_main(plan) }
                }
                result.map_err(|e| Error::Setup(format!("clone3: {e}")))
            };
            match site.mounts {
                Some(template) => template.entered(clone).map_err(|e| {
                    Error::Setup(format!("entering the mount namespace template: {e}"))
                })?,
                None => clone(),
            }
        })?
    })??;
    // SAFETY: the kernel stored a fresh pidfd for the child.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// Makes init exempt from the OOM killer where the engine may (CAP_SYS_RESOURCE): it reports
/// the program's end and holds the sandbox together, so a victim must be one of the program's
/// processes. The legacy `oom_adj` file is used on purpose: unlike `oom_score_adj`, writing it
/// does not lower the floor the program may set itself to, so the program (which raises its
/// own score to 1000 before exec) can never make itself exempt too. Without the capability
/// init keeps score 0 and the program's 1000 still makes it the first choice.
fn protect_init(pid: i32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_adj"), "-17") {
        tracing::debug!("init of sandbox {pid} keeps its OOM score: {e}");
    }
}
