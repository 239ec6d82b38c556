//! Environments (temporary stand-in on branch `server`): the same API as the images branch's
//! `src/env.rs`, which replaces this file when it is merged. Environments live in
//! `DATA/environments/<envid>/environment.json`; import takes a directory that already holds a
//! root filesystem (the images branch imports OCI layouts and archives).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("no environment '{0}'")]
    NotFound(String),
    #[error("environment '{0}' already exists")]
    AlreadyExists(String),
    #[error("environment '{0}' is in use")]
    InUse(String),
    #[error("invalid environment id '{0}'")]
    InvalidId(String),
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvDefaults {
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub envid: String,
    pub name: String,
    pub authors: String,
    pub description: String,
    pub image_digest: String,
    pub layers: Vec<String>,
    pub defaults: EnvDefaults,
    #[serde(default)]
    rootfs_dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct NewEnvironment {
    pub envid: Option<String>,
    pub name: Option<String>,
    pub authors: Option<String>,
    pub description: Option<String>,
}

pub struct EnvStore {
    dir: PathBuf,
    in_use: Arc<Mutex<HashMap<String, usize>>>,
}

pub struct EnvLease {
    env: Environment,
    in_use: Arc<Mutex<HashMap<String, usize>>>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'+')
        && !id.starts_with('.')
}

impl EnvStore {
    pub fn open(data_dir: &Path) -> Result<EnvStore, EnvError> {
        let dir = data_dir.join("environments");
        std::fs::create_dir_all(&dir)?;
        Ok(EnvStore {
            dir,
            in_use: Arc::default(),
        })
    }

    pub fn list(&self) -> Result<Vec<Environment>, EnvError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(env) = self.get(&name)? {
                out.push(env);
            }
        }
        out.sort_by(|a, b| a.envid.cmp(&b.envid));
        Ok(out)
    }

    pub fn get(&self, envid: &str) -> Result<Option<Environment>, EnvError> {
        if !valid_id(envid) {
            return Ok(None);
        }
        match std::fs::read(self.dir.join(envid).join("environment.json")) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn import(&self, path: &Path, meta: NewEnvironment) -> Result<Environment, EnvError> {
        if !path.join("bin").is_dir() {
            return Err(EnvError::InvalidImage(
                "this build imports root filesystem directories only".into(),
            ));
        }
        let envid = meta.envid.unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if !valid_id(&envid) {
            return Err(EnvError::InvalidId(envid));
        }
        let dir = self.dir.join(&envid);
        if dir.exists() {
            return Err(EnvError::AlreadyExists(envid));
        }
        std::fs::create_dir_all(&dir)?;
        let env = Environment {
            name: meta.name.unwrap_or_else(|| envid.clone()),
            envid,
            authors: meta.authors.unwrap_or_default(),
            description: meta.description.unwrap_or_default(),
            image_digest: String::new(),
            layers: Vec::new(),
            defaults: EnvDefaults::default(),
            rootfs_dir: std::fs::canonicalize(path)?,
        };
        let json = serde_json::to_vec_pretty(&env).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("environment.json"), json)?;
        Ok(env)
    }

    pub fn remove(&self, envid: &str) -> Result<(), EnvError> {
        if self.get(envid)?.is_none() {
            return Err(EnvError::NotFound(envid.to_string()));
        }
        let in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if in_use.get(envid).copied().unwrap_or(0) > 0 {
            return Err(EnvError::InUse(envid.to_string()));
        }
        std::fs::remove_dir_all(self.dir.join(envid))?;
        Ok(())
    }

    pub fn acquire(&self, envid: &str) -> Result<EnvLease, EnvError> {
        let env = self
            .get(envid)?
            .ok_or_else(|| EnvError::NotFound(envid.to_string()))?;
        *self
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(envid.to_string())
            .or_default() += 1;
        Ok(EnvLease {
            env,
            in_use: self.in_use.clone(),
        })
    }
}

impl EnvLease {
    pub fn rootfs(&self) -> sandbox::RootFs {
        sandbox::RootFs::Dir(self.env.rootfs_dir.clone())
    }

    pub fn environment(&self) -> &Environment {
        &self.env
    }

    pub fn apply_defaults(&self, spec: &mut sandbox::Spec) {
        for kv in &self.env.defaults.env {
            spec.env.push(kv.clone());
        }
        if let Some(cwd) = &self.env.defaults.cwd {
            spec.cwd = Some(cwd.clone());
        }
    }
}

impl Drop for EnvLease {
    fn drop(&mut self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_use.get_mut(&self.env.envid) {
            *n = n.saturating_sub(1);
        }
    }
}
