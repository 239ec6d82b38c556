//! `make bench` row for programs wired by pipes: a ping-pong of 100,000 lines between an
//! "interactor" and a "solution", each in its own sandbox (`Sandbox::run_group`, kernel pipes
//! between the sandboxes), against the same two programs connected by plain pipes on the host
//! (the floor). The interactor times its own loop, so the figure is the round trip, not the
//! sandboxes' setup (shown apart). Plain harness: prints table rows.
//!
//! The two programs are C, compiled once (static) in the shipped `c` environment
//! (SANDPIT_TEST_DATA); the sandboxes run them on the busybox root (SANDPIT_TEST_ROOTFS).
//! Knobs: SANDPIT_BENCH_LINES (default 100000), SANDPIT_BENCH_REPEAT (default 5).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox::{FileIn, FileSource, Group, Io, Pipe, PipeEnd, RootFs, Sandbox, SandboxConfig, Spec};

const PING_C: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    char line[32];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        printf("%ld\n", i);
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin) || atol(line) != i + 1) {
            fprintf(stderr, "bad answer at %ld\n", i);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    fprintf(stderr, "%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"#;

const PONG_C: &str = r#"#include <stdio.h>
#include <stdlib.h>
int main(void) {
    char line[32];
    while (fgets(line, sizeof line, stdin)) {
        printf("%ld\n", atol(line) + 1);
        fflush(stdout);
    }
    return 0;
}
"#;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run `make bench` (it exports it)"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Compiles `src` statically with the `c` environment's gcc; the program's bytes.
fn compile(engine: &Sandbox, name: &str, src: &str) -> Vec<u8> {
    let data = env_path("SANDPIT_TEST_DATA");
    let catalog = sandpit::env::Catalog::open(&data).expect("environments");
    let c = catalog.resolve("c").expect("the c environment");
    let mut spec = Spec::new(
        c.rootfs.clone(),
        ["gcc", "-O2", "-static", "-o", name, "main.c"]
            .map(String::from)
            .to_vec(),
    );
    spec.files.push(FileIn {
        path: "main.c".into(),
        source: FileSource::Bytes(src.as_bytes().to_vec()),
        mode: None,
    });
    spec.collect.push(name.into());
    spec.limits.wall_time = Some(Duration::from_secs(120));
    spec.limits.cpu_time = Some(Duration::from_secs(120));
    let o = engine.run(&spec, Io::default()).expect("gcc");
    assert_eq!(
        o.exit_code,
        Some(0),
        "gcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.files
        .get(name)
        .and_then(|r| r.as_ref().ok())
        .cloned()
        .expect("the compiled program")
}

fn main() {
    let lines = knob("SANDPIT_BENCH_LINES", 100_000);
    let repeat = knob("SANDPIT_BENCH_REPEAT", 5);
    let engine = Sandbox::new(SandboxConfig::default()).expect("engine (run as root)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ping, pong) = (dir.path().join("ping"), dir.path().join("pong"));
    for (path, src) in [(&ping, PING_C), (&pong, PONG_C)] {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(path, compile(&engine, &name, src)).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let root = env_path("SANDPIT_TEST_ROOTFS");
    let program = |path: &PathBuf, args: Vec<String>| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut spec = Spec::new(
            RootFs::Dir(root.clone()),
            [format!("./{name}")].into_iter().chain(args).collect(),
        );
        spec.files.push(FileIn {
            path: name.into(),
            source: FileSource::Bind(path.clone()),
            mode: None,
        });
        spec.limits.cpu_time = Some(Duration::from_secs(120));
        spec.limits.wall_time = Some(Duration::from_secs(120));
        spec
    };
    let end = |program: usize, fd: i32| PipeEnd { program, fd };
    let group = Group {
        programs: vec![
            program(&ping, vec![lines.to_string()]),
            program(&pong, vec![]),
        ],
        pipes: vec![
            Pipe {
                from: end(0, 1),
                to: end(1, 0),
                capture_bytes: None,
            },
            Pipe {
                from: end(1, 1),
                to: end(0, 0),
                capture_bytes: None,
            },
        ],
        wall_time: Some(Duration::from_secs(240)),
        ends_with: vec![],
    };

    let (mut host_rt, mut host_total, mut box_rt, mut box_total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..repeat {
        // The floor: the same two programs, plain pipes, on the host.
        let t = Instant::now();
        let mut solution = Command::new(&pong)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("pong");
        let interactor = Command::new(&ping)
            .arg(lines.to_string())
            .stdin(Stdio::from(solution.stdout.take().expect("stdout")))
            .stdout(Stdio::from(solution.stdin.take().expect("stdin")))
            .output()
            .expect("ping");
        solution.wait().expect("pong ends");
        host_total.push(t.elapsed().as_secs_f64());
        let ns: f64 = String::from_utf8_lossy(&interactor.stderr)
            .trim()
            .parse()
            .expect("ns");
        host_rt.push(ns);

        // In sandboxes, wired by the core.
        let t = Instant::now();
        let o = engine
            .run_group(&group, vec![Io::default(), Io::default()])
            .expect("group");
        box_total.push(t.elapsed().as_secs_f64());
        let stderr = String::from_utf8_lossy(&o.programs[0].stderr).into_owned();
        let ns: f64 = stderr
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ping: {stderr} {:?}", o.programs[0]));
        box_rt.push(ns);
    }
    let (h, b) = (median(host_rt), median(box_rt));
    let (ht, bt) = (median(host_total), median(box_total));
    println!();
    println!("| ping-pong, {lines} lines, median of {repeat} | host pipes (floor) | sandboxes (run_group) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| round trip (the interactor's own loop) | {:.2} µs | {:.2} µs | {:.2}× |",
        h / 1e3,
        b / 1e3,
        b / h
    );
    println!(
        "| whole run (both programs, setup included) | {:.3} s | {:.3} s | {:.2}× |",
        ht,
        bt,
        bt / ht
    );
}
