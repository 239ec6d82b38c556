//! The child side, between clone3 and exec. Raw system calls only: no allocation, no locks, no
//! panics (the parent may be multi-threaded, see DESIGN.md). Failures are reported to the
//! parent as (step, errno) on the report socket; the parent turns them into words.
//!
//! Two processes live here: the sandbox's init (pid 1 of the new pid namespace), which builds
//! the root filesystem, starts the program, reaps every process and reports the program's
//! status; and the program (pid 2), which drops every privilege and execs.

use std::os::fd::RawFd;

use crate::capabilities;
use crate::plan::*;
use crate::rlimits::{self, errno};
use crate::rootfs::Step;
use crate::sys::{monotonic_ns, raw_set_ids};

fn send_report(fd: RawFd, kind: u32, a: i32, b: i64) {
    let msg = Report { kind, a, b };
    // SAFETY: sends 16 bytes from a live stack value.
    unsafe {
        libc::send(
            fd,
            &msg as *const Report as *const libc::c_void,
            std::mem::size_of::<Report>(),
            libc::MSG_NOSIGNAL,
        )
    };
}

/// Waits for the parent's go-ahead (one byte). False on EOF: the parent gave up.
fn wait_go(fd: RawFd) -> bool {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a live stack variable.
        let n = unsafe { libc::recv(fd, &mut byte as *mut u8 as *mut libc::c_void, 1, 0) };
        if n == 1 {
            return true;
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return false;
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and runs no atexit handlers.
    unsafe { libc::_exit(code) }
}

fn opt_ptr(c: &Option<std::ffi::CString>) -> *const libc::c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

fn do_step(step: &Step) -> Result<(), i32> {
    // SAFETY: every pointer comes from a CString owned by the plan, alive during the call.
    let ret = unsafe {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                *flags,
                opt_ptr(data) as *const libc::c_void,
            ),
            Step::Mkdir { path, mode } => {
                let r = libc::mkdir(path.as_ptr(), *mode);
                if r < 0 && errno() == libc::EEXIST {
                    0
                } else {
                    r
                }
            }
            Step::Touch { path } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Step::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()),
            Step::PivotRoot { new_root } => {
                let dot = c".".as_ptr();
                if libc::chdir(new_root.as_ptr()) < 0
                    || libc::syscall(libc::SYS_pivot_root, dot, dot) < 0
                    || libc::umount2(dot, libc::MNT_DETACH) < 0
                {
                    -1
                } else {
                    libc::chdir(c"/".as_ptr())
                }
            }
            Step::Hostname { name } => libc::sethostname(name.as_ptr(), name.as_bytes().len()),
            Step::LoopbackUp => return crate::namespaces::loopback_up(),
            Step::UnshareCgroupNs => libc::unshare(libc::CLONE_NEWCGROUP),
        }
    };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Closes every inherited fd but `keep`: the clone copied every fd of the parent, those of
/// other runs' pipes included, whose EOF must not wait for this sandbox to end.
fn close_other_fds(mut keep: [RawFd; 4]) {
    keep.sort_unstable();
    let mut from: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > from {
            // SAFETY: close_range on fds this process does not use.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
        }
        from = from.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// The sandbox's init. Never returns.
///
/// # Safety
/// Must run in the child of clone3, with `plan` prepared by the parent.
pub unsafe fn init_main(plan: &ChildPlan) -> ! {
    let report = plan.report;
    close_other_fds([plan.stdin, plan.stdout, plan.stderr, report]);
    if !wait_go(report) {
        exit(1);
    }
    // Until now we carried the parent's host ids, which the new user namespace does not map;
    // become its root (an unprivileged host id) so that files we create have an owner.
    if let Err(e) = raw_set_ids(0, 0, false) {
        send_report(report, REPORT_PROGRAM_FAILED, STAGE_IDS, e as i64);
        exit(1);
    }
    // If the supervising thread dies, init dies, and with it the whole pid namespace. (Set
    // after the id change, which clears it.)
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    for (i, planned) in plan.root.steps.iter().enumerate() {
        if let Err(e) = do_step(&planned.step) {
            if planned.optional && e == libc::ENOENT {
                continue;
            }
            send_report(report, REPORT_STEP_FAILED, i as i32, e as i64);
            exit(1);
        }
    }
    if plan.wait_for_files {
        send_report(report, REPORT_READY, 0, 0);
        if !wait_go(report) {
            exit(1);
        }
    }
    send_report(report, REPORT_STARTED, 0, monotonic_ns());
    // Like posix_spawn: the program shares init's memory (CLONE_VM) on its own stack and init
    // waits (CLONE_VFORK) until it has exec'd, so no address space is copied. Not fork():
    // glibc's fork takes locks another thread of the parent may have held at clone time.
    let stack = plan.program_stack.as_ptr() as usize + plan.program_stack.len();
    let stack_top = (stack & !15) as *mut libc::c_void;
    let pid = libc::clone(
        program_entry,
        stack_top,
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
        plan as *const ChildPlan as *mut libc::c_void,
    );
    if pid < 0 {
        send_report(report, REPORT_PROGRAM_FAILED, STAGE_FORK, errno() as i64);
        exit(1);
    }
    // Only the program (and what it starts) may hold the pipes: EOF then means it is done.
    libc::close(plan.stdin);
    libc::close(plan.stdout);
    libc::close(plan.stderr);
    let mut program_status: i32 = 0;
    let mut ended_at: i64 = 0;
    loop {
        let mut status = 0;
        let r = libc::waitpid(-1, &mut status, 0);
        if r == pid {
            program_status = status;
            ended_at = monotonic_ns();
            // The program is done: so is everything it left behind (daemons included).
            libc::kill(-1, libc::SIGKILL);
        } else if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break; // ECHILD: everyone is reaped.
        }
    }
    send_report(report, REPORT_EXITED, program_status, ended_at);
    // Keep the mount namespace alive while the parent reads output files through
    // /proc/<init>/root; it closes its end when done.
    while wait_go(report) {}
    exit(0);
}

extern "C" fn program_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the plan init passed to clone; init is suspended until we exec or exit.
    unsafe { program_main(&*(arg as *const ChildPlan)) }
}

fn program_fail(plan: &ChildPlan, stage: i32, e: i32) -> ! {
    send_report(plan.report, REPORT_PROGRAM_FAILED, stage, e as i64);
    exit(127);
}

/// The program's process: drop everything, then exec.
unsafe fn program_main(plan: &ChildPlan) -> ! {
    if libc::dup2(plan.stdin, 0) < 0
        || libc::dup2(plan.stdout, 1) < 0
        || libc::dup2(plan.stderr, 2) < 0
    {
        program_fail(plan, STAGE_STDIO, errno());
    }
    // Nothing of the engine's may leak into the program: every other fd closes on exec.
    libc::syscall(
        libc::SYS_close_range,
        3u32,
        u32::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    );
    libc::setsid();
    if let Err((_, e)) = rlimits::apply(&plan.rlimits) {
        program_fail(plan, STAGE_RLIMITS, e);
    }
    if let Err(e) = capabilities::drop_bounding_and_ambient(plan.last_cap) {
        program_fail(plan, STAGE_CAPS, e);
    }
    if let Err(e) = raw_set_ids(plan.uid, plan.gid, true) {
        program_fail(plan, STAGE_IDS, e);
    }
    if let Err(e) = capabilities::clear_all() {
        program_fail(plan, STAGE_CAPS, e);
    }
    if libc::chdir(plan.cwd.as_ptr()) < 0 {
        program_fail(plan, STAGE_CWD, errno());
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
        program_fail(plan, STAGE_NO_NEW_PRIVS, errno());
    }
    for filter in [&plan.prelude, &plan.enosys] {
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &filter.prog as *const libc::sock_fprog,
        ) < 0
        {
            program_fail(plan, STAGE_SECCOMP, errno());
        }
    }
    let listener = libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        &plan.deny.prog as *const libc::sock_fprog,
    ) as i32;
    if listener < 0 {
        program_fail(plan, STAGE_SECCOMP, errno());
    }
    send_fd(plan.report, listener);
    libc::close(listener);
    let mut last_error = libc::ENOENT;
    for path in &plan.exec_paths {
        libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        let e = errno();
        // Keep the most telling error: EACCES of one candidate beats ENOENT of the next.
        if e != libc::ENOENT {
            last_error = e;
        }
    }
    program_fail(plan, STAGE_EXEC, last_error);
}

/// Sends the seccomp listener to the supervisor (SCM_RIGHTS), with a REPORT_SECCOMP_FD body.
unsafe fn send_fd(sock: RawFd, fd: RawFd) {
    let msg = Report {
        kind: REPORT_SECCOMP_FD,
        a: 0,
        b: 0,
    };
    let mut iov = libc::iovec {
        iov_base: &msg as *const Report as *mut libc::c_void,
        iov_len: std::mem::size_of::<Report>(),
    };
    // Room for one fd's control message, aligned for cmsghdr.
    let mut control = [0u64; 4];
    let mut hdr: libc::msghdr = std::mem::zeroed();
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
    let cmsg = libc::CMSG_FIRSTHDR(&hdr);
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL);
}
