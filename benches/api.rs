//! `make bench` row for the HTTP API: executions per second through `POST /api/v1/executions`
//! with `wait: true` (busybox `true`, N clients at once), and the API's added latency over
//! `sandpit run` of the same program. Plain harness: prints one table row per figure.
//!
//! Knobs: SANDPIT_BENCH_CLIENTS (default 8), SANDPIT_BENCH_RUNS (default 200),
//! SANDPIT_BENCH_LATENCY_RUNS (default 30).

#[path = "../tests/server_common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{rootfs, temp_data, Server, TOKEN};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn api_true(addr: &str) -> common::Resp {
    let body = br#"{"environment":"busybox","command":["/bin/true"],"wait":true}"#;
    common::request(
        addr,
        "POST",
        "/api/v1/executions",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let clients = knob("SANDPIT_BENCH_CLIENTS", 8);
    let runs = knob("SANDPIT_BENCH_RUNS", 200);
    let lat_runs = knob("SANDPIT_BENCH_LATENCY_RUNS", 30);
    let data = temp_data();
    let server = Server::start(data.path(), &[]);
    let real = common::core_works();

    // Latency: one at a time, API vs `sandpit run`.
    let mut api = Vec::new();
    let mut ended_normal = 0;
    for _ in 0..lat_runs {
        let t = Instant::now();
        let r = api_true(&server.addr);
        api.push(t.elapsed());
        if r.status == 201 && r.json()["end_reason"] == "normal" {
            ended_normal += 1;
        }
    }
    let mut cli = Vec::new();
    for _ in 0..lat_runs {
        let t = Instant::now();
        let _ = Command::new(env!("CARGO_BIN_EXE_sandpit"))
            .args(["run", "--rootfs"])
            .arg(rootfs())
            .args(["--", "/bin/true"])
            .output();
        cli.push(t.elapsed());
    }
    // The same program through the library in this process: what the engine itself costs.
    let mut lib = Vec::new();
    if let Ok(engine) = sandbox::Sandbox::new(sandbox::SandboxConfig::default()) {
        let spec = sandbox::Spec::new(
            sandbox::RootFs::Dir(rootfs()),
            vec!["/bin/true".to_string()],
        );
        for _ in 0..lat_runs {
            let t = Instant::now();
            let _ = engine.run(&spec, sandbox::Io::default());
            lib.push(t.elapsed());
        }
    }
    let lib_ms = if lib.is_empty() {
        f64::NAN
    } else {
        median(lib).as_secs_f64() * 1e3
    };
    let (api_ms, cli_ms) = (
        median(api).as_secs_f64() * 1e3,
        median(cli).as_secs_f64() * 1e3,
    );

    // Throughput: `clients` clients at once, `runs` executions in all.
    let per_client = runs.div_ceil(clients);
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                (0..per_client)
                    .filter(|_| {
                        let r = api_true(&addr);
                        r.status == 201 && r.json()["status"] == "ended"
                    })
                    .count()
            })
        })
        .collect();
    let done: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let secs = start.elapsed().as_secs_f64();

    println!();
    println!("| API figure (busybox /bin/true) | value |");
    println!("|---|---|");
    println!(
        "| executions/s through the API (wait: true, {clients} clients, {done} executions) | {:.1} |",
        done as f64 / secs
    );
    println!("| API latency, one at a time (median of {lat_runs}) | {api_ms:.2} ms |");
    println!("| `sandpit run` latency (median of {lat_runs}) | {cli_ms:.2} ms |");
    println!("| in-process `Sandbox::run` latency (median of {lat_runs}) | {lib_ms:.2} ms |");
    println!(
        "| API added latency over `sandpit run` (a process that also starts the engine) | {:+.2} ms |",
        api_ms - cli_ms
    );
    println!(
        "| API added latency over the in-process run (HTTP, store, files, queue) | {:+.2} ms |",
        api_ms - lib_ms
    );
    if !real || ended_normal < lat_runs {
        println!(
            "| note | the sandbox core did not run the program ({ended_normal}/{lat_runs} ended normal): these figures measure the API path only |"
        );
    }
}
