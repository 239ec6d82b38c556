//! The durable store: API keys and executions (and, later, projects, submissions and fleet
//! hosts). The embedded default is SQLite in the data directory; the [`Store`] trait keeps the
//! SQL behind one interface so that a PostgreSQL store (shared by a fleet, with
//! `FOR UPDATE SKIP LOCKED` claims) can be added beside it without touching the callers.
//!
//! The store is also the work queue: an execution is `queued` in a row, and a node claims the
//! oldest one it has room for (`claim_next`). Nothing about a run lives only in memory.

use async_trait::async_trait;

mod sqlite;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database location: {0}")]
    Location(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The PIFOP execution states, plus `queued` for work that waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Queued,
    Running,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "queued" => Status::Queued,
            "running" => Status::Running,
            "ended" => Status::Ended,
            _ => return None,
        })
    }
}

/// An API key as stored: the token itself is never stored, only its SHA-256.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub name: String,
    pub token_hash: String,
    pub max_memory: Option<i64>,
    pub max_time: Option<f64>,
    pub max_executions: Option<i64>,
    pub created_date: String,
}

/// One execution. `request` is the accepted request (JSON) and `result` the outcome (JSON);
/// the big things (files, streams) live on disk under `DATA/executions/<id>/`.
#[derive(Debug, Clone)]
pub struct ExecutionRow {
    pub id: String,
    /// `master` or the API key's name.
    pub owner: String,
    pub environment: String,
    pub status: Status,
    pub request: String,
    pub result: Option<String>,
    pub end_reason: Option<String>,
    pub message: Option<String>,
    pub init_date: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// When it was queued (µs since the epoch): the queue's order, oldest first.
    pub queued_at: Option<i64>,
    /// The node that claimed it (for a fleet; the single server uses its own name).
    pub node: Option<String>,
}

/// How an execution ended, as written by [`Store::finish`].
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub end_reason: &'a str,
    pub message: Option<&'a str>,
    pub result: Option<&'a str>,
    pub end_date: &'a str,
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<bool>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>>;
    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKeyRow>>;
    async fn delete_api_key(&self, name: &str) -> Result<Option<ApiKeyRow>>;

    async fn insert_execution(&self, exec: &ExecutionRow) -> Result<()>;
    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRow>>;
    /// Newest first; `owner: None` lists everyone's. Returns the page and the total.
    async fn list_executions(
        &self,
        owner: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRow>, i64)>;
    /// Executions of `owner` that hold or wait for a slot (queued or running).
    async fn count_active(&self, owner: &str) -> Result<i64>;
    /// pending → queued; false when it was not pending.
    async fn enqueue(&self, id: &str, queued_at: i64) -> Result<bool>;
    /// The oldest queued execution becomes running on `node`.
    async fn claim_next(&self, node: &str, start_date: &str) -> Result<Option<ExecutionRow>>;
    /// Ends an execution that is in one of the `from` states; false when it was not.
    async fn finish(&self, id: &str, from: &[Status], how: &Finish<'_>) -> Result<bool>;
    async fn delete_execution(&self, id: &str) -> Result<bool>;
    /// After a crash: every execution `node` was running ends as internal-error.
    /// Returns their ids.
    async fn recover_running(&self, node: &str, how: &Finish<'_>) -> Result<Vec<String>>;
}
