//! The spawner: a small process forked when the engine starts, which clones every init of an
//! engine that runs many sandboxes (a server, a pool).
//!
//! Why: a clone copies the cloning process's page tables and write-protects every page of it
//! that it has written, and init stays a copy until it ends. Cloned from a server, each
//! sandbox made the server take hundreds of copy-on-write faults (each with a TLB shootdown
//! on the other CPUs) in its hot heap, about half of all CPU under the API bench. The spawner
//! is forked before the engine grows, holds nothing but its socket, and clones inits from its
//! own small memory.
//!
//! The wire: one SOCK_SEQPACKET socket pair. The engine sends one request per init (the root
//! plan and what init needs, postcard-encoded, its descriptors with SCM_RIGHTS), the spawner
//! answers with init's pid and pidfd. The program arena is a slot of the engine's shared
//! region (see `plan::Arenas`), mapped before the fork: at the same address here and in init.
//!
//! Parentage: inits are the spawner's children. It ignores SIGCHLD, so the kernel reaps them
//! as they end; the engine waits for their end through the pidfd. If the engine dies, its
//! keeper thread dies, the spawner gets SIGKILL (its parent-death signal), and so does every
//! init (theirs).

use std::borrow::Cow;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use nix::sys::socket::{
    recvmsg, sendmsg, shutdown, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, Shutdown, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use crate::cgroup::CloneInto;
use crate::error::Error;
use crate::mount_template::MountTemplate;
use crate::plan::{EnvPlan, InitConsts, ProgramPlan};
use crate::rootfs::{RootPlan, Step};
use crate::spawn::{self, InitRequest, Site};

/// The largest request: a root plan is a few kilobytes. Well below a socket's default send
/// buffer (208 KiB), beyond which a message would not be sent at all (EMSGSIZE).
const MAX_REQUEST: usize = 64 << 10;
/// The most descriptors one request carries (SCM_MAX_FD is 253).
const MAX_FDS: usize = 64;

/// One init to clone. Descriptors are the engine's numbers; `fds` lists them in the order
/// they travel, and the spawner renumbers each to the one it received. (Borrowed by the
/// engine that sends it, owned by the spawner that reads it.)
#[derive(Serialize, Deserialize)]
struct Request<'a> {
    root: Cow<'a, RootPlan>,
    root_fd: RawFd,
    report: RawFd,
    net: RawFd,
    /// v2: the run's cgroup directory, for CLONE_INTO_CGROUP.
    cgroup_dir: Option<RawFd>,
    /// v1: the run's cgroup directories, one per controller.
    v1_dirs: Cow<'a, [PathBuf]>,
    ids_base: u32,
    /// The program's plan, in the shared arena region.
    program: usize,
    fds: Vec<RawFd>,
}

impl Request<'_> {
    /// The message, or why it may not be sent.
    fn encode(&self) -> Result<Vec<u8>, String> {
        if self.fds.len() > MAX_FDS {
            return Err(format!(
                "a root plan with too many descriptors ({}, at most {MAX_FDS})",
                self.fds.len()
            ));
        }
        let bytes = postcard::to_stdvec(self).map_err(|e| e.to_string())?;
        if bytes.len() > MAX_REQUEST {
            return Err(format!(
                "a root plan too large to send ({} bytes, at most {MAX_REQUEST})",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// init's pid; its pidfd comes with the message.
    Cloned(i32),
    Failed(String),
}

/// Why the spawner gave no init.
pub(crate) enum SpawnFailure {
    /// The clone, or what comes with it, failed: this sandbox failed.
    Clone(Error),
    /// The spawner is gone (killed, or it ended): the engine clones from its own threads.
    Gone(String),
}

/// The engine's side.
pub(crate) struct Spawner {
    /// One request and its reply at a time.
    socket: Mutex<OwnedFd>,
    /// Set once the spawner failed to answer: it is not asked again.
    gone: AtomicBool,
    /// Forked the spawner and waits for its end: a parent-death signal follows the thread
    /// that forked, so this thread lives as long as the spawner.
    keeper: Option<JoinHandle<()>>,
}

/// What the forked spawner takes along from the engine.
struct Inherited {
    socket: RawFd,
    consts: InitConsts,
    /// v1: the engine's own cgroups, where the spawner returns after each clone.
    v1_home: Vec<PathBuf>,
    /// The engine's runtime directory, whose stage and scratch init's setup names.
    runtime_dir: PathBuf,
    engine_pid: i32,
}

impl Spawner {
    /// Forks the spawner, from a thread of its own that stays until the spawner ends.
    pub fn start(
        consts: InitConsts,
        v1_home: Vec<PathBuf>,
        runtime_dir: PathBuf,
    ) -> Result<Spawner, Error> {
        let failed = |e: &dyn std::fmt::Display| Error::Setup(format!("starting the spawner: {e}"));
        let (ours, theirs) = channel().map_err(|e| failed(&e))?;
        let inherited = Inherited {
            socket: theirs.as_raw_fd(),
            consts,
            v1_home,
            runtime_dir,
            engine_pid: std::process::id() as i32,
        };
        let (forked, told) = std::sync::mpsc::channel();
        let keeper = std::thread::Builder::new()
            .name("sandpit-spawner".into())
            .spawn(move || {
                let no_writers = crate::fork_guard::cloning();
                // SAFETY: glibc's fork (its malloc stays usable in the child); the child runs
                // `serve`, which never returns.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    serve(inherited);
                }
                drop((no_writers, theirs));
                if pid < 0 {
                    let _ = forked.send(Err(std::io::Error::last_os_error()));
                    return;
                }
                let _ = forked.send(Ok(()));
                let mut status = 0;
                // SAFETY: waitpid on our own child with a live status pointer.
                while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                    && crate::sys::errno() == libc::EINTR
                {}
            })
            .map_err(|e| failed(&e))?;
        match told.recv() {
            Ok(Ok(())) => Ok(Spawner {
                socket: Mutex::new(ours),
                gone: AtomicBool::new(false),
                keeper: Some(keeper),
            }),
            Ok(Err(e)) => Err(failed(&e)),
            Err(e) => Err(failed(&e)),
        }
    }

    /// Has the spawner clone init for `request`; returns its pid and pidfd.
    pub fn spawn(&self, request: &InitRequest) -> Result<(i32, OwnedFd), SpawnFailure> {
        let failed = |e: &dyn std::fmt::Display| {
            SpawnFailure::Clone(Error::Setup(format!("the spawner: {e}")))
        };
        if self.gone.load(Ordering::Relaxed) {
            return Err(SpawnFailure::Gone("it ended earlier".into()));
        }
        let cgroup_dir = request.cgroup.dir_fd();
        let mut fds = vec![request.root_fd, request.report, request.net];
        fds.extend(cgroup_dir);
        for planned in &request.root.steps {
            if let Step::Attach { fd, .. } = planned.step {
                if !fds.contains(&fd) {
                    fds.push(fd);
                }
            }
        }
        let message = Request {
            root: Cow::Borrowed(&request.root),
            root_fd: request.root_fd,
            report: request.report,
            net: request.net,
            cgroup_dir,
            v1_dirs: Cow::Borrowed(request.cgroup.v1_dirs()),
            ids_base: request.ids.base(),
            program: request.program as usize,
            fds,
        };
        let bytes = message.encode().map_err(|e| failed(&e))?;
        let gone = |e: &dyn std::fmt::Display| {
            self.gone.store(true, Ordering::Relaxed);
            SpawnFailure::Gone(e.to_string())
        };
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let sock = socket.as_raw_fd();
        send(sock, &bytes, &message.fds).map_err(|e| gone(&e))?;
        let mut buf = [0u8; 4096];
        let (reply, pidfd) = receive(sock, &mut buf).map_err(|e| gone(&e))?;
        drop(socket);
        let reply: Reply = postcard::from_bytes(reply).map_err(|e| gone(&e))?;
        match (reply, pidfd.into_iter().next()) {
            (Reply::Cloned(pid), Some(pidfd)) => Ok((pid, pidfd)),
            (Reply::Failed(e), _) => Err(SpawnFailure::Clone(Error::Setup(e))),
            (Reply::Cloned(_), None) => Err(gone(&"a reply without init's pidfd")),
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // The spawner ends at the end of its socket; the keeper then reaps it.
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let _ = shutdown(socket.as_raw_fd(), Shutdown::Both);
        drop(socket);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// The engine's end and the spawner's: one message is one request, or one reply.
fn channel() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends one message with `fds`.
fn send(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    sendmsg::<()>(
        sock,
        &[IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

/// Receives one message and the descriptors that came with it (close-on-exec). An empty
/// message is the other end closing.
fn receive(sock: RawFd, buf: &mut [u8]) -> Result<(&[u8], Vec<OwnedFd>), std::io::Error> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    // Fails when the kernel closed the descriptors that did not fit (MSG_CTRUNC).
    let cmsgs = msg
        .cmsgs()
        .map_err(|_| std::io::Error::other("a message with too many descriptors"))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: descriptors the kernel just installed for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let (len, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
    if len == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
    }
    if truncated {
        return Err(std::io::Error::other("a message larger than its buffer"));
    }
    Ok((&buf[..len], fds))
}

/// The spawner's life: one init per request until the engine closes its end. Never returns.
fn serve(inherited: Inherited) -> ! {
    // SAFETY: prctl with integer arguments. The keeper thread is alive (it forked us): if it
    // dies, so do we.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != inherited.engine_pid {
        exit(0);
    }
    let sock = keep_only(inherited.socket);
    quiet_signals();
    let home_net = match std::fs::File::open("/proc/thread-self/ns/net") {
        Ok(f) => OwnedFd::from(f),
        Err(_) => exit(1),
    };
    // Without a template the spawner ends, and the engine clones its sandboxes itself (from
    // the host's mount table, as a one-shot engine does): one way to go on, the tested one.
    let template = match MountTemplate::make(&inherited.runtime_dir) {
        Ok(t) => t,
        Err(_) => exit(1),
    };
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (bytes, fds) = match receive(sock, &mut buf) {
            Ok(got) => got,
            Err(_) => exit(0), // the engine closed its end, or is gone
        };
        let reply = match postcard::from_bytes::<Request>(bytes) {
            Ok(request) => clone_for(request, &fds, &inherited, home_net.as_raw_fd(), &template),
            Err(e) => Err(format!("the spawner could not read a request: {e}")),
        };
        drop(fds);
        let (reply, pidfd) = match reply {
            Ok((pid, pidfd)) => (Reply::Cloned(pid), Some(pidfd)),
            Err(e) => (Reply::Failed(e), None),
        };
        let Ok(bytes) = postcard::to_stdvec(&reply) else {
            exit(1);
        };
        let passed: Vec<RawFd> = pidfd.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&passed)];
        let cmsgs: &[ControlMessage] = if passed.is_empty() { &[] } else { &rights };
        if sendmsg::<()>(
            sock,
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .is_err()
        {
            exit(0);
        }
    }
}

/// Clones one init: the request's descriptors renumbered to those received.
fn clone_for(
    request: Request,
    received: &[OwnedFd],
    inherited: &Inherited,
    home_net: RawFd,
    template: &MountTemplate,
) -> Result<(i32, OwnedFd), String> {
    if received.len() != request.fds.len() {
        return Err("the spawner received fewer descriptors than the request names".into());
    }
    let local = |fd: RawFd| -> Result<RawFd, String> {
        request
            .fds
            .iter()
            .position(|f| *f == fd)
            .map(|i| received[i].as_raw_fd())
            .ok_or_else(|| format!("descriptor {fd} of the request did not come with it"))
    };
    let mut root = request.root.into_owned();
    for planned in &mut root.steps {
        if let Step::Attach { fd, .. } = &mut planned.step {
            *fd = local(*fd)?;
        }
    }
    let cgroup = match request.cgroup_dir {
        Some(dir) => CloneInto::Dir(local(dir)?),
        None => CloneInto::Move {
            dirs: request.v1_dirs.into_owned(),
            home: inherited.v1_home.clone(),
        },
    };
    let site = Site {
        mounts: Some(template),
        net: local(request.net)?,
        home_net,
        cgroup,
        ids_base: request.ids_base,
        exit_signal: libc::SIGCHLD as u64,
    };
    let plan = EnvPlan {
        root,
        root_fd: local(request.root_fd)?,
        report: local(request.report)?,
        program: request.program as *const ProgramPlan,
        consts: inherited.consts,
    };
    spawn::clone_init(&plan, &site).map_err(|e| e.to_string())
}

/// Closes every descriptor but `socket` (the engine's, copied by the fork), and points 0, 1
/// and 2 at /dev/null; returns the socket's number.
fn keep_only(socket: RawFd) -> RawFd {
    // SAFETY: close_range, open and dup2 on numbers this process owns now; nothing here uses
    // the closed ones.
    unsafe {
        if socket > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (socket - 1) as u32, 0);
        }
        libc::syscall(libc::SYS_close_range, (socket + 1) as u32, u32::MAX, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for target in 0..3 {
                if target != socket {
                    libc::dup2(null, target);
                }
            }
            if null > 2 && null != socket {
                libc::close(null);
            }
        }
    }
    socket
}

/// Nothing blocked; every handled signal back to its default (the engine's handlers are not
/// ours); SIGCHLD ignored, so that the kernel reaps the inits as they end.
fn quiet_signals() {
    // SAFETY: sigset and sigaction calls on locals; this process has one thread.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for signal in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGCHLD, &ignore, std::ptr::null_mut());
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and runs none of the engine's exit handlers.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::path::Path;

    use super::*;
    use crate::rootfs::{PlannedStep, RootOptions};
    use crate::spec::{RootFs, Spec};

    fn request(root: &RootPlan, fds: Vec<RawFd>) -> Request<'_> {
        Request {
            root: Cow::Borrowed(root),
            root_fd: 3,
            report: 4,
            net: 5,
            cgroup_dir: Some(6),
            v1_dirs: Cow::Owned(Vec::new()),
            ids_base: 1_000_000,
            program: 0,
            fds,
        }
    }

    fn devnulls(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect()
    }

    #[test]
    fn a_root_plan_is_a_small_part_of_the_largest_request() {
        let spec = Spec::new(RootFs::Dir("/".into()), vec!["/bin/true".into()]);
        let root = crate::rootfs::plan(
            &spec.env_spec(),
            &RootOptions {
                root_fd: 3,
                stage_dir: Path::new("/run/sandpit/stage/0123456789abcdef"),
                scratch_dir: Path::new("/run/sandpit/scratch/0123456789abcdef"),
                unshare_cgroupns: true,
            },
        )
        .unwrap();
        let bytes = request(&root, vec![3, 4, 5, 6]).encode().unwrap();
        assert!(bytes.len() < MAX_REQUEST / 8, "{} bytes", bytes.len());
    }

    #[test]
    fn a_request_beyond_its_limits_is_refused_before_it_is_sent() {
        let long = CString::new(vec![b'd'; 4096]).unwrap();
        let mut root = RootPlan { steps: Vec::new() };
        while request(&root, vec![3]).encode().is_ok() {
            root.steps.push(PlannedStep {
                step: Step::Mkdir {
                    path: long.clone(),
                    mode: 0o755,
                },
                what: String::new(),
                optional: false,
            });
        }
        let refused = request(&root, vec![3]).encode().unwrap_err();
        assert!(refused.contains("too large to send"), "{refused}");
        assert!(
            root.steps.len() > MAX_REQUEST / 4096 - 2,
            "{}",
            root.steps.len()
        );

        let root = RootPlan { steps: Vec::new() };
        assert!(request(&root, (0..MAX_FDS as RawFd).collect())
            .encode()
            .is_ok());
        let refused = request(&root, (0..=MAX_FDS as RawFd).collect())
            .encode()
            .unwrap_err();
        assert!(refused.contains("too many descriptors"), "{refused}");
    }

    /// What `encode` lets through reaches the spawner whole: the socket's buffer takes the
    /// largest request, and `receive` takes its descriptors.
    #[test]
    fn the_largest_request_crosses_the_socket_whole() {
        let (ours, theirs) = channel().unwrap();
        let bytes = vec![7u8; MAX_REQUEST];
        let fds = devnulls(MAX_FDS);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(send(ours.as_raw_fd(), &bytes, &raw).unwrap(), MAX_REQUEST);
        let mut buf = vec![0u8; MAX_REQUEST];
        let (got, received) = receive(theirs.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got, &bytes[..]);
        assert_eq!(received.len(), MAX_FDS);

        // More descriptors than `receive` has room for: an error, not a request short of some.
        let fds = devnulls(MAX_FDS + 1);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        send(ours.as_raw_fd(), b"x", &raw).unwrap();
        let error = receive(theirs.as_raw_fd(), &mut buf).unwrap_err();
        assert!(
            error.to_string().contains("too many descriptors"),
            "{error}"
        );
    }
}
