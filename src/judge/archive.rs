//! Unpacking an uploaded tar (a project, a submission's files; gzip'd, zstd'd or plain) into a
//! fresh directory. Nothing in it is trusted: only regular files and directories are made,
//! each path is a [`RelPath`] below the destination (no absolute path, no `..`), nothing is
//! written twice or through a link (no link is ever made), modes keep only the permission
//! bits, and the number of entries and the bytes written are bounded.

use std::fs;
use std::io::{self, Read};
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

/// Unpacks `reader` into `dest` (an existing directory); returns how many files it made.
pub fn unpack(reader: impl Read, dest: &Path, limits: UnpackLimits) -> Result<usize, String> {
    let reader =
        crate::image::layout::decompress(reader).map_err(|e| format!("the archive: {e}"))?;
    let mut archive = tar::Archive::new(reader);
    let bad = |e: io::Error| format!("the archive is not a readable tar: {e}");
    let (mut files, mut count, mut bytes) = (0usize, 0usize, 0u64);
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
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        count += 1;
        if count > limits.max_entries {
            return Err(format!(
                "the archive has more than {} entries",
                limits.max_entries
            ));
        }
        let trimmed = raw.trim_start_matches("./");
        if trimmed.is_empty() || trimmed == "." {
            continue;
        }
        let rel = RelPath::parse(trimmed).map_err(|e| format!("the archive: {e}"))?;
        let target = dest.join(&rel);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => make_dirs(dest, &rel)?,
            EntryType::Regular | EntryType::Continuous => {
                if let Some(parent) = rel.as_path().parent() {
                    if !parent.as_os_str().is_empty() {
                        make_dirs(dest, &RelPath::new(parent).map_err(|e| e.to_string())?)?;
                    }
                }
                let size = entry.size();
                bytes = bytes.saturating_add(size);
                if bytes > limits.max_bytes {
                    return Err(format!(
                        "the archive unpacks to more than {} bytes",
                        limits.max_bytes
                    ));
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode | 0o644)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::AlreadyExists => {
                            format!("the archive holds '{rel}' twice (or as a file and a directory)")
                        }
                        _ => format!("unpacking '{rel}': {e}"),
                    })?;
                // Readable by everyone whatever the umask: the sandbox's user reads a
                // project's files through read-only binds.
                out.set_permissions(fs::Permissions::from_mode(mode | 0o644))
                    .map_err(|e| format!("unpacking '{rel}': {e}"))?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut out)
                    .map_err(|e| format!("the archive: '{rel}': {e}"))?;
                if copied != size {
                    return Err(format!(
                        "the archive is cut short in '{rel}' ({copied} of {size} bytes)"
                    ));
                }
                files += 1;
            }
            other => {
                return Err(format!(
                    "the archive's entry '{rel}' is a {}: only regular files and directories are accepted",
                    describe(other)
                ))
            }
        }
    }
    Ok(files)
}

fn describe(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Symlink => "symbolic link",
        EntryType::Link => "hard link",
        EntryType::Char | EntryType::Block => "device",
        EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

/// Makes `rel`'s directories below `dest`, one component at a time, never through a link.
fn make_dirs(dest: &Path, rel: &RelPath) -> Result<(), String> {
    let mut at = dest.to_path_buf();
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(unpack(&tar[..], dir.path(), LIMITS).unwrap(), 2);
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
            unpack(&gz.finish().unwrap()[..], dir.path(), LIMITS).unwrap(),
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
            let e = unpack(&tar_of(entries)[..], dir.path(), LIMITS).unwrap_err();
            assert!(e.contains(word), "{entries:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; 2 << 20];
        let e = unpack(
            &tar_of(&[("big", EntryType::Regular, &big)])[..],
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
        assert!(unpack(&tar_of(&many)[..], dir.path(), LIMITS)
            .unwrap_err()
            .contains("entries"));
        let garbage = [b'x'; 600];
        assert!(unpack(&garbage[..], tempfile::tempdir().unwrap().path(), LIMITS).is_err());
    }
}
