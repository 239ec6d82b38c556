//! Safe unpacking of one layer tar into its own directory of the layer store.
//!
//! Nothing in the archive is trusted: paths are normalised and refused when absolute or when
//! they climb with `..`; no symlink is ever followed while writing (a parent that is a symlink
//! is refused); links may not point out of the root; device nodes and FIFOs are refused;
//! extended attributes in the archive are ignored. Everything is owned by root and writable
//! by root only (setuid, setgid, group and other write bits dropped): the image's owners and
//! open modes would mean real host users able to change what later sandboxes run.
//! The stream must be whole: every entry's data complete, the end-of-archive marker present.
//!
//! Whiteouts are converted so that they still act when the layer directories are stacked as
//! overlayfs lower dirs: `.wh.NAME` becomes a 0/0 character device `NAME` (overlayfs's
//! whiteout), `.wh..wh..opq` becomes the opaque xattr on its directory. Only this code creates
//! such device nodes; an archive that carries its own device nodes is refused.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::budget::Budget;
use super::digest::classify;
use super::error::{ImageError, Result};
use super::tar_stream::read_entries;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The engine mounts image layers as real root, where overlayfs reads `trusted.*` xattrs; every
/// filesystem keeps those (tmpfs before Linux 6.6 has no `user.*` ones).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Who owns everything in the layer store: root, whatever the image says. An image's owners
/// would be real users on the host (uid 1000, nobody), able to write to the layer.
const STORE_UID: u32 = 0;
const STORE_GID: u32 = 0;
/// The mode bits kept from the image: setuid and setgid dropped (nothing in the store runs
/// with the privileges of its owner), group and other write dropped (only root writes to the
/// store); sticky kept.
const MODE_MASK: u32 = 0o1755;

/// Unpacks an (uncompressed) layer tar stream into `dest`, an existing empty directory,
/// counting its entries against `budget` (whose meter the stream should already pass through).
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, budget: &Budget) -> Result<()> {
    read_entries(reader, "layer", budget, |entry| unpack_entry(entry, dest))
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> Result<()> {
    let raw = entry.path_bytes().into_owned();
    let name = String::from_utf8_lossy(&raw).into_owned();
    let comps = normalise(&raw, &name)?;
    let kind = entry.header().entry_type();
    if matches!(
        kind,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    ) {
        return Ok(());
    }
    // Whiteouts first: they are regular (empty) files by name only.
    if let Some(last) = comps.last().and_then(|c| c.to_str()) {
        if last.starts_with(WHITEOUT_PREFIX) {
            let parent = make_parents(dest, &comps[..comps.len() - 1], &name)?;
            return apply_whiteout(&parent, last, &name);
        }
    }
    let header = entry.header();
    let mode = header
        .mode()
        .map_err(|e| ImageError::Corrupt(format!("{name}: mode: {e}")))?
        & MODE_MASK;
    let mtime = header.mtime().unwrap_or(0) as i64;
    if comps.is_empty() {
        // The root itself ("./"): only a directory makes sense, and only its mode.
        if kind == EntryType::Directory {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))
                .map_err(|e| ImageError::io(dest.display().to_string(), e))?;
            return Ok(());
        }
        return Err(unsafe_path(&name, "not a directory but names the root"));
    }
    let parent = make_parents(dest, &comps[..comps.len() - 1], &name)?;
    let path = parent.join(&comps[comps.len() - 1]);
    match kind {
        EntryType::Directory => {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    remove_any(&path)?;
                    mkdir(&path)?;
                }
                Err(_) => mkdir(&path)?,
            }
            std::os::unix::fs::lchown(&path, Some(STORE_UID), Some(STORE_GID))
                .map_err(|e| ImageError::io(format!("chown {name}"), e))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| ImageError::io(format!("chmod {name}"), e))?;
        }
        EntryType::Regular | EntryType::Continuous => {
            remove_any(&path)?;
            let size = entry.size();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| ImageError::io(format!("create {name}"), e))?;
            let copied = io::copy(entry, &mut file).map_err(|e| classify(&name, e))?;
            if copied != size {
                return Err(ImageError::Truncated(format!(
                    "{name}: {copied} of {size} bytes"
                )));
            }
            std::os::unix::fs::fchown(&file, Some(STORE_UID), Some(STORE_GID))
                .map_err(|e| ImageError::io(format!("chown {name}"), e))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| ImageError::io(format!("chmod {name}"), e))?;
            drop(file);
            set_mtime(&path, mtime);
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ImageError::Corrupt(format!("{name}: symlink without target")))?
                .into_owned();
            check_symlink(&comps, &target, &name)?;
            remove_any(&path)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                .map_err(|e| ImageError::io(format!("symlink {name}"), e))?;
            std::os::unix::fs::lchown(&path, Some(STORE_UID), Some(STORE_GID))
                .map_err(|e| ImageError::io(format!("chown {name}"), e))?;
            set_mtime(&path, mtime);
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ImageError::Corrupt(format!("{name}: hard link without target")))?
                .into_owned();
            let target_name = String::from_utf8_lossy(&target).into_owned();
            let tcomps = normalise(&target, &name).map_err(|_| ImageError::LinkEscapes {
                entry: name.clone(),
                target: target_name.clone(),
            })?;
            if tcomps.is_empty() {
                return Err(ImageError::LinkEscapes {
                    entry: name.clone(),
                    target: target_name,
                });
            }
            let tparent = existing_parents(dest, &tcomps[..tcomps.len() - 1]).ok_or_else(|| {
                unsafe_path(
                    &name,
                    &format!("hard link target '{target_name}' is not in this layer"),
                )
            })?;
            let tpath = tparent.join(&tcomps[tcomps.len() - 1]);
            match fs::symlink_metadata(&tpath) {
                Ok(m) if m.file_type().is_file() => {}
                _ => {
                    return Err(unsafe_path(
                        &name,
                        &format!("hard link target '{target_name}' is not a file of this layer"),
                    ))
                }
            }
            if tpath != path {
                remove_any(&path)?;
                fs::hard_link(&tpath, &path)
                    .map_err(|e| ImageError::io(format!("link {name}"), e))?;
            }
        }
        EntryType::Char => return Err(special(&name, "character device")),
        EntryType::Block => return Err(special(&name, "block device")),
        EntryType::Fifo => return Err(special(&name, "FIFO")),
        other => return Err(special(&name, &format!("unsupported entry type {other:?}"))),
    }
    Ok(())
}

fn unsafe_path(entry: &str, reason: &str) -> ImageError {
    ImageError::UnsafePath {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

fn special(entry: &str, kind: &str) -> ImageError {
    ImageError::SpecialFile {
        entry: entry.to_string(),
        kind: kind.to_string(),
    }
}

/// Splits an archive path into plain components; `.` and empty ones are dropped, absolute
/// paths and `..` refused. An empty result names the root.
fn normalise(raw: &[u8], name: &str) -> Result<Vec<OsString>> {
    if raw.first() == Some(&b'/') {
        return Err(unsafe_path(name, "absolute path"));
    }
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(unsafe_path(name, "'..' in path")),
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

/// Creates the parent directories of an entry inside `dest`, refusing to pass through a
/// symlink or a non-directory (so no write can be redirected out of the root).
fn make_parents(dest: &Path, comps: &[OsString], name: &str) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for c in comps {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path(name, "a parent directory is a symlink"))
            }
            Ok(_) => return Err(unsafe_path(name, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(&cur)?,
            Err(e) => return Err(ImageError::io(cur.display().to_string(), e)),
        }
    }
    Ok(cur)
}

/// Like `make_parents` but creates nothing: `None` when a parent is missing or not a plain dir.
fn existing_parents(dest: &Path, comps: &[OsString]) -> Option<PathBuf> {
    let mut cur = dest.to_path_buf();
    for c in comps {
        cur.push(c);
        if !fs::symlink_metadata(&cur).ok()?.file_type().is_dir() {
            return None;
        }
    }
    Some(cur)
}

/// Creates a directory of the store: root's, 0755 (explicitly: neither the umask nor a setgid
/// parent decides).
pub fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|e| ImageError::io(format!("mkdir {}", path.display()), e))?;
    std::os::unix::fs::lchown(path, Some(STORE_UID), Some(STORE_GID))
        .map_err(|e| ImageError::io(format!("chown {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|e| ImageError::io(format!("chmod {}", path.display()), e))
}

/// Removes whatever is at `path` (file, link, device, or a whole directory), never following
/// a symlink.
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| ImageError::io(format!("replace {}", path.display()), e))
}

/// A symlink may point anywhere inside the image root (absolute targets are resolved against
/// the root at run time), but not above it.
fn check_symlink(comps: &[OsString], target: &[u8], name: &str) -> Result<()> {
    let escapes = || ImageError::LinkEscapes {
        entry: name.to_string(),
        target: String::from_utf8_lossy(target).into_owned(),
    };
    if target.is_empty() {
        return Err(escapes());
    }
    let mut depth: i64 = if target[0] == b'/' {
        0
    } else {
        comps.len() as i64 - 1
    };
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(escapes());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Turns `.wh.NAME` into an overlayfs whiteout and `.wh..wh..opq` into the opaque xattr.
fn apply_whiteout(parent: &Path, file: &str, name: &str) -> Result<()> {
    if file == OPAQUE_MARKER {
        set_xattr(parent, OPAQUE_XATTR, b"y")
            .map_err(|e| ImageError::io(format!("opaque dir {name}"), e))?;
        return Ok(());
    }
    let hidden = &file[WHITEOUT_PREFIX.len()..];
    if hidden.starts_with(WHITEOUT_PREFIX) {
        // Other `.wh..wh.` names are aufs bookkeeping (plnk, aufs): meaningless here.
        return Ok(());
    }
    if hidden.is_empty() || hidden == "." || hidden == ".." {
        return Err(unsafe_path(name, "whiteout of no file"));
    }
    let path = parent.join(hidden);
    if fs::symlink_metadata(&path).is_ok() {
        // The same layer also holds the file: the file wins (a whiteout hides lower layers only).
        return Ok(());
    }
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .map_err(|e| ImageError::io(format!("whiteout {name}"), io::Error::from(e)))
}

fn set_xattr(path: &Path, attr: &str, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let a = CString::new(attr)?;
    // SAFETY: both strings are NUL-terminated and live across the call; value/len describe a
    // valid buffer.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            a.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keeps the archive's modification times (Python compares them with its .pyc files); best
/// effort, a failure only costs a recompile.
fn set_mtime(path: &Path, mtime: i64) {
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: p is NUL-terminated, times points to two timespecs; AT_SYMLINK_NOFOLLOW so a
    // symlink's own time is set, never its target's.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths() {
        assert_eq!(normalise(b"./a//b/./c", "x").unwrap().len(), 3);
        assert!(normalise(b"./", "x").unwrap().is_empty());
        assert!(normalise(b"/etc/passwd", "x").is_err());
        assert!(normalise(b"a/../../b", "x").is_err());
    }

    #[test]
    fn symlink_escapes() {
        let comps = normalise(b"a/b/link", "x").unwrap();
        assert!(check_symlink(&comps, b"../c", "x").is_ok());
        assert!(check_symlink(&comps, b"../../c", "x").is_ok());
        assert!(check_symlink(&comps, b"../../../c", "x").is_err());
        assert!(check_symlink(&comps, b"/usr/bin/python3", "x").is_ok());
        assert!(check_symlink(&comps, b"/../etc", "x").is_err());
    }
}
