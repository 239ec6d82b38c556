//! The execution service: what a face (the HTTP API, later the grading pipeline) asks of
//! executions. It admits, lays out the work directory, queues, runs in a slot and waits, and
//! leaves every status change to the [`Lifecycle`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::{EnvSpec, Pool, RelPath, StopHandle};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Principal;
use crate::callbacks::Subject;
use crate::clock::Micros;
use crate::env::Catalog;
use crate::error::{blocking, Error, Result};
use crate::exec::admission::{
    admit, check_files, check_pending, check_storage, effective_limits, group_settings,
    storage_left, storage_quota, Policy,
};
use crate::exec::events::Events;
use crate::exec::lifecycle::Lifecycle;
use crate::exec::request::{ExecutionRequest, NewExecution, ProgramRequest};
use crate::exec::runner::{self, RunEnd};
use crate::exec::state::{require, Ending, Status};
use crate::exec::workdir::{WorkDir, WorkDirs};
use crate::files::{FileStore, Room};
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

/// Where an upload may go, known before its body is read.
pub struct UploadTarget {
    pub id: String,
    /// The program whose input it is (0 for a single program).
    pub program: usize,
    /// What the key's storage quota leaves for it.
    pub max_bytes: u64,
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

    /// The quotas of what a key holds, with `adding` more bytes and one more execution
    /// (pending unless `start`); `keeps`: it asks to keep files, so its storage quota must
    /// have room left after it. The master token has none.
    async fn check_holdings(
        &self,
        who: &Principal,
        adding: u64,
        start: bool,
        keeps: bool,
    ) -> Result<()> {
        if who.is_master() {
            return Ok(());
        }
        let usage = self.store.usage(&who.owner()).await?;
        let key = who.quota();
        if !start {
            check_pending(&usage, &key, &self.policy.quotas)?;
        }
        // Keeping files needs a byte to spare after the inputs.
        check_storage(&usage, adding + u64::from(keeps), &key, &self.policy.quotas)
    }

    pub async fn create(&self, who: &Principal, mut new: NewExecution) -> Result<ExecutionRow> {
        new.check()?;
        let in_group = new.group.is_some();
        let quota = who.quota();
        let mut limits = Vec::with_capacity(new.programs.len());
        for (i, p) in new.programs.iter().enumerate() {
            let field = |name: &str| field_of(in_group, i, name);
            let envid = p.environment.as_deref().unwrap_or(&new.environment);
            if self.envs.get(envid)?.is_none() {
                return Err(Error::Invalid(format!(
                    "'{}': environment '{envid}' does not exist (see GET /api/v1/environments)",
                    field("environment")
                )));
            }
            limits.push(
                effective_limits(&p.limits, &quota, &self.policy.caps)
                    .map_err(|e| in_program(e, in_group, i))?,
            );
        }
        check_files(new.input_count(), &quota, &self.policy.quotas)?;
        let group = match &new.group {
            Some(g) => Some(group_settings(
                g,
                &new.programs,
                &limits,
                &quota,
                &self.policy.caps,
            )?),
            None => None,
        };
        let keeps = new.programs.iter().any(|p| !p.keep.is_empty());
        if keeps {
            self.files.check_room(who).await?;
        }
        let start = new.start || new.wait;
        let input_bytes = new.input_bytes();
        self.check_holdings(who, input_bytes, start, keeps).await?;
        if start {
            admit(self.store.as_ref(), &who.owner(), &quota).await?;
        }
        let id = new_execution_id();
        let dir = self.dirs.of(&id);
        let inputs: Vec<_> = new
            .programs
            .iter_mut()
            .map(|p| (std::mem::take(&mut p.files), p.stdin.take()))
            .collect();
        let writer = dir.clone();
        blocking(move || {
            let programs: Vec<_> = inputs
                .iter()
                .map(|(files, stdin)| (files.as_slice(), stdin.as_deref()))
                .collect();
            writer.create(in_group, &programs)
        })
        .await?;
        // The callback's row first: the execution cannot end before its callback exists.
        let callback = new
            .callback
            .take()
            .map(|c| c.row(Subject::Execution(id.clone()), Micros::now()));
        if let Some(c) = &callback {
            if let Err(e) = self.store.insert_callback(c).await {
                let _ = dir.remove().await;
                return Err(e.into());
            }
        }
        // Inputs by reference are resolved, and the execution that pins their blobs recorded,
        // under the file store's lock (see `crate::files`).
        let held = if new.programs.iter().any(|p| !p.file_refs.is_empty()) {
            Some(self.files.hold().await)
        } else {
            None
        };
        let created = async {
            let mut programs = Vec::with_capacity(new.programs.len());
            for (i, (p, limits)) in new.programs.into_iter().zip(limits).enumerate() {
                let file_refs = match &held {
                    Some(held) => self
                        .files
                        .resolve(held, who, &p.file_refs)
                        .await
                        .map_err(|e| in_program(e, in_group, i))?,
                    None => Vec::new(),
                };
                programs.push(ProgramRequest {
                    environment: in_group
                        .then(|| p.environment.unwrap_or_else(|| new.environment.clone())),
                    command: p.command,
                    limits,
                    outputs: p.outputs,
                    keep: p.keep,
                    file_refs,
                });
            }
            let request = match group {
                Some(mut g) => {
                    g.programs = programs;
                    ExecutionRequest::Group(g)
                }
                None => ExecutionRequest::Program(
                    programs
                        .pop()
                        .ok_or_else(|| Error::Invalid("an execution needs a program".into()))?,
                ),
            };
            let row = ExecutionRow {
                id: id.clone(),
                owner: who.owner(),
                environment: new.environment,
                status: Status::Pending,
                request,
                end_reason: None,
                message: None,
                result: None,
                created_at: Micros::now(),
                started_at: None,
                ended_at: None,
                queued_at: None,
                node: None,
                stored_bytes: input_bytes,
            };
            // Checked again under the lock: concurrent creates of one key can't all pass.
            let _guard = self.admission.lock().await;
            self.check_holdings(who, input_bytes, start, keeps).await?;
            if start {
                admit(self.store.as_ref(), &who.owner(), &quota).await?;
            }
            match self.life.create(row, start).await? {
                Some(row) => Ok(row),
                None => Err(Error::Unauthorized("the API key was deleted".into())),
            }
        }
        .await;
        drop(held);
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

    /// Where one more input file of program `program` may go (`None`: the execution is one
    /// program), checked before the caller reads the upload: a pending execution of the
    /// principal, and how many bytes the key's storage quota leaves. The state is checked
    /// again where the upload commits ([`Service::commit_input`]).
    pub async fn input_target(
        &self,
        who: &Principal,
        id: &str,
        program: Option<usize>,
    ) -> Result<UploadTarget> {
        let row = self.get(who, id).await?;
        let i = program_index(&row, program)?;
        require(
            row.status,
            &[Status::Pending],
            "input can be uploaded only while the execution is pending",
        )?;
        let max_bytes = if who.is_master() {
            u64::MAX
        } else {
            let usage = self.store.usage(&who.owner()).await?;
            check_storage(&usage, 0, &who.quota(), &self.policy.quotas)?;
            storage_left(&usage, &who.quota(), &self.policy.quotas)
        };
        Ok(UploadTarget {
            id: row.id,
            program: i,
            max_bytes,
        })
    }

    /// Moves a received upload (`received`, `size` bytes, in the scratch space) into the
    /// execution as input `rel` if it is pending now, and only then: the lifecycle's gate
    /// keeps it pending until the file is in place, and a deleted execution is never brought
    /// back. The received file is gone afterwards, whatever happened.
    pub async fn commit_input(
        &self,
        who: &Principal,
        target: &UploadTarget,
        rel: RelPath,
        received: PathBuf,
        size: u64,
        mode: u32,
    ) -> Result<()> {
        let committed = match self.get(who, &target.id).await {
            Ok(row) => {
                // The admission lock first, then the lifecycle's gate (as `start` takes them).
                let _guard = self.admission.lock().await;
                self.life
                    .while_pending(&row.id, |row| {
                        let received = received.clone();
                        self.commit_pending(who, row, target.program, rel, received, size, mode)
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&received).await;
        committed
    }

    /// The commit itself, under the admission lock and inside the lifecycle's gate.
    #[allow(clippy::too_many_arguments)]
    async fn commit_pending(
        &self,
        who: &Principal,
        row: ExecutionRow,
        program: usize,
        rel: RelPath,
        received: PathBuf,
        size: u64,
        mode: u32,
    ) -> Result<()> {
        let (quota, quotas) = (who.quota(), self.policy.quotas);
        if !who.is_master() {
            let usage = self.store.usage(&who.owner()).await?;
            check_storage(&usage, size, &quota, &quotas)?;
        }
        let dir = self.dirs.of(&row.id);
        let (group, programs) = (row.request.is_group(), row.request.programs().len());
        let stored = blocking(move || {
            // Input files per execution: every program's together.
            let mut count = 0;
            for i in 0..programs {
                count += dir.program(group, i).input_count()?;
            }
            let target = dir.program(group, program);
            count += u64::from(!target.has_input(&rel)?);
            check_files(count, &quota, &quotas)?;
            target.commit_input(&rel, &received, mode)?;
            Ok(dir.size_on_disk()?)
        })
        .await?;
        self.store.set_stored_bytes(&row.id, stored).await?;
        Ok(())
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

    /// Stops and erases every execution of `owner` (a deleted key's: its id is never used
    /// again, so nothing of it stays reachable). Returns how many.
    pub async fn erase_owned(&self, owner: &str) -> Result<usize> {
        let ids = self.store.execution_ids_of(owner).await?;
        self.erase_all(ids).await
    }

    async fn erase_all(&self, ids: Vec<String>) -> Result<usize> {
        let erased = futures_util::future::join_all(
            ids.iter().map(|id| self.delete(&Principal::Master, id)),
        )
        .await;
        for r in erased {
            match r {
                // Gone already: someone else erased it.
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids.len())
    }

    /// An output of program `program` (`None`: the execution is one program) as it was at
    /// the end, opened for streaming, and its length. Only outputs named at creation; never
    /// one the core refused (a symlink, FIFO or device in its place).
    pub async fn output(
        &self,
        who: &Principal,
        id: &str,
        program: Option<usize>,
        rel: &RelPath,
    ) -> Result<(tokio::fs::File, u64)> {
        let row = self.get(who, id).await?;
        let i = program_index(&row, program)?;
        let name = row.request.programs()[i].output_named(rel).ok_or_else(|| {
            Error::NotFound(format!(
                "'{rel}' is not one of this program's outputs (name it in 'outputs' at creation)"
            ))
        })?;
        require(
            row.status,
            &[Status::Ended],
            "outputs are available once the execution has ended",
        )?;
        let result = row.result.as_ref().and_then(|r| r.program(i));
        if let Some(why) = result.and_then(|r| r.outputs.get(name)) {
            return Err(Error::OutputRefused(format!(
                "output '{name}' was not collected: {why}"
            )));
        }
        self.dirs
            .of(&row.id)
            .program(row.request.is_group(), i)
            .open_output(rel)
            .await?
            .ok_or_else(|| {
                Error::OutputRefused(format!(
                    "output '{name}' was not collected (the run did not get that far)"
                ))
            })
    }

    /// The captured traffic of pipe `n` of an ended group, to stream.
    pub async fn pipe_capture(
        &self,
        who: &Principal,
        id: &str,
        n: usize,
    ) -> Result<tokio::fs::File> {
        let row = self.get(who, id).await?;
        let pipes = row.request.group().map_or(&[][..], |g| &g.pipes[..]);
        let Some(pipe) = pipes.get(n) else {
            return Err(Error::NotFound(format!(
                "this execution has no pipe {n} (it has {})",
                pipes.len()
            )));
        };
        if pipe.capture_bytes.is_none() {
            return Err(Error::NotFound(format!(
                "pipe {n} was not captured (give it \"capture\" at creation)"
            )));
        }
        require(
            row.status,
            &[Status::Ended],
            "a pipe's traffic is available once the execution has ended",
        )?;
        match tokio::fs::File::open(self.dirs.of(&row.id).pipe(n)).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::OutputRefused(
                format!("pipe {n} was not captured (the run did not get that far)"),
            )),
            Err(e) => Err(e.into()),
        }
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

    /// At start: what a crash left running ends as internal-error, the executions of keys
    /// whose deletion a crash interrupted are erased, and the files of executions that were
    /// never accepted (a crash between writing them and the insert) go.
    pub async fn recover(&self) -> Result<usize> {
        let ids = self.life.abandon_running(&self.node).await?;
        let orphans = self.store.orphaned_execution_ids().await?;
        if !orphans.is_empty() {
            tracing::warn!("erasing {} execution(s) of deleted API keys", orphans.len());
            self.erase_all(orphans).await?;
        }
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

    /// Runs a claimed execution in its slot, keeps the files it asked to keep, and records
    /// its end.
    async fn run_claimed(self: Arc<Self>, row: ExecutionRow, permit: OwnedSemaphorePermit) {
        let id = row.id.clone();
        let ending = match StopHandle::new() {
            // Stopped before its slot came: it never starts.
            Ok(stop) if self.sched.register(&id, stop.clone()) => Ending::stopped_before_start(),
            Ok(stop) => {
                let s = self.clone();
                let claimed = row.clone();
                let progress = self.events().output(&id);
                let end = tokio::task::spawn_blocking(move || {
                    runner::run(
                        &s.pool,
                        &s.envs,
                        &s.files,
                        &s.dirs.of(&claimed.id),
                        &claimed,
                        stop,
                        progress,
                    )
                })
                .await;
                self.record_size(&id).await;
                match end {
                    Ok(mut end) => {
                        if let Some(env) = end.pooled.take() {
                            self.pooled
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(row.environment.clone(), env);
                        }
                        self.keep_files(&row, end).await
                    }
                    Err(e) => Ending::failed(&id, format!("the run panicked: {e}")),
                }
            }
            Err(e) => Ending::failed(&id, format!("creating the stop handle: {e}")),
        };
        if let Err(e) = self.life.finish(&id, ending).await {
            tracing::error!("recording the end of {id}: {e}");
        }
        self.sched.unregister(&id);
        drop(permit);
    }

    /// What the execution keeps on disk now counts against its owner's storage quota.
    async fn record_size(&self, id: &str) {
        let dir = self.dirs.of(id);
        match blocking(move || Ok(dir.size_on_disk()?)).await {
            Ok(bytes) => {
                if let Err(e) = self.store.set_stored_bytes(id, bytes).await {
                    tracing::error!("recording the size of {id}: {e}");
                }
            }
            Err(e) => tracing::error!("measuring the size of {id}: {e}"),
        }
    }

    /// Keeps what the run left to keep, and says so in each program's result.
    async fn keep_files(&self, row: &ExecutionRow, end: RunEnd) -> Ending {
        let RunEnd {
            mut ending, keep, ..
        } = end;
        if keep.iter().all(|(_, items)| items.is_empty()) {
            return ending;
        }
        let mut room = match self.storage_room(&row.owner).await {
            Ok(room) => room,
            Err(e) => {
                tracing::error!("execution {}: the storage quota of its key: {e}", row.id);
                Some(Room {
                    left: 0,
                    max: 0,
                    whose: "the server could not read this API key's quota".into(),
                })
            }
        };
        for (i, items) in keep {
            if items.is_empty() {
                continue;
            }
            let paths: Vec<String> = items.iter().map(|k| k.path.clone()).collect();
            let kept = self
                .files
                .keep(&row.owner, room.as_mut(), &row.id, items)
                .await;
            if let Some(result) = ending.result.as_mut().and_then(|r| r.program_mut(i)) {
                result.kept.extend(paths.into_iter().zip(kept));
            }
        }
        ending
    }

    /// What `owner`'s storage quota leaves for kept files (`None`: the master token's, no
    /// quota). The key's own quota is read again: the run may have outlived a change.
    async fn storage_room(&self, owner: &str) -> Result<Option<Room>> {
        if owner == Principal::Master.owner() {
            return Ok(None);
        }
        let key = match owner.strip_prefix("key:") {
            Some(id) => self.store.api_key_by_id(id).await?,
            None => None,
        };
        // A key deleted meanwhile keeps nothing (the file store refuses it by name).
        let quota = key.map(|k| k.quota).unwrap_or_default();
        let usage = self.store.usage(owner).await?;
        let (max, whose) = storage_quota(&quota, &self.policy.quotas);
        Ok(Some(Room {
            left: storage_left(&usage, &quota, &self.policy.quotas),
            max,
            whose,
        }))
    }
}

/// A field of program `i` as the caller named it: `limits` or `programs[1].limits`.
fn field_of(in_group: bool, i: usize, name: &str) -> String {
    if in_group {
        format!("programs[{i}].{name}")
    } else {
        name.to_string()
    }
}

/// An error about a program's fields, naming the program in a group.
fn in_program(e: Error, in_group: bool, i: usize) -> Error {
    if !in_group {
        return e;
    }
    match e {
        Error::Invalid(m) => Error::Invalid(format!("programs[{i}].{m}")),
        Error::OverLimit(m) => Error::OverLimit(format!("programs[{i}].{m}")),
        Error::NotFound(m) => Error::NotFound(format!("programs[{i}].{m}")),
        e => e,
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
