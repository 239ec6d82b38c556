//! The mount namespace the spawner clones inits from: a tmpfs root that holds only what init's
//! setup needs (the runtime directory's stage and scratch, the devices it binds, a proc),
//! instead of the host's whole mount table.
//!
//! Why: clone3 with CLONE_NEWNS copies every mount of the cloner's namespace, and init detaches
//! them all again after its pivot_root, so every sandbox paid twice for each mount of the host
//! (21 on the build machine; a host with snaps has dozens more). 60 more mounts on the host
//! made a fresh run 0.15–0.19 ms slower (`phases`, 100 runs each way, alternated). Nothing of
//! the sandbox changes: init's root is still the image it pivots into, and the host's mounts
//! were never reachable from it.
//!
//! The template is made once, by the spawner (a process of one thread: entering a mount
//! namespace needs a filesystem context of its own), which enters it for each clone3 alone and
//! returns to the host's right after, as it does for the network namespace made ahead.

use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::engine::{SCRATCH, STAGE};
use crate::rootfs::DEVICES;

/// The template namespace, and the host's to return to.
pub(crate) struct MountTemplate {
    template: OwnedFd,
    host: OwnedFd,
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

impl MountTemplate {
    /// Makes the template for an engine whose runtime directory is `runtime_dir`. The calling
    /// process must have one thread; it is back in the host's namespace when this returns,
    /// or it ends (see [`stranded`]).
    pub(crate) fn make(runtime_dir: &Path) -> std::io::Result<MountTemplate> {
        let host: OwnedFd = File::open("/proc/thread-self/ns/mnt")?.into();
        unshare(CloneFlags::CLONE_NEWNS).map_err(io)?;
        // Opened before `build` detaches /proc with the rest of the host's mounts.
        let made = File::open("/proc/thread-self/ns/mnt")
            .and_then(|template| build(runtime_dir).map(|()| OwnedFd::from(template)));
        // Back to the host's, whether or not the template was made.
        if setns(host.as_fd(), CloneFlags::CLONE_NEWNS).is_err() {
            stranded();
        }
        Ok(MountTemplate {
            template: made?,
            host,
        })
    }

    /// Runs `clone` in the template namespace, then returns to the host's (or ends the
    /// process, see [`stranded`]).
    pub(crate) fn entered<T>(&self, clone: impl FnOnce() -> T) -> std::io::Result<T> {
        setns(self.template.as_fd(), CloneFlags::CLONE_NEWNS).map_err(io)?;
        let result = clone();
        if setns(self.host.as_fd(), CloneFlags::CLONE_NEWNS).is_err() {
            stranded();
        }
        Ok(result)
    }
}

/// Outside the host's mount namespace the spawner could not reach the cgroups (v1) it moves
/// through: it ends, and the engine, which survives its spawner's end, clones itself.
fn stranded() -> ! {
    // SAFETY: _exit never returns and runs no atexit handlers.
    unsafe { libc::_exit(1) }
}

/// In a new mount namespace: a small tmpfs with the runtime directory's stage and scratch,
/// the devices and a proc, made this namespace's root (the host's mounts detached).
fn build(runtime_dir: &Path) -> std::io::Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(io)?;
    // Our own directory on the host, covered in this namespace only.
    let top = runtime_dir.join(STAGE);
    mount(
        Some("sandpit-template"),
        &top,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=16k,mode=0755"),
    )
    .map_err(io)?;
    let inside = top.join(runtime_dir.strip_prefix("/").unwrap_or(runtime_dir));
    for dir in [STAGE, SCRATCH] {
        fs::create_dir_all(inside.join(dir))?;
    }
    let dev = top.join("dev");
    fs::create_dir(&dev)?;
    for name in DEVICES {
        let target = dev.join(name);
        File::create(&target)?;
        mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(io)?;
    }
    // The kernel lets init (in a user namespace) mount a proc of its own only where a proc
    // is already fully visible in its namespace (`mount_too_revealing`): as the host's is in a
    // copy of the host's table.
    let proc = top.join("proc");
    fs::create_dir(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(io)?;
    std::env::set_current_dir(&top)?;
    nix::unistd::pivot_root(".", ".").map_err(io)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(io)?;
    std::env::set_current_dir("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Inits copy the template, so it must hold what their setup needs and nothing of the
    /// host's. Made in a forked child: entering a mount namespace needs a process of one
    /// thread, and the test harness has several.
    #[test]
    fn the_template_holds_the_stage_the_devices_and_a_proc_and_none_of_the_hosts_mounts() {
        let runtime = tempfile::tempdir().expect("tempdir");
        for dir in [STAGE, SCRATCH] {
            fs::create_dir(runtime.path().join(dir)).expect("mkdir");
        }
        let (read, write) = crate::sys::pipe().expect("pipe");
        // SAFETY: the child only makes the template, reads a file, writes to a pipe and
        // _exits; glibc's fork leaves malloc usable in it.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let seen = MountTemplate::make(runtime.path()).and_then(|template| {
                template.entered(|| {
                    let stage = runtime.path().join(STAGE).is_dir();
                    let scratch = runtime.path().join(SCRATCH).is_dir();
                    fs::read_to_string("/proc/self/mountinfo")
                        .map(|m| format!("{stage} {scratch}\n{m}"))
                })?
            });
            let text = seen.unwrap_or_else(|e| format!("error: {e}"));
            let _ = File::from(write).write_all(text.as_bytes());
            // SAFETY: ends the forked child without running the harness's exit handlers.
            unsafe { libc::_exit(0) };
        }
        drop(write);
        let mut text = String::new();
        File::from(read).read_to_string(&mut text).expect("read");
        let mut status = 0;
        // SAFETY: waitpid on our own child with a live status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("true true"), "{text}");
        let mut points: Vec<String> = lines
            .filter_map(|l| l.split(' ').nth(4))
            .map(String::from)
            .collect();
        points.sort_unstable();
        let mut wanted: Vec<String> = DEVICES.iter().map(|d| format!("/dev/{d}")).collect();
        wanted.extend(["/".to_string(), "/proc".to_string()]);
        wanted.sort_unstable();
        assert_eq!(points, wanted, "{text}");
    }
}
