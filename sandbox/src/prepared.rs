//! A prepared sandbox: namespaces, cgroup and root filesystem set up, init waiting for one
//! program. Preparing does everything that does not depend on the program; running writes the
//! program's plan, copies its files in and lets init start it.
//!
//! The spawn path, top to bottom: plan the mounts → an arena of the engine's shared region → a
//! network namespace made ahead → clone3 in it, by the spawner or (one-shot) the engine's
//! thread (every other namespace, into the cgroup) → id maps → `Go` → init mounts → the
//! program's process started (it arms the seccomp filter and waits) → `EnvReady`. Then per
//! program: plan into the arena → limits → files → `Run` with the program's stdio (init hands
//! them on) → supervise → verdict → init's end handed to the reaper.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::{CgroupVersion, RunCgroup};
use crate::engine::{Sandbox, POINTS, SCRATCH, STAGE};
use crate::error::Error;
use crate::files;
use crate::ids::IdRange;
use crate::io::{stdin_fd, Io};
use crate::namespaces;
use crate::outcome::{verdict, Captured, Evidence, KillCause, Outcome};
use crate::plan::Arena;
use crate::reaper;
use crate::report::{Channel, Kind, Received, Stage};
use crate::rlimits;
use crate::root_mount;
use crate::rootfs::{self, inside_path, RootOptions};
use crate::seccomp;
use crate::spawn::{self, InitRequest};
use crate::spec::{EnvSpec, Limits, Spec};
use crate::supervisor::{self, Stream, Supervisor};
use crate::sys;
use crate::timeline::Timeline;

/// How long a sandbox's setup (mounts) may take before it counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A sandbox whose init waits for one program. Dropping it unused ends the sandbox.
pub struct Prepared {
    env: EnvSpec,
    init_pid: i32,
    pidfd: OwnedFd,
    /// Until the supervisor takes it for the run.
    channel: Option<Channel>,
    /// The program's seccomp listener, when it came before `EnvReady` (else the supervisor
    /// receives it).
    listener: Option<OwnedFd>,
    arena: Arena,
    /// Declared after the fields above: dropped after init is gone (see `Drop`).
    cgroup: RunCgroup,
    workdir: PathBuf,
    /// Dropped after init is reaped (see `Drop`): the range is free again only once every
    /// process of the sandbox is gone.
    ids: IdRange,
    cpus: u64,
    cgroup_version: CgroupVersion,
    /// Whether init still has to be killed and reaped.
    init_alive: bool,
    timeline: Timeline,
    /// Where this sandbox goes to end once its program's verdict is in.
    reaper: reaper::Handle,
}

fn failed(what: impl std::fmt::Display) -> Error {
    Error::SandboxFailed(what.to_string())
}

impl Prepared {
    pub(crate) fn create(engine: &Sandbox, env: &EnvSpec) -> Result<Prepared, Error> {
        let mut timeline = Timeline::start();
        let workdir = inside_path(&env.workdir, "work directory")?;
        if env.uid >= namespaces::ID_RANGE || env.gid >= namespaces::ID_RANGE {
            return Err(Error::InvalidSpec("uid and gid must be below 65536".into()));
        }
        let v1 = engine.cgroups.version() == CgroupVersion::V1;
        let runtime = &engine.config.runtime_dir;
        let root_fd = root_mount::make(
            &env.rootfs,
            &rootfs::mount_points(&workdir),
            &runtime.join(POINTS),
        )?;
        timeline.mark("root mount");
        let root = rootfs::plan(
            env,
            &RootOptions {
                root_fd: root_fd.as_raw_fd(),
                stage_dir: &runtime.join(STAGE),
                scratch_dir: &runtime.join(SCRATCH),
                unshare_cgroupns: v1,
            },
        )?;
        let steps: Vec<String> = root.steps.iter().map(|s| s.what.clone()).collect();
        let arena = engine.arenas.take()?;
        let (channel, child_end) =
            Channel::pair().map_err(|e| failed(format!("socketpair: {e}")))?;
        let ids = engine.ids.acquire()?;
        timeline.mark("plan");
        let cgroup = engine.cgroups.create().map_err(failed)?;
        timeline.mark("cgroup");
        let net = engine.netns.take()?;
        timeline.mark("network namespace");
        let spawned = spawn::init(
            engine,
            InitRequest {
                root,
                root_fd: root_fd.as_raw_fd(),
                report: child_end.as_raw_fd(),
                program: arena.plan(),
                cgroup: &cgroup,
                ids: &ids,
                net: net.as_raw_fd(),
            },
        );
        timeline.mark("clone3 + id maps");
        // init holds its own copies now.
        drop((child_end, root_fd));
        let (init_pid, pidfd) = spawned.map_err(failed)?;
        let mut prepared = Prepared {
            env: env.clone(),
            init_pid,
            pidfd,
            channel: Some(channel),
            listener: None,
            arena,
            cgroup,
            workdir,
            ids,
            cpus: engine.cpus,
            cgroup_version: engine.cgroups.version(),
            init_alive: true,
            timeline,
            reaper: engine.reaper.handle(),
        };
        prepared.listener = prepared.handshake(&steps)?;
        prepared.timeline.mark("init's mounts");
        // The next sandbox's cgroup is made now that this one is ready: made beside the
        // clone it slowed the clone down, and beside init's mounts the mounts.
        engine.cgroups.make_next();
        Ok(prepared)
    }

    /// Lets init set the sandbox up and waits until it says it is ready; returns the program's
    /// seccomp listener if it came first.
    fn handshake(&mut self, steps: &[String]) -> Result<Option<OwnedFd>, Error> {
        let channel = self.channel.as_ref().ok_or_else(|| failed("no channel"))?;
        if !channel.command(Kind::Go, &[]) {
            return Err(failed("the sandbox's init ended before its setup"));
        }
        let deadline = sys::monotonic_ns() + SETUP_TIMEOUT.as_nanos() as i64;
        let mut listener = None;
        loop {
            match channel.try_recv() {
                Received::Message(m, passed) => match m.kind {
                    Kind::EnvReady => return Ok(listener),
                    Kind::SeccompListener => listener = passed,
                    Kind::StepFailed => {
                        let step = usize::try_from(m.a)
                            .ok()
                            .and_then(|i| steps.get(i))
                            .map_or("an unknown step", String::as_str);
                        return Err(failed(format!(
                            "setting up the sandbox failed at '{step}': {}",
                            std::io::Error::from_raw_os_error(m.b as i32)
                        )));
                    }
                    Kind::ProgramFailed => {
                        let stage = Stage::from_i32(m.a).map_or("setup", Stage::describe);
                        return Err(failed(format!(
                            "setting up the sandbox failed at {stage}: {}",
                            std::io::Error::from_raw_os_error(m.b as i32)
                        )));
                    }
                    _ => {}
                },
                Received::Eof => {
                    return Err(failed("the sandbox's init ended during its setup"));
                }
                Received::Nothing => {}
            }
            let left = deadline - sys::monotonic_ns();
            if left <= 0 {
                return Err(failed(format!(
                    "the sandbox's setup did not finish within {} s",
                    SETUP_TIMEOUT.as_secs()
                )));
            }
            let mut fds = [
                libc::pollfd {
                    fd: channel.raw(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            sys::poll(&mut fds, Some(Duration::from_nanos(left as u64)));
            if fds[1].revents != 0 && fds[0].revents == 0 {
                return Err(failed("the sandbox's init ended during its setup"));
            }
        }
    }

    /// The environment this sandbox was prepared for.
    pub fn env(&self) -> &EnvSpec {
        &self.env
    }

    /// Writes the cgroup limits a run is expected to ask for, ahead of it: a run with the same
    /// limits then writes none (see [`RunCgroup::set_limits`]).
    pub(crate) fn set_limits_ahead(&mut self, limits: &Limits) -> Result<(), Error> {
        self.cgroup.set_limits(limits)
    }

    /// A run is asked for now, in this sandbox prepared ahead: `setup_s` counts from here.
    pub(crate) fn taken(&mut self) {
        self.timeline.asked_now();
    }

    /// Runs `spec`'s program in this sandbox and ends the sandbox. The spec's environment must
    /// be the one the sandbox was prepared for. `Err` only for a spec that cannot run as given;
    /// a failure of the sandbox itself is an outcome with `end_reason: internal-error`.
    pub fn run(self, spec: &Spec, io: Io) -> Result<Outcome, Error> {
        self.run_wired(spec, io, Wiring::default())
            .map(|ran| ran.outcome)
    }

    /// `run`, with some of the program's descriptors given instead of the defaults (a group's
    /// pipes) and more reasons to end it.
    pub(crate) fn run_wired(mut self, spec: &Spec, io: Io, wiring: Wiring) -> Result<Ran, Error> {
        if spec.env_spec() != self.env {
            return Err(Error::InvalidSpec(
                "the spec's environment is not the one this sandbox was prepared for".into(),
            ));
        }
        check_program(spec)?;
        self.timeline.mark("checked");
        let binds = files::Binds::open(spec, &self.workdir)?;
        // The program's descriptors: 0, 1, 2 (given, or stdin from the spec and captured
        // streams), then the given ones above 2.
        let given = |fd: i32| wiring.fds.iter().any(|(target, _)| *target == fd);
        let mut targets: Vec<i32> = vec![0, 1, 2];
        targets.extend(wiring.fds.iter().map(|(t, _)| *t).filter(|t| *t > 2));
        self.arena.write_program(
            spec,
            &rlimits::for_limits(&spec.limits)?,
            &targets,
            &binds.targets,
        )?;
        self.timeline.mark("binds + program plan");
        let stdin = if given(0) {
            None
        } else {
            Some(stdin_fd(&spec.stdin)?)
        };
        if let Err(e) = self.cgroup.set_limits(&spec.limits) {
            return Ok(Outcome::internal_error(e.to_string()).into());
        }
        self.timeline.mark("limits");
        let base = self.ids.base();
        let (host_uid, host_gid) = (base + spec.uid, base + spec.gid);
        if let Err(e) = files::copy_in(
            self.init_pid,
            &spec.files,
            &self.workdir,
            host_uid,
            host_gid,
        ) {
            return Ok(Outcome::internal_error(format!("copying files in failed: {e}")).into());
        }
        self.timeline.mark("files");
        let captured = |fd: i32| -> std::io::Result<Option<(OwnedFd, OwnedFd)>> {
            if given(fd) {
                Ok(None)
            } else {
                sys::pipe().map(Some)
            }
        };
        let (out, err) = match captured(1).and_then(|out| Ok((out, captured(2)?))) {
            Ok(p) => p,
            Err(e) => return Ok(Outcome::internal_error(format!("pipe: {e}")).into()),
        };
        if io.stop.as_ref().is_some_and(|s| s.requested()) {
            // Stopped before it started: nothing of the program ran.
            return Ok(self.end_unstarted(KillCause::Stop).into());
        }
        let Some(channel) = self.channel.take() else {
            return Ok(Outcome::internal_error("the sandbox was already used".into()).into());
        };
        let fd_for = |target: i32| -> RawFd {
            if let Some((_, fd)) = wiring.fds.iter().find(|(t, _)| *t == target) {
                return fd.as_raw_fd();
            }
            match target {
                0 => stdin.as_ref().map_or(-1, |f| f.as_raw_fd()),
                1 => out.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
                _ => err.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            }
        };
        let mut fds: Vec<RawFd> = targets.iter().map(|t| fd_for(*t)).collect();
        fds.extend(binds.fds.iter().map(|f| f.as_raw_fd()));
        channel.command(Kind::Run, &fds);
        self.timeline.mark("run sent");
        // Only the program holds the write ends now: EOF then means it is done.
        let stream = |pipe: Option<(OwnedFd, OwnedFd)>, sink| match pipe {
            Some((read, _write)) => Stream::new(read, sink),
            None => Stream::none(),
        };
        let (stdout, stderr) = (stream(out, io.stdout_sink), stream(err, io.stderr_sink));
        drop((stdin, binds));
        let mut stops = wiring.stops;
        stops.extend(io.stop.as_ref().map(|s| (s.fd(), KillCause::Stop)));
        drop(wiring.fds);
        for fd in [&stdout.fd, &stderr.fd].into_iter().flatten() {
            if let Err(e) = sys::set_nonblocking(fd) {
                return Ok(Outcome::internal_error(format!("pipe: {e}")).into());
            }
        }
        let supervisor = Supervisor {
            init_pid: self.init_pid,
            pidfd: &self.pidfd,
            channel: Some(channel),
            listener: self.listener.take(),
            stdout,
            stderr,
            stops,
            cgroup: &self.cgroup,
            limits: supervisor::Limits {
                cpu: spec.limits.cpu_time,
                wall: spec.limits.wall_time,
                output: spec.limits.output_bytes,
                cpus: self.cpus,
            },
        };
        let (pid, workdir) = (self.init_pid, self.workdir.clone());
        let (paths, max) = (&spec.collect, spec.collect_max_bytes);
        let (mut watch, out, err) =
            supervisor.watch(&mut || files::collect(pid, &workdir, paths, max));
        self.channel = watch.init_waiting.take();
        self.init_alive = self.channel.is_some();
        if let Some(started) = watch.started_at {
            self.timeline.mark_at("program started", started);
        }
        if let Some((_, ended)) = watch.exited {
            self.timeline.mark_at("program ended", ended);
        }
        self.timeline.mark("the rest gone");
        let setup_ns = watch.started_at.map(|s| s - self.timeline.asked);
        let outcome = verdict(
            Evidence {
                setup_error: watch.setup_error,
                killed: watch.killed,
                started_at: watch.started_at,
                exited: watch.exited,
                now_ns: sys::monotonic_ns(),
                cpu_baseline_ns: watch.cpu_baseline_ns,
                cgroup: self.cgroup.stats(),
                cgroup_version: self.cgroup_version.number(),
                violations: watch.violations,
                violations_capped: watch.denials >= supervisor::MAX_REPORTED_DENIALS,
                stdout: out.captured(),
                stderr: err.captured(),
                files: watch.files,
                setup_ns,
            },
            seccomp::syscall_name,
        );
        self.timeline.mark("verdict");
        let ran = Ran {
            outcome,
            ended_at: watch.exited.map(|(_, at)| at),
        };
        // Nothing of the program is left to wait for: init's end is the reaper's.
        self.reaper.clone().retire(self);
        Ok(ran)
    }

    /// Ends the sandbox before its program started, for `cause`.
    fn end_unstarted(&mut self, cause: KillCause) -> Outcome {
        self.kill_init();
        verdict(
            Evidence {
                setup_error: None,
                killed: Some(cause),
                started_at: None,
                exited: None,
                now_ns: sys::monotonic_ns(),
                cpu_baseline_ns: 0,
                cgroup: Default::default(),
                cgroup_version: self.cgroup_version.number(),
                violations: BTreeMap::new(),
                violations_capped: false,
                stdout: Captured::default(),
                stderr: Captured::default(),
                files: BTreeMap::new(),
                setup_ns: None,
            },
            seccomp::syscall_name,
        )
    }

    fn kill_init(&mut self) {
        if self.init_alive {
            let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
            sys::pidfd_reap(&self.pidfd);
            self.init_alive = false;
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // init first: the cgroup (dropped after this) can only go once it is empty.
        self.kill_init();
        tracing::debug!(
            init = self.init_pid,
            "sandbox timeline: {}",
            self.timeline.describe()
        );
    }
}

/// Checks what can be checked of `spec`'s program before anything is set up for it: paths,
/// limits, argv and environment. (Its environment is checked when it is prepared.)
pub(crate) fn check_program(spec: &Spec) -> Result<(), Error> {
    let workdir = inside_path(&spec.workdir, "work directory")?;
    for f in &spec.files {
        files::destination(f, &workdir)?;
    }
    for c in &spec.collect {
        files::collect_path(c).map_err(Error::InvalidSpec)?;
    }
    rlimits::for_limits(&spec.limits)?;
    crate::plan::check_program(spec)
}

/// A run's outcome, and when (CLOCK_MONOTONIC ns) its program ended, if it did.
pub(crate) struct Ran {
    pub outcome: Outcome,
    pub ended_at: Option<i64>,
}

impl From<Outcome> for Ran {
    fn from(outcome: Outcome) -> Ran {
        Ran {
            outcome,
            ended_at: None,
        }
    }
}

/// What a group gives one of its programs: descriptors at fd numbers (pipe ends), and the
/// eventfds that end it for the group's reasons.
#[derive(Default)]
pub(crate) struct Wiring {
    pub fds: Vec<(i32, OwnedFd)>,
    pub stops: Vec<(RawFd, KillCause)>,
}
