//! Starting a sandbox's init: clone3 with every namespace but the network's (the calling
//! thread is in the one made ahead), the user namespace owned by the sandbox's host id range,
//! into the run's cgroup (v2: CLONE_INTO_CGROUP; v1: the thread clones from inside it); then
//! the id maps and init's OOM protection.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::cgroup::RunCgroup;
use crate::child;
use crate::error::Error;
use crate::ids::{ActingAs, IdRange};
use crate::namespaces;
use crate::netns::NetPool;
use crate::plan::EnvPlan;
use crate::sys::{self, CloneArgs, CLONE_INTO_CGROUP, CLONE_PIDFD};

/// clone3 with every namespace but the network's (init starts in `net`, which this thread
/// joins for the clone3 alone), the user namespace owned by the sandbox's id range; the child
/// runs `init_main` and never returns here.
pub(crate) fn init(
    plan: &EnvPlan,
    cgroup: &RunCgroup,
    ids: &IdRange,
    v1: bool,
    (netns, net): (&NetPool, &OwnedFd),
) -> Result<(i32, OwnedFd), Error> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: namespaces::clone_flags(!v1) | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        // No SIGCHLD: nobody else's waitpid(-1) may reap our init.
        exit_signal: 0,
        ..Default::default()
    };
    if let Some(dir) = cgroup.dir_fd() {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    let pid = netns.cloned_into(net, || {
        cgroup.cloned_inside(|| {
            let acting = ActingAs::new(ids.base())?;
            let no_writers = crate::fork_guard::cloning();
            // SAFETY: the child only runs `init_main`, which uses raw syscalls on `plan`
            // (prepared above) and ends in _exit.
            let result = unsafe { sys::clone3(&mut args) };
            drop((no_writers, acting));
            if let Ok(0) = result {
                // SAFETY: we are the child of clone3.
                unsafe { child::init_main(plan) }
            }
            result.map_err(|e| Error::Setup(format!("clone3: {e}")))
        })?
    })??;
    // SAFETY: the kernel stored a fresh pidfd for the child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let setup = || -> Result<(), Error> {
        namespaces::write_id_maps(pid, ids.base())?;
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
