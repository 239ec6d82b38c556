//! An output judged: by a built-in checker, or by a checker program in a sandbox of its own
//! (with the input, the output and the answer bound read-only); and what a testlib-speaking
//! helper's run says of a test.

use sandbox::{FileIn, FileSource, Io, Outcome};

use super::bound_files;
use super::tests_run::TestsRun;
use crate::exec::runner::overrides;
use crate::exec::RequestedLimits;
use crate::judge::checker::{self, Checked, CheckerRun};
use crate::judge::project::{checker_limits, CheckerSpec, TestCase, CHECKER_ARGS};
use crate::judge::verdict::{how, Verdict};
use crate::runspec::SpecBuilder;
use std::path::PathBuf;

impl TestsRun<'_> {
    /// Judges an output; `Err` when the checker could not (a checker error, or the sandbox
    /// failing: an internal error).
    pub(super) fn check(
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
        limits: &RequestedLimits,
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
        let mut files = bound_files(&project.checker_dir())
            .map_err(|e| internal(format!("the checker's files: {e}")))?;
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
    pub(super) fn judge_by(
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
