//! Host id ranges: each sandbox that exists at once gets its own range of 65536 host uids and
//! gids, and its user namespace is owned by the first of them.
//!
//! The kernel charges what a sandbox takes to users: pipe buffers and in-flight fds to the
//! program's real uid, inotify instances, pending signals and message queue bytes up the user
//! namespace chain to the namespace's owner. With one range per sandbox and the namespace
//! owned by that range instead of host root, what a sandbox takes counts against its own quota
//! only: host root and the other sandboxes never notice (isolate gives each box a uid too).
//!
//! Ranges are unique across processes too: a range is held by an exclusive `flock` on a file
//! named after its first id in the runtime directory's `ids/`, so two `sandpit run`s, or a
//! CLI run beside the server, never give their sandboxes the same host ids. The kernel drops
//! the lock when its holder dies, so a crashed engine leaves no range taken.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::namespaces::ID_RANGE;

/// The ranges an engine hands out.
pub struct IdRanges {
    base: u32,
    /// Where the ranges' lock files are, shared by every engine with this runtime directory.
    locks: PathBuf,
    free: Arc<Mutex<Vec<u32>>>,
}

/// One range, held while its sandbox exists; back to the pool when dropped.
pub struct IdRange {
    base: u32,
    index: u32,
    free: Arc<Mutex<Vec<u32>>>,
    /// Holds the range's lock while the range is taken.
    lock: File,
}

impl IdRanges {
    /// `count` ranges from `base` on, locked across processes in `locks` (created here);
    /// refused when they would not fit below the largest uid.
    pub fn new(base: u32, count: u32, locks: &Path) -> Result<Self, Error> {
        let end = u64::from(base) + u64::from(count) * u64::from(ID_RANGE);
        if base == 0 || count == 0 || end >= u64::from(u32::MAX) {
            return Err(Error::Setup(format!(
                "host id ranges: {count} ranges of {ID_RANGE} ids from {base} do not fit \
                 between 1 and {}",
                u32::MAX - 1
            )));
        }
        {
            // Not recursive: a runtime directory made here would be 0700 too, where sandboxes
            // must reach the directories beside this one.
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(locks) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::Setup(format!("creating {}: {e}", locks.display())));
                }
                _ => {}
            }
        }
        // Lowest first: the end of the list is handed out first.
        let free = (0..count).rev().collect();
        Ok(IdRanges {
            base,
            locks: locks.to_owned(),
            free: Arc::new(Mutex::new(free)),
        })
    }

    /// A free range, or an error when every range is in use (that many sandboxes exist, in
    /// this process and the others that share the runtime directory).
    pub fn acquire(&self) -> Result<IdRange, Error> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        // Lowest first; a range another process holds stays free here for a later try.
        for at in (0..free.len()).rev() {
            let index = free[at];
            let base = self.base + index * ID_RANGE;
            if let Some(lock) = self.try_lock(base)? {
                free.remove(at);
                return Ok(IdRange {
                    base,
                    index,
                    free: self.free.clone(),
                    lock,
                });
            }
        }
        Err(Error::SandboxFailed(
            "every host id range is in use: too many sandboxes exist at once".into(),
        ))
    }

    /// The lock of the range that starts at `base`, or `None` when another process holds it.
    fn try_lock(&self, base: u32) -> Result<Option<File>, Error> {
        let path = self.locks.join(base.to_string());
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Setup(format!("opening {}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(Error::Setup(format!("locking {}: {e}", path.display())))
        }
    }

    /// How many ranges are free now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl IdRange {
    /// The host id that root inside the sandbox is, and that owns its user namespace.
    pub fn base(&self) -> u32 {
        self.base
    }
}

impl Drop for IdRange {
    fn drop(&mut self) {
        // Unlocked before it is free again here, so this process's next acquire can take it.
        // SAFETY: flock on the descriptor this range owns.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push(self.index);
    }
}

/// While alive, the calling thread acts as `uid` for ownership (effective and filesystem uid)
/// but keeps its capabilities: what it creates in between (a user namespace, above all) is
/// owned by `uid`, and it may still place the child into the run's cgroup. Raw syscalls: they
/// change this thread only (glibc's wrappers would change every thread of the engine).
pub struct ActingAs {
    old_securebits: libc::c_int,
}

const SECBIT_NO_SETUID_FIXUP: libc::c_int = 1 << 2;

impl ActingAs {
    pub fn new(uid: u32) -> Result<Self, Error> {
        let fail = |what: &str| {
            Error::Setup(format!(
                "acting as host uid {uid} ({what}): {}",
                std::io::Error::last_os_error()
            ))
        };
        // SAFETY: prctl with integer arguments, this thread only.
        let old = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
        if old < 0 {
            return Err(fail("reading securebits"));
        }
        // SAFETY: as above. Without this bit, the euid change would empty the effective set.
        if unsafe {
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                old | SECBIT_NO_SETUID_FIXUP,
                0,
                0,
                0,
            )
        } < 0
        {
            return Err(fail("securebits"));
        }
        let guard = ActingAs {
            old_securebits: old,
        };
        // SAFETY: raw setresuid of the effective id only; -1 keeps the real and saved ids (0).
        if unsafe { libc::syscall(libc::SYS_setresuid, -1i32, uid, -1i32) } < 0 {
            return Err(fail("setresuid"));
        }
        Ok(guard)
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        // SAFETY: back to euid 0 (the saved id), then the old securebits; this thread only.
        unsafe {
            libc::syscall(libc::SYS_setresuid, -1i32, 0, -1i32);
            libc::prctl(libc::PR_SET_SECUREBITS, self.old_securebits, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn ranges_are_disjoint_and_come_back() {
        let dir = locks();
        let ranges = IdRanges::new(1_000_000, 3, dir.path()).unwrap();
        let a = ranges.acquire().unwrap();
        let b = ranges.acquire().unwrap();
        let c = ranges.acquire().unwrap();
        assert_eq!(
            [a.base(), b.base(), c.base()],
            [1_000_000, 1_065_536, 1_131_072]
        );
        assert!(matches!(ranges.acquire(), Err(Error::SandboxFailed(_))));
        drop(b);
        assert_eq!(ranges.available(), 1);
        assert_eq!(ranges.acquire().unwrap().base(), 1_065_536);
    }

    /// Two engines over one runtime directory (a lock is per open file, so two in one process
    /// stand for two processes) never hold the same range; one freed by either is taken again.
    #[test]
    fn engines_sharing_a_runtime_directory_hold_disjoint_ranges() {
        let dir = locks();
        let first = IdRanges::new(1_000_000, 3, dir.path()).unwrap();
        let second = IdRanges::new(1_000_000, 3, dir.path()).unwrap();
        let a = first.acquire().unwrap();
        let b = second.acquire().unwrap();
        let c = first.acquire().unwrap();
        assert_eq!(
            [a.base(), b.base(), c.base()],
            [1_000_000, 1_065_536, 1_131_072]
        );
        // Every range is held by one engine or the other.
        assert!(matches!(second.acquire(), Err(Error::SandboxFailed(_))));
        assert!(matches!(first.acquire(), Err(Error::SandboxFailed(_))));
        // The other engine's range, once given back, is the one this engine gets.
        drop(b);
        assert_eq!(first.acquire().unwrap().base(), 1_065_536);
        // A range stays in the free list of an engine that could not lock it.
        assert_eq!(second.available(), 3);
    }

    #[test]
    fn ranges_that_do_not_fit_are_refused() {
        let dir = locks();
        let dir = dir.path();
        assert!(IdRanges::new(0, 1, dir).is_err());
        assert!(IdRanges::new(1, 0, dir).is_err());
        assert!(IdRanges::new(u32::MAX - 60_000, 1, dir).is_err());
        assert!(IdRanges::new(1_000_000, 65_530, dir).is_err());
        assert!(IdRanges::new(1_000_000, 60_000, dir).is_ok());
    }
}
