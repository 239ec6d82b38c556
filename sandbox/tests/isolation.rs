//! Isolation holds: filesystem, network, processes, privileges, syscalls.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use sandbox::{EndReason, FileIn, FileSource, Spec};

#[test]
fn only_the_rootfs_is_visible_and_it_is_read_only() {
    let o = run(&sh(
        "ls /; echo x > /etc/x 2>&1 || echo ro-etc; echo x > /bin/x || echo ro-bin; \
         echo ok > /work/a && cat /work/a; echo ok > /tmp/b && cat /tmp/b; ls /root /home 2>&1",
    ));
    let out = stdout(&o);
    assert!(
        !out.contains("Cargo.toml") && !out.contains("boot"),
        "{out}"
    );
    assert!(out.contains("ro-etc") && out.contains("ro-bin"), "{out}");
    assert_eq!(out.matches("ok\n").count(), 2, "{out}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
}

#[test]
fn uid_inside_is_1000_and_maps_to_an_unprivileged_host_uid() {
    let out = stdout(&run(&sh(
        "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/status | grep CapEff",
    )));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(map[0], "0");
    assert_ne!(map[1], "0", "root inside must not be root outside");
    assert!(lines[3].ends_with("0000000000000000"), "{out}");
}

/// A program starts as any program does: no signal blocked or ignored. (The engine is a Rust
/// program, which ignores SIGPIPE, and an ignored signal stays ignored across exec.)
#[test]
fn the_program_starts_with_no_signal_blocked_or_ignored() {
    let mut s = sh("");
    s.argv = vec!["cat".into(), "/proc/self/status".into()];
    let out = stdout(&run(&s));
    for field in ["SigBlk", "SigIgn"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {out}"));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    // And so it dies of SIGPIPE when its reader is gone, as it would outside.
    let o = run(&sh("yes | head -c 1"));
    assert_eq!(stdout(&o), "y");
    assert!(String::from_utf8_lossy(&o.stderr).is_empty(), "{o:?}");
}

#[test]
fn network_is_only_an_own_loopback() {
    // A listener on the host's loopback must not be reachable from inside.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let mut s = sh(&format!(
        "ip -o link | cut -d: -f2; nc -w 1 127.0.0.1 {port} </dev/null && echo reached || echo unreachable; \
         nc -l -p 5000 -e true & sleep 0.1; nc -w 1 127.0.0.1 5000 </dev/null && echo own-lo-works"
    ));
    s.limits.wall_time = Some(Duration::from_secs(10));
    let out = stdout(&run(&s));
    let ifaces: Vec<&str> = out
        .lines()
        .take_while(|l| !l.contains("reach"))
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
    assert!(out.contains("unreachable"), "{out}");
    assert!(out.contains("own-lo-works"), "{out}");
}

#[test]
fn host_processes_are_invisible_and_unkillable() {
    let me = std::process::id();
    let out = stdout(&run(&sh(&format!(
        "ps -o pid,comm | tail -n +2; kill -9 {me} 2>&1 || echo kill-failed"
    ))));
    let pids: Vec<u32> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(pids.iter().all(|p| *p < 10), "{out}");
    assert!(out.contains("kill-failed"), "{out}");
}

#[test]
fn denied_syscalls_fail_and_are_reported_by_name() {
    let o = run(&prog_spec("syscalls", &[]));
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    let out = stdout(&o);
    for name in [
        "mount",
        "unshare",
        "ptrace",
        "keyctl",
        "bpf",
        "io_uring_setup",
        "vsock",
        "chroot",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {out}"));
        assert!(line.starts_with(&format!("{name} -1 ")), "{line}");
    }
    // init (pid 1) belongs to root inside: the program cannot signal it.
    assert!(out.contains("kill1 -1 1"), "{out}");
    let reported: Vec<&str> = o
        .seccomp_violations
        .iter()
        .map(|v| v.syscall.as_str())
        .collect();
    for name in [
        "mount",
        "unshare",
        "ptrace",
        "keyctl",
        "bpf",
        "io_uring_setup",
        "socket",
        "chroot",
    ] {
        assert!(reported.contains(&name), "{name} not in {reported:?}");
    }
}

#[test]
fn the_policy_is_an_allow_list() {
    let o = run(&prog_spec("allowlist", &[]));
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    let out = stdout(&o);
    let errno_of = |name: &str| -> i32 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {out}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Denied and reported by name.
    assert_eq!(errno_of("modify_ldt"), libc::EPERM, "{out}");
    assert_eq!(errno_of("memfd_secret"), libc::EPERM, "{out}");
    assert_eq!(errno_of("open_tree_attr"), libc::EPERM, "{out}");
    // Unknown to the policy (a syscall newer than it, or none at all): ENOSYS, unreported,
    // so that programs fall back.
    assert_eq!(errno_of("unknown_999"), libc::ENOSYS, "{out}");
    assert_eq!(errno_of("clone3"), libc::ENOSYS, "{out}");
    assert_eq!(errno_of("getpid_allowed"), 0, "{out}");
    let reported: Vec<&str> = o
        .seccomp_violations
        .iter()
        .map(|v| v.syscall.as_str())
        .collect();
    for name in ["modify_ldt", "memfd_secret", "open_tree_attr"] {
        assert!(reported.contains(&name), "{name} not in {reported:?}");
    }
    assert!(
        !reported.iter().any(|r| r.contains("999") || *r == "clone3"),
        "{reported:?}"
    );
    assert!(!o.seccomp_violations_capped);
}

#[test]
fn a_storm_of_denied_calls_costs_the_engine_a_bounded_amount() {
    // 200,000 denied calls: the first ones are answered (EPERM, counted), then the engine
    // stops listening and the kernel answers the rest itself (ENOSYS).
    let mut s = prog_spec("allowlist", &["200000"]);
    s.limits.wall_time = Some(Duration::from_secs(60));
    s.limits.cpu_time = Some(Duration::from_secs(60));
    let before = engine_cpu_s();
    let o = run(&s);
    let engine_cpu = engine_cpu_s() - before;
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    let out = stdout(&o);
    let storm = out.lines().find(|l| l.starts_with("storm ")).unwrap();
    let cap = sandbox::MAX_REPORTED_DENIALS;
    // Three denials came before the storm (modify_ldt, memfd_secret, open_tree_attr).
    let eperm = cap - 3;
    assert_eq!(
        storm,
        format!("storm eperm={eperm} enosys={} other=0", 200_000 - eperm),
        "{out}"
    );
    let mount = o
        .seccomp_violations
        .iter()
        .find(|v| v.syscall == "mount")
        .unwrap();
    assert_eq!(mount.count, eperm);
    let total: u64 = o.seccomp_violations.iter().map(|v| v.count).sum();
    assert_eq!(total, cap);
    assert!(o.seccomp_violations_capped);
    // The engine's own work is bounded by the cap, not by the program's 200,000 calls.
    eprintln!(
        "engine CPU {engine_cpu:.3} s for a program of {:.3} s CPU",
        o.cpu_time_s
    );
}

/// CPU time this test process (the engine) has used, user + system.
fn engine_cpu_s() -> f64 {
    // SAFETY: getrusage fills a zeroed struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[test]
fn nothing_of_the_host_shows_inside() {
    // Device uevents go to network namespaces owned by the host's user namespace only. The
    // sandbox's is owned by one the engine made with it (not the sandbox's own, whose root
    // could reconfigure it): outside the sandbox's view. (netns' unit test checks from the
    // host that its owner is not the host's.)
    let o = run(&prog_spec("nsowner", &[]));
    assert_eq!(stdout(&o), "netns owner: outside this sandbox\n", "{o:?}");
    // init is a copy of the engine: its command line, environment and name are wiped.
    let o = run(&sh(
        "tr -d '\\0' < /proc/1/cmdline; echo; cat /proc/1/comm; cat /proc/1/environ >/dev/null 2>&1 || echo no-environ; \
         cat /proc/self/mountinfo",
    ));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("init"), "{out}");
    assert_eq!(lines.next(), Some("init"), "{out}");
    assert_eq!(lines.next(), Some("no-environ"), "{out}");
    // The root filesystem's host path appears nowhere: its layers are named by descriptor.
    let host_root = rootfs();
    let host_root = host_root.to_string_lossy();
    assert!(!out.contains(host_root.as_ref()), "{out}");
    assert!(
        !out.contains("/var/") && !out.contains("sandpit-build"),
        "{out}"
    );
    assert!(out.contains("lowerdir=/proc/self/fd/"), "{out}");
}

#[test]
fn a_root_filesystem_below_a_directory_only_root_may_enter_works() {
    use std::os::unix::fs::PermissionsExt;
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let inner = private.path().join("rootfs");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(rootfs())
        .arg(&inner)
        .status()
        .unwrap();
    assert!(status.success());
    let mut s = sh("echo inside; ls /bin/busybox");
    s.rootfs = sandbox::RootFs::Dir(inner);
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(stdout(&o), "inside\n/bin/busybox\n");
}

#[test]
fn the_x32_abi_is_killed() {
    let o = run(&prog_spec("x32", &[]));
    assert_eq!(o.signal, Some(libc::SIGSYS), "{o:?}");
    assert!(!stdout(&o).contains("survived"));
}

#[test]
fn double_forked_daemons_end_with_the_program() {
    let mut s = prog_spec("daemon", &[]);
    s.limits.wall_time = Some(Duration::from_secs(5));
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert!(o.wall_time_s < 1.0, "{o:?}");
}

#[test]
fn files_go_in_and_outputs_come_back_without_following_symlinks() {
    let mut s = sh("cat in/data.txt > out.txt; ln -s /etc/passwd link; mkfifo fifo; echo done");
    s.files.push(FileIn {
        path: PathBuf::from("in/data.txt"),
        source: FileSource::Bytes(b"payload".to_vec()),
        mode: None,
    });
    s.collect = vec![
        "out.txt".into(),
        "link".into(),
        "fifo".into(),
        "missing".into(),
    ];
    let o = run(&s);
    assert_eq!(stdout(&o), "done\n", "{o:?}");
    assert_eq!(o.files["out.txt"].as_deref(), Ok(&b"payload"[..]));
    assert!(
        o.files["link"].as_ref().unwrap_err().contains("symlink"),
        "{:?}",
        o.files
    );
    assert!(o.files["fifo"]
        .as_ref()
        .unwrap_err()
        .contains("not a regular file"));
    assert!(o.files["missing"]
        .as_ref()
        .unwrap_err()
        .contains("no such file"));
}

#[test]
fn bad_paths_are_refused_before_anything_runs() {
    let mut s = sh("true");
    s.files.push(FileIn {
        path: PathBuf::from("../etc/passwd"),
        source: FileSource::Bytes(vec![]),
        mode: None,
    });
    assert!(engine().run(&s, Default::default()).is_err());
    let mut s = sh("true");
    s.collect = vec!["../../etc/shadow".into()];
    assert!(engine().run(&s, Default::default()).is_err());
    let mut s = sh("true");
    s.argv.clear();
    assert!(engine().run(&s, Default::default()).is_err());
}

/// Every masked /proc path this kernel has is masked read-only: even root inside the sandbox
/// reads nothing there and cannot write (EROFS from the mask, not EACCES from the real file).
#[test]
fn masked_proc_paths_are_read_only_even_for_root_inside() {
    let files = [
        "kcore",
        "keys",
        "timer_list",
        "timer_stats",
        "sched_debug",
        "latency_stats",
        "sysrq-trigger",
    ];
    let dirs = ["acpi", "asound", "scsi"];
    let present = |n: &str| std::path::Path::new("/proc").join(n).exists();
    let files: Vec<&str> = files.into_iter().filter(|n| present(n)).collect();
    let dirs: Vec<&str> = dirs.into_iter().filter(|n| present(n)).collect();
    println!("host has /proc files {files:?}, directories {dirs:?}");
    let mut script = String::new();
    for f in &files {
        script.push_str(&format!(
            "echo f {f} $(wc -c < /proc/{f}) $( (echo h > /proc/{f}) 2>&1 | grep -c 'Read-only');"
        ));
    }
    for d in &dirs {
        script.push_str(&format!(
            "echo d {d} $(ls -A /proc/{d} | wc -l) $( (: > /proc/{d}/x) 2>&1 | grep -c 'Read-only');"
        ));
    }
    script.push_str("echo done");
    let mut s = sh(&script);
    s.uid = 0;
    s.gid = 0;
    let o = run(&s);
    let out = stdout(&o);
    assert!(out.ends_with("done\n"), "{o:?}");
    for (kind, name) in files
        .iter()
        .map(|f| ("f", f))
        .chain(dirs.iter().map(|d| ("d", d)))
    {
        // nothing to read, and the write refused as read-only
        let want = format!("{kind} {name} 0 1");
        assert!(out.lines().any(|l| l == want), "{want:?} not in {out}");
    }
}

#[test]
fn proc_is_fresh_and_masked() {
    let out = stdout(&run(&sh(
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-ro; hostname; \
         for f in kcore keys timer_list sched_debug sysrq-trigger; do \
           [ -e /proc/$f ] && echo masked $f $(wc -c < /proc/$f); done",
    )));
    assert!(out.contains("sys-ro"), "{out}");
    assert_eq!(out.lines().nth(1), Some("sandpit"), "{out}");
    let masked: Vec<&str> = out.lines().filter(|l| l.starts_with("masked")).collect();
    assert!(!masked.is_empty(), "{out}");
    assert!(masked.iter().all(|l| l.ends_with(" 0")), "{out}");
}

#[test]
fn host_files_are_bound_read_only_without_a_copy() {
    use std::os::unix::fs::PermissionsExt;
    // Below a directory only root may enter, as a file store or a build's outputs may be.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = private.path().join("input.txt");
    std::fs::write(&file, "kept by reference\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = private.path().join("build");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.out"), "#!/bin/sh\necho built\n").unwrap();
    std::fs::set_permissions(dir.join("a.out"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = sh("cat /work/in/input.txt; /tmp/build/a.out; \
         echo x >> /work/in/input.txt 2>/dev/null || echo ro-file; \
         touch /tmp/build/new 2>/dev/null || echo ro-dir; \
         rm -f /work/in/input.txt 2>/dev/null || echo kept; ls /work/in");
    s.files.push(FileIn {
        path: PathBuf::from("in/input.txt"),
        source: FileSource::Bind(file.clone()),
        mode: None,
    });
    s.files.push(FileIn {
        path: PathBuf::from("/tmp/build"),
        source: FileSource::Bind(dir.clone()),
        mode: None,
    });
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(
        stdout(&o),
        "kept by reference\nbuilt\nro-file\nro-dir\nkept\ninput.txt\n"
    );
    // Nothing changed on the host, nothing was left there.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "kept by reference\n"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // A bind source that does not exist is the caller's error.
    let mut s = sh("true");
    s.files.push(FileIn {
        path: PathBuf::from("x"),
        source: FileSource::Bind(private.path().join("missing")),
        mode: None,
    });
    assert!(engine().run(&s, Default::default()).is_err());
}

/// A spec that runs test program `burn` bound from a copy in `dir`, and that copy open for
/// writing (the writer is the caller's to drop).
fn burn_open_for_writing(dir: &tempfile::TempDir) -> (Spec, std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("burn");
    std::fs::copy(prog("burn"), &file).unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let mut s = spec(&["/work/burn", "1"]);
    s.files.push(FileIn {
        path: PathBuf::from("burn"),
        source: FileSource::Bind(file),
        mode: None,
    });
    (s, writer)
}

/// Any fork in the engine's process (a library user's `Command`, a compiler the user starts)
/// copies the descriptors open at that moment: one the engine holds while it copies a program
/// in is, for a moment, open for writing in that child too, and exec of the program meanwhile
/// fails with ETXTBSY. The program starts once the writer is gone, as it would a moment later.
#[test]
fn a_program_whose_file_is_open_for_writing_a_moment_longer_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (s, writer) = burn_open_for_writing(&dir);
    let held = Duration::from_millis(300);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(held);
        drop(writer);
    });
    let started = std::time::Instant::now();
    let o = run(&s);
    holder.join().unwrap();
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert!(
        started.elapsed() >= held,
        "the run ended before the writer was gone"
    );
}

/// The wait for a writer of the program's file is bounded: a file that stays open for
/// writing past it (one second) is the run's error, said as such, never a hang.
#[test]
fn a_program_whose_file_stays_open_for_writing_is_an_error_after_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // Open for writing until the run is over.
    let (s, writer) = burn_open_for_writing(&dir);
    let started = std::time::Instant::now();
    let o = run(&s);
    let waited = started.elapsed();
    drop(writer);
    assert_eq!(o.end_reason, EndReason::InternalError, "{o:?}");
    let message = o.message.as_deref().unwrap_or_default();
    assert!(message.contains("Text file busy"), "{message}");
    assert!(
        waited >= Duration::from_secs(1),
        "it gave up after {waited:?}, before its bound"
    );
}
