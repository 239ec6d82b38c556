//! After runs of every kind, nothing the engine made is left: no cgroup, no mount, no process.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn nothing_is_left_after_runs_of_every_kind() {
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
