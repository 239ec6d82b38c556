//! `make bench` row for grading: a C a+b submission with 100 tests through the grading
//! pipeline (the one `sandpit judge` and the server use), in this process: the total time,
//! the tests' time, and each test's overhead over the program's own run time (sandbox,
//! checker, bookkeeping); against 100 separate `sandpit run` calls of the same binary.
//! Plain harness: prints one table row per figure.
//!
//! Needs the `c` environment in SANDPIT_TEST_DATA (`make rootfs`). Knob: SANDPIT_BENCH_TESTS
//! (default 100).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox::{Pool, PoolConfig, Sandbox, SandboxConfig, StopHandle};
use sandpit::env::Catalog;
use sandpit::judge::config::Stage;
use sandpit::judge::pipeline::{self, Done, Graded, Grading, Progress};
use sandpit::judge::project::{ManifestDefaults, ProjectFiles, TestCase};
use sandpit::judge::verdict::{StageRecord, TestResult};
use sandpit::judge::workspace::SubmissionDir;
use sandpit::judge::{submission, Status};

/// Times each test from its start to its verdict.
struct Clock {
    started: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// (whole test, the program's own wall time)
    tests: Vec<(Duration, f64)>,
    build: Option<Duration>,
    build_started: Option<Instant>,
}

impl Progress for Clock {
    fn stage_started(&mut self, stage: Stage) {
        if stage == Stage::Build {
            self.build_started = Some(Instant::now());
        }
    }

    fn stage_ended(&mut self, r: &StageRecord) {
        if r.stage == Stage::Build {
            self.build = self.build_started.map(|t| t.elapsed());
        }
    }

    fn test_started(&mut self, _: &TestCase, _: usize) {
        let now = Instant::now();
        self.started = Some(now);
        self.first.get_or_insert(now);
    }

    fn test_ended(&mut self, t: &TestResult) {
        let now = Instant::now();
        if let Some(s) = self.started {
            self.tests.push((now - s, t.wall_time));
        }
        self.last = Some(now);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn main() {
    let n: usize = std::env::var("SANDPIT_BENCH_TESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let data = PathBuf::from(std::env::var_os("SANDPIT_TEST_DATA").expect(
        "SANDPIT_TEST_DATA is not set (make bench sets it; `make rootfs` imports the c environment)",
    ));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aplusb-c");
    let tmp = std::env::temp_dir().join(format!("sandpit-bench-judge-{}", std::process::id()));
    let project_dir = tmp.join("project");
    for f in ["project.json", "config.json"] {
        std::fs::create_dir_all(&project_dir).unwrap();
        std::fs::copy(example.join(f), project_dir.join(f)).unwrap();
    }
    let mut x: u64 = 12345;
    for i in 1..=n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (a, b) = ((x >> 33) as i64 - (1 << 30), (x & 0xffff_ffff) as i64);
        write(
            &project_dir.join(format!("tests/{i:03}/input")),
            &format!("{a} {b}\n"),
        );
        write(
            &project_dir.join(format!("tests/{i:03}/output")),
            &format!("{}\n", a + b),
        );
    }
    let project = ProjectFiles::load(&project_dir, &ManifestDefaults::default()).expect("project");
    let envs = Catalog::open(&data).expect("environments");
    let engine = Arc::new(Sandbox::new(SandboxConfig::default()).expect("engine"));
    let pool = Arc::new(Pool::new(engine, PoolConfig::default()).expect("pool"));
    let dir = SubmissionDir::at(tmp.join("submission"));
    let source = std::fs::read(example.join("solutions/correct.c")).unwrap();
    dir.create(&[sandpit::exec::InputFile {
        path: sandbox::RelPath::parse("main.c").unwrap(),
        bytes: source,
        mode: 0o644,
    }])
    .unwrap();
    submission::normalize(&project.def, &dir).unwrap();
    let g = Grading {
        pool,
        envs: &envs,
        project: &project,
        scenario: "default",
        dir: &dir,
        stop: StopHandle::new().unwrap(),
    };
    let mut clock = Clock {
        started: None,
        first: None,
        last: None,
        tests: Vec::new(),
        build: None,
        build_started: None,
    };
    let t0 = Instant::now();
    let graded = pipeline::grade(&g, Done::default(), &mut clock);
    let total = t0.elapsed();
    match graded {
        Graded::Final(f) if f.status == Status::Ok => {}
        other => panic!("the bench's submission was not accepted: {other:?}"),
    }
    let tests_phase = clock.last.unwrap() - clock.first.unwrap();
    let own: f64 = clock.tests.iter().map(|(_, w)| w).sum();
    let mut overheads: Vec<f64> = clock
        .tests
        .iter()
        .map(|(d, w)| d.as_secs_f64() - w)
        .collect();
    overheads.sort_by(|a, b| a.total_cmp(b));
    let mean_overhead = overheads.iter().sum::<f64>() / n as f64;

    // The same binary, n separate `sandpit run` calls.
    let solution = dir.workspace().join("solution");
    let sandpit = env!("CARGO_BIN_EXE_sandpit");
    let t1 = Instant::now();
    for i in 1..=n {
        let out = Command::new(sandpit)
            .arg("--data")
            .arg(&data)
            .args(["run", "--env", "c", "--stdin"])
            .arg(project_dir.join(format!("tests/{i:03}/input")))
            .arg("--copy-in")
            .arg(format!("{}:solution", solution.display()))
            .args(["--", "./solution"])
            .output()
            .expect("sandpit run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs = t1.elapsed();
    let _ = std::fs::remove_dir_all(&tmp);

    println!("| figure ({n} tests, C a+b, one slot) | value |");
    println!("|---|---|");
    println!(
        "| whole submission (build + {n} tests + checks) | {} |",
        ms(total)
    );
    println!(
        "| the build stage (gcc) | {} |",
        ms(clock.build.unwrap_or_default())
    );
    println!(
        "| the {n} tests (first start to last verdict) | {} |",
        ms(tests_phase)
    );
    println!("| per test | {} |", ms(tests_phase / n as u32));
    println!(
        "| the program's own run time per test (mean wall) | {:.2} ms |",
        own / n as f64 * 1e3
    );
    println!(
        "| per-test overhead over the program's own run (mean / median / p90) | {:.2} / {:.2} / {:.2} ms |",
        mean_overhead * 1e3,
        overheads[n / 2] * 1e3,
        overheads[n * 9 / 10] * 1e3
    );
    println!(
        "| {n} separate `sandpit run` calls of the same binary | {} ({} each) |",
        ms(runs),
        ms(runs / n as u32)
    );
    println!(
        "| grading's tests phase vs separate runs | {:.1}× faster |",
        runs.as_secs_f64() / tests_phase.as_secs_f64()
    );
}
