//! Where a `sandpit run`'s root filesystem comes from: a directory (`--rootfs`), an
//! environment (`--env`, through the [`Catalog`]), an image (`--image`) or an OCI runtime
//! bundle (`--bundle`). Each resolves to the same [`Resolved`] value.

use std::path::{Path, PathBuf};

use sandbox::RootFs;

use super::{bundle, Catalog, EnvLease, Resolved};
use crate::image::{ImageStore, ImportLimits};
use crate::runspec::Defaults;

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

/// Resolves a root source against the data directory. A bundle's unsupported fields come
/// back as `notes`, one line each, for the caller to show.
pub fn resolve(data: &Path, source: &RootSource) -> Result<Resolved, String> {
    match source {
        RootSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(format!("--rootfs {}: not a directory", dir.display()));
            }
            Ok(Resolved {
                rootfs: RootFs::Dir(dir.clone()),
                defaults: Defaults::default(),
                lease: None,
                notes: Vec::new(),
            })
        }
        RootSource::Env(envid) => Catalog::open(data)
            .and_then(|c| c.resolve(envid))
            .map_err(|e| format!("--env {envid}: {}", e.in_data_dir(data))),
        RootSource::Image(path) => {
            let err = |e: &dyn std::fmt::Display| format!("--image {}: {e}", path.display());
            let store = ImageStore::open(data, ImportLimits::default()).map_err(|e| err(&e))?;
            let (held, record) = store.import(path).map_err(|e| err(&e))?;
            // Leased before the store lock goes, so no collection can slip in between.
            let image = store.lease(&record.digest).map_err(|e| err(&e))?;
            drop(held);
            let lease = EnvLease::for_image(&store, &record, image).map_err(|e| err(&e))?;
            Ok(Resolved::from_lease(lease))
        }
        RootSource::Bundle(dir) => {
            let b = bundle::load(dir)?;
            Ok(Resolved {
                rootfs: RootFs::Dir(b.rootfs.clone()),
                defaults: b.defaults(),
                lease: None,
                notes: b
                    .unsupported
                    .iter()
                    .map(|line| format!("bundle {}: {line}", dir.display()))
                    .collect(),
            })
        }
    }
}
