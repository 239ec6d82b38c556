//! Unpacking an uploaded archive (a project, a submission's files) into a fresh directory:
//! a tar (plain, gzip'd or zstd'd) or a zip, told apart by their first bytes, never by a
//! name or a media type. Nothing in it is trusted, and both formats go through the same
//! rules ([`Unpacker`]): only regular files and directories are made, each path is a
//! [`RelPath`] below the destination (no absolute path, no `..`), nothing is written twice
//! or through a link (no link is ever made), modes keep only the permission bits, and the
//! number of entries and the bytes written are bounded — a zip's declared sizes are checked
//! before anything is written and its real output is counted as it is written, so a zip
//! bomb stops at the bound.

use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sandbox::RelPath;
use tar::EntryType;

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

/// A zip starts with a local file header, or (empty) with the end of its central directory.
fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

/// Unpacks `reader` (a tar or a zip) into `dest` (an existing directory); returns how many
/// files it made.
pub fn unpack(
    mut reader: impl Read + Seek,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<usize, String> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the archive: {e}")),
        }
    }
    reader
        .rewind()
        .map_err(|e| format!("reading the archive: {e}"))?;
    let mut out = Unpacker {
        dest,
        limits,
        entries: 0,
        bytes: 0,
        files: 0,
    };
    if is_zip(&head[..got]) {
        unpack_zip(reader, &mut out)?;
    } else {
        unpack_tar(reader, &mut out)?;
    }
    Ok(out.files)
}

fn unpack_tar(reader: impl Read, out: &mut Unpacker) -> Result<(), String> {
    let reader =
        crate::image::layout::decompress(reader).map_err(|e| format!("the archive: {e}"))?;
    let mut archive = tar::Archive::new(reader);
    let bad = |e: io::Error| format!("the archive is not a readable tar or zip: {e}");
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        out.count()?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = entry_path(&raw)? else {
            continue;
        };
        let mode = entry.header().mode().unwrap_or(0o644);
        match kind {
            EntryType::Directory => out.dir(&rel)?,
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                out.file(&rel, mode, &mut entry, size)?;
            }
            other => return Err(refused(&rel, tar_kind(other))),
        }
    }
    Ok(())
}

/// What a tar entry that is not a file or a directory is.
fn tar_kind(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Symlink => "symbolic link",
        EntryType::Link => "hard link",
        EntryType::Char | EntryType::Block => "device",
        EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

/// What a zip entry's Unix mode says it is, when not a file or a directory.
fn zip_kind(mode: u32) -> Option<&'static str> {
    match mode & libc::S_IFMT {
        0 | libc::S_IFREG | libc::S_IFDIR => None,
        libc::S_IFLNK => Some("symbolic link"),
        libc::S_IFCHR | libc::S_IFBLK => Some("device"),
        libc::S_IFIFO => Some("FIFO"),
        libc::S_IFSOCK => Some("socket"),
        _ => Some("special entry"),
    }
}

fn refused(rel: &RelPath, what: &str) -> String {
    format!(
        "the archive's entry '{rel}' is a {what}: only regular files and directories are accepted"
    )
}

fn unpack_zip(reader: impl Read + Seek, out: &mut Unpacker) -> Result<(), String> {
    let bad = |e: zip::result::ZipError| format!("the archive is not a readable zip: {e}");
    let mut archive = zip::ZipArchive::new(reader).map_err(bad)?;
    if archive.len() > out.limits.max_entries {
        return Err(out.too_many());
    }
    // Everything the central directory declares is checked before anything is written.
    let mut declared = 0u64;
    for i in 0..archive.len() {
        let e = archive.by_index_data(i).map_err(bad)?;
        let name = String::from_utf8_lossy(e.name_raw()).into_owned();
        let Some(rel) = entry_path(&name)? else {
            continue;
        };
        if e.is_symlink() {
            return Err(refused(&rel, "symbolic link"));
        }
        if let Some(what) = e.unix_mode().and_then(zip_kind) {
            return Err(refused(&rel, what));
        }
        if e.encrypted() {
            return Err(format!(
                "the archive's entry '{rel}' is encrypted: send it unencrypted"
            ));
        }
        let method = e.compression();
        if !e.is_dir()
            && !matches!(
                method,
                zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated
            )
        {
            return Err(format!(
                "the archive's entry '{rel}' is compressed with {method}: only stored and \
                 deflated entries are read"
            ));
        }
        declared = declared.saturating_add(e.size());
        if declared > out.limits.max_bytes {
            return Err(out.too_big());
        }
    }
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad)?;
        out.count()?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let Some(rel) = entry_path(&name)? else {
            continue;
        };
        if entry.is_dir() {
            out.dir(&rel)?;
        } else {
            let mode = entry.unix_mode().unwrap_or(0o644);
            let size = entry.size();
            out.file(&rel, mode, &mut entry, size)?;
        }
    }
    Ok(())
}

/// An entry's path below the destination; `None` for the archive's root itself (`./`).
fn entry_path(raw: &str) -> Result<Option<RelPath>, String> {
    let trimmed = raw.trim_start_matches("./");
    if trimmed.is_empty() || trimmed == "." {
        return Ok(None);
    }
    RelPath::parse(trimmed)
        .map(Some)
        .map_err(|e| format!("the archive: {e}"))
}

/// What an archive's entries become on disk, the same for every format; counts what it made.
struct Unpacker<'a> {
    dest: &'a Path,
    limits: UnpackLimits,
    entries: usize,
    bytes: u64,
    files: usize,
}

impl Unpacker<'_> {
    fn too_many(&self) -> String {
        format!(
            "the archive has more than {} entries",
            self.limits.max_entries
        )
    }

    fn too_big(&self) -> String {
        format!(
            "the archive unpacks to more than {} bytes",
            self.limits.max_bytes
        )
    }

    /// Counts one more entry.
    fn count(&mut self) -> Result<(), String> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.too_many());
        }
        Ok(())
    }

    /// Makes `rel`'s directories below the destination, one component at a time, never
    /// through a link.
    fn dir(&self, rel: &RelPath) -> Result<(), String> {
        let mut at = self.dest.to_path_buf();
        for part in rel.as_path().components() {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => {
                    return Err(format!(
                        "the archive holds '{rel}' as a file and a directory"
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("unpacking '{rel}': {e}")),
            }
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&at)
                .and_then(|()| fs::set_permissions(&at, fs::Permissions::from_mode(0o755)))
                .map_err(|e| format!("unpacking '{rel}': {e}"))?;
        }
        Ok(())
    }

    /// Writes a new regular file of `size` declared bytes from `data`; what it really holds
    /// counts against the bound, whatever it declared.
    fn file(&mut self, rel: &RelPath, mode: u32, data: impl Read, size: u64) -> Result<(), String> {
        if let Some(parent) = rel.as_path().parent() {
            if !parent.as_os_str().is_empty() {
                self.dir(&RelPath::new(parent).map_err(|e| e.to_string())?)?;
            }
        }
        let room = self.limits.max_bytes.saturating_sub(self.bytes);
        if size > room {
            return Err(self.too_big());
        }
        // Only the permission bits, and readable by everyone whatever the umask: the
        // sandbox's user reads a project's files through read-only binds.
        let mode = (mode & 0o777) | 0o644;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dest.join(rel))
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    format!("the archive holds '{rel}' twice (or as a file and a directory)")
                }
                _ => format!("unpacking '{rel}': {e}"),
            })?;
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| format!("unpacking '{rel}': {e}"))?;
        // One byte past the room tells a liar from an entry that fits.
        let copied = io::copy(&mut data.take(room.saturating_add(1)), &mut out)
            .map_err(|e| format!("the archive: '{rel}': {e}"))?;
        if copied > room {
            return Err(self.too_big());
        }
        self.bytes += copied;
        if copied != size {
            return Err(format!(
                "the archive's entry '{rel}' holds {copied} bytes but declares {size} (cut short or forged)"
            ));
        }
        self.files += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    const LIMITS: UnpackLimits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    fn tar_of(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o4755);
            // Written raw: set_path refuses the hostile names these tests need.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if *kind == EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_and_directories_unpack_with_plain_modes() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("./a/", EntryType::Directory, b""),
            ("./a/b.txt", EntryType::Regular, b"hello"),
            ("c/d/e", EntryType::Regular, b"x"),
        ]);
        assert_eq!(
            unpack(Cursor::new(&tar[..]), dir.path(), LIMITS).unwrap(),
            2
        );
        assert_eq!(fs::read(dir.path().join("a/b.txt")).unwrap(), b"hello");
        let mode = fs::metadata(dir.path().join("c/d/e"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "setuid dropped");
        // gzip'd too.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar_of(&[("z", EntryType::Regular, b"1")])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            unpack(Cursor::new(gz.finish().unwrap()), dir.path(), LIMITS).unwrap(),
            1
        );
    }

    #[test]
    fn hostile_archives_are_refused() {
        type Entries<'a> = &'a [(&'a str, EntryType, &'a [u8])];
        let cases: &[(Entries, &str)] = &[
            (&[("../x", EntryType::Regular, b"1")], "leaves"),
            (&[("/etc/x", EntryType::Regular, b"1")], "leaves"),
            (&[("l", EntryType::Symlink, b"")], "symbolic link"),
            (&[("d", EntryType::Char, b"")], "device"),
            (
                &[
                    ("a", EntryType::Regular, b"1"),
                    ("a", EntryType::Regular, b"2"),
                ],
                "twice",
            ),
            (
                &[
                    ("a", EntryType::Regular, b"1"),
                    ("a/b", EntryType::Regular, b"2"),
                ],
                "file and a directory",
            ),
        ];
        for (entries, word) in cases {
            let dir = tempfile::tempdir().unwrap();
            let e = unpack(Cursor::new(tar_of(entries)), dir.path(), LIMITS).unwrap_err();
            assert!(e.contains(word), "{entries:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; 2 << 20];
        let e = unpack(
            Cursor::new(tar_of(&[("big", EntryType::Regular, &big)])),
            dir.path(),
            LIMITS,
        )
        .unwrap_err();
        assert!(e.contains("more than"), "{e}");
        let many: Vec<(String, EntryType, &[u8])> = (0..101)
            .map(|i| (format!("f{i}"), EntryType::Regular, &b""[..]))
            .collect();
        let many: Vec<(&str, EntryType, &[u8])> =
            many.iter().map(|(p, k, d)| (p.as_str(), *k, *d)).collect();
        let dir = tempfile::tempdir().unwrap();
        assert!(unpack(Cursor::new(tar_of(&many)), dir.path(), LIMITS)
            .unwrap_err()
            .contains("entries"));
        let garbage = [b'x'; 600];
        assert!(unpack(
            Cursor::new(&garbage[..]),
            tempfile::tempdir().unwrap().path(),
            LIMITS
        )
        .is_err());
    }

    /// A zip of files (deflated) and of entries made by `extra`.
    fn zip_of(
        files: &[(&str, &[u8])],
        extra: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>),
    ) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in files {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(0o4755))
                .unwrap();
            w.write_all(data).unwrap();
        }
        extra(&mut w);
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn zips_unpack_like_tars() {
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_of(&[("a/b.txt", b"hello"), ("c", b"x")], |w| {
            w.add_directory("d/", SimpleFileOptions::default()).unwrap();
        });
        assert_eq!(unpack(Cursor::new(zip), dir.path(), LIMITS).unwrap(), 2);
        assert_eq!(fs::read(dir.path().join("a/b.txt")).unwrap(), b"hello");
        assert!(dir.path().join("d").is_dir());
        let mode = fs::metadata(dir.path().join("c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "setuid dropped");
    }

    #[test]
    fn hostile_zips_are_refused() {
        let opts = SimpleFileOptions::default;
        let link = zip_of(&[], |w| w.add_symlink("l", "/etc/passwd", opts()).unwrap());
        let traversal = zip_of(&[("../x", b"1")], |_| {});
        let absolute = zip_of(&[("/etc/x", b"1")], |_| {});
        let many = zip_of(&[], |w| {
            for i in 0..101 {
                w.start_file(format!("f{i}"), opts()).unwrap();
            }
        });
        // 2 MiB of zeros deflate to a few KiB: refused by what it declares.
        let bomb = zip_of(&[("z", &vec![0u8; 2 << 20])], |_| {});
        for (zip, word) in [
            (link, "symbolic link"),
            (traversal, "leaves"),
            (absolute, "leaves"),
            (many, "entries"),
            (bomb, "more than"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let e = unpack(Cursor::new(zip), dir.path(), LIMITS).unwrap_err();
            assert!(e.contains(word), "{word}: {e}");
        }
    }
}
