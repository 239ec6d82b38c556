//! The wire between the engine and a sandbox's init: one SOCK_SEQPACKET socket pair, fixed
//! 16-byte messages, file descriptors passed with SCM_RIGHTS. Both ends live here.
//!
//! The child side runs after clone in a copy of a possibly multi-threaded parent: its functions
//! use raw system calls on stack buffers only (no allocation, no locks).
//!
//! The conversation of one sandbox:
//!
//! ```text
//! engine                                  init (pid 1)                  program (pid 2)
//!   clone3, id maps, cgroup ─ Go ───────▶
//!                                         mounts, hostname, pivot_root
//!                                         clone ──────────────────────▶ no_new_privs, seccomp
//!          ◀─────────────────────────────────────────────── SeccompListener + [fd]
//!          ◀──────────────── EnvReady | StepFailed(step, errno)
//!   files copied in
//!   Run + [stdin, stdout, stderr] ──────▶ Started(ns)
//!                                         Run + [its descriptors] ───▶ ids, rlimits, exec
//!          ◀─────────────────────────────────────────────── ProgramFailed(stage, errno)
//!                                         reaps everyone
//!          ◀──────────────── Exited(wait status, ns)
//!   outputs collected, socket closed ───▶ exits
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::errno;

/// What a message says. The numbers are the wire format.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// engine → init: the id maps and the cgroup are in place; set the sandbox up.
    Go = 1,
    /// engine → init: start the program planned in the arena; carries its stdin, stdout and
    /// stderr (and the files to bind). init → program, on their own socket pair: the same,
    /// with the program's descriptors.
    Run = 2,
    /// init → engine: setup step `a` failed with errno `b`.
    StepFailed = 10,
    /// init → engine: the sandbox is set up; init waits for `Run`.
    EnvReady = 11,
    /// init → engine: `b` = CLOCK_MONOTONIC ns just before it hands the program its
    /// descriptors.
    Started = 12,
    /// program → engine: its own setup failed at stage `a` with errno `b` (before exec).
    ProgramFailed = 13,
    /// program → engine: carries the seccomp listener fd.
    SeccompListener = 14,
    /// init → engine: the program ended with wait status `a` at `b` ns, and every other
    /// process of the sandbox has been reaped.
    Exited = 15,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Go,
            2 => Kind::Run,
            10 => Kind::StepFailed,
            11 => Kind::EnvReady,
            12 => Kind::Started,
            13 => Kind::ProgramFailed,
            14 => Kind::SeccompListener,
            15 => Kind::Exited,
            _ => return None,
        })
    }
}

/// One message as it travels.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Wire {
    kind: u32,
    a: i32,
    b: i64,
}

/// A decoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub kind: Kind,
    pub a: i32,
    pub b: i64,
}

/// Stages of the program's own setup, for [`Kind::ProgramFailed`].
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Stdio = 1,
    Rlimits = 2,
    Caps = 3,
    Ids = 4,
    Cwd = 5,
    NoNewPrivs = 6,
    Seccomp = 7,
    Exec = 8,
    Fork = 9,
    Cgroup = 10,
    OomScore = 11,
    Bind = 12,
}

impl Stage {
    pub fn from_i32(v: i32) -> Option<Stage> {
        Some(match v {
            1 => Stage::Stdio,
            2 => Stage::Rlimits,
            3 => Stage::Caps,
            4 => Stage::Ids,
            5 => Stage::Cwd,
            6 => Stage::NoNewPrivs,
            7 => Stage::Seccomp,
            8 => Stage::Exec,
            9 => Stage::Fork,
            10 => Stage::Cgroup,
            11 => Stage::OomScore,
            12 => Stage::Bind,
            _ => return None,
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            Stage::Stdio => "setting up stdin/stdout/stderr",
            Stage::Rlimits => "setting rlimits",
            Stage::Caps => "dropping capabilities",
            Stage::Ids => "switching to the sandbox uid/gid",
            Stage::Cwd => "changing to the working directory",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Exec => "executing the program",
            Stage::Fork => "starting the program's process",
            Stage::Cgroup => "entering the run's cgroup",
            Stage::OomScore => "making the program the OOM killer's choice",
            Stage::Bind => "attaching a read-only file",
        }
    }
}

/// Most descriptors one message carries: the program's three streams and its binds.
pub const MAX_FDS: usize = 64;

/// Room for MAX_FDS descriptors' control message (16-byte header + 4 bytes each), aligned for
/// cmsghdr.
type Control = [u64; 2 + MAX_FDS / 2];

/// Sends one message with `fds` attached. Async-signal-safe. Errors are left to the other
/// end's EOF: a peer that is gone is noticed there.
fn send_raw(sock: RawFd, msg: Wire, fds: &[RawFd]) -> bool {
    let mut iov = libc::iovec {
        iov_base: &msg as *const Wire as *mut libc::c_void,
        iov_len: std::mem::size_of::<Wire>(),
    };
    let mut control: Control = [0; 2 + MAX_FDS / 2];
    // SAFETY: a zeroed msghdr is a valid value; the pointers set below outlive sendmsg.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    let n = fds.len().min(MAX_FDS);
    if n > 0 {
        let bytes = (n * std::mem::size_of::<RawFd>()) as u32;
        hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: CMSG_SPACE is arithmetic on a small constant.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        // SAFETY: msg_control points at `control`, large enough for one cmsghdr and n fds.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        // SAFETY: cmsg points into `control` (CMSG_FIRSTHDR of a non-empty control buffer).
        unsafe {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
        }
        for (i, fd) in fds.iter().take(n).enumerate() {
            // SAFETY: CMSG_DATA has room for n fds (CMSG_SPACE above); unaligned write.
            unsafe { std::ptr::write_unaligned((libc::CMSG_DATA(cmsg) as *mut RawFd).add(i), *fd) };
        }
    }
    // SAFETY: hdr and everything it points to are live for the call.
    unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) >= 0 }
}

/// What one receive gave. Large on purpose: the child side may not allocate (no Box).
#[allow(clippy::large_enum_variant)]
enum Raw {
    Message(Wire, [RawFd; MAX_FDS], usize),
    /// Nothing there now (non-blocking socket).
    Nothing,
    Eof,
}

/// Receives one message; received fds are close-on-exec. Async-signal-safe.
fn recv_raw(sock: RawFd, flags: i32) -> Raw {
    let mut msg = Wire::default();
    let mut iov = libc::iovec {
        iov_base: &mut msg as *mut Wire as *mut libc::c_void,
        iov_len: std::mem::size_of::<Wire>(),
    };
    let mut control: Control = [0; 2 + MAX_FDS / 2];
    // SAFETY: a zeroed msghdr is a valid value; the pointers set below outlive recvmsg.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: as above; MSG_CMSG_CLOEXEC so that no received fd leaks into a later child.
        let n = unsafe { libc::recvmsg(sock, &mut hdr, flags | libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n == 0 {
        return Raw::Eof;
    }
    if n < 0 {
        return if errno() == libc::EAGAIN {
            Raw::Nothing
        } else {
            Raw::Eof
        };
    }
    let mut fds = [-1; MAX_FDS];
    let mut count = 0;
    // SAFETY: walking the control messages the kernel just wrote into `control`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is a control message header inside `control`.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is arithmetic.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = len.saturating_sub(header) / std::mem::size_of::<RawFd>();
            for i in 0..n {
                // SAFETY: the kernel wrote n fds after the header; unaligned read.
                let fd = unsafe {
                    std::ptr::read_unaligned((libc::CMSG_DATA(cmsg) as *const RawFd).add(i))
                };
                if count < MAX_FDS {
                    fds[count] = fd;
                    count += 1;
                } else {
                    // SAFETY: an fd we received and do not keep.
                    unsafe { libc::close(fd) };
                }
            }
        }
        // SAFETY: walking the same control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    if n as usize != std::mem::size_of::<Wire>() {
        // A short message is no message: drop what came with it.
        for fd in &fds[..count] {
            // SAFETY: fds we received and do not keep.
            unsafe { libc::close(*fd) };
        }
        return Raw::Eof;
    }
    Raw::Message(msg, fds, count)
}

/// The child side (init and the program, after clone). Async-signal-safe.
pub mod child {
    use super::*;

    /// Reports `kind` with its two values.
    pub fn send(sock: RawFd, kind: Kind, a: i32, b: i64) {
        send_raw(
            sock,
            Wire {
                kind: kind as u32,
                a,
                b,
            },
            &[],
        );
    }

    /// Sends `kind` with `fds`; false when nobody holds the other end any more.
    pub fn pass(sock: RawFd, kind: Kind, fds: &[RawFd]) -> bool {
        send_raw(
            sock,
            Wire {
                kind: kind as u32,
                a: 0,
                b: 0,
            },
            fds,
        )
    }

    /// Waits for the engine's next command (blocking). `None` on EOF: the engine gave up or
    /// is done with this sandbox.
    pub fn command(sock: RawFd, fds: &mut [RawFd; MAX_FDS]) -> Option<(Msg, usize)> {
        loop {
            match recv_raw(sock, 0) {
                Raw::Message(w, got, n) => {
                    *fds = got;
                    match Kind::from_u32(w.kind) {
                        Some(kind) => {
                            return Some((
                                Msg {
                                    kind,
                                    a: w.a,
                                    b: w.b,
                                },
                                n,
                            ))
                        }
                        None => {
                            for fd in &got[..n] {
                                // SAFETY: fds we received and do not keep.
                                unsafe { libc::close(*fd) };
                            }
                        }
                    }
                }
                Raw::Nothing => continue,
                Raw::Eof => return None,
            }
        }
    }
}

/// The engine's end of the socket.
pub struct Channel {
    sock: OwnedFd,
}

/// What the engine received.
pub enum Received {
    Message(Msg, Option<OwnedFd>),
    /// Nothing there now.
    Nothing,
    /// Every holder of the other end is gone.
    Eof,
}

impl Channel {
    /// A connected pair: the engine's channel and the child's raw end (close-on-exec).
    pub fn pair() -> std::io::Result<(Channel, OwnedFd)> {
        let (parent, child) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        Ok((Channel { sock: parent }, child))
    }

    pub fn raw(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Sends a command to init, with `fds` attached. False when init is gone.
    pub fn command(&self, kind: Kind, fds: &[RawFd]) -> bool {
        send_raw(
            self.sock.as_raw_fd(),
            Wire {
                kind: kind as u32,
                a: 0,
                b: 0,
            },
            fds,
        )
    }

    /// Receives one message without blocking.
    pub fn try_recv(&self) -> Received {
        match recv_raw(self.sock.as_raw_fd(), libc::MSG_DONTWAIT) {
            Raw::Nothing => Received::Nothing,
            Raw::Eof => Received::Eof,
            Raw::Message(w, fds, n) => {
                // SAFETY: fds the kernel just gave us; each owned exactly once below.
                let mut owned = fds[..n]
                    .iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
                let first = owned.next();
                drop(owned.collect::<Vec<_>>());
                match Kind::from_u32(w.kind) {
                    Some(kind) => Received::Message(
                        Msg {
                            kind,
                            a: w.a,
                            b: w.b,
                        },
                        first,
                    ),
                    // A kind we do not know: the other end is not ours.
                    None => Received::Eof,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds_cross_the_socket() {
        let (engine, child_end) = Channel::pair().unwrap();
        child::send(child_end.as_raw_fd(), Kind::Exited, 9, -7);
        match engine.try_recv() {
            Received::Message(m, None) => {
                assert_eq!(
                    m,
                    Msg {
                        kind: Kind::Exited,
                        a: 9,
                        b: -7
                    }
                )
            }
            _ => panic!("no message"),
        }
        assert!(matches!(engine.try_recv(), Received::Nothing));

        let file = std::fs::File::open("/dev/null").unwrap();
        child::pass(
            child_end.as_raw_fd(),
            Kind::SeccompListener,
            &[file.as_raw_fd()],
        );
        match engine.try_recv() {
            Received::Message(m, Some(fd)) => {
                assert_eq!(m.kind, Kind::SeccompListener);
                assert_ne!(fd.as_raw_fd(), file.as_raw_fd());
            }
            _ => panic!("no fd"),
        }

        let (r, w) = crate::sys::pipe().unwrap();
        assert!(engine.command(Kind::Run, &[r.as_raw_fd(), w.as_raw_fd()]));
        let mut fds = [-1; MAX_FDS];
        let (m, n) = child::command(child_end.as_raw_fd(), &mut fds).unwrap();
        assert_eq!((m.kind, n), (Kind::Run, 2));
        for fd in &fds[..2] {
            // SAFETY: received fds, owned here.
            drop(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
        drop(engine);
        assert!(child::command(child_end.as_raw_fd(), &mut fds).is_none());
    }

    #[test]
    fn unknown_numbers_are_not_messages() {
        assert_eq!(Kind::from_u32(0), None);
        assert_eq!(Kind::from_u32(99), None);
        assert_eq!(Stage::from_i32(10), Some(Stage::Cgroup));
        assert_eq!(Stage::from_i32(0), None);
    }
}
