//! Files into and out of a running sandbox, through `/proc/<init>/root`: the parent reaches the
//! sandbox's own mount namespace without mounting anything on the host.
//!
//! Out: a file the program left is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
//! below the work directory, non-blocking, and must be a regular file: a symlink, FIFO or
//! device in its place is refused, never followed.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::Error;
use crate::paths::RelPath;
use crate::rootfs::inside_path;
use crate::spec::{FileIn, FileSource, Spec};
use crate::sys::mount_api::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use crate::sys::openat2_beneath;

/// Where a `FileIn` goes inside the sandbox: below the work directory or /tmp, nowhere else.
pub fn destination(file: &FileIn, workdir: &Path) -> Result<PathBuf, Error> {
    let inside = if file.path.is_absolute() {
        inside_path(&file.path, "file path")?
    } else {
        inside_path(&workdir.join(&file.path), "file path")?
    };
    if inside == workdir || inside == Path::new("/tmp") {
        return Err(Error::InvalidSpec(format!(
            "file path {} names a directory the sandbox owns",
            file.path.display()
        )));
    }
    if !inside.starts_with(workdir) && !inside.starts_with("/tmp") {
        return Err(Error::InvalidSpec(format!(
            "file path {} must lie in the work directory or /tmp",
            file.path.display()
        )));
    }
    Ok(inside)
}

/// Runs `f` with this thread's filesystem ids switched to the sandbox user's host ids: the
/// sandbox's tmpfs belongs to its user namespace, where host root has no mapping (creating a
/// file as host root fails with EOVERFLOW), and what we create is owned by the sandbox user.
fn as_sandbox_user<T>(
    host_uid: u32,
    host_gid: u32,
    f: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    // SAFETY: setfsuid/setfsgid change the calling thread's fs ids only; restored below.
    let (old_gid, old_uid) = unsafe { (libc::setfsgid(host_gid), libc::setfsuid(host_uid)) };
    let result = f();
    // SAFETY: as above.
    unsafe {
        libc::setfsuid(old_uid as u32);
        libc::setfsgid(old_gid as u32);
    }
    result
}

/// Copies the spec's files into the sandbox of init `pid`, owned by the sandbox's uid (for a
/// bind, makes its mount point).
pub fn copy_in(
    pid: i32,
    files: &[FileIn],
    workdir: &Path,
    host_uid: u32,
    host_gid: u32,
) -> Result<(), String> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mkdir = |dir: &Path| as_sandbox_user(host_uid, host_gid, || fs::create_dir(dir));
    let create = |path: &Path, mode: u32| {
        as_sandbox_user(host_uid, host_gid, || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
        })
    };
    for file in files {
        let inside = destination(file, workdir).map_err(|e| e.to_string())?;
        let target = root.join(inside.strip_prefix("/").unwrap_or(&inside));
        let mut dir = root.clone();
        for c in inside.parent().unwrap_or(Path::new("/")).components() {
            if let Component::Normal(name) = c {
                dir.push(name);
                if !dir.exists() {
                    mkdir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
                }
            }
        }
        // No other sandbox's clone may copy the descriptors open for writing here (see
        // fork_guard): a program exec'd from this file would fail with ETXTBSY.
        let _writing = crate::fork_guard::writing();
        let result = match &file.source {
            FileSource::Bytes(bytes) => create(&target, file.mode.unwrap_or(0o644) & 0o777)
                .and_then(|mut f| f.write_all(bytes)),
            FileSource::Host(src) => copy_tree(src, &target, file.mode, &mkdir, &create),
            // A mount point; init attaches the bind over it.
            FileSource::Bind(src) if src.is_dir() => mkdir(&target),
            FileSource::Bind(_) => create(&target, 0o644).map(drop),
        };
        result.map_err(|e| format!("copying into {}: {e}", inside.display()))?;
    }
    Ok(())
}

/// Copies a host file or directory tree; a file keeps its permission bits unless `mode`.
fn copy_tree(
    src: &Path,
    dst: &Path,
    mode: Option<u32>,
    mkdir: &dyn Fn(&Path) -> io::Result<()>,
    create: &dyn Fn(&Path, u32) -> io::Result<File>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.is_dir() {
        mkdir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(
                &entry.path(),
                &dst.join(entry.file_name()),
                None,
                mkdir,
                create,
            )?;
        }
        Ok(())
    } else if meta.is_file() {
        let mut from = File::open(src)?;
        let mut to = create(dst, mode.unwrap_or(meta.permissions().mode()) & 0o777)?;
        io::copy(&mut from, &mut to)?;
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file or directory", src.display()),
        ))
    }
}

/// A relative path below the work directory, checked (the one rule: [`RelPath`]).
pub fn collect_path(path: &Path) -> Result<PathBuf, String> {
    RelPath::new(path)
        .map(RelPath::into_path_buf)
        .map_err(|e| e.to_string())
}

/// Reads the requested files back from the work directory of init `pid`.
pub fn collect(
    pid: i32,
    workdir: &Path,
    paths: &[PathBuf],
    max_bytes: u64,
) -> BTreeMap<String, Result<Vec<u8>, String>> {
    let mut out = BTreeMap::new();
    if paths.is_empty() {
        return out;
    }
    let base = PathBuf::from(format!("/proc/{pid}/root"))
        .join(workdir.strip_prefix("/").unwrap_or(workdir));
    let dir = File::open(&base);
    for path in paths {
        let key = path.to_string_lossy().into_owned();
        let result = match &dir {
            Ok(dir) => read_one(dir, path, max_bytes),
            Err(e) => Err(format!("the work directory is gone: {e}")),
        };
        out.insert(key, result);
    }
    out
}

fn read_one(dir: &File, path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let rel = collect_path(path)?;
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    let fd = openat2_beneath(dir.as_raw_fd(), &c, libc::O_RDONLY | libc::O_NONBLOCK).map_err(
        |e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => {
                format!(
                    "{}: a symlink, refused (it is never followed)",
                    rel.display()
                )
            }
            Some(libc::ENOENT) => format!("{}: no such file", rel.display()),
            _ => format!("{}: {e}", rel.display()),
        },
    )?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file (a directory, FIFO, socket or device), refused",
            rel.display()
        ));
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "{}: {} bytes, more than the {} allowed",
            rel.display(),
            meta.len(),
            max_bytes
        ));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut file)
        .take(max_bytes)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// The read-only binds of a run: detached copies of the host paths, and where they go.
pub(crate) struct Binds {
    pub fds: Vec<OwnedFd>,
    pub targets: Vec<PathBuf>,
}

impl Binds {
    pub fn open(spec: &Spec, workdir: &Path) -> Result<Binds, Error> {
        let mut binds = Binds {
            fds: Vec::new(),
            targets: Vec::new(),
        };
        for f in &spec.files {
            let FileSource::Bind(source) = &f.source else {
                continue;
            };
            if binds.fds.len() + 3 >= crate::report::MAX_FDS {
                return Err(Error::InvalidSpec(format!(
                    "at most {} read-only binds per run",
                    crate::report::MAX_FDS - 3
                )));
            }
            let path = std::ffi::CString::new(source.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::InvalidSpec("a bind source contains a NUL byte".into()))?;
            let fd = mount_api::clone_tree(
                &path,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            )
            .map_err(|e| Error::InvalidSpec(format!("bind source {}: {e}", source.display())))?;
            binds.fds.push(fd);
            binds.targets.push(destination(f, workdir)?);
        }
        Ok(binds)
    }
}
