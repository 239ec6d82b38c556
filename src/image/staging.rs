//! The file-system steps of the image store: an import's private staging directory, store
//! directories, atomic writes, listings.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{ImageError, Result};
use super::lock::{DirLock, FileLock, LockKind};
use super::store::COMMIT_ATTEMPTS;
use super::unpack;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// An import's private scratch directory under `layers/tmp`: locked while the import lives,
/// so that a collection (which sweeps `layers/tmp`) leaves it alone, and removed with
/// everything still in it when dropped.
pub(super) struct Staging {
    pub path: PathBuf,
    _lock: DirLock,
}

impl Staging {
    pub fn create(tmp: &Path) -> Result<Staging> {
        for _ in 0..COMMIT_ATTEMPTS {
            let path = tmp.join(unique("import"));
            unpack::mkdir(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(|e| ImageError::io(format!("chmod {}", path.display()), e))?;
            let lock = FileLock::on_dir(&path, LockKind::Exclusive, false)
                .map_err(|e| ImageError::io(format!("lock {}", path.display()), e))?;
            // A collection may have swept the directory before the lock was held: take another.
            if let Some(lock) = lock.filter(|l| l.still_there) {
                return Ok(Staging { path, _lock: lock });
            }
        }
        Err(ImageError::io(
            format!("create a staging directory in {}", tmp.display()),
            io::Error::other("collected as soon as created"),
        ))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Creates a store directory (and its missing parents) root's and 0755.
pub(super) fn mkdirs(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdirs(parent)?;
    }
    match unpack::mkdir(path) {
        Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        other => other,
    }
}

pub(super) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ImageError::io(dir.display().to_string(), e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| ImageError::io(dir.display().to_string(), e))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

/// Writes a file so that readers see the old or the new content, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(unique("tmp"));
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ImageError::io(path.display().to_string(), e)
    })
}
