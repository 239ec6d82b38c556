//! After runs of every kind, nothing the engine made is left: no cgroup, no mount, no process.

mod common;

use std::time::Duration;

use common::*;

/// The tests that count this process's cgroups, one at a time.
fn counting_cgroups() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn nothing_is_left_after_runs_of_every_kind() {
    let _one = counting_cgroups();
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut oom = prog_spec("memhog", &["300"]);
    oom.limits.memory_bytes = Some(32 << 20);
    let mut spin = prog_spec("burn", &["0"]);
    spin.limits.cpu_time = Some(Duration::from_millis(200));
    let mut sleeper = sh("sleep 30 & sleep 30");
    sleeper.limits.wall_time = Some(Duration::from_millis(200));
    let mut bomb = prog_spec("forkbomb", &["1"]);
    bomb.limits.pids = Some(8);
    for s in [
        sh("true"),
        oom,
        spin,
        sleeper,
        bomb,
        prog_spec("daemon", &[]),
    ] {
        let o = run(&s);
        assert_ne!(o.end_reason, sandbox::EndReason::InternalError, "{o:?}");
    }
    // A group whose interactor ends it while the solution still runs.
    let group = sandbox::Group {
        programs: vec![sh("read a"), sh("echo 1; sleep 30")],
        pipes: vec![sandbox::Pipe {
            from: sandbox::PipeEnd { program: 1, fd: 1 },
            to: sandbox::PipeEnd { program: 0, fd: 0 },
            capture_bytes: Some(4),
        }],
        wall_time: Some(Duration::from_secs(10)),
        ends_with: vec![0],
    };
    let o = engine()
        .run_group(&group, vec![Default::default(), Default::default()])
        .unwrap();
    assert_eq!(o.programs[1].end_reason, sandbox::EndReason::Stopped);
    // Runs return once their verdict is in; the sandboxes end in the background.
    engine().settle();
    assert!(own_cgroups().is_empty(), "left: {:?}", own_cgroups());
    assert_eq!(processes_of_uid_range(), 0);
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts_before.lines().count(), mounts_after.lines().count());
    // On v1 the engine's cloning thread steps into each run's cgroups for the clone: every
    // thread is back in the process's cgroups.
    let home = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let cgroups = std::fs::read_to_string(task.path().join("cgroup")).unwrap_or_default();
        if !cgroups.is_empty() {
            assert_eq!(cgroups, home, "thread {:?}", task.file_name());
        }
    }
}

/// A process that exits with its engine never dropped (kept in a static, as here) leaves no
/// cgroup: its exit waits for the sandboxes still ending. The test runs itself as that
/// process, which exits right after its run's verdict.
#[test]
fn a_process_exiting_with_its_engine_in_a_static_leaves_no_cgroup() {
    const CHILD: &str = "SANDPIT_TEST_EXITING_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let o = run(&sh("true"));
        assert_eq!(o.end_reason, sandbox::EndReason::Normal, "{o:?}");
        std::process::exit(0);
    }
    for _ in 0..3 {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_process_exiting_with_its_engine_in_a_static_leaves_no_cgroup",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let left = cgroups_of(pid);
        assert!(left.is_empty(), "left: {left:?}");
    }
}

/// The engine keeps one run cgroup made ahead: the next sandbox takes it (and the engine
/// makes another), its run ends in it and removes it, and dropping the engine removes the
/// one ready. (An engine of its own, with id ranges apart from the shared one's.)
#[test]
fn the_cgroup_made_ahead_is_the_next_sandboxs_and_goes_with_the_engine() {
    let _one = counting_cgroups();
    let config = sandbox::SandboxConfig {
        host_id_base: 300_000_000,
        max_sandboxes: 8,
        ..sandbox::SandboxConfig::default()
    };
    let engine = sandbox::Sandbox::new(config).unwrap();
    let ours = |name: &str| {
        let tail = format!("/{name}");
        cgroups_of(std::process::id())
            .into_iter()
            .filter(|path| path.ends_with(&tail))
            .count()
    };
    let first = engine.cgroup_made_ahead().expect("a cgroup made ahead");
    assert!(ours(&first) > 0, "{first} does not exist");
    let s = sh("echo hi");
    let prepared = engine.prepare(&s.env_spec()).unwrap();
    // The engine's thread makes the next one once it hears of the take.
    let mut second = engine.cgroup_made_ahead();
    for _ in 0..1000 {
        if second.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        second = engine.cgroup_made_ahead();
    }
    let second = second.expect("the next one made ahead");
    assert_ne!(first, second, "the one taken is still offered");
    assert!(
        ours(&first) > 0,
        "the sandbox's cgroup is gone before its run"
    );
    let o = prepared.run(&s, sandbox::Io::default()).unwrap();
    assert_eq!(stdout(&o), "hi\n", "{o:?}");
    engine.settle();
    assert_eq!(ours(&first), 0, "the run's cgroup was left");
    assert!(ours(&second) > 0);
    drop(engine);
    assert_eq!(ours(&second), 0, "the one made ahead outlived its engine");
}
