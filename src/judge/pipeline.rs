//! Grading one submission: the same code for `sandpit judge` and the server. The workspace
//! is laid out (the project's files, the user's over them), then the scenario's stages run in
//! order, each in a fresh sandbox of the project's environment with a copy of the workspace
//! and its own limits (a stage's artifacts are kept for the next ones). With test cases the
//! run stage's command runs once per test instead, in a sandbox where the workspace (the
//! build's outputs) is bound read-only, and each output is judged by the checker (built in, or
//! a program in a sandbox of its own with the input, the output and the answer bound
//! read-only). An interactive problem's interactor (built once, before the tests, when it has
//! a build) runs beside each test's program instead of a checker, and its exit judges it.
//! A failing stage ends the submission; its later stages do not run.
//!
//! Blocking: called on a blocking thread. What happens is told to a [`Progress`] as it
//! happens (the server records it, so that after a restart grading resumes from the last
//! finished stage and test: [`Done`]).

use std::path::PathBuf;
use std::sync::Arc;

use sandbox::{FileIn, FileSource, Io, Outcome, Pool, RelPath, Spec, Stdin, StopHandle};

use super::checker::{self, Checked, CheckerRun};
use super::config::{PlannedStage, Stage};
use super::project::{
    checker_limits, CheckerSpec, InteractorSpec, ProjectFiles, TestCase, CHECKER_ARGS, INTERACTOR,
};
use super::report::{of_tests, of_tests_report, parse_tests_report, tests_report_of, Final, Text};
use super::state::Status;
use super::testrun::{TestJob, TestRun, TestRunner};
use super::verdict::{how, of_run, StageRecord, TestResult, Verdict};
use super::workspace::{top_level, SubmissionDir, TESTS_REPORT};
use crate::env::{Catalog, EnvError, Resolved};
use crate::exec::result::ProgramResult;
use crate::exec::runner::overrides;
use crate::exec::{EndReason, Limits};
use crate::runspec::SpecBuilder;

/// Where a stage finds Sphere's files: the streams of the stages before it, and where it may
/// write the final tests report (below the work directory, so it can be collected).
const SE_DIR: &str = ".se";
const REPORT_IN_SANDBOX: &str = ".se/tests_report.json";
/// Most read-only binds one test gets; past that the workspace is copied instead.
const MAX_BINDS: usize = 48;
/// A stage's limits: its timeout (CPU and wall; 60 s when it gives none), and room for a
/// compiler.
const STAGE_TIMEOUT_S: f64 = 60.0;
const STAGE_MEMORY: u64 = 1 << 30;
const STAGE_PIDS: u64 = 128;
const STAGE_OUTPUT: u64 = 16 << 20;

/// What grading needs.
pub struct Grading<'a> {
    /// Every run goes through the pool (a sandbox prepared ahead when one is ready).
    pub pool: Arc<Pool>,
    pub envs: &'a Catalog,
    pub project: &'a ProjectFiles,
    pub scenario: &'a str,
    pub dir: &'a SubmissionDir,
    /// Stops the submission (each sandbox it runs watches it).
    pub stop: StopHandle,
}

/// What a resumed submission already did.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub stages: Vec<StageRecord>,
    pub tests: Vec<TestResult>,
}

/// Told as grading goes (all default to nothing).
pub trait Progress {
    /// The workspace is laid out; the stages start.
    fn executing(&mut self) {}
    fn stage_started(&mut self, _stage: Stage) {}
    fn stage_ended(&mut self, _record: &StageRecord) {}
    fn test_started(&mut self, _test: &TestCase, _index: usize) {}
    fn test_ended(&mut self, _result: &TestResult) {}
}

/// How grading ended.
#[derive(Debug)]
pub enum Graded {
    Final(Box<Final>),
    /// Stopped (the submission was deleted): no grade.
    Stopped,
}

impl Graded {
    fn of(f: Final) -> Graded {
        Graded::Final(Box::new(f))
    }
}

/// What a stage's end means for the submission.
enum After {
    Continue,
    End(Final),
    Stopped,
}

pub fn grade(g: &Grading, done: Done, progress: &mut dyn Progress) -> Graded {
    let def = &g.project.def;
    let scenario = match def.config.scenario(Some(g.scenario)) {
        Ok((_, s)) => s,
        Err(e) => return Graded::of(Final::project_error(e)),
    };
    // Leased for the whole grading: the environment can't be deleted meanwhile.
    let env = match resolve(g.envs, &def.environment) {
        Ok(env) => env,
        Err(f) => return Graded::Final(f),
    };
    let own_env = |id: Option<&String>| match id {
        Some(id) if id != &def.environment => resolve(g.envs, id).map(Some),
        _ => Ok(None),
    };
    let checker_env = match own_env(match &def.checker {
        CheckerSpec::Program { environment, .. } => environment.as_ref(),
        _ => None,
    }) {
        Ok(env) => env,
        Err(f) => return Graded::Final(f),
    };
    let interactor_env = match own_env(def.interactor.as_ref().and_then(|i| i.environment.as_ref()))
    {
        Ok(env) => env,
        Err(f) => return Graded::Final(f),
    };
    let resumed = !done.stages.is_empty() || !done.tests.is_empty();
    if resumed {
        let kept: Vec<&str> = done.stages.iter().map(|s| s.stage.as_str()).collect();
        g.dir.debug(&format!(
            "resumed after the server stopped: kept stage(s) [{}] and {} test(s)",
            kept.join(", "),
            done.tests.len()
        ));
    } else if let Err(e) = g.dir.lay_out(&g.project.workspace()) {
        return Graded::of(Final::internal(format!("laying out the workspace: {e}")));
    }
    progress.executing();
    let planned = scenario.planned();
    let has_tests = !def.tests.is_empty();
    let test_stage = planned.iter().any(|p| p.stage == Stage::Test);
    let mut stages = done.stages;
    let mut tests = done.tests;
    for p in &planned {
        if g.stop.requested() {
            return Graded::Stopped;
        }
        if p.stage == Stage::Run && has_tests {
            let interactor_env = interactor_env.as_ref().unwrap_or(&env);
            let interactor = match &def.interactor {
                Some(spec) => match prepare_interactor(g, spec, interactor_env) {
                    Ok(dir) => Some(Interactor {
                        spec,
                        dir,
                        env: interactor_env,
                    }),
                    Err(ended) => return ended,
                },
                None => None,
            };
            let run = TestsRun {
                g,
                env: &env,
                checker_env: checker_env.as_ref().unwrap_or(&env),
                interactor,
                argv: &p.argv,
            };
            if run.all(&mut tests, progress).is_err() {
                return Graded::Stopped;
            }
            continue;
        }
        let record = match stages.iter().find(|s| s.stage == p.stage) {
            Some(r) => r.clone(),
            None => {
                progress.stage_started(p.stage);
                let r = run_stage(g, &env, p, &stages);
                progress.stage_ended(&r);
                stages.push(r.clone());
                r
            }
        };
        match after_stage(g, &record, has_tests, test_stage) {
            After::Continue => {}
            After::End(f) => return Graded::of(f),
            After::Stopped => return Graded::Stopped,
        }
    }
    Graded::of(conclude(g, &stages, &tests))
}

/// The environment's root and defaults, leased; a missing one is the project's error, one
/// that can't be used the engine's.
fn resolve(envs: &Catalog, envid: &str) -> Result<Resolved, Box<Final>> {
    envs.resolve(envid).map_err(|e| {
        Box::new(match e {
            EnvError::NotFound(_) | EnvError::InvalidId(_) => Final::project_error(format!(
                "the project's environment '{envid}' does not exist"
            )),
            other => Final::internal(format!("environment '{envid}': {other}")),
        })
    })
}

/// The `SE_*` variables of a stage: where things are, and how the stages before it ended.
fn se_vars(g: &Grading, stage: Stage, before: &[StageRecord]) -> Vec<String> {
    let work = sandbox::DEFAULT_WORKDIR;
    let mut vars = vec![
        format!("SE_CURRENT_STAGE={stage}"),
        format!("SE_SCENARIO={}", g.scenario),
        format!("SE_PATH_WORKSPACE={work}"),
        format!("SE_PATH_FINAL_TESTS_REPORT={work}/{REPORT_IN_SANDBOX}"),
    ];
    for r in before {
        let s = r.stage.upper();
        vars.push(format!(
            "SE_PATH_STAGE_{s}_STDOUT={work}/{SE_DIR}/{}",
            r.stage.output_stream()
        ));
        vars.push(format!(
            "SE_PATH_STAGE_{s}_STDERR={work}/{SE_DIR}/{}",
            r.stage.error_stream()
        ));
        if let Some(code) = r.exit_code {
            vars.push(format!("SE_STAGE_{s}_EXIT_CODE={code}"));
        }
        if let Some(sig) = &r.signal_name {
            vars.push(format!("SE_STAGE_{s}_SIGNAL={sig}"));
        }
    }
    vars
}

/// One stage in a fresh sandbox with a copy of the workspace; keeps its streams, its
/// artifacts and the tests report it wrote.
fn run_stage(g: &Grading, env: &Resolved, p: &PlannedStage, before: &[StageRecord]) -> StageRecord {
    let spec = match stage_spec(g, env, p, before) {
        Ok(spec) => spec,
        Err(e) => return failed_record(p.stage, e),
    };
    let io = Io {
        stop: Some(g.stop.clone()),
        ..Io::default()
    };
    let outcome = match g.pool.run(&spec, io) {
        Ok(o) => o,
        Err(e) => return failed_record(p.stage, format!("the sandbox refused the stage: {e}")),
    };
    let mut errors = Vec::new();
    for (name, bytes) in [
        (p.stage.output_stream(), &outcome.stdout),
        (p.stage.error_stream(), &outcome.stderr),
    ] {
        if let Err(e) = g.dir.write_stream(&name, bytes) {
            errors.push(format!("{name}: {e}"));
        }
    }
    for (path, got) in &outcome.files {
        match (path.as_str(), got) {
            (REPORT_IN_SANDBOX, Ok(bytes)) => {
                if let Err(e) = g.dir.write_stream(TESTS_REPORT, bytes) {
                    errors.push(format!("{TESTS_REPORT}: {e}"));
                }
            }
            (_, Ok(bytes)) => match RelPath::parse(path) {
                Ok(rel) => {
                    if let Err(e) = g.dir.keep_artifact(&rel, bytes) {
                        errors.push(format!("artifact {path}: {e}"));
                    }
                }
                Err(e) => errors.push(format!("artifact {path}: {e}")),
            },
            // An artifact a stage did not make is fine: a later stage may.
            (_, Err(why)) if why.ends_with("no such file") => {}
            (_, Err(why)) => g
                .dir
                .debug(&format!("{} stage: artifact not kept: {why}", p.stage)),
        }
    }
    let mut record = record_of(p.stage, &outcome);
    if !errors.is_empty() {
        record.end_reason = EndReason::InternalError;
        record.message = Some(format!(
            "keeping the stage's files failed: {}",
            errors.join("; ")
        ));
    }
    record
}

fn stage_spec(
    g: &Grading,
    env: &Resolved,
    p: &PlannedStage,
    before: &[StageRecord],
) -> Result<Spec, String> {
    let mut files: Vec<FileIn> = Vec::new();
    for (name, path) in top_level(&g.dir.workspace()).map_err(|e| format!("the workspace: {e}"))? {
        if name == SE_DIR {
            continue;
        }
        files.push(FileIn {
            path: PathBuf::from(name),
            source: FileSource::Host(path),
            mode: None,
        });
    }
    files.push(FileIn {
        path: PathBuf::from(format!("{SE_DIR}/scenario")),
        source: FileSource::Bytes(g.scenario.as_bytes().to_vec()),
        mode: Some(0o644),
    });
    for r in before {
        for name in [r.stage.output_stream(), r.stage.error_stream()] {
            let host = g.dir.stream(&name);
            if host.is_file() {
                files.push(FileIn {
                    path: PathBuf::from(format!("{SE_DIR}/{name}")),
                    source: FileSource::Bind(host),
                    mode: None,
                });
            }
        }
    }
    let secs = p.timeout.unwrap_or(STAGE_TIMEOUT_S);
    let limits = Limits {
        memory_bytes: STAGE_MEMORY,
        cpu_time_s: secs,
        wall_time_s: secs,
        pids: STAGE_PIDS,
        output_bytes: STAGE_OUTPUT,
    };
    let mut collect: Vec<PathBuf> = g.project.def.artifacts.iter().map(PathBuf::from).collect();
    collect.push(PathBuf::from(REPORT_IN_SANDBOX));
    let mut b = SpecBuilder::new(env.rootfs.clone())
        .defaults(&env.defaults)
        .command(p.argv.clone())
        .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
        .limits(&overrides(&limits))
        .files(files)
        .collect(collect);
    for var in se_vars(g, p.stage, before) {
        b = b.setenv(&var);
    }
    Ok(b.build())
}

fn record_of(stage: Stage, o: &Outcome) -> StageRecord {
    let result = ProgramResult::from_outcome(o, Default::default());
    StageRecord {
        stage,
        end_reason: o.end_reason.into(),
        exit_code: o.exit_code,
        signal_name: o.signal_name.clone(),
        timeout: result.timeout,
        time: o.cpu_time_s,
        wall_time: o.wall_time_s,
        memory: o.peak_memory_bytes,
        message: o.message.clone(),
        evidence: Some(result),
    }
}

fn failed_record(stage: Stage, message: String) -> StageRecord {
    StageRecord {
        stage,
        end_reason: EndReason::InternalError,
        exit_code: None,
        signal_name: None,
        timeout: None,
        time: 0.0,
        wall_time: 0.0,
        memory: 0,
        message: Some(message),
        evidence: None,
    }
}

/// A stage's streams as one text: stderr, then stdout.
fn stage_text(g: &Grading, stage: Stage) -> String {
    let read = |name: String| std::fs::read(g.dir.stream(&name)).unwrap_or_default();
    let mut text = String::from_utf8_lossy(&read(stage.error_stream())).into_owned();
    let out = read(stage.output_stream());
    if !out.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&String::from_utf8_lossy(&out));
    }
    text
}

fn after_stage(g: &Grading, r: &StageRecord, has_tests: bool, test_stage: bool) -> After {
    let how = r.how();
    match r.end_reason {
        EndReason::Stopped => return After::Stopped,
        EndReason::InternalError => {
            return After::End(Final::internal(format!(
                "the {} stage: {}",
                r.stage,
                r.message.clone().unwrap_or_default()
            )))
        }
        _ => {}
    }
    let stage = r.stage;
    match stage {
        Stage::Init if !r.succeeded() => {
            g.dir.debug(&format!("the init stage failed ({how})"));
            After::End(Final::project_error(format!(
                "the init stage failed ({how}); see stage_init_error"
            )))
        }
        Stage::Build if !r.succeeded() => After::End(
            Final::early(
                Status::BuildError,
                Text::new("Compilation failed (%(how)s).").arg("how", how),
                Some(stage_text(g, stage)),
            )
            .measured_by(Some(r)),
        ),
        Stage::Run if !has_tests => {
            let end = |status: Status, text: Text| {
                After::End(
                    Final::early(status, text, None)
                        .measured_by(Some(r))
                        .scored(0.0),
                )
            };
            match r.end_reason {
                EndReason::Timeout => end(
                    Status::TimeLimitExceeded,
                    Text::new("Time limit exceeded in the run stage (%(how)s).").arg("how", how),
                ),
                EndReason::OutOfMemory | EndReason::OutputLimit => end(
                    Status::RuntimeError,
                    Text::new(
                        "%(how)s in the run stage; it has no status code of its own, 12 \
                         (runtime error) is the closest.",
                    )
                    .arg("how", capitalised(&how)),
                ),
                _ if r.signal_name.is_some() || (!r.succeeded() && !test_stage) => end(
                    Status::RuntimeError,
                    Text::new("Runtime error in the run stage (%(how)s).").arg("how", how),
                ),
                _ => After::Continue,
            }
        }
        Stage::Test
            if r.end_reason != EndReason::Normal
                || r.signal_name.is_some()
                || !matches!(r.exit_code, Some(0 | 1)) =>
        {
            g.dir.debug(&format!(
                "the test stage failed ({how}): it exits 0 (ok) or 1 (fail)"
            ));
            After::End(Final::project_error(format!(
                "the test stage failed ({how}); see stage_test_error"
            )))
        }
        Stage::Post if !r.succeeded() => {
            g.dir.debug(&format!("the post stage failed ({how})"));
            After::Continue
        }
        _ => After::Continue,
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The grade once every stage ran: the tests' (and the test stage's say), else the tests
/// report's, else the test or run stage's exit status.
fn conclude(g: &Grading, stages: &[StageRecord], tests: &[TestResult]) -> Final {
    let def = &g.project.def;
    let stage = |s: Stage| stages.iter().find(|r| r.stage == s);
    let written = std::fs::read(g.dir.stream(TESTS_REPORT)).ok();
    let from_stage = written.as_deref().map(parse_tests_report);
    let test_stage_failed = stage(Stage::Test).is_some_and(|r| r.exit_code == Some(1));
    let fail_by_test_stage = |mut f: Final| {
        if f.status == Status::Ok && test_stage_failed {
            let result = Text::new("The test stage judged the submission unsuccessful.");
            f.status = Status::Fail;
            f.reason = result.render();
            f.report.accepted = false;
            f.report.result = result;
        }
        f
    };
    if !def.tests.is_empty() {
        let mut f = of_tests(tests);
        match from_stage {
            Some(Err(e)) => {
                g.dir.debug(&e);
                return Final::project_error(e);
            }
            Some(Ok(entries)) => {
                if f.status == Status::Ok
                    && entries
                        .iter()
                        .any(|e| e.status != "ok" && e.status != "skipped")
                {
                    let result = Text::new("The tests report has failures.");
                    f.status = Status::Fail;
                    f.reason = result.render();
                    f.report.accepted = false;
                    f.report.result = result;
                }
            }
            None => {
                let report = tests_report_of(&def.name, tests);
                match serde_json::to_vec(&report) {
                    Ok(bytes) => {
                        if let Err(e) = g.dir.write_stream(TESTS_REPORT, &bytes) {
                            return Final::internal(format!("writing the tests report: {e}"));
                        }
                    }
                    Err(e) => return Final::internal(format!("the tests report: {e}")),
                }
            }
        }
        return fail_by_test_stage(f);
    }
    let run = stage(Stage::Run);
    let f = match from_stage {
        Some(Err(e)) => {
            g.dir.debug(&e);
            return Final::project_error(e);
        }
        Some(Ok(entries)) => of_tests_report(&entries),
        None => match stage(Stage::Test) {
            Some(t) if t.exit_code == Some(1) => Final::early(
                Status::Fail,
                Text::new("The test stage judged the submission unsuccessful."),
                None,
            )
            .scored(0.0),
            Some(_) => Final::early(Status::Ok, Text::new("Your submission is accepted."), None)
                .scored(100.0),
            None => Final::early(
                Status::Ok,
                Text::new("Your submission ran successfully."),
                None,
            )
            .scored(100.0),
        },
    };
    fail_by_test_stage(f.measured_by(run))
}

/// The interactor's files: its own directory, or its build's copy of it with what it made.
/// Built once per submission (a resumed one finds it built); a build that fails is the
/// project's error, with its streams in the debug log.
fn prepare_interactor(
    g: &Grading,
    spec: &InteractorSpec,
    env: &Resolved,
) -> Result<PathBuf, Graded> {
    let own = g.project.interactor_dir();
    let Some(build) = &spec.build else {
        return Ok(own);
    };
    let built = g.dir.helper(INTERACTOR);
    if build.outputs.iter().all(|o| built.join(o).is_file()) {
        return Ok(built);
    }
    let project_error = |why: String| {
        g.dir.debug(&format!("the interactor's build: {why}"));
        Graded::of(Final::project_error(format!(
            "the interactor's build failed ({}); see debug_log",
            why.lines().next().unwrap_or_default()
        )))
    };
    let files: Vec<FileIn> = top_level(&own)
        .map_err(|e| Graded::of(Final::internal(format!("the interactor's files: {e}"))))?
        .into_iter()
        .map(|(name, path)| FileIn {
            path: PathBuf::from(name),
            source: FileSource::Host(path),
            mode: None,
        })
        .collect();
    let limits = Limits {
        memory_bytes: STAGE_MEMORY,
        cpu_time_s: STAGE_TIMEOUT_S,
        wall_time_s: STAGE_TIMEOUT_S,
        pids: STAGE_PIDS,
        output_bytes: STAGE_OUTPUT,
    };
    let spec = SpecBuilder::new(env.rootfs.clone())
        .defaults(&env.defaults)
        .command(build.command.clone())
        .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
        .limits(&overrides(&limits))
        .files(files)
        .collect(build.outputs.iter().map(PathBuf::from))
        .build();
    let io = Io {
        stop: Some(g.stop.clone()),
        ..Io::default()
    };
    let o = g
        .pool
        .run(&spec, io)
        .map_err(|e| project_error(format!("the sandbox refused it: {e}")))?;
    match o.end_reason {
        sandbox::EndReason::Stopped => return Err(Graded::Stopped),
        sandbox::EndReason::InternalError => {
            return Err(Graded::of(Final::internal(format!(
                "the sandbox failed building the interactor: {}",
                o.message.unwrap_or_default()
            ))))
        }
        _ => {}
    }
    let record = record_of(Stage::Build, &o);
    if !record.succeeded() {
        return Err(project_error(format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            record.how(),
            String::from_utf8_lossy(&o.stdout).trim_end(),
            String::from_utf8_lossy(&o.stderr).trim_end()
        )));
    }
    let mut made = Vec::new();
    for (path, got) in o.files {
        let rel = RelPath::parse(&path).map_err(|e| project_error(format!("{path}: {e}")))?;
        match got {
            Ok(bytes) => made.push((rel, bytes)),
            Err(why) => return Err(project_error(format!("it did not make {path}: {why}"))),
        }
    }
    g.dir
        .keep_helper(INTERACTOR, &own, &made)
        .map_err(|e| Graded::of(Final::internal(format!("keeping the interactor: {e}"))))
}

/// An interactive problem's interactor, ready to run.
struct Interactor<'a> {
    spec: &'a InteractorSpec,
    /// Its files (built).
    dir: PathBuf,
    env: &'a Resolved,
}

/// The tests of a project with test cases, one after the other.
struct TestsRun<'a> {
    g: &'a Grading<'a>,
    env: &'a Resolved,
    checker_env: &'a Resolved,
    interactor: Option<Interactor<'a>>,
    argv: &'a [String],
}

/// The submission was stopped.
struct Stopped;

impl TestsRun<'_> {
    fn all(&self, tests: &mut Vec<TestResult>, progress: &mut dyn Progress) -> Result<(), Stopped> {
        let def = &self.g.project.def;
        let mut runner = TestRunner::new(self.g.pool.clone());
        let todo: Vec<(usize, &TestCase)> = def
            .tests
            .iter()
            .enumerate()
            .map(|(i, t)| (i + 1, t))
            .filter(|(i, _)| !tests.iter().any(|t| t.index == *i))
            .collect();
        for (index, test) in &todo {
            if self.g.stop.requested() {
                return Err(Stopped);
            }
            progress.test_started(test, *index);
            let result = self.one(&mut runner, *index, test);
            if result.verdict == Verdict::Stopped {
                return Err(Stopped);
            }
            progress.test_ended(&result);
            tests.push(result);
        }
        tests.sort_by_key(|t| t.index);
        Ok(())
    }

    fn one(&self, runner: &mut TestRunner, index: usize, test: &TestCase) -> TestResult {
        let base = TestResult {
            index,
            name: test.name.clone(),
            group: test.group.clone(),
            weight: test.weight,
            verdict: Verdict::InternalError,
            score: 0.0,
            time: 0.0,
            wall_time: 0.0,
            memory: 0,
            timeout: None,
            exit_code: None,
            signal_name: None,
            checker_message: None,
            end_reason: EndReason::InternalError,
            message: None,
            evidence: None,
        };
        let failed = |message: String| TestResult {
            message: Some(message),
            ..base.clone()
        };
        let spec = match self.spec(test) {
            Ok(spec) => spec,
            Err(e) => return failed(e),
        };
        let interactor = match &self.interactor {
            Some(i) => match self.interactor_spec(i, test, &spec) {
                Ok(spec) => Some(spec),
                Err(e) => return failed(e),
            },
            None => None,
        };
        let run = match runner.run(TestJob {
            program: spec,
            interactor,
            stop: self.g.stop.clone(),
        }) {
            Ok(o) => o,
            Err(e) => return failed(format!("the sandbox: {e}")),
        };
        let TestRun {
            program: outcome,
            interactor,
        } = run;
        let evidence = ProgramResult::from_outcome(&outcome, Default::default());
        let end_reason: EndReason = outcome.end_reason.into();
        let mut result = TestResult {
            verdict: Verdict::Accepted,
            time: outcome.cpu_time_s,
            wall_time: outcome.wall_time_s,
            memory: outcome.peak_memory_bytes,
            timeout: evidence.timeout,
            exit_code: outcome.exit_code,
            signal_name: outcome.signal_name.clone(),
            end_reason,
            message: outcome.message.clone(),
            evidence: Some(evidence),
            ..base.clone()
        };
        let own_verdict = of_run(end_reason, outcome.exit_code, outcome.signal);
        let checked = match interactor {
            None => {
                if let Some(v) = own_verdict {
                    result.verdict = v;
                    return result;
                }
                self.check(index, test, &outcome.stdout)
            }
            Some(i) => {
                // The solution's own limits and crashes first. Ended with the interactor
                // (stopped, or SIGPIPE once the interactor closed its end), the interactor's
                // verdict decides.
                let with_interactor = (end_reason == EndReason::Stopped
                    && !self.g.stop.requested())
                    || outcome.signal == Some(libc::SIGPIPE);
                match own_verdict {
                    Some(v) if !with_interactor => {
                        result.verdict = v;
                        return result;
                    }
                    _ => self.judge_by(&i, test, "interactor"),
                }
            }
        };
        match checked {
            Ok(c) => {
                result.verdict = c.verdict;
                result.score = c.score;
                result.checker_message = c.message;
            }
            // A checker's failure is in the debug log already (with its streams).
            Err((verdict, why)) => {
                result.verdict = verdict;
                result.checker_message = Some(why);
            }
        }
        result
    }

    /// The interactor beside a test's program: `COMMAND input output answer` in its files,
    /// with the test's input and answer bound read-only (`output` is its to write). Its wall
    /// time outlasts the solution's, so that a solution that never answers is the one ended.
    fn interactor_spec(
        &self,
        i: &Interactor,
        test: &TestCase,
        solution: &Spec,
    ) -> Result<Spec, String> {
        let project = self.g.project;
        let mut limits =
            checker_limits(&i.spec.limits).map_err(|e| format!("the interactor: {e}"))?;
        if let Some(wall) = solution.limits.wall_time {
            limits.wall_time_s = limits.wall_time_s.max(wall.as_secs_f64() + 1.0);
        }
        let empty = self
            .g
            .dir
            .empty()
            .map_err(|e| format!("an empty file: {e}"))?;
        let mut files: Vec<FileIn> = top_level(&i.dir)
            .map_err(|e| format!("the interactor's files: {e}"))?
            .into_iter()
            .map(|(name, path)| FileIn {
                path: PathBuf::from(name),
                source: FileSource::Bind(path),
                mode: None,
            })
            .collect();
        for (name, host) in [
            (CHECKER_ARGS[0], project.test_input(&test.name)),
            (CHECKER_ARGS[2], project.test_answer(&test.name)),
        ] {
            files.push(FileIn {
                path: PathBuf::from(name),
                source: FileSource::Bind(host.unwrap_or(empty.clone())),
                mode: None,
            });
        }
        let mut argv = i.spec.command.clone();
        argv.extend(CHECKER_ARGS.iter().map(|s| s.to_string()));
        Ok(SpecBuilder::new(i.env.rootfs.clone())
            .defaults(&i.env.defaults)
            .command(argv)
            .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
            .limits(&overrides(&limits))
            .files(files)
            .setenv(&format!("SE_TEST_NAME={}", test.name))
            .build())
    }

    /// The test's program: the run command in the workspace (bound read-only), with the
    /// test's stdin and files.
    fn spec(&self, test: &TestCase) -> Result<Spec, String> {
        let project = self.g.project;
        let limits = project.test_limits(test)?;
        let own = project.test_files(&test.name)?;
        let workspace: Vec<(String, PathBuf)> = top_level(&self.g.dir.workspace())
            .map_err(|e| format!("the workspace: {e}"))?
            .into_iter()
            .filter(|(name, _)| !own.iter().any(|(n, _)| n == name))
            .collect();
        let bind_workspace = workspace.len() + own.len() <= MAX_BINDS;
        let mut files: Vec<FileIn> = workspace
            .into_iter()
            .map(|(name, path)| FileIn {
                path: PathBuf::from(name),
                source: if bind_workspace {
                    FileSource::Bind(path)
                } else {
                    FileSource::Host(path)
                },
                mode: None,
            })
            .collect();
        files.extend(own.into_iter().map(|(name, path)| FileIn {
            path: PathBuf::from(name),
            source: FileSource::Bind(path),
            mode: None,
        }));
        let stdin = project
            .test_input(&test.name)
            .map_or(Stdin::Null, Stdin::File);
        Ok(SpecBuilder::new(self.env.rootfs.clone())
            .defaults(&self.env.defaults)
            .command(self.argv.to_vec())
            .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
            .limits(&overrides(&limits))
            .files(files)
            .stdin(stdin)
            .setenv("SE_CURRENT_STAGE=run")
            .setenv(&format!("SE_TEST_NAME={}", test.name))
            .build())
    }

    /// Judges an output; `Err` when the checker could not (a checker error, or the sandbox
    /// failing: an internal error).
    fn check(
        &self,
        index: usize,
        test: &TestCase,
        output: &[u8],
    ) -> Result<Checked, (Verdict, String)> {
        let project = self.g.project;
        let answer = || -> Result<Vec<u8>, (Verdict, String)> {
            match project.test_answer(&test.name) {
                Some(p) => std::fs::read(&p)
                    .map_err(|e| (Verdict::InternalError, format!("reading the answer: {e}"))),
                None => Ok(Vec::new()),
            }
        };
        let w = test.weight;
        match &project.def.checker {
            CheckerSpec::Exact {} => Ok(checker::exact(output, &answer()?, w)),
            CheckerSpec::Tokens {} => Ok(checker::tokens_equal(output, &answer()?, w)),
            CheckerSpec::Floats { abs, rel } => {
                Ok(checker::floats(output, &answer()?, *abs, *rel, w))
            }
            CheckerSpec::Program {
                command, limits, ..
            } => self.run_checker(index, test, output, command, limits),
        }
    }

    fn run_checker(
        &self,
        index: usize,
        test: &TestCase,
        output: &[u8],
        command: &[String],
        limits: &crate::exec::RequestedLimits,
    ) -> Result<Checked, (Verdict, String)> {
        let internal = |what: String| (Verdict::InternalError, what);
        let project = self.g.project;
        let dir = self.g.dir;
        let output_file = dir
            .write_test_output(index, output)
            .map_err(|e| internal(format!("keeping the output: {e}")))?;
        let empty = dir
            .empty()
            .map_err(|e| internal(format!("an empty file: {e}")))?;
        let limits = checker_limits(limits).map_err(|e| (Verdict::CheckerError, e))?;
        let own = top_level(&project.checker_dir())
            .map_err(|e| internal(format!("the checker's files: {e}")))?;
        let mut files: Vec<FileIn> = own
            .into_iter()
            .map(|(name, path)| FileIn {
                path: PathBuf::from(name),
                source: FileSource::Bind(path),
                mode: None,
            })
            .collect();
        let inputs = [
            project.test_input(&test.name).unwrap_or(empty.clone()),
            output_file,
            project.test_answer(&test.name).unwrap_or(empty),
        ];
        for (name, host) in CHECKER_ARGS.iter().zip(inputs) {
            files.push(FileIn {
                path: PathBuf::from(*name),
                source: FileSource::Bind(host),
                mode: None,
            });
        }
        let mut argv = command.to_vec();
        argv.extend(CHECKER_ARGS.iter().map(|s| s.to_string()));
        let spec = SpecBuilder::new(self.checker_env.rootfs.clone())
            .defaults(&self.checker_env.defaults)
            .command(argv)
            .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
            .limits(&overrides(&limits))
            .files(files)
            .build();
        let io = Io {
            stop: Some(self.g.stop.clone()),
            ..Io::default()
        };
        let o = self.g.pool.run(&spec, io).map_err(|e| {
            (
                Verdict::CheckerError,
                format!("the checker could not run: {e}"),
            )
        })?;
        self.judge_by(&o, test, "checker")
    }

    /// What a testlib-speaking helper's run (the checker's, the interactor's) says of a test;
    /// its failure is the project's, with its streams in the debug log.
    fn judge_by(
        &self,
        o: &Outcome,
        test: &TestCase,
        what: &str,
    ) -> Result<Checked, (Verdict, String)> {
        match o.end_reason {
            sandbox::EndReason::InternalError => {
                return Err((
                    Verdict::InternalError,
                    format!(
                        "the sandbox failed running the {what}: {}",
                        o.message.clone().unwrap_or_default()
                    ),
                ))
            }
            sandbox::EndReason::Stopped => return Err((Verdict::Stopped, "stopped".into())),
            _ => {}
        }
        let run = CheckerRun {
            end_reason: o.end_reason.into(),
            exit_code: o.exit_code,
            signal_name: o.signal_name.as_deref(),
            stdout: &o.stdout,
            stderr: &o.stderr,
        };
        checker::testlib(&run, test.weight).map_err(|why| {
            let why = why.replacen("the checker", &format!("the {what}"), 1);
            let detail = format!(
                "{why}\n--- {what} stdout ---\n{}\n--- {what} stderr ---\n{}",
                String::from_utf8_lossy(&o.stdout).trim_end(),
                String::from_utf8_lossy(&o.stderr).trim_end()
            );
            self.g.dir.debug(&format!("test {}: {detail}", test.name));
            (
                Verdict::CheckerError,
                format!(
                    "{why} ({})",
                    how(run.end_reason, o.exit_code, o.signal_name.as_deref(), None)
                ),
            )
        })
    }
}
