//! The warm pool: sandboxes prepared ahead, each used by one run only.

mod common;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use sandbox::{EndReason, Io, Pool, PoolConfig, PoolRuns, Sandbox, SandboxConfig, Spec};

/// One engine for this file's tests (two engines in a process would hand out the same id
/// ranges), starting its ranges away from the shared test engine's.
fn shared_engine() -> Arc<Sandbox> {
    static ENGINE: OnceLock<Arc<Sandbox>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let config = SandboxConfig {
                host_id_base: 200_000_000,
                max_sandboxes: 64,
                ..SandboxConfig::default()
            };
            Arc::new(Sandbox::new(config).expect("engine"))
        })
        .clone()
}

/// This file's tests one at a time: each counts the sandboxes and cgroups of its own pool.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pool(per_env: usize) -> Pool {
    let config = PoolConfig {
        per_env,
        ..PoolConfig::default()
    };
    Pool::new(shared_engine(), config).expect("pool")
}

/// Waits until the pool holds `n` sandboxes ready for `spec`'s environment (the background
/// thread prepares them); not a timing assertion: the bound only keeps a broken pool from
/// hanging the test.
fn wait_ready(pool: &Pool, spec: &Spec, n: usize) {
    let env = spec.env_spec();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.ready(&env) < n {
        assert!(
            Instant::now() < deadline,
            "the pool never got {n} sandboxes ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn traces(mode: &str) -> Spec {
    let mut s = prog_spec("traces", &[mode]);
    s.limits.memory_bytes = Some(256 << 20);
    s
}

#[test]
fn a_run_takes_a_prepared_sandbox_and_the_pool_refills() {
    let _serial = one_at_a_time();
    let pool = pool(2);
    let spec = sh("echo pooled");
    // The first ask finds nothing ready: a fresh sandbox runs it, and the pool starts to fill.
    let o = pool.run(&spec, Io::default()).unwrap();
    assert_eq!(
        (o.end_reason, stdout(&o)),
        (EndReason::Normal, "pooled\n".into())
    );
    wait_ready(&pool, &spec, 2);
    let o = pool.run(&spec, Io::default()).unwrap();
    assert_eq!(
        (o.end_reason, stdout(&o)),
        (EndReason::Normal, "pooled\n".into())
    );
    // setup_s counts from the ask, not from when the sandbox was prepared.
    assert!(o.setup_s > 0.0 && o.setup_s < 5.0, "{}", o.setup_s);
    // The pool says how its runs found their sandbox.
    assert_eq!(
        pool.runs(),
        PoolRuns {
            prepared: 1,
            fresh: 1
        }
    );
    wait_ready(&pool, &spec, 2);
    // Another environment (another work directory) is kept apart.
    let mut other = sh("pwd");
    other.workdir = "/elsewhere".into();
    let o = pool.run(&other, Io::default()).unwrap();
    assert_eq!(stdout(&o), "/elsewhere\n");
    wait_ready(&pool, &other, 2);
    assert_eq!(pool.ready(&spec.env_spec()), 2);
    pool.clear();
    assert_eq!(pool.ready(&spec.env_spec()), 0);
}

/// Preparing beside a run slows it, so a shelf asked for after a pause that still holds a
/// sandbox for the next run is refilled only after the pool's runs: the sandbox a run took is
/// replaced after that run, not during it. An empty shelf is refilled at once, runs or not.
#[test]
fn the_pool_refills_a_shelf_that_can_serve_the_next_run_after_its_runs() {
    let _serial = one_at_a_time();
    let pool = pool(2);
    let spec = sh("sleep 2");
    let env = spec.env_spec();
    pool.run(&sh("true"), Io::default()).unwrap();
    wait_ready(&pool, &spec, 2);
    // The pool's pause (100 ms) without an ask.
    std::thread::sleep(Duration::from_millis(300));
    std::thread::scope(|s| {
        let run = s.spawn(|| pool.run(&spec, Io::default()).unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.ready(&env) > 1 {
            assert!(Instant::now() < deadline, "the run never took a sandbox");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Taken. For the next 600 ms the run is under way (its program sleeps 2 s), and a
        // preparing thread would have the shelf full again in a few milliseconds.
        let taken = Instant::now();
        let mut seen = Vec::new();
        while taken.elapsed() < Duration::from_millis(600) {
            seen.push(pool.ready(&env));
            std::thread::sleep(Duration::from_millis(10));
        }
        // A second run beside it empties the shelf (its take follows its start at once; the
        // 100 ms only make sure it happened): that is refilled while both run.
        let second = s.spawn(|| pool.run(&spec, Io::default()).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        wait_ready(&pool, &spec, 1);
        assert!(
            !run.is_finished(),
            "the emptied shelf was refilled only after the first run had ended"
        );
        for run in [run, second] {
            let o = run.join().unwrap();
            assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "refilled during the run: {seen:?}"
        );
    });
    // After them, the shelf is full again.
    wait_ready(&pool, &spec, 2);
}

#[test]
fn no_run_sees_a_trace_of_an_earlier_one() {
    let _serial = one_at_a_time();
    let pool = pool(2);
    let leave = traces("leave");
    let find = traces("find");
    assert_eq!(leave.env_spec(), find.env_spec());
    // Fill the pool, leave traces in a prepared sandbox, then look for them in the next
    // prepared ones (twice: each sandbox ready at the time of the leaving run).
    let _ = pool.run(&find, Io::default()).unwrap();
    wait_ready(&pool, &leave, 2);
    let o = pool.run(&leave, Io::default()).unwrap();
    assert_eq!(
        (o.end_reason, stdout(&o)),
        (EndReason::Normal, "left\n".into()),
        "{o:?}"
    );
    assert!(o.peak_memory_bytes >= 48 << 20, "{o:?}");
    for _ in 0..2 {
        wait_ready(&pool, &find, 1);
        let o = pool.run(&find, Io::default()).unwrap();
        assert_eq!(o.end_reason, EndReason::Normal, "{o:?}");
        assert_eq!(stdout(&o), "looked\n", "traces found: {o:?}");
        // The cgroup's counters are the run's own.
        assert!(o.peak_memory_bytes < 16 << 20, "{o:?}");
        assert!(o.cpu_time_s < 0.5, "{o:?}");
    }
}

/// A shelf's sandboxes are prepared with the cgroup limits of the run asked for last in place.
/// A run that asks for other limits gets its own all the same, and the next sandboxes are
/// prepared with those.
#[test]
fn a_prepared_sandbox_enforces_its_runs_limits_not_those_it_was_prepared_with() {
    let _serial = one_at_a_time();
    let pool = pool(1);
    let with_memory = |mib: u64| {
        let mut s = prog_spec("memhog", &["96"]);
        s.limits.memory_bytes = Some(mib << 20);
        s
    };
    let (roomy, tight) = (with_memory(256), with_memory(64));
    assert_eq!(roomy.env_spec(), tight.env_spec());
    let ends = |spec: &Spec| {
        wait_ready(&pool, spec, 1);
        let o = pool.run(spec, Io::default()).unwrap();
        (o.end_reason, o.peak_memory_bytes <= 64 << 20)
    };
    // Fresh: the shelf fills with the roomy limits in place.
    assert_eq!(
        pool.run(&roomy, Io::default()).unwrap().end_reason,
        EndReason::Normal
    );
    // Prepared with 256 MiB, run with 64: the run's limit holds.
    assert_eq!(ends(&tight), (EndReason::OutOfMemory, true));
    // Prepared with 64 MiB (the last ask's), run with 256: not held to the shelf's.
    assert_eq!(ends(&roomy), (EndReason::Normal, false));
    // Prepared with 256 MiB, run with 256: the limits in place are the run's.
    assert_eq!(ends(&roomy), (EndReason::Normal, false));
    // And the same for a tight run after a tight one.
    assert_eq!(ends(&tight), (EndReason::OutOfMemory, true));
    assert_eq!(ends(&tight), (EndReason::OutOfMemory, true));
}

#[test]
fn dropping_the_pool_ends_every_sandbox_it_kept() {
    let _serial = one_at_a_time();
    let engine = shared_engine();
    let left = || cgroups_left_by(&[&engine]);
    let before = left().len();
    {
        let pool = pool(3);
        let spec = sh("true");
        let _ = pool.run(&spec, Io::default()).unwrap();
        wait_ready(&pool, &spec, 3);
        assert!(left().len() >= before + 3);
    }
    // The one that ran ended in the engine's background (settle waits for it).
    engine.settle();
    let after = left().len();
    assert!(after <= before, "cgroups left: {:?}", left());
}

#[test]
fn a_pool_of_none_runs_fresh_sandboxes() {
    let _serial = one_at_a_time();
    let pool = pool(0);
    let spec = sh("echo fresh");
    let o = pool.run(&spec, Io::default()).unwrap();
    assert_eq!(stdout(&o), "fresh\n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.ready(&spec.env_spec()), 0);
}
