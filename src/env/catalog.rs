//! The one resolver from an envid to what a run needs: the environments of the store, plus
//! the plain root filesystem directories a server was started with (`--rootfs-env`). Every
//! face asks here (the API's environments and executions, `sandpit run --env`).

use std::path::{Path, PathBuf};

use sandbox::RootFs;

use super::{EnvError, EnvLease, EnvStore, Environment, NewEnvironment};
use crate::ids::valid_envid;
use crate::runspec::Defaults;

/// One environment, whichever kind.
#[derive(Debug, Clone)]
pub enum EnvEntry {
    /// A root filesystem directory given at start (no image, no defaults).
    Dir {
        envid: String,
    },
    Stored(Box<Environment>),
}

impl EnvEntry {
    pub fn envid(&self) -> &str {
        match self {
            EnvEntry::Dir { envid } => envid,
            EnvEntry::Stored(env) => &env.envid,
        }
    }
}

/// What a run gets from its root source: the filesystem, its defaults, and the lease that
/// keeps an environment or image in use (not removable, layers kept) while it lives: hold it
/// until the run has ended.
pub struct Resolved {
    pub rootfs: RootFs,
    pub defaults: Defaults,
    pub lease: Option<EnvLease>,
    /// Things the source asked for that are not honoured (a bundle's), for the caller to show.
    pub notes: Vec<String>,
}

pub struct Catalog {
    store: EnvStore,
    /// envid → directory, in the order given.
    dirs: Vec<(String, PathBuf)>,
}

impl Catalog {
    pub fn new(store: EnvStore, dirs: Vec<(String, PathBuf)>) -> Catalog {
        Catalog { store, dirs }
    }

    /// The environments of a data directory (no directory environments).
    pub fn open(data: &Path) -> Result<Catalog, EnvError> {
        Ok(Catalog::new(EnvStore::open(data)?, Vec::new()))
    }

    pub fn store(&self) -> &EnvStore {
        &self.store
    }

    fn dir_of(&self, envid: &str) -> Option<&PathBuf> {
        self.dirs.iter().find(|(id, _)| id == envid).map(|(_, d)| d)
    }

    /// Directory environments first, then the store's, by envid.
    pub fn list(&self) -> Result<Vec<EnvEntry>, EnvError> {
        let mut out: Vec<EnvEntry> = self
            .dirs
            .iter()
            .map(|(envid, _)| EnvEntry::Dir {
                envid: envid.clone(),
            })
            .collect();
        out.extend(
            self.store
                .list()?
                .into_iter()
                .map(|e| EnvEntry::Stored(Box::new(e))),
        );
        Ok(out)
    }

    /// One environment; `None` when there is none of that id (a malformed id included).
    pub fn get(&self, envid: &str) -> Result<Option<EnvEntry>, EnvError> {
        if self.dir_of(envid).is_some() {
            return Ok(Some(EnvEntry::Dir {
                envid: envid.to_string(),
            }));
        }
        if !valid_envid(envid) {
            return Ok(None);
        }
        Ok(self
            .store
            .get(envid)?
            .map(|e| EnvEntry::Stored(Box::new(e))))
    }

    /// The root filesystem and defaults of `envid`, leased when it is a stored environment.
    pub fn resolve(&self, envid: &str) -> Result<Resolved, EnvError> {
        if let Some(dir) = self.dir_of(envid) {
            return Ok(Resolved {
                rootfs: RootFs::Dir(dir.clone()),
                defaults: Defaults::default(),
                lease: None,
                notes: Vec::new(),
            });
        }
        Ok(Resolved::from_lease(self.store.acquire(envid)?))
    }

    /// Imports an OCI image as a new environment; a directory environment's id is taken.
    pub fn import(&self, path: &Path, meta: NewEnvironment) -> Result<Environment, EnvError> {
        if let Some(id) = &meta.envid {
            if self.dir_of(id).is_some() {
                return Err(EnvError::AlreadyExists(id.clone()));
            }
        }
        self.store.import(path, meta)
    }

    /// Removes a stored environment (refused while a run holds it); returns what it was.
    pub fn remove(&self, envid: &str) -> Result<Environment, EnvError> {
        if self.dir_of(envid).is_some() {
            return Err(EnvError::Fixed(envid.to_string()));
        }
        if !valid_envid(envid) {
            return Err(EnvError::NotFound(envid.to_string()));
        }
        let env = self
            .store
            .get(envid)?
            .ok_or_else(|| EnvError::NotFound(envid.to_string()))?;
        self.store.remove(envid)?;
        Ok(env)
    }
}

impl Resolved {
    pub fn from_lease(lease: EnvLease) -> Resolved {
        Resolved {
            rootfs: lease.rootfs(),
            defaults: lease.defaults(),
            lease: Some(lease),
            notes: Vec::new(),
        }
    }
}
