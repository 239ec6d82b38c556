//! The judge service: what a face (the HTTP API) asks of projects and submissions. Projects
//! are checked by the one loader and kept on disk by revision (`DATA/projects/<id>/<rev>/`, a
//! new one on each replacement; an old one goes once no submission still uses it).
//! Submissions wait in the store's queue, share the execution slots, are graded by the
//! [`pipeline`](super::pipeline) on a blocking thread, and record each finished stage and
//! test, so that after a restart of the server they resume where they were.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sandbox::{Pool, StopHandle};
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::OwnedSemaphorePermit;

use super::archive::{self, UnpackLimits};
use super::config::Stage;
use super::events::{Events, ProgressEvent};
use super::lifecycle::Lifecycle;
use super::pipeline::{self, Done, Graded, Grading, Progress};
use super::project::{
    valid_test_name, ManifestDefaults, ProjectFiles, TestCase, CHECKER, INTERACTOR, MANIFEST,
    TESTS, TEST_ANSWER, TEST_FILES, TEST_INPUT, WORKSPACE,
};
use super::report::Final;
use super::state::Status;
use super::submission;
use super::verdict::{StageRecord, TestResult};
use super::workspace::{top_level, SubmissionDir, SubmissionDirs};
use crate::auth::Principal;
use crate::callbacks::{Callback, Subject};
use crate::clock::Micros;
use crate::env::Catalog;
use crate::error::{blocking, Error, Result};
use crate::exec::request::InputFile;
use crate::ids::{new_project_id, new_submission_id, valid_project_id, valid_submission_id};
use crate::scheduler::Scheduler;
use crate::store::{ProjectRow, Store, SubmissionFilter, SubmissionRow};

/// How long a `DELETE` waits for a submission being graded to stop.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long `wait` may take at most.
const WAIT_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Restarts of the server a submission survives (resumed each time); the next ends it as
/// internal error.
const MAX_RESUMES: i64 = 2;
/// Most submissions in one batch.
pub const MAX_BATCH: usize = 20;

/// A project as a face gives it.
pub enum ProjectInput {
    /// An archive (a tar, plain, gzip'd or zstd'd, or a zip) of a project directory.
    Archive(PathBuf),
    Inline(InlineProject),
}

/// A project given as JSON: `project.json`'s fields, and the files' contents.
pub struct InlineProject {
    /// What `project.json` would say (everything but the contents below).
    pub manifest: Map<String, Value>,
    /// The workspace's files.
    pub files: Vec<InputFile>,
    pub tests: Vec<InlineTest>,
    /// The checker program's files.
    pub checker_files: Vec<InputFile>,
    /// The interactor's files (its sources, or its program).
    pub interactor_files: Vec<InputFile>,
}

/// A test's contents, given inline.
pub struct InlineTest {
    pub name: String,
    pub stdin: Option<Vec<u8>>,
    pub expected: Option<Vec<u8>>,
    pub files: Vec<InputFile>,
}

pub struct NewProject {
    pub input: ProjectInput,
    /// Fills in what `project.json` leaves out (an archive of a bare Sphere project).
    pub defaults: ManifestDefaults,
}

/// A new submission, parsed by a face.
pub struct NewSubmission {
    pub project_id: String,
    pub scenario: Option<String>,
    pub files: Vec<InputFile>,
    /// An archive (tar or zip) of files, besides `files`.
    pub archive: Option<Vec<u8>>,
    /// Answer once it has been graded.
    pub wait: bool,
    /// Where its final object goes when it ends (accepted against the allow-list).
    pub callback: Option<Callback>,
}

pub struct Service {
    life: Lifecycle,
    store: Arc<dyn Store>,
    envs: Arc<Catalog>,
    pool: Arc<Pool>,
    sched: Scheduler,
    dirs: SubmissionDirs,
    projects: PathBuf,
    node: String,
    max_upload: u64,
    /// Serialises "count the owner's work, then queue one".
    admission: tokio::sync::Mutex<()>,
    /// Held while a submission takes its project's revision, and while revisions go.
    revisions: tokio::sync::Mutex<()>,
}

/// What the service runs with.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub envs: Arc<Catalog>,
    /// The engine's warm pool, shared with executions.
    pub pool: Arc<Pool>,
    /// Shares the execution slots.
    pub sched: Scheduler,
    pub submissions_dir: PathBuf,
    pub projects_dir: PathBuf,
    pub node: String,
    /// Largest project archive.
    pub max_upload: u64,
}

fn invalid(e: String) -> Error {
    Error::Invalid(e)
}

/// Writes a file of a project given inline.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o644))
}

fn write_inline(p: &InlineProject, dir: &Path) -> Result<()> {
    let manifest = serde_json::to_vec_pretty(&p.manifest)
        .map_err(|e| Error::Internal(format!("project.json: {e}")))?;
    write_file(&dir.join(MANIFEST), &manifest, 0o644)?;
    for f in &p.files {
        write_file(&dir.join(WORKSPACE).join(&f.path), &f.bytes, f.mode)?;
    }
    for (part, files) in [
        (CHECKER, &p.checker_files),
        (INTERACTOR, &p.interactor_files),
    ] {
        for f in files {
            write_file(&dir.join(part).join(&f.path), &f.bytes, f.mode)?;
        }
    }
    for t in &p.tests {
        if !valid_test_name(&t.name) {
            return Err(invalid(format!(
                "test '{}': a test name is 1-64 letters, digits, '.', '_' or '-' (not first)",
                t.name
            )));
        }
        let at = dir.join(TESTS).join(&t.name);
        std::fs::create_dir_all(&at)?;
        if let Some(b) = &t.stdin {
            write_file(&at.join(TEST_INPUT), b, 0o644)?;
        }
        if let Some(b) = &t.expected {
            write_file(&at.join(TEST_ANSWER), b, 0o644)?;
        }
        for f in &t.files {
            write_file(&at.join(TEST_FILES).join(&f.path), &f.bytes, f.mode)?;
        }
    }
    Ok(())
}

/// The project's root in an unpacked archive: the archive's root, or its only directory
/// (`tar -c aplusb/`).
fn archive_root(stage: &Path) -> std::io::Result<PathBuf> {
    let top = top_level(stage)?;
    let has_config = top.iter().any(|(n, _)| n == MANIFEST || n == "config.json");
    if !has_config && top.len() == 1 && top[0].1.is_dir() {
        return Ok(top[0].1.clone());
    }
    Ok(stage.to_path_buf())
}

impl Service {
    pub fn new(p: Parts) -> Service {
        let dirs = SubmissionDirs::new(p.submissions_dir);
        Service {
            life: Lifecycle::new(p.store.clone(), Events::new(), dirs.clone()),
            store: p.store,
            envs: p.envs,
            pool: p.pool,
            sched: p.sched,
            dirs,
            projects: p.projects_dir,
            node: p.node,
            max_upload: p.max_upload,
            admission: tokio::sync::Mutex::new(()),
            revisions: tokio::sync::Mutex::new(()),
        }
    }

    pub fn events(&self) -> &Events {
        self.life.events()
    }

    pub fn dir(&self, id: &str) -> SubmissionDir {
        self.dirs.of(id)
    }

    fn staging(&self) -> PathBuf {
        self.projects.join(".staging")
    }

    fn project_dir(&self, id: &str, revision: i64) -> PathBuf {
        self.projects.join(id).join(revision.to_string())
    }

    // ---- projects ----

    /// Writes a project into a staging directory, loads and checks it (environments
    /// included). Returns the staging directory and the project (which lies in it).
    async fn stage_project(&self, new: NewProject) -> Result<(PathBuf, ProjectFiles)> {
        let stage = self
            .staging()
            .join(uuid::Uuid::new_v4().simple().to_string());
        let limits = UnpackLimits {
            max_bytes: self.max_upload,
            max_entries: 100_000,
        };
        let (at, defaults) = (stage.clone(), new.defaults);
        let loaded = blocking(move || {
            std::fs::create_dir_all(&at)?;
            let root = match &new.input {
                ProjectInput::Archive(path) => {
                    let file = std::fs::File::open(path)?;
                    archive::unpack(file, &at, limits).map_err(invalid)?;
                    archive_root(&at)?
                }
                ProjectInput::Inline(p) => {
                    write_inline(p, &at)?;
                    at.clone()
                }
            };
            ProjectFiles::load(&root, &defaults).map_err(invalid)
        })
        .await;
        let files = match loaded {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&stage).await;
                return Err(e);
            }
        };
        for env in files.def.environments() {
            if self.envs.get(&env)?.is_none() {
                let _ = tokio::fs::remove_dir_all(&stage).await;
                return Err(invalid(format!(
                    "environment '{env}' does not exist (see GET /api/v1/environments)"
                )));
            }
        }
        Ok((stage, files))
    }

    /// Moves a staged project to its revision's directory, in the canonical form.
    async fn place(&self, stage: PathBuf, files: ProjectFiles, dest: PathBuf) -> Result<()> {
        blocking(move || {
            files.canonicalize()?;
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&files.root, &dest)?;
            if stage.exists() {
                std::fs::remove_dir_all(&stage)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn create_project(
        &self,
        who: &Principal,
        id: Option<String>,
        new: NewProject,
    ) -> Result<ProjectRow> {
        let id = match id {
            Some(id) if valid_project_id(&id) => id,
            Some(id) => {
                return Err(invalid(format!(
                    "'{id}' is not a usable project id (1-64 of a-z 0-9 . _ -, starting with a letter or digit)"
                )))
            }
            None => new_project_id(),
        };
        let (stage, files) = self.stage_project(new).await?;
        let _held = self.revisions.lock().await;
        let exists =
            || Error::AlreadyExists(format!("a project '{id}' already exists (PUT replaces it)"));
        if self.store.get_project(&id).await?.is_some() {
            let _ = tokio::fs::remove_dir_all(&stage).await;
            return Err(exists());
        }
        let def = files.def.clone();
        let dest = self.project_dir(&id, 1);
        self.place(stage, files, dest.clone()).await?;
        let now = Micros::now();
        let row = ProjectRow {
            id: id.clone(),
            owner: who.owner(),
            revision: 1,
            def,
            created_at: now,
            updated_at: now,
        };
        if !self.store.insert_project(&row).await? {
            let _ = tokio::fs::remove_dir_all(&dest).await;
            return Err(exists());
        }
        Ok(row)
    }

    /// Replaces a project (a new revision), or creates it under that id. True when created.
    pub async fn replace_project(
        &self,
        who: &Principal,
        id: &str,
        new: NewProject,
    ) -> Result<(ProjectRow, bool)> {
        if !valid_project_id(id) {
            return Err(invalid(format!("'{id}' is not a usable project id")));
        }
        let (stage, files) = self.stage_project(new).await?;
        let _held = self.revisions.lock().await;
        let existing = self.store.get_project(id).await?;
        let revision = existing.as_ref().map_or(1, |p| p.revision + 1);
        let def = files.def.clone();
        let dest = self.project_dir(id, revision);
        self.place(stage, files, dest.clone()).await?;
        let now = Micros::now();
        let row = ProjectRow {
            id: id.to_string(),
            owner: existing
                .as_ref()
                .map_or_else(|| who.owner(), |p| p.owner.clone()),
            revision,
            def,
            created_at: existing.as_ref().map_or(now, |p| p.created_at),
            updated_at: now,
        };
        let stored = if existing.is_some() {
            self.store.replace_project(&row).await?
        } else {
            self.store.insert_project(&row).await?
        };
        if !stored {
            let _ = tokio::fs::remove_dir_all(&dest).await;
            return Err(Error::WrongState(format!(
                "project '{id}' changed meanwhile; try again"
            )));
        }
        self.collect_revisions_locked(id).await;
        Ok((row, existing.is_none()))
    }

    pub async fn get_project(&self, id: &str) -> Result<ProjectRow> {
        let missing = || Error::NotFound(format!("no project '{id}'"));
        if !valid_project_id(id) {
            return Err(missing());
        }
        self.store.get_project(id).await?.ok_or_else(missing)
    }

    pub async fn list_projects(&self, limit: i64, offset: i64) -> Result<(Vec<ProjectRow>, i64)> {
        Ok(self.store.list_projects(limit, offset).await?)
    }

    /// Deletes a project; submissions already made still run on their revision.
    pub async fn delete_project(&self, id: &str) -> Result<ProjectRow> {
        let missing = || Error::NotFound(format!("no project '{id}'"));
        if !valid_project_id(id) {
            return Err(missing());
        }
        let _held = self.revisions.lock().await;
        let row = self.store.delete_project(id).await?.ok_or_else(missing)?;
        self.collect_revisions_locked(id).await;
        Ok(row)
    }

    /// Removes the project's revision directories no submission uses any more (all of them
    /// once the project is gone). The caller holds `revisions`.
    async fn collect_revisions_locked(&self, id: &str) {
        let current = match self.store.get_project(id).await {
            Ok(p) => p.map(|p| p.revision),
            Err(e) => {
                tracing::warn!("project {id}: {e}");
                return;
            }
        };
        let active = match self.store.active_revisions(id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("project {id}: {e}");
                return;
            }
        };
        let dir = self.projects.join(id);
        let Ok(entries) = top_level(&dir) else { return };
        for (name, path) in &entries {
            let keep = name
                .parse::<i64>()
                .is_ok_and(|rev| Some(rev) == current || active.contains(&rev));
            if !keep {
                if let Err(e) = tokio::fs::remove_dir_all(path).await {
                    tracing::warn!("removing {}: {e}", path.display());
                }
            }
        }
        if current.is_none() {
            let _ = tokio::fs::remove_dir(&dir).await;
        }
    }

    async fn collect_revisions(&self, id: &str) {
        let _held = self.revisions.lock().await;
        self.collect_revisions_locked(id).await;
    }

    // ---- submissions ----

    /// `TooMany` when the owner already has `max_executions` executions and submissions
    /// queued or running.
    async fn admit(&self, who: &Principal) -> Result<()> {
        if let Some(max) = who.quota().max_executions {
            let owner = who.owner();
            let active = self.store.count_active(&owner).await?
                + self.store.count_active_submissions(&owner).await?;
            let active = u64::try_from(active).unwrap_or(0);
            if active >= max {
                return Err(Error::TooMany {
                    message: format!(
                        "this API key may have {max} execution(s) and submission(s) waiting or \
                         running at once (max_executions); {active} are"
                    ),
                    retry_after: 1,
                });
            }
        }
        Ok(())
    }

    /// Accepts a submission: its files in place, in the queue.
    async fn accept(&self, who: &Principal, new: NewSubmission) -> Result<SubmissionRow> {
        let unknown = || {
            invalid(format!(
                "project '{}' does not exist (see GET /api/v1/projects)",
                new.project_id
            ))
        };
        if !valid_project_id(&new.project_id) {
            return Err(unknown());
        }
        let project = self
            .store
            .get_project(&new.project_id)
            .await?
            .ok_or_else(unknown)?;
        let scenario = project
            .def
            .config
            .scenario(new.scenario.as_deref())
            .map_err(invalid)?
            .0
            .to_string();
        self.admit(who).await?;
        let id = new_submission_id();
        let dir = self.dirs.of(&id);
        let (writer, def) = (dir.clone(), project.def.clone());
        let (files, archive) = (new.files, new.archive);
        let written = blocking(move || {
            writer.create(&files)?;
            if let Some(tar) = &archive {
                submission::unpack_source(&writer, tar).map_err(invalid)?;
            }
            submission::normalize(&def, &writer).map_err(invalid)
        })
        .await;
        if let Err(e) = written {
            let _ = dir.remove().await;
            return Err(e);
        }
        // The callback's row first: the submission cannot end before its callback exists.
        let subject = Subject::Submission(id.clone());
        let callback = new.callback.map(|c| c.row(subject.clone(), Micros::now()));
        if let Some(c) = &callback {
            if let Err(e) = self.store.insert_callback(c).await {
                let _ = dir.remove().await;
                return Err(e.into());
            }
        }
        let created = {
            let _admitted = self.admission.lock().await;
            let _held = self.revisions.lock().await;
            match self.admit(who).await {
                Err(e) => Err(e),
                Ok(()) => match self.store.get_project(&new.project_id).await? {
                    None => Err(unknown()),
                    Some(now) => {
                        let row = SubmissionRow {
                            id: id.clone(),
                            owner: who.owner(),
                            project_id: now.id,
                            project_revision: now.revision,
                            scenario,
                            status: Status::Waiting,
                            stage: None,
                            attempts: 0,
                            grade: None,
                            created_at: Micros::now(),
                            queued_at: None,
                            started_at: None,
                            ended_at: None,
                            node: None,
                        };
                        match self.life.create(row).await {
                            Ok(Some(row)) => Ok(row),
                            Ok(None) => Err(Error::Unauthorized("the API key was deleted".into())),
                            Err(e) => Err(Error::from(e)),
                        }
                    }
                },
            }
        };
        match created {
            Ok(row) => {
                self.sched.kick();
                Ok(row)
            }
            Err(e) => {
                if callback.is_some() {
                    let _ = self.store.delete_callbacks_of(&subject).await;
                }
                let _ = dir.remove().await;
                Err(e)
            }
        }
    }

    pub async fn submit(&self, who: &Principal, new: NewSubmission) -> Result<SubmissionRow> {
        let wait = new.wait;
        let row = self.accept(who, new).await?;
        if wait {
            self.wait_ended(&row.id, WAIT_MAX).await;
        }
        Ok(self.store.get_submission(&row.id).await?.unwrap_or(row))
    }

    /// Several submissions, each accepted or refused on its own, in order.
    pub async fn submit_batch(
        &self,
        who: &Principal,
        items: Vec<NewSubmission>,
    ) -> Vec<Result<SubmissionRow>> {
        let mut out = Vec::with_capacity(items.len());
        for new in items {
            out.push(self.accept(who, new).await);
        }
        out
    }

    /// A submission the principal may see; `NotFound` otherwise.
    pub async fn get(&self, who: &Principal, id: &str) -> Result<SubmissionRow> {
        let missing = || Error::NotFound(format!("no submission '{id}'"));
        if !valid_submission_id(id) {
            return Err(missing());
        }
        match self.store.get_submission(id).await? {
            Some(row) if who.may_see(&row.owner) => Ok(row),
            _ => Err(missing()),
        }
    }

    /// Newest first: a key's own, or everyone's for the master token.
    pub async fn list(
        &self,
        who: &Principal,
        project: Option<&str>,
        status: Option<Status>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SubmissionRow>, i64)> {
        let owner = (!who.is_master()).then(|| who.owner());
        let filter = SubmissionFilter {
            owner: owner.as_deref(),
            project,
            status,
        };
        Ok(self.store.list_submissions(&filter, limit, offset).await?)
    }

    /// The stages and tests finished so far.
    pub async fn progress_of(&self, id: &str) -> Result<(Vec<StageRecord>, Vec<TestResult>)> {
        Ok(self.store.submission_progress(id).await?)
    }

    /// Stops it when it is being graded, then erases it, every byte. Returns it as it was.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<SubmissionRow> {
        let row = self.get(who, id).await?;
        if !self.store.delete_idle_submission(&row.id).await? {
            self.sched.stop(&row.id);
            if !self.wait_ended(&row.id, STOP_WAIT).await {
                return Err(Error::Internal(format!(
                    "submission '{id}' did not stop within {} s",
                    STOP_WAIT.as_secs()
                )));
            }
            self.store.delete_idle_submission(&row.id).await?;
        }
        self.dirs.of(&row.id).remove().await?;
        self.collect_revisions(&row.project_id).await;
        Ok(row)
    }

    /// Stops and erases every submission of `owner`, with its callbacks (a deleted key's: its
    /// id is never used again, so nothing of it stays reachable). Returns how many.
    pub async fn erase_owned(&self, owner: &str) -> Result<usize> {
        let ids = self.store.submission_ids_of(owner).await?;
        self.erase_all(ids).await
    }

    async fn erase_all(&self, ids: Vec<String>) -> Result<usize> {
        for id in &ids {
            match self.delete(&Principal::Master, id).await {
                // Gone already: someone else erased it.
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids.len())
    }

    /// Waits until the submission has ended (or is gone), at most `timeout`; false on timeout.
    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> bool {
        let mut ended = self.events().subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.store.get_submission(id).await {
                Ok(Some(row)) if row.status.executing() => {}
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
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return false,
                    },
                    _ = tokio::time::sleep_until(deadline) => return false,
                }
            }
        }
    }

    /// At start: what a crash interrupted goes back to the queue to resume (or ends as
    /// internal error after too many restarts); files nobody knows go. Returns how many were
    /// resumed and how many ended.
    pub async fn recover(&self) -> Result<(usize, usize)> {
        let (mut resumed, mut ended) = (0, 0);
        for row in self.store.running_submissions(&self.node).await? {
            let dir = self.dirs.of(&row.id);
            if row.attempts >= MAX_RESUMES {
                let grade = Final::internal(format!(
                    "the server stopped {} times while grading this submission; it is not tried again",
                    row.attempts + 1
                ));
                dir.debug(&grade.reason);
                if self.life.abandon(&row.id, grade).await? {
                    ended += 1;
                }
            } else {
                dir.debug("the server stopped while grading this submission; it resumes from its last finished stage and test");
                if self.life.requeue(&row.id).await? {
                    resumed += 1;
                }
            }
        }
        // Those of keys whose deletion a crash interrupted (none is being graded now).
        let orphans = self.store.orphaned_submission_ids().await?;
        if !orphans.is_empty() {
            tracing::warn!(
                "erasing {} submission(s) of deleted API keys",
                orphans.len()
            );
            self.erase_all(orphans).await?;
        }
        for id in self.dirs.ids().await {
            if self.store.get_submission(&id).await?.is_none() {
                let _ = self.dirs.of(&id).remove().await;
            }
        }
        let _ = tokio::fs::remove_dir_all(self.staging()).await;
        if let Ok(entries) = top_level(&self.projects) {
            for (name, _) in entries {
                if valid_project_id(&name) {
                    self.collect_revisions(&name).await;
                }
            }
        }
        Ok((resumed, ended))
    }

    /// Claims waiting submissions into free slots from now on.
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

    /// Grades a claimed submission in its slot and records its grade.
    async fn run_claimed(self: Arc<Self>, row: SubmissionRow, permit: OwnedSemaphorePermit) {
        let id = row.id.clone();
        let graded = match StopHandle::new() {
            Ok(stop) if self.sched.register(&id, stop.clone()) => Graded::Stopped,
            Ok(stop) => match self.store.submission_progress(&id).await {
                Ok((stages, tests)) => {
                    let s = self.clone();
                    let rt = tokio::runtime::Handle::current();
                    let claimed = row.clone();
                    tokio::task::spawn_blocking(move || {
                        s.grade_blocking(&claimed, Done { stages, tests }, stop, rt)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Graded::Final(Box::new(Final::internal(format!("grading panicked: {e}"))))
                    })
                }
                Err(e) => Graded::Final(Box::new(Final::internal(format!(
                    "reading what was done: {e}"
                )))),
            },
            Err(e) => Graded::Final(Box::new(Final::internal(format!(
                "creating the stop handle: {e}"
            )))),
        };
        let grade = match graded {
            Graded::Final(f) => *f,
            Graded::Stopped => Final::internal("stopped before it was graded (deleted)"),
        };
        if let Err(e) = self.life.finish(&id, grade).await {
            tracing::error!("recording the grade of {id}: {e}");
        }
        self.sched.unregister(&id);
        drop(permit);
        self.collect_revisions(&row.project_id).await;
    }

    fn grade_blocking(
        &self,
        row: &SubmissionRow,
        done: Done,
        stop: StopHandle,
        rt: tokio::runtime::Handle,
    ) -> Graded {
        let root = self.project_dir(&row.project_id, row.project_revision);
        let project = match ProjectFiles::open(&root) {
            Ok(p) => p,
            Err(e) => {
                return Graded::Final(Box::new(Final::internal(format!(
                    "the project's files (revision {}) are gone: {e}",
                    row.project_revision
                ))))
            }
        };
        let dir = self.dirs.of(&row.id);
        let g = Grading {
            pool: self.pool.clone(),
            envs: &self.envs,
            project: &project,
            scenario: &row.scenario,
            dir: &dir,
            stop,
        };
        let mut recorder = Recorder {
            rt,
            svc: self,
            id: &row.id,
            dir: &dir,
            testing: false,
        };
        pipeline::grade(&g, done, &mut recorder)
    }
}

/// Records progress as grading goes (from the blocking thread): in the store, so that a
/// restart resumes from here, and in the progress log, for the live stream.
struct Recorder<'a> {
    rt: tokio::runtime::Handle,
    svc: &'a Service,
    id: &'a str,
    dir: &'a SubmissionDir,
    testing: bool,
}

impl Recorder<'_> {
    fn store<T>(&self, what: &str, r: crate::store::Result<T>) {
        if let Err(e) = r {
            tracing::warn!("submission {}: recording {what}: {e}", self.id);
        }
    }

    fn set_stage(&self, stage: Stage) {
        let r = self
            .rt
            .block_on(self.svc.store.set_submission_stage(self.id, Some(stage)));
        self.store("the stage", r);
    }
}

impl Progress for Recorder<'_> {
    fn executing(&mut self) {
        let r = self.rt.block_on(self.svc.life.execute(self.id));
        self.store("execution", r);
    }

    fn stage_started(&mut self, stage: Stage) {
        self.set_stage(stage);
        self.dir
            .append_progress(&ProgressEvent::StageStarted { stage }.line());
    }

    fn stage_ended(&mut self, record: &StageRecord) {
        let r = self
            .rt
            .block_on(self.svc.store.record_stage(self.id, record));
        self.store("a stage", r);
        self.dir
            .append_progress(&ProgressEvent::stage_ended(record).line());
    }

    fn test_started(&mut self, _test: &TestCase, _index: usize) {
        if !self.testing {
            self.testing = true;
            self.set_stage(Stage::Run);
            self.dir
                .append_progress(&ProgressEvent::StageStarted { stage: Stage::Run }.line());
        }
    }

    fn test_ended(&mut self, result: &TestResult) {
        let r = self
            .rt
            .block_on(self.svc.store.record_test(self.id, result));
        self.store("a test", r);
        self.dir
            .append_progress(&ProgressEvent::test(result).line());
    }
}
