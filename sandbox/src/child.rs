//! The child side, between clone and exec. Raw system calls only: no allocation, no locks, no
//! panics (the engine may be multi-threaded, see DESIGN.md). Failures go to the engine as
//! (step, errno) on the report socket; the engine turns them into words.
//!
//! Two processes live here: the sandbox's init (pid 1 of the new pid namespace), which builds
//! the root filesystem, starts the program's process, waits for the engine's `Run`, hands the
//! program its descriptors, reaps every process and reports the program's status; and the
//! program (pid 2), which arms the seccomp filter as soon as it exists, then waits for its
//! descriptors, drops every privilege and execs.

use std::os::fd::RawFd;

use crate::capabilities;
use crate::plan::{EnvPlan, ProgramPlan};
use crate::report::{child as report, Kind, Stage, MAX_FDS};
use crate::rlimits;
use crate::rootfs::Step;
use crate::sys::{errno, monotonic_ns, raw_set_ids};

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
            Step::Attach { fd, target } => {
                return crate::sys::mount_api::attach(*fd, target);
            }
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
            Step::UnshareCgroupNs => libc::unshare(libc::CLONE_NEWCGROUP),
        }
    };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Closes every inherited fd above 2 but those in `keep`: the clone copied every fd of the
/// engine, those of other runs' pipes included, whose EOF must not wait for this sandbox to end.
fn close_other_fds(mut keep: [RawFd; 2]) {
    keep.sort_unstable();
    let mut from: RawFd = 3;
    for fd in keep {
        if fd > from {
            // SAFETY: close_range on fds this process does not use (the engine's, copied).
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, (fd - 1) as u32, 0) };
        }
        from = from.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0) };
}

/// Wipes what init inherited of the engine's identity: its command line and environment
/// (/proc/1/cmdline is readable by everyone in the sandbox) and its name.
fn forget_the_engine(plan: &EnvPlan) {
    for (start, end) in [
        plan.consts.engine_image.args,
        plan.consts.engine_image.environ,
    ] {
        if start < end {
            // SAFETY: the engine's argv/environ strings, mapped at the same addresses in this
            // copy of its memory (read from /proc/self/stat before clone); nothing here uses
            // them.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
        }
    }
    let (start, end) = plan.consts.engine_image.args;
    if end - start > 4 {
        // SAFETY: as above; "init" and its NUL fit in the wiped argv area.
        unsafe { std::ptr::copy_nonoverlapping(b"init".as_ptr(), start as *mut u8, 4) };
    }
    // SAFETY: prctl with a NUL-terminated static name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"init".as_ptr(), 0, 0, 0) };
}

/// Unmaps the arenas of the engine's other sandboxes (shared memory: their programs' argv and
/// environment), keeping this sandbox's own.
fn keep_only_own_arena(plan: &EnvPlan) {
    let (start, len) = plan.consts.arenas;
    let own = plan.program as usize;
    let end = start + len;
    if own < start || own + crate::plan::ARENA_BYTES > end {
        return;
    }
    // SAFETY: munmap of the parts of the region that are not this sandbox's arena; nothing
    // here points into them.
    unsafe {
        if own > start {
            libc::munmap(start as *mut libc::c_void, own - start);
        }
        let after = own + crate::plan::ARENA_BYTES;
        if end > after {
            libc::munmap(after as *mut libc::c_void, end - after);
        }
    }
}

/// Every signal unblocked and at its default: what init and the program inherit is not the
/// cloning thread's mask, nor a disposition the engine set (Rust ignores SIGPIPE; the spawner
/// ignores SIGCHLD), which an ignored signal would keep across the program's exec.
fn default_signals() {
    // The kernel's sigaction with every field zero is SIG_DFL, no flags, empty mask. Raw
    // calls: glibc's refuse the signals it keeps for itself (32 and 33), which it may have
    // left ignored.
    let default = [0u64; 4];
    let none = 0u64;
    // SAFETY: rt_sigprocmask and rt_sigaction with pointers to live locals of the kernel's
    // layout (a 64-bit set; handler, flags, restorer, set), sizes given.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none,
            0usize,
            8usize,
        );
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, signal, &default, 0usize, 8usize);
            }
        }
    }
}

/// Points 0, 1 and 2 at /dev/null: init must not hold the engine's own terminal or pipes.
fn null_stdio() {
    // SAFETY: open/dup2/close with a static path and small integers.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// What the program's process starts from: init's plan, and its end of the socket pair on
/// which init hands it its descriptors (they become `program.fd_targets`) with `Run`.
struct ProgramStart<'a> {
    env: &'a EnvPlan,
    from_init: RawFd,
    /// init's end, which the program's copy of init's descriptors holds too: closed there, so
    /// that init's end going means EOF.
    init_end: RawFd,
}

/// The sandbox's init. Never returns.
///
/// # Safety
/// Must run in the child of clone3, with `plan` prepared by the engine.
pub unsafe fn init_main(plan: &EnvPlan) -> ! {
    let sock = plan.report;
    close_other_fds([sock, plan.root_fd]);
    keep_only_own_arena(plan);
    default_signals();
    forget_the_engine(plan);
    null_stdio();
    let mut fds = [-1; MAX_FDS];
    match report::command(sock, &mut fds) {
        Some((m, _)) if m.kind == Kind::Go => {}
        _ => exit(1),
    }
    // The engine cloned us keeping its capabilities across an euid change (securebits); no
    // uid change of ours may keep them.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_SECUREBITS, 0, 0, 0, 0) };
    // Until now we carried the engine's host ids, which the new user namespace does not map;
    // become its root (an unprivileged host id) so that files we create have an owner.
    if let Err(e) = raw_set_ids(0, 0, false) {
        report::send(sock, Kind::ProgramFailed, Stage::Ids as i32, e as i64);
        exit(1);
    }
    // If the engine's supervising thread dies, init dies, and with it the whole pid namespace.
    // (Set after the id change, which clears it.)
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    for (i, planned) in plan.root.steps.iter().enumerate() {
        if let Err(e) = do_step(&planned.step) {
            if planned.optional && e == libc::ENOENT {
                continue;
            }
            report::send(sock, Kind::StepFailed, i as i32, e as i64);
            exit(1);
        }
    }
    // Attached and pivoted into: init needs the descriptor no more.
    // SAFETY: our copy of the engine's fd.
    unsafe { libc::close(plan.root_fd) };
    let (to_program, from_init) = program_pair(sock);
    let start = ProgramStart {
        env: plan,
        from_init,
        init_end: to_program,
    };
    let pid = start_program(&start);
    report::send(sock, Kind::EnvReady, 0, 0);
    let n = match report::command(sock, &mut fds) {
        Some((m, n)) if m.kind == Kind::Run => n,
        _ => exit(0), // the engine dropped the sandbox unused
    };
    // SAFETY: the engine wrote the plan into the shared arena before sending Run.
    let program = unsafe { &*plan.program };
    let mapped = program.n_fds;
    if mapped < 3 || mapped > n {
        exit(1);
    }
    if let Err(e) = attach_binds(program, &fds[mapped..n]) {
        report::send(sock, Kind::ProgramFailed, Stage::Bind as i32, e as i64);
        exit(1);
    }
    report::send(sock, Kind::Started, 0, monotonic_ns());
    // A program that could not arm its filter has said why and ended: reaping it tells the
    // rest.
    report::pass(to_program, Kind::Run, &fds[..mapped]);
    // Only the program (and what it starts) may hold the pipes: EOF then means it is done.
    for fd in fds[..mapped].iter().chain([&to_program]) {
        // SAFETY: fds received with Run, and our end of the pair, ours to close.
        unsafe { libc::close(*fd) };
    }
    let (status, ended_at) = reap_all(pid);
    report::send(sock, Kind::Exited, status, ended_at);
    // Keep the mount namespace alive while the engine reads output files through
    // /proc/<init>/root; it closes its end when done.
    while report::command(sock, &mut fds).is_some() {}
    exit(0);
}

/// A socket pair for init and the program's process: (init's end, the program's end).
fn program_pair(sock: RawFd) -> (RawFd, RawFd) {
    let mut pair = [-1; 2];
    // SAFETY: socketpair into a live local array.
    let made = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if made < 0 {
        report::send(
            sock,
            Kind::ProgramFailed,
            Stage::Fork as i32,
            errno() as i64,
        );
        exit(1);
    }
    (pair[0], pair[1])
}

/// Starts the program's process, before its program is known: it arms the seccomp filter
/// while the sandbox waits for its run (attaching a filter is about 0.1 ms of the kernel's
/// work per process), then waits on `start.from_init` for its descriptors. Returns its pid.
///
/// Like posix_spawn it shares init's memory (CLONE_VM) on its own stack, so no address space
/// is copied; unlike posix_spawn init does not wait for its exec (no CLONE_VFORK): both run
/// raw system calls on their own stacks, and the program reads the plan only once `Run` came
/// (the engine wrote it before). They share errno too: each reads it right after its own
/// failed call, and while the program sets itself up init only waits. Not fork(): glibc's
/// fork takes locks another thread of the engine may have held at clone time.
fn start_program(start: &ProgramStart) -> libc::pid_t {
    let stack = start.env.consts.program_stack.0 + start.env.consts.program_stack.1;
    let stack_top = (stack & !15) as *mut libc::c_void;
    // SAFETY: program_entry runs on its own stack and only reads `start`, which lives in
    // init_main's frame: as long as init (init_main never returns).
    let pid = unsafe {
        libc::clone(
            program_entry,
            stack_top,
            libc::CLONE_VM | libc::SIGCHLD,
            start as *const ProgramStart as *mut libc::c_void,
        )
    };
    if pid < 0 {
        report::send(
            start.env.report,
            Kind::ProgramFailed,
            Stage::Fork as i32,
            errno() as i64,
        );
        exit(1);
    }
    // SAFETY: the program's end of the pair, which init does not use.
    unsafe { libc::close(start.from_init) };
    pid
}

/// Attaches the read-only binds that came with `Run` at the paths the plan gives, in order.
fn attach_binds(program: &ProgramPlan, fds: &[RawFd]) -> Result<(), i32> {
    let mut target = program.binds;
    for fd in fds {
        // SAFETY: `binds` is a NULL-terminated array in the arena, one entry per descriptor.
        let path = unsafe { *target };
        if path.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: a NUL-terminated path in the arena.
        crate::sys::mount_api::attach(*fd, unsafe { std::ffi::CStr::from_ptr(path) })?;
        // SAFETY: our copy of the detached mount's descriptor, attached now.
        unsafe { libc::close(*fd) };
        // SAFETY: still inside the array (the NULL terminator was not reached).
        target = unsafe { target.add(1) };
    }
    Ok(())
}

/// Waits for the program, then kills and reaps everything else (daemons included). Returns
/// the program's wait status and when it ended.
fn reap_all(program: libc::pid_t) -> (i32, i64) {
    let mut program_status: i32 = 0;
    let mut ended_at: i64 = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a pointer to a live local.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == program {
            program_status = status;
            ended_at = monotonic_ns();
            // The program is done: so is everything it left behind.
            // SAFETY: kill(-1) from the pid namespace's init reaches only its own processes.
            unsafe { libc::kill(-1, libc::SIGKILL) };
        } else if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break; // ECHILD: everyone is reaped.
        }
    }
    (program_status, ended_at)
}

extern "C" fn program_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ProgramStart init passed to clone; init is suspended until we exec
    // or exit, so it outlives this function.
    let start = unsafe { &*(arg as *const ProgramStart) };
    program_main(start)
}

fn program_fail(start: &ProgramStart, stage: Stage, e: i32) -> ! {
    report::send(
        start.env.report,
        Kind::ProgramFailed,
        stage as i32,
        e as i64,
    );
    exit(127);
}

/// Writes `data` to the file at `path`. Async-signal-safe.
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: open/write/close with a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let n = libc::write(fd, data.as_ptr() as *const libc::c_void, data.len());
        let e = errno();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(e);
        }
    }
    Ok(())
}

/// Makes `fds[i]` the program's fd `targets[i]`. First every source is moved above every
/// number in play, so that placing one never overwrites another that is still to be placed.
fn place_fds(fds: &[RawFd], targets: &[i32]) -> Result<(), i32> {
    let above = fds.iter().chain(targets).copied().max().unwrap_or(2) + 1;
    let mut moved = [-1; crate::report::MAX_FDS];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: fcntl with integer arguments on a received fd.
        let high = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above) };
        if high < 0 {
            return Err(errno());
        }
        moved[i] = high;
    }
    for (high, target) in moved.iter().zip(targets) {
        // SAFETY: dup2 of our fd onto the target number (clears close-on-exec there).
        if unsafe { libc::dup2(*high, *target) } < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Installs the seccomp filter; returns its listener's fd.
fn install_filter(filter: &libc::sock_fprog) -> Result<i32, i32> {
    // SAFETY: seccomp(SET_MODE_FILTER) with a pointer to a live sock_fprog.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            filter as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as i32)
    }
}

/// How often, and how long each time, the program waits for a writer of its file to go:
/// one second in all, then ETXTBSY is the run's error.
const EXEC_BUSY_WAITS: u32 = 500;
const EXEC_BUSY_PAUSE_NS: libc::c_long = 2_000_000;

/// The program's process: what does not depend on its program done ahead (the seccomp filter
/// armed, its OOM score, its own session, the capability bounding set emptied), then, with
/// its descriptors and plan, the rest dropped, then exec.
fn program_main(start: &ProgramStart) -> ! {
    let env = start.env;
    // SAFETY: our copy of init's end of the pair.
    unsafe { libc::close(start.init_end) };
    // SAFETY: integer-only syscall. Nothing of the engine's may leak into the program: every
    // fd above 2 closes on exec, but for those placed below.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        program_fail(start, Stage::NoNewPrivs, errno());
    }
    let listener = match install_filter(&env.consts.filter.prog) {
        Ok(fd) => fd,
        Err(e) => program_fail(start, Stage::Seccomp, e),
    };
    report::pass(env.report, Kind::SeccompListener, &[listener]);
    // SAFETY: our own fd.
    unsafe { libc::close(listener) };
    // The OOM killer's first choice is the program and what it starts, never init (see
    // `protect_init`). Raising one's own score needs no privilege, but /proc/self belongs to
    // host root while this memory (init's, shared until exec) is undumpable: dumpable for the
    // moment of the write, and undumpable again, so that a program running as the sandbox's
    // root can never read init's memory (a copy of the engine's).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    let raised = write_file(c"/proc/self/oom_score_adj", b"1000");
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if let Err(e) = raised {
        program_fail(start, Stage::OomScore, e);
    }
    // SAFETY: no arguments.
    unsafe { libc::setsid() };
    if let Err(e) = capabilities::drop_bounding_and_ambient(env.consts.last_cap) {
        program_fail(start, Stage::Caps, e);
    }
    let mut fds = [-1; MAX_FDS];
    let n = match report::command(start.from_init, &mut fds) {
        Some((m, n)) if m.kind == Kind::Run => n,
        _ => exit(0), // init is gone, or the sandbox was dropped unused
    };
    // SAFETY: the engine wrote the plan into the shared arena before it sent Run to init.
    let plan = unsafe { &*env.program };
    if let Err(e) = place_fds(&fds[..n], &plan.fd_targets[..n.min(plan.fd_targets.len())]) {
        program_fail(start, Stage::Stdio, e);
    }
    if let Err((_, e)) = rlimits::apply(&plan.rlimits[..plan.n_rlimits.min(plan.rlimits.len())]) {
        program_fail(start, Stage::Rlimits, e);
    }
    if let Err(e) = raw_set_ids(plan.uid, plan.gid, true) {
        program_fail(start, Stage::Ids, e);
    }
    if let Err(e) = capabilities::clear_all() {
        program_fail(start, Stage::Caps, e);
    }
    // SAFETY: chdir to a NUL-terminated path in the arena.
    if unsafe { libc::chdir(plan.cwd) } < 0 {
        program_fail(start, Stage::Cwd, errno());
    }
    let mut last_error = libc::ENOENT;
    let mut path = plan.exec_paths;
    let mut busy_waits = 0;
    // SAFETY: exec_paths, argv and envp are NULL-terminated arrays in the arena.
    unsafe {
        while !(*path).is_null() {
            libc::execve(*path, plan.argv, plan.envp);
            let e = errno();
            // The file is open for writing somewhere: most often in a child any thread of the
            // engine's process forked while the copy-in held it, which closes it when it execs.
            // Wait that moment out rather than fail the run.
            if e == libc::ETXTBSY && busy_waits < EXEC_BUSY_WAITS {
                busy_waits += 1;
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: EXEC_BUSY_PAUSE_NS,
                };
                libc::nanosleep(&pause, std::ptr::null_mut());
                continue;
            }
            // Keep the most telling error: EACCES of one candidate beats ENOENT of the next.
            if e != libc::ENOENT {
                last_error = e;
            }
            path = path.add(1);
        }
    }
    program_fail(start, Stage::Exec, last_error);
}
