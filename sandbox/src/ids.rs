//! Host id ranges: each sandbox that exists at once gets its own range of 65536 host uids and
//! gids, and its user namespace is owned by the first of them.
//!
//! The kernel charges what a sandbox takes to users: pipe buffers and in-flight fds to the
//! program's real uid, inotify instances, pending signals and message queue bytes up the user
//! namespace chain to the namespace's owner. With one range per sandbox and the namespace
//! owned by that range instead of host root, what a sandbox takes counts against its own quota
//! only: host root and the other sandboxes never notice (isolate gives each box a uid too).

use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::namespaces::ID_RANGE;

/// The ranges an engine hands out.
pub struct IdRanges {
    base: u32,
    free: Arc<Mutex<Vec<u32>>>,
}

/// One range, held while its sandbox exists; back to the pool when dropped.
pub struct IdRange {
    base: u32,
    index: u32,
    free: Arc<Mutex<Vec<u32>>>,
}

impl IdRanges {
    /// `count` ranges from `base` on; refused when they would not fit below the largest uid.
    pub fn new(base: u32, count: u32) -> Result<Self, Error> {
        let end = u64::from(base) + u64::from(count) * u64::from(ID_RANGE);
        if base == 0 || count == 0 || end >= u64::from(u32::MAX) {
            return Err(Error::Setup(format!(
                "host id ranges: {count} ranges of {ID_RANGE} ids from {base} do not fit \
                 between 1 and {}",
                u32::MAX - 1
            )));
        }
        // Lowest first: pop() hands out from the end.
        let free = (0..count).rev().collect();
        Ok(IdRanges {
            base,
            free: Arc::new(Mutex::new(free)),
        })
    }

    /// A free range, or an error when every range is in use (that many sandboxes exist).
    pub fn acquire(&self) -> Result<IdRange, Error> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let index = free.pop().ok_or_else(|| {
            Error::SandboxFailed(
                "every host id range is in use: too many sandboxes exist at once".into(),
            )
        })?;
        Ok(IdRange {
            base: self.base + index * ID_RANGE,
            index,
            free: self.free.clone(),
        })
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

    #[test]
    fn ranges_are_disjoint_and_come_back() {
        let ranges = IdRanges::new(1_000_000, 3).unwrap();
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

    #[test]
    fn ranges_that_do_not_fit_are_refused() {
        assert!(IdRanges::new(0, 1).is_err());
        assert!(IdRanges::new(1, 0).is_err());
        assert!(IdRanges::new(u32::MAX - 60_000, 1).is_err());
        assert!(IdRanges::new(1_000_000, 65_530).is_err());
        assert!(IdRanges::new(1_000_000, 60_000).is_ok());
    }
}
