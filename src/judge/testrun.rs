//! Running one test's program: the one function the pipeline calls per test
//! ([`TestRunner::run`]), so that how a test runs can change without touching the pipeline.
//! Each test runs in a sandbox of the engine's warm pool ([`sandbox::Pool`]): prepared ahead
//! for the test's environment while earlier tests ran, used by this test only. A group with
//! an interactor, for interactive problems, slots in here.

use std::sync::Arc;

use sandbox::{Io, Outcome, Pool, Spec, StopHandle};

/// One test's run, as the pipeline asks for it.
pub struct TestJob {
    /// The program, its limits, stdin and files (the build's outputs bound read-only).
    pub program: Spec,
    pub stop: StopHandle,
}

/// Runs tests one after the other.
pub struct TestRunner {
    pool: Arc<Pool>,
}

impl TestRunner {
    pub fn new(pool: Arc<Pool>) -> TestRunner {
        TestRunner { pool }
    }

    /// Runs one test's program. `Err` when the spec cannot run as given; a failure of the
    /// sandbox is an outcome with `end_reason: internal-error`.
    pub fn run(&mut self, job: TestJob) -> Result<Outcome, sandbox::Error> {
        let io = Io {
            stop: Some(job.stop),
            ..Io::default()
        };
        self.pool.run(&job.program, io)
    }
}
