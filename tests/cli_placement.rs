//! `sandpit run` in the cgroups a real host gives it: without delegation it refuses in one
//! line; beside other processes (a script, a login shell) it works and leaves the cgroup as it
//! found it; `--cgroup-parent` puts its runs there. v2 properties are shown in the VM
//! (tools/vm-test.sh); on a v1 host those tests say why they skip.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const V2_ROOT: &str = "/sys/fs/cgroup";

fn rootfs() -> PathBuf {
    let p = std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/rootfs/busybox"))
        });
    assert!(p.join("bin/busybox").exists(), "run `make rootfs` first");
    p
}

fn is_v2() -> bool {
    Path::new(V2_ROOT).join("cgroup.controllers").exists()
}

/// This process's v2 cgroup, absolute.
fn own_v2() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    Path::new(V2_ROOT).join(rel.trim_start_matches('/'))
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. Only
/// open/write/close: safe between fork and exec.
fn enter_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a static byte.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 || libc::write(fd, b"0".as_ptr() as *const _, 1) != 1 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}

/// Where the test starts `sandpit run`.
enum Start<'a> {
    /// Where this test runs.
    Here,
    /// In this cgroup.
    In(&'a Path),
    /// In this cgroup, in a cgroup namespace of its own rooted there, with a cgroup2 file
    /// system mounted at /sys/fs/cgroup in a mount namespace of its own: what a container's
    /// runtime gives its processes (`docker run --cgroupns=private`).
    ContainerIn(&'a Path),
}

/// `sandpit run -- CMD`, started as `start` says.
fn run_in(start: Start, extra: &[&str], cmd: &[&str]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let root = rootfs();
    let mut c = Command::new(env!("CARGO_BIN_EXE_sandpit"));
    c.arg("--data")
        .arg(data.path())
        .arg("run")
        .arg("--rootfs")
        .arg(&root);
    c.args(extra).arg("--").args(cmd);
    let (dir, container) = match start {
        Start::Here => return c.output().unwrap(),
        Start::In(dir) => (dir, false),
        Start::ContainerIn(dir) => (dir, true),
    };
    let procs = CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    let mountpoint = CString::new(V2_ROOT).unwrap();
    let fstype = CString::new("cgroup2").unwrap();
    let slash = CString::new("/").unwrap();
    // SAFETY: between fork and exec only open/write/close/unshare/mount/umount2 on prepared
    // strings.
    unsafe {
        c.pre_exec(move || {
            enter_cgroup(&procs)?;
            if container
                && (libc::unshare(libc::CLONE_NEWCGROUP | libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        slash.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    // The same file system on the same mount point is refused (EBUSY).
                    || libc::umount2(mountpoint.as_ptr(), libc::MNT_DETACH) != 0
                    || libc::mount(
                        fstype.as_ptr(),
                        mountpoint.as_ptr(),
                        fstype.as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The outcome `sandpit run --json` printed.
fn outcome(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&o.stdout), text(&o.stderr)))
}

/// The run ended normally, in a v2 cgroup that measured it.
fn ran_measured_on_v2(out: &serde_json::Value) {
    assert_eq!(out["end_reason"], "normal", "{out}");
    assert_eq!(out["cgroup_version"], 2, "{out}");
    assert!(out["peak_memory_bytes"].as_u64().unwrap() > 0, "{out}");
}

/// A cgroup the test makes, removed (with anything the test left in it) when dropped.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let mut dirs = vec![self.0.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A cgroup that enables memory and pids for its children, in which the test makes the
/// cgroup it starts sandpit in: the root in the VM's root placement, the test's own cgroup's
/// parent in the others. None (and says why) when there is none.
fn delegating_parent() -> Option<PathBuf> {
    let own = own_v2();
    let parent = if own == Path::new(V2_ROOT) {
        own
    } else {
        own.parent().unwrap().to_path_buf()
    };
    let enabled = words(&parent.join("cgroup.subtree_control"));
    if !(enabled.contains(&"memory".to_string()) && enabled.contains(&"pids".to_string())) {
        println!(
            "skipped: {} does not enable memory and pids below itself (the whole suite runs \
             beside its test binaries in the VM's --nested placement instead)",
            parent.display()
        );
        return None;
    }
    Some(parent)
}

/// A v2 cgroup `NAME-test-PID` made below a delegating parent, with a sleeping process in
/// it (the script, shell or first process the engine will start beside). None (and says why)
/// on v1 or without such a parent.
fn cgroup_beside_a_process(name: &str) -> Option<(TestCgroup, Child)> {
    if !is_v2() {
        println!("skipped: a cgroup v2 property (this host is on v1); the VM runs it");
        return None;
    }
    let parent = delegating_parent()?;
    let made = TestCgroup(parent.join(format!("{name}-test-{}", std::process::id())));
    std::fs::create_dir(&made.0).unwrap();
    let sleeper = sleeper_in(&made.0);
    Some((made, sleeper))
}

/// A sleeping process started in cgroup `dir`: the script or shell beside the engine.
fn sleeper_in(dir: &Path) -> Child {
    let procs = CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60").stdout(Stdio::null());
    // SAFETY: between fork and exec only `enter_cgroup` (open/write/close).
    unsafe {
        sleeper.pre_exec(move || enter_cgroup(&procs));
    }
    sleeper.spawn().unwrap()
}

/// What an engine may change in the cgroup it started in, read after it stopped.
struct CgroupState {
    procs: String,
    children: Vec<String>,
    subtree: String,
}

impl CgroupState {
    fn of(dir: &Path) -> CgroupState {
        CgroupState {
            procs: std::fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
            children: std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            subtree: std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
        }
    }

    /// As the engine found it: only `beside` in it, no child, no controller enabled.
    fn is_as_found(&self, beside: &Child) {
        assert_eq!(
            self.procs.trim(),
            beside.id().to_string(),
            "the process beside the engine is back where it was"
        );
        assert!(self.children.is_empty(), "{:?}", self.children);
        assert!(
            self.subtree.trim().is_empty(),
            "controllers left enabled: {}",
            self.subtree
        );
    }
}

/// Started in a cgroup to which nothing is delegated, `sandpit run` refuses at start, in one
/// line that says what to enable, with the setup-failure status, and creates nothing.
#[test]
fn sandpit_run_without_delegation_is_refused_in_one_line() {
    if !is_v2() {
        println!("skipped: a cgroup v2 property (this host is on v1); the VM runs it");
        return;
    }
    let own = own_v2();
    // In the VM's --nodelegate placement this test already runs without delegation;
    // elsewhere it makes such a cgroup: a child of one that enables nothing below itself.
    let made;
    let target = if words(&own.join("cgroup.controllers")).contains(&"memory".to_string()) {
        made = Some(TestCgroup(
            own.join(format!("nodelegate-test-{}", std::process::id())),
        ));
        let inner = made.as_ref().unwrap().0.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        Some(inner)
    } else {
        made = None;
        None
    };
    let o = run_in(
        target.as_deref().map_or(Start::Here, Start::In),
        &[],
        &["/bin/true"],
    );
    let err = text(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Delegate=yes") && err.contains("--cgroup-parent"),
        "{err}"
    );
    assert!(err.contains("not delegated"), "{err}");
    let checked = target.unwrap_or(own);
    let left: Vec<_> = std::fs::read_dir(&checked)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sandpit-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(made);
}

/// A delegated cgroup that also holds the script that started sandpit (a service's
/// ExecStart=, a login shell): the run works with its limits, and afterwards the cgroup is as
/// it was: the script back in it, no leaf, no controller left enabled.
#[test]
fn sandpit_run_beside_a_script_in_its_cgroup_leaves_it_as_found() {
    // The script: a sleeper in the service's cgroup.
    let Some((service, mut script)) = cgroup_beside_a_process("service") else {
        return;
    };
    let dir = service.0.clone();
    let o = run_in(
        Start::In(&dir),
        &["--json", "--memory", "32M", "--pids", "8"],
        &[
            "/bin/sh",
            "-c",
            "cat /proc/self/cgroup; head -c 10000000 /dev/zero | tail -c 1 >/dev/null",
        ],
    );
    let after = CgroupState::of(&dir);
    let _ = script.kill();
    let _ = script.wait();
    let out = outcome(&o);
    ran_measured_on_v2(&out);
    after.is_as_found(&script);
}

/// Inside a container with a cgroup namespace of its own (`docker run --cgroupns=private`
/// with a delegated cgroup, as on a v2 host): the engine sees itself at `/`, beside the
/// container's first process, in a cgroup that is not the hierarchy's root. Runs work with
/// their limits (memory crossed here), and afterwards the container's cgroup is as found.
#[test]
fn sandpit_run_in_a_containers_cgroup_namespace_works_and_leaves_it_as_found() {
    let Some((container, mut first)) = cgroup_beside_a_process("container") else {
        return;
    };
    let dir = container.0.clone();
    let o = run_in(
        Start::ContainerIn(&dir),
        &["--json", "--memory", "32M", "--pids", "8"],
        &["/bin/sh", "-c", "cat /proc/self/cgroup"],
    );
    let out = outcome(&o);
    ran_measured_on_v2(&out);
    CgroupState::of(&dir).is_as_found(&first);
    // The memory limit holds there: 64 MiB touched under 32 MiB.
    let o = run_in(
        Start::ContainerIn(&dir),
        &["--json", "--memory", "32M"],
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
    );
    let out = outcome(&o);
    assert_eq!(out["end_reason"], "out-of-memory", "{out}");
    let after = CgroupState::of(&dir);
    let _ = first.kill();
    let _ = first.wait();
    after.is_as_found(&first);
}

/// `--cgroup-parent` is accepted by `sandpit run` and its runs go there (and are removed).
#[test]
fn cgroup_parent_is_where_runs_go() {
    let name = format!("parent-test-{}", std::process::id());
    let mut made = Vec::new();
    if is_v2() {
        let root = Path::new(V2_ROOT);
        let enabled = words(&root.join("cgroup.subtree_control"));
        if !own_v2().starts_with(root) || !enabled.contains(&"memory".to_string()) {
            println!("skipped: the v2 root does not enable memory below itself");
            return;
        }
        made.push(TestCgroup(root.join(&name)));
    } else {
        for c in ["memory", "pids", "cpuacct"] {
            made.push(TestCgroup(Path::new(V2_ROOT).join(c).join(&name)));
        }
    }
    for m in &made {
        std::fs::create_dir_all(&m.0).unwrap();
    }
    let parent = format!("/{name}");
    let o = run_in(
        Start::Here,
        &["--cgroup-parent", &parent, "--json"],
        &["/bin/sh", "-c", "echo ran"],
    );
    let out = outcome(&o);
    assert_eq!(out["end_reason"], "normal", "{out}");
    for m in &made {
        let left: Vec<_> = std::fs::read_dir(&m.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // A parent that does not exist: one line, the setup-failure status.
    let o = run_in(
        Start::Here,
        &["--cgroup-parent", "/no-such-parent-test"],
        &["/bin/true"],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));
}
