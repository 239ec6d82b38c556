//! `make bench` row for the HTTP API: executions per second through `POST /api/v1/executions`
//! with `wait: true` (busybox `true`, N clients at once), and the API's added latency over
//! `sandpit run` of the same program. Plain harness: prints one table row per figure.
//!
//! Knobs: SANDPIT_BENCH_CLIENTS (default 8), SANDPIT_BENCH_RUNS (default 200),
//! SANDPIT_BENCH_LATENCY_RUNS (default 200).

#[path = "../tests/server_common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{rootfs, temp_data, KeepAlive, Server, TOKEN};

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

/// `POST /api/v1/executions` of busybox `true` with `wait: true` on a keep-alive connection:
/// the answer's status and whether the execution ended normally. A failed request is tried
/// once more (on a new connection).
fn run_true(client: &mut KeepAlive) -> (u16, bool) {
    let body = br#"{"environment":"busybox","command":["/bin/true"],"wait":true}"#;
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let answer = client
        .request("POST", "/api/v1/executions", &headers, body)
        .or_else(|_| client.request("POST", "/api/v1/executions", &headers, body));
    match answer {
        Ok(r) => {
            let normal = serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|v| v["end_reason"] == "normal");
            (r.status, normal)
        }
        Err(_) => (0, false),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let clients = knob("SANDPIT_BENCH_CLIENTS", 8);
    let runs = knob("SANDPIT_BENCH_RUNS", 200);
    let lat_runs = knob("SANDPIT_BENCH_LATENCY_RUNS", 200);
    let data = temp_data();
    let server = Server::start(data.path(), &[]);
    let real = common::core_works();

    // Latency: one at a time over one keep-alive connection, API vs `sandpit run`.
    let mut api = Vec::new();
    let mut ended_normal = 0;
    let mut client = KeepAlive::new(&server.addr);
    for _ in 0..lat_runs {
        let t = Instant::now();
        let (status, normal) = run_true(&mut client);
        api.push(t.elapsed());
        if status == 201 && normal {
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
    // The same program through the library in this process: what the engine itself costs,
    // fresh, and through a warm pool as the server runs it (one at a time, the pool refilling
    // in the background as it does behind the API).
    let mut lib = Vec::new();
    let mut pooled = Vec::new();
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
        let engine = std::sync::Arc::new(engine);
        if let Ok(pool) = sandbox::Pool::new(engine, sandbox::PoolConfig::default()) {
            for _ in 0..lat_runs {
                let t = Instant::now();
                let _ = pool.run(&spec, sandbox::Io::default());
                pooled.push(t.elapsed());
            }
        }
    }
    let ms = |xs: Vec<Duration>| {
        if xs.is_empty() {
            f64::NAN
        } else {
            median(xs).as_secs_f64() * 1e3
        }
    };
    let (lib_ms, pooled_ms) = (ms(lib), ms(pooled));
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
                let mut client = KeepAlive::new(&addr);
                (0..per_client)
                    .filter(|_| run_true(&mut client).0 == 201)
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
        "| executions/s through the API (wait: true, {clients} keep-alive clients, {done} executions) | {:.1} |",
        done as f64 / secs
    );
    println!("| API latency, one at a time, keep-alive (median of {lat_runs}) | {api_ms:.2} ms |");
    println!("| `sandpit run` latency (median of {lat_runs}) | {cli_ms:.2} ms |");
    println!("| in-process `Sandbox::run` latency (median of {lat_runs}) | {lib_ms:.2} ms |");
    println!(
        "| API added latency over `sandpit run` (a process that also starts the engine) | {:+.2} ms |",
        api_ms - cli_ms
    );
    println!(
        "| in-process `Pool::run` latency, warm pool (median of {lat_runs}) | {pooled_ms:.2} ms |"
    );
    println!(
        "| API added latency over the in-process run through the warm pool, as the server runs it (HTTP, store, files) | {:+.2} ms |",
        api_ms - pooled_ms
    );
    println!(
        "| API added latency over the in-process fresh run | {:+.2} ms |",
        api_ms - lib_ms
    );
    if !real || ended_normal < lat_runs {
        println!(
            "| note | the sandbox core did not run the program ({ended_normal}/{lat_runs} ended normal): these figures measure the API path only |"
        );
    }
}
