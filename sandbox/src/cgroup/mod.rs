//! One cgroup per run, v1 or v2 (detected at run time with cgroups-rs), created only below the
//! engine's own cgroup or a configured parent, and removed afterwards.
//!
//! cgroups-rs finds the hierarchies and the engine's own place in them. The per-run files are
//! then written and read directly: a run needs a handful of them, and cgroups-rs's controller
//! handles read every statistic of a controller at once, which is too slow for the spawn path.
//!
//! On v2 run cgroups need `memory` and `pids` enabled in their parent's `cgroup.subtree_control`
//! (`cpu.stat`, the CPU time, exists without the cpu controller), and a non-root cgroup with
//! controllers enabled holds no processes. So when the engine runs in a delegated cgroup (a
//! service with `Delegate=yes`, a container's cgroup namespace, a session scope), it does what
//! container entrypoints do: it moves itself into a leaf `sandpit-engine-<pid>` and the other
//! processes there (the script that started it, a login shell) into `sandpit-others`, then
//! enables the controllers. The last engine to stop undoes all of it: controllers disabled,
//! processes moved back, both leaves removed. [`plan_v2`] decides without changing anything,
//! so a refusal (no delegation) leaves the host as it was.

mod placement;

use placement::{
    apply_v2, leave_v2, pid_alive, remove_dead_engine_leaf, BaseLock, ENGINE_LEAF_PREFIX,
};
pub use placement::{own_v2_cgroup, plan_v2};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cgroups_rs::fs::hierarchies::{self, V1};
use cgroups_rs::fs::Controllers;
use serde::{Deserialize, Serialize};

use crate::ahead::Ahead;
use crate::error::Error;
use crate::spec::Limits;

/// Which cgroup interface this host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn number(self) -> u8 {
        match self {
            CgroupVersion::V1 => 1,
            CgroupVersion::V2 => 2,
        }
    }
}

/// Run cgroups are named `sandpit-<engine pid>-<n>`: the pid lets a restarted engine tell its
/// own cgroups from those a crashed engine left behind.
const NAME_PREFIX: &str = "sandpit-";

/// Where run cgroups go.
#[derive(Debug)]
enum Layout {
    /// One directory per controller (memory, pids, cpuacct), and where each hierarchy is.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: PathBuf,
        hierarchies: Arc<[V1Hierarchy; 3]>,
    },
    /// One directory in the unified hierarchy; `placed` when the engine moved itself into
    /// its own leaf below `base` (undone on drop).
    V2 { base: PathBuf, placed: bool },
}

/// Creates and finds run cgroups.
pub struct CgroupManager {
    /// Shared with the thread that makes run cgroups ahead.
    layout: Arc<Layout>,
    /// Run cgroups made ahead by a background thread (none until [`Self::make_ahead`]).
    ahead: Option<Ahead<RunCgroup>>,
    /// The limits the last fresh run asked for: written into the cgroup made ahead, so that
    /// a run that asks the same writes none on its path.
    expected: Arc<Mutex<Option<Limits>>>,
}

/// The number in the next run cgroup's name: one count for the process, so that two engines
/// of one process (each with its thread making cgroups ahead) never pick the same name.
static NEXT_NUMBER: AtomicU64 = AtomicU64::new(0);

/// The numbers a run's cgroup reports at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct CgroupStats {
    pub cpu_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub peak_memory_bytes: u64,
    pub oom_kills: u64,
    pub pids_limit_hit: bool,
}

/// A v1 hierarchy of one of the run controllers: its mount point, and the path in the
/// hierarchy that the mount shows at that point (`/`, or a container's own cgroup).
#[derive(Debug)]
struct V1Hierarchy {
    controller: &'static str,
    mount: PathBuf,
    root: PathBuf,
}

impl V1Hierarchy {
    /// The directory of cgroup `path` (as /proc/*/cgroup names it) of this hierarchy.
    fn dir(&self, path: &Path) -> PathBuf {
        // Inside a container the mount's root is a sub-path of the hierarchy.
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        self.mount.join(rel.strip_prefix("/").unwrap_or(rel))
    }
}

/// The cgroup of one run.
#[derive(Debug)]
pub struct RunCgroup {
    version: CgroupVersion,
    /// Every directory created for this run (v1: one per controller).
    dirs: Vec<PathBuf>,
    /// The hierarchies of `dirs`, in that order (v1).
    hierarchies: Option<Arc<[V1Hierarchy; 3]>>,
    /// Open for the CPU-time polling of the supervisor.
    cpu_usage: File,
    /// The directory, open, for clone3(CLONE_INTO_CGROUP) (v2).
    dir_fd: Option<File>,
    /// The limits written last, if every write of them succeeded.
    applied: Option<CgroupLimits>,
}

/// The part of a run's limits that is the cgroup's: what [`RunCgroup::set_limits`] writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct CgroupLimits {
    memory_bytes: Option<u64>,
    pids: Option<u64>,
}

impl CgroupLimits {
    fn of(limits: &Limits) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: limits.memory_bytes,
            pids: limits.pids,
        }
    }
}

fn cg_err(what: impl std::fmt::Display, path: &Path, e: io::Error) -> Error {
    Error::Cgroup(format!("{what} {}: {e}", path.display()))
}

fn write_file(path: &Path, value: &str) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| cg_err(format!("writing '{value}' to"), path, e))
}

/// The values of `keys` in `key value` lines (memory.events, pids.events, cpu.stat,
/// memory.oom_control), in the order asked.
fn parse_keys<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut values = [None; N];
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|key| *key == k) {
            values[i] = v.trim().parse().ok();
        }
    }
    values
}

/// [`parse_keys`] of the file at `path`, read once.
fn read_keys<const N: usize>(path: &Path, keys: [&str; N]) -> [Option<u64>; N] {
    fs::read_to_string(path).map_or([None; N], |text| parse_keys(&text, keys))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl CgroupManager {
    /// Finds the hierarchy and the parent under which run cgroups go: `parent` (relative to
    /// each hierarchy's root) or, by default, the engine's own cgroup.
    pub fn detect(parent: Option<&Path>) -> Result<Self, Error> {
        let own = cgroups_rs::fs::cgroup::get_cgroups_relative_paths()
            .map_err(|e| Error::Cgroup(format!("reading /proc/self/cgroup: {e}")))?;
        let relative = |controller: &str| -> PathBuf {
            match parent {
                Some(p) => p.to_path_buf(),
                None => PathBuf::from(own.get(controller).map(String::as_str).unwrap_or("/")),
            }
        };
        let layout = if hierarchies::is_cgroup2_unified_mode() {
            let plan = plan_v2(parent)?;
            let placed = plan.move_self;
            apply_v2(&plan)?;
            Layout::V2 {
                base: plan.base,
                placed,
            }
        } else {
            let v1 = V1::new();
            let hierarchy = |c: Controllers, controller: &'static str| {
                let (mount, root) = v1.get_mount_point(c).ok_or_else(|| {
                    Error::Cgroup(format!(
                        "the cgroup v1 '{controller}' controller is not mounted"
                    ))
                })?;
                Ok::<_, Error>(V1Hierarchy {
                    controller,
                    mount,
                    root,
                })
            };
            let hierarchies = Arc::new([
                hierarchy(Controllers::Mem, "memory")?,
                hierarchy(Controllers::Pids, "pids")?,
                hierarchy(Controllers::CpuAcct, "cpuacct")?,
            ]);
            let dir = |h: &V1Hierarchy| -> Result<PathBuf, Error> {
                let path = h.dir(&relative(h.controller));
                if !path.is_dir() {
                    return Err(Error::Cgroup(format!(
                        "parent cgroup {} does not exist",
                        path.display()
                    )));
                }
                Ok(path)
            };
            Layout::V1 {
                memory: dir(&hierarchies[0])?,
                pids: dir(&hierarchies[1])?,
                cpuacct: dir(&hierarchies[2])?,
                hierarchies,
            }
        };
        Ok(CgroupManager {
            layout: Arc::new(layout),
            ahead: None,
            expected: Arc::default(),
        })
    }

    /// From now on a background thread makes run cgroups ahead and keeps one ready. Making
    /// one is about 0.1 ms (three directories on v1), and nothing in it depends on the run.
    pub(crate) fn make_ahead(&mut self) -> Result<(), Error> {
        let (layout, expected) = (self.layout.clone(), self.expected.clone());
        self.ahead = Some(Ahead::start(
            "sandpit-cgroups",
            "run cgroup",
            true,
            move || {
                let mut cg = layout.make_run_cgroup()?;
                let limits = expected.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(limits) = limits {
                    // Not fatal: the run writes them itself then.
                    if let Err(e) = cg.set_limits(&limits) {
                        tracing::debug!("writing a run cgroup's limits ahead: {e}");
                    }
                }
                Ok(cg)
            },
        )?);
        Ok(())
    }

    /// The name of the run cgroup made ahead and not yet taken, once the thread is not
    /// making one.
    pub(crate) fn made_ahead(&self) -> Option<String> {
        let ahead = self.ahead.as_ref()?;
        ahead.look_ready(|ready| {
            ready
                .and_then(|cg| cg.dirs.first())
                .and_then(|dir| dir.file_name())
                .map(|name| name.to_string_lossy().into_owned())
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.layout.version()
    }

    /// The calling thread's own cgroups, one per v1 controller of run cgroups (empty on v2):
    /// where a thread that cloned from inside a run's cgroups goes back to.
    pub(crate) fn v1_home_of_this_thread(&self) -> Result<Vec<PathBuf>, Error> {
        match self.layout.as_ref() {
            Layout::V1 { hierarchies, .. } => thread_cgroups(hierarchies.as_ref()),
            Layout::V2 { .. } => Ok(Vec::new()),
        }
    }

    /// A fresh cgroup for one run, without limits (see [`RunCgroup::set_limits`]): the one
    /// made ahead, or one made now. A fresh cgroup per run is what keeps one run's counters
    /// (OOM kills, peak, pids events) out of the next run's verdict.
    pub fn create(&self) -> Result<RunCgroup, Error> {
        match self.ahead.as_ref().and_then(Ahead::take) {
            Some(cg) => Ok(cg),
            None => self.layout.make_run_cgroup(),
        }
    }

    /// The limits the next fresh run is expected to ask for (the last one's): the cgroups made
    /// ahead from now on have them written.
    pub(crate) fn expect_limits(&self, limits: &Limits) {
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = Some(limits.clone());
    }

    /// Lets the background thread make the next run cgroup ahead (see [`Ahead::make_next`]).
    pub(crate) fn make_next(&self) {
        if let Some(ahead) = &self.ahead {
            ahead.make_next();
        }
    }

    /// Removes run cgroups left by engines that no longer run (a crash, a kill -9): their
    /// processes are killed first. Returns how many cgroups were removed.
    pub fn cleanup_stale(&self) -> usize {
        let mut removed = 0;
        for parent in self.layout.parents() {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(ENGINE_LEAF_PREFIX) {
                    if pid.parse::<i32>().is_ok_and(|p| !pid_alive(p)) {
                        let _guard = BaseLock::take(parent);
                        if remove_dead_engine_leaf(parent, &entry.path()) {
                            removed += 1;
                        }
                    }
                    continue;
                }
                let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
                    continue;
                };
                let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                    continue;
                };
                if pid == std::process::id() as i32 || pid_alive(pid) {
                    continue;
                }
                let dir = entry.path();
                kill_procs(&dir, None);
                if remove_dir_retrying(&dir).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

impl Layout {
    fn version(&self) -> CgroupVersion {
        match self {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The directories under which run cgroups are created.
    fn parents(&self) -> Vec<&Path> {
        match self {
            Layout::V1 {
                memory,
                pids,
                cpuacct,
                ..
            } => vec![memory, pids, cpuacct],
            Layout::V2 { base, .. } => vec![base],
        }
    }

    /// Creates a fresh cgroup for one run, without limits.
    fn make_run_cgroup(&self) -> Result<RunCgroup, Error> {
        let name = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NEXT_NUMBER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = RunCgroup {
            version: self.version(),
            dirs: Vec::new(),
            hierarchies: None,
            cpu_usage: File::open("/dev/null").map_err(|e| Error::Cgroup(e.to_string()))?,
            dir_fd: None,
            applied: None,
        };
        // On error `cg` is dropped, which removes what was already created.
        for parent in self.parents() {
            let dir = parent.join(&name);
            fs::create_dir(&dir).map_err(|e| cg_err("creating", &dir, e))?;
            cg.dirs.push(dir);
        }
        match self {
            Layout::V1 { hierarchies, .. } => {
                cg.cpu_usage = open_read(&cg.dirs[2].join("cpuacct.usage"))?;
                cg.hierarchies = Some(hierarchies.clone());
            }
            Layout::V2 { .. } => {
                let dir = &cg.dirs[0];
                cg.cpu_usage = open_read(&dir.join("cpu.stat"))?;
                cg.dir_fd = Some(File::open(dir).map_err(|e| cg_err("opening", dir, e))?);
            }
        }
        Ok(cg)
    }
}

/// The calling thread's cgroup directory in each of `hierarchies`.
fn thread_cgroups(hierarchies: &[V1Hierarchy]) -> Result<Vec<PathBuf>, Error> {
    let text = fs::read_to_string("/proc/thread-self/cgroup")
        .map_err(|e| Error::Cgroup(format!("reading /proc/thread-self/cgroup: {e}")))?;
    hierarchies
        .iter()
        .map(|h| {
            text.lines()
                .find_map(|line| {
                    let mut parts = line.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == h.controller)
                        .then(|| h.dir(Path::new(path)))
                })
                .ok_or_else(|| {
                    Error::Cgroup(format!(
                        "/proc/thread-self/cgroup names no '{}' cgroup",
                        h.controller
                    ))
                })
        })
        .collect()
}

/// Where a clone puts its child in a run's cgroup, in the terms of the thread that clones.
///
/// Why not move the new process in afterwards: moving another process takes the kernel's
/// global threadgroup lock for writing, which first waits for an RCU grace period (0 to 20 ms
/// here, in half of the `sandpit run`s) while every fork and exit on the machine waits for the
/// lock. A thread that moves itself (`0` into `tasks`) takes no such lock.
pub(crate) enum CloneInto {
    /// v2: clone3(CLONE_INTO_CGROUP) with this directory.
    Dir(RawFd),
    /// v1: the cloning thread moves itself into `dirs`, clones, and goes back to `home`.
    Move {
        dirs: Vec<PathBuf>,
        home: Vec<PathBuf>,
    },
}

impl CloneInto {
    /// Runs `clone` with the calling thread where its child must start (v1), then puts the
    /// thread back; on v2 clone3 puts the child there and this only runs `clone`. (The child
    /// of a clone made in `clone` must never return from it.)
    pub fn around<T>(&self, clone: impl FnOnce() -> T) -> Result<T, Error> {
        let CloneInto::Move { dirs, home } = self else {
            return Ok(clone());
        };
        for (i, dir) in dirs.iter().enumerate() {
            if let Err(e) = write_file(&dir.join("tasks"), "0") {
                go_back(&home[..i.min(home.len())]);
                return Err(e);
            }
        }
        let result = clone();
        go_back(home);
        Ok(result)
    }
}

/// Moves the calling thread back into `dirs`, the cgroups it came from.
fn go_back(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(e) = write_file(&dir.join("tasks"), "0") {
            // This thread must never go on in a run's cgroup: the run's end would find the
            // engine in it.
            panic!("returning to the engine's cgroup failed: {e}");
        }
    }
}

fn open_read(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| cg_err("opening", path, e))
}

impl Drop for CgroupManager {
    fn drop(&mut self) {
        // The one made ahead goes first: the engine's leaf is left only when no run cgroup
        // of this engine is.
        drop(self.ahead.take());
        if let Layout::V2 { base, placed: true } = self.layout.as_ref() {
            leave_v2(base, false);
        }
    }
}

/// Kills every process in the cgroup `dir` but `keep`. True once none is left; false if
/// processes were still there after many rounds (a fork race).
fn kill_procs(dir: &Path, keep: Option<i32>) -> bool {
    let kill_file = dir.join("cgroup.kill");
    if keep.is_none() && kill_file.exists() {
        return write_file(&kill_file, "1").is_ok();
    }
    let procs = dir.join("cgroup.procs");
    // Never the engine itself (a thread of it sits in a run's cgroup during a clone, v1).
    let own = std::process::id() as i32;
    for _ in 0..200 {
        let text = fs::read_to_string(&procs).unwrap_or_default();
        let mut others = 0;
        for pid in text.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            if Some(pid) != keep && pid != own {
                others += 1;
                // SAFETY: kill(2) on a pid read from this engine's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if others == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// rmdir, retried briefly: a cgroup stays busy for a moment after its last process is reaped.
fn remove_dir_retrying(dir: &Path) -> io::Result<()> {
    let mut last = Ok(());
    for attempt in 0..200 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Err(e),
        }
        std::thread::sleep(Duration::from_micros(200 * (attempt + 1).min(25)));
    }
    last
}

impl RunCgroup {
    /// Sets the memory and process limits (none: unlimited). Swap cannot be used to escape
    /// the memory limit: memory + swap = the limit (v1), no swap (v2). Limits already in
    /// place are not written again: a sandbox prepared ahead has its shelf's usual limits
    /// written before its run is asked for (3–4 writes, about 0.1 ms on v1).
    pub fn set_limits(&mut self, limits: &Limits) -> Result<(), Error> {
        let wanted = CgroupLimits::of(limits);
        if self.applied == Some(wanted) {
            return Ok(());
        }
        self.applied = None;
        self.write_limits(limits)?;
        self.applied = Some(wanted);
        Ok(())
    }

    fn write_limits(&self, limits: &Limits) -> Result<(), Error> {
        let memory = limits
            .memory_bytes
            .map_or_else(|| "max".to_string(), |b| b.to_string());
        // +1: the sandbox's own init process counts too.
        let pids = limits
            .pids
            .map_or_else(|| "max".to_string(), |n| n.saturating_add(1).to_string());
        match self.version {
            CgroupVersion::V1 => {
                let (mem, pid_dir) = (&self.dirs[0], &self.dirs[1]);
                let v1_memory = if limits.memory_bytes.is_some() {
                    memory
                } else {
                    "-1".into()
                };
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                // memsw may never be below the memory limit: order the writes accordingly.
                let limit = mem.join("memory.limit_in_bytes");
                if memsw.exists() {
                    if limits.memory_bytes.is_some() {
                        if let Err(first) = write_file(&limit, &v1_memory) {
                            // Raising a limit written before (a sandbox prepared ahead with a
                            // lower one): memsw goes up first.
                            write_file(&memsw, &v1_memory).map_err(|_| first)?;
                            write_file(&limit, &v1_memory)?;
                        } else {
                            write_file(&memsw, &v1_memory)?;
                        }
                    } else {
                        write_file(&memsw, &v1_memory)?;
                        write_file(&limit, &v1_memory)?;
                    }
                } else {
                    write_file(&limit, &v1_memory)?;
                }
                write_file(&pid_dir.join("pids.max"), &pids)?;
            }
            CgroupVersion::V2 => {
                let dir = &self.dirs[0];
                write_file(&dir.join("memory.max"), &memory)?;
                // An OOM kill ends every process of the run at once (init is exempt), not a
                // lone victim that leaves the rest running on what is left.
                let group = dir.join("memory.oom.group");
                if group.exists() {
                    write_file(&group, "1")?;
                }
                let swap = dir.join("memory.swap.max");
                if limits.memory_bytes.is_some() && swap.exists() {
                    write_file(&swap, "0")?;
                }
                write_file(&dir.join("pids.max"), &pids)?;
            }
        }
        Ok(())
    }

    /// Where a clone from the calling thread puts its child: this cgroup.
    pub(crate) fn clone_into(&self) -> Result<CloneInto, Error> {
        match (&self.dir_fd, &self.hierarchies) {
            (Some(dir), _) => Ok(CloneInto::Dir(dir.as_raw_fd())),
            (None, Some(hierarchies)) => Ok(CloneInto::Move {
                dirs: self.dirs.clone(),
                home: thread_cgroups(hierarchies.as_ref())?,
            }),
            (None, None) => Err(Error::Cgroup("a run cgroup with no directory".into())),
        }
    }

    /// The directory, open, for clone3(CLONE_INTO_CGROUP): v2 only.
    pub(crate) fn dir_fd(&self) -> Option<RawFd> {
        self.dir_fd.as_ref().map(|d| d.as_raw_fd())
    }

    /// The run's directories, one per controller: v1 only (empty on v2).
    pub(crate) fn v1_dirs(&self) -> &[PathBuf] {
        if self.hierarchies.is_some() {
            &self.dirs
        } else {
            &[]
        }
    }

    /// The CPU counter's file (v1 `cpuacct.usage`, v2 `cpu.stat`), read from its start.
    fn read_cpu_usage<'b>(&self, buf: &'b mut [u8; 512]) -> &'b str {
        let n = self.cpu_usage.read_at(buf, 0).unwrap_or(0);
        std::str::from_utf8(&buf[..n]).unwrap_or("")
    }

    /// CPU time used so far by every process in the cgroup, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> u64 {
        let mut buf = [0u8; 512];
        let text = self.read_cpu_usage(&mut buf);
        match self.version {
            CgroupVersion::V1 => text.trim().parse().unwrap_or(0),
            CgroupVersion::V2 => parse_keys(text, ["usage_usec"])[0].map_or(0, |us| us * 1000),
        }
    }

    /// The run's final numbers, read after its last process ended: each file once.
    pub fn stats(&self) -> CgroupStats {
        let mut s = CgroupStats::default();
        match self.version {
            CgroupVersion::V1 => {
                let (mem, pids, cpu) = (&self.dirs[0], &self.dirs[1], &self.dirs[2]);
                s.cpu_ns = self.cpu_usage_ns();
                s.peak_memory_bytes = read_u64(&mem.join("memory.max_usage_in_bytes")).unwrap_or(0);
                let [oom_kills] = read_keys(&mem.join("memory.oom_control"), ["oom_kill"]);
                s.oom_kills = oom_kills.unwrap_or(0);
                let [max] = read_keys(&pids.join("pids.events"), ["max"]);
                s.pids_limit_hit = max.unwrap_or(0) > 0;
                // cpuacct.stat is in clock ticks: use it only to split the exact total.
                let [user, system] = read_keys(&cpu.join("cpuacct.stat"), ["user", "system"]);
                let (user, system) = (user.unwrap_or(0), system.unwrap_or(0));
                if user + system > 0 {
                    s.user_ns = (s.cpu_ns as u128 * user as u128 / (user + system) as u128) as u64;
                    s.system_ns = s.cpu_ns - s.user_ns;
                } else {
                    s.user_ns = s.cpu_ns;
                }
            }
            CgroupVersion::V2 => {
                let dir = &self.dirs[0];
                let mut buf = [0u8; 512];
                let [usage, user, system] = parse_keys(
                    self.read_cpu_usage(&mut buf),
                    ["usage_usec", "user_usec", "system_usec"],
                );
                s.cpu_ns = usage.unwrap_or(0) * 1000;
                s.user_ns = user.unwrap_or(0) * 1000;
                s.system_ns = system.unwrap_or(0) * 1000;
                s.peak_memory_bytes = read_u64(&dir.join("memory.peak")).unwrap_or(0);
                let [oom_kills] = read_keys(&dir.join("memory.events"), ["oom_kill"]);
                s.oom_kills = oom_kills.unwrap_or(0);
                let [max] = read_keys(&dir.join("pids.events"), ["max"]);
                s.pids_limit_hit = max.unwrap_or(0) > 0;
            }
        }
        s
    }

    /// Kills every process of the run but `keep` (the sandbox's init). False if processes
    /// were still there after many rounds (a fork race); the caller then kills `keep` too.
    pub fn kill_all_except(&self, keep: i32) -> bool {
        kill_procs(&self.dirs[0], Some(keep))
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            if let Err(e) = remove_dir_retrying(dir) {
                kill_procs(dir, None);
                if remove_dir_retrying(dir).is_err() {
                    tracing::warn!("could not remove cgroup {}: {e}", dir.display());
                }
            }
        }
    }
}
