//! Who is asking, and the API keys: the master token or an API key (of which only a SHA-256
//! is stored). Where the token comes from (a header, the query) is the HTTP layer's business.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::ids::valid_key_name;
use crate::store::{ApiKeyRow, ApiKeys};

pub enum Principal {
    Master,
    Key(Box<ApiKeyRow>),
}

/// A key's own maxima and quotas; `None` leaves the server's (`exec::admission::Policy`),
/// which also bounds every value here. The master token has none of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quota {
    pub max_memory: Option<u64>,
    /// Seconds, for CPU and wall time alike.
    pub max_time: Option<f64>,
    /// Executions queued or running at once.
    pub max_executions: Option<u64>,
    pub max_pids: Option<u64>,
    /// Bytes of stdout and of stderr (each), and of each output file.
    pub max_output_bytes: Option<u64>,
    /// Executions created and not yet started.
    pub max_pending: Option<u64>,
    /// Input files per execution.
    pub max_files: Option<u64>,
    /// Bytes kept on disk by all of the key's executions.
    pub max_storage_bytes: Option<u64>,
}

/// The owner recorded on the master token's executions.
pub const MASTER_OWNER: &str = "master";

/// The owner recorded on a key's executions: its id, never its name (a name can be reused
/// after a delete; an id never is). The store matches keys with `'key:' || id`.
pub fn key_owner(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// Something a principal owns (an execution, a submission, a kept file).
pub trait Owned {
    /// `master` or `key:<key id>`.
    fn owner(&self) -> &str;
}

impl Principal {
    /// The owner recorded on executions: `master` or `key:<key id>`.
    pub fn owner(&self) -> String {
        match self {
            Principal::Master => MASTER_OWNER.into(),
            Principal::Key(k) => key_owner(&k.id),
        }
    }

    pub fn is_master(&self) -> bool {
        matches!(self, Principal::Master)
    }

    /// May this principal see an execution owned by `owner`?
    pub fn may_see(&self, owner: &str) -> bool {
        match self {
            Principal::Master => true,
            Principal::Key(_) => self.owner() == owner,
        }
    }

    /// What a lookup found, as this principal sees it: another key's is not there (a key's
    /// things do not exist for other keys).
    pub fn seen<T: Owned>(&self, found: Option<T>) -> Option<T> {
        found.filter(|t| self.may_see(t.owner()))
    }

    /// Whose things a listing shows: the key's own, or everyone's (`None`) for the master
    /// token.
    pub fn listed_owner(&self) -> Option<String> {
        (!self.is_master()).then(|| self.owner())
    }

    /// May create, replace and delete projects: the master token, and keys allowed to.
    pub fn may_manage_projects(&self) -> bool {
        match self {
            Principal::Master => true,
            Principal::Key(k) => k.manage_projects,
        }
    }

    /// The key's own maxima and quotas (none for the master token).
    pub fn quota(&self) -> Quota {
        match self {
            Principal::Master => Quota::default(),
            Principal::Key(k) => k.quota,
        }
    }
}

pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh secret: 244 random bits from two v4 UUIDs.
pub fn new_token(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares without an early exit, so the time taken says nothing about the master token.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The principal a token stands for; `Unauthorized` without a token or with an unknown one.
pub async fn authenticate(
    keys: &dyn ApiKeys,
    master_token: &str,
    token: Option<&str>,
) -> Result<Principal> {
    let token = token.ok_or_else(|| {
        Error::Unauthorized(
            "no token: send 'Authorization: Bearer TOKEN' or '?access_token=TOKEN'".into(),
        )
    })?;
    if same_secret(token, master_token) {
        return Ok(Principal::Master);
    }
    match keys.api_key_by_hash(&hash_token(token)).await? {
        Some(key) => Ok(Principal::Key(Box::new(key))),
        None => Err(Error::Unauthorized("the token is not valid".into())),
    }
}

/// A new API key as asked for (values already checked by the parser).
pub struct NewApiKey {
    pub name: String,
    pub quota: Quota,
    /// May create, replace and delete projects.
    pub manage_projects: bool,
}

/// Creates an API key; returns it and its secret, which is never stored and never shown again.
pub async fn create_key(keys: &dyn ApiKeys, new: NewApiKey) -> Result<(ApiKeyRow, String)> {
    if !valid_key_name(&new.name) {
        return Err(Error::Invalid(
            "'name' must be 1-64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let token = new_token("apikey_");
    let row = ApiKeyRow {
        id: format!("key_{}", uuid::Uuid::new_v4().simple()),
        name: new.name,
        token_hash: hash_token(&token),
        quota: new.quota,
        manage_projects: new.manage_projects,
        created_at: Micros::now(),
    };
    if !keys.insert_api_key(&row).await? {
        return Err(Error::AlreadyExists(format!(
            "an API key named '{}' already exists",
            row.name
        )));
    }
    Ok((row, token))
}

/// Deletes the key (it stops authenticating at once). Its executions are the caller's to
/// erase (`exec::Service::erase_owned`).
pub async fn delete_key(keys: &dyn ApiKeys, name: &str) -> Result<ApiKeyRow> {
    keys.delete_api_key(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no API key named '{name}'")))
}

/// The master token: `SANDPIT_MASTER_TOKEN` when set, else the one in `DATA/master_token`,
/// created (mode 0600) on first start. Returns the token and, when it was just created, the
/// file it was saved in (so the caller prints it once).
pub fn master_token(data: &Path) -> std::io::Result<(String, Option<PathBuf>)> {
    if let Ok(token) = std::env::var("SANDPIT_MASTER_TOKEN") {
        if !token.trim().is_empty() {
            return Ok((token.trim().to_string(), None));
        }
    }
    let path = data.join("master_token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok((token.trim().to_string(), None)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = new_token("master_");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok((token, Some(path)))
}
