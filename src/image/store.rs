//! The content-addressed store in the data directory:
//!
//! ```text
//! DATA/layers/sha256/<diff_id hex>/   one unpacked layer (shared by every image that has it)
//! DATA/layers/tmp/import.<…>/         one import's private staging directory (the image
//!                                     archive's contents, the layers it unpacks), flocked
//!                                     while the import lives
//! DATA/images/<manifest hex>.json     an imported image: its layers and config defaults
//! DATA/images/<manifest hex>.lock     held (shared) while a run uses the image
//! DATA/.store.lock                    held (exclusive) to commit an import, and by garbage
//!                                     collection
//! ```
//!
//! An import reads, unpacks and verifies everything in its staging directory without the
//! store lock (imports of different images run in parallel), then takes the lock only to
//! rename the layers into place and write the record.
//!
//! Everything under `DATA/layers/` is owned by root and writable by root only (see
//! `unpack`): the image's modes and owners would let host users change what sandboxes run.
//!
//! Layers are not refcounted by counters that could drift: garbage collection keeps exactly
//! the layers named by the image records that are still wanted or in use.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::budget::{Budget, ImportLimits};
use super::digest::{classify, HashReader, Sha256};
use super::error::{ImageError, Limit, OverLimit, Result};
use super::layout::{self, ImageInfo, LayerRef};
use super::lock::{FileLock, LockKind};
pub use super::staging::write_atomic;
use super::staging::{list_names, mkdirs, unique, Staging};
use super::unpack::{self, unpack_layer};

/// How often an import retries when a collection (which does not wait for imports) removed
/// its fresh staging directory, or a layer it had found in the store before it could commit
/// (each retry unpacks the missing layers, without the lock, first).
pub(super) const COMMIT_ATTEMPTS: usize = 3;

/// What the store keeps about an imported image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// diff_ids of the layers, lowest first (the store's keys).
    pub layers: Vec<String>,
    /// Defaults from the image config.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// Entrypoint followed by Cmd.
    pub cmd: Vec<String>,
}

/// Keeps an image (and so its layers) from being collected while a run uses it.
#[derive(Debug)]
pub struct ImageLease {
    _lock: FileLock,
}

/// The layer and image store under a data directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    data: PathBuf,
    limits: ImportLimits,
}

impl ImageStore {
    /// Opens (creating what is missing) the store under `data`.
    pub fn open(data: &Path, limits: ImportLimits) -> Result<ImageStore> {
        mkdirs(data)?;
        // Absolute: layer paths go to the sandbox core as overlay lower dirs.
        let data =
            fs::canonicalize(data).map_err(|e| ImageError::io(data.display().to_string(), e))?;
        let store = ImageStore { data, limits };
        for dir in [store.layers_dir(), store.tmp_dir(), store.images_dir()] {
            mkdirs(&dir)?;
        }
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    fn layers_dir(&self) -> PathBuf {
        self.data.join("layers").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.data.join("layers").join("tmp")
    }

    fn images_dir(&self) -> PathBuf {
        self.data.join("images")
    }

    /// The directory of an unpacked layer (`sha256:…` diff_id).
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.layers_dir().join(Sha256::parse(diff_id)?.hex()))
    }

    fn record_path(&self, digest: &Sha256) -> PathBuf {
        self.images_dir().join(format!("{}.json", digest.hex()))
    }

    fn image_lock_path(&self, digest: &Sha256) -> PathBuf {
        self.images_dir().join(format!("{}.lock", digest.hex()))
    }

    /// Takes the store-wide lock that serialises commits of imports and garbage collection.
    pub fn lock(&self) -> Result<FileLock> {
        let path = self.data.join(".store.lock");
        FileLock::lock(&path, LockKind::Exclusive)
            .map_err(|e| ImageError::io(path.display().to_string(), e))
    }

    /// Digests of the layers present in the store.
    pub fn stored_layers(&self) -> Result<BTreeSet<String>> {
        list_names(&self.layers_dir())
            .map(|names| names.into_iter().map(|h| format!("sha256:{h}")).collect())
    }

    /// The records of every imported image.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for name in list_names(&self.images_dir())? {
            if let Some(hex) = name.strip_suffix(".json") {
                if let Ok(d) = Sha256::parse(&format!("sha256:{hex}")) {
                    if let Some(r) = self.record(&d)? {
                        out.push(r);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The record of one image, if imported.
    pub fn record(&self, digest: &Sha256) -> Result<Option<ImageRecord>> {
        let path = self.record_path(digest);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| ImageError::InvalidLayout(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io(path.display().to_string(), e)),
        }
    }

    /// Marks an image as in use until the lease is dropped.
    pub fn lease(&self, digest: &str) -> Result<ImageLease> {
        let d = Sha256::parse(digest)?;
        let path = self.image_lock_path(&d);
        let lock = FileLock::lock(&path, LockKind::Shared)
            .map_err(|e| ImageError::io(path.display().to_string(), e))?;
        Ok(ImageLease { _lock: lock })
    }

    /// Imports an image layout (directory or tar) and returns its record with the store lock
    /// still held, so the caller can tie the image to what keeps it (an environment, a run's
    /// lease) before a collection can find it unused. Reading the archive and unpacking and
    /// verifying layers happen in a private staging directory without the lock; the lock is
    /// taken only to move the layers into place and write the record. Layers already in the
    /// store are not unpacked again (their blobs are still verified, unless the image itself
    /// is already imported). On failure nothing new stays in the store.
    pub fn import(&self, source: &Path) -> Result<(FileLock, ImageRecord)> {
        let meta =
            fs::metadata(source).map_err(|e| ImageError::io(source.display().to_string(), e))?;
        let staging = Staging::create(&self.tmp_dir())?;
        let budget = Budget::new(self.limits, &staging.path);
        let layout_dir = if meta.is_dir() {
            source.to_path_buf()
        } else {
            let dir = staging.path.join("archive");
            unpack::mkdir(&dir)?;
            layout::extract_layout_tar(source, &dir, &budget)?;
            dir
        };
        let info = layout::read_layout(&layout_dir, &self.limits)?;
        let imported = self.record(&info.manifest_digest)?.is_some();
        let mut staged: BTreeMap<Sha256, PathBuf> = BTreeMap::new();
        let mut verified: BTreeSet<Sha256> = BTreeSet::new();
        for _ in 0..COMMIT_ATTEMPTS {
            let todo = self.missing_layers(&info, &staged);
            if !todo.is_empty() {
                budget.ensure_room(todo.iter().map(|l| l.size).sum())?;
            }
            for layer in todo {
                let dir = self.stage_layer(&layout_dir, layer, &staging.path, &budget)?;
                staged.insert(layer.diff_id.clone(), dir);
                verified.insert(layer.blob.clone());
            }
            // The other blobs are checked too, though their layers are in the store already.
            if !imported {
                for layer in &info.layers {
                    if verified.insert(layer.blob.clone()) {
                        self.verify_blob(&layout_dir, layer)?;
                    }
                }
            }
            let held = self.lock()?;
            if self.missing_layers(&info, &staged).is_empty() {
                let record = self.commit_locked(&held, &info, &staged)?;
                return Ok((held, record));
            }
            // A collection removed a layer this import had found stored: unpack it too.
        }
        Err(ImageError::io(
            "commit the import",
            io::Error::other("the store's layers kept being collected while importing"),
        ))
    }

    /// The image's layers that are neither in the store nor staged, each once.
    fn missing_layers<'i>(
        &self,
        info: &'i ImageInfo,
        staged: &BTreeMap<Sha256, PathBuf>,
    ) -> Vec<&'i LayerRef> {
        let mut seen = BTreeSet::new();
        info.layers
            .iter()
            .filter(|l| !staged.contains_key(&l.diff_id))
            .filter(|l| !self.layers_dir().join(l.diff_id.hex()).is_dir())
            .filter(|l| seen.insert(l.diff_id.clone()))
            .collect()
    }

    /// Unpacks one layer into the staging directory and verifies it (diff_id and blob digest).
    fn stage_layer(
        &self,
        layout_dir: &Path,
        layer: &LayerRef,
        staging: &Path,
        budget: &Budget,
    ) -> Result<PathBuf> {
        let max_blob = self.limits.max_blob_bytes;
        if layer.size > max_blob {
            return Err(OverLimit {
                limit: Limit::BlobBytes,
                max: max_blob,
                what: format!("layer {}", layer.blob),
            }
            .into());
        }
        let dir = staging.join(layer.diff_id.hex());
        unpack::mkdir(&dir)?;
        let file = layout::open_blob(layout_dir, &layer.blob)?;
        let mut raw = HashReader::capped(file, Limit::BlobBytes, max_blob);
        let context = format!("layer {}", layer.blob);
        let diff = {
            let mut plain =
                HashReader::new(budget.layer(layout::decompress(&mut raw)?, layer.size));
            unpack_layer(&mut plain, &dir, budget).map_err(|e| match e {
                ImageError::OverLimit(o) => ImageError::OverLimit(OverLimit {
                    what: format!("{context} ({})", o.what),
                    ..o
                }),
                other => other,
            })?;
            plain.finish().map_err(|e| classify(&context, e))?.0
        };
        if diff != layer.diff_id {
            check_blob(layer, raw)?;
            return Err(ImageError::DiffIdMismatch {
                layer: layer.blob.to_string(),
                expected: layer.diff_id.to_string(),
                actual: diff.to_string(),
            });
        }
        check_blob(layer, raw)?;
        Ok(dir)
    }

    /// Verifies the blob of a layer that is already in the store.
    fn verify_blob(&self, layout_dir: &Path, layer: &LayerRef) -> Result<()> {
        let file = layout::open_blob(layout_dir, &layer.blob)?;
        check_blob(
            layer,
            HashReader::capped(file, Limit::BlobBytes, self.limits.max_blob_bytes),
        )
    }

    /// Moves the staged layers into place (a layer someone else stored meanwhile is as good
    /// as ours) and writes the record. On failure, the layers it moved go again.
    fn commit_locked(
        &self,
        _held: &FileLock,
        info: &ImageInfo,
        staged: &BTreeMap<Sha256, PathBuf>,
    ) -> Result<ImageRecord> {
        let mut moved = Vec::new();
        let record = record_of(info);
        let mut commit = || -> Result<()> {
            for (diff_id, dir) in staged {
                let final_dir = self.layers_dir().join(diff_id.hex());
                if final_dir.is_dir() {
                    continue;
                }
                fs::rename(dir, &final_dir)
                    .map_err(|e| ImageError::io(format!("store layer {diff_id}"), e))?;
                moved.push(final_dir);
            }
            if self.record(&info.manifest_digest)?.as_ref() != Some(&record) {
                let text = serde_json::to_vec_pretty(&record)
                    .map_err(|e| ImageError::Corrupt(e.to_string()))?;
                write_atomic(&self.record_path(&info.manifest_digest), &text)?;
            }
            Ok(())
        };
        let result = commit();
        if let Err(e) = result {
            let wanted: BTreeSet<String> =
                self.images()?.into_iter().flat_map(|r| r.layers).collect();
            for dir in moved {
                let key = dir
                    .file_name()
                    .map(|n| format!("sha256:{}", n.to_string_lossy()));
                if key.map(|k| !wanted.contains(&k)).unwrap_or(false) {
                    self.remove_layer_dir(&dir);
                }
            }
            return Err(e);
        }
        Ok(record)
    }

    /// Removes a layer directory: renamed aside first, so a crash half-way never leaves a
    /// partial layer under its real name.
    fn remove_layer_dir(&self, dir: &Path) {
        let aside = self.tmp_dir().join(unique("gc"));
        if fs::rename(dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }

    /// Garbage collection (the caller holds the store lock): drops image records that are
    /// neither in `keep` nor in use, then layers no remaining image names, then leftovers of
    /// interrupted imports.
    pub fn gc_locked(&self, _held: &FileLock, keep: &BTreeSet<String>) -> Result<()> {
        let mut wanted = BTreeSet::new();
        for record in self.images()? {
            let d = Sha256::parse(&record.digest)?;
            let in_use = match FileLock::try_lock(&self.image_lock_path(&d), LockKind::Exclusive) {
                Ok(Some(_free)) => false,
                Ok(None) => true,
                Err(e) => return Err(ImageError::io("image lock", e)),
            };
            if keep.contains(&record.digest) || in_use {
                wanted.extend(record.layers);
                continue;
            }
            let _ = fs::remove_file(self.record_path(&d));
            let _ = fs::remove_file(self.image_lock_path(&d));
        }
        for layer in self.stored_layers()? {
            if !wanted.contains(&layer) {
                self.remove_layer_dir(&self.layer_path(&layer)?);
            }
        }
        // Leftovers of interrupted imports; a live import holds its staging directory's lock.
        let tmp = self.tmp_dir();
        for name in list_names(&tmp)? {
            let path = tmp.join(name);
            match FileLock::on_dir(&path, LockKind::Exclusive, true) {
                Ok(Some(_unused)) => {
                    let _ = fs::remove_dir_all(&path);
                }
                Ok(None) => {}
                Err(_) => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }
}

/// Reads the rest of a layer blob and checks it against its descriptor.
fn check_blob(layer: &LayerRef, raw: HashReader<File>) -> Result<()> {
    let (digest, size) = raw
        .finish()
        .map_err(|e| classify(&format!("layer {}", layer.blob), e))?;
    if digest != layer.blob {
        return Err(ImageError::DigestMismatch {
            expected: layer.blob.to_string(),
            actual: digest.to_string(),
        });
    }
    if size != layer.size {
        return Err(ImageError::SizeMismatch {
            digest: layer.blob.to_string(),
            expected: layer.size,
            actual: size,
        });
    }
    Ok(())
}

fn record_of(info: &ImageInfo) -> ImageRecord {
    let cfg = info.config.config().clone().unwrap_or_default();
    let mut cmd = cfg.entrypoint().clone().unwrap_or_default();
    cmd.extend(cfg.cmd().clone().unwrap_or_default());
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    ImageRecord {
        digest: info.manifest_digest.to_string(),
        layers: info.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        env: cfg.env().clone().unwrap_or_default(),
        cwd: non_empty(cfg.working_dir()),
        user: non_empty(cfg.user()),
        cmd,
    }
}
