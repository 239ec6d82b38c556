//! The parent side of a run: one thread, one ppoll loop over the init's pidfd, the report
//! socket, the output pipes, the seccomp listener and the stop eventfd. It enforces the time
//! and output limits, answers seccomp notifications, and gathers the evidence for the verdict.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::cgroup::RunCgroup;
use crate::plan::*;
use crate::sys::{self, monotonic_ns};

/// Why the supervisor ended the run itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCause {
    CpuTime,
    WallTime,
    Output,
    Stop,
    SetupFailed,
}

/// One captured stream.
pub struct Stream {
    pub fd: Option<OwnedFd>,
    pub data: Vec<u8>,
    pub total: u64,
    pub truncated: bool,
    pub sink: Option<Box<dyn Write + Send>>,
}

impl Stream {
    pub fn new(fd: OwnedFd, sink: Option<Box<dyn Write + Send>>) -> Self {
        Stream {
            fd: Some(fd),
            data: Vec::new(),
            total: 0,
            truncated: false,
            sink,
        }
    }

    /// Reads what is there, at most [`PUMP_BYTES`] per call so that one flooding stream
    /// cannot keep the supervisor from its other duties; returns true when the stream went
    /// over `cap`. Reads are counted against the cap as they come and sized to end one byte
    /// past it, and the pipe is closed at once then: what the program wrote after the cap is
    /// neither read nor counted (it is being killed).
    fn pump(&mut self, cap: Option<u64>) -> bool {
        let Some(fd) = &self.fd else { return false };
        let mut buf = [0u8; READ_CHUNK];
        let mut budget = PUMP_BYTES;
        while budget > 0 {
            let want = match cap {
                // One byte past the cap is enough to know it was crossed.
                Some(c) => (c + 1).saturating_sub(self.total).min(READ_CHUNK as u64) as usize,
                None => READ_CHUNK,
            };
            if want == 0 {
                break;
            }
            // SAFETY: reads into a live stack buffer, at most its length.
            let n =
                unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, want) };
            if n == 0 {
                self.fd = None;
                break;
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    self.fd = None;
                }
                break;
            }
            budget = budget.saturating_sub(n as usize);
            let chunk = &buf[..n as usize];
            self.total += chunk.len() as u64;
            let room = cap.map_or(usize::MAX, |c| {
                c.saturating_sub(self.data.len() as u64) as usize
            });
            let keep = &chunk[..chunk.len().min(room)];
            if keep.len() < chunk.len() {
                self.truncated = true;
            }
            if let Some(sink) = &mut self.sink {
                if !keep.is_empty() && sink.write_all(keep).and_then(|_| sink.flush()).is_err() {
                    self.sink = None;
                }
            }
            self.data.extend_from_slice(keep);
        }
        if self.truncated {
            self.fd = None;
        }
        self.truncated
    }
}

/// One read(2) at most: the pipe's default capacity.
const READ_CHUNK: usize = 64 << 10;
/// At most this much is read from one stream per wakeup of the supervisor.
const PUMP_BYTES: usize = 1 << 20;

/// What the supervisor saw.
pub struct Watch {
    pub setup_error: Option<String>,
    pub killed: Option<KillCause>,
    pub started_at: Option<i64>,
    pub exited: Option<(i32, i64)>,
    pub cpu_baseline_ns: u64,
    pub violations: BTreeMap<i32, u64>,
    pub files: BTreeMap<String, Result<Vec<u8>, String>>,
}

pub struct Limits {
    pub cpu: Option<Duration>,
    pub wall: Option<Duration>,
    pub output: Option<u64>,
    /// CPUs the sandbox may use at once: CPU time grows at most this fast.
    pub cpus: u64,
}

/// Callbacks into the runner at the two moments the supervisor cannot handle alone.
pub trait Hooks {
    /// The mounts are done: copy the input files in (an error becomes internal-error).
    fn copy_in(&mut self) -> Result<(), String>;
    /// The program ended and init still holds the mount namespace: read outputs.
    fn collect(&mut self) -> BTreeMap<String, Result<Vec<u8>, String>>;
    /// Describes a failed setup step.
    fn describe_step(&self, index: usize) -> String;
}

pub struct Supervisor<'a> {
    pub init_pid: i32,
    pub pidfd: OwnedFd,
    pub report: Option<OwnedFd>,
    pub stdout: Stream,
    pub stderr: Stream,
    pub stop: Option<RawFd>,
    pub cgroup: &'a RunCgroup,
    pub limits: Limits,
}

fn errno_text(e: i64) -> String {
    std::io::Error::from_raw_os_error(e as i32).to_string()
}

enum Received {
    Message(Report, Option<OwnedFd>),
    Nothing,
    Eof,
}

/// Receives one report; a listener fd travels with REPORT_SECCOMP_FD.
fn recv_report(fd: RawFd) -> Received {
    let mut msg = Report::default();
    let mut iov = libc::iovec {
        iov_base: &mut msg as *mut Report as *mut libc::c_void,
        iov_len: std::mem::size_of::<Report>(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr points at live buffers of the stated sizes.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: as above; MSG_CMSG_CLOEXEC so a received fd never leaks into a later child.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n == 0 {
        return Received::Eof;
    }
    if n < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        return if e == Some(libc::EAGAIN) || e == Some(libc::EINTR) {
            Received::Nothing
        } else {
            Received::Eof
        };
    }
    let mut passed = None;
    // SAFETY: walking the control messages the kernel just wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
                passed = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    Received::Message(msg, passed)
}

impl Supervisor<'_> {
    fn kill(&self, watch: &mut Watch, cause: KillCause) {
        if watch.killed.is_none() {
            watch.killed = Some(cause);
        }
        // Kill the program and everything it started, but not init: it reports the end and
        // keeps the mount namespace for the output files. If the program's processes keep
        // escaping (forking while being killed), init goes too, taking the namespace along.
        // Before the program started there is nothing to keep: end the whole sandbox.
        let before_start = watch.started_at.is_none();
        if before_start
            || cause == KillCause::SetupFailed
            || !self.cgroup.kill_all_except(self.init_pid)
        {
            let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
        }
    }

    /// Kills the run if it is over a time limit; otherwise returns how long ppoll may sleep
    /// before the next check. The cgroup's CPU counter is read once per call.
    fn enforce_time_limits(&self, watch: &mut Watch) -> Option<Duration> {
        let started = watch.started_at?;
        if watch.exited.is_some() || watch.killed.is_some() {
            return Some(Duration::from_millis(50));
        }
        let mut wait: Option<Duration> = None;
        if let Some(wall) = self.limits.wall {
            let left = started + wall.as_nanos() as i64 - monotonic_ns();
            if left <= 0 {
                self.kill(watch, KillCause::WallTime);
                return Some(Duration::from_millis(50));
            }
            wait = Some(Duration::from_nanos(left as u64));
        }
        if let Some(cpu) = self.limits.cpu {
            let used = self
                .cgroup
                .cpu_usage_ns()
                .saturating_sub(watch.cpu_baseline_ns);
            let left = (cpu.as_nanos() as u64).saturating_sub(used);
            if left == 0 {
                self.kill(watch, KillCause::CpuTime);
                return Some(Duration::from_millis(50));
            }
            // CPU time cannot grow faster than `cpus` per wall second: sleeping for
            // left/cpus cannot overshoot; the last steps get short, so the overshoot is
            // bounded by the minimum step.
            let step = Duration::from_nanos(left / self.limits.cpus.max(1))
                .clamp(Duration::from_micros(500), Duration::from_millis(100));
            wait = Some(wait.map_or(step, |w| w.min(step)));
        }
        wait
    }

    /// Handles every pending report; true when the socket reached EOF.
    fn handle_report(
        &mut self,
        watch: &mut Watch,
        hooks: &mut dyn Hooks,
        listener: &mut Option<OwnedFd>,
    ) -> bool {
        let Some(fd) = self.report.as_ref().map(|f| f.as_raw_fd()) else {
            return true;
        };
        loop {
            let (msg, passed) = match recv_report(fd) {
                Received::Message(msg, passed) => (msg, passed),
                Received::Nothing => return false,
                Received::Eof => return true,
            };
            match msg.kind {
                REPORT_STEP_FAILED => {
                    watch.setup_error = Some(format!(
                        "setting up the sandbox failed at '{}': {}",
                        hooks.describe_step(msg.a as usize),
                        errno_text(msg.b)
                    ));
                    self.kill(watch, KillCause::SetupFailed);
                }
                REPORT_READY => {
                    let go = match hooks.copy_in() {
                        Ok(()) => true,
                        Err(e) => {
                            watch.setup_error = Some(format!("copying files in failed: {e}"));
                            self.kill(watch, KillCause::SetupFailed);
                            false
                        }
                    };
                    if go {
                        // SAFETY: one byte from a live stack value.
                        unsafe {
                            libc::send(fd, [1u8].as_ptr() as *const _, 1, libc::MSG_NOSIGNAL)
                        };
                    }
                }
                REPORT_STARTED => {
                    watch.started_at = Some(msg.b);
                    watch.cpu_baseline_ns = self.cgroup.cpu_usage_ns();
                }
                REPORT_PROGRAM_FAILED => {
                    let what = if msg.a == STAGE_EXEC {
                        "the program could not be executed"
                    } else {
                        stage_name(msg.a)
                    };
                    watch.setup_error = Some(format!("{what}: {}", errno_text(msg.b)));
                }
                REPORT_SECCOMP_FD => {
                    // Non-blocking where the kernel honours it (6.11 on); the poll above is
                    // what keeps older kernels from blocking.
                    if let Some(l) = &passed {
                        sys::set_nonblocking(l.as_raw_fd());
                    }
                    *listener = passed;
                }
                REPORT_EXITED => {
                    watch.exited = Some((msg.a, msg.b));
                }
                _ => {}
            }
        }
    }

    /// Runs until the program and every process of the sandbox ended.
    pub fn watch(mut self, hooks: &mut dyn Hooks) -> (Watch, Stream, Stream) {
        let mut watch = Watch {
            setup_error: None,
            killed: None,
            started_at: None,
            exited: None,
            cpu_baseline_ns: 0,
            violations: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        let mut listener: Option<OwnedFd> = None;
        let mut init_alive = true;
        let mut collected = false;
        loop {
            let streams_open = self.stdout.fd.is_some() || self.stderr.fd.is_some();
            if watch.exited.is_some() && !streams_open && !collected {
                collected = true;
                if watch.setup_error.is_none() {
                    watch.files = hooks.collect();
                }
                // init exits once its end of the socket sees EOF.
                self.report = None;
            }
            if !init_alive && !streams_open {
                break;
            }
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(6);
            let mut push = |fd: RawFd| {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                fds.len() - 1
            };
            let i_pid = init_alive.then(|| push(self.pidfd.as_raw_fd()));
            let i_report = self.report.as_ref().map(|f| push(f.as_raw_fd()));
            let i_out = self.stdout.fd.as_ref().map(|f| push(f.as_raw_fd()));
            let i_err = self.stderr.fd.as_ref().map(|f| push(f.as_raw_fd()));
            let i_listener = listener.as_ref().map(|f| push(f.as_raw_fd()));
            let i_stop = self.stop.filter(|_| watch.killed.is_none()).map(&mut push);
            let wait = self.enforce_time_limits(&mut watch);
            let ts = wait.map(|d| libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
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
            if n < 0 {
                continue; // EINTR
            }
            let ready = |i: Option<usize>| i.is_some_and(|i| fds[i].revents != 0);
            if ready(i_report) {
                // EOF: every holder of the child end is gone.
                if self.handle_report(&mut watch, hooks, &mut listener) {
                    self.report = None;
                }
            }
            if ready(i_out) && self.stdout.pump(self.limits.output) {
                self.kill(&mut watch, KillCause::Output);
            }
            if ready(i_err) && self.stderr.pump(self.limits.output) {
                self.kill(&mut watch, KillCause::Output);
            }
            if let (Some(i), Some(l)) = (i_listener, &listener) {
                let revents = fds[i].revents;
                // Receive only when a notification waits: before 6.11 the receive blocks on a
                // listener whose filter is gone (it reports POLLHUP alone), O_NONBLOCK or not.
                if revents & libc::POLLIN != 0 {
                    match sys::seccomp_notif_recv(l.as_raw_fd()) {
                        Ok(notif) => {
                            *watch.violations.entry(notif.data.nr).or_default() += 1;
                            let _ = sys::seccomp_notif_deny(l.as_raw_fd(), notif.id, libc::EPERM);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                        // ENOENT: the notifying task died before we received it.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(_) => listener = None,
                    }
                } else if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    // Every task of the filter ended: no notification can come any more.
                    listener = None;
                }
            }
            if ready(i_stop) {
                self.kill(&mut watch, KillCause::Stop);
            }
            if ready(i_pid) {
                init_alive = false;
                // Whatever init did not report, it will not report now.
                self.handle_report(&mut watch, hooks, &mut listener);
                self.report = None;
            }
        }
        // Reap init (exit_signal 0: only we can, through the pidfd).
        sys::pidfd_reap(&self.pidfd);
        (watch, self.stdout, self.stderr)
    }
}
