//! Prepared sandboxes kept ready ahead (the warm pool).
//!
//! Setting a sandbox up (namespaces, id maps, cgroup, root filesystem, init waiting) is most
//! of a fresh run's cost and does not depend on the program. A [`Pool`] keeps, for each
//! environment asked for recently, a few sandboxes prepared by a background thread, so a run
//! only starts its program. Each sandbox runs one program and is then torn down as any other:
//! none is ever given to a second run, so nothing of one run can be seen by the next.
//!
//! The thread that prepares owns every sandbox it made (their inits die with it, by their
//! parent-death signal), so sandboxes never leave the pool except into [`Pool::run`], which
//! borrows the pool for as long as the program runs.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::Sandbox;
use crate::error::Error;
use crate::io::Io;
use crate::outcome::Outcome;
use crate::prepared::Prepared;
use crate::spec::{EnvSpec, Limits, Spec};

/// An ask this long after the one before comes after a pause: the pool was idle, and its
/// refill waits for the run (see `State::running`).
const PAUSE: Duration = Duration::from_millis(100);

/// How many sandboxes a pool keeps ready, and for how long.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Sandboxes kept ready per environment in use (0: the pool only runs fresh sandboxes).
    pub per_env: usize,
    /// Environments kept at once; asking for one more drops the least recently asked.
    pub max_envs: usize,
    /// An environment not asked for this long has its sandboxes ended.
    pub idle_after: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            per_env: 2,
            max_envs: 8,
            idle_after: Duration::from_secs(60),
        }
    }
}

/// The sandboxes ready for one environment.
struct Shelf {
    ready: Vec<Prepared>,
    last_asked: Instant,
    /// The last ask came after a pause (see `State::running`).
    asked_after_pause: bool,
    /// Preparing failed: not tried again until the next ask (the run itself will say why).
    failing: bool,
    /// The limits of the last run asked for: sandboxes are prepared with them in place.
    limits: Limits,
}

#[derive(Default)]
struct State {
    shelves: HashMap<EnvSpec, Shelf>,
    stopping: bool,
    /// Runs of this pool under way. Preparing beside a run slows that run (its program's start
    /// and exit wait on the kernel's mount and cgroup locks and RCU grace periods that
    /// preparing takes: at an idle pool, `true` from its start to its end took 1.66–1.91 ms
    /// beside a preparation and 1.08 ms alone, `phases --pool`). So a shelf asked for after a
    /// pause, that still holds a sandbox for the next run, is refilled once no run is under
    /// way. A shelf asked for in a stream (a judge's tests one after another) is refilled at
    /// once, as is an empty one: there the next run comes before this one's end, and without a
    /// prepared sandbox it would set up a fresh one, which costs it more (a judge's per-test
    /// overhead went from 0.98 to 1.64 ms when every refill waited for the runs to end).
    running: usize,
    runs: PoolRuns,
}

/// How the pool's runs found their sandbox, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolRuns {
    /// Took one ready.
    pub prepared: u64,
    /// Set up a fresh one: none was ready (or the pool keeps none). A run that finds its
    /// shelf empty does not wait for the sandbox being prepared: on 2 CPUs with one run at a
    /// time, its own setup beside the preparation uses the idle CPU. Waiting made a judge's
    /// runs find a sandbox 91–98 times in 100 instead of 73–75, but its per-test overhead's
    /// median went from 0.75–0.79 to 1.06–1.24 ms (`cargo bench --bench judge`, alternated).
    pub fresh: u64,
}

struct Shared {
    engine: Arc<Sandbox>,
    config: PoolConfig,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the shelves usable: take them as they are.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Prepared sandboxes per environment, refilled in the background.
pub struct Pool {
    shared: Arc<Shared>,
    refill: Option<JoinHandle<()>>,
}

impl Pool {
    /// A pool over `engine`; starts the thread that prepares.
    pub fn new(engine: Arc<Sandbox>, config: PoolConfig) -> Result<Pool, Error> {
        let shared = Arc::new(Shared {
            engine,
            config,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let refill = if shared.config.per_env > 0 {
            let s = shared.clone();
            let thread = std::thread::Builder::new()
                .name("sandpit-pool".into())
                .spawn(move || refill(&s))
                .map_err(|e| Error::Setup(format!("starting the pool's thread: {e}")))?;
            Some(thread)
        } else {
            None
        };
        Ok(Pool { shared, refill })
    }

    /// The engine the pool prepares with.
    pub fn engine(&self) -> &Arc<Sandbox> {
        &self.shared.engine
    }

    /// Runs one program: in a sandbox prepared ahead for its environment when one is ready,
    /// else in a fresh one. Same contract as [`Sandbox::run`]; `setup_s` counts from this call.
    pub fn run(&self, spec: &Spec, io: Io) -> Result<Outcome, Error> {
        let env = spec.env_spec();
        let _under_way = UnderWay::begin(&self.shared);
        match self.take(&env, &spec.limits) {
            Some(mut prepared) => {
                prepared.taken();
                prepared.run(spec, io)
            }
            None => self.shared.engine.run(spec, io),
        }
    }

    /// How the pool's runs found their sandbox so far.
    pub fn runs(&self) -> PoolRuns {
        self.shared.lock().runs
    }

    /// Sandboxes ready for `env` now.
    pub fn ready(&self, env: &EnvSpec) -> usize {
        self.shared
            .lock()
            .shelves
            .get(env)
            .map_or(0, |s| s.ready.len())
    }

    /// Ends every sandbox kept ready (the environments changed, say); they are prepared again
    /// as runs ask for them.
    pub fn clear(&self) {
        let shelves = std::mem::take(&mut self.shared.lock().shelves);
        drop(shelves);
    }

    /// A ready sandbox for `env`, if any; records the ask (and its `limits`) so the shelf is
    /// (re)filled, and counts how the run found its sandbox.
    fn take(&self, env: &EnvSpec, limits: &Limits) -> Option<Prepared> {
        if self.refill.is_none() {
            // No thread prepares: nothing is ever ready.
            self.shared.lock().runs.fresh += 1;
            return None;
        }
        let mut evicted = None;
        let taken = {
            let mut state = self.shared.lock();
            if !state.shelves.contains_key(env)
                && state.shelves.len() >= self.shared.config.max_envs
            {
                let oldest = state
                    .shelves
                    .iter()
                    .min_by_key(|(_, s)| s.last_asked)
                    .map(|(e, _)| e.clone());
                evicted = oldest.and_then(|e| state.shelves.remove(&e));
            }
            let shelf = state.shelves.entry(env.clone()).or_insert_with(|| Shelf {
                ready: Vec::new(),
                last_asked: Instant::now(),
                asked_after_pause: true,
                failing: false,
                limits: limits.clone(),
            });
            let now = Instant::now();
            shelf.asked_after_pause = now.duration_since(shelf.last_asked) >= PAUSE;
            shelf.last_asked = now;
            shelf.failing = false;
            shelf.limits.clone_from(limits);
            let taken = shelf.ready.pop();
            match taken {
                Some(_) => state.runs.prepared += 1,
                None => state.runs.fresh += 1,
            }
            taken
        };
        self.shared.wake.notify_one();
        // Ended outside the lock: tearing sandboxes down takes time.
        drop(evicted);
        taken
    }
}

/// One run of the pool under way, from its call to its outcome.
struct UnderWay<'a>(&'a Shared);

impl<'a> UnderWay<'a> {
    fn begin(shared: &'a Shared) -> UnderWay<'a> {
        shared.lock().running += 1;
        UnderWay(shared)
    }
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running -= 1;
        if state.running == 0 {
            drop(state);
            self.0.wake.notify_one();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.refill.take() {
            let _ = thread.join();
        }
    }
}

/// The preparing thread: fills the shelves asked for, ends idle ones, and at the end ends
/// every sandbox it made (their inits are bound to this thread).
fn refill(shared: &Shared) {
    let config = &shared.config;
    loop {
        let mut state = shared.lock();
        if state.stopping {
            let shelves = std::mem::take(&mut state.shelves);
            drop(state);
            drop(shelves);
            return;
        }
        let now = Instant::now();
        let idle: Vec<EnvSpec> = state
            .shelves
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_asked) >= config.idle_after)
            .map(|(e, _)| e.clone())
            .collect();
        if !idle.is_empty() {
            let ended: Vec<Shelf> = idle
                .iter()
                .filter_map(|e| state.shelves.remove(e))
                .collect();
            drop(state);
            drop(ended);
            continue;
        }
        let wanted = state
            .shelves
            .iter()
            .filter(|(_, s)| !s.failing && s.ready.len() < config.per_env)
            .min_by_key(|(_, s)| s.ready.len())
            .map(|(e, s)| {
                let may_wait = !s.ready.is_empty() && s.asked_after_pause;
                (e.clone(), s.limits.clone(), may_wait)
            });
        let Some((env, limits, may_wait)) = wanted else {
            // Nothing to do until an ask, or until the next shelf may go idle.
            let _ = shared.wake.wait_timeout(state, config.idle_after);
            continue;
        };
        if may_wait && state.running > 0 {
            // Not beside a run (see `State::running`): woken when the last run ends, or by
            // the next ask.
            let _ = shared.wake.wait_timeout(state, config.idle_after);
            continue;
        }
        drop(state);
        let prepared = shared.engine.prepare(&env).map(|mut p| {
            // Not fatal: the run writes them itself then.
            if let Err(e) = p.set_limits_ahead(&limits) {
                tracing::debug!("setting a prepared sandbox's limits ahead: {e}");
            }
            p
        });
        let mut state = shared.lock();
        match (state.shelves.get_mut(&env), prepared) {
            (Some(shelf), Ok(p)) => shelf.ready.push(p),
            (Some(shelf), Err(e)) => {
                tracing::warn!("preparing a sandbox ahead failed: {e}");
                shelf.failing = true;
            }
            // The shelf went (cleared, evicted) while this one was made: end it.
            (None, p) => {
                drop(state);
                drop(p);
            }
        }
    }
}
