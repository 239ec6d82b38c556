//! Where a run's root filesystem comes from: a directory (`--rootfs`), an environment
//! (`--env`), an image (`--image`) or an OCI runtime bundle (`--bundle`).

use std::path::{Path, PathBuf};

use sandbox::{RootFs, Spec};

/// The root filesystem a user asked for.
#[derive(Debug, Clone)]
pub enum RootSource {
    Dir(PathBuf),
}

/// What a root source contributes to a run: the filesystem and the defaults that came with it
/// (an image's Env, WorkingDir, User, Cmd; a bundle's process and limits).
pub struct ResolvedRoot {
    pub rootfs: RootFs,
    /// Applies the source's defaults to a spec; the user's own flags are applied after this.
    pub defaults: Box<dyn FnOnce(&mut Spec)>,
}

/// Resolves a root source against the data directory.
pub fn resolve(_data: &Path, source: &RootSource) -> Result<ResolvedRoot, String> {
    match source {
        RootSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(format!("--rootfs {}: not a directory", dir.display()));
            }
            Ok(ResolvedRoot {
                rootfs: RootFs::Dir(dir.clone()),
                defaults: Box::new(|_| {}),
            })
        }
    }
}
