//! Environments (the Pythia environment object): an imported OCI image plus metadata
//! (`envid`, `name`, `authors`, `description`) and defaults (env vars, working dir, user,
//! command, limits).
//!
//! ```text
//! DATA/envs/<envid>.json   the environment
//! DATA/envs/<envid>.lock   held shared by every run of it (EnvLease), exclusive by `remove`
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod bundle;
mod catalog;
mod defaults;
pub mod source;

pub use catalog::{Catalog, EnvEntry, Resolved};
pub use defaults::{resolve_user, EnvDefaults};

use crate::image::lock::{FileLock, LockKind};
use crate::image::store::write_atomic;
use crate::image::{ImageError, ImageLease, ImageRecord, ImageStore, ImportLimits};
use crate::runspec::Defaults;

/// Errors of the environment store.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("no environment '{0}'")]
    NotFound(String),
    #[error("environment '{0}' already exists")]
    AlreadyExists(String),
    #[error("environment '{0}' is in use by a run")]
    InUse(String),
    #[error(
        "invalid environment id '{0}' (use 1-64 of a-z 0-9 . _ -, starting with a letter or digit)"
    )]
    InvalidId(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("environment '{envid}' is damaged: {reason}")]
    Corrupt { envid: String, reason: String },
    /// A root filesystem directory given to the server at start: it can't be removed.
    #[error("environment '{0}' was given to the server at start and can't be deleted")]
    Fixed(String),
}

impl EnvError {
    /// The error as the user of data directory `data` reads it: a missing environment names
    /// the directory that was searched.
    pub fn in_data_dir(&self, data: &Path) -> String {
        match self {
            EnvError::NotFound(_) => format!(
                "{self} in the data directory {} (`sandpit env list` shows what is there; \
                 --data DIR or SANDPIT_DATA=DIR chooses another)",
                data.display()
            ),
            _ => self.to_string(),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EnvError {
    let context = context.into();
    move |source| EnvError::Io { context, source }
}

/// Metadata given at import; missing fields get defaults (`envid` from the image digest,
/// `name` from the envid).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewEnvironment {
    pub envid: Option<String>,
    pub name: Option<String>,
    pub authors: Option<String>,
    pub description: Option<String>,
}

/// An environment as stored and as the API shows it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Environment {
    pub envid: String,
    pub name: String,
    pub authors: String,
    pub description: String,
    /// `sha256:…` of the image manifest.
    pub image_digest: String,
    /// Layer digests (diff_ids), lowest first.
    pub layers: Vec<String>,
    pub defaults: EnvDefaults,
}

/// The environments of a data directory.
#[derive(Debug, Clone)]
pub struct EnvStore {
    dir: PathBuf,
    images: ImageStore,
}

/// A run's hold on an environment: while it lives, the environment cannot be removed and its
/// layers stay in the store.
#[derive(Debug)]
pub struct EnvLease {
    env: Environment,
    layer_dirs: Vec<PathBuf>,
    _image: ImageLease,
    _env: Option<FileLock>,
}

impl EnvStore {
    /// Opens the store of `data_dir` (created when missing) with default import limits.
    pub fn open(data_dir: &Path) -> Result<EnvStore, EnvError> {
        Self::open_with_limits(data_dir, ImportLimits::default())
    }

    pub fn open_with_limits(data_dir: &Path, limits: ImportLimits) -> Result<EnvStore, EnvError> {
        let dir = data_dir.join("envs");
        fs::create_dir_all(&dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
        Ok(EnvStore {
            dir,
            images: ImageStore::open(data_dir, limits)?,
        })
    }

    /// The image store underneath.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    fn json_path(&self, envid: &str) -> PathBuf {
        self.dir.join(format!("{envid}.json"))
    }

    fn lock_path(&self, envid: &str) -> PathBuf {
        self.dir.join(format!("{envid}.lock"))
    }

    fn check_id(envid: &str) -> Result<(), EnvError> {
        if crate::ids::valid_envid(envid) {
            Ok(())
        } else {
            Err(EnvError::InvalidId(envid.to_string()))
        }
    }

    /// All environments, sorted by envid.
    pub fn list(&self) -> Result<Vec<Environment>, EnvError> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err(self.dir.display().to_string()))?;
        let mut ids = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err(self.dir.display().to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if crate::ids::valid_envid(id) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        for id in ids {
            if let Some(env) = self.get(&id)? {
                out.push(env);
            }
        }
        Ok(out)
    }

    /// One environment; `Ok(None)` when there is none of that id.
    pub fn get(&self, envid: &str) -> Result<Option<Environment>, EnvError> {
        Self::check_id(envid)?;
        let path = self.json_path(envid);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| EnvError::Corrupt {
                    envid: envid.to_string(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path.display().to_string())(e)),
        }
    }

    /// Imports an OCI image layout (directory or tar) as a new environment.
    pub fn import(&self, path: &Path, meta: NewEnvironment) -> Result<Environment, EnvError> {
        if let Some(id) = &meta.envid {
            Self::check_id(id)?;
            if self.json_path(id).exists() {
                return Err(EnvError::AlreadyExists(id.clone()));
            }
        }
        let (held, record) = self.images.import(path)?;
        let envid = match meta.envid {
            Some(id) => id,
            None => record.digest.trim_start_matches("sha256:")[..12].to_string(),
        };
        let env = Environment {
            name: meta.name.unwrap_or_else(|| envid.clone()),
            authors: meta.authors.unwrap_or_default(),
            description: meta.description.unwrap_or_default(),
            image_digest: record.digest.clone(),
            layers: record.layers.clone(),
            defaults: EnvDefaults::of(&record),
            envid,
        };
        let text = serde_json::to_vec_pretty(&env).map_err(|e| EnvError::Corrupt {
            envid: env.envid.clone(),
            reason: e.to_string(),
        })?;
        // Written aside, then linked into place: link() refuses an existing name atomically.
        let tmp = self
            .dir
            .join(format!(".{}.{}.new", env.envid, std::process::id()));
        write_atomic(&tmp, &text)?;
        let linked = fs::hard_link(&tmp, self.json_path(&env.envid));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(env),
            Err(e) => {
                // Leave no unreferenced image behind.
                let _ = self.images.gc_locked(&held, &self.wanted_images()?);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Err(EnvError::AlreadyExists(env.envid))
                } else {
                    Err(io_err("write environment")(e))
                }
            }
        }
    }

    fn wanted_images(&self) -> Result<BTreeSet<String>, EnvError> {
        Ok(self.list()?.into_iter().map(|e| e.image_digest).collect())
    }

    /// Removes an environment, refused while a run holds it. Its image and layers go too,
    /// unless another environment (or a running `--image` run) still uses them.
    pub fn remove(&self, envid: &str) -> Result<(), EnvError> {
        Self::check_id(envid)?;
        let lock_path = self.lock_path(envid);
        let lock = FileLock::try_lock(&lock_path, LockKind::Exclusive)
            .map_err(io_err(lock_path.display().to_string()))?;
        let Some(lock) = lock else {
            return Err(EnvError::InUse(envid.to_string()));
        };
        let path = self.json_path(envid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::remove_file(&lock_path);
                return Err(EnvError::NotFound(envid.to_string()));
            }
            Err(e) => return Err(io_err(path.display().to_string())(e)),
        }
        let _ = fs::remove_file(&lock_path);
        drop(lock);
        let held = self.images.lock()?;
        self.images.gc_locked(&held, &self.wanted_images()?)?;
        Ok(())
    }

    /// Marks the environment in use until the lease is dropped (a shared flock: works across
    /// processes, and a crashed holder releases it).
    pub fn acquire(&self, envid: &str) -> Result<EnvLease, EnvError> {
        Self::check_id(envid)?;
        let lock_path = self.lock_path(envid);
        let env_lock = FileLock::lock(&lock_path, LockKind::Shared)
            .map_err(io_err(lock_path.display().to_string()))?;
        let env = match self.get(envid)? {
            Some(env) => env,
            None => {
                drop(env_lock);
                return Err(EnvError::NotFound(envid.to_string()));
            }
        };
        let image = self.images.lease(&env.image_digest)?;
        let mut layer_dirs = Vec::new();
        for layer in &env.layers {
            let dir = self.images.layer_path(layer)?;
            if !dir.is_dir() {
                return Err(EnvError::Corrupt {
                    envid: envid.to_string(),
                    reason: format!("layer {layer} is missing from the store"),
                });
            }
            layer_dirs.push(dir);
        }
        Ok(EnvLease {
            env,
            layer_dirs,
            _image: image,
            _env: Some(env_lock),
        })
    }
}

impl EnvLease {
    /// Builds a lease for an image that is not an environment (`sandpit run --image`).
    pub fn for_image(
        store: &ImageStore,
        record: &ImageRecord,
        image: ImageLease,
    ) -> Result<EnvLease, EnvError> {
        let mut layer_dirs = Vec::new();
        for layer in &record.layers {
            layer_dirs.push(store.layer_path(layer)?);
        }
        Ok(EnvLease {
            env: Environment {
                envid: String::new(),
                name: String::new(),
                authors: String::new(),
                description: String::new(),
                image_digest: record.digest.clone(),
                layers: record.layers.clone(),
                defaults: EnvDefaults::of(record),
            },
            layer_dirs,
            _image: image,
            _env: None,
        })
    }

    /// The root filesystem: the layer directories, lowest first.
    pub fn rootfs(&self) -> sandbox::RootFs {
        sandbox::RootFs::Layers(self.layer_dirs.clone())
    }

    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// What the environment contributes to a run (its image's Env, WorkingDir, User, Cmd).
    pub fn defaults(&self) -> Defaults {
        self.env.defaults.resolve(&self.layer_dirs)
    }
}
