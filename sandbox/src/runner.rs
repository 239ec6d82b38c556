//! The engine object: configuration shared by runs, and `run`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::capabilities;
use crate::cgroup::{CgroupManager, CgroupVersion, RunCgroup};
use crate::child;
use crate::error::Error;
use crate::files;
use crate::namespaces;
use crate::netns_pool::NetnsPool;
use crate::outcome::{EndReason, Outcome, SeccompViolation, TimeoutKind};
use crate::plan::{ChildPlan, Fds};
use crate::rlimits;
use crate::rootfs::{self, inside_path, RootOptions};
use crate::seccomp::{self, CompiledPolicy};
use crate::signals::signal_name;
use crate::spec::{Spec, Stdin};
use crate::supervisor::{self, Hooks, KillCause, Stream, Supervisor};
use crate::sys::{self, CloneArgs, CLONE_INTO_CGROUP, CLONE_PIDFD};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Parent cgroup (a path relative to each hierarchy's root, v1, or to the unified root,
    /// v2) under which run cgroups are created. Default: the engine's own cgroup.
    pub cgroup_parent: Option<PathBuf>,
    /// First host uid/gid of the range the sandbox's user namespace maps to (65536 ids).
    pub host_id_base: u32,
    /// Network namespaces prepared ahead of time (0: each run creates its own).
    pub netns_pool_size: usize,
    /// An empty directory the engine owns, over which a run mounts its scratch space (inside
    /// the run's own mount namespace: nothing is mounted on the host).
    pub runtime_dir: PathBuf,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cgroup_parent: None,
            host_id_base: 1_000_000,
            netns_pool_size: 2,
            runtime_dir: PathBuf::from("/run/sandpit/stage"),
        }
    }
}

/// Where a run's streams go besides the capture, and how to stop it from outside.
#[derive(Default)]
pub struct Io {
    /// Receives stdout as it is written (up to the output limit), e.g. a terminal or a live log.
    pub stdout_sink: Option<Box<dyn Write + Send>>,
    pub stderr_sink: Option<Box<dyn Write + Send>>,
    /// Ends the run with `stopped` when triggered.
    pub stop: Option<StopHandle>,
}

/// A handle that stops a running sandbox (end reason `stopped`). Clone it freely; stopping
/// before the run starts stops it as soon as it starts.
#[derive(Clone)]
pub struct StopHandle {
    event: Arc<OwnedFd>,
}

impl StopHandle {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(StopHandle {
            // SAFETY: a fresh fd nothing else owns.
            event: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
        })
    }

    /// Asks the run to stop.
    pub fn stop(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live value to our eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }
}

/// The sandbox engine. Share it between threads (`&Sandbox` is `Sync`).
pub struct Sandbox {
    config: SandboxConfig,
    cgroups: CgroupManager,
    policy: CompiledPolicy,
    last_cap: u8,
    cpus: u64,
    netns: Option<NetnsPool>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Setup(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh fds nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn stdin_fd(stdin: &Stdin) -> Result<OwnedFd, Error> {
    match stdin {
        Stdin::Null => File::open("/dev/null")
            .map(Into::into)
            .map_err(|e| Error::Setup(format!("/dev/null: {e}"))),
        Stdin::File(path) => File::open(path)
            .map(Into::into)
            .map_err(|e| Error::InvalidSpec(format!("stdin file {}: {e}", path.display()))),
        Stdin::Bytes(bytes) => {
            // A sealed-size memfd: any amount of input, no writer thread, seekable.
            let fd = nix::sys::memfd::memfd_create(
                c"sandpit-stdin",
                nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
            )
            .map_err(|e| Error::Setup(format!("memfd_create: {e}")))?;
            let mut file = File::from(fd);
            file.write_all(bytes)
                .map_err(|e| Error::Setup(format!("writing stdin: {e}")))?;
            use std::io::Seek;
            file.rewind()
                .map_err(|e| Error::Setup(format!("rewinding stdin: {e}")))?;
            Ok(file.into())
        }
    }
}

struct RunHooks<'a> {
    spec: &'a Spec,
    workdir: PathBuf,
    pid: i32,
    host_uid: u32,
    host_gid: u32,
    steps: Vec<String>,
}

impl Hooks for RunHooks<'_> {
    fn copy_in(&mut self) -> Result<(), String> {
        files::copy_in(
            self.pid,
            &self.spec.files,
            &self.workdir,
            self.host_uid,
            self.host_gid,
        )
    }

    fn collect(&mut self) -> BTreeMap<String, Result<Vec<u8>, String>> {
        files::collect(
            self.pid,
            &self.workdir,
            &self.spec.collect,
            self.spec.collect_max_bytes,
        )
    }

    fn describe_step(&self, index: usize) -> String {
        self.steps
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("step {index}"))
    }
}

impl Sandbox {
    /// Prepares the engine: checks the kernel ([`crate::host`]), finds the cgroup hierarchy
    /// and places itself in it (on v2 in a leaf of its own, undone when the engine is dropped),
    /// compiles the seccomp policy, starts the network namespace pool. Needs root. Refuses a
    /// cgroup without memory and pids delegated with [`Error::NotDelegated`].
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Setup("sandpit must run as root".into()));
        }
        crate::host::require()?;
        if config.host_id_base == 0
            || config
                .host_id_base
                .checked_add(namespaces::ID_RANGE)
                .is_none()
        {
            return Err(Error::Setup(
                "host_id_base must leave room for 65536 ids above 0".into(),
            ));
        }
        std::fs::create_dir_all(&config.runtime_dir)
            .map_err(|e| Error::Setup(format!("creating {}: {e}", config.runtime_dir.display())))?;
        let cgroups = CgroupManager::detect(config.cgroup_parent.as_deref())?;
        let policy = seccomp::default_policy()?;
        let netns = match config.netns_pool_size {
            0 => None,
            n => Some(NetnsPool::start(n)?),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Ok(Sandbox {
            config,
            cgroups,
            policy,
            last_cap: capabilities::last_cap(),
            cpus,
            netns,
        })
    }

    /// The cgroup interface in use.
    pub fn cgroup_version(&self) -> CgroupVersion {
        self.cgroups.version()
    }

    /// Removes cgroups left by engines that died (crash, kill -9); returns how many.
    pub fn cleanup_stale(&self) -> usize {
        self.cgroups.cleanup_stale()
    }

    /// Runs one program in a fresh sandbox. `Err` only for a spec that cannot run as given;
    /// a failure of the sandbox itself is an outcome with `end_reason: internal-error`.
    pub fn run(&self, spec: &Spec, io: Io) -> Result<Outcome, Error> {
        let workdir = inside_path(&spec.workdir, "work directory")?;
        for f in &spec.files {
            files::destination(f, &workdir)?;
        }
        for c in &spec.collect {
            files::collect_path(c).map_err(Error::InvalidSpec)?;
        }
        if spec.uid >= namespaces::ID_RANGE || spec.gid >= namespaces::ID_RANGE {
            return Err(Error::InvalidSpec("uid and gid must be below 65536".into()));
        }
        let pooled_netns = self.netns.as_ref().and_then(NetnsPool::take);
        let v1 = self.cgroups.version() == CgroupVersion::V1;
        let root = rootfs::plan(
            spec,
            &RootOptions {
                stage_dir: &self.config.runtime_dir,
                own_netns: pooled_netns.is_none(),
                unshare_cgroupns: v1,
            },
        )?;
        let steps: Vec<String> = root.steps.iter().map(|s| s.what.clone()).collect();
        let stdin = stdin_fd(&spec.stdin)?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (report_parent, report_child) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::Setup(format!("socketpair: {e}")))?;
        let plan = ChildPlan::new(
            spec,
            root,
            &self.policy,
            rlimits::for_limits(&spec.limits),
            self.last_cap,
            Fds {
                stdin: stdin.as_raw_fd(),
                stdout: out_w.as_raw_fd(),
                stderr: err_w.as_raw_fd(),
                report: report_child.as_raw_fd(),
            },
        )?;

        let cgroup = match self.cgroups.create(&spec.limits) {
            Ok(cg) => cg,
            Err(e) => return Ok(Outcome::internal_error(e.to_string())),
        };
        let spawned = self.spawn(&plan, &cgroup, pooled_netns, v1);
        // The child holds its own copies now.
        drop((stdin, out_w, err_w, report_child));
        let (pid, pidfd) = match spawned {
            Ok(p) => p,
            Err(e) => return Ok(Outcome::internal_error(e.to_string())),
        };
        // Let the child go (it holds until the id maps and cgroup are in place).
        // SAFETY: one byte from a static buffer.
        unsafe {
            libc::send(
                report_parent.as_raw_fd(),
                [1u8].as_ptr() as *const _,
                1,
                libc::MSG_NOSIGNAL,
            )
        };
        sys::set_nonblocking(out_r.as_raw_fd());
        sys::set_nonblocking(err_r.as_raw_fd());
        sys::set_nonblocking(report_parent.as_raw_fd());
        let supervisor = Supervisor {
            init_pid: pid,
            pidfd,
            report: Some(report_parent),
            stdout: Stream::new(out_r, io.stdout_sink),
            stderr: Stream::new(err_r, io.stderr_sink),
            stop: io.stop.as_ref().map(|s| s.event.as_raw_fd()),
            cgroup: &cgroup,
            limits: supervisor::Limits {
                cpu: spec.limits.cpu_time,
                wall: spec.limits.wall_time,
                output: spec.limits.output_bytes,
                cpus: self.cpus,
            },
        };
        let mut hooks = RunHooks {
            spec,
            workdir,
            pid,
            host_uid: self.config.host_id_base + spec.uid,
            host_gid: self.config.host_id_base + spec.gid,
            steps,
        };
        let (watch, out, err) = supervisor.watch(&mut hooks);
        let stats = cgroup.stats();
        let version = self.cgroups.version().number();
        drop(cgroup);
        Ok(verdict(watch, stats, out, err, version))
    }

    /// clone3 with every namespace; the child runs `init_main` and never returns here.
    fn spawn(
        &self,
        plan: &ChildPlan,
        cgroup: &RunCgroup,
        pooled_netns: Option<OwnedFd>,
        v1: bool,
    ) -> Result<(i32, OwnedFd), Error> {
        let mut pidfd: libc::c_int = -1;
        let mut args = CloneArgs {
            flags: namespaces::clone_flags(pooled_netns.is_none(), !v1) | CLONE_PIDFD,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            // No SIGCHLD: nobody else's waitpid(-1) may reap our init.
            exit_signal: 0,
            ..Default::default()
        };
        if let Some(dir) = cgroup.dir_fd() {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = dir.as_raw_fd() as u64;
        }
        let original_netns = match &pooled_netns {
            Some(ns) => {
                let original = File::open("/proc/thread-self/ns/net")
                    .map_err(|e| Error::Setup(format!("opening own netns: {e}")))?;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::Setup(format!("joining a pooled netns: {e}")))?;
                Some(original)
            }
            None => None,
        };
        // SAFETY: the child only runs `init_main`, which uses raw syscalls on `plan` (prepared
        // above) and ends in _exit.
        let result = unsafe { sys::clone3(&mut args) };
        if let Ok(0) = result {
            // SAFETY: we are the child of clone3.
            unsafe { child::init_main(plan) }
        }
        if let Some(original) = original_netns {
            // This thread must not stay in the sandbox's network namespace.
            nix::sched::setns(original, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Setup(format!("returning to own netns: {e}")))?;
        }
        let pid = result.map_err(|e| Error::Setup(format!("clone3: {e}")))?;
        // SAFETY: the kernel stored a fresh pidfd for the child.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let setup = || -> Result<(), Error> {
            namespaces::write_id_maps(pid, self.config.host_id_base)?;
            if v1 {
                cgroup.add_process(pid)?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = sys::pidfd_send_signal(pidfd.as_raw_fd(), libc::SIGKILL);
            sys::pidfd_reap(&pidfd);
            return Err(e);
        }
        Ok((pid, pidfd))
    }
}

/// Turns the evidence into an outcome.
fn verdict(
    watch: supervisor::Watch,
    stats: crate::cgroup::CgroupStats,
    stdout: Stream,
    stderr: Stream,
    cgroup_version: u8,
) -> Outcome {
    let now = sys::monotonic_ns();
    let wall_ns = match (watch.started_at, watch.exited) {
        (Some(s), Some((_, e))) => e - s,
        (Some(s), None) => now - s,
        _ => 0,
    };
    let cpu_ns = stats.cpu_ns.saturating_sub(watch.cpu_baseline_ns);
    let scale = |part: u64| {
        if stats.cpu_ns == 0 {
            0.0
        } else {
            cpu_ns as f64 * part as f64 / stats.cpu_ns as f64 / 1e9
        }
    };
    let (mut exit_code, mut signal) = (None, None);
    if let Some((status, _)) = watch.exited {
        if libc::WIFEXITED(status) {
            exit_code = Some(libc::WEXITSTATUS(status));
        } else if libc::WIFSIGNALED(status) {
            signal = Some(libc::WTERMSIG(status));
        }
    }
    let killed = watch.killed;
    let (end_reason, timeout, message) = if let Some(e) = watch.setup_error {
        (EndReason::InternalError, None, Some(e))
    } else if watch.exited.is_none() && killed.is_none() {
        (
            EndReason::InternalError,
            None,
            Some("the sandbox's init ended without reporting the program's status".into()),
        )
    } else if killed == Some(KillCause::Stop) {
        (EndReason::Stopped, None, Some("stopped on request".into()))
    } else if stats.oom_kills > 0 {
        (
            EndReason::OutOfMemory,
            None,
            Some(format!(
                "the memory cgroup's OOM killer ended {} process(es)",
                stats.oom_kills
            )),
        )
    } else if killed == Some(KillCause::CpuTime) {
        (
            EndReason::Timeout,
            Some(TimeoutKind::Cpu),
            Some("CPU time limit reached".into()),
        )
    } else if killed == Some(KillCause::WallTime) {
        (
            EndReason::Timeout,
            Some(TimeoutKind::Wall),
            Some("wall time limit reached".into()),
        )
    } else if killed == Some(KillCause::Output) {
        (
            EndReason::OutputLimit,
            None,
            Some("output limit reached".into()),
        )
    } else {
        (EndReason::Normal, None, None)
    };
    Outcome {
        end_reason,
        exit_code,
        signal,
        signal_name: signal.and_then(signal_name).map(str::to_string),
        timeout,
        cpu_time_s: cpu_ns as f64 / 1e9,
        user_time_s: scale(stats.user_ns),
        system_time_s: scale(stats.system_ns),
        wall_time_s: wall_ns.max(0) as f64 / 1e9,
        peak_memory_bytes: stats.peak_memory_bytes,
        stdout_bytes: stdout.total,
        stderr_bytes: stderr.total,
        stdout_truncated: stdout.truncated,
        stderr_truncated: stderr.truncated,
        stdout: stdout.data,
        stderr: stderr.data,
        oom_kills: stats.oom_kills,
        pids_limit_hit: stats.pids_limit_hit,
        seccomp_violations: watch
            .violations
            .into_iter()
            .map(|(nr, count)| SeccompViolation {
                syscall: seccomp::syscall_name(nr),
                count,
            })
            .collect(),
        cgroup_version,
        files: watch.files,
        message,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sandbox_is_shareable() {
        fn is_sync<T: Sync + Send>() {}
        is_sync::<super::Sandbox>();
    }
}
