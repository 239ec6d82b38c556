//! Shared helpers of the core's integration tests (root, real kernel).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sandbox::{FileIn, FileSource, Io, Outcome, RootFs, Sandbox, SandboxConfig, Spec};

/// The busybox root filesystem built by `make rootfs`.
pub fn rootfs() -> PathBuf {
    let path = std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/rootfs/busybox"));
    assert!(
        path.join("bin/busybox").exists(),
        "test rootfs {} missing: run `make rootfs` (or `make test`)",
        path.display()
    );
    path
}

static ENGINE: OnceLock<Sandbox> = OnceLock::new();

pub fn engine() -> &'static Sandbox {
    ENGINE.get_or_init(|| Sandbox::new(SandboxConfig::default()).expect("engine"))
}

/// Compiles (once) the static test program `name` from tests/progs and returns its path.
pub fn prog(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-progs");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    // One compiler at a time: tests on two threads may want the same program.
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = COMPILING.lock().unwrap_or_else(|e| e.into_inner());
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/progs/{name}.c"));
    let fresh = out.exists()
        && out.metadata().unwrap().modified().unwrap()
            >= src.metadata().unwrap().modified().unwrap();
    if !fresh {
        let tmp = dir.join(format!(
            "{name}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let status = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("cc");
        assert!(status.success(), "compiling {name}");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

pub fn spec(argv: &[&str]) -> Spec {
    Spec::new(
        RootFs::Dir(rootfs()),
        argv.iter().map(|s| s.to_string()).collect(),
    )
}

/// A spec that runs test program `name` (copied into /work) with `args`.
pub fn prog_spec(name: &str, args: &[&str]) -> Spec {
    let mut argv = vec![format!("/work/{name}")];
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut s = Spec::new(RootFs::Dir(rootfs()), argv);
    s.files.push(FileIn {
        path: PathBuf::from(name),
        source: FileSource::Host(prog(name)),
        mode: Some(0o755),
    });
    s
}

pub fn sh(script: &str) -> Spec {
    spec(&["/bin/sh", "-c", script])
}

pub fn run(spec: &Spec) -> Outcome {
    engine().run(spec, Io::default()).expect("run")
}

pub fn stdout(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The cgroups this test process's engine made and did not remove (but the one it made
/// ahead for its next sandbox).
pub fn own_cgroups() -> Vec<String> {
    cgroups_left_by(&ENGINE.get().into_iter().collect::<Vec<_>>())
}

/// The cgroups this test process's engines made and did not remove, but the one each of
/// `engines` made ahead for its next sandbox.
pub fn cgroups_left_by(engines: &[&Sandbox]) -> Vec<String> {
    let ahead: Vec<String> = engines
        .iter()
        .filter_map(|e| e.cgroup_made_ahead())
        .map(|name| format!("/{name}"))
        .collect();
    cgroups_of(std::process::id())
        .into_iter()
        .filter(|path| !ahead.iter().any(|a| path.ends_with(a)))
        .collect()
}

/// The cgroups the engine of process `pid` made and did not remove.
pub fn cgroups_of(pid: u32) -> Vec<String> {
    let prefix = format!("sandpit-{pid}-");
    let mut found = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let mount_point = fields[4];
        if !line.contains(" - cgroup") {
            continue;
        }
        let Ok(walk) = walk(std::path::Path::new(mount_point), 4) else {
            continue;
        };
        found.extend(walk.into_iter().filter(|n| n.contains(&prefix)));
    }
    found
}

fn walk(dir: &std::path::Path, depth: u32) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() {
            out.push(e.path().display().to_string());
            if depth > 0 {
                out.extend(walk(&e.path(), depth - 1).unwrap_or_default());
            }
        }
    }
    Ok(out)
}

pub fn processes_of_uid_range() -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let ppid_is_me = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .is_some_and(|p| p.trim() == std::process::id().to_string());
        if (1_000_000..1_000_000 + 1024 * 65_536).contains(&uid) && ppid_is_me {
            n += 1;
        }
    }
    n
}
