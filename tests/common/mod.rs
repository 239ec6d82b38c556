//! Helpers shared by the integration tests: crafting layer tars and OCI image layouts.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sandpit::image::digest::sha256_of;

/// One entry of a crafted layer. Paths are written raw (no validation), so tests can craft
/// hostile archives that `tar::Builder`'s own helpers would refuse to write.
pub enum Entry {
    File(&'static str, Vec<u8>, u32),
    /// A file with its owner: name, content, mode, uid, gid.
    Owned(&'static str, Vec<u8>, u32, u64, u64),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
    HardLink(&'static str, &'static str),
    Char(&'static str, u32, u32),
    Fifo(&'static str),
}

fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name.fill(0);
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let gnu = h.as_gnu_mut().expect("gnu header");
    gnu.linkname.fill(0);
    gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
}

/// A layer tar (uncompressed) holding the entries.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::File(name, data, mode) => {
                let mut h = header(name, tar::EntryType::Regular, data.len() as u64, *mode);
                h.set_cksum();
                b.append(&h, &data[..]).expect("append");
            }
            Entry::Owned(name, data, mode, uid, gid) => {
                let mut h = header(name, tar::EntryType::Regular, data.len() as u64, *mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_cksum();
                b.append(&h, &data[..]).expect("append");
            }
            Entry::Dir(name) => {
                let mut h = header(name, tar::EntryType::Directory, 0, 0o755);
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Symlink(name, target) | Entry::HardLink(name, target) => {
                let kind = if matches!(e, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(name, kind, 0, 0o777);
                set_link(&mut h, target);
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Char(name, major, minor) => {
                let mut h = header(name, tar::EntryType::Char, 0, 0o666);
                h.set_device_major(*major).expect("major");
                h.set_device_minor(*minor).expect("minor");
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
            Entry::Fifo(name) => {
                let mut h = header(name, tar::EntryType::Fifo, 0, 0o644);
                h.set_cksum();
                b.append(&h, &[][..]).expect("append");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// A layer tar of a whole directory (symlinks kept as symlinks).
pub fn layer_of_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("tar of dir");
    b.into_inner().expect("tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// Writes a blob into a layout's `blobs/sha256/` and returns its descriptor fields.
pub fn put_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir blobs");
    let d = sha256_of(data).to_string();
    fs::write(blobs.join(hex(&d)), data).expect("write blob");
    (d, data.len())
}

/// How a crafted layout should lie, for the hostile cases.
#[derive(Default, Clone)]
pub struct Craft {
    /// Write the blob of this layer (index) with different content than its digest says.
    pub corrupt_layer: Option<usize>,
    /// Leave this layer's blob out of the layout.
    pub missing_layer: Option<usize>,
    pub gzip: bool,
    /// zstd-compress the layers instead.
    pub zstd: bool,
    /// The layers are given as blobs already (e.g. a cut gzip stream), stored as they are.
    pub blobs_as_is: bool,
    /// The config's diff_ids, when not the digests of the given layers (blobs given as is).
    pub diff_ids: Vec<String>,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: Option<String>,
}

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// Writes an OCI image layout with the given layers (uncompressed tars, lowest first) into
/// `dir` and returns the manifest digest.
pub fn write_layout(dir: &Path, layers: &[Vec<u8>], craft: &Craft) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir blobs");
    let put = |data: &[u8]| -> String {
        let d = sha256_of(data).to_string();
        fs::write(blobs.join(hex(&d)), data).expect("write blob");
        d
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, tar) in layers.iter().enumerate() {
        diff_ids.push(
            craft
                .diff_ids
                .get(i)
                .cloned()
                .unwrap_or_else(|| sha256_of(tar).to_string()),
        );
        let blob = if craft.blobs_as_is {
            tar.clone()
        } else if craft.zstd {
            zstd(tar)
        } else if craft.gzip {
            gzip(tar)
        } else {
            tar.clone()
        };
        let d = sha256_of(&blob).to_string();
        if craft.missing_layer != Some(i) {
            let mut content = blob.clone();
            if craft.corrupt_layer == Some(i) {
                let n = content.len();
                content[n / 2] ^= 0xff;
            }
            fs::write(blobs.join(hex(&d)), &content).expect("write layer");
        }
        let media = if craft.zstd {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else if craft.gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        descs.push(serde_json::json!({"mediaType": media, "digest": d, "size": blob.len()}));
    }
    let mut cfg = serde_json::json!({"Env": craft.env});
    if !craft.cmd.is_empty() {
        cfg["Cmd"] = serde_json::json!(craft.cmd);
    }
    if let Some(w) = &craft.workdir {
        cfg["WorkingDir"] = serde_json::json!(w);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len()}],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    manifest_digest
}

/// A tar of a whole layout directory (what `docker save` / `skopeo … oci-archive:` give).
pub fn tar_of_layout(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).expect("create"));
    b.append_dir_all(".", dir).expect("tar");
    b.finish().expect("tar");
}

/// Everything under a directory, as sorted relative paths (to compare store states).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            // Lock files are created on demand and carry no content.
            if rel.ends_with(".lock") {
                continue;
            }
            out.push(rel);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The busybox rootfs the Makefile builds (`SANDPIT_TEST_ROOTFS`).
pub fn busybox_rootfs() -> PathBuf {
    let dir = std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map(PathBuf::from)
        .expect("SANDPIT_TEST_ROOTFS is not set: run the tests with `make test` (it builds the busybox rootfs)");
    assert!(
        dir.join("bin/busybox").is_file(),
        "SANDPIT_TEST_ROOTFS={} has no bin/busybox: run `make rootfs`",
        dir.display()
    );
    dir
}

/// The data directory holding the shipped environments (`SANDPIT_TEST_DATA`).
pub fn shipped_data() -> PathBuf {
    let dir = std::env::var_os("SANDPIT_TEST_DATA")
        .map(PathBuf::from)
        .expect("SANDPIT_TEST_DATA is not set: run the tests with `make test` (`make rootfs` imports the environments)");
    for env in ["busybox", "python3", "c"] {
        assert!(
            dir.join("envs").join(format!("{env}.json")).is_file(),
            "environment '{env}' is missing from SANDPIT_TEST_DATA={}: run `make rootfs`",
            dir.display()
        );
    }
    dir
}

pub fn sandpit() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_sandpit"))
}
