//! Reading an OCI image layout (a directory, or a tar of one as `docker save` and
//! `skopeo copy … oci-archive:` write it): index → manifest → config → layers. Every blob read
//! here is checked against its descriptor's digest and size. Nested indexes are walked with
//! bounded depth and document count, each distinct document once: the work is linear in the
//! layout's size, however often its documents reference each other.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::budget::{Budget, ImportLimits};
use super::digest::{classify, sha256_of, HashReader, Sha256};
use super::error::{ImageError, Limit, OverLimit, Result};
use super::tar_stream::read_entries;

/// One layer as the manifest and the config describe it.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// Digest of the blob as stored (compressed or not).
    pub blob: Sha256,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`): the store's key.
    pub diff_id: Sha256,
}

/// What an image layout holds, verified.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub manifest_digest: Sha256,
    pub config: ImageConfiguration,
    /// Lowest first.
    pub layers: Vec<LayerRef>,
}

/// Where a blob of a layout lives.
pub fn blob_path(layout: &Path, digest: &Sha256) -> PathBuf {
    layout.join("blobs").join("sha256").join(digest.hex())
}

/// Opens a blob, refusing a missing one with a clear error.
pub fn open_blob(layout: &Path, digest: &Sha256) -> Result<File> {
    let path = blob_path(layout, digest);
    match File::open(&path) {
        Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => Ok(f),
        Ok(_) => Err(ImageError::MissingBlob(digest.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ImageError::MissingBlob(digest.to_string()))
        }
        Err(e) => Err(ImageError::io(path.display().to_string(), e)),
    }
}

/// Reads a small blob whole (at most `max` bytes), verifying digest and size.
fn read_json_blob(layout: &Path, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
    let digest = Sha256::parse(desc.digest().as_ref())?;
    let too_large = || OverLimit {
        limit: Limit::DocumentBytes,
        max,
        what: format!("document {digest}"),
    };
    if desc.size() > max {
        return Err(too_large().into());
    }
    let file = open_blob(layout, &digest)?;
    let mut data = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| ImageError::io(format!("read {digest}"), e))?;
    if data.len() as u64 > max {
        return Err(too_large().into());
    }
    let actual = sha256_of(&data);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if data.len() as u64 != desc.size() {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            expected: desc.size(),
            actual: data.len() as u64,
        });
    }
    Ok(data)
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Whether a descriptor from an index is a manifest this host can run.
fn runnable(desc: &Descriptor) -> bool {
    match desc.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == host_arch(),
    }
}

fn is_index(media_type: &str) -> bool {
    media_type.contains("image.index") || media_type.contains("manifest.list")
}

/// The JSON documents read from one layout, counted against the limits.
struct DocumentReader<'a> {
    layout: &'a Path,
    limits: &'a ImportLimits,
    read: u64,
    /// Indexes already walked without finding a manifest: never walked again.
    dead_ends: HashSet<Sha256>,
}

impl DocumentReader<'_> {
    fn read(&mut self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.read += 1;
        if self.read > self.limits.max_documents {
            return Err(OverLimit {
                limit: Limit::Documents,
                max: self.limits.max_documents,
                what: "the documents read to find the image".into(),
            }
            .into());
        }
        read_json_blob(self.layout, desc, self.limits.max_document_bytes)
    }

    /// Finds the manifest to run: the first entry of the index (nested indexes followed) that
    /// is for linux on this architecture, or has no platform. `depth` is the index's own.
    fn pick_manifest(
        &mut self,
        index: &ImageIndex,
        depth: u64,
    ) -> Result<Option<(Sha256, ImageManifest)>> {
        for desc in index.manifests() {
            if !runnable(desc) {
                continue;
            }
            let digest = Sha256::parse(desc.digest().as_ref())?;
            if self.dead_ends.contains(&digest) {
                continue;
            }
            if is_index(desc.media_type().as_ref()) {
                if depth + 1 > self.limits.max_index_depth {
                    return Err(OverLimit {
                        limit: Limit::IndexDepth,
                        max: self.limits.max_index_depth,
                        what: format!("index {digest}"),
                    }
                    .into());
                }
                let data = self.read(desc)?;
                let inner = ImageIndex::from_reader(&data[..])
                    .map_err(|e| ImageError::InvalidLayout(format!("index {digest}: {e}")))?;
                if let Some(found) = self.pick_manifest(&inner, depth + 1)? {
                    return Ok(Some(found));
                }
                self.dead_ends.insert(digest);
                continue;
            }
            let data = self.read(desc)?;
            let manifest = ImageManifest::from_reader(&data[..])
                .map_err(|e| ImageError::InvalidLayout(format!("manifest {digest}: {e}")))?;
            return Ok(Some((digest, manifest)));
        }
        Ok(None)
    }
}

/// Reads and verifies the index, manifest and config of a layout directory. Layer blobs are
/// only checked for presence here; their digests are verified while they are unpacked.
pub fn read_layout(layout: &Path, limits: &ImportLimits) -> Result<ImageInfo> {
    let index_path = layout.join("index.json");
    let index_file = File::open(&index_path)
        .map_err(|e| ImageError::InvalidLayout(format!("{}: {e}", index_path.display())))?;
    let mut data = Vec::new();
    index_file
        .take(limits.max_document_bytes + 1)
        .read_to_end(&mut data)
        .map_err(|e| ImageError::io(index_path.display().to_string(), e))?;
    if data.len() as u64 > limits.max_document_bytes {
        return Err(OverLimit {
            limit: Limit::DocumentBytes,
            max: limits.max_document_bytes,
            what: "index.json".into(),
        }
        .into());
    }
    let index = ImageIndex::from_reader(&data[..])
        .map_err(|e| ImageError::InvalidLayout(format!("index.json: {e}")))?;
    let mut documents = DocumentReader {
        layout,
        limits,
        read: 0,
        dead_ends: HashSet::new(),
    };
    let (manifest_digest, manifest) = documents
        .pick_manifest(&index, 0)?
        .ok_or(ImageError::NoManifest)?;
    let config_data = documents.read(manifest.config())?;
    let config = ImageConfiguration::from_reader(&config_data[..])
        .map_err(|e| ImageError::InvalidLayout(format!("config: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::InvalidLayout(format!(
            "the manifest has {} layers, the config {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let media_type = desc.media_type().to_string();
        if !(media_type.contains("layer") || media_type.contains("rootfs.diff")) {
            return Err(ImageError::UnsupportedMediaType(media_type));
        }
        let blob = Sha256::parse(desc.digest().as_ref())?;
        open_blob(layout, &blob)?;
        layers.push(LayerRef {
            blob,
            size: desc.size(),
            media_type,
            diff_id: Sha256::parse(diff_id)?,
        });
    }
    Ok(ImageInfo {
        manifest_digest,
        config,
        layers,
    })
}

/// Wraps a reader in the decompressor its first bytes call for (gzip, zstd, or none).
pub fn decompress<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::new(reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| classify("layer", e))?
        .to_vec();
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = ruzstd::decoding::StreamingDecoder::new(buffered)
            .map_err(|e| ImageError::Corrupt(format!("zstd: {e}")))?;
        Ok(Box::new(dec))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Extracts the parts of an image-layout tar that matter (index.json, oci-layout and
/// blobs/sha256/<hex>) into `dest`. Everything else is skipped, so nothing in the archive can
/// choose where a file lands. The archive, compressed and not, is metered against `budget`.
pub fn extract_layout_tar(archive: &Path, dest: &Path, budget: &Budget) -> Result<()> {
    let file = File::open(archive).map_err(|e| ImageError::io(archive.display().to_string(), e))?;
    let stored = file
        .metadata()
        .map_err(|e| ImageError::io(archive.display().to_string(), e))?
        .len();
    budget.ensure_room(stored)?;
    let max = budget.limits().max_blob_bytes;
    let reader = budget.archive(decompress(HashReader::capped(file, Limit::BlobBytes, max))?);
    let blobs = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| ImageError::io(blobs.display().to_string(), e))?;
    read_entries(reader, "image archive", budget, |entry| {
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_start_matches("./");
        let target = match name {
            "index.json" | "oci-layout" => dest.join(name),
            _ => match name.strip_prefix("blobs/sha256/") {
                Some(hex) => match Sha256::parse(&format!("sha256:{hex}")) {
                    Ok(d) => blobs.join(d.hex()),
                    Err(_) => return Ok(()),
                },
                None => return Ok(()),
            },
        };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .map_err(|e| ImageError::io(target.display().to_string(), e))?;
        let size = entry.size();
        let copied = io::copy(entry, &mut out).map_err(|e| classify("image archive", e))?;
        if copied != size {
            return Err(ImageError::Truncated(format!(
                "{name}: {copied} of {size} bytes"
            )));
        }
        Ok(())
    })
}
