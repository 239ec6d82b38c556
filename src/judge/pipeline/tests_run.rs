//! The tests of a project with test cases, one after the other: each test's program (the run
//! command in the workspace, bound read-only), beside an interactor or judged by the checker.

use std::path::PathBuf;

use sandbox::{FileIn, FileSource, Spec, Stdin};

use super::interactor::Interactor;
use super::{Grading, Progress, MAX_BINDS};
use crate::env::Resolved;
use crate::exec::result::ProgramResult;
use crate::exec::runner::overrides;
use crate::exec::EndReason;
use crate::judge::checker;
use crate::judge::project::TestCase;
use crate::judge::testrun::{TestJob, TestRun, TestRunner};
use crate::judge::verdict::{of_run, TestResult, Verdict};
use crate::judge::workspace::top_level;
use crate::runspec::SpecBuilder;

/// The tests of a project with test cases, one after the other.
pub(super) struct TestsRun<'a> {
    pub(super) g: &'a Grading<'a>,
    pub(super) env: &'a Resolved,
    pub(super) checker_env: &'a Resolved,
    pub(super) interactor: Option<Interactor<'a>>,
    pub(super) argv: &'a [String],
}

/// The submission was stopped.
pub(super) struct Stopped;

impl TestsRun<'_> {
    pub(super) fn all(
        &self,
        tests: &mut Vec<TestResult>,
        progress: &mut dyn Progress,
    ) -> Result<(), Stopped> {
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
                // verdict decides; so it does when the interactor failed (testlib's FAIL):
                // the test is broken, whatever the solution did on seeing its end.
                let interactor_failed = checker::ended_with_fail(
                    i.end_reason.into(),
                    i.exit_code,
                    i.signal_name.as_deref(),
                );
                let with_interactor = interactor_failed
                    || (end_reason == EndReason::Stopped && !self.g.stop.requested())
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
}
