//! What a sandbox takes of the kernel's per-user quotas counts against its own quota only:
//! host root and other sandboxes never notice.

mod common;

use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::*;
use sandbox::{EndReason, Io, Outcome, Spec, StopHandle};

/// One test at a time: the quotas and id ranges are shared by every sandbox of the process.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forwards what the program prints, so the test knows when it holds the quota.
struct Lines(Sender<String>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `spec` until it prints "holding", calls `check` while it holds, then stops it.
fn while_holding<T>(spec: Spec, check: impl FnOnce(&str) -> T) -> (T, Outcome) {
    let (tx, rx) = channel();
    let stop = StopHandle::new().unwrap();
    let io = Io {
        stdout_sink: Some(Box::new(Lines(tx))),
        stop: Some(stop.clone()),
        ..Default::default()
    };
    let run = std::thread::spawn(move || engine().run(&spec, io).unwrap());
    let Ok(held) = rx.recv_timeout(Duration::from_secs(20)) else {
        panic!(
            "the program never said it holds the quota: {:?}",
            run.join()
        );
    };
    assert!(held.starts_with("holding "), "{held}");
    let result = check(&held);
    stop.stop();
    let outcome = run.join().unwrap();
    (result, outcome)
}

fn quota_spec(what: &str) -> Spec {
    let mut s = prog_spec("quotas", &[what]);
    s.limits.open_files = Some(4096);
    s.limits.wall_time = Some(Duration::from_secs(30));
    s
}

#[test]
fn inotify_instances_taken_inside_leave_host_roots_alone() {
    let _serial = serial();
    let (host_ok, o) = while_holding(quota_spec("inotify"), |held| {
        let n: u64 = held.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(n > 0, "{held}");
        // SAFETY: inotify_init1 returns a new fd or -1; closed at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
        }
        fd >= 0
    });
    assert_eq!(o.end_reason, EndReason::Stopped, "{o:?}");
    assert!(
        host_ok,
        "host root could not create an inotify instance while a sandbox held its"
    );
}

#[test]
fn pending_signals_taken_inside_leave_host_roots_alone() {
    let _serial = serial();
    let (host_ok, o) = while_holding(quota_spec("signals"), |held| {
        assert!(
            held.contains("errno 11"),
            "sigqueue should stop with EAGAIN: {held}"
        );
        // A pending signal of host root's own: still possible.
        let mut set: libc::sigset_t = unsafe_zeroed();
        // SAFETY: sigset operations on a local set; the signal stays blocked in this thread
        // and is taken back at once with sigtimedwait.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGRTMIN() + 1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let ok = libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                libc::getpid(),
                libc::gettid(),
                libc::SIGRTMIN() + 1,
                &info_for(libc::SIGRTMIN() + 1),
            ) == 0;
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
            ok
        }
    });
    assert_eq!(o.end_reason, EndReason::Stopped, "{o:?}");
    assert!(
        host_ok,
        "host root could not queue a signal while a sandbox held its quota"
    );
}

#[test]
fn pipe_buffers_taken_by_one_sandbox_leave_the_next_alone() {
    let _serial = serial();
    let (checked, o) = while_holding(quota_spec("pipes"), |held| {
        let n: u64 = held.split_whitespace().nth(1).unwrap().parse().unwrap();
        // The soft limit (16384 pages by default) is reached after about 64 grown pipes.
        assert!(n >= 16, "{held}");
        run(&prog_spec("quotas", &["pipecheck"]))
    });
    assert_eq!(o.end_reason, EndReason::Stopped, "{o:?}");
    assert_eq!(
        stdout(&checked),
        "default 65536 grow 1048576 0\n",
        "another sandbox's pipes shrank this one's"
    );
}

#[test]
fn sandboxes_that_exist_at_once_have_their_own_host_ids() {
    let _serial = serial();
    let (other_uid, _) = while_holding(quota_spec("inotify"), |_| {
        let o = run(&sh("cat /proc/self/uid_map"));
        stdout(&o)
    });
    // Once the others have ended (in the engine's background), a sandbox exists alone.
    engine().settle();
    let alone = stdout(&run(&sh("cat /proc/self/uid_map")));
    // Inside both: 0 → some base, 65536 ids; a sandbox that exists beside another gets
    // another range than one that exists alone.
    let base = |map: &str| -> u64 { map.split_whitespace().nth(1).unwrap().parse().unwrap() };
    assert_eq!(other_uid.split_whitespace().nth(2), Some("65536"));
    assert_eq!(alone.split_whitespace().nth(2), Some("65536"));
    assert_ne!(base(&other_uid), base(&alone), "{other_uid} {alone}");
}

/// The host ids are unique across processes too: a sandbox of another process's engine (a
/// second `sandpit run`, the CLI beside the server) never gets the range of one that exists
/// here. The test runs itself as the other process.
#[test]
fn a_sandbox_of_another_process_gets_another_host_id_range() {
    const CHILD: &str = "SANDPIT_TEST_OTHER_PROCESS_RANGE";
    let first_id = |map: &str| -> String { map.split_whitespace().nth(1).unwrap().to_owned() };
    if std::env::var_os(CHILD).is_some() {
        let other = sandbox::Sandbox::new(sandbox::SandboxConfig::default()).expect("engine");
        let o = other
            .run(&sh("cat /proc/self/uid_map"), Io::default())
            .unwrap();
        println!("range-of-the-other-process {}", first_id(&stdout(&o)));
        std::process::exit(0);
    }
    let _serial = serial();
    let mut spec = sh("read a b c < /proc/self/uid_map; echo holding $b; exec sleep 30");
    spec.limits.wall_time = Some(Duration::from_secs(30));
    let (other, o) = while_holding(spec, |held| {
        let here = held.split_whitespace().nth(1).unwrap().to_owned();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_sandbox_of_another_process_gets_another_host_id_range",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "the other process: {text}");
        let other = text
            .lines()
            .find_map(|l| l.strip_prefix("range-of-the-other-process "))
            .unwrap_or_else(|| panic!("the other process printed no range: {text}"))
            .to_owned();
        (here, other)
    });
    assert_eq!(o.end_reason, EndReason::Stopped, "{o:?}");
    let (here, other) = other;
    assert_ne!(
        here, other,
        "two processes' sandboxes share host ids from {here}"
    );
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for plain C structs (sigset_t) for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn info_for(signal: i32) -> libc::siginfo_t {
    let mut info: libc::siginfo_t = unsafe_zeroed();
    info.si_signo = signal;
    info.si_code = -1; // SI_QUEUE
    info
}
