//! `sandpit run` in the cgroups a real host gives it: without delegation it refuses in one
//! line; beside other processes (a script, a login shell) it works and leaves the cgroup as it
//! found it; `--cgroup-parent` puts its runs there. v2 properties are shown in the VM
//! (tools/vm-test.sh); on a v1 host those tests say why they skip.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// `sandpit run -- CMD` started in cgroup `dir` (None: where this test runs).
fn run_in(dir: Option<&Path>, extra: &[&str], cmd: &[&str]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let root = rootfs();
    let mut c = Command::new(env!("CARGO_BIN_EXE_sandpit"));
    c.arg("--data")
        .arg(data.path())
        .arg("run")
        .arg("--rootfs")
        .arg(&root);
    c.args(extra).arg("--").args(cmd);
    if let Some(dir) = dir {
        let procs = CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: between fork and exec only open/write/close on a prepared path.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr() as *const _, 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
    let o = run_in(target.as_deref(), &[], &["/bin/true"]);
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
    if !is_v2() {
        println!("skipped: a cgroup v2 property (this host is on v1); the VM runs it");
        return;
    }
    // A "service" cgroup below one that enables memory and pids for its children (the root,
    // in the VM's root placement).
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
        return;
    }
    let service = TestCgroup(parent.join(format!("service-test-{}.service", std::process::id())));
    std::fs::create_dir(&service.0).unwrap();
    // The script: a sleeper in the service's cgroup.
    let dir = service.0.clone();
    let procs = CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    let mut script = Command::new("sleep");
    script.arg("60").stdout(Stdio::null());
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        script.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr() as *const _, 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let mut script = script.spawn().unwrap();
    let o = run_in(
        Some(&dir),
        &["--json", "--memory", "32M", "--pids", "8"],
        &[
            "/bin/sh",
            "-c",
            "cat /proc/self/cgroup; head -c 10000000 /dev/zero | tail -c 1 >/dev/null",
        ],
    );
    let procs_after = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    let children: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let subtree = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
    let _ = script.kill();
    let _ = script.wait();
    let out: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(out["end_reason"], "normal", "{out}");
    assert_eq!(out["cgroup_version"], 2, "{out}");
    assert!(out["peak_memory_bytes"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(
        procs_after.trim(),
        script.id().to_string(),
        "the script is back where it was"
    );
    assert!(children.is_empty(), "{children:?}");
    assert!(
        subtree.trim().is_empty(),
        "controllers left enabled: {subtree}"
    );
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
        None,
        &["--cgroup-parent", &parent, "--json"],
        &["/bin/sh", "-c", "echo ran"],
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&o.stdout), text(&o.stderr)));
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
        None,
        &["--cgroup-parent", "/no-such-parent-test"],
        &["/bin/true"],
    );
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));
}
