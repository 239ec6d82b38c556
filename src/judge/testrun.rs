//! Running one test's program: the one function the pipeline calls per test
//! ([`TestRunner::run`]), so that how a test runs can change without touching the pipeline.
//! A plain test runs in a sandbox of the engine's warm pool ([`sandbox::Pool`]): prepared
//! ahead for the test's environment while earlier tests ran, used by this test only. An
//! interactive test runs the solution and its interactor as a group: the solution's stdout is
//! the interactor's stdin and the interactor's stdout the solution's stdin; the group ends
//! with the interactor.

use std::sync::Arc;
use std::time::Duration;

use sandbox::{Group, Io, Outcome, Pipe, PipeEnd, Pool, Spec, StopHandle};

/// One test's run, as the pipeline asks for it.
pub struct TestJob {
    /// The program, its limits, stdin and files (the build's outputs bound read-only).
    pub program: Spec,
    /// The interactor to run beside it, for interactive problems.
    pub interactor: Option<Spec>,
    pub stop: StopHandle,
}

/// How one test's run ended.
pub struct TestRun {
    pub program: Outcome,
    /// The interactor's outcome, when the test had one.
    pub interactor: Option<Outcome>,
}

/// Runs tests one after the other.
pub struct TestRunner {
    pool: Arc<Pool>,
}

/// The group's wall limit past the longer of its programs' own: they end by their own limits
/// first, the group's only if something in between hangs.
const GROUP_WALL_MARGIN: Duration = Duration::from_secs(2);

impl TestRunner {
    pub fn new(pool: Arc<Pool>) -> TestRunner {
        TestRunner { pool }
    }

    /// Runs one test's program (and its interactor). `Err` when the spec cannot run as given;
    /// a failure of the sandbox is an outcome with `end_reason: internal-error`.
    pub fn run(&mut self, job: TestJob) -> Result<TestRun, sandbox::Error> {
        let io = || Io {
            stop: Some(job.stop.clone()),
            ..Io::default()
        };
        let Some(interactor) = job.interactor else {
            return Ok(TestRun {
                program: self.pool.run(&job.program, io())?,
                interactor: None,
            });
        };
        const SOLUTION: usize = 0;
        const INTERACTOR: usize = 1;
        let pipe = |from: usize, to: usize| Pipe {
            from: PipeEnd {
                program: from,
                fd: 1,
            },
            to: PipeEnd { program: to, fd: 0 },
            capture_bytes: None,
        };
        let wall = job
            .program
            .limits
            .wall_time
            .max(interactor.limits.wall_time);
        let group = Group {
            programs: vec![job.program, interactor],
            pipes: vec![pipe(SOLUTION, INTERACTOR), pipe(INTERACTOR, SOLUTION)],
            wall_time: wall.map(|w| w + GROUP_WALL_MARGIN),
            ends_with: vec![INTERACTOR],
        };
        let mut out = self.pool.engine().run_group(&group, vec![io(), io()])?;
        let interactor = out.programs.pop();
        let program = out.programs.pop().ok_or_else(|| {
            sandbox::Error::InvalidSpec("the group gave no outcome for the solution".into())
        })?;
        Ok(TestRun {
            program,
            interactor,
        })
    }
}
