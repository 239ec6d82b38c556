//! The two steps of a run: a sandbox prepared for an environment, then one program in it.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::*;
use sandbox::{EndReason, Error, Io};

/// One test at a time: the leak check counts every sandbox of this process.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_prepared_sandbox_runs_its_program_like_a_fresh_run() {
    let _serial = serial();
    let s = sh("echo $((6 * 7)); cat /proc/self/cgroup >/dev/null; id -u");
    let prepared = engine().prepare(&s.env_spec()).expect("prepare");
    assert_eq!(prepared.env(), &s.env_spec());
    let o = prepared.run(&s, Io::default()).expect("run");
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
    assert_eq!(stdout(&o), "42\n1000\n");
    assert_eq!(
        o,
        run(&s).tap(|f| {
            // Measurements differ from run to run; what the program did does not.
            f.cpu_time_s = o.cpu_time_s;
            f.user_time_s = o.user_time_s;
            f.system_time_s = o.system_time_s;
            f.wall_time_s = o.wall_time_s;
            f.setup_s = o.setup_s;
            f.peak_memory_bytes = o.peak_memory_bytes;
        })
    );
}

#[test]
fn limits_are_the_programs_not_the_environments() {
    let _serial = serial();
    // Prepared without knowing the program; the program's limits still hold.
    let mut hog = prog_spec("memhog", &["300"]);
    hog.limits.memory_bytes = Some(32 << 20);
    let prepared = engine().prepare(&hog.env_spec()).unwrap();
    let o = prepared.run(&hog, Io::default()).unwrap();
    assert_eq!(o.end_reason, EndReason::OutOfMemory, "{o:?}");

    let mut spin = prog_spec("burn", &["0"]);
    spin.limits.cpu_time = Some(Duration::from_millis(300));
    let prepared = engine().prepare(&spin.env_spec()).unwrap();
    let o = prepared.run(&spin, Io::default()).unwrap();
    assert_eq!(o.end_reason, EndReason::Timeout, "{o:?}");
    assert!(o.cpu_time_s >= 0.3 && o.cpu_time_s < 0.4, "{o:?}");
}

#[test]
fn a_spec_for_another_environment_is_refused() {
    let _serial = serial();
    let s = sh("true");
    let prepared = engine().prepare(&s.env_spec()).unwrap();
    let mut other = sh("true");
    other.workdir = "/elsewhere".into();
    assert!(matches!(
        prepared.run(&other, Io::default()),
        Err(Error::InvalidSpec(_))
    ));
}

#[test]
fn sandboxes_prepared_ahead_and_dropped_unused_leave_nothing() {
    let _serial = serial();
    let s = sh("echo one");
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prepared: Vec<_> = (0..4)
        .map(|_| engine().prepare(&s.env_spec()).unwrap())
        .collect();
    // Used out of order, two of them; the others are dropped unused.
    let mut iter = prepared.into_iter().rev();
    for p in iter.by_ref().take(2) {
        let o = p.run(&s, Io::default()).unwrap();
        assert_eq!(stdout(&o), "one\n");
    }
    drop(iter);
    // Dropping kills and reaps init and removes the cgroup before it returns; the ends of
    // the two that ran are the reaper's, and settle waits for those.
    engine().settle();
    assert!(own_cgroups().is_empty(), "left: {:?}", own_cgroups());
    assert_eq!(processes_of_uid_range(), 0);
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts_before.lines().count(), mounts_after.lines().count());
}

#[test]
fn a_sandbox_whose_setup_fails_is_an_error_of_the_sandbox() {
    let _serial = serial();
    let mut s = sh("true");
    // procfs cannot be a layer of an overlay: the sandbox cannot be made. That is the
    // sandbox's failure (internal-error from run), not the caller's.
    s.rootfs = sandbox::RootFs::Dir("/proc".into());
    match engine().prepare(&s.env_spec()) {
        Err(Error::SandboxFailed(m)) => assert!(m.contains("root filesystem"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let o = engine().run(&s, Io::default()).unwrap();
    assert_eq!(o.end_reason, EndReason::InternalError, "{o:?}");
    engine().settle();
    assert!(own_cgroups().is_empty(), "left: {:?}", own_cgroups());
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl<T> Tap for T {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

/// The engine's copy-on-write faults so far (minor faults of the whole process).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Field 10, counted after the command name (which ends at the last ')').
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}

/// No sandbox's init is a copy of the engine (its spawner clones them): memory the engine
/// writes while a sandbox exists costs it no copy-on-write fault. Cloned from the engine, an
/// init write-protected every page of it, and a server copied its hot heap once per sandbox.
#[test]
fn the_engine_writes_its_memory_while_sandboxes_exist_without_copying_it() {
    let _serial = serial();
    // Started first: the engine's spawner, forked when it starts, shares what exists then.
    let engine = engine();
    const PAGES: usize = 16384;
    let len = PAGES * 4096;
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let buf = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(buf, libc::MAP_FAILED);
    // Small pages: a huge page would be copied in one fault, and hide what is counted.
    // SAFETY: advice on the mapping just made.
    unsafe { libc::madvise(buf, len, libc::MADV_NOHUGEPAGE) };
    let pages = buf as *mut u8;
    let touch = |value: u8| {
        for page in 0..PAGES {
            // SAFETY: inside the mapping.
            unsafe { pages.add(page * 4096).write_volatile(value) };
        }
    };
    touch(1);
    let prepared = engine.prepare(&sh("true").env_spec()).expect("prepare");
    let before = minor_faults();
    touch(2);
    let faults = minor_faults() - before;
    drop(prepared);
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(buf, len) };
    assert!(
        faults < PAGES as u64 / 2,
        "writing {PAGES} pages while a sandbox existed took {faults} faults"
    );
}

/// The spawners among this process's children.
fn spawners() -> std::collections::BTreeSet<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            (field("Name:")? == "sandpit-spawner" && field("PPid:")? == me).then_some(pid)
        })
        .collect()
}

/// An engine whose spawner was killed goes on: it clones its sandboxes itself.
#[test]
fn an_engine_whose_spawner_died_still_runs_sandboxes() {
    let _serial = serial();
    let others = spawners();
    let engine = sandbox::Sandbox::new(sandbox::SandboxConfig::default()).expect("engine");
    let mine: Vec<i32> = spawners().difference(&others).copied().collect();
    assert_eq!(mine.len(), 1, "the new engine's spawner: {mine:?}");
    // SAFETY: SIGKILL to the spawner this test's engine just forked.
    assert_eq!(unsafe { libc::kill(mine[0], libc::SIGKILL) }, 0);
    for _ in 0..2 {
        let o = engine.run(&sh("echo ok"), Io::default()).unwrap();
        assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
        assert_eq!(stdout(&o), "ok\n");
    }
}
