//! Where the engine puts itself and its cgroups, and that it takes all of it back: on v2 in a
//! delegated cgroup it moves into a leaf of its own and enables memory and pids; dropping the
//! engine restores the cgroup as found. One test at a time: no other engine lives meanwhile.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sandbox::{EndReason, Error, Io, Sandbox, SandboxConfig};

/// The tests of this file change the process's cgroup: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn own_cgroup_line() -> String {
    std::fs::read_to_string("/proc/self/cgroup").unwrap()
}

/// The v2 cgroup the engine works in, when the host is on v2: its own, or the one above when
/// this process sits in a sandpit leaf (an earlier engine's others' leaf, for instance).
fn v2_base() -> Option<PathBuf> {
    let text = own_cgroup_line();
    let own = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        return None;
    }
    let own = root.join(own.trim_start_matches('/'));
    let in_leaf = own.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n == "sandpit-others" || n.starts_with("sandpit-engine-")
    });
    match own.parent() {
        Some(parent) if in_leaf => Some(parent.to_path_buf()),
        _ => Some(own),
    }
}

fn sandpit_children(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("sandpit-"))
                .collect()
        })
        .unwrap_or_default()
}

fn state(base: &Option<PathBuf>) -> (String, Vec<String>, String) {
    match base {
        Some(b) => (
            own_cgroup_line(),
            sandpit_children(b),
            std::fs::read_to_string(b.join("cgroup.subtree_control")).unwrap_or_default(),
        ),
        None => (own_cgroup_line(), Vec::new(), String::new()),
    }
}

fn run_true(engine: &Sandbox) {
    let mut s = sh("echo ok");
    s.limits.memory_bytes = Some(64 << 20);
    s.limits.pids = Some(16);
    let o = engine.run(&s, Io::default()).unwrap();
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(stdout(&o), "ok\n");
}

#[test]
fn the_engine_leaves_its_cgroup_as_it_found_it_every_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // What engines killed outright left (a test server's runs' cgroups; an others' leaf this
    // process was moved into) the first start sweeps and its drop restores: from that state
    // on, every start and stop must leave the cgroup exactly as it found it.
    println!("cgroup at start: {}", own_cgroup_line().trim());
    drop(Sandbox::new(SandboxConfig::default()).expect("engine"));
    let base = v2_base();
    let before = state(&base);
    println!("engine cgroup: {}", before.0.trim());
    for round in 0..3 {
        let engine = Sandbox::new(SandboxConfig::default()).expect("engine");
        run_true(&engine);
        if let (Some(b), Some(true)) =
            (&base, base.as_ref().map(|b| b.join("cgroup.type").exists()))
        {
            // A delegated (non-root) cgroup: the engine left it for a leaf of its own.
            let now = own_cgroup_line();
            assert!(now.contains("/sandpit-engine-"), "round {round}: {now}");
            let leaf = format!("sandpit-engine-{}", std::process::id());
            assert!(sandpit_children(b).contains(&leaf));
            // A second engine of this process shares the leaf; dropping it changes nothing.
            let second = Sandbox::new(SandboxConfig::default()).expect("second engine");
            drop(second);
            assert_eq!(own_cgroup_line(), now);
            run_true(&engine);
        }
        drop(engine);
        assert_eq!(state(&base), before, "round {round}: not restored");
    }
    // A start that fails changes nothing either (and nothing nests deeper on a retry).
    for _ in 0..3 {
        let failed = Sandbox::new(SandboxConfig {
            cgroup_parent: Some(PathBuf::from("/sandpit-no-such-parent")),
            ..SandboxConfig::default()
        });
        assert!(failed.is_err());
        assert_eq!(state(&base), before);
    }
}

/// Engines of two processes start, run and stop side by side in the same cgroup (two
/// `sandpit run` at once in one service): every run ends normally, and the last engine out
/// leaves the cgroup as found. The test runs itself as the second process. (The narrow case
/// where one start plans while the other's last engine restores the base is forced in the
/// unit test `a_plan_applied_after_the_last_engine_restored_the_base_enables_the_controllers`.)
#[test]
fn engines_of_two_processes_starting_and_stopping_side_by_side_always_run() {
    const CHILD: &str = "SANDPIT_TEST_SIDE_BY_SIDE_CHILD";
    const ROUNDS: usize = 60;
    let rounds = || {
        for _ in 0..ROUNDS {
            let engine = Sandbox::new(SandboxConfig::default()).expect("engine");
            run_true(&engine);
        }
    };
    if std::env::var_os(CHILD).is_some() {
        rounds();
        std::process::exit(0);
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    drop(Sandbox::new(SandboxConfig::default()).expect("engine"));
    let base = v2_base();
    let before = state(&base);
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "engines_of_two_processes_starting_and_stopping_side_by_side_always_run",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    rounds();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the other process: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&base), before, "not restored");
}

/// A configured parent to which memory and pids are not delegated is refused in one line that
/// says what to enable, before anything is created.
#[test]
fn a_parent_without_delegation_is_refused_in_one_line() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(base) = v2_base() else {
        println!("skipped: cgroup v2 only (this host is on v1)");
        return;
    };
    // Created below the engine's cgroup: a child with nothing enabled for its own children.
    let outer = base.join(format!("sandpit-test-nodelegate-{}", std::process::id()));
    let inner = outer.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    let rel = inner.strip_prefix("/sys/fs/cgroup").unwrap();
    let result = Sandbox::new(SandboxConfig {
        cgroup_parent: Some(Path::new("/").join(rel)),
        ..SandboxConfig::default()
    });
    let leftover = sandpit_children(&inner);
    std::fs::remove_dir(&inner).unwrap();
    std::fs::remove_dir(&outer).unwrap();
    let Err(Error::NotDelegated(message)) = result else {
        panic!("expected a refusal, got {:?}", result.err());
    };
    println!("{message}");
    assert!(!message.contains('\n'));
    assert!(message.contains("Delegate=yes") && message.contains("--cgroup-parent"));
    assert!(message.contains("memory and pids controllers are not delegated"));
    assert!(leftover.is_empty(), "{leftover:?}");
}

/// An engine whose runtime directory does not exist yet (a fresh boot's `/run/sandpit`) makes
/// it, and every directory of it that sandboxes must reach, open to them; its own lock
/// directory stays root's.
#[test]
fn a_missing_runtime_directory_is_made_open_to_sandboxes() {
    use std::os::unix::fs::PermissionsExt;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let runtime = parent.path().join("run-sandpit");
    let engine = Sandbox::new(SandboxConfig {
        runtime_dir: runtime.clone(),
        ..Default::default()
    })
    .expect("engine");
    run_true(&engine);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&runtime), 0o755);
    for dir in ["stage", "scratch", "points"] {
        assert_eq!(mode(&runtime.join(dir)), 0o755, "{dir}");
    }
    assert_eq!(mode(&runtime.join("ids")), 0o700);
}
