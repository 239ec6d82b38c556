//! The engine's side of a running program: one thread, one ppoll loop over the init's pidfd,
//! the report socket, the output pipes, the seccomp listener and the stop eventfd. It enforces
//! the time and output limits, answers seccomp notifications, and gathers the evidence for the
//! verdict.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::cgroup::RunCgroup;
use crate::outcome::{Captured, KillCause};
use crate::report::{Channel, Kind, Received, Stage};
use crate::sys::{self, monotonic_ns};

/// One captured stream.
pub struct Stream {
    pub fd: Option<OwnedFd>,
    pub data: Vec<u8>,
    pub total: u64,
    pub truncated: bool,
    pub sink: Option<Box<dyn Write + Send>>,
}

impl Stream {
    /// What was captured, for the verdict.
    pub fn captured(self) -> Captured {
        Captured {
            data: self.data,
            total: self.total,
            truncated: self.truncated,
        }
    }

    /// A stream that is not captured (the program's fd goes elsewhere).
    pub fn none() -> Self {
        Stream {
            fd: None,
            data: Vec::new(),
            total: 0,
            truncated: false,
            sink: None,
        }
    }

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
    /// Denied syscalls answered (reported), in all.
    pub denials: u64,
    pub setup_error: Option<String>,
    pub killed: Option<KillCause>,
    pub started_at: Option<i64>,
    pub exited: Option<(i32, i64)>,
    pub cpu_baseline_ns: u64,
    pub violations: BTreeMap<i32, u64>,
    pub files: BTreeMap<String, Result<Vec<u8>, String>>,
    /// init's socket when the program ended and init, alone in the sandbox, waits for its
    /// end; None when init is already gone (reaped).
    pub init_waiting: Option<Channel>,
}

pub struct Limits {
    pub cpu: Option<Duration>,
    pub wall: Option<Duration>,
    pub output: Option<u64>,
    /// CPUs the sandbox may use at once: CPU time grows at most this fast.
    pub cpus: u64,
}

pub struct Supervisor<'a> {
    pub init_pid: i32,
    pub pidfd: &'a OwnedFd,
    pub channel: Option<Channel>,
    /// The program's seccomp listener, if it came before the run (else it comes on `channel`).
    pub listener: Option<OwnedFd>,
    pub stdout: Stream,
    pub stderr: Stream,
    /// Eventfds that end the run, each for its cause (a stop, a group's end or wall limit).
    pub stops: Vec<(RawFd, KillCause)>,
    pub cgroup: &'a RunCgroup,
    pub limits: Limits,
}

/// The program's seccomp listener, made non-blocking where the kernel honours it (6.11 on;
/// the poll is what keeps older kernels from blocking).
fn listening(listener: Option<OwnedFd>) -> Option<OwnedFd> {
    if let Some(l) = &listener {
        let _ = sys::set_nonblocking(l);
    }
    listener
}

/// Denied syscalls the supervisor answers per run. Each costs the engine a wakeup and two
/// ioctls; past this many, the engine's work would grow with what the program does, so the
/// rest fail with ENOSYS unreported (the outcome says the count was capped).
pub const MAX_REPORTED_DENIALS: u64 = 4096;

/// How long the supervisor may sleep before it reads the CPU counter again, with `left_ns` of
/// CPU time left. CPU time cannot grow faster than `cpus` per wall second, so sleeping for
/// left/cpus cannot overshoot; the last steps get short, so the overshoot is bounded by the
/// minimum step (0.5 ms of wall time).
fn cpu_check_interval(left_ns: u64, cpus: u64) -> Duration {
    Duration::from_nanos(left_ns / cpus.max(1))
        .clamp(Duration::from_micros(500), Duration::from_millis(100))
}

fn errno_text(e: i64) -> String {
    std::io::Error::from_raw_os_error(e as i32).to_string()
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
            let left = started.saturating_add(wall.as_nanos().min(i64::MAX as u128) as i64)
                - monotonic_ns();
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
            let limit = cpu.as_nanos().min(u64::MAX as u128) as u64;
            let left = limit.saturating_sub(used);
            if left == 0 {
                self.kill(watch, KillCause::CpuTime);
                return Some(Duration::from_millis(50));
            }
            let step = cpu_check_interval(left, self.limits.cpus);
            wait = Some(wait.map_or(step, |w| w.min(step)));
        }
        wait
    }

    /// Handles every pending report; true when the socket reached EOF.
    fn handle_reports(&mut self, watch: &mut Watch, listener: &mut Option<OwnedFd>) -> bool {
        let Some(channel) = &self.channel else {
            return true;
        };
        loop {
            let (msg, passed) = match channel.try_recv() {
                Received::Message(msg, passed) => (msg, passed),
                Received::Nothing => return false,
                Received::Eof => return true,
            };
            match msg.kind {
                Kind::Started => {
                    watch.started_at = Some(msg.b);
                    watch.cpu_baseline_ns = self.cgroup.cpu_usage_ns();
                }
                Kind::ProgramFailed => {
                    let what = match Stage::from_i32(msg.a) {
                        Some(Stage::Exec) => "the program could not be executed",
                        Some(stage) => stage.describe(),
                        None => "setting up the program",
                    };
                    watch.setup_error = Some(format!("{what}: {}", errno_text(msg.b)));
                }
                Kind::SeccompListener => *listener = listening(passed),
                Kind::Exited => watch.exited = Some((msg.a, msg.b)),
                // Setup messages belong to the handshake before Run.
                _ => {}
            }
        }
    }

    /// Runs until the program and every process of the sandbox but init ended (or init too,
    /// when it ended first). `collect` reads the output files while init still holds the
    /// mount namespace.
    pub fn watch(
        mut self,
        collect: &mut dyn FnMut() -> BTreeMap<String, Result<Vec<u8>, String>>,
    ) -> (Watch, Stream, Stream) {
        let mut watch = Watch {
            denials: 0,
            setup_error: None,
            killed: None,
            started_at: None,
            exited: None,
            cpu_baseline_ns: 0,
            violations: BTreeMap::new(),
            files: BTreeMap::new(),
            init_waiting: None,
        };
        let mut listener = listening(self.listener.take());
        let mut init_alive = true;
        let mut collected = false;
        loop {
            let streams_open = self.stdout.fd.is_some() || self.stderr.fd.is_some();
            if watch.exited.is_some() && !streams_open && !collected {
                collected = true;
                if watch.setup_error.is_none() {
                    watch.files = collect();
                }
                // init killed and reaped every other process of the sandbox before it
                // reported the exit: the verdict can be made now. init waits on the socket;
                // its end (the namespaces' teardown) is the reaper's.
                watch.init_waiting = self.channel.take().filter(|_| init_alive);
                if watch.init_waiting.is_some() {
                    break;
                }
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
            let i_report = self.channel.as_ref().map(|c| push(c.raw()));
            let i_out = self.stdout.fd.as_ref().map(|f| push(f.as_raw_fd()));
            let i_err = self.stderr.fd.as_ref().map(|f| push(f.as_raw_fd()));
            let i_listener = listener.as_ref().map(|f| push(f.as_raw_fd()));
            let i_stops: Vec<(usize, KillCause)> = if watch.killed.is_none() {
                self.stops
                    .iter()
                    .map(|(fd, cause)| (push(*fd), *cause))
                    .collect()
            } else {
                Vec::new()
            };
            let wait = self.enforce_time_limits(&mut watch);
            sys::poll(&mut fds, wait);
            let ready = |i: Option<usize>| i.is_some_and(|i| fds[i].revents != 0);
            if ready(i_report) && self.handle_reports(&mut watch, &mut listener) {
                // EOF: every holder of the child end is gone.
                self.channel = None;
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
                            watch.denials += 1;
                            if watch.denials >= MAX_REPORTED_DENIALS {
                                // Closing the listener makes every later denied call fail
                                // with ENOSYS in the kernel, at no cost to the engine.
                                listener = None;
                            }
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
            if let Some((_, cause)) = i_stops.iter().find(|(i, _)| fds[*i].revents != 0) {
                self.kill(&mut watch, *cause);
            }
            if ready(i_pid) {
                init_alive = false;
                // Whatever init did not report, it will not report now.
                self.handle_reports(&mut watch, &mut listener);
                self.channel = None;
            }
        }
        if watch.init_waiting.is_none() {
            // Wait for init's end (and reap it, when the engine's own thread cloned it).
            sys::pidfd_reap(self.pidfd);
        }
        (watch, self.stdout, self.stderr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_check_interval_never_sleeps_past_the_limit() {
        let ms = Duration::from_millis;
        // A whole second left on 2 CPUs: at most 100 ms between checks.
        assert_eq!(cpu_check_interval(1_000_000_000, 2), ms(100));
        // 60 ms left on 2 CPUs: 30 ms of wall time cannot use more than 60 ms of CPU.
        assert_eq!(cpu_check_interval(60_000_000, 2), ms(30));
        // Near the end the steps shrink, but not below 0.5 ms.
        assert_eq!(cpu_check_interval(100_000, 1), Duration::from_micros(500));
        // A machine that reports 0 CPUs is treated as one.
        assert_eq!(cpu_check_interval(20_000_000, 0), ms(20));
    }
}
