//! Runs of busybox `true`, fresh and in the warm pool: the median latency of one run (request
//! to outcome) and runs per second at 1, 2, 4 and 8 workers, teardown included (a run counts
//! once its sandbox is gone: cgroup removed, init reaped). Beside them, in the same run, two
//! floors that no sandbox can go under on this machine: the same program started, run and
//! waited for with no sandbox at all (fork, chroot into ROOTFS, exec), and the same with a new
//! network namespace per run, the one part of a sandbox the kernel makes and destroys dearest
//! (its asynchronous teardown competes for the CPUs within the row; the last one's is not
//! counted).
//!
//! `cargo run --release -p sandbox --example throughput -- ROOTFS [N]` (as root)

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox::{EndReason, Io, Pool, PoolConfig, RootFs, Sandbox, SandboxConfig, Spec};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn check(o: sandbox::Outcome) {
    assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
}

/// Runs per second with `workers` threads running `n` runs in all, until the last sandbox
/// has ended (the engine ends them in the background).
fn rate(engine: &Sandbox, workers: usize, n: usize, run: &(dyn Fn() + Sync)) -> f64 {
    engine.settle();
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let share = n / workers + usize::from(w < n % workers);
            s.spawn(move || (0..share).for_each(|_| run()));
        }
    });
    engine.settle();
    n as f64 / start.elapsed().as_secs_f64()
}

/// The program alone: forked, chrooted into `rootfs` (in a new network namespace with
/// `netns`), exec'd and waited for.
fn bare_run(rootfs: &Path, netns: bool) {
    let mut command = Command::new("/bin/true");
    let root = rootfs.to_path_buf();
    // SAFETY: runs in the forked child before exec; unshare, chroot and chdir are
    // async-signal-safe and it allocates nothing (the path was made before the fork).
    unsafe {
        command.pre_exec(move || {
            if netns && libc::unshare(libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::os::unix::fs::chroot(&root)?;
            std::env::set_current_dir("/")
        });
    }
    let status = command.status().expect("spawning /bin/true");
    assert!(status.success(), "{status}");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rootfs = args.next().expect("usage: throughput ROOTFS [N]");
    let n: usize = args.next().map_or(400, |a| a.parse().expect("N"));
    let engine = Arc::new(Sandbox::new(SandboxConfig::default()).expect("engine (run as root)"));
    let spec = Spec::new(RootFs::Dir(rootfs.clone().into()), vec!["/bin/true".into()]);
    let env = spec.env_spec();

    let mut fresh = Vec::new();
    for _ in 0..n / 2 {
        // A request arriving at an idle engine: the last run's end (background) is done.
        engine.settle();
        let t = Instant::now();
        check(engine.run(&spec, Io::default()).expect("run"));
        fresh.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let pool = Pool::new(engine.clone(), PoolConfig::default()).expect("pool");
    let mut pooled = Vec::new();
    let mut setup = Vec::new();
    for _ in 0..n / 2 {
        // A request finding its shelf full, soon after the last one (within the pool's pause,
        // so the shelf is refilled beside it; `phases --pool` measures one after a pause).
        if pool.ready(&env) == 0 {
            check(pool.run(&spec, Io::default()).expect("run"));
        }
        while pool.ready(&env) < PoolConfig::default().per_env {
            std::thread::sleep(Duration::from_millis(1));
        }
        engine.settle();
        let t = Instant::now();
        let o = pool.run(&spec, Io::default()).expect("run");
        pooled.push(t.elapsed().as_secs_f64() * 1e3);
        setup.push(o.setup_s * 1e3);
        check(o);
    }
    drop(pool);
    println!("busybox /bin/true, {} runs each (ms)", n / 2);
    println!(
        "  {:<44} {:>8.3}",
        "fresh Sandbox::run, median",
        median(&mut fresh)
    );
    println!(
        "  {:<44} {:>8.3}",
        "prepared sandbox (Pool::run), median",
        median(&mut pooled)
    );
    println!(
        "  {:<44} {:>8.3}",
        "  of which setup_s, median",
        median(&mut setup)
    );
    println!("runs/s, teardown included, {n} runs per row");
    println!(
        "  {:>7} {:>10} {:>10} {:>18} {:>18}",
        "workers", "fresh", "pool", "fork+exec alone", "+ network ns"
    );
    let rootfs = Path::new(&rootfs);
    for workers in [1, 2, 4, 8] {
        let fresh = rate(&engine, workers, n, &|| {
            check(engine.run(&spec, Io::default()).expect("run"))
        });
        let pool = Pool::new(
            engine.clone(),
            PoolConfig {
                per_env: workers,
                ..PoolConfig::default()
            },
        )
        .expect("pool");
        let pooled = rate(&engine, workers, n, &|| {
            check(pool.run(&spec, Io::default()).expect("run"))
        });
        drop(pool);
        let alone = rate(&engine, workers, n, &|| bare_run(rootfs, false));
        let netns = rate(&engine, workers, n, &|| bare_run(rootfs, true));
        println!("  {workers:>7} {fresh:>10.0} {pooled:>10.0} {alone:>18.0} {netns:>18.0}");
    }
}
