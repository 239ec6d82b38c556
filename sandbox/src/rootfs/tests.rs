//! The mount plan, checked without root.

use super::*;
use crate::spec::RootFs;

fn env() -> EnvSpec {
    EnvSpec {
        rootfs: RootFs::Dir("/unused".into()),
        workdir: "/work".into(),
        hostname: "box".into(),
        uid: 1000,
        gid: 1001,
        disk_bytes: Some(1 << 20),
    }
}

fn opts(v1: bool) -> RootOptions<'static> {
    RootOptions {
        root_fd: 7,
        stage_dir: Path::new("/run/sandpit/stage"),
        scratch_dir: Path::new("/run/sandpit/scratch"),
        unshare_cgroupns: v1,
    }
}

fn target(step: &Step) -> String {
    match step {
        Step::Mount { target, .. } | Step::Attach { target, .. } => {
            target.to_string_lossy().into_owned()
        }
        _ => String::new(),
    }
}

#[test]
fn the_root_is_planned_in_order() {
    let plan = plan(&env(), &opts(false)).unwrap();
    let what: Vec<&str> = plan.steps.iter().map(|s| s.what.as_str()).collect();
    let pos = |w: &str| what.iter().position(|x| x.starts_with(w)).unwrap();
    // Private first, then the root, its contents, and the switch last.
    assert_eq!(pos("making / private"), 0);
    assert_eq!(pos("attaching the root filesystem"), 1);
    match &plan.steps[1].step {
        Step::Attach { fd, target } => {
            assert_eq!(*fd, 7);
            assert_eq!(target.to_str().unwrap(), "/run/sandpit/stage");
        }
        _ => unreachable!(),
    }
    assert!(pos("mounting the scratch tmpfs") < pos("creating the empty file"));
    assert!(pos("creating the empty file") < pos("masking /proc/kcore"));
    assert!(pos("mounting /proc") < pos("masking /proc/kcore"));
    assert!(pos("making the empty file's mount read-only") < pos("masking /proc/kcore"));
    assert!(pos("mounting the empty read-only tmpfs") < pos("masking /proc/acpi"));
    assert!(pos("mounting /dev") < pos("making /dev read-only"));
    assert!(pos("mounting the work directory") < pos("pivot_root"));
    assert!(
        what.iter().all(|w| !w.contains("loopback")),
        "made ahead: {what:?}"
    );
    // The masks may be missing on a kernel (optional); nothing else is.
    for s in &plan.steps {
        let optional = s.what.starts_with("masking");
        assert_eq!(s.optional, optional, "{}", s.what);
    }
    // Everything but the scratch space is mounted below the stage.
    for s in &plan.steps {
        let t = target(&s.step);
        if !t.is_empty() && t != "/" {
            assert!(
                t.starts_with("/run/sandpit/stage") || t.starts_with("/run/sandpit/scratch"),
                "{t}"
            );
        }
    }
    // The work directory belongs to the program's user and has the disk limit.
    let work = plan
        .steps
        .iter()
        .find(|s| target(&s.step) == "/run/sandpit/stage/work")
        .unwrap();
    match &work.step {
        Step::Mount { data, flags, .. } => {
            let data = data.as_ref().unwrap().to_string_lossy().into_owned();
            assert_eq!(data, "mode=0755,uid=1000,gid=1001,size=1048576");
            assert_eq!(flags & libc::MS_NOSUID, libc::MS_NOSUID);
        }
        _ => unreachable!(),
    }
}

#[test]
fn options_add_and_remove_steps() {
    let v1 = plan(&env(), &opts(true)).unwrap();
    let what: Vec<&str> = v1.steps.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(what[what.len() - 1], "entering a new cgroup namespace");
}

#[test]
fn mount_points_cover_the_work_directory() {
    let points = mount_points(Path::new("/home/user/work"));
    let points: Vec<&str> = points.iter().map(|p| p.to_str().unwrap()).collect();
    assert_eq!(
        points,
        [
            "/proc",
            "/dev",
            "/tmp",
            "/home",
            "/home/user",
            "/home/user/work"
        ]
    );
}

#[test]
fn unusable_environments_are_refused_before_anything_runs() {
    let mut e = env();
    for bad in ["/", "/proc/x", "/dev", "relative", "/a/../b"] {
        e.workdir = bad.into();
        assert!(plan(&e, &opts(false)).is_err(), "{bad}");
    }
    let mut e = env();
    e.hostname = "x".repeat(65);
    assert!(plan(&e, &opts(false)).is_err());
    e.hostname = String::new();
    assert!(plan(&e, &opts(false)).is_err());
}
