//! Every limit crossed, every end reason produced, measurement accuracy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandbox::{EndReason, Io, StopHandle, TimeoutKind};

#[test]
fn normal_exit_code_and_stdout() {
    let o = run(&sh("echo hello; exit 3"));
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(o.stdout_bytes, 6);
    assert!(o.message.is_none());
}

#[test]
fn abort_reports_sigabrt_because_the_program_is_not_pid_1() {
    let o = run(&sh("echo $$; kill -ABRT $$"));
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGABRT));
    assert_eq!(o.signal_name.as_deref(), Some("SIGABRT"));
    assert_ne!(stdout(&o).trim(), "1", "the program must not be pid 1");
}

#[test]
fn cpu_time_of_500ms_is_measured_within_10_percent() {
    let o = run(&prog_spec("burn", &["500"]));
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert!(
        (0.45..=0.55).contains(&o.cpu_time_s),
        "cpu_time_s {}",
        o.cpu_time_s
    );
    assert!(o.user_time_s > 0.3, "{o:?}");
}

#[test]
fn peak_memory_of_100_mib_is_reported_between_100_and_112_mib() {
    let mut s = prog_spec("memhog", &["100"]);
    s.limits.memory_bytes = Some(512 << 20);
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    let mib = o.peak_memory_bytes as f64 / (1 << 20) as f64;
    assert!((100.0..=112.0).contains(&mib), "peak {mib} MiB");
}

/// A fresh sandbox's cgroup is made ahead with the limits the last run asked for in place; a
/// run that asks for others is held to its own all the same.
#[test]
fn a_fresh_run_is_held_to_its_own_limits_not_the_last_runs() {
    let with_memory = |mib: u64| {
        let mut s = prog_spec("memhog", &["96"]);
        s.limits.memory_bytes = Some(mib << 20);
        s.limits.pids = Some(if mib > 64 { 64 } else { 8 });
        s
    };
    let (roomy, tight) = (with_memory(256), with_memory(64));
    let ends = |s: &sandbox::Spec| {
        let o = run(s);
        (o.end_reason, o.peak_memory_bytes <= 64 << 20)
    };
    for _ in 0..2 {
        // The first roomy run's cgroup was made ahead with the tight limits of the run before.
        assert_eq!(ends(&roomy), (EndReason::Normal, false));
        assert_eq!(ends(&roomy), (EndReason::Normal, false));
        // And the first tight run's with the roomy ones.
        assert_eq!(ends(&tight), (EndReason::OutOfMemory, true));
        assert_eq!(ends(&tight), (EndReason::OutOfMemory, true));
    }
}

#[test]
fn memory_limit_ends_with_out_of_memory_from_the_oom_counter() {
    let mut s = prog_spec("memhog", &["400"]);
    s.limits.memory_bytes = Some(64 << 20);
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::OutOfMemory, "{o:?}");
    assert!(o.oom_kills >= 1);
    assert!(o.peak_memory_bytes <= 64 << 20);
    // The next run in a fresh cgroup carries no trace of it.
    let o = run(&sh("true"));
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(o.oom_kills, 0);
}

#[test]
fn cpu_limit_of_1s_ends_a_busy_loop_at_most_1_1s() {
    let mut s = prog_spec("burn", &["0"]);
    s.limits.cpu_time = Some(Duration::from_secs(1));
    s.limits.wall_time = Some(Duration::from_secs(5));
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Timeout, "{o:?}");
    assert_eq!(o.timeout, Some(TimeoutKind::Cpu));
    assert!(
        o.cpu_time_s >= 1.0 && o.cpu_time_s <= 1.1,
        "cpu_time_s {}",
        o.cpu_time_s
    );
}

#[test]
fn wall_limit_ends_a_sleeper() {
    let mut s = sh("sleep 10");
    s.limits.wall_time = Some(Duration::from_millis(300));
    let start = Instant::now();
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Timeout, "{o:?}");
    assert_eq!(o.timeout, Some(TimeoutKind::Wall));
    assert!(
        o.wall_time_s >= 0.3 && o.wall_time_s < 0.5,
        "{}",
        o.wall_time_s
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn pids_limit_is_hit_and_reported() {
    let mut s = prog_spec("forkbomb", &["1"]);
    s.limits.pids = Some(16);
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert!(o.pids_limit_hit, "{o:?}");
    assert!(stdout(&o).contains("failed="), "{}", stdout(&o));
    let failed: u64 = stdout(&o)
        .trim()
        .rsplit("failed=")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed > 0, "{}", stdout(&o));
}

#[test]
fn output_limit_truncates_and_ends_the_run() {
    let mut s = sh("yes 0123456789");
    s.limits.output_bytes = Some(1 << 20);
    s.limits.wall_time = Some(Duration::from_secs(10));
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::OutputLimit, "{o:?}");
    assert_eq!(o.stdout.len(), 1 << 20);
    assert!(o.stdout_truncated);
    assert!(o.stdout_bytes > 1 << 20);
    assert!(
        o.stdout_bytes <= (1 << 20) + (64 << 10),
        "{}",
        o.stdout_bytes
    );
    assert!(o.wall_time_s < 5.0);
}

/// Four writers of 1 MiB blocks on both streams: the cap still holds within 64 KiB on each.
#[test]
fn output_limit_holds_within_64_kib_against_parallel_megabyte_writes() {
    let mut s = sh(
        "for i in 1 2 3 4; do dd if=/dev/zero bs=1M count=64 2>/dev/null & \
                    dd if=/dev/zero bs=1M count=64 >&2 2>/dev/null & done; wait",
    );
    s.limits.output_bytes = Some(1 << 20);
    s.limits.wall_time = Some(Duration::from_secs(20));
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::OutputLimit, "{}", o.stdout_bytes);
    for (name, bytes) in [("stdout", o.stdout_bytes), ("stderr", o.stderr_bytes)] {
        assert!(bytes <= (1 << 20) + (64 << 10), "{name}: {bytes} bytes");
    }
    // Whichever stream reached the cap first ended the run; the other may have less.
    assert_eq!(o.stdout.len().max(o.stderr.len()), 1 << 20);
}

#[test]
fn file_size_limit_stops_a_large_write() {
    let mut s =
        sh("dd if=/dev/zero of=/work/big bs=1024 count=4096 2>&1; echo rc=$?; ls -l /work/big");
    s.limits.file_size_bytes = Some(1 << 20);
    let o = run(&s);
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    // dd dies of SIGXFSZ (the shell reports 153 = 128 + 25) or sees EFBIG.
    let out = stdout(&o);
    assert!(out.contains("rc=153") || out.contains("too large"), "{out}");
    assert!(out.contains(" 1048576 "), "{out}");
}

#[test]
fn disk_limit_fills_the_work_dir_and_tmp() {
    let mut s = sh("dd if=/dev/zero of=/work/f bs=1M count=8 2>&1; echo rc=$?; dd if=/dev/zero of=/tmp/f bs=1M count=8 2>&1; echo rc=$?");
    s.limits.disk_bytes = Some(2 << 20);
    s.limits.file_size_bytes = None;
    let o = run(&s);
    let out = stdout(&o);
    assert_eq!(out.matches("No space left on device").count(), 2, "{out}");
    assert_eq!(out.matches("rc=1").count(), 2, "{out}");
}

#[test]
fn open_files_limit_applies() {
    let mut s = sh("ulimit -n");
    s.limits.open_files = Some(37);
    assert_eq!(stdout(&run(&s)).trim(), "37");
}

#[test]
fn stop_handle_ends_the_run_as_stopped() {
    let stop = StopHandle::new().unwrap();
    let s = sh("sleep 20");
    let remote = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        remote.stop();
    });
    let o = engine()
        .run(
            &s,
            Io {
                stop: Some(stop),
                ..Default::default()
            },
        )
        .unwrap();
    t.join().unwrap();
    assert_eq!(o.end_reason, EndReason::Stopped, "{o:?}");
    assert!(o.wall_time_s < 2.0);
}

#[test]
fn a_missing_program_is_an_internal_error_with_a_message() {
    let o = run(&spec(&["/bin/does-not-exist"]));
    assert_eq!(o.end_reason, EndReason::InternalError, "{o:?}");
    let m = o.message.unwrap();
    assert!(
        m.contains("could not be executed") && m.contains("No such file"),
        "{m}"
    );
}

#[test]
fn a_bare_directory_is_a_root_filesystem_the_engine_completes() {
    // No /proc, /dev, /tmp or work directory: the engine provides the mount points.
    let dir = tempfile::tempdir().unwrap();
    let mut s = prog_spec("burn", &["1"]);
    s.rootfs = sandbox::RootFs::Dir(dir.path().into());
    let o = engine().run(&s, Io::default()).unwrap();
    assert_eq!(
        (o.end_reason, o.exit_code),
        (EndReason::Normal, Some(0)),
        "{o:?}"
    );
    // A root filesystem that does not exist is the caller's error.
    s.rootfs = sandbox::RootFs::Dir(dir.path().join("missing"));
    let e = engine().run(&s, Io::default()).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn stdin_bytes_reach_the_program_and_stderr_is_separate() {
    let mut s = sh("cat; echo err >&2");
    s.stdin = sandbox::Stdin::Bytes(b"from stdin\n".to_vec());
    let o = run(&s);
    assert_eq!(stdout(&o), "from stdin\n");
    assert_eq!(o.stderr, b"err\n");
}

#[test]
fn live_sinks_receive_the_output() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Shared::default();
    let o = engine()
        .run(
            &sh("echo one; echo two"),
            Io {
                stdout_sink: Some(Box::new(sink.clone())),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(o.end_reason, EndReason::Normal);
    assert_eq!(&*sink.0.lock().unwrap(), b"one\ntwo\n");
}

#[test]
fn a_stop_before_the_program_starts_ends_the_run_as_stopped() {
    let stop = StopHandle::new().unwrap();
    stop.stop();
    let o = engine()
        .run(
            &sh("echo ran"),
            Io {
                stop: Some(stop),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(o.end_reason, EndReason::Stopped, "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
}

#[test]
fn stack_limit_applies() {
    let mut s = sh("ulimit -s");
    s.limits.stack_bytes = Some(2 << 20);
    assert_eq!(stdout(&run(&s)).trim(), "2048");
}

#[test]
fn an_output_file_over_the_collect_limit_is_refused_not_truncated() {
    let mut s = sh("head -c 5000 /dev/zero > big; head -c 10 /dev/zero > small");
    s.collect = vec!["big".into(), "small".into()];
    s.collect_max_bytes = 4096;
    let o = run(&s);
    assert_eq!(o.files["small"].as_ref().map(Vec::len), Ok(10));
    let err = o.files["big"].as_ref().unwrap_err();
    assert!(err.contains("more than the 4096 allowed"), "{err}");
}

#[test]
fn memory_held_outside_the_heap_is_out_of_memory_never_internal_error() {
    // tmpfs pages, memfd, pipe buffers, socket buffers, many small processes: the OOM killer
    // may pick anyone in the cgroup; the verdict comes from its counter, and init survives.
    for (kind, mib, pids) in [
        ("tmpfs", 50, 64),
        ("memfd", 50, 64),
        ("pipes", 60, 64),
        ("sockets", 60, 64),
        ("procs", 1500, 2000),
    ] {
        let mut s = prog_spec("memkinds", &[kind, &mib.to_string()]);
        s.limits.memory_bytes = Some(32 << 20);
        s.limits.disk_bytes = Some(128 << 20);
        s.limits.pids = Some(pids);
        s.limits.open_files = Some(4096);
        s.limits.wall_time = Some(Duration::from_secs(20));
        let o = run(&s);
        assert_eq!(o.end_reason, EndReason::OutOfMemory, "{kind}: {o:?}");
        assert!(o.oom_kills > 0, "{kind}: {o:?}");
        assert!(!stdout(&o).contains("survived"), "{kind}: {o:?}");
    }
}
