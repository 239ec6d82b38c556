//! The embedded store: one SQLite file in the data directory (WAL, so readers never wait for
//! the writer). The SQL is what PostgreSQL also speaks; a PostgreSQL store differs in its
//! placeholders and in how it claims work.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::migrations::{self, MIGRATIONS};
use super::{
    ApiKeyRow, ApiKeys, AuditLog, AuditRow, ExecutionRow, Executions, FileRow, Files, Queue,
    Result, StoreError, Usage,
};
use crate::auth::{Quota, MASTER_OWNER};
use crate::callbacks::Subject;
use crate::clock::Micros;
use crate::exec::state::{Change, EndReason, Ending, Status, Transition};

const EXEC_COLUMNS: &str = "id, owner, environment, status, request, result, end_reason, \
     message, created_at, started_at, ended_at, queued_at, node, stored_bytes";

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (or creates) the database file and brings its schema up to date (a database
    /// written by an older sandpit is upgraded in place).
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

    /// A private database in memory (one connection, kept open): for tests of the domain.
    pub async fn in_memory() -> Result<SqliteStore> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(SqliteConnectOptions::from_str("sqlite::memory:")?)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (the database file may then be opened again).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if super::legacy::is_legacy(&mut tx).await? {
            super::legacy::upgrade(&mut tx).await?;
        }
        apply_migrations(&mut tx, i64::MAX).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Applies the migrations this database has not had yet, up to version `up_to`.
pub(super) async fn apply_migrations(tx: &mut Transaction<'_, Sqlite>, up_to: i64) -> Result<()> {
    sqlx::query(migrations::CREATE_TABLE)
        .execute(&mut **tx)
        .await?;
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut **tx)
        .await?;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > version.unwrap_or(0) && m.version <= up_to)
    {
        sqlx::raw_sql(m.sql).execute(&mut **tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(m.version)
            .bind(m.name)
            .bind(Micros::now().0)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

/// A stored count or size: `BIGINT`, never negative.
fn count(r: &SqliteRow, col: &str) -> Result<Option<u64>> {
    r.try_get::<Option<i64>, _>(col)?
        .map(|v| u64::try_from(v).map_err(|_| corrupt(format!("{col} = {v}"))))
        .transpose()
}

/// A count or size to store: refused (never wrapped) above what `BIGINT` holds.
fn bigint(v: Option<u64>) -> Result<Option<i64>> {
    v.map(|v| i64::try_from(v).map_err(|_| StoreError::Misuse("a value above 2^63-1")))
        .transpose()
}

fn key_row(r: &SqliteRow) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        token_hash: r.try_get("token_hash")?,
        quota: Quota {
            max_memory: count(r, "max_memory")?,
            max_time: r.try_get("max_time")?,
            max_executions: count(r, "max_executions")?,
            max_pids: count(r, "max_pids")?,
            max_output_bytes: count(r, "max_output_bytes")?,
            max_pending: count(r, "max_pending")?,
            max_files: count(r, "max_files")?,
            max_storage_bytes: count(r, "max_storage_bytes")?,
        },
        manage_projects: r.try_get::<i64, _>("manage_projects")? != 0,
        created_at: Micros(r.try_get("created_at")?),
    })
}

fn exec_row(r: &SqliteRow) -> Result<ExecutionRow> {
    let id: String = r.try_get("id")?;
    let status: String = r.try_get("status")?;
    let request: String = r.try_get("request")?;
    let result: Option<String> = r.try_get("result")?;
    let end_reason: Option<String> = r.try_get("end_reason")?;
    let micros =
        |col: &str| -> Result<Option<Micros>> { Ok(r.try_get::<Option<i64>, _>(col)?.map(Micros)) };
    Ok(ExecutionRow {
        owner: r.try_get("owner")?,
        environment: r.try_get("environment")?,
        status: Status::parse(&status)
            .ok_or_else(|| corrupt(format!("execution {id}: status '{status}'")))?,
        request: serde_json::from_str(&request)
            .map_err(|e| corrupt(format!("execution {id}: request: {e}")))?,
        result: result
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt(format!("execution {id}: result: {e}")))?,
        end_reason: end_reason
            .map(|text| {
                EndReason::parse(&text)
                    .ok_or_else(|| corrupt(format!("execution {id}: end reason '{text}'")))
            })
            .transpose()?,
        message: r.try_get("message")?,
        created_at: Micros(r.try_get("created_at")?),
        started_at: micros("started_at")?,
        ended_at: micros("ended_at")?,
        queued_at: micros("queued_at")?,
        node: r.try_get("node")?,
        stored_bytes: count(r, "stored_bytes")?.unwrap_or(0),
        id,
    })
}

const FILE_COLUMNS: &str = "id, owner, sha256, size, name, execution_id, created_at, expires_at";

fn file_row(r: &SqliteRow) -> Result<FileRow> {
    Ok(FileRow {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        sha256: r.try_get("sha256")?,
        size: r.try_get("size")?,
        name: r.try_get("name")?,
        execution_id: r.try_get("execution_id")?,
        created_at: Micros(r.try_get("created_at")?),
        expires_at: Micros(r.try_get("expires_at")?),
    })
}

pub(super) fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("serialising: {e}")))
}

/// `'pending', 'queued'`: the statuses a transition starts from (our own names, never input).
fn status_list(from: &[Status]) -> String {
    let quoted: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
    quoted.join(", ")
}

/// The columns an ending writes, bound in this order: end_reason, message, result, ended_at.
const ENDING_SET: &str = "status = 'ended', end_reason = ?, message = ?, result = ?, ended_at = ?";

struct EndingColumns {
    reason: &'static str,
    message: Option<String>,
    result: Option<String>,
}

fn ending_columns(e: &Ending) -> Result<EndingColumns> {
    Ok(EndingColumns {
        reason: e.reason.as_str(),
        message: e.message.clone(),
        result: e.result.as_ref().map(json).transpose()?,
    })
}

#[async_trait]
impl ApiKeys for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<bool> {
        let q = &key.quota;
        let done = sqlx::query(
            "INSERT INTO api_keys (id, name, token_hash, max_memory, max_time, max_executions, \
             max_pids, max_output_bytes, max_pending, max_files, max_storage_bytes, \
             manage_projects, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.token_hash)
        .bind(bigint(q.max_memory)?)
        .bind(q.max_time)
        .bind(bigint(q.max_executions)?)
        .bind(bigint(q.max_pids)?)
        .bind(bigint(q.max_output_bytes)?)
        .bind(bigint(q.max_pending)?)
        .bind(bigint(q.max_files)?)
        .bind(bigint(q.max_storage_bytes)?)
        .bind(i64::from(key.manage_projects))
        .bind(key.created_at.0)
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

    async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKeyRow>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
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
}

#[async_trait]
impl Executions for SqliteStore {
    async fn insert_execution(&self, e: &ExecutionRow) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Only while the owning key exists: a create racing the key's deletion leaves nothing.
        let done = sqlx::query(&format!(
            "INSERT INTO executions ({EXEC_COLUMNS}) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE ? = '{MASTER_OWNER}' OR EXISTS \
                 (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = ?)"
        ))
        .bind(&e.id)
        .bind(&e.owner)
        .bind(&e.environment)
        .bind(e.status.as_str())
        .bind(json(&e.request)?)
        .bind(e.result.as_ref().map(json).transpose()?)
        .bind(e.end_reason.map(EndReason::as_str))
        .bind(&e.message)
        .bind(e.created_at.0)
        .bind(e.started_at.map(|t| t.0))
        .bind(e.ended_at.map(|t| t.0))
        .bind(e.queued_at.map(|t| t.0))
        .bind(&e.node)
        .bind(bigint(Some(e.stored_bytes))?)
        .bind(&e.owner)
        .bind(&e.owner)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for sha256 in e.request.blobs() {
            sqlx::query("INSERT INTO execution_blobs (execution_id, sha256) VALUES (?, ?)")
                .bind(&e.id)
                .bind(sha256)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
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
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
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

    async fn transition(&self, id: &str, t: &Transition) -> Result<bool> {
        let guard = format!("WHERE id = ? AND status IN ({})", status_list(t.from()));
        let at = t.at().0;
        let done = match t.change() {
            Change::Queued => {
                sqlx::query(&format!(
                    "UPDATE executions SET status = 'queued', queued_at = ? {guard}"
                ))
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
            Change::Claimed { node } => {
                sqlx::query(&format!(
                    "UPDATE executions SET status = 'running', started_at = ?, node = ? {guard}"
                ))
                .bind(at)
                .bind(node)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
            Change::Ended(ending) => {
                let c = ending_columns(ending)?;
                sqlx::query(&format!("UPDATE executions SET {ENDING_SET} {guard}"))
                    .bind(c.reason)
                    .bind(c.message)
                    .bind(c.result)
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    async fn delete_ended_execution(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM executions WHERE id = ? AND status = 'ended'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM execution_blobs WHERE execution_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let subject = Subject::Execution(id.to_string());
        super::sqlite_callbacks::delete_callbacks_in(&mut tx, &subject).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_stored_bytes(&self, id: &str, bytes: u64) -> Result<()> {
        sqlx::query("UPDATE executions SET stored_bytes = ? WHERE id = ?")
            .bind(bigint(Some(bytes))?)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn execution_ids_of(&self, owner: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM executions WHERE owner = ? ORDER BY created_at, id")
                .bind(owner)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn orphaned_execution_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT id FROM executions WHERE owner <> '{MASTER_OWNER}' AND NOT EXISTS \
             (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = executions.owner) \
             ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn count_active(&self, owner: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM executions WHERE owner = ? AND status IN ('queued', 'running')",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn usage(&self, owner: &str) -> Result<Usage> {
        let r = sqlx::query(
            "SELECT \
               COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
               COALESCE(SUM(CASE WHEN status IN ('queued', 'running') THEN 1 ELSE 0 END), 0) \
                 AS active, \
               COALESCE(SUM(stored_bytes), 0) AS stored_bytes, \
               (SELECT COALESCE(SUM(size), 0) FROM files \
                 WHERE files.owner = ? AND files.expires_at > ?) AS kept_bytes \
             FROM executions WHERE owner = ?",
        )
        .bind(owner)
        .bind(Micros::now().0)
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage {
            pending: count(&r, "pending")?.unwrap_or(0),
            active: count(&r, "active")?.unwrap_or(0),
            stored_bytes: count(&r, "stored_bytes")?.unwrap_or(0),
            kept_bytes: count(&r, "kept_bytes")?.unwrap_or(0),
        })
    }

    async fn claim_next(&self, t: &Transition) -> Result<Option<ExecutionRow>> {
        let Change::Claimed { node } = t.change() else {
            return Err(StoreError::Misuse("claim_next takes a claim"));
        };
        // One statement, so two claimers can never take the same row (SQLite serialises
        // writers; PostgreSQL would add FOR UPDATE SKIP LOCKED to the subquery).
        let row = sqlx::query(&format!(
            "UPDATE executions SET status = 'running', started_at = ?, node = ? \
             WHERE id = (SELECT id FROM executions WHERE status = 'queued' \
                         ORDER BY queued_at, id LIMIT 1) AND status IN ({}) \
             RETURNING {EXEC_COLUMNS}",
            status_list(t.from())
        ))
        .bind(t.at().0)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(exec_row).transpose()
    }

    async fn abandon_running(&self, node: &str, t: &Transition) -> Result<Vec<String>> {
        let Change::Ended(ending) = t.change() else {
            return Err(StoreError::Misuse("abandon_running takes an ending"));
        };
        let c = ending_columns(ending)?;
        let rows = sqlx::query(&format!(
            "UPDATE executions SET {ENDING_SET} \
             WHERE status IN ({}) AND (node = ? OR node IS NULL) RETURNING id",
            status_list(t.from())
        ))
        .bind(c.reason)
        .bind(c.message)
        .bind(c.result)
        .bind(t.at().0)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }

    async fn queue_depth(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

fn audit_row(r: &SqliteRow) -> Result<AuditRow> {
    let status: i64 = r.try_get("status")?;
    Ok(AuditRow {
        request_id: r.try_get("request_id")?,
        at: Micros(r.try_get("at")?),
        who: r.try_get("who")?,
        peer: r.try_get("peer")?,
        method: r.try_get("method")?,
        route: r.try_get("route")?,
        target: r.try_get("target")?,
        status: u16::try_from(status).map_err(|_| corrupt(format!("audit status {status}")))?,
    })
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn insert_audit(&self, e: &AuditRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (request_id, at, who, peer, method, route, target, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.request_id)
        .bind(e.at.0)
        .bind(&e.who)
        .bind(&e.peer)
        .bind(&e.method)
        .bind(&e.route)
        .bind(&e.target)
        .bind(i64::from(e.status))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_audit(&self, limit: i64, offset: i64) -> Result<(Vec<AuditRow>, i64)> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log ORDER BY at DESC, request_id DESC LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok((rows.iter().map(audit_row).collect::<Result<_>>()?, total))
    }
}

#[async_trait]
impl Files for SqliteStore {
    async fn insert_file(&self, f: &FileRow) -> Result<bool> {
        // Only while the owning key exists: a file kept as its key is deleted is not kept.
        let done = sqlx::query(&format!(
            "INSERT INTO files ({FILE_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE ? = '{MASTER_OWNER}' OR EXISTS \
                 (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = ?)"
        ))
        .bind(&f.id)
        .bind(&f.owner)
        .bind(&f.sha256)
        .bind(f.size)
        .bind(&f.name)
        .bind(&f.execution_id)
        .bind(f.created_at.0)
        .bind(f.expires_at.0)
        .bind(&f.owner)
        .bind(&f.owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_file(&self, id: &str, now: Micros) -> Result<Option<FileRow>> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE id = ? AND expires_at > ?"
        ))
        .bind(id)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(file_row).transpose()
    }

    async fn list_files(
        &self,
        owner: Option<&str>,
        now: Micros,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FileRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE (? IS NULL OR owner = ?) AND expires_at > ? \
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        ))
        .bind(owner)
        .bind(owner)
        .bind(now.0)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE (? IS NULL OR owner = ?) AND expires_at > ?",
        )
        .bind(owner)
        .bind(owner)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        Ok((rows.iter().map(file_row).collect::<Result<_>>()?, total))
    }

    async fn file_usage(&self, owner: &str, now: Micros) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM files \
             WHERE owner = ? AND expires_at > ?",
        )
        .bind(owner)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("bytes")?))
    }

    async fn delete_file(&self, id: &str) -> Result<Option<FileRow>> {
        let row = sqlx::query(&format!(
            "DELETE FROM files WHERE id = ? RETURNING {FILE_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(file_row).transpose()
    }

    async fn delete_files_of(&self, owner: &str) -> Result<Vec<FileRow>> {
        let rows = sqlx::query(&format!(
            "DELETE FROM files WHERE owner = ? RETURNING {FILE_COLUMNS}"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_row).collect()
    }

    async fn delete_orphaned_files(&self) -> Result<Vec<FileRow>> {
        let rows = sqlx::query(&format!(
            "DELETE FROM files WHERE owner <> '{MASTER_OWNER}' AND NOT EXISTS \
             (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = files.owner) \
             RETURNING {FILE_COLUMNS}"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_row).collect()
    }

    async fn delete_expired_files(&self, now: Micros) -> Result<Vec<FileRow>> {
        let rows = sqlx::query(&format!(
            "DELETE FROM files WHERE expires_at <= ? RETURNING {FILE_COLUMNS}"
        ))
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_row).collect()
    }

    async fn blob_in_use(&self, sha256: &str, now: Micros) -> Result<bool> {
        let used: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM files WHERE sha256 = ? AND expires_at > ?) + \
             (SELECT COUNT(*) FROM execution_blobs b JOIN executions e \
              ON e.id = b.execution_id WHERE b.sha256 = ? AND e.status <> 'ended')",
        )
        .bind(sha256)
        .bind(now.0)
        .bind(sha256)
        .fetch_one(&self.pool)
        .await?;
        Ok(used > 0)
    }
}
