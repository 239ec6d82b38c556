//! An interactive problem's interactor: its build (once per submission), and its sandbox
//! beside each test's program.

use std::path::PathBuf;

use sandbox::{FileIn, FileSource, Io, RelPath, Spec};

use super::stages::record_of;
use super::tests_run::TestsRun;
use super::{bound_files, stage_limits, Graded, Grading, STAGE_TIMEOUT_S};
use crate::env::Resolved;
use crate::exec::runner::overrides;
use crate::judge::config::Stage;
use crate::judge::project::{checker_limits, InteractorSpec, TestCase, CHECKER_ARGS, INTERACTOR};
use crate::judge::report::Final;
use crate::judge::workspace::top_level;
use crate::runspec::SpecBuilder;

/// The interactor's files: its own directory, or its build's copy of it with what it made.
/// Built once per submission (a resumed one finds it built); a build that fails is the
/// project's error, with its streams in the debug log.
pub(super) fn prepare_interactor(
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
    let limits = stage_limits(STAGE_TIMEOUT_S);
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
pub(super) struct Interactor<'a> {
    pub(super) spec: &'a InteractorSpec,
    /// Its files (built).
    pub(super) dir: PathBuf,
    pub(super) env: &'a Resolved,
}

impl TestsRun<'_> {
    /// The interactor beside a test's program: `COMMAND input output answer` in its files,
    /// with the test's input and answer bound read-only (`output` is its to write). Its wall
    /// time outlasts the solution's, so that a solution that never answers is the one ended.
    pub(super) fn interactor_spec(
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
        let mut files = bound_files(&i.dir).map_err(|e| format!("the interactor's files: {e}"))?;
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
}
