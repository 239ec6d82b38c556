//! The durable store, one trait per aggregate: [`ApiKeys`], [`Executions`], [`Queue`],
//! [`Callbacks`], [`AuditLog`], [`Projects`], [`Submissions`], [`Files`] (later workspaces,
//! hosts: one trait each, beside these).
//! [`Store`] is all of them; the embedded back end is SQLite in the data directory
//! ([`SqliteStore`]); a PostgreSQL one (a fleet's shared store, `FOR UPDATE SKIP LOCKED`
//! claims) implements the same traits over the same migrations (`migrations/*.sql`).
//!
//! Rows are typed: statuses and end reasons are enums, times are [`Micros`], the request and
//! the result are the engine's own values (kept as their JSON in one column each). The store
//! is also the work queue: nothing about an execution lives only in memory.

use async_trait::async_trait;

use crate::auth::{Owned, Quota};
use crate::callbacks::{DeliveryState, Mode, Secret, Subject};
use crate::clock::Micros;
use crate::exec::request::ExecutionRequest;
use crate::exec::result::ExecutionResult;
use crate::exec::state::{EndReason, Status, Transition};
use crate::judge;
use crate::judge::config::Stage;
use crate::judge::project::ProjectDef;
use crate::judge::report::Final;
use crate::judge::verdict::{StageRecord, TestResult};

mod legacy;
pub mod migrations;
mod sqlite;
mod sqlite_audit;
mod sqlite_callbacks;
mod sqlite_exec;
mod sqlite_files;
mod sqlite_judge;
mod sqlite_keys;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database location: {0}")]
    Location(String),
    /// A stored value that does not read back (a bad status, unreadable JSON, a bad date).
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// A transition handed to the wrong method (a bug, never user input).
    #[error("store misuse: {0}")]
    Misuse(&'static str),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An API key as stored: the token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    /// Never reused (`key_<32 hex>`): executions belong to it, not to the name.
    pub id: String,
    pub name: String,
    pub token_hash: String,
    /// The key's own maxima and quotas (`None`: the server's).
    pub quota: Quota,
    /// May create, replace and delete projects.
    pub manage_projects: bool,
    pub created_at: Micros,
}

/// What an owner holds: the store's answer to "may it have one more?".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Executions waiting for a start.
    pub pending: u64,
    /// Executions queued or running.
    pub active: u64,
    /// Bytes its executions keep on disk.
    pub stored_bytes: u64,
    /// Bytes of its kept files (live ones): with `stored_bytes`, what its storage quota
    /// bounds.
    pub kept_bytes: u64,
}

impl Usage {
    /// Everything it keeps on disk: its executions' bytes and its kept files'.
    pub fn total_bytes(&self) -> u64 {
        self.stored_bytes.saturating_add(self.kept_bytes)
    }
}

/// An execution's row as a transition left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    pub row: ExecutionRow,
    /// Whether callbacks wait for the execution's end, read in the change's own statement:
    /// an end without any needs no second look at the outbox.
    pub callbacks_waiting: bool,
}

/// One execution; the big things (files, streams) live on disk under `DATA/executions/<id>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    pub id: String,
    /// `master` or `key:<key id>` (see [`crate::auth::Principal::owner`]).
    pub owner: String,
    pub environment: String,
    pub status: Status,
    pub request: ExecutionRequest,
    pub end_reason: Option<EndReason>,
    pub message: Option<String>,
    pub result: Option<ExecutionResult>,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    pub ended_at: Option<Micros>,
    /// When it was queued: the queue's order, oldest first.
    pub queued_at: Option<Micros>,
    /// The node that claimed it (for a fleet; the single server uses its own name).
    pub node: Option<String>,
    /// Bytes it keeps on disk (inputs; after the run also streams, log and outputs).
    pub stored_bytes: u64,
}

/// One state-changing API request, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// The request's id (the response's `X-Request-Id`, the log's `request_id`).
    pub request_id: String,
    /// When the request came.
    pub at: Micros,
    /// `master`, `key:<name>`, or `anonymous` (no valid token).
    pub who: String,
    /// The client's address, as the server saw it.
    pub peer: Option<String>,
    pub method: String,
    /// The route's pattern (`/api/v1/executions/{id}`), never the raw path.
    pub route: String,
    /// The id acted on: the one in the path, or the one created.
    pub target: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// A file kept by reference (`crate::files`): its bytes are the blob named `sha256`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub id: String,
    /// As on executions: `master` or `key:<key id>`.
    pub owner: String,
    pub sha256: String,
    pub size: i64,
    /// The path it was kept from (shown, and the download's file name).
    pub name: String,
    /// The execution that kept it.
    pub execution_id: Option<String>,
    pub created_at: Micros,
    pub expires_at: Micros,
}

/// A completion callback in the outbox. Its body (once sealed) is read only by the claim that
/// sends it ([`ClaimedCallback`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRow {
    pub id: String,
    pub subject: Subject,
    pub url: String,
    pub mode: Mode,
    /// The shared key, until the body is sealed (then erased).
    pub key: Option<Secret>,
    pub state: DeliveryState,
    /// Attempts started.
    pub attempts: i64,
    pub created_at: Micros,
    /// When the subject ended and the body was sealed.
    pub sealed_at: Option<Micros>,
    /// `pending`: when the next attempt is due; `delivering`: when its lease ends.
    pub next_attempt_at: Option<Micros>,
    pub delivered_at: Option<Micros>,
    pub last_error: Option<String>,
}

/// A callback claimed for one attempt: its row (attempt number = `row.attempts`) and what to
/// send.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedCallback {
    pub row: CallbackRow,
    pub body: Vec<u8>,
    pub signature: Option<String>,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub callback_id: String,
    /// 1, 2, …
    pub attempt: i64,
    pub started_at: Micros,
    pub duration_us: i64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i64>,
    /// Why it failed; `None` when it was delivered.
    pub error: Option<String>,
    /// When the next attempt is due; `None` when there is none.
    pub next_attempt_at: Option<Micros>,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(Micros),
    GiveUp,
}

#[async_trait]
pub trait ApiKeys: Send + Sync {
    /// False when a key of that name exists.
    async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<bool>;
    /// Sorted by name.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>>;
    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKeyRow>>;
    async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKeyRow>>;
    /// The deleted key, or `None` when there was none.
    async fn delete_api_key(&self, name: &str) -> Result<Option<ApiKeyRow>>;
}

#[async_trait]
pub trait Executions: Send + Sync {
    /// Inserts the execution, and with it the blobs it reads by reference
    /// ([`ExecutionRequest::blobs`]), atomically. False (and nothing inserted) when the owner
    /// is a key that no longer exists, or when it is inserted `running` (claimed as it is
    /// created) while queued executions wait: they go first.
    async fn insert_execution(&self, exec: &ExecutionRow) -> Result<bool>;
    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRow>>;
    /// Newest first; `owner: None` lists everyone's. Returns the page and the total.
    async fn list_executions(
        &self,
        owner: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRow>, i64)>;
    /// Applies a status change if the execution is in one of `t.from()` (atomically), and
    /// returns the row as the change left it; `None` when it is not (or does not exist).
    async fn transition(&self, id: &str, t: &Transition) -> Result<Option<Transitioned>>;
    /// Deletes an execution that has ended, its blob references and its callbacks; false
    /// when there is no such ended execution.
    async fn delete_ended_execution(&self, id: &str) -> Result<bool>;
    /// Records what the execution keeps on disk now.
    async fn set_stored_bytes(&self, id: &str, bytes: u64) -> Result<()>;
    /// Every execution of `owner`, oldest first.
    async fn execution_ids_of(&self, owner: &str) -> Result<Vec<String>>;
    /// Executions owned by a key that no longer exists (its deletion was interrupted).
    async fn orphaned_execution_ids(&self) -> Result<Vec<String>>;
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Executions of `owner` that hold or wait for a slot (queued or running).
    async fn count_active(&self, owner: &str) -> Result<i64>;
    /// What `owner` holds: pending and active executions, bytes stored.
    async fn usage(&self, owner: &str) -> Result<Usage>;
    /// The oldest queued execution takes the claim `t`; `None` when nothing is queued.
    async fn claim_next(&self, t: &Transition) -> Result<Option<ExecutionRow>>;
    /// After a crash: every execution `node` was running takes `t` (an abandon). Returns
    /// their ids.
    async fn abandon_running(&self, node: &str, t: &Transition) -> Result<Vec<String>>;
    /// Executions waiting for a slot (every node's).
    async fn queue_depth(&self) -> Result<i64>;
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn insert_audit(&self, entry: &AuditRow) -> Result<()>;
    /// Newest first. Returns the page and the total.
    async fn list_audit(&self, limit: i64, offset: i64) -> Result<(Vec<AuditRow>, i64)>;
}

/// Files kept by reference. "Live" means not expired at `now`; an expired row is as good as
/// gone (every read skips it) until [`Files::delete_expired_files`] removes it.
#[async_trait]
pub trait Files: Send + Sync {
    /// False (and nothing inserted) when the owner is a key that no longer exists.
    async fn insert_file(&self, file: &FileRow) -> Result<bool>;
    /// A live file.
    async fn get_file(&self, id: &str, now: Micros) -> Result<Option<FileRow>>;
    /// Live files, newest first; `owner: None` lists everyone's. The page and the total.
    async fn list_files(
        &self,
        owner: Option<&str>,
        now: Micros,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FileRow>, i64)>;
    /// The live files of `owner`: how many, and their bytes.
    async fn file_usage(&self, owner: &str, now: Micros) -> Result<(i64, i64)>;
    /// The deleted file, or `None` when there was none.
    async fn delete_file(&self, id: &str) -> Result<Option<FileRow>>;
    /// Deletes every file of `owner` (its key was deleted); returns them.
    async fn delete_files_of(&self, owner: &str) -> Result<Vec<FileRow>>;
    /// Deletes the files of keys that no longer exist (a deletion a crash interrupted, or
    /// kept under a key's name before keys had ids); returns them.
    async fn delete_orphaned_files(&self) -> Result<Vec<FileRow>>;
    /// Deletes the files expired at `now`; returns them.
    async fn delete_expired_files(&self, now: Micros) -> Result<Vec<FileRow>>;
    /// Whether a blob is still needed: a live file has it, or an execution that has not
    /// ended reads it.
    async fn blob_in_use(&self, sha256: &str, now: Micros) -> Result<bool>;
}

/// A project as stored; its files are on disk under `DATA/projects/<id>/<revision>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRow {
    pub id: String,
    /// Who made it: `master` or `key:<name>`.
    pub owner: String,
    /// 1 when created, one more on each replacement.
    pub revision: i64,
    pub def: ProjectDef,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A submission; its files are on disk under `DATA/submissions/<id>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionRow {
    pub id: String,
    pub owner: String,
    pub project_id: String,
    /// The project as it was when the submission was made.
    pub project_revision: i64,
    pub scenario: String,
    pub status: judge::Status,
    /// The stage running now.
    pub stage: Option<Stage>,
    /// Restarts of the server that interrupted it.
    pub attempts: i64,
    pub grade: Option<Final>,
    pub created_at: Micros,
    pub queued_at: Option<Micros>,
    pub started_at: Option<Micros>,
    pub ended_at: Option<Micros>,
    pub node: Option<String>,
}

/// Which submissions a list shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubmissionFilter<'a> {
    pub owner: Option<&'a str>,
    pub project: Option<&'a str>,
    pub status: Option<judge::Status>,
}

#[async_trait]
pub trait Projects: Send + Sync {
    /// False when a project of that id exists.
    async fn insert_project(&self, p: &ProjectRow) -> Result<bool>;
    async fn get_project(&self, id: &str) -> Result<Option<ProjectRow>>;
    /// By id; the page and the total.
    async fn list_projects(&self, limit: i64, offset: i64) -> Result<(Vec<ProjectRow>, i64)>;
    /// Replaces a project when its stored revision is `p.revision - 1`; false otherwise.
    async fn replace_project(&self, p: &ProjectRow) -> Result<bool>;
    /// The deleted project, or `None` when there was none.
    async fn delete_project(&self, id: &str) -> Result<Option<ProjectRow>>;
}

#[async_trait]
pub trait Submissions: Send + Sync {
    /// False (and nothing inserted) when the owner is a key that no longer exists.
    async fn insert_submission(&self, s: &SubmissionRow) -> Result<bool>;
    async fn get_submission(&self, id: &str) -> Result<Option<SubmissionRow>>;
    /// Newest first; the page and the total.
    async fn list_submissions(
        &self,
        filter: &SubmissionFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SubmissionRow>, i64)>;
    /// Applies a status change if the submission is in one of `t.from()`; false otherwise.
    async fn submission_transition(&self, id: &str, t: &judge::state::Transition) -> Result<bool>;
    /// The oldest waiting submission takes the claim `t`; `None` when none waits.
    async fn claim_next_submission(
        &self,
        t: &judge::state::Transition,
    ) -> Result<Option<SubmissionRow>>;
    /// The submissions `node` was grading (preparation or execution).
    async fn running_submissions(&self, node: &str) -> Result<Vec<SubmissionRow>>;
    async fn set_submission_stage(&self, id: &str, stage: Option<Stage>) -> Result<()>;
    /// Keeps a finished stage (a stage run again replaces its record).
    async fn record_stage(&self, id: &str, record: &StageRecord) -> Result<()>;
    /// Keeps a finished test.
    async fn record_test(&self, id: &str, result: &TestResult) -> Result<()>;
    /// The stages and tests finished so far, in order.
    async fn submission_progress(&self, id: &str) -> Result<(Vec<StageRecord>, Vec<TestResult>)>;
    /// Deletes a submission that is not being graded (waiting or ended), with its records;
    /// false when there is no such submission.
    async fn delete_idle_submission(&self, id: &str) -> Result<bool>;
    /// Submissions of `owner` waiting or being graded.
    async fn count_active_submissions(&self, owner: &str) -> Result<i64>;
    /// The revisions of a project that submissions not yet ended use.
    async fn active_revisions(&self, project_id: &str) -> Result<Vec<i64>>;
    /// Every submission of `owner`, oldest first.
    async fn submission_ids_of(&self, owner: &str) -> Result<Vec<String>>;
    /// Submissions owned by a key that no longer exists (its deletion was interrupted).
    async fn orphaned_submission_ids(&self) -> Result<Vec<String>>;
}

/// The callbacks outbox (see `crate::callbacks`).
#[async_trait]
pub trait Callbacks: Send + Sync {
    /// A new callback (state `waiting`), written before its subject.
    async fn insert_callback(&self, cb: &CallbackRow) -> Result<()>;
    /// A subject's callbacks, oldest first.
    async fn callbacks_of(&self, subject: &Subject) -> Result<Vec<CallbackRow>>;
    /// A callback's attempts, first first.
    async fn attempts_of(&self, callback_id: &str) -> Result<Vec<AttemptRow>>;
    /// Every `waiting` callback (to arm those whose subject ended while nobody listened).
    async fn waiting_callbacks(&self) -> Result<Vec<CallbackRow>>;
    /// `waiting` → `pending`, due at `due`, with its sealed body; the key is erased. False
    /// when it was not waiting (armed already).
    async fn seal_callback(
        &self,
        id: &str,
        body: &[u8],
        signature: Option<&str>,
        due: Micros,
    ) -> Result<bool>;
    /// The callback due first (`pending`, or `delivering` with its lease over) →
    /// `delivering` on `node` until `lease_until`, one more attempt; `None` when none is due.
    async fn claim_callback(
        &self,
        node: &str,
        now: Micros,
        lease_until: Micros,
    ) -> Result<Option<ClaimedCallback>>;
    /// Records an attempt and, when its claim still holds, what follows (a final state
    /// erases the body).
    async fn record_attempt(&self, attempt: &AttemptRow, after: AfterAttempt) -> Result<()>;
    /// When the next pending attempt (or lease end) is due.
    async fn next_callback_due(&self) -> Result<Option<Micros>>;
    /// After a restart: what `node` was delivering is recorded as interrupted and due `now`.
    async fn release_callbacks(&self, node: &str, now: Micros) -> Result<u64>;
    /// Erases a subject's callbacks and their attempts.
    async fn delete_callbacks_of(&self, subject: &Subject) -> Result<()>;
}

/// Every aggregate of one back end.
pub trait Store:
    ApiKeys + Executions + Queue + Callbacks + AuditLog + Projects + Submissions + Files
{
}

impl<T: ApiKeys + Executions + Queue + Callbacks + AuditLog + Projects + Submissions + Files> Store
    for T
{
}

impl Owned for ExecutionRow {
    fn owner(&self) -> &str {
        &self.owner
    }
}

impl Owned for FileRow {
    fn owner(&self) -> &str {
        &self.owner
    }
}

impl Owned for SubmissionRow {
    fn owner(&self) -> &str {
        &self.owner
    }
}
