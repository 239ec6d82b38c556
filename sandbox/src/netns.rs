//! Network namespaces made ahead. Creating one is the dearest part of a sandbox's start
//! (about 0.6 ms here: loopback, sysctl tables, IPv6 address configuration), and nothing in
//! it depends on the program, so the engine keeps one ready, made by a background thread,
//! and a sandbox's init is cloned into one (the cloning thread joins it for the clone3 and
//! returns to the host's right after).
//!
//! Each is owned by a user namespace of its own, made with it and holding nothing else: not
//! the host's (a network namespace owned by the initial user namespace receives the host's
//! device uevents), and not the sandbox's (whose root could then reconfigure it). Its
//! loopback interface is up before any sandbox enters it. A namespace serves one sandbox.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::ahead::Ahead;
use crate::error::Error;
use crate::namespaces;
use crate::sys::errno;

/// The engine's network namespaces made ahead (one ready: a run that finds none makes its
/// own, so more would only help bursts of fresh sandboxes, which the pool of prepared
/// sandboxes absorbs).
pub(crate) struct NetPool {
    ahead: Ahead<OwnedFd>,
    /// The host's network namespace: where the cloning thread returns.
    host: OwnedFd,
}

impl NetPool {
    /// Starts the thread that makes them: it keeps one ready, or (not `refill`, an engine
    /// that runs one sandbox) makes the first one only.
    pub(crate) fn start(refill: bool) -> Result<NetPool, Error> {
        let host = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::Setup(format!("opening /proc/thread-self/ns/net: {e}")))?
            .into();
        let ahead = Ahead::start("sandpit-netns", "network namespace", refill, make)?;
        Ok(NetPool { ahead, host })
    }

    /// A fresh network namespace: one made ahead, the one being made (it is further along
    /// than a new one would be), or one made now.
    /// The next one is made from now on: it is the slowest part of a sandbox to make, and
    /// waits in the kernel behind the teardown of the last sandbox's, so it starts as early
    /// as it may. (Made after the clone instead, beside init's mounts, it doubled them:
    /// 410 → 810–880 µs, `phases`, median of 300.)
    pub(crate) fn take(&self) -> Result<OwnedFd, Error> {
        let taken = self.ahead.take().map_or_else(make, Ok);
        self.ahead.make_next();
        taken
    }

    /// The host's network namespace, where a thread that cloned into another returns.
    pub(crate) fn host(&self) -> RawFd {
        self.host.as_raw_fd()
    }
}

fn setns(ns: RawFd) -> std::io::Result<()> {
    // SAFETY: setns on an fd the caller holds; affects the calling thread only.
    if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `clone` with the calling thread in network namespace `net`, then puts the thread back
/// into `home`: what `clone` creates starts in `net`. (The child of a clone made in `clone`
/// must never return from it.)
pub(crate) fn cloned_into<T>(
    net: RawFd,
    home: RawFd,
    clone: impl FnOnce() -> T,
) -> Result<T, Error> {
    setns(net).map_err(|e| Error::Setup(format!("joining a network namespace: {e}")))?;
    let result = clone();
    if let Err(e) = setns(home) {
        // This thread must never go on in a sandbox's namespace.
        panic!("returning to the host's network namespace failed: {e}");
    }
    Ok(result)
}

/// What the maker process leaves in the memory it shares with us.
struct Made {
    fd: libc::c_int,
    /// The errno of the step that failed, and which one.
    error: libc::c_int,
    step: &'static str,
}

extern "C" fn maker(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Made` of `make`, whose thread is suspended (CLONE_VFORK) until
    // this process exits; only raw syscalls below, on this process's own stack.
    let made = unsafe { &mut *(arg as *mut Made) };
    if let Err(e) = namespaces::loopback_up() {
        (made.error, made.step) = (e, "bringing up its loopback interface");
        return 1;
    }
    // The fd table is shared (CLONE_FILES): the fd stays ours after this process exits.
    // SAFETY: open of a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        (made.error, made.step) = (errno(), "opening it");
        return 1;
    }
    made.fd = fd;
    0
}

/// Makes a network namespace (owned by a user namespace of its own) with loopback up: a
/// short-lived process shares our memory and fd table, creates both namespaces as it is
/// cloned, and leaves an fd of the network namespace in our table.
fn make() -> Result<OwnedFd, Error> {
    let mut made = Made {
        fd: -1,
        error: 0,
        step: "",
    };
    let mut stack = vec![0u8; 64 << 10];
    let top = ((stack.as_mut_ptr() as usize + stack.len()) & !15) as *mut libc::c_void;
    let flags = libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::CLONE_FILES
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWNET;
    // SAFETY: `maker` runs on `stack` and only writes `made`; this thread is suspended until
    // it exits (CLONE_VFORK), so both outlive it. Exit signal 0: nobody else's wait reaps it.
    let pid = unsafe { libc::clone(maker, top, flags, &mut made as *mut Made as *mut _) };
    let failed = |what: &str, e: std::io::Error| {
        Error::SandboxFailed(format!("making a network namespace failed at {what}: {e}"))
    };
    if pid < 0 {
        return Err(failed("clone", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waitpid for our own child; __WALL because it signals nobody at exit.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    drop(stack);
    if made.fd < 0 {
        return Err(failed(
            made.step,
            std::io::Error::from_raw_os_error(made.error),
        ));
    }
    // SAFETY: the maker opened this fd in our shared table and nothing else holds it.
    Ok(unsafe { OwnedFd::from_raw_fd(made.fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_id(fd: &OwnedFd) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    /// Each taken namespace is a new one, the background keeps some ready, and the thread
    /// that joined one for a clone is back in the host's.
    #[test]
    fn namespaces_are_fresh_ready_ahead_and_the_thread_comes_back() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root");
            return;
        }
        let pool = NetPool::start(true).unwrap();
        let host = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let net = pool.take().unwrap();
            assert!(seen.insert(ns_id(&net)), "a namespace was given twice");
            use std::os::unix::fs::MetadataExt;
            let inside = cloned_into(net.as_raw_fd(), pool.host(), || {
                std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
            })
            .unwrap();
            assert_eq!(inside, ns_id(&net));
            let back = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
            assert_eq!(back.ino(), host.ino());
        }
        for _ in 0..1000 {
            if pool.ahead.look_ready(|r| r.is_some()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            pool.ahead.look_ready(|r| r.is_some()),
            "none was made ahead"
        );
    }

    /// A one-shot engine's thread stops after its one namespace.
    fn assert_thread_stops(pool: &NetPool) {
        for _ in 0..1000 {
            if pool.ahead.thread_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            pool.ahead.thread_finished(),
            "the thread stopped after its one"
        );
    }

    /// A one-shot engine's thread makes the first namespace, which the first take gets (it
    /// waits for it rather than making another), and then makes none.
    #[test]
    fn a_one_shot_engine_makes_one_ahead_and_no_more() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root");
            return;
        }
        let pool = NetPool::start(false).unwrap();
        let made_ahead = pool.ahead.look_ready(|r| r.map(ns_id));
        let net = pool.take().unwrap();
        assert_eq!(
            Some(ns_id(&net)),
            made_ahead,
            "the take got the one made ahead"
        );
        assert_thread_stops(&pool);
        assert!(pool.ahead.take().is_none());
    }

    /// A take that comes before the thread has even started waits for the thread's one: the
    /// engine makes one namespace, not two (one inline for the take, one ahead for nothing).
    #[test]
    fn a_take_before_the_thread_runs_waits_for_its_one() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root");
            return;
        }
        for _ in 0..20 {
            let pool = NetPool::start(false).unwrap();
            let _net = pool.take().unwrap();
            assert_thread_stops(&pool);
            assert!(
                pool.ahead.take().is_none(),
                "a namespace was made for nothing"
            );
        }
    }

    /// Owned by a user namespace of its own: not the host's (which receives uevents).
    #[test]
    fn the_owner_is_not_the_hosts_user_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root");
            return;
        }
        let net = make().unwrap();
        // SAFETY: ioctl on an fd we own; returns a new fd.
        let owner = unsafe {
            libc::ioctl(net.as_raw_fd(), 0xb701 /* NS_GET_USERNS */)
        };
        assert!(owner >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: the fd the ioctl returned, ours.
        let owner = unsafe { OwnedFd::from_raw_fd(owner) };
        let host_user = std::fs::metadata("/proc/self/ns/user").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ns_id(&owner), host_user.ino());
        // SAFETY: ioctl on an fd we own; NS_GET_PARENT of the owner: the host's.
        let parent = unsafe {
            libc::ioctl(owner.as_raw_fd(), 0xb702 /* NS_GET_PARENT */)
        };
        assert!(parent >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let parent = unsafe { OwnedFd::from_raw_fd(parent) };
        assert_eq!(ns_id(&parent), host_user.ino());
    }
}
