//! Image import: multi-layer images with whiteouts, layer sharing, and hostile archives.
//! Run as root (mknod, xattrs, overlay mounts in a private mount namespace).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{layer, tar_of_layout, tree, write_layout, Craft, Entry};
use sandpit::env::{EnvStore, NewEnvironment};
use sandpit::image::{ImageError, ImportLimits};

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
    let data = tempfile::tempdir().expect("tempdir");
    let good = tempfile::tempdir().expect("tempdir");
    write_layout(good.path(), &[base_layer()], &Craft::default());
    let store = EnvStore::open_with_limits(data.path(), limits).expect("open");
    store
        .import(good.path(), meta("good"))
        .expect("good import");
    let before = tree(data.path());
    let bad = tempfile::tempdir().expect("tempdir");
    write_layout(bad.path(), layers, &craft);
    let err = match store.import(bad.path(), meta("bad")) {
        Ok(env) => panic!("hostile image was imported: {env:?}"),
        Err(sandpit::env::EnvError::Image(e)) => e,
        Err(other) => panic!("expected an image error, got {other}"),
    };
    assert_eq!(
        tree(data.path()),
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
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
}
