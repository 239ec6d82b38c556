//! Where a run's root filesystem comes from: a directory (`--rootfs`), an environment
//! (`--env`), an image (`--image`) or an OCI runtime bundle (`--bundle`).

use std::path::{Path, PathBuf};

use sandbox::{RootFs, Spec};

use crate::bundle;
use crate::env::{apply_defaults, EnvLease, EnvStore};
use crate::image::{ImageStore, ImportLimits};

/// The root filesystem a user asked for.
#[derive(Debug, Clone)]
pub enum RootSource {
    Dir(PathBuf),
    /// An environment of the data directory, by envid.
    Env(String),
    /// An OCI image layout (directory or tar), imported into the store first (content
    /// addressed: a second run of the same image unpacks nothing).
    Image(PathBuf),
    /// An OCI runtime bundle: `config.json` + `rootfs/`.
    Bundle(PathBuf),
}

/// What a root source contributes to a run: the filesystem and the defaults that came with it
/// (an image's Env, WorkingDir, User, Cmd; a bundle's process and limits).
pub struct ResolvedRoot {
    pub rootfs: RootFs,
    /// Applies the source's defaults to a spec; the user's own flags are applied after this.
    pub defaults: Box<dyn FnOnce(&mut Spec)>,
    /// Keeps the environment or image in use (not removable, layers kept) while it lives:
    /// hold it until the run has ended.
    pub lease: Option<EnvLease>,
}

/// Resolves a root source against the data directory.
pub fn resolve(data: &Path, source: &RootSource) -> Result<ResolvedRoot, String> {
    match source {
        RootSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(format!("--rootfs {}: not a directory", dir.display()));
            }
            Ok(ResolvedRoot {
                rootfs: RootFs::Dir(dir.clone()),
                defaults: Box::new(|_| {}),
                lease: None,
            })
        }
        RootSource::Env(envid) => {
            let store = EnvStore::open(data).map_err(|e| format!("--env {envid}: {e}"))?;
            let lease = store
                .acquire(envid)
                .map_err(|e| format!("--env {envid}: {}", e.in_data_dir(data)))?;
            Ok(from_lease(lease))
        }
        RootSource::Image(path) => {
            let err = |e: &dyn std::fmt::Display| format!("--image {}: {e}", path.display());
            let store = ImageStore::open(data, ImportLimits::default()).map_err(|e| err(&e))?;
            let held = store.lock().map_err(|e| err(&e))?;
            let record = store.import_locked(&held, path).map_err(|e| err(&e))?;
            // Leased before the store lock goes, so no collection can slip in between.
            let image = store.lease(&record.digest).map_err(|e| err(&e))?;
            drop(held);
            let lease = EnvLease::for_image(&store, &record, image).map_err(|e| err(&e))?;
            Ok(from_lease(lease))
        }
        RootSource::Bundle(dir) => {
            let b = bundle::load(dir)?;
            for line in &b.unsupported {
                eprintln!("sandpit: bundle {}: {line}", dir.display());
            }
            Ok(ResolvedRoot {
                rootfs: RootFs::Dir(b.rootfs.clone()),
                defaults: Box::new(move |spec| b.apply(spec)),
                lease: None,
            })
        }
    }
}

fn from_lease(lease: EnvLease) -> ResolvedRoot {
    let defaults = lease.environment().defaults.clone();
    let dirs = match lease.rootfs() {
        RootFs::Layers(dirs) => dirs,
        RootFs::Dir(d) => vec![d],
    };
    ResolvedRoot {
        rootfs: lease.rootfs(),
        defaults: Box::new(move |spec| apply_defaults(&defaults, &dirs, spec)),
        lease: Some(lease),
    }
}
