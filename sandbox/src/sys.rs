//! Thin wrappers over raw system calls that libc does not wrap (clone3, pidfd, openat2,
//! seccomp notifications). Each is safe to call between clone and exec: no allocation.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

pub const CLONE_PIDFD: u64 = 0x1000;
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3 without a new stack: like fork, the child returns 0 on a copy of this stack.
///
/// # Safety
/// In a multi-threaded process the child may only run async-signal-safe code until it execs
/// or exits, and it must never return into code that unwinds or allocates.
pub unsafe fn clone3(args: &mut CloneArgs) -> io::Result<libc::pid_t> {
    // SAFETY: `args` is a live clone_args of the size passed; the caller upholds the rules for
    // what the child runs.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// Sends a signal through a pidfd (no pid reuse race).
pub fn pidfd_send_signal(pidfd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall with a valid fd and no pointers besides NULL siginfo.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits for the process behind `pidfd` (init) to end, and reaps it when it is this process's
/// child (cloned by the engine itself, with no exit signal, so that nobody else's waitpid can
/// take it); the spawner's inits are reaped by the kernel as they end.
pub fn pidfd_reap(pidfd: &OwnedFd) {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // A pidfd is readable once its process has ended.
    loop {
        // SAFETY: ppoll on a live one-element array, no timeout, no signal mask.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 1, std::ptr::null(), std::ptr::null()) };
        if n > 0 || (n < 0 && errno() != libc::EINTR) {
            break;
        }
    }
    // SAFETY: zeroed siginfo is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on a pidfd we own; ECHILD when the process is not our child.
    unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::__WALL,
        )
    };
}

/// Opens `path` below `dir` without following any symlink and without leaving `dir`.
pub fn openat2_beneath(dir: RawFd, path: &std::ffi::CStr, flags: i32) -> io::Result<OwnedFd> {
    /// `struct open_how` of openat2(2).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS
            | libc::RESOLVE_NO_XDEV,
    };
    // SAFETY: `how` and `path` outlive the call; the kernel copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct SeccompNotifResp {
    pub id: u64,
    pub val: i64,
    pub error: i32,
    pub flags: u32,
}

const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// Receives one seccomp notification. Call it only when poll reported POLLIN: before Linux
/// 6.11 it may block (seen on 6.1: O_NONBLOCK ignored), and never returns once the filter's
/// tasks are gone.
pub fn seccomp_notif_recv(fd: RawFd) -> io::Result<SeccompNotif> {
    let mut notif = SeccompNotif::default();
    // SAFETY: the kernel fills a zeroed struct of exactly the size the ioctl number encodes.
    let ret = unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(notif)
    }
}

/// Answers a seccomp notification: the syscall fails with `errno`.
pub fn seccomp_notif_deny(fd: RawFd, id: u64, errno: i32) -> io::Result<()> {
    let mut resp = SeccompNotifResp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: valid struct of the size the ioctl number encodes.
    let ret = unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO; async-signal-safe).
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// setresuid/setresgid/setgroups as raw syscalls. glibc's wrappers broadcast the change to
/// every thread it knows of (setxid), and after clone3 in a multi-threaded parent the child
/// would wait forever for threads that do not exist in it.
pub fn raw_set_ids(uid: u32, gid: u32, clear_groups: bool) -> Result<(), i32> {
    // SAFETY: raw syscalls with integer arguments (and a NULL group list).
    unsafe {
        if clear_groups
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
        {
            return Err(errno());
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0
        {
            return Err(errno());
        }
    }
    Ok(())
}

/// The calling thread's errno, read without allocating. Async-signal-safe.
pub fn errno() -> i32 {
    // SAFETY: the errno location is always valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// A pipe, both ends close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes reads and writes on `fd` return EAGAIN instead of blocking.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd with integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until one of `fds` is ready or `timeout` passed; returns which were ready (revents).
/// EINTR counts as "nothing ready".
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> usize {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    // SAFETY: fds is a live array of pollfd; ts (if any) outlives the call.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts.as_ref().map_or(std::ptr::null(), |t| t as *const _),
            std::ptr::null(),
        )
    };
    n.max(0) as usize
}

/// The new mount API (Linux 5.2): a filesystem context, configured, made into a detached mount.
pub mod mount_api {
    use std::ffi::CStr;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
    pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
    pub const MOUNT_ATTR_NODEV: u64 = 0x4;
    const FSOPEN_CLOEXEC: u32 = 1;
    const FSMOUNT_CLOEXEC: u32 = 1;
    const FSCONFIG_SET_STRING: u32 = 1;
    const FSCONFIG_CMD_CREATE: u32 = 6;
    pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
    const OPEN_TREE_CLONE: u32 = 1;
    const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
    const MOUNT_SETATTR: libc::c_long = 442;

    /// `struct mount_attr` of mount_setattr(2).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }

    /// A detached copy of the mount at `path` (a bind mount not attached anywhere), with
    /// `attrs` (MOUNT_ATTR_*) set on it.
    pub fn clone_tree(path: &CStr, attrs: u64) -> io::Result<OwnedFd> {
        // SAFETY: a NUL-terminated path and integer flags.
        let fd = fd_or_error(unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
            )
        })?;
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr on our fd with a live struct of the size passed.
        let r = unsafe {
            libc::syscall(
                MOUNT_SETATTR,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    fn fd_or_error(ret: libc::c_long) -> io::Result<OwnedFd> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: the kernel returned a new fd that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
        }
    }

    /// A filesystem context for `fstype`.
    pub fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
        // SAFETY: a NUL-terminated name and integer flags.
        fd_or_error(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
    }

    /// Sets one string parameter of a context.
    pub fn set_string(fs: &OwnedFd, key: &CStr, value: &CStr) -> io::Result<()> {
        // SAFETY: NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Creates the superblock of a configured context.
    pub fn create(fs: &OwnedFd) -> io::Result<()> {
        // SAFETY: integer arguments and NULL pointers, as FSCONFIG_CMD_CREATE takes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A detached mount of a created context, with `attrs` (MOUNT_ATTR_*).
    pub fn fsmount(fs: &OwnedFd, attrs: u64) -> io::Result<OwnedFd> {
        // SAFETY: integer arguments.
        fd_or_error(unsafe {
            libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
        })
    }

    /// Attaches the detached mount `fd` at `target`. Async-signal-safe.
    pub fn attach(fd: RawFd, target: &CStr) -> Result<(), i32> {
        // SAFETY: NUL-terminated paths that outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            Err(super::errno())
        } else {
            Ok(())
        }
    }
}
