//! `make bench` row for grading: a C a+b submission with 100 tests through the grading
//! pipeline (the one `sandpit judge` and the server use), in this process: the total time,
//! the tests' time, and each test's overhead over the program's own run time (sandbox,
//! checker, bookkeeping); against 100 separate `sandpit run` calls of the same binary.
//! Then where a test's overhead goes: whether the tests ran in prepared sandboxes (their
//! `setup_s`), the core alone (the same program, files and stdin run through the same warm
//! pool, no grading around it), and what the server adds per test (its store write and
//! progress line). Plain harness: prints one table row per figure.
//!
//! Needs the `c` environment in SANDPIT_TEST_DATA (`make rootfs`). Knob: SANDPIT_BENCH_TESTS
//! (default 100).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox::{
    FileIn, FileSource, Io, Pool, PoolConfig, Sandbox, SandboxConfig, Stdin, StopHandle,
};
use sandpit::env::Catalog;
use sandpit::exec::runner::overrides;
use sandpit::judge::config::Stage;
use sandpit::judge::events::ProgressEvent;
use sandpit::judge::pipeline::{self, Done, Graded, Grading, Progress};
use sandpit::judge::project::{ManifestDefaults, ProjectFiles, TestCase};
use sandpit::judge::verdict::{StageRecord, TestResult};
use sandpit::judge::workspace::{top_level, SubmissionDir};
use sandpit::judge::{submission, Status};
use sandpit::runspec::SpecBuilder;
use sandpit::store::{SqliteStore, Submissions};

/// Times each test from its start to its verdict.
struct Clock {
    started: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// (whole test, the program's own wall time, the sandbox's setup before it started)
    tests: Vec<(Duration, f64, f64)>,
    build: Option<Duration>,
    build_started: Option<Instant>,
    results: Vec<TestResult>,
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
            let setup = t.evidence.as_ref().and_then(|e| e.setup_s).unwrap_or(0.0);
            self.tests.push((now - s, t.wall_time, setup));
        }
        self.last = Some(now);
        self.results.push(t.clone());
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The median of some seconds, in ms.
fn median_ms(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2] * 1e3
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
        pool: pool.clone(),
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
        results: Vec::new(),
    };
    let t0 = Instant::now();
    let graded = pipeline::grade(&g, Done::default(), &mut clock);
    let total = t0.elapsed();
    match graded {
        Graded::Final(f) if f.status == Status::Ok => {}
        other => panic!("the bench's submission was not accepted: {other:?}"),
    }
    let tests_phase = clock.last.unwrap() - clock.first.unwrap();
    let own: f64 = clock.tests.iter().map(|(_, w, _)| w).sum();
    let mut overheads: Vec<f64> = clock
        .tests
        .iter()
        .map(|(d, w, _)| d.as_secs_f64() - w)
        .collect();
    let setups: Vec<f64> = clock.tests.iter().map(|(_, _, s)| *s).collect();
    overheads.sort_by(|a, b| a.total_cmp(b));
    let mean_overhead = overheads.iter().sum::<f64>() / n as f64;

    // The core alone: the same program, files and stdin through the same warm pool, one
    // after the other, with nothing of grading around the runs.
    let env = envs.resolve("c").expect("the c environment");
    let limits = project.test_limits(&project.def.tests[0]).expect("limits");
    let workspace = top_level(&dir.workspace()).expect("the workspace");
    let specs: Vec<sandbox::Spec> = (1..=n)
        .map(|i| {
            let files = workspace.iter().map(|(name, path)| FileIn {
                path: PathBuf::from(name),
                source: FileSource::Bind(path.clone()),
                mode: None,
            });
            SpecBuilder::new(env.rootfs.clone())
                .defaults(&env.defaults)
                .command(vec!["./solution".into()])
                .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
                .limits(&overrides(&limits))
                .files(files)
                .stdin(Stdin::File(project_dir.join(format!("tests/{i:03}/input"))))
                .build()
        })
        .collect();
    // Back to back, as the tests run; then the same in a sandbox set up for each run.
    let timed = |run: &dyn Fn(&sandbox::Spec) -> sandbox::Outcome| -> Vec<(f64, f64)> {
        specs
            .iter()
            .map(|spec| {
                let t = Instant::now();
                let o = run(spec);
                (t.elapsed().as_secs_f64() - o.wall_time_s, o.setup_s)
            })
            .collect()
    };
    let core = timed(&|spec| pool.run(spec, Io::default()).expect("a run"));
    let fresh = timed(&|spec| pool.engine().run(spec, Io::default()).expect("a run"));
    let core_overhead = median_ms(core.iter().map(|(d, _)| *d).collect());
    let core_setup = median_ms(core.iter().map(|(_, s)| *s).collect());
    let fresh_overhead = median_ms(fresh.iter().map(|(d, _)| *d).collect());
    let fresh_setup = median_ms(fresh.iter().map(|(_, s)| *s).collect());

    // What the server adds per test: the test's row in the store, and its progress line.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(SqliteStore::open(&tmp.join("store.db")))
        .expect("store");
    let mut rows = Vec::with_capacity(n);
    for r in &clock.results {
        let t = Instant::now();
        rt.block_on(store.record_test("sub_bench", r))
            .expect("record");
        dir.append_progress(&ProgressEvent::test(r).line());
        rows.push(t.elapsed().as_secs_f64());
    }
    let store_write = median_ms(rows);

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
    // A test that found no sandbox ready set one up: its setup_s is nearer a fresh one's.
    let cut = (core_setup + fresh_setup) / 2.0 / 1e3;
    let unprepared = setups.iter().filter(|s| **s > cut).count();
    println!(
        "| the tests' sandbox setup (`setup_s`, median); tests that found no sandbox prepared | {:.2} ms; {unprepared} of {n} |",
        median_ms(setups)
    );
    println!(
        "| the core alone, same program through the same pool: overhead over its wall time (median; setup_s) | {core_overhead:.2} ms ({core_setup:.2} ms) |"
    );
    println!(
        "| the same without the pool (a sandbox set up for each run): overhead (median; setup_s) | {fresh_overhead:.2} ms ({fresh_setup:.2} ms) |"
    );
    println!(
        "| so grading's own part of a test's overhead (median pipeline − median core) | {:.2} ms |",
        overheads[n / 2] * 1e3 - core_overhead
    );
    println!(
        "| the server's store write + progress line per test (median) | {store_write:.3} ms |"
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
