//! The blobs on disk: named by their SHA-256, written whole through `tmp/` (synced, then
//! renamed into place, so a blob is never seen half written), in root-only directories.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub(super) fn is_sha256(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` as a new file in `tmp` with `mode`, synced, then renames it to `dest`.
pub(super) fn write_blob(tmp: &Path, dest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let part = tmp.join(uuid::Uuid::new_v4().simple().to_string());
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&part, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written
}

/// Copies the blob `from` to `dest` with `mode`, through a file in `tmp`.
pub(super) fn copy_blob(tmp: &Path, from: &Path, dest: &Path, mode: u32) -> std::io::Result<()> {
    let part = tmp.join(uuid::Uuid::new_v4().simple().to_string());
    let copied = (|| {
        std::fs::copy(from, &part)?;
        let f = std::fs::File::open(&part)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&part, dest)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    copied
}
