//! Image import: multi-layer images with whiteouts, layer sharing, and hostile archives.
//! Run as root (mknod, xattrs, overlay mounts in a private mount namespace).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{layer, put_blob, tar_of_layout, tree, write_layout, Craft, Entry};
use sandpit::env::{EnvStore, NewEnvironment};
use sandpit::image::digest::sha256_of;
use sandpit::image::{ImageError, ImportLimits, Limit};

fn meta(id: &str) -> NewEnvironment {
    NewEnvironment {
        envid: Some(id.into()),
        name: Some(format!("test {id}")),
        authors: Some("tests".into()),
        description: None,
    }
}

fn base_layer() -> Vec<u8> {
    layer(&[
        Entry::Dir("a/"),
        Entry::File("a/keep", b"keep\n".to_vec(), 0o644),
        Entry::File("a/gone", b"gone\n".to_vec(), 0o644),
        Entry::Dir("opq/"),
        Entry::File("opq/old1", b"old\n".to_vec(), 0o644),
        Entry::Dir("opq/sub/"),
        Entry::File("opq/sub/old2", b"old\n".to_vec(), 0o644),
        Entry::File("top.txt", b"v1\n".to_vec(), 0o644),
        Entry::File("dropped.txt", b"x\n".to_vec(), 0o644),
    ])
}

fn upper_layer() -> Vec<u8> {
    layer(&[
        Entry::File("a/.wh.gone", vec![], 0o644),
        Entry::File(".wh.dropped.txt", vec![], 0o644),
        Entry::Dir("opq/"),
        Entry::File("opq/.wh..wh..opq", vec![], 0o644),
        Entry::File("opq/new", b"new\n".to_vec(), 0o644),
        Entry::File("top.txt", b"v2\n".to_vec(), 0o644),
        Entry::File("suid", b"#!/bin/sh\n".to_vec(), 0o4755),
        Entry::Symlink("abs-link", "/a/keep"),
        Entry::HardLink("hard", "top.txt"),
    ])
}

/// Mounts the layers as overlayfs lower dirs (topmost first, as the core does) in a private
/// mount namespace, and runs a shell command in the merged view. Nothing outlives the call.
fn in_overlay(layers: &[PathBuf], script: &str) -> String {
    let mnt = tempfile::tempdir().expect("tempdir");
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t overlay overlay -o ro,lowerdir={} {m} && cd {m} && {script}",
            lower.join(":"),
            m = mnt.path().display()
        ))
        .output()
        .expect("unshare");
    assert!(
        out.status.success(),
        "overlay mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layer_dirs(store: &EnvStore, envid: &str) -> Vec<PathBuf> {
    match store.acquire(envid).expect("acquire").rootfs() {
        sandbox::RootFs::Layers(dirs) => dirs,
        other => panic!("expected layers, got {other:?}"),
    }
}

#[test]
fn multi_layer_image_merges_with_whiteouts_and_opaque_dirs() {
    let data = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    write_layout(
        src.path(),
        &[base_layer(), upper_layer()],
        &Craft {
            gzip: true,
            ..Default::default()
        },
    );
    let store = EnvStore::open(data.path()).expect("open");
    let env = store.import(src.path(), meta("multi")).expect("import");
    assert_eq!(env.layers.len(), 2);
    let dirs = layer_dirs(&store, "multi");

    // The upper layer holds overlayfs whiteouts and the opaque xattr, not `.wh.` files.
    let upper = &dirs[1];
    let wh = fs::symlink_metadata(upper.join("a/gone")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert!(!upper.join("a/.wh.gone").exists());
    let suid = fs::metadata(upper.join("suid")).expect("suid file");
    assert_eq!(
        suid.permissions().mode() & 0o7777,
        0o755,
        "setuid must be dropped"
    );

    let view = in_overlay(
        &dirs,
        "echo A:$(ls a) ; echo O:$(ls opq) ; echo T:$(cat top.txt) ; echo D:$(ls dropped.txt 2>&1 >/dev/null | wc -l) ; echo L:$(readlink abs-link) ; echo H:$(cat hard)",
    );
    assert!(view.contains("A:keep\n"), "{view}");
    assert!(
        view.contains("O:new\n"),
        "opaque dir must hide lower entries: {view}"
    );
    assert!(view.contains("T:v2\n"), "{view}");
    assert!(
        view.contains("D:1\n"),
        "whiteout must hide dropped.txt: {view}"
    );
    assert!(view.contains("L:/a/keep\n"), "{view}");
    assert!(view.contains("H:v2\n"), "{view}");
}

#[test]
fn image_tar_imports_like_a_directory_and_is_content_addressed() {
    let data = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    let digest = write_layout(
        src.path(),
        &[base_layer(), upper_layer()],
        &Craft::default(),
    );
    let archive = tempfile::NamedTempFile::new().expect("temp");
    tar_of_layout(src.path(), archive.path());
    let store = EnvStore::open(data.path()).expect("open");
    let a = store
        .import(archive.path(), meta("from-tar"))
        .expect("import tar");
    let b = store
        .import(src.path(), meta("from-dir"))
        .expect("import dir");
    assert_eq!(a.image_digest, digest);
    assert_eq!(a.image_digest, b.image_digest);
    assert_eq!(store.images().stored_layers().expect("layers").len(), 2);
    assert!(
        tree(&data.path().join("layers/tmp")).is_empty(),
        "archive scratch left behind"
    );
}

#[test]
fn zstd_layers_import() {
    let data = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    let craft = Craft {
        zstd: true,
        ..Default::default()
    };
    write_layout(src.path(), &[base_layer(), upper_layer()], &craft);
    let store = EnvStore::open(data.path()).expect("open");
    store.import(src.path(), meta("zstd")).expect("import zstd");
    let view = in_overlay(&layer_dirs(&store, "zstd"), "cat top.txt");
    assert_eq!(view, "v2\n");
}

#[test]
fn two_images_sharing_a_layer_store_it_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let (one, two) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let top2 = layer(&[Entry::File("other.txt", b"2\n".to_vec(), 0o644)]);
    write_layout(
        one.path(),
        &[base_layer(), upper_layer()],
        &Craft::default(),
    );
    write_layout(
        two.path(),
        &[base_layer(), top2],
        &Craft {
            gzip: true,
            ..Default::default()
        },
    );
    let store = EnvStore::open(data.path()).expect("open");
    let a = store.import(one.path(), meta("one")).expect("import one");
    let b = store.import(two.path(), meta("two")).expect("import two");
    assert_eq!(a.layers[0], b.layers[0], "the base layer has one identity");
    assert_eq!(store.images().stored_layers().expect("layers").len(), 3);
    assert_eq!(store.list().expect("list").len(), 2);

    // Removing one keeps the shared layer; removing both empties the store.
    store.remove("one").expect("rm one");
    let left = store.images().stored_layers().expect("layers");
    assert_eq!(left.len(), 2);
    assert!(left.contains(&b.layers[0]));
    store.remove("two").expect("rm two");
    assert!(store.images().stored_layers().expect("layers").is_empty());
    assert!(store.images().images().expect("images").is_empty());
    assert!(matches!(
        store.remove("two"),
        Err(sandpit::env::EnvError::NotFound(_))
    ));
}

#[test]
fn environment_in_use_cannot_be_removed() {
    let data = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    write_layout(src.path(), &[base_layer()], &Craft::default());
    let store = EnvStore::open(data.path()).expect("open");
    store.import(src.path(), meta("busy")).expect("import");
    assert!(matches!(
        store.import(src.path(), meta("busy")),
        Err(sandpit::env::EnvError::AlreadyExists(_))
    ));
    let lease = store.acquire("busy").expect("acquire");
    assert!(matches!(
        store.remove("busy"),
        Err(sandpit::env::EnvError::InUse(_))
    ));
    drop(lease);
    store.remove("busy").expect("rm after release");
    for bad in ["../x", "A", "", "a/b"] {
        assert!(
            matches!(store.get(bad), Err(sandpit::env::EnvError::InvalidId(_))),
            "{bad}"
        );
    }
}

/// Imports a hostile layout into a store that already holds one good environment, and checks
/// the error and that the store is exactly as before.
fn refused(layers: &[Vec<u8>], craft: Craft, limits: ImportLimits) -> ImageError {
    let bad = tempfile::tempdir().expect("tempdir");
    write_layout(bad.path(), layers, &craft);
    refused_source(bad.path(), limits)
}

/// Imports a hostile image (layout directory or archive) into a store that already holds one
/// good environment, and checks the error and that the store is exactly as before.
fn refused_source(source: &Path, limits: ImportLimits) -> ImageError {
    let data = tempfile::tempdir().expect("tempdir");
    refused_in(data.path(), source, limits)
}

fn refused_in(data: &Path, source: &Path, limits: ImportLimits) -> ImageError {
    let good = tempfile::tempdir().expect("tempdir");
    write_layout(good.path(), &[base_layer()], &Craft::default());
    let store = EnvStore::open_with_limits(data, limits).expect("open");
    store
        .import(good.path(), meta("good"))
        .expect("good import");
    let before = tree(data);
    let err = match store.import(source, meta("bad")) {
        Ok(env) => panic!("hostile image was imported: {env:?}"),
        Err(sandpit::env::EnvError::Image(e)) => e,
        Err(other) => panic!("expected an image error, got {other}"),
    };
    assert_eq!(
        tree(data),
        before,
        "the store changed after refusing: {err}"
    );
    assert!(store.get("bad").expect("get").is_none());
    // The error is one clear line.
    assert!(!err.to_string().contains('\n'));
    err
}

fn refused_layer(entries: &[Entry]) -> ImageError {
    // The good base layer goes first, so a refusal must also roll back a fresh lower layer.
    let fresh = layer(&[Entry::File("fresh", b"f\n".to_vec(), 0o644)]);
    refused(
        &[fresh, layer(entries)],
        Craft::default(),
        ImportLimits::default(),
    )
}

#[test]
fn refuses_dotdot_paths() {
    let e = refused_layer(&[Entry::File("a/../../evil", b"x".to_vec(), 0o644)]);
    assert!(matches!(e, ImageError::UnsafePath { .. }), "{e}");
}

#[test]
fn refuses_absolute_paths() {
    let e = refused_layer(&[Entry::File("/tmp/sandpit-evil", b"x".to_vec(), 0o644)]);
    assert!(matches!(e, ImageError::UnsafePath { .. }), "{e}");
    assert!(!Path::new("/tmp/sandpit-evil").exists());
}

#[test]
fn refuses_symlinks_out_of_the_root() {
    let e = refused_layer(&[Entry::Dir("d/"), Entry::Symlink("d/up", "../../etc")]);
    assert!(matches!(e, ImageError::LinkEscapes { .. }), "{e}");
}

#[test]
fn refuses_writing_through_a_symlink() {
    // An absolute link is fine inside the image, but nothing may be written through it.
    let e = refused_layer(&[
        Entry::Symlink("etc-link", "/tmp"),
        Entry::File("etc-link/sandpit-evil", b"x".to_vec(), 0o644),
    ]);
    assert!(matches!(e, ImageError::UnsafePath { .. }), "{e}");
    assert!(!Path::new("/tmp/sandpit-evil").exists());
}

#[test]
fn refuses_hard_links_out_of_the_root() {
    let e = refused_layer(&[Entry::HardLink("hl", "../etc/passwd")]);
    assert!(matches!(e, ImageError::LinkEscapes { .. }), "{e}");
    let e = refused_layer(&[Entry::HardLink("hl", "/etc/passwd")]);
    assert!(
        matches!(
            e,
            ImageError::LinkEscapes { .. } | ImageError::UnsafePath { .. }
        ),
        "{e}"
    );
}

#[test]
fn refuses_device_nodes_and_fifos() {
    let e = refused_layer(&[Entry::Char("dev/mem", 1, 1)]);
    assert!(matches!(e, ImageError::SpecialFile { .. }), "{e}");
    // Not even a 0/0 device: only the engine makes whiteouts.
    let e = refused_layer(&[Entry::Char("fake-whiteout", 0, 0)]);
    assert!(matches!(e, ImageError::SpecialFile { .. }), "{e}");
    let e = refused_layer(&[Entry::Fifo("pipe")]);
    assert!(matches!(e, ImageError::SpecialFile { .. }), "{e}");
}

#[test]
fn refuses_a_digest_mismatch() {
    let e = refused(
        &[base_layer(), upper_layer()],
        Craft {
            corrupt_layer: Some(1),
            ..Default::default()
        },
        ImportLimits::default(),
    );
    assert!(
        matches!(
            e,
            ImageError::DigestMismatch { .. } | ImageError::DiffIdMismatch { .. }
        ),
        "{e}"
    );
    // Compressed: the corruption may break gzip itself or its checksum; it is refused either way.
    let e = refused(
        &[upper_layer()],
        Craft {
            corrupt_layer: Some(0),
            gzip: true,
            ..Default::default()
        },
        ImportLimits::default(),
    );
    assert!(
        matches!(
            e,
            ImageError::DigestMismatch { .. }
                | ImageError::DiffIdMismatch { .. }
                | ImageError::Corrupt(_)
                | ImageError::Truncated(_)
        ),
        "{e}"
    );
}

#[test]
fn refuses_a_truncated_tar() {
    // Self-consistent digests (the attacker computed them over the cut archive).
    let mut tar = layer(&[Entry::File("big", vec![7u8; 20_000], 0o644)]);
    tar.truncate(512 + 10_000);
    let e = refused(&[tar.clone()], Craft::default(), ImportLimits::default());
    assert!(matches!(e, ImageError::Truncated(_)), "{e}");
    let mut gz = common::gzip(&layer(&[Entry::File("big", vec![7u8; 20_000], 0o644)]));
    gz.truncate(gz.len() / 2);
    let craft = Craft {
        gzip: true,
        blobs_as_is: true,
        ..Default::default()
    };
    let e = refused(&[gz], craft, ImportLimits::default());
    assert!(matches!(e, ImageError::Truncated(_)), "{e}");
}

#[test]
fn refuses_a_missing_blob() {
    let e = refused(
        &[base_layer(), upper_layer()],
        Craft {
            missing_layer: Some(1),
            ..Default::default()
        },
        ImportLimits::default(),
    );
    assert!(matches!(e, ImageError::MissingBlob(_)), "{e}");
}

#[test]
fn refuses_a_layer_over_the_size_limit() {
    let limits = ImportLimits {
        max_layer_bytes: 256 << 10,
        max_blob_bytes: 1 << 30,
        ..ImportLimits::default()
    };
    let big = layer(&[Entry::File("big", vec![0u8; 1 << 20], 0o644)]);
    let e = refused(
        &[big],
        Craft {
            gzip: true,
            ..Default::default()
        },
        limits,
    );
    assert_over(&e, Limit::LayerBytes, 256 << 10);
}

fn assert_over(e: &ImageError, limit: Limit, max: u64) {
    match e {
        ImageError::OverLimit(o) => {
            assert_eq!((o.limit, o.max), (limit, max), "{e}");
            assert!(e.to_string().contains(limit.name()), "{e}");
        }
        other => panic!("expected {limit} to refuse it, got: {other}"),
    }
}

fn tar_header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// A gzip'd tar holding one file of `size` zero bytes at `path`, as concatenated gzip members
/// (one member of 64 MiB of zeros, compressed once and repeated): the ratio of one long
/// stream (about 1000:1), built in a fraction of the time.
fn gzip_bomb(path: &str, size: u64) -> Vec<u8> {
    const CHUNK: u64 = 64 << 20;
    assert_eq!(size % CHUNK, 0);
    let best = |data: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    };
    let mut out = best(tar_header(path, size).as_bytes());
    let member = best(&vec![0u8; CHUNK as usize]);
    for _ in 0..size / CHUNK {
        out.extend_from_slice(&member);
    }
    out.extend(best(&[0u8; 1024]));
    out
}

fn bomb_craft() -> Craft {
    Craft {
        gzip: true,
        blobs_as_is: true,
        // Never known: the import must stop long before it could hash 9 GiB.
        diff_ids: vec![sha256_of(b"9 GiB of zeros").to_string()],
        ..Default::default()
    }
}

#[test]
fn refuses_a_gzip_bomb_layer_at_its_limit() {
    let bomb = gzip_bomb("zeros", 9 << 30);
    assert!(bomb.len() < 10 << 20, "{} bytes", bomb.len());
    let limits = ImportLimits {
        max_layer_bytes: 128 << 20,
        ..ImportLimits::default()
    };
    let e = refused(&[bomb], bomb_craft(), limits);
    assert_over(&e, Limit::LayerBytes, 128 << 20);
}

#[test]
fn refuses_a_gzip_bomb_image_archive_at_its_limit() {
    // The archive itself (a gzip'd tar of the layout) expands to a 9 GiB "blob".
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar.gz");
    let hex = "0".repeat(64);
    fs::write(&archive, gzip_bomb(&format!("blobs/sha256/{hex}"), 9 << 30)).expect("write");
    let limits = ImportLimits {
        max_blob_bytes: 128 << 20,
        ..ImportLimits::default()
    };
    let e = refused_source(&archive, limits);
    assert_over(&e, Limit::BlobBytes, 128 << 20);
}

#[test]
fn refuses_layers_over_the_image_limit() {
    // Each layer is within its own limit; together they are not.
    let layers: Vec<Vec<u8>> = ["one", "two", "three"]
        .iter()
        .map(|name| layer(&[Entry::File(name, vec![0u8; 40 << 20], 0o644)]))
        .collect();
    let limits = ImportLimits {
        max_layer_bytes: 64 << 20,
        max_image_bytes: 100 << 20,
        ..ImportLimits::default()
    };
    let craft = Craft {
        gzip: true,
        ..Default::default()
    };
    let e = refused(&layers, craft, limits);
    assert_over(&e, Limit::ImageBytes, 100 << 20);
}

/// A layer of `n` empty files.
fn many_files(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..n {
        b.append(&tar_header(&format!("f{i:06}"), 0), &[][..])
            .expect("append");
    }
    b.into_inner().expect("tar")
}

#[test]
fn refuses_too_many_entries() {
    let limits = ImportLimits {
        max_entries: 1000,
        ..ImportLimits::default()
    };
    let e = refused(&[many_files(1500)], Craft::default(), limits);
    assert_over(&e, Limit::Entries, 1000);
}

/// Runs `f` on a thread of its own, in a private mount namespace with a tmpfs (of `options`)
/// mounted on `dir`: neither the mount nor anything written to it outlives the thread.
fn on_private_tmpfs<T: Send>(dir: &Path, options: &str, f: impl FnOnce() -> T + Send) -> T {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare only changes this thread's mount namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0, "unshare");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options),
            )
            .expect("mount tmpfs");
            let result = f();
            umount2(dir, MntFlags::MNT_DETACH).expect("umount");
            result
        })
        .join()
        .expect("tmpfs thread")
    })
}

fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[test]
fn refuses_an_image_that_would_fill_the_data_filesystem() {
    // 100 MiB of zeros (100 KiB gzip'd) for a 64 MiB filesystem.
    let img = tempfile::tempdir().expect("tempdir");
    let zeros = layer(&[Entry::File("zeros", vec![0u8; 100 << 20], 0o644)]);
    write_layout(
        img.path(),
        &[zeros],
        &Craft {
            gzip: true,
            ..Default::default()
        },
    );
    let mnt = tempfile::tempdir().expect("tempdir");
    let limits = ImportLimits {
        min_free_bytes: 16 << 20,
        ..ImportLimits::default()
    };
    let (e, free_before, free_after) = on_private_tmpfs(mnt.path(), "size=64m", || {
        let before = free_bytes(mnt.path());
        let e = refused_in(mnt.path(), img.path(), limits);
        (e, before, free_bytes(mnt.path()))
    });
    match &e {
        ImageError::NoSpace(n) => {
            assert_eq!((n.limit, n.margin), (Limit::MinFreeBytes, 16 << 20), "{e}");
            assert!(e.to_string().contains("min_free_bytes"), "{e}");
        }
        other => panic!("expected the free-space margin to refuse it: {other}"),
    }
    // What the refused import wrote is gone again (the good import took a few KiB).
    assert!(
        free_after + (1 << 20) >= free_before,
        "{free_before} free before, {free_after} after"
    );
    // A margin larger than the filesystem refuses before anything is unpacked.
    let limits = ImportLimits {
        min_free_bytes: 1 << 30,
        ..ImportLimits::default()
    };
    let e = on_private_tmpfs(mnt.path(), "size=64m", || {
        let store = EnvStore::open_with_limits(mnt.path(), limits).expect("open");
        let e = store.import(img.path(), meta("bad")).expect_err("refused");
        assert!(tree(&mnt.path().join("layers"))
            .iter()
            .all(|p| p == "sha256" || p == "tmp"));
        e
    });
    assert!(
        matches!(&e, sandpit::env::EnvError::Image(ImageError::NoSpace(n)) if n.limit == Limit::MinFreeBytes),
        "{e}"
    );
}

#[test]
fn refuses_an_image_that_would_use_up_the_inodes() {
    let img = tempfile::tempdir().expect("tempdir");
    write_layout(img.path(), &[many_files(3000)], &Craft::default());
    let mnt = tempfile::tempdir().expect("tempdir");
    let limits = ImportLimits {
        min_free_bytes: 1 << 20,
        min_free_inodes: 500,
        ..ImportLimits::default()
    };
    let e = on_private_tmpfs(mnt.path(), "size=64m,nr_inodes=2000", || {
        refused_in(mnt.path(), img.path(), limits)
    });
    assert!(
        matches!(&e, ImageError::NoSpace(n) if n.limit == Limit::MinFreeInodes && n.margin == 500),
        "{e}"
    );
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image index (JSON) whose entries are `(media type, digest, size, platform os)`.
fn index_doc(entries: &[(&str, &str, usize, Option<&str>)], note: &str) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(media, digest, size, os)| {
            let mut d = serde_json::json!({"mediaType": media, "digest": digest, "size": size});
            if let Some(os) = os {
                d["platform"] = serde_json::json!({"os": os, "architecture": "amd64"});
            }
            d
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": manifests,
        "annotations": {"note": note},
    }))
    .expect("json")
}

fn write_index_json(layout: &Path, doc: &[u8]) {
    fs::write(layout.join("index.json"), doc).expect("index.json");
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci");
}

#[test]
fn refuses_a_fan_out_of_nested_indexes_walking_each_once() {
    // Four levels of indexes, each naming the next one 48 times; the last names only a
    // manifest for another OS. Walked path by path that is 48^4 = 5.3 million visits; each
    // distinct index is walked once here, so the import ends with "no manifest", far below
    // the document limit.
    let layout = tempfile::tempdir().expect("tempdir");
    let other_os = format!("sha256:{}", "e".repeat(64));
    let leaf = index_doc(
        &[(
            "application/vnd.oci.image.manifest.v1+json",
            &other_os,
            500,
            Some("windows"),
        )],
        "leaf",
    );
    let mut next = put_blob(layout.path(), &leaf);
    for level in (0..4).rev() {
        let entries = vec![(INDEX, next.0.as_str(), next.1, None); 48];
        let doc = index_doc(&entries, &format!("level {level}"));
        if level == 0 {
            write_index_json(layout.path(), &doc);
        } else {
            next = put_blob(layout.path(), &doc);
        }
    }
    let archive_dir = tempfile::tempdir().expect("tempdir");
    let archive = archive_dir.path().join("fan-out.tar");
    tar_of_layout(layout.path(), &archive);
    let size = fs::metadata(&archive).expect("archive").len();
    assert!(size < 64 << 10, "{size} bytes");
    let e = refused_source(&archive, ImportLimits::default());
    assert!(matches!(e, ImageError::NoManifest), "{e}");
}

#[test]
fn refuses_indexes_nested_too_deep() {
    let layout = tempfile::tempdir().expect("tempdir");
    let mut next = put_blob(layout.path(), &index_doc(&[], "bottom"));
    for level in (0..7).rev() {
        let doc = index_doc(
            &[(INDEX, next.0.as_str(), next.1, None)],
            &format!("level {level}"),
        );
        if level == 0 {
            write_index_json(layout.path(), &doc);
        } else {
            next = put_blob(layout.path(), &doc);
        }
    }
    let e = refused_source(layout.path(), ImportLimits::default());
    assert_over(
        &e,
        Limit::IndexDepth,
        ImportLimits::default().max_index_depth,
    );
}

#[test]
fn refuses_an_index_of_too_many_documents() {
    let layout = tempfile::tempdir().expect("tempdir");
    let children: Vec<(String, usize)> = (0..200)
        .map(|i| put_blob(layout.path(), &index_doc(&[], &format!("child {i}"))))
        .collect();
    let entries: Vec<(&str, &str, usize, Option<&str>)> = children
        .iter()
        .map(|(d, n)| (INDEX, d.as_str(), *n, None))
        .collect();
    write_index_json(layout.path(), &index_doc(&entries, "wide"));
    let e = refused_source(layout.path(), ImportLimits::default());
    assert_over(&e, Limit::Documents, ImportLimits::default().max_documents);
}

#[test]
fn refuses_a_tar_cut_between_entries() {
    // Cut right after the first file's entry: every entry that is there is whole, but the
    // end-of-archive marker is missing (the digests are computed over the cut archive).
    let whole = layer(&[
        Entry::File("first", vec![1u8; 3000], 0o644),
        Entry::File("second", vec![2u8; 5000], 0o644),
    ]);
    let cut = whole[..512 + 3072].to_vec();
    for craft in [
        Craft::default(),
        Craft {
            gzip: true,
            ..Default::default()
        },
        Craft {
            zstd: true,
            ..Default::default()
        },
    ] {
        let e = refused(std::slice::from_ref(&cut), craft, ImportLimits::default());
        assert!(matches!(e, ImageError::Truncated(_)), "{e}");
        assert!(e.to_string().contains("end-of-archive"), "{e}");
    }
    // Cut in the middle of the second file, inside a whole zstd stream, and a zstd stream cut.
    let mid = whole[..512 + 3072 + 512 + 2000].to_vec();
    let craft = Craft {
        zstd: true,
        ..Default::default()
    };
    let e = refused(&[mid], craft, ImportLimits::default());
    assert!(matches!(e, ImageError::Truncated(_)), "{e}");
    let mut zst = common::zstd(&whole);
    zst.truncate(zst.len() / 2);
    let craft = Craft {
        zstd: true,
        blobs_as_is: true,
        diff_ids: vec![sha256_of(&whole).to_string()],
        ..Default::default()
    };
    let e = refused(&[zst], craft, ImportLimits::default());
    assert!(
        matches!(e, ImageError::Truncated(_) | ImageError::Corrupt(_)),
        "{e}"
    );
}

#[test]
fn refuses_an_image_archive_cut_before_its_end() {
    let layout = tempfile::tempdir().expect("tempdir");
    write_layout(layout.path(), &[base_layer()], &Craft::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    tar_of_layout(layout.path(), &archive);
    let mut bytes = fs::read(&archive).expect("read");
    bytes.truncate(bytes.len() - 1024);
    fs::write(&archive, &bytes).expect("write");
    let e = refused_source(&archive, ImportLimits::default());
    assert!(matches!(e, ImageError::Truncated(_)), "{e}");
}

#[test]
fn imports_of_different_images_run_in_parallel() {
    use std::io::Write;
    use std::sync::mpsc;
    // Image A comes through a FIFO that this test feeds: A's import stalls half-way through
    // its archive for as long as the test likes. Meanwhile B is imported and committed, and
    // an environment removal collects the store: neither waits for A, nor disturbs it.
    let data = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    write_layout(a.path(), &[base_layer(), upper_layer()], &Craft::default());
    let other = layer(&[Entry::File("b.txt", b"b\n".to_vec(), 0o644)]);
    write_layout(b.path(), &[other], &Craft::default());
    let scratch = tempfile::tempdir().expect("tempdir");
    let archive = scratch.path().join("a.tar");
    tar_of_layout(a.path(), &archive);
    let bytes = fs::read(&archive).expect("read");
    let fifo = scratch.path().join("a.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");

    let store = EnvStore::open(data.path()).expect("open");
    std::thread::scope(|s| {
        let import_a = s.spawn(|| store.import(&fifo, meta("a")));
        let mut feed = fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open fifo");
        feed.write_all(&bytes[..bytes.len() / 2]).expect("feed");

        let (done, wait) = mpsc::channel();
        let store_b = &store;
        let b_path = b.path();
        s.spawn(move || {
            let result = store_b.import(b_path, meta("b")).map(|_| ());
            let removed = result.and_then(|()| store_b.remove("b"));
            let _ = done.send(removed);
        });
        let b_result = wait
            .recv_timeout(std::time::Duration::from_secs(300))
            .expect("importing and removing B waited for A's import");
        b_result.expect("import and remove B");

        feed.write_all(&bytes[bytes.len() / 2..]).expect("feed");
        drop(feed);
        let env = import_a.join().expect("thread").expect("import A");
        assert_eq!(env.layers.len(), 2);
    });
    assert!(store.get("a").expect("get").is_some());
    assert!(store.get("b").expect("get").is_none());
    assert_eq!(store.images().stored_layers().expect("layers").len(), 2);
    assert!(tree(&data.path().join("layers/tmp")).is_empty());
}
