//! Where a run's time goes: runs busybox `true` N times (default 200) and prints the median
//! of each phase of the sandbox's timeline, then the median whole run. Fresh sandboxes, or
//! with `--pool` prepared ones (each run arriving at an idle pool, its shelf full, after a pause).
//! With `--pause`, each fresh run comes after a pause too (an idle engine, as a service that
//! runs a program now and then has): what is made ahead is ready, and no teardown is under way.
//! With `--one-shot`, what `sandpit run` does besides its process's start: N times, a one-shot
//! engine started, its one run, and the engine dropped (which waits for the sandbox's teardown
//! and its cgroup's removal).
//!
//! `cargo run --release -p sandbox --example phases -- ROOTFS [N] [--pool | --pause | --one-shot]`
//! (as root)

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox::{Io, Pool, PoolConfig, RootFs, Sandbox, SandboxConfig, Spec};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        self.0.lock().unwrap().push(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let pooled = args.iter().any(|a| a == "--pool");
    let one_shot = args.iter().any(|a| a == "--one-shot");
    let pause = args.iter().any(|a| a == "--pause");
    args.retain(|a| a != "--pool" && a != "--one-shot" && a != "--pause");
    let rootfs = args
        .first()
        .expect("usage: phases ROOTFS [N] [--pool | --pause | --one-shot]")
        .clone();
    let n: usize = args.get(1).map_or(200, |a| a.parse().expect("N"));
    if one_shot {
        one_shot_engines(&rootfs, n);
        return;
    }
    let lines = Lines::default();
    let sink = lines.clone();
    tracing_subscriber::fmt()
        .with_env_filter("sandbox=debug")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let engine = Arc::new(Sandbox::new(SandboxConfig::default()).expect("engine (run as root)"));
    let spec = Spec::new(RootFs::Dir(rootfs.into()), vec!["/bin/true".into()]);
    let env = spec.env_spec();
    let pool = pooled.then(|| Pool::new(engine.clone(), PoolConfig::default()).expect("pool"));
    let mut whole = Vec::new();
    let mut setup = Vec::new();
    let mut measured: Vec<String> = Vec::new();
    for _ in 0..n {
        if let Some(pool) = &pool {
            // A request arriving at an idle pool: its shelf full, nothing being prepared.
            // The runs that fill the shelf are not counted.
            if pool.ready(&env) == 0 {
                pool.run(&spec, Io::default()).expect("run");
            }
            while pool.ready(&env) < PoolConfig::default().per_env {
                std::thread::sleep(Duration::from_millis(1));
            }
            // After the pool's pause without an ask (100 ms): its refill then waits for the run.
            std::thread::sleep(Duration::from_millis(150));
        } else if pause {
            std::thread::sleep(Duration::from_millis(150));
        }
        engine.settle();
        let before = lines.0.lock().unwrap().len();
        let t = Instant::now();
        let o = match &pool {
            Some(pool) => pool.run(&spec, Io::default()),
            None => engine.run(&spec, Io::default()),
        }
        .expect("run");
        whole.push(t.elapsed().as_secs_f64() * 1e6);
        setup.push(o.setup_s * 1e6);
        // The timeline is logged when the sandbox is gone, which may be after the outcome.
        engine.settle();
        measured.extend(lines.0.lock().unwrap()[before..].iter().cloned());
    }
    drop(pool);
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in &measured {
        let Some(t) = line.split("sandbox timeline: ").nth(1) else {
            continue;
        };
        for part in t.trim().split("; ") {
            let Some((what, us)) = part.rsplit_once(" +") else {
                continue;
            };
            let us: f64 = us.trim_end_matches("µs").parse().unwrap_or(0.0);
            if !phases.contains_key(what) {
                order.push(what.to_string());
            }
            phases.entry(what.to_string()).or_default().push(us);
        }
    }
    let kind = match (pooled, pause) {
        (true, _) => "prepared",
        (false, true) => "fresh (after a pause)",
        (false, false) => "fresh",
    };
    println!("median of {n} {kind} runs of /bin/true, per phase (µs since the previous mark):");
    for what in order {
        let v = phases.get_mut(&what).unwrap();
        println!("  {what:<24} {:>8.0}", median(v));
    }
    println!("  {:<24} {:>8.0}", "setup_s", median(&mut setup));
    println!("  {:<24} {:>8.0}", "whole Sandbox::run", median(&mut whole));
}

/// `sandpit run`'s engine, N times: its start, its one run, its end.
fn one_shot_engines(rootfs: &str, n: usize) {
    let spec = Spec::new(RootFs::Dir(rootfs.into()), vec!["/bin/true".into()]);
    let (mut start, mut run, mut end) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let engine = Sandbox::new(SandboxConfig {
            one_shot: true,
            ..SandboxConfig::default()
        })
        .expect("engine (run as root)");
        start.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        engine.run(&spec, Io::default()).expect("run");
        run.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        drop(engine);
        end.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!("median of {n} one-shot engines (`sandpit run`'s), µs:");
    println!("  {:<24} {:>8.0}", "engine start", median(&mut start));
    println!("  {:<24} {:>8.0}", "its run of /bin/true", median(&mut run));
    println!(
        "  {:<24} {:>8.0}",
        "engine end (teardown)",
        median(&mut end)
    );
}
