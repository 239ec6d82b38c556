//! The embedded store: one SQLite file in the data directory (WAL, so readers never wait for
//! the writer). The SQL is kept to what PostgreSQL also speaks, so the future PostgreSQL store
//! differs mainly in its placeholders and in how it claims work.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;

use super::{ApiKeyRow, ExecutionRow, Finish, Result, Status, Store, StoreError};

/// Each entry moves the schema one version up; applied in order, once.
const MIGRATIONS: &[&str] = &[
    // 1: API keys and executions.
    "CREATE TABLE api_keys (
        name TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        max_memory BIGINT,
        max_time DOUBLE PRECISION,
        max_executions BIGINT,
        created_date TEXT NOT NULL
    );
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT,
        end_reason TEXT,
        message TEXT,
        init_date TEXT NOT NULL,
        start_date TEXT,
        end_date TEXT,
        queued_at BIGINT,
        node TEXT
    );
    CREATE INDEX executions_queue ON executions (status, queued_at);
    CREATE INDEX executions_owner ON executions (owner, init_date);",
];

const EXEC_COLUMNS: &str = "id, owner, environment, status, request, result, end_reason, message, \
     init_date, start_date, end_date, queued_at, node";

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (or creates) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let url = path
            .to_str()
            .ok_or_else(|| StoreError::Location(format!("{} is not UTF-8", path.display())))?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{url}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL survives a crash of the process (kill -9); only a power loss
            // can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?;
        let version = version.unwrap_or(0) as usize;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            sqlx::raw_sql(migration).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind((i + 1) as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn key_row(r: &SqliteRow) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        name: r.try_get("name")?,
        token_hash: r.try_get("token_hash")?,
        max_memory: r.try_get("max_memory")?,
        max_time: r.try_get("max_time")?,
        max_executions: r.try_get("max_executions")?,
        created_date: r.try_get("created_date")?,
    })
}

fn exec_row(r: &SqliteRow) -> Result<ExecutionRow> {
    let status: String = r.try_get("status")?;
    Ok(ExecutionRow {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        environment: r.try_get("environment")?,
        status: Status::parse(&status).ok_or_else(|| {
            StoreError::Db(sqlx::Error::Decode(format!("bad status '{status}'").into()))
        })?,
        request: r.try_get("request")?,
        result: r.try_get("result")?,
        end_reason: r.try_get("end_reason")?,
        message: r.try_get("message")?,
        init_date: r.try_get("init_date")?,
        start_date: r.try_get("start_date")?,
        end_date: r.try_get("end_date")?,
        queued_at: r.try_get("queued_at")?,
        node: r.try_get("node")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO api_keys (name, token_hash, max_memory, max_time, max_executions, \
             created_date) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&key.name)
        .bind(&key.token_hash)
        .bind(key.max_memory)
        .bind(key.max_time)
        .bind(key.max_executions)
        .bind(&key.created_date)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_row).collect()
    }

    async fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKeyRow>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn delete_api_key(&self, name: &str) -> Result<Option<ApiKeyRow>> {
        let row = sqlx::query("DELETE FROM api_keys WHERE name = ? RETURNING *")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn insert_execution(&self, e: &ExecutionRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO executions ({EXEC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&e.id)
        .bind(&e.owner)
        .bind(&e.environment)
        .bind(e.status.as_str())
        .bind(&e.request)
        .bind(&e.result)
        .bind(&e.end_reason)
        .bind(&e.message)
        .bind(&e.init_date)
        .bind(&e.start_date)
        .bind(&e.end_date)
        .bind(e.queued_at)
        .bind(&e.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRow>> {
        let row = sqlx::query(&format!(
            "SELECT {EXEC_COLUMNS} FROM executions WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(exec_row).transpose()
    }

    async fn list_executions(
        &self,
        owner: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRow>, i64)> {
        // `owner IS NULL` in the bound value means "everyone's".
        let rows = sqlx::query(&format!(
            "SELECT {EXEC_COLUMNS} FROM executions WHERE (? IS NULL OR owner = ?) \
             ORDER BY init_date DESC, id DESC LIMIT ? OFFSET ?"
        ))
        .bind(owner)
        .bind(owner)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE (? IS NULL OR owner = ?)")
                .bind(owner)
                .bind(owner)
                .fetch_one(&self.pool)
                .await?;
        Ok((rows.iter().map(exec_row).collect::<Result<_>>()?, total))
    }

    async fn count_active(&self, owner: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM executions WHERE owner = ? AND status IN ('queued', 'running')",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn enqueue(&self, id: &str, queued_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE executions SET status = 'queued', queued_at = ? \
             WHERE id = ? AND status = 'pending'",
        )
        .bind(queued_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_next(&self, node: &str, start_date: &str) -> Result<Option<ExecutionRow>> {
        // One statement, so two claimers can never take the same row (SQLite serialises
        // writers; PostgreSQL would add FOR UPDATE SKIP LOCKED to the subquery).
        let row = sqlx::query(&format!(
            "UPDATE executions SET status = 'running', start_date = ?, node = ? \
             WHERE id = (SELECT id FROM executions WHERE status = 'queued' \
                         ORDER BY queued_at, id LIMIT 1) AND status = 'queued' \
             RETURNING {EXEC_COLUMNS}"
        ))
        .bind(start_date)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(exec_row).transpose()
    }

    async fn finish(&self, id: &str, from: &[Status], how: &Finish<'_>) -> Result<bool> {
        let allowed: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let done = sqlx::query(&format!(
            "UPDATE executions SET status = 'ended', end_reason = ?, message = ?, result = ?, \
             end_date = ? WHERE id = ? AND status IN ({})",
            allowed.join(", ")
        ))
        .bind(how.end_reason)
        .bind(how.message)
        .bind(how.result)
        .bind(how.end_date)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_execution(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM executions WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recover_running(&self, node: &str, how: &Finish<'_>) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE executions SET status = 'ended', end_reason = ?, message = ?, end_date = ? \
             WHERE status = 'running' AND (node = ? OR node IS NULL) RETURNING id",
        )
        .bind(how.end_reason)
        .bind(how.message)
        .bind(how.end_date)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }
}
