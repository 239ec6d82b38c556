//! The root filesystem of a sandbox as the engine makes it: overlayfs over the image's layers
//! (or over a plain directory) topped by a layer that holds the mount points, read-only,
//! nosuid, nodev, as a detached mount the sandbox's init attaches and pivots into.
//!
//! The engine (host root) mounts it, not the sandbox's unprivileged root: the host paths may
//! lie below directories only root may enter, the layers' whiteouts and opaque directories use
//! `trusted.overlay.*` xattrs (which every filesystem, tmpfs too, keeps), and the layers are
//! named by `/proc/self/fd/N` so that no host path shows in the sandbox's mountinfo.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::spec::RootFs;
use crate::sys::mount_api::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// Most layers an image may have (overlayfs takes up to 500 lower layers).
const MAX_LAYERS: usize = 128;

/// Makes the read-only root of `rootfs`, with the directories `points` (inside paths: /proc,
/// /dev, /tmp, the work directory) present to mount on. `points_dir` is the engine's directory
/// of mount-point layers.
pub fn make(rootfs: &RootFs, points: &[PathBuf], points_dir: &Path) -> Result<OwnedFd, Error> {
    let lowers: Vec<PathBuf> = match rootfs {
        RootFs::Dir(dir) => vec![dir.clone()],
        RootFs::Layers(layers) => {
            if layers.is_empty() {
                return Err(Error::InvalidSpec(
                    "an image needs at least one layer".into(),
                ));
            }
            if layers.len() > MAX_LAYERS {
                return Err(Error::InvalidSpec(format!(
                    "an image may have at most {MAX_LAYERS} layers"
                )));
            }
            // overlayfs lists the top layer first.
            layers.iter().rev().cloned().collect()
        }
    };
    let mut dirs: Vec<OwnedFd> = Vec::with_capacity(lowers.len() + 1);
    dirs.push(open_dir(&points_layer(points_dir, points)?)?);
    for dir in &lowers {
        dirs.push(open_dir(dir)?);
    }
    let lowerdir = dirs
        .iter()
        .map(|d| format!("/proc/self/fd/{}", d.as_raw_fd()))
        .collect::<Vec<_>>()
        .join(":");
    let failed = |what: &str, e: std::io::Error| {
        Error::SandboxFailed(format!("mounting the root filesystem ({what}): {e}"))
    };
    let fs = mount_api::fsopen(c"overlay").map_err(|e| failed("overlayfs", e))?;
    let text = |s: &str| CString::new(s).unwrap_or_default();
    mount_api::set_string(&fs, c"source", c"sandpit").map_err(|e| failed("source", e))?;
    mount_api::set_string(&fs, c"lowerdir", &text(&lowerdir)).map_err(|e| failed("layers", e))?;
    mount_api::create(&fs).map_err(|e| failed("overlayfs", e))?;
    mount_api::fsmount(
        &fs,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
    .map_err(|e| failed("detached mount", e))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, Error> {
    File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|e| Error::RootFs {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The layer that holds `points` (empty directories, root's), made once per set of points.
fn points_layer(points_dir: &Path, points: &[PathBuf]) -> Result<PathBuf, Error> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    points.hash(&mut h);
    let name = format!("{:016x}", h.finish());
    let layer = points_dir.join(&name);
    let complete = points_dir.join(format!("{name}.complete"));
    if complete.exists() {
        return Ok(layer);
    }
    let failed = |e: std::io::Error| {
        Error::Setup(format!(
            "making the mount points in {}: {e}",
            layer.display()
        ))
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o755);
    for p in points {
        builder
            .create(layer.join(p.strip_prefix("/").unwrap_or(p)))
            .map_err(failed)?;
    }
    // Marks the layer whole (beside it: inside, it would show at the sandbox's /).
    std::fs::write(&complete, b"").map_err(failed)?;
    Ok(layer)
}
