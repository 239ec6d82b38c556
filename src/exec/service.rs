//! The execution service: what a face (the HTTP API, later the grading pipeline) asks of
//! executions. It admits, lays out the work directory, queues, runs in a slot and waits, and
//! leaves every status change to the [`Lifecycle`].

use std::sync::Arc;
use std::time::Duration;

use sandbox::{RelPath, Sandbox, StopHandle};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Principal;
use crate::callbacks::Subject;
use crate::clock::Micros;
use crate::env::Catalog;
use crate::error::{blocking, Error, Result};
use crate::exec::admission::{admit, effective_limits};
use crate::exec::events::Events;
use crate::exec::lifecycle::Lifecycle;
use crate::exec::request::{ExecutionRequest, NewExecution};
use crate::exec::runner;
use crate::exec::state::{require, Ending, Status};
use crate::exec::workdir::{WorkDir, WorkDirs};
use crate::ids::{new_execution_id, valid_execution_id};
use crate::scheduler::Scheduler;
use crate::store::{ExecutionRow, Store};

/// How long `stop` and `DELETE` wait for a running execution to end.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long `wait` may take at most (the longest run plus a long queue).
const WAIT_MAX: Duration = Duration::from_secs(7 * 86_400);

pub struct Service {
    life: Lifecycle,
    store: Arc<dyn Store>,
    envs: Arc<Catalog>,
    engine: Arc<Sandbox>,
    sched: Scheduler,
    dirs: WorkDirs,
    /// This node's name in the store.
    node: String,
    /// Serialises "count the key's executions, then queue one" so max_executions holds.
    admission: tokio::sync::Mutex<()>,
}

/// What a service runs with.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub envs: Arc<Catalog>,
    pub engine: Arc<Sandbox>,
    pub slots: usize,
    pub dirs: WorkDirs,
    pub node: String,
}

impl Service {
    pub fn new(p: Parts) -> Service {
        Service {
            life: Lifecycle::new(p.store.clone(), Events::new()),
            store: p.store,
            envs: p.envs,
            engine: p.engine,
            sched: Scheduler::new(p.slots),
            dirs: p.dirs,
            node: p.node,
            admission: tokio::sync::Mutex::new(()),
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

    pub fn dir(&self, id: &str) -> WorkDir {
        self.dirs.of(id)
    }

    /// An execution the principal may see; `NotFound` otherwise (others' executions don't
    /// exist for a key).
    pub async fn get(&self, who: &Principal, id: &str) -> Result<ExecutionRow> {
        let missing = || Error::NotFound(format!("no execution '{id}'"));
        if !valid_execution_id(id) {
            return Err(missing());
        }
        match self.store.get_execution(id).await? {
            Some(row) if who.may_see(&row.owner) => Ok(row),
            _ => Err(missing()),
        }
    }

    /// Newest first: a key's own, or everyone's for the master token. The page and the total.
    pub async fn list(
        &self,
        who: &Principal,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRow>, i64)> {
        let owner = (!who.is_master()).then(|| who.owner());
        Ok(self
            .store
            .list_executions(owner.as_deref(), limit, offset)
            .await?)
    }

    pub async fn create(&self, who: &Principal, new: NewExecution) -> Result<ExecutionRow> {
        if self.envs.get(&new.environment)?.is_none() {
            return Err(Error::Invalid(format!(
                "environment '{}' does not exist (see GET /api/v1/environments)",
                new.environment
            )));
        }
        let quota = who.quota();
        let limits = effective_limits(&new.limits, &quota)?;
        let start = new.start || new.wait;
        if start {
            admit(self.store.as_ref(), &who.owner(), &quota).await?;
        }
        let id = new_execution_id();
        let dir = self.dirs.of(&id);
        let (files, stdin, writer) = (new.files, new.stdin, dir.clone());
        blocking(move || {
            writer.create(&files, stdin.as_deref()).map_err(|e| {
                // Our own directory: what fails here is a path that is both a file and a
                // folder.
                Error::Invalid(format!(
                    "files: {e} (a path is used both as a file and as a directory?)"
                ))
            })
        })
        .await?;
        let row = ExecutionRow {
            id: id.clone(),
            owner: who.owner(),
            environment: new.environment,
            status: Status::Pending,
            request: ExecutionRequest {
                command: new.command,
                limits,
                outputs: new.outputs,
            },
            end_reason: None,
            message: None,
            result: None,
            created_at: Micros::now(),
            started_at: None,
            ended_at: None,
            queued_at: None,
            node: None,
        };
        // The callback's row first: the execution cannot end before its callback exists.
        let callback = new
            .callback
            .map(|c| c.row(Subject::Execution(id.clone()), Micros::now()));
        if let Some(c) = &callback {
            if let Err(e) = self.store.insert_callback(c).await {
                let _ = dir.remove().await;
                return Err(e.into());
            }
        }
        let created = if start {
            let _guard = self.admission.lock().await;
            match admit(self.store.as_ref(), &who.owner(), &quota).await {
                Ok(()) => self.life.create(row, true).await.map_err(Error::from),
                Err(e) => Err(e),
            }
        } else {
            self.life.create(row, false).await.map_err(Error::from)
        };
        let row = match created {
            Ok(row) => row,
            Err(e) => {
                if callback.is_some() {
                    let _ = self
                        .store
                        .delete_callbacks_of(&Subject::Execution(id))
                        .await;
                }
                let _ = dir.remove().await;
                return Err(e);
            }
        };
        if start {
            self.sched.kick();
        }
        if new.wait {
            self.wait_ended(&id, WAIT_MAX).await;
        }
        Ok(self.store.get_execution(&id).await?.unwrap_or(row))
    }

    /// Where one more input file goes: the work directory of a pending execution (checked
    /// before the caller reads the upload).
    pub async fn input_dir(&self, who: &Principal, id: &str) -> Result<WorkDir> {
        let row = self.get(who, id).await?;
        require(
            row.status,
            &[Status::Pending],
            "input can be uploaded only while the execution is pending",
        )?;
        Ok(self.dirs.of(&row.id))
    }

    pub async fn start(&self, who: &Principal, id: &str, wait: bool) -> Result<ExecutionRow> {
        let row = self.get(who, id).await?;
        require(
            row.status,
            &[Status::Pending],
            "only a pending execution can be started",
        )?;
        {
            let _guard = self.admission.lock().await;
            admit(self.store.as_ref(), &who.owner(), &who.quota()).await?;
            if !self.life.enqueue(&row.id).await? {
                return Err(Error::WrongState(
                    "the execution is no longer pending".into(),
                ));
            }
        }
        self.sched.kick();
        if wait {
            self.wait_ended(&row.id, WAIT_MAX).await;
        }
        self.get(who, &row.id).await
    }

    pub async fn stop(&self, who: &Principal, id: &str) -> Result<ExecutionRow> {
        let row = self.get(who, id).await?;
        require(
            row.status,
            &[Status::Pending, Status::Queued, Status::Running],
            "only an execution that has not ended can be stopped",
        )?;
        self.stop_and_wait(&row).await?;
        self.get(who, &row.id).await
    }

    /// Stops it when it has not ended, then erases it, every byte. Returns it as it was last.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<ExecutionRow> {
        let row = self.get(who, id).await?;
        if row.status != Status::Ended {
            self.stop_and_wait(&row).await?;
        }
        let row = self.get(who, &row.id).await?;
        self.life.delete(&row.id).await?;
        self.dirs.of(&row.id).remove().await?;
        Ok(row)
    }

    /// An output as it was at the end. Only outputs named at creation; never one the core
    /// refused (a symlink, FIFO or device in its place).
    pub async fn output(&self, who: &Principal, id: &str, rel: &RelPath) -> Result<Vec<u8>> {
        let row = self.get(who, id).await?;
        let name = row.request.output_named(rel).ok_or_else(|| {
            Error::NotFound(format!(
                "'{rel}' is not one of this execution's outputs (name it in 'outputs' at creation)"
            ))
        })?;
        require(
            row.status,
            &[Status::Ended],
            "outputs are available once the execution has ended",
        )?;
        if let Some(why) = row.result.as_ref().and_then(|r| r.outputs.get(name)) {
            return Err(Error::OutputRefused(format!(
                "output '{name}' was not collected: {why}"
            )));
        }
        self.dirs
            .of(&row.id)
            .read_output(rel)
            .await?
            .ok_or_else(|| {
                Error::OutputRefused(format!(
                    "output '{name}' was not collected (the run did not get that far)"
                ))
            })
    }

    /// Ends the execution: at once when it has not started, through its stop handle when it
    /// runs.
    async fn stop_and_wait(&self, row: &ExecutionRow) -> Result<()> {
        if matches!(row.status, Status::Pending | Status::Queued)
            && self.life.cancel(&row.id).await?
        {
            return Ok(());
        }
        // Running (or it just began): ask the run to stop, then wait for its end.
        self.sched.stop(&row.id);
        if !self.wait_ended(&row.id, STOP_WAIT).await {
            return Err(Error::Internal(format!(
                "execution '{}' did not end within {} s of being stopped",
                row.id,
                STOP_WAIT.as_secs()
            )));
        }
        Ok(())
    }

    /// Waits until the execution has ended (or is gone), at most `timeout`; false on timeout.
    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> bool {
        // Subscribed before the store is read, so no end slips in between.
        let mut ended = self.events().subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.store.get_execution(id).await {
                Ok(Some(row)) if row.status != Status::Ended => {}
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!("waiting for {id}: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = tokio::time::sleep_until(deadline) => return false,
                    }
                }
            }
            loop {
                tokio::select! {
                    event = ended.recv() => match event {
                        Ok(e) if e.id == id => return true,
                        Ok(_) => {}
                        // Fell behind: the store says whether it ended meanwhile.
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return false,
                    },
                    _ = tokio::time::sleep_until(deadline) => return false,
                }
            }
        }
    }

    /// At start: what a crash left running ends as internal-error, and the files of
    /// executions that were never accepted (a crash between writing them and the insert) go.
    pub async fn recover(&self) -> Result<usize> {
        let ids = self.life.abandon_running(&self.node).await?;
        for id in self.dirs.ids().await {
            if self.store.get_execution(&id).await?.is_none() {
                let _ = self.dirs.of(&id).remove().await;
            }
        }
        Ok(ids.len())
    }

    /// Claims queued work into free slots from now on (work queued before a restart too).
    pub fn spawn_dispatcher(self: &Arc<Self>) {
        let claimer = self.clone();
        let runner = self.clone();
        self.sched.spawn_dispatcher(
            move || {
                let s = claimer.clone();
                async move { s.life.claim_next(&s.node).await }
            },
            move |row, permit| runner.clone().run_claimed(row, permit),
        );
        self.sched.kick();
    }

    /// Runs a claimed execution in its slot and records its end.
    async fn run_claimed(self: Arc<Self>, row: ExecutionRow, permit: OwnedSemaphorePermit) {
        let id = row.id.clone();
        let ending = match StopHandle::new() {
            // Stopped before its slot came: it never starts.
            Ok(stop) if self.sched.register(&id, stop.clone()) => Ending::stopped_before_start(),
            Ok(stop) => {
                let s = self.clone();
                tokio::task::spawn_blocking(move || {
                    runner::run(&s.engine, &s.envs, &s.dirs.of(&row.id), &row, stop)
                })
                .await
                .unwrap_or_else(|e| Ending::internal(format!("the run panicked: {e}")))
            }
            Err(e) => Ending::internal(format!("creating the stop handle: {e}")),
        };
        if let Err(e) = self.life.finish(&id, ending).await {
            tracing::error!("recording the end of {id}: {e}");
        }
        self.sched.unregister(&id);
        drop(permit);
    }
}
