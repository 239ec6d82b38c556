//! The content-addressed store in the data directory:
//!
//! ```text
//! DATA/layers/sha256/<diff_id hex>/   one unpacked layer (shared by every image that has it)
//! DATA/layers/tmp/                    layers being unpacked (renamed into place when
//!                                     complete), image archives being read
//! DATA/images/<manifest hex>.json     an imported image: its layers and config defaults
//! DATA/images/<manifest hex>.lock     held (shared) while a run uses the image
//! DATA/.store.lock                    held (exclusive) by import and garbage collection
//! ```
//!
//! Layers are not refcounted by counters that could drift: garbage collection keeps exactly
//! the layers named by the image records that are still wanted or in use.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::digest::{classify, HashReader, Sha256};
use super::error::{ImageError, Result};
use super::layout::{self, ImageInfo, LayerRef};
use super::lock::{FileLock, LockKind};
use super::unpack::unpack_layer;

/// Size limits for imports.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Largest uncompressed layer.
    pub max_layer_bytes: u64,
    /// Largest blob or image archive as stored.
    pub max_blob_bytes: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_layer_bytes: 8 << 30,
            max_blob_bytes: 8 << 30,
        }
    }
}

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

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes a directory when dropped, unless disarmed.
struct TempDir(Option<PathBuf>);

impl TempDir {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

fn mkdirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| ImageError::io(format!("mkdir {}", path.display()), e))
}

impl ImageStore {
    /// Opens (creating what is missing) the store under `data`.
    pub fn open(data: &Path, limits: ImportLimits) -> Result<ImageStore> {
        mkdirs(data)?;
        // Absolute: layer paths go to the sandbox core as overlay lower dirs.
        let data =
            fs::canonicalize(data).map_err(|e| ImageError::io(data.display().to_string(), e))?;
        let store = ImageStore { data, limits };
        for dir in [
            store.layers_dir(),
            store.data.join("layers/tmp"),
            store.images_dir(),
        ] {
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

    /// Takes the store-wide lock that serialises imports and garbage collection.
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

    /// Imports an image layout (directory or tar) and returns its record. The caller holds
    /// the store lock (`lock()`). An image already in the store is only re-read (index and
    /// manifest), not unpacked again. On failure nothing new stays in the store.
    pub fn import_locked(&self, _held: &FileLock, source: &Path) -> Result<ImageRecord> {
        let meta =
            fs::metadata(source).map_err(|e| ImageError::io(source.display().to_string(), e))?;
        let mut extracted = TempDir(None);
        let layout_dir = if meta.is_dir() {
            source.to_path_buf()
        } else {
            let tmp = self.data.join("layers/tmp").join(unique("archive"));
            mkdirs(&tmp)?;
            extracted = TempDir(Some(tmp));
            layout::extract_layout_tar(source, extracted.path(), self.limits.max_blob_bytes)?;
            extracted.path().to_path_buf()
        };
        let info = layout::read_layout(&layout_dir)?;
        if let Some(record) = self.record(&info.manifest_digest)? {
            let all_there = record
                .layers
                .iter()
                .all(|l| self.layer_path(l).map(|p| p.is_dir()).unwrap_or(false));
            if all_there {
                return Ok(record);
            }
        }
        let mut created: Vec<PathBuf> = Vec::new();
        let result = self.import_layers(&layout_dir, &info, &mut created);
        if result.is_err() {
            // Roll back: layers this import added and no image record names.
            let wanted: BTreeSet<String> =
                self.images()?.into_iter().flat_map(|r| r.layers).collect();
            for dir in created {
                let key = dir
                    .file_name()
                    .map(|n| format!("sha256:{}", n.to_string_lossy()));
                if key.map(|k| !wanted.contains(&k)).unwrap_or(false) {
                    self.remove_layer_dir(&dir);
                }
            }
        }
        result?;
        let record = record_of(&info);
        let path = self.record_path(&info.manifest_digest);
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&record).map_err(|e| ImageError::Corrupt(e.to_string()))?,
        )?;
        drop(extracted);
        Ok(record)
    }

    fn import_layers(
        &self,
        layout_dir: &Path,
        info: &ImageInfo,
        created: &mut Vec<PathBuf>,
    ) -> Result<()> {
        for layer in &info.layers {
            if let Some(dir) = self.ensure_layer(layout_dir, layer)? {
                created.push(dir);
            }
        }
        Ok(())
    }

    /// Makes sure a layer is unpacked in the store; returns its directory when this call
    /// created it. The blob is verified against its digest either way.
    fn ensure_layer(&self, layout_dir: &Path, layer: &LayerRef) -> Result<Option<PathBuf>> {
        if layer.size > self.limits.max_blob_bytes {
            return Err(ImageError::TooLarge {
                what: format!("layer {}", layer.blob),
                limit: self.limits.max_blob_bytes,
            });
        }
        let final_dir = self.layers_dir().join(layer.diff_id.hex());
        let file = layout::open_blob(layout_dir, &layer.blob)?;
        let mut raw = HashReader::new(file, self.limits.max_blob_bytes, "layer blob");
        let mut unpacked_into = None;
        if final_dir.is_dir() {
            // Already stored: still verify this image's blob.
            io::copy(&mut raw, &mut io::sink())
                .map_err(|e| classify(&format!("layer {}", layer.blob), e))?;
        } else {
            let mut tmp = TempDir(Some(
                self.data
                    .join("layers/tmp")
                    .join(unique(layer.diff_id.hex())),
            ));
            mkdirs(tmp.path())?;
            let diff = {
                let mut plain = HashReader::new(
                    layout::decompress(&mut raw)?,
                    self.limits.max_layer_bytes,
                    "uncompressed layer",
                );
                let limit = self.limits.max_layer_bytes;
                unpack_layer(&mut plain, tmp.path()).map_err(|e| {
                    // The limit error may come back wrapped by the tar reader: go by the count.
                    if plain.count() > limit {
                        ImageError::TooLarge {
                            what: format!("uncompressed layer {}", layer.blob),
                            limit,
                        }
                    } else {
                        e
                    }
                })?;
                plain
                    .finish()
                    .map_err(|e| classify(&format!("layer {}", layer.blob), e))?
                    .0
            };
            if diff != layer.diff_id {
                self.check_blob(layer, raw)?;
                return Err(ImageError::DiffIdMismatch {
                    layer: layer.blob.to_string(),
                    expected: layer.diff_id.to_string(),
                    actual: diff.to_string(),
                });
            }
            self.check_blob(layer, raw)?;
            match fs::rename(tmp.path(), &final_dir) {
                Ok(()) => {
                    tmp.disarm();
                    unpacked_into = Some(final_dir);
                }
                // Someone else stored it meanwhile: theirs is as good as ours.
                Err(_) if final_dir.is_dir() => {}
                Err(e) => return Err(ImageError::io(format!("store layer {}", layer.diff_id), e)),
            }
            return Ok(unpacked_into);
        }
        self.check_blob(layer, raw)?;
        Ok(unpacked_into)
    }

    fn check_blob(&self, layer: &LayerRef, raw: HashReader<File>) -> Result<()> {
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

    /// Removes a layer directory: renamed aside first, so a crash half-way never leaves a
    /// partial layer under its real name.
    fn remove_layer_dir(&self, dir: &Path) {
        let aside = self.data.join("layers/tmp").join(unique("gc"));
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
        let tmp = self.data.join("layers/tmp");
        for name in list_names(&tmp)? {
            let _ = fs::remove_dir_all(tmp.join(name));
        }
        Ok(())
    }
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

fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ImageError::io(dir.display().to_string(), e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| ImageError::io(dir.display().to_string(), e))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

/// Writes a file so that readers see the old or the new content, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(unique("tmp"));
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ImageError::io(path.display().to_string(), e)
    })
}
