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

use crate::image::lock::{FileLock, LockKind};
use crate::image::store::write_atomic;
use crate::image::{ImageError, ImageLease, ImageRecord, ImageStore, ImportLimits};

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

/// Defaults a run of the environment starts from; the caller's own settings come after.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct EnvDefaults {
    /// `KEY=VALUE`, from the image config's Env.
    pub env: Vec<String>,
    /// From the image config's WorkingDir.
    pub cwd: Option<String>,
    /// From the image config's User (`uid[:gid]` or names from the image's /etc/passwd).
    pub user: Option<String>,
    /// Entrypoint + Cmd: run when the caller gives no command.
    pub cmd: Vec<String>,
    pub limits: Option<sandbox::Limits>,
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

/// Checks an envid: `[a-z0-9][a-z0-9._-]{0,63}`. It is a file name in the store, so this is
/// a security check, not cosmetics.
pub fn valid_envid(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
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
        if valid_envid(envid) {
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
                if valid_envid(id) {
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
        let held = self.images.lock()?;
        let record = self.images.import_locked(&held, path)?;
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
            defaults: defaults_of(&record),
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

/// The defaults an image record implies.
pub fn defaults_of(record: &ImageRecord) -> EnvDefaults {
    EnvDefaults {
        env: record.env.clone(),
        cwd: record.cwd.clone(),
        user: record.user.clone(),
        cmd: record.cmd.clone(),
        limits: None,
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
                defaults: defaults_of(record),
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

    /// Applies the environment's defaults to a spec (call before the caller's own settings).
    pub fn apply_defaults(&self, spec: &mut sandbox::Spec) {
        apply_defaults(&self.env.defaults, &self.layer_dirs, spec);
    }
}

/// Applies defaults: env vars replace same-named ones, the command only fills an empty argv.
pub fn apply_defaults(d: &EnvDefaults, layer_dirs: &[PathBuf], spec: &mut sandbox::Spec) {
    for kv in &d.env {
        let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
        spec.env
            .retain(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) != key);
        spec.env.push(kv.clone());
    }
    if let Some(cwd) = d.cwd.as_deref().filter(|c| !c.is_empty()) {
        spec.cwd = Some(PathBuf::from(cwd));
    }
    if let Some(user) = d.user.as_deref().filter(|u| !u.is_empty()) {
        match resolve_user(user, layer_dirs) {
            Some((uid, gid)) => {
                spec.uid = uid;
                spec.gid = gid;
            }
            None => tracing::warn!(
                "image user '{user}' not found in the image; running as the default user"
            ),
        }
    }
    if spec.argv.is_empty() {
        spec.argv = d.cmd.clone();
    }
    if let Some(limits) = &d.limits {
        spec.limits = limits.clone();
    }
}

/// Resolves `user[:group]` (numbers, or names from the image's /etc/passwd and /etc/group).
pub fn resolve_user(user: &str, layer_dirs: &[PathBuf]) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_image_file(layer_dirs, "etc/passwd").unwrap_or_default();
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = lookup(&passwd, |f| f.get(2) == Some(&u))
                .and_then(|f| f.get(3).and_then(|g| g.parse().ok()));
            (uid, gid.unwrap_or(uid))
        }
        Err(_) => {
            let f = lookup(&passwd, |f| f.first() == Some(&u))?;
            (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)
        }
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_image_file(layer_dirs, "etc/group").unwrap_or_default();
                lookup(&group, |f| f.first() == Some(&g))?
                    .get(2)?
                    .parse()
                    .ok()?
            }
        },
    };
    Some((uid, gid))
}

fn lookup<'a>(text: &'a str, pred: impl Fn(&Vec<&'a str>) -> bool) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

/// Reads a file of the merged image: the topmost layer that has it decides (a whiteout or a
/// non-file there means "absent").
fn read_image_file(layer_dirs: &[PathBuf], rel: &str) -> Option<String> {
    for dir in layer_dirs.iter().rev() {
        let p = dir.join(rel);
        // Never through a symlink: an image's `etc -> /` would otherwise lead to the host's.
        let parent_ok = Path::new(rel)
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| match fs::symlink_metadata(dir.join(a)) {
                Ok(m) => m.is_dir(),
                Err(_) => true,
            });
        if !parent_ok {
            return None;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => return fs::read_to_string(&p).ok(),
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lookup_never_follows_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = dir.path().join("l");
        fs::create_dir_all(&layer).expect("mkdir");
        std::os::unix::fs::symlink("/", layer.join("etc")).expect("symlink");
        assert_eq!(resolve_user("root", std::slice::from_ref(&layer)), None);
        fs::remove_file(layer.join("etc")).expect("rm");
        fs::create_dir_all(layer.join("etc")).expect("mkdir");
        fs::write(layer.join("etc/passwd"), "app:x:4242:4343::/:/bin/sh\n").expect("write");
        fs::write(layer.join("etc/group"), "grp:x:77:\n").expect("write");
        assert_eq!(
            resolve_user("app", std::slice::from_ref(&layer)),
            Some((4242, 4343))
        );
        assert_eq!(
            resolve_user("app:grp", std::slice::from_ref(&layer)),
            Some((4242, 77))
        );
        assert_eq!(resolve_user("5:6", &[]), Some((5, 6)));
        assert_eq!(resolve_user("nobody-here", &[layer]), None);
    }

    #[test]
    fn envids() {
        for ok in [
            "python3",
            "c",
            "busybox",
            "a.b_c-d",
            "0abc",
            &"a".repeat(64),
        ] {
            assert!(valid_envid(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "..",
            "A",
            "a/b",
            "a b",
            &"a".repeat(65),
            "ä",
        ] {
            assert!(!valid_envid(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_apply_before_user_flags() {
        let d = EnvDefaults {
            env: vec!["PATH=/opt/bin".into(), "FOO=1".into()],
            cwd: Some("/app".into()),
            user: Some("1234:99".into()),
            cmd: vec!["/bin/true".into()],
            limits: None,
        };
        let mut spec = sandbox::Spec::new(sandbox::RootFs::Dir("/".into()), vec![]);
        apply_defaults(&d, &[], &mut spec);
        assert!(spec.env.contains(&"PATH=/opt/bin".to_string()));
        assert_eq!(
            spec.env.iter().filter(|e| e.starts_with("PATH=")).count(),
            1
        );
        assert_eq!(spec.cwd, Some(PathBuf::from("/app")));
        assert_eq!((spec.uid, spec.gid), (1234, 99));
        assert_eq!(spec.argv, vec!["/bin/true".to_string()]);
        let mut spec = sandbox::Spec::new(sandbox::RootFs::Dir("/".into()), vec!["x".into()]);
        apply_defaults(&d, &[], &mut spec);
        assert_eq!(spec.argv, vec!["x".to_string()]);
    }
}
