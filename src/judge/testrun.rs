//! Running one test's program: the one function the pipeline calls per test
//! ([`TestRunner::run`]), so that how a test runs can change without touching the pipeline.
//! Today each test gets a fresh sandbox, prepared while the previous test runs (namespaces,
//! cgroup and root filesystem are most of a run's cost and do not depend on the program);
//! a warm pool of prepared sandboxes, or a group with an interactor for interactive
//! problems, slot in here.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use sandbox::{EnvSpec, Io, Outcome, Prepared, Sandbox, Spec, StopHandle};

/// One test's run, as the pipeline asks for it.
pub struct TestJob {
    /// The program, its limits, stdin and files (the build's outputs bound read-only).
    pub program: Spec,
    pub stop: StopHandle,
    /// Whether another test follows in the same environment (worth preparing for).
    pub more: bool,
}

type Ready = (EnvSpec, Result<Prepared, sandbox::Error>);

/// A thread that prepares sandboxes on request. It lives as long as the runner: a sandbox's
/// init dies with the thread that made it (its parent-death signal), so the thread that
/// prepares must outlive every run of what it prepared.
struct Preparer {
    asks: mpsc::Sender<EnvSpec>,
    ready: mpsc::Receiver<Ready>,
    thread: JoinHandle<()>,
}

impl Preparer {
    fn start(engine: Arc<Sandbox>) -> std::io::Result<Preparer> {
        let (asks, asked) = mpsc::channel::<EnvSpec>();
        let (done, ready) = mpsc::channel::<Ready>();
        let thread = std::thread::Builder::new()
            .name("sandpit-prepare".into())
            .spawn(move || {
                for env in asked {
                    let prepared = engine.prepare(&env);
                    if done.send((env, prepared)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Preparer {
            asks,
            ready,
            thread,
        })
    }
}

/// Runs tests one after the other.
pub struct TestRunner {
    engine: Arc<Sandbox>,
    preparer: Option<Preparer>,
    /// A sandbox was asked for and not taken yet.
    pending: bool,
}

impl TestRunner {
    pub fn new(engine: Arc<Sandbox>) -> TestRunner {
        TestRunner {
            engine,
            preparer: None,
            pending: false,
        }
    }

    fn prepare_ahead(&mut self, env: EnvSpec) {
        if self.preparer.is_none() {
            self.preparer = Preparer::start(self.engine.clone()).ok();
        }
        if let Some(p) = &self.preparer {
            self.pending = p.asks.send(env).is_ok();
        }
    }

    /// A sandbox for `env`: the one prepared ahead when it is for `env`, else a new one.
    fn sandbox_for(&mut self, env: &EnvSpec) -> Result<Prepared, sandbox::Error> {
        if std::mem::take(&mut self.pending) {
            if let Some(Ok((prepared_for, ready))) = self.preparer.as_ref().map(|p| p.ready.recv())
            {
                if &prepared_for == env {
                    return ready;
                }
                // Another environment: that one is ended (dropped) unused.
            }
        }
        self.engine.prepare(env)
    }

    /// Runs one test's program. `Err` when its sandbox could not be set up
    /// (`SandboxFailed`) or the spec cannot run as given; a failure of the sandbox during the
    /// run is an outcome with `end_reason: internal-error`.
    pub fn run(&mut self, job: TestJob) -> Result<Outcome, sandbox::Error> {
        let env = job.program.env_spec();
        let sandbox = self.sandbox_for(&env);
        if job.more && !job.stop.requested() {
            self.prepare_ahead(env);
        }
        let io = Io {
            stop: Some(job.stop),
            ..Io::default()
        };
        sandbox?.run(&job.program, io)
    }
}

impl Drop for TestRunner {
    fn drop(&mut self) {
        if let Some(p) = self.preparer.take() {
            // No more asks: the thread ends once it has made what it was asked for; that
            // sandbox is ended unused with the channel.
            drop(p.asks);
            let _ = p.thread.join();
        }
    }
}
