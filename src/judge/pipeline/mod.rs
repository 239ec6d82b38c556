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

//!
//! | concern | where |
//! |---|---|
//! | one submission, start to grade; what it is given and tells | here |
//! | a stage: its sandbox, its `SE_*` variables, its record | [`stages`] |
//! | the tests one after the other, a test's program | [`tests_run`] |
//! | an output judged: built-in checkers, a checker program | [`checking`] |
//! | an interactive problem's interactor: built once, beside each test | [`interactor`] |
//! | what a stage's end and the tests mean for the grade | [`decide`] |

mod checking;
mod decide;
mod interactor;
mod stages;
mod tests_run;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sandbox::{FileIn, FileSource, Pool, StopHandle};

use super::config::Stage;
use super::project::{CheckerSpec, ProjectFiles, TestCase};
use super::report::Final;
use super::verdict::{StageRecord, TestResult};
use super::workspace::{top_level, SubmissionDir};
use crate::env::{Catalog, EnvError, Resolved};
use crate::exec::Limits;
use decide::{after_stage, conclude, After};
use interactor::{prepare_interactor, Interactor};
use stages::run_stage;
use tests_run::TestsRun;

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

/// A stage's limits (and an interactor's build's) for a timeout of `secs`.
fn stage_limits(secs: f64) -> Limits {
    Limits {
        memory_bytes: STAGE_MEMORY,
        cpu_time_s: secs,
        wall_time_s: secs,
        pids: STAGE_PIDS,
        output_bytes: STAGE_OUTPUT,
    }
}

/// The top-level entries of a helper's directory (a checker's, an interactor's), each bound
/// read-only under its own name.
fn bound_files(dir: &Path) -> io::Result<Vec<FileIn>> {
    Ok(top_level(dir)?
        .into_iter()
        .map(|(name, path)| FileIn {
            path: PathBuf::from(name),
            source: FileSource::Bind(path),
            mode: None,
        })
        .collect())
}

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
