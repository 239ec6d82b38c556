//! The engine's place in a v2 hierarchy: in a delegated cgroup it does what container
//! entrypoints do (its own leaf, the other processes moved to `sandpit-others`, the
//! controllers enabled), and the last engine to stop undoes it. [`plan_v2`] decides without
//! changing anything, so a refusal leaves the host as it was.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use cgroups_rs::fs::hierarchies;

use super::{cg_err, kill_procs, remove_dir_retrying, write_file, NAME_PREFIX};
use crate::error::Error;

/// The controllers run cgroups need on v2.
const V2_CONTROLLERS: [&str; 2] = ["memory", "pids"];
/// The engine's own leaf: `sandpit-engine-<pid>`.
pub(super) const ENGINE_LEAF_PREFIX: &str = "sandpit-engine-";
/// Where the other processes of the engine's cgroup go. It exists exactly while sandpit has the
/// controllers enabled in the cgroup above it: the last engine out restores that cgroup.
const OTHERS_LEAF: &str = "sandpit-others";

pub(super) fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub(super) fn is_engine_leaf(name: &str) -> bool {
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
    let enable = not_enabled(&base)?;
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
    })
}

/// The controllers run cgroups need that `base` does not enable for its children now.
fn not_enabled(base: &Path) -> Result<Vec<&'static str>, Error> {
    let enabled = words(&base.join("cgroup.subtree_control"))?;
    Ok(V2_CONTROLLERS
        .into_iter()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect())
}

/// An exclusive flock on a cgroup directory: engines sharing a base take turns at placing
/// themselves and at restoring it.
pub(super) struct BaseLock {
    _dir: Option<File>,
}

impl BaseLock {
    pub(super) fn take(dir: &Path) -> BaseLock {
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

pub(super) fn engine_leaf(base: &Path) -> PathBuf {
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
pub(super) fn apply_v2(plan: &V2Plan) -> Result<(), Error> {
    let base = &plan.base;
    let _lock = BaseLock::take(base);
    // What engines killed outright (kill -9) left behind goes first.
    sweep_dead(base, &engine_leaf(base));
    // Under the lock, as the cgroup is now: the plan's reading may be stale (another
    // process's last engine restored the base since, and run cgroups would lack memory.max).
    let enable = not_enabled(base)?;
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
            if enable.is_empty() {
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
                    &enable_line(&enable, '+'),
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
    } else if !enable.is_empty() {
        // The root cgroup, or an empty configured parent: enabled for good (never restored:
        // other users of that cgroup may rely on it).
        write_file(
            &base.join("cgroup.subtree_control"),
            &enable_line(&enable, '+'),
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
pub(super) fn remove_dead_engine_leaf(base: &Path, leaf: &Path) -> bool {
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
pub(super) fn leave_v2(base: &Path, force: bool) {
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
pub(super) fn sweep_dead(base: &Path, keep: &Path) -> bool {
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
pub(super) fn restore_v2(base: &Path, failed_start: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(base: &Path) -> Vec<String> {
        words(&base.join("cgroup.subtree_control")).unwrap_or_default()
    }

    /// A start plans, then waits for the base's lock while another process's last engine
    /// stops and disables memory and pids: its runs still need them, so it must enable them
    /// again rather than trust what it read when planning.
    #[test]
    fn a_plan_applied_after_the_last_engine_restored_the_base_enables_the_controllers() {
        if !hierarchies::is_cgroup2_unified_mode() {
            println!("skipped: cgroup v2 only (this host is on v1)");
            return;
        }
        let plan = match plan_v2(None) {
            Ok(plan) if plan.move_self => plan,
            _ => {
                println!("skipped: only in a delegated cgroup the engine moves out of");
                return;
            }
        };
        let base = plan.base.clone();
        // The other engine, placed: memory and pids enabled in the base.
        apply_v2(&plan).expect("placing");
        assert!(enabled(&base).iter().any(|c| c == "memory"));
        // This start reads the base now...
        let stale = plan_v2(None).expect("planning");
        // ...and the other engine, the last one, stops before this start takes the lock.
        leave_v2(&base, false);
        if enabled(&base).iter().any(|c| c == "memory") {
            println!("skipped: another engine keeps the base in use");
            return;
        }
        apply_v2(&stale).expect("placing again");
        let now = enabled(&base);
        leave_v2(&base, false);
        assert!(
            V2_CONTROLLERS.iter().all(|c| now.iter().any(|e| e == c)),
            "enabled for run cgroups: {now:?}"
        );
    }
}
