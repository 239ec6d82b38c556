//! Advisory file locks (flock): they work across processes and vanish with the process that
//! held them, so a crashed run never leaves an environment marked "in use".

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// A held flock; released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl FileLock {
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
    }

    /// Blocks until the lock is held.
    pub fn lock(path: &Path, kind: LockKind) -> io::Result<FileLock> {
        let file = Self::open(path)?;
        flock(&file, kind, false)?;
        Ok(FileLock { _file: file })
    }

    /// `Ok(None)` when someone else holds a conflicting lock.
    pub fn try_lock(path: &Path, kind: LockKind) -> io::Result<Option<FileLock>> {
        let file = Self::open(path)?;
        match flock(&file, kind, true) {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Locks a directory itself (never through a symlink) and returns the lock with whether
    /// `path` still names the locked directory (someone may have removed it in between).
    /// `Ok(None)` when non-blocking and someone else holds it.
    pub fn on_dir(path: &Path, kind: LockKind, nonblocking: bool) -> io::Result<Option<DirLock>> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        match flock(&dir, kind, nonblocking) {
            Ok(()) => {}
            Err(e) if nonblocking && e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let held = dir.metadata()?;
        let still_there = match std::fs::symlink_metadata(path) {
            Ok(now) => now.dev() == held.dev() && now.ino() == held.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        Ok(Some(DirLock {
            _lock: FileLock { _file: dir },
            still_there,
        }))
    }
}

/// A held flock on a directory.
#[derive(Debug)]
pub struct DirLock {
    _lock: FileLock,
    /// Whether the path still named the locked directory once the lock was held.
    pub still_there: bool,
}

fn flock(file: &File, kind: LockKind, nonblocking: bool) -> io::Result<()> {
    let mut op = match kind {
        LockKind::Shared => libc::LOCK_SH,
        LockKind::Exclusive => libc::LOCK_EX,
    };
    if nonblocking {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: the fd is valid for the life of `file`; flock has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
