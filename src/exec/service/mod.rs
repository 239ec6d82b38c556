//! The execution service: what a face (the HTTP API, later the grading pipeline) asks of
//! executions. It admits, lays out the work directory, queues, runs in a slot and waits, and
//! leaves every status change to the [`Lifecycle`].//!
//! | concern | where |
//! |---|---|
//! | the service, an execution the principal may see, the list | here |
//! | a new execution: checked, admitted, laid out, recorded | [`create`] |
//! | input uploads; outputs and pipe captures read | [`files`] |
//! | start, stop, delete, erase; waiting for an end | [`control`] |
//! | the dispatcher, a claimed run, what it keeps; recovery | [`running`] |

mod control;
mod create;
mod files;
mod running;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sandbox::{EnvSpec, Pool};

use crate::auth::Principal;
use crate::env::Catalog;
use crate::error::{Error, Result};
use crate::exec::admission::Policy;
use crate::exec::events::Events;
use crate::exec::lifecycle::Lifecycle;
use crate::exec::workdir::{WorkDir, WorkDirs};
use crate::files::FileStore;
use crate::ids::valid_execution_id;
use crate::scheduler::Scheduler;
use crate::store::{ExecutionRow, Store};

pub use files::UploadTarget;

pub struct Service {
    life: Lifecycle,
    store: Arc<dyn Store>,
    envs: Arc<Catalog>,
    pool: Arc<Pool>,
    sched: Scheduler,
    dirs: WorkDirs,
    files: Arc<FileStore>,
    /// This node's name in the store.
    node: String,
    policy: Policy,
    /// Serialises "count what the key holds, then add to it" so its quotas hold.
    admission: tokio::sync::Mutex<()>,
    /// envid → what the pool shelves its sandboxes under, as its latest run found it.
    pooled: Mutex<BTreeMap<String, EnvSpec>>,
}

/// What a service runs with.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub envs: Arc<Catalog>,
    /// Runs go through the pool: a sandbox prepared ahead when one is ready.
    pub pool: Arc<Pool>,
    pub slots: usize,
    pub dirs: WorkDirs,
    pub files: Arc<FileStore>,
    pub node: String,
    pub policy: Policy,
}
impl Service {
    pub fn new(p: Parts) -> Service {
        Service {
            life: Lifecycle::new(p.store.clone(), Events::new()),
            store: p.store,
            envs: p.envs,
            pool: p.pool,
            sched: Scheduler::new(p.slots),
            dirs: p.dirs,
            files: p.files,
            node: p.node,
            policy: p.policy,
            admission: tokio::sync::Mutex::new(()),
            pooled: Mutex::default(),
        }
    }

    pub fn events(&self) -> &Events {
        self.life.events()
    }

    pub fn slots(&self) -> usize {
        self.sched.slots()
    }

    /// Slots running an execution now.
    pub fn slots_busy(&self) -> usize {
        self.sched.busy()
    }

    /// Sandboxes the warm pool holds ready now, per environment executions ran in.
    pub fn prepared(&self) -> Vec<(String, usize)> {
        let pooled = self.pooled.lock().unwrap_or_else(|p| p.into_inner());
        pooled
            .iter()
            .map(|(envid, env)| (envid.clone(), self.pool.ready(env)))
            .collect()
    }

    /// How the warm pool's runs found their sandbox so far.
    pub fn pool_runs(&self) -> sandbox::PoolRuns {
        self.pool.runs()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The slots' scheduler (the judge shares its slots).
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    pub fn dir(&self, id: &str) -> WorkDir {
        self.dirs.of(id)
    }

    pub fn dirs(&self) -> &WorkDirs {
        &self.dirs
    }

    /// An execution the principal may see; `NotFound` otherwise (others' executions don't
    /// exist for a key).
    pub async fn get(&self, who: &Principal, id: &str) -> Result<ExecutionRow> {
        let missing = || Error::NotFound(format!("no execution '{id}'"));
        if !valid_execution_id(id) {
            return Err(missing());
        }
        who.seen(self.store.get_execution(id).await?)
            .ok_or_else(missing)
    }

    /// Newest first: a key's own, or everyone's for the master token. The page and the total.
    pub async fn list(
        &self,
        who: &Principal,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRow>, i64)> {
        let owner = who.listed_owner();
        Ok(self
            .store
            .list_executions(owner.as_deref(), limit, offset)
            .await?)
    }
}

/// Which program a route names: `None` for the routes of one program, `Some(i)` for those of
/// a group's program `i`.
fn program_index(row: &ExecutionRow, program: Option<usize>) -> Result<usize> {
    let n = row.request.programs().len();
    match (row.request.is_group(), program) {
        (false, None) => Ok(0),
        (true, Some(i)) if i < n => Ok(i),
        (true, Some(i)) => Err(Error::NotFound(format!(
            "this execution has no program {i} (it has {n})"
        ))),
        (true, None) => Err(Error::NotFound(
            "this execution is a group: name the program (…/programs/{n}/…)".into(),
        )),
        (false, Some(_)) => Err(Error::NotFound(
            "this execution is one program: use the routes without /programs/{n}".into(),
        )),
    }
}
