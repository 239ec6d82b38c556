//! Files kept by reference: a compiled program kept once and run on a hundred inputs without
//! ever passing through the client again.
//!
//! An execution lists outputs to `keep`; after its run each becomes a **file**: an id, an
//! owner (the key that ran it), a size, a name and an expiry, over a **blob** that holds the
//! bytes, named by their SHA-256 and shared by every file with the same content. A later
//! execution names the file as an input (`{"file_id": …}`); the sandbox sees the blob
//! read-only at that path, bound by the core (`sandbox::FileSource::Bind`), never copied.
//!
//! ```text
//! DATA/files/               0700, root only
//!   sha256/<hex>            the blob, r-xr-xr-x (how a sandbox sees it by default)
//!   sha256/<hex>.ro         the same bytes r--r--r--, made when a reference asks for no x bit
//!   tmp/                    blobs being written (emptied at start)
//! ```
//!
//! Rules (for the API and for the grading pipeline, which uses the same calls):
//! - Only the owner (or the master token) can see, use, download or delete a file; to anyone
//!   else, and once expired, it does not exist (`NotFound`).
//! - Each key may keep at most `max_files` files at once (a server-wide setting,
//!   [`FileConfig`]), and their bytes count against the key's storage quota
//!   (`max_storage_bytes`, the one quota of everything a key keeps on disk: its executions and
//!   its files; see `exec::admission`). The master token has no quota. An execution that asks
//!   to keep files is refused at creation when its key is already at a quota
//!   (`OverCountQuota`, `OverQuota`); a file that does not fit when its run ends is not kept,
//!   and the result says why, path by path ([`Kept::Refused`]).
//! - A key's files are owned by its id (`key:<id>`): deleting the key deletes them.
//! - An execution reads the content a file had when the execution was accepted: the blobs it
//!   references are kept until it has ended, even if their files are deleted or expire
//!   meanwhile.
//! - A sweeper removes expired files every `sweep_every`, and every blob nothing needs.
//!
//! Every change of rows and blobs together happens under one lock ([`FileStore::hold`]), so a
//! blob is never removed between the check that nothing needs it and its unlink, nor while an
//! execution that will read it is being recorded.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, MutexGuard};

use crate::auth::Principal;
use crate::clock::Micros;
use crate::error::{blocking, Error, Result};
use crate::exec::request::{FileRef, NewFileRef};
use crate::exec::result::Kept;
use crate::ids::{new_file_id, valid_file_id};
use crate::store::{FileRow, Store};

mod blob;

use blob::{copy_blob, hex, is_sha256, private_dir, write_blob};

/// The file store's settings (`sandpit serve --file-…`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileConfig {
    /// How long a kept file lives.
    pub ttl: Duration,
    /// Most files a key keeps at once (`None`: no limit). Their bytes count against the key's
    /// storage quota (`max_storage_bytes`), given to [`FileStore::keep`] as a [`Room`].
    pub max_files: Option<u64>,
    /// How often expired files and unneeded blobs are removed.
    pub sweep_every: Duration,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            ttl: Duration::from_secs(86_400),
            max_files: Some(1000),
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// A file to keep, as a run left it.
#[derive(Debug, Clone)]
pub struct KeepItem {
    /// The path as the caller named it.
    pub path: String,
    /// The bytes, or why they could not be read back (a symlink, too large, missing).
    pub bytes: std::result::Result<Vec<u8>, String>,
}

/// What a key's storage quota leaves for the files a run keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Bytes left.
    pub left: u64,
    /// The quota, and whose it is (for the message).
    pub max: u64,
    pub whose: String,
}

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: usize,
    pub blobs: usize,
}

/// Proof that the store's lock is held: the calls that change rows and blobs together take it.
pub struct Held<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

pub struct FileStore {
    root: PathBuf,
    store: Arc<dyn Store>,
    cfg: FileConfig,
    lock: Mutex<()>,
}

fn quota_count_message(n: i64, max: u64) -> String {
    format!(
        "this API key keeps {n} file(s) and may keep at most {max} (the server's --file-max-count): \
         delete some (DELETE /api/v1/files/{{id}}) or let them expire"
    )
}

fn quota_bytes_message(room: &Room, size: usize) -> String {
    format!(
        "this API key may keep at most {} bytes on the server ({}), executions and kept files \
         together; {} are left and this file has {size}: delete files (DELETE \
         /api/v1/files/{{id}}) or executions it no longer needs",
        room.max, room.whose, room.left
    )
}

impl FileStore {
    /// Opens (or creates) the store in `root` (`DATA/files`), root only; forgets writes a crash
    /// left half done.
    pub fn open(root: PathBuf, store: Arc<dyn Store>, cfg: FileConfig) -> std::io::Result<Self> {
        private_dir(&root)?;
        private_dir(&root.join("sha256"))?;
        let _ = std::fs::remove_dir_all(root.join("tmp"));
        private_dir(&root.join("tmp"))?;
        Ok(FileStore {
            root,
            store,
            cfg,
            lock: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &FileConfig {
        &self.cfg
    }

    /// Takes the store's lock (see the module docs).
    pub async fn hold(&self) -> Held<'_> {
        Held(self.lock.lock().await)
    }

    /// The blob as a sandbox sees it: `r-xr-xr-x`, or `r--r--r--` when not `executable`.
    pub fn blob_path(&self, sha256: &str, executable: bool) -> PathBuf {
        let name = if executable {
            sha256.to_string()
        } else {
            format!("{sha256}.ro")
        };
        self.root.join("sha256").join(name)
    }

    /// A live file the principal owns (the master token: any); `NotFound` otherwise.
    pub async fn get(&self, who: &Principal, id: &str) -> Result<FileRow> {
        let missing = || {
            Error::NotFound(format!(
                "no file '{id}' (it may have expired or been deleted)"
            ))
        };
        if !valid_file_id(id) {
            return Err(missing());
        }
        who.seen(self.store.get_file(id, Micros::now()).await?)
            .ok_or_else(missing)
    }

    /// Live files, newest first: a key's own, or everyone's for the master token.
    pub async fn list(
        &self,
        who: &Principal,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FileRow>, i64)> {
        let owner = who.listed_owner();
        Ok(self
            .store
            .list_files(owner.as_deref(), Micros::now(), limit, offset)
            .await?)
    }

    /// A file's bytes, to stream: opened now, so a delete that follows cannot cut it short.
    pub async fn open_blob(&self, row: &FileRow) -> Result<tokio::fs::File> {
        if !is_sha256(&row.sha256) {
            return Err(Error::Internal(format!(
                "file '{}' names a damaged blob",
                row.id
            )));
        }
        tokio::fs::File::open(self.blob_path(&row.sha256, true))
            .await
            .map_err(|e| Error::Internal(format!("the blob of file '{}': {e}", row.id)))
    }

    /// Deletes a file the principal owns; its blob goes when nothing else needs it.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<FileRow> {
        let row = self.get(who, id).await?;
        let held = self.hold().await;
        let row = self
            .store
            .delete_file(&row.id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no file '{id}'")))?;
        self.collect_blob(&held, &row.sha256).await?;
        Ok(row)
    }

    /// Deletes every file of `owner` (its key is gone); returns how many.
    pub async fn remove_owner(&self, owner: &str) -> Result<usize> {
        let held = self.hold().await;
        let rows = self.store.delete_files_of(owner).await?;
        let blobs: BTreeSet<&str> = rows.iter().map(|r| r.sha256.as_str()).collect();
        for sha in blobs {
            self.collect_blob(&held, sha).await?;
        }
        Ok(rows.len())
    }

    /// Refuses a new execution that asks to keep files when its key already keeps as many
    /// files as it may (its bytes are the storage quota's business: `exec::admission`).
    pub async fn check_room(&self, who: &Principal) -> Result<()> {
        if who.is_master() {
            return Ok(());
        }
        let (n, _) = self.store.file_usage(&who.owner(), Micros::now()).await?;
        if let Some(max) = self.cfg.max_files {
            if n >= i64::try_from(max).unwrap_or(i64::MAX) {
                return Err(Error::OverCountQuota(quota_count_message(n, max)));
            }
        }
        Ok(())
    }

    /// At start: the files of keys that no longer exist go (a key's deletion a crash
    /// interrupted); their blobs go with the first sweep. Returns how many files.
    pub async fn recover(&self) -> Result<usize> {
        let orphans = {
            let _held = self.hold().await;
            self.store.delete_orphaned_files().await?.len()
        };
        if orphans > 0 {
            tracing::warn!("erased {orphans} kept file(s) of deleted API keys");
        }
        Ok(orphans)
    }

    /// Resolves inputs by reference for a new execution of `who`: each file must be live and
    /// the principal's (`NotFound` otherwise), and its blob is made ready in the permission
    /// bits asked for. Hold the lock until the execution is recorded (its blobs are then
    /// kept until it ends).
    pub async fn resolve(
        &self,
        _held: &Held<'_>,
        who: &Principal,
        refs: &[NewFileRef],
    ) -> Result<Vec<FileRef>> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let row = self.get(who, &r.file_id).await.map_err(|e| match e {
                Error::NotFound(m) => Error::NotFound(format!("files['{}']: {m}", r.path)),
                e => e,
            })?;
            if !is_sha256(&row.sha256) {
                return Err(Error::Internal(format!(
                    "file '{}' names a damaged blob",
                    row.id
                )));
            }
            let executable = !matches!(r.mode, Some(m) if m & 0o111 == 0);
            if !executable {
                let (from, to, tmp) = (
                    self.blob_path(&row.sha256, true),
                    self.blob_path(&row.sha256, false),
                    self.root.join("tmp"),
                );
                blocking(move || {
                    if !to.exists() {
                        copy_blob(&tmp, &from, &to, 0o444)?;
                    }
                    Ok(())
                })
                .await?;
            }
            out.push(FileRef {
                path: r.path.to_string(),
                file_id: row.id,
                sha256: row.sha256,
                executable,
            });
        }
        Ok(out)
    }

    /// Keeps what a run of `execution` left, for `owner` (`room`: within the key's quotas,
    /// less what is kept; `None` for the master token). One answer per item, in order.
    pub async fn keep(
        &self,
        owner: &str,
        mut room: Option<&mut Room>,
        execution: &str,
        items: Vec<KeepItem>,
    ) -> Vec<Kept> {
        let held = self.hold().await;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let kept = match item.bytes {
                Err(why) => Kept::Refused { error: why },
                Ok(bytes) => match self
                    .keep_one(
                        &held,
                        owner,
                        room.as_deref_mut(),
                        execution,
                        &item.path,
                        bytes,
                    )
                    .await
                {
                    Ok(kept) => kept,
                    Err(e) => Kept::Refused {
                        error: e.to_string(),
                    },
                },
            };
            out.push(kept);
        }
        out
    }

    async fn keep_one(
        &self,
        held: &Held<'_>,
        owner: &str,
        room: Option<&mut Room>,
        execution: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<Kept> {
        let now = Micros::now();
        let size = bytes.len();
        if let Some(room) = &room {
            let (n, _) = self.store.file_usage(owner, now).await?;
            if let Some(max) = self.cfg.max_files {
                if u64::try_from(n).unwrap_or(0) >= max {
                    return Err(Error::OverCountQuota(quota_count_message(n, max)));
                }
            }
            if size as u64 > room.left {
                return Err(Error::OverQuota(quota_bytes_message(room, size)));
            }
        }
        let sha256 = hex(&Sha256::digest(&bytes));
        let (dest, tmp) = (self.blob_path(&sha256, true), self.root.join("tmp"));
        blocking(move || {
            // Content-addressed: the same bytes are stored once.
            if !dest.exists() {
                write_blob(&tmp, &dest, &bytes, 0o555)?;
            }
            Ok(())
        })
        .await?;
        let ttl = i64::try_from(self.cfg.ttl.as_micros()).unwrap_or(i64::MAX);
        let row = FileRow {
            id: new_file_id(),
            owner: owner.to_string(),
            sha256: sha256.clone(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            name: path.to_string(),
            execution_id: Some(execution.to_string()),
            created_at: now,
            expires_at: Micros(now.0.saturating_add(ttl)),
        };
        match self.store.insert_file(&row).await {
            Ok(true) => {}
            Ok(false) => {
                self.collect_blob(held, &sha256).await?;
                return Err(Error::Unauthorized("the API key was deleted".into()));
            }
            Err(e) => {
                self.collect_blob(held, &sha256).await?;
                return Err(e.into());
            }
        }
        if let Some(room) = room {
            room.left -= size as u64;
        }
        Ok(Kept::File {
            file_id: row.id,
            size: size as u64,
            sha256,
            expires_at: row.expires_at.0,
        })
    }

    /// Removes a blob (both forms) when nothing needs it any more.
    async fn collect_blob(&self, _held: &Held<'_>, sha256: &str) -> Result<bool> {
        if !is_sha256(sha256) || self.store.blob_in_use(sha256, Micros::now()).await? {
            return Ok(false);
        }
        let paths = [self.blob_path(sha256, true), self.blob_path(sha256, false)];
        blocking(move || {
            for p in paths {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(())
        })
        .await?;
        Ok(true)
    }

    /// Removes expired files, then every blob nothing needs.
    pub async fn sweep(&self) -> Result<Swept> {
        let held = self.hold().await;
        let files = self.store.delete_expired_files(Micros::now()).await?.len();
        let dir = self.root.join("sha256");
        let names = blocking(move || {
            let mut names = BTreeSet::new();
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                names.insert(name.trim_end_matches(".ro").to_string());
            }
            Ok(names)
        })
        .await?;
        let mut blobs = 0;
        for sha in names {
            if self.collect_blob(&held, &sha).await? {
                blobs += 1;
            }
        }
        Ok(Swept { files, blobs })
    }

    /// Sweeps now, then every `sweep_every`, for as long as the process runs.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let files = self.clone();
        tokio::spawn(async move {
            loop {
                match files.sweep().await {
                    Ok(s) if s != Swept::default() => tracing::info!(
                        "file store: removed {} expired file(s), {} blob(s)",
                        s.files,
                        s.blobs
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("file store sweep: {e}"),
                }
                tokio::time::sleep(files.cfg.sweep_every).await;
            }
        });
    }
}

#[cfg(test)]
mod tests;
