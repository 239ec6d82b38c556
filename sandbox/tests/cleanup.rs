//! After runs of every kind, nothing the engine made is left: no cgroup, no mount, no process.

mod common;

use std::time::Duration;

use common::*;

fn own_cgroups() -> Vec<String> {
    let prefix = format!("sandpit-{}-", std::process::id());
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

fn processes_of_uid_range() -> usize {
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
        if (1_000_000..1_065_536).contains(&uid) && ppid_is_me {
            n += 1;
        }
    }
    n
}

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
    assert!(own_cgroups().is_empty(), "left: {:?}", own_cgroups());
    assert_eq!(processes_of_uid_range(), 0);
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts_before.lines().count(), mounts_after.lines().count());
}
