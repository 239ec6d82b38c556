//! Who is asking: the master token or an API key, from `Authorization: Bearer …` or
//! `?access_token=…`. 401 without a token or with an unknown one; 403 is the routes' call.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hyper::header::{HeaderMap, AUTHORIZATION};
use sha2::{Digest, Sha256};

use super::errors::{ApiError, ApiResult};
use super::App;
use crate::store::ApiKeyRow;

pub enum Principal {
    Master,
    Key(ApiKeyRow),
}

impl Principal {
    /// The owner recorded on executions: `master` or `key:<name>` (a key can't be `master`).
    pub fn owner(&self) -> String {
        match self {
            Principal::Master => "master".into(),
            Principal::Key(k) => format!("key:{}", k.name),
        }
    }

    pub fn require_master(&self, what: &str) -> ApiResult<()> {
        match self {
            Principal::Master => Ok(()),
            Principal::Key(_) => Err(ApiError::forbidden(format!(
                "only the master token may {what}"
            ))),
        }
    }

    /// May this principal see an execution owned by `owner`?
    pub fn may_see(&self, owner: &str) -> bool {
        match self {
            Principal::Master => true,
            Principal::Key(_) => self.owner() == owner,
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

fn token_from(headers: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Some(t) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            return Some(t.trim().to_string());
        }
    }
    query
        .iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.clone())
}

pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> ApiResult<Principal> {
    let token = token_from(headers, query).ok_or_else(|| {
        ApiError::unauthorized(
            "no token: send 'Authorization: Bearer TOKEN' or '?access_token=TOKEN'",
        )
    })?;
    if same_secret(&token, &app.master_token) {
        return Ok(Principal::Master);
    }
    match app.store.api_key_by_hash(&hash_token(&token)).await? {
        Some(key) => Ok(Principal::Key(key)),
        None => Err(ApiError::unauthorized("the token is not valid")),
    }
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
