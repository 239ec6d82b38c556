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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use cgroups_rs::fs::hierarchies::{self, V1};
use cgroups_rs::fs::Controllers;
use serde::{Deserialize, Serialize};

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
    /// One directory per controller (memory, pids, cpuacct).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: PathBuf,
    },
    /// One directory in the unified hierarchy; `placed` when the engine moved itself into
    /// its own leaf below `base` (undone on drop).
    V2 { base: PathBuf, placed: bool },
}

/// Creates and finds run cgroups.
#[derive(Debug)]
pub struct CgroupManager {
    layout: Layout,
    counter: AtomicU64,
}

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

/// The cgroup of one run.
#[derive(Debug)]
pub struct RunCgroup {
    version: CgroupVersion,
    /// Every directory created for this run (v1: one per controller).
    dirs: Vec<PathBuf>,
    /// Files whose writing moves a process in (v1).
    procs: Vec<PathBuf>,
    /// Open for the CPU-time polling of the supervisor.
    cpu_usage: File,
    /// The directory, open, for clone3(CLONE_INTO_CGROUP) (v2).
    dir_fd: Option<File>,
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

/// Reads `key value` lines (memory.events, pids.events, cpu.stat, memory.oom_control).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
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
            let dir = |c: Controllers, name: &str| -> Result<PathBuf, Error> {
                let (mount, root) = v1.get_mount_point(c).ok_or_else(|| {
                    Error::Cgroup(format!("the cgroup v1 '{name}' controller is not mounted"))
                })?;
                let rel = relative(name);
                // Inside a container the mount's root is a sub-path of the hierarchy.
                let rel = rel.strip_prefix(&root).unwrap_or(&rel).to_path_buf();
                let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
                let path = mount.join(rel);
                if !path.is_dir() {
                    return Err(Error::Cgroup(format!(
                        "parent cgroup {} does not exist",
                        path.display()
                    )));
                }
                Ok(path)
            };
            Layout::V1 {
                memory: dir(Controllers::Mem, "memory")?,
                pids: dir(Controllers::Pids, "pids")?,
                cpuacct: dir(Controllers::CpuAcct, "cpuacct")?,
            }
        };
        Ok(CgroupManager {
            layout,
            counter: AtomicU64::new(0),
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The directories under which run cgroups are created.
    fn parents(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V1 {
                memory,
                pids,
                cpuacct,
            } => vec![memory, pids, cpuacct],
            Layout::V2 { base, .. } => vec![base],
        }
    }

    /// Creates a fresh cgroup for one run, without limits (see [`RunCgroup::set_limits`]). A
    /// fresh cgroup per run is what keeps one run's counters (OOM kills, peak, pids events) out
    /// of the next run's verdict.
    pub fn create(&self) -> Result<RunCgroup, Error> {
        let name = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = RunCgroup {
            version: self.version(),
            dirs: Vec::new(),
            procs: Vec::new(),
            cpu_usage: File::open("/dev/null").map_err(|e| Error::Cgroup(e.to_string()))?,
            dir_fd: None,
        };
        // On error `cg` is dropped, which removes what was already created.
        for parent in self.parents() {
            let dir = parent.join(&name);
            fs::create_dir(&dir).map_err(|e| cg_err("creating", &dir, e))?;
            cg.dirs.push(dir);
        }
        match &self.layout {
            Layout::V1 { .. } => {
                cg.cpu_usage = open_read(&cg.dirs[2].join("cpuacct.usage"))?;
                cg.procs = cg.dirs.iter().map(|d| d.join("cgroup.procs")).collect();
            }
            Layout::V2 { .. } => {
                let dir = &cg.dirs[0];
                cg.cpu_usage = open_read(&dir.join("cpu.stat"))?;
                cg.dir_fd = Some(File::open(dir).map_err(|e| cg_err("opening", dir, e))?);
            }
        }
        Ok(cg)
    }

    /// Removes run cgroups left by engines that no longer run (a crash, a kill -9): their
    /// processes are killed first. Returns how many cgroups were removed.
    pub fn cleanup_stale(&self) -> usize {
        let mut removed = 0;
        for parent in self.parents() {
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

fn open_read(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| cg_err("opening", path, e))
}

/// The controllers run cgroups need on v2.
const V2_CONTROLLERS: [&str; 2] = ["memory", "pids"];
/// The engine's own leaf: `sandpit-engine-<pid>`.
const ENGINE_LEAF_PREFIX: &str = "sandpit-engine-";
/// Where the other processes of the engine's cgroup go. It exists exactly while sandpit has the
/// controllers enabled in the cgroup above it: the last engine out restores that cgroup.
const OTHERS_LEAF: &str = "sandpit-others";

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn is_engine_leaf(name: &str) -> bool {
    name == OTHERS_LEAF
        || name
            .strip_prefix(ENGINE_LEAF_PREFIX)
            .is_some_and(|p| p.parse::<u32>().is_ok())
}

fn words(path: &Path) -> Result<Vec<String>, Error> {
    let text = fs::read_to_string(path).map_err(|e| cg_err("reading", path, e))?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

/// The engine's own cgroup on v2, relative to the unified root (`/` in the root cgroup or at
/// the root of a cgroup namespace).
pub fn own_v2_cgroup() -> Result<PathBuf, Error> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::Cgroup(format!("reading /proc/self/cgroup: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(PathBuf::from)
        .ok_or_else(|| Error::Cgroup("/proc/self/cgroup has no cgroup v2 entry".into()))
}

/// How the engine will use the unified hierarchy, decided before anything changes.
#[derive(Debug, Clone)]
pub struct V2Plan {
    /// Where run cgroups go (absolute, below /sys/fs/cgroup).
    pub base: PathBuf,
    /// The hierarchy's real root (no "no internal processes" rule there).
    pub is_root: bool,
    /// The engine is in `base` (or in a sandpit leaf below it) and moves into its own leaf.
    pub move_self: bool,
    /// Controllers to enable in `base`'s cgroup.subtree_control.
    pub enable: Vec<&'static str>,
}

/// Decides where run cgroups go on v2 and whether that can work, without changing anything:
/// `parent` (relative to the unified root) or the engine's own cgroup. Refuses, in one line
/// that says what to enable, a cgroup to which memory and pids are not delegated.
pub fn plan_v2(parent: Option<&Path>) -> Result<V2Plan, Error> {
    let root = Path::new(hierarchies::UNIFIED_MOUNTPOINT);
    let abs = |rel: &Path| root.join(rel.strip_prefix("/").unwrap_or(rel));
    let own_rel = own_v2_cgroup()?;
    let own = abs(&own_rel);
    // An engine started inside a sandpit leaf (by a program that embeds the engine, or after
    // an earlier engine of this process) works one level up: nothing nests deeper per start.
    let own_is_leaf = own
        .file_name()
        .is_some_and(|n| is_engine_leaf(&n.to_string_lossy()));
    let base = match parent {
        Some(p) => {
            let base = abs(p);
            if !base.join("cgroup.procs").exists() {
                return Err(Error::Cgroup(format!(
                    "the cgroup parent {} does not exist (create it, with memory and pids \
                     enabled for it, first)",
                    base.display()
                )));
            }
            base
        }
        None if own_is_leaf => own.parent().unwrap_or(root).to_path_buf(),
        None => own.clone(),
    };
    let in_base = own == base || (own_is_leaf && own.parent() == Some(base.as_path()));
    // cgroup.type exists everywhere but on the real root (also at a cgroup namespace's root).
    let is_root = !base.join("cgroup.type").exists();
    let available = words(&base.join("cgroup.controllers"))?;
    let missing: Vec<&str> = V2_CONTROLLERS
        .into_iter()
        .filter(|c| !available.iter().any(|a| a == c))
        .collect();
    if !missing.is_empty() {
        let whose = match parent {
            Some(_) => format!("the cgroup parent {}", base.display()),
            None => format!("{} (the cgroup sandpit runs in)", base.display()),
        };
        return Err(Error::NotDelegated(format!(
            "cgroup v2: the {} controller{} {} not delegated to {whose}: run sandpit as a \
             systemd service with Delegate=yes, or give --cgroup-parent a cgroup that has \
             memory and pids (see `sandpit doctor`)",
            missing.join(" and "),
            if missing.len() > 1 { "s" } else { "" },
            if missing.len() > 1 { "are" } else { "is" },
        )));
    }
    let enabled = words(&base.join("cgroup.subtree_control"))?;
    let enable: Vec<&'static str> = V2_CONTROLLERS
        .into_iter()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect();
    if !is_root && !in_base && !enable.is_empty() {
        let procs = fs::read_to_string(base.join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() {
            return Err(Error::NotDelegated(format!(
                "cgroup v2: the cgroup parent {} holds processes, so memory and pids cannot be \
                 enabled below it: give --cgroup-parent an empty cgroup",
                base.display()
            )));
        }
    }
    Ok(V2Plan {
        base,
        is_root,
        move_self: in_base && !is_root,
        enable,
    })
}

/// An exclusive flock on a cgroup directory: engines sharing a base take turns at placing
/// themselves and at restoring it.
struct BaseLock {
    _dir: Option<File>,
}

impl BaseLock {
    fn take(dir: &Path) -> BaseLock {
        let file = File::open(dir).ok();
        if let Some(f) = &file {
            // SAFETY: flock on an fd we own; blocks until the other holder is done.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        }
        BaseLock { _dir: file }
    }
}

/// Bases in which this process has its engine leaf, with how many live managers use each.
static PLACED: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

fn engine_leaf(base: &Path) -> PathBuf {
    base.join(format!("{ENGINE_LEAF_PREFIX}{}", std::process::id()))
}

/// Moves every process of `from` into `to`; true once `from` is empty (processes forking
/// meanwhile are caught by the next round).
fn move_all(from: &Path, to: &Path) -> bool {
    for _ in 0..100 {
        let procs = fs::read_to_string(from.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return true;
        }
        for pid in procs.lines() {
            // A process that ended meanwhile cannot be moved (ESRCH): fine.
            let _ = write_file(&to.join("cgroup.procs"), pid.trim());
        }
    }
    false
}

/// Carries out a [`V2Plan`]: the engine's leaf, the others' leaf, the controllers.
fn apply_v2(plan: &V2Plan) -> Result<(), Error> {
    let base = &plan.base;
    let _lock = BaseLock::take(base);
    // What engines killed outright (kill -9) left behind goes first.
    sweep_dead(base, &engine_leaf(base));
    if plan.move_self {
        let mut placed = PLACED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = placed.iter_mut().find(|(b, _)| b == base) {
            // Another engine of this process already placed it.
            entry.1 += 1;
            return Ok(());
        }
        let leaf = engine_leaf(base);
        let result = (|| {
            if !leaf.is_dir() {
                fs::create_dir(&leaf).map_err(|e| cg_err("creating", &leaf, e))?;
            }
            let me = std::process::id().to_string();
            write_file(&leaf.join("cgroup.procs"), &me)?;
            if plan.enable.is_empty() {
                return Ok(());
            }
            let others = base.join(OTHERS_LEAF);
            if !others.is_dir() {
                fs::create_dir(&others).map_err(|e| cg_err("creating", &others, e))?;
            }
            let mut last = Ok(());
            for _ in 0..50 {
                move_all(base, &others);
                last = write_file(
                    &base.join("cgroup.subtree_control"),
                    &enable_line(&plan.enable, '+'),
                );
                if last.is_ok() {
                    break;
                }
            }
            last
        })();
        if let Err(e) = result {
            drop(placed);
            restore_v2(base, true);
            return Err(e);
        }
        placed.push((base.clone(), 1));
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain extern "C" function; it runs at exit(3).
            unsafe { libc::atexit(leave_all_at_exit) };
        });
        Ok(())
    } else if !plan.enable.is_empty() {
        // The root cgroup, or an empty configured parent: enabled for good (never restored:
        // other users of that cgroup may rely on it).
        write_file(
            &base.join("cgroup.subtree_control"),
            &enable_line(&plan.enable, '+'),
        )
    } else {
        Ok(())
    }
}

fn enable_line(controllers: &[&str], sign: char) -> String {
    controllers
        .iter()
        .map(|c| format!("{sign}{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A dead engine's leaf: whatever still runs in it (programs that engine started outside
/// any sandbox) goes to the others' leaf, then the leaf goes. True when it was removed.
fn remove_dead_engine_leaf(base: &Path, leaf: &Path) -> bool {
    let procs = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        let others = base.join(OTHERS_LEAF);
        if fs::create_dir(&others).is_err() && !others.is_dir() {
            return false;
        }
        move_all(leaf, &others);
    }
    remove_dir_retrying(leaf).is_ok()
}

/// The engine of this process stops using `base` (`force`: the process is ending, whatever
/// the count says). The last engine of every process out restores `base` as it was found.
fn leave_v2(base: &Path, force: bool) {
    {
        let mut placed = PLACED.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = placed.iter().position(|(b, _)| b == base) else {
            return;
        };
        placed[i].1 -= 1;
        if placed[i].1 > 0 && !force {
            return;
        }
        placed.remove(i);
    }
    let _lock = BaseLock::take(base);
    restore_v2(base, false);
}

/// Under the base's lock: removes what dead engines left in `base` (their leaves, their runs'
/// cgroups, killing what still runs there). True when something else remains besides `keep`
/// and the others' leaf: a live engine, a run, a cgroup someone else made.
fn sweep_dead(base: &Path, keep: &Path) -> bool {
    let me = std::process::id() as i32;
    let mut busy = false;
    let Ok(entries) = fs::read_dir(base) else {
        return false;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path == keep || name == OTHERS_LEAF {
            continue;
        }
        let dead_pid = name
            .strip_prefix(ENGINE_LEAF_PREFIX)
            .or_else(|| name.strip_prefix(NAME_PREFIX))
            .and_then(|rest| rest.split('-').next()?.parse::<i32>().ok())
            .filter(|&pid| pid != me && !pid_alive(pid));
        let removed = match dead_pid {
            Some(_) if name.starts_with(ENGINE_LEAF_PREFIX) => remove_dead_engine_leaf(base, &path),
            Some(_) => {
                kill_procs(&path, None);
                remove_dir_retrying(&path).is_ok()
            }
            None => false,
        };
        busy |= !removed;
    }
    busy
}

/// Under the base's lock: removes this process's leaf, and when no other engine uses `base`
/// and sandpit enabled its controllers, disables them and moves the others back.
/// `failed_start`: restoring after a start that failed halfway.
fn restore_v2(base: &Path, failed_start: bool) {
    let leaf = engine_leaf(base);
    let others = base.join(OTHERS_LEAF);
    // Dead engines' leaves and runs first: they must not keep the base busy.
    let busy = sweep_dead(base, &leaf);
    let restored = !busy
        && others.is_dir()
        && write_file(
            &base.join("cgroup.subtree_control"),
            &enable_line(&V2_CONTROLLERS, '-'),
        )
        .is_ok();
    if restored {
        move_all(&others, base);
        move_all(&leaf, base);
        let _ = remove_dir_retrying(&others);
        let _ = remove_dir_retrying(&leaf);
        return;
    }
    // Others still use the base: this process waits out its end among the others.
    if leaf.is_dir() {
        let to = if others.is_dir() || fs::create_dir(&others).is_ok() {
            others
        } else if failed_start {
            base.to_path_buf()
        } else {
            return;
        };
        move_all(&leaf, &to);
        let _ = remove_dir_retrying(&leaf);
    }
}

extern "C" fn leave_all_at_exit() {
    // An engine kept in a static (never dropped) still leaves its leaf when the process
    // exits. try_lock: a thread may hold the lock while exit runs; then leave it be.
    let bases: Vec<PathBuf> = match PLACED.try_lock() {
        Ok(placed) => placed.iter().map(|(b, _)| b.clone()).collect(),
        Err(_) => return,
    };
    for base in bases {
        leave_v2(&base, true);
    }
}

impl Drop for CgroupManager {
    fn drop(&mut self) {
        if let Layout::V2 { base, placed: true } = &self.layout {
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
    for _ in 0..200 {
        let text = fs::read_to_string(&procs).unwrap_or_default();
        let mut others = 0;
        for pid in text.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            if Some(pid) != keep {
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
    /// the memory limit: memory + swap = the limit (v1), no swap (v2).
    pub fn set_limits(&self, limits: &Limits) -> Result<(), Error> {
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
                        write_file(&limit, &v1_memory)?;
                        write_file(&memsw, &v1_memory)?;
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

    /// The directory fd for clone3(CLONE_INTO_CGROUP), on v2.
    pub fn dir_fd(&self) -> Option<&File> {
        self.dir_fd.as_ref()
    }

    /// Moves a process into the cgroup (v1; on v2 clone3 puts it there).
    pub fn add_process(&self, pid: i32) -> Result<(), Error> {
        let pid = pid.to_string();
        for procs in &self.procs {
            write_file(procs, &pid)?;
        }
        Ok(())
    }

    /// CPU time used so far by every process in the cgroup, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> u64 {
        let mut buf = [0u8; 512];
        let Ok(n) = self.cpu_usage.read_at(&mut buf, 0) else {
            return 0;
        };
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        match self.version {
            CgroupVersion::V1 => text.trim().parse().unwrap_or(0),
            CgroupVersion::V2 => text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(0, |us| us * 1000),
        }
    }

    /// The run's final numbers, read after its last process ended.
    pub fn stats(&self) -> CgroupStats {
        let mut s = CgroupStats {
            cpu_ns: self.cpu_usage_ns(),
            ..Default::default()
        };
        match self.version {
            CgroupVersion::V1 => {
                let (mem, pids, cpu) = (&self.dirs[0], &self.dirs[1], &self.dirs[2]);
                s.peak_memory_bytes = read_u64(&mem.join("memory.max_usage_in_bytes")).unwrap_or(0);
                s.oom_kills = read_key(&mem.join("memory.oom_control"), "oom_kill").unwrap_or(0);
                s.pids_limit_hit = read_key(&pids.join("pids.events"), "max").unwrap_or(0) > 0;
                // cpuacct.stat is in clock ticks: use it only to split the exact total.
                let stat = cpu.join("cpuacct.stat");
                let user = read_key(&stat, "user").unwrap_or(0);
                let system = read_key(&stat, "system").unwrap_or(0);
                if user + system > 0 {
                    s.user_ns = (s.cpu_ns as u128 * user as u128 / (user + system) as u128) as u64;
                    s.system_ns = s.cpu_ns - s.user_ns;
                } else {
                    s.user_ns = s.cpu_ns;
                }
            }
            CgroupVersion::V2 => {
                let dir = &self.dirs[0];
                s.peak_memory_bytes = read_u64(&dir.join("memory.peak")).unwrap_or(0);
                s.oom_kills = read_key(&dir.join("memory.events"), "oom_kill").unwrap_or(0);
                s.pids_limit_hit = read_key(&dir.join("pids.events"), "max").unwrap_or(0) > 0;
                let stat = dir.join("cpu.stat");
                s.user_ns = read_key(&stat, "user_usec").unwrap_or(0) * 1000;
                s.system_ns = read_key(&stat, "system_usec").unwrap_or(0) * 1000;
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
