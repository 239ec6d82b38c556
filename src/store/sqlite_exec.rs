//! The embedded store's executions and their queue.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sqlite::{bigint, corrupt, count, json, SqliteStore};
use super::{ExecutionRow, Executions, Queue, Result, StoreError, Transitioned, Usage};
use crate::auth::MASTER_OWNER;
use crate::callbacks::{DeliveryState, Subject};
use crate::clock::Micros;
use crate::exec::state::{Change, EndReason, Ending, Status, Transition};

const EXEC_COLUMNS: &str = "id, owner, environment, status, request, result, end_reason, \
     message, created_at, started_at, ended_at, queued_at, node, stored_bytes";

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
/// Inserts the execution's row, only while its owning key exists (a create racing the key's
/// deletion leaves nothing), and a row claimed as it is created only while nothing is
/// queued; the rows inserted, 0 or 1.
async fn insert_row<'c>(
    to: impl sqlx::Executor<'c, Database = sqlx::Sqlite>,
    e: &ExecutionRow,
) -> Result<u64> {
    let done = sqlx::query(&format!(
        "INSERT INTO executions ({EXEC_COLUMNS}) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
         WHERE (? = '{MASTER_OWNER}' OR EXISTS \
             (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = ?)) \
         AND (? <> 'running' OR NOT EXISTS \
             (SELECT 1 FROM executions WHERE status = 'queued'))"
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
    .bind(e.status.as_str())
    .execute(to)
    .await?;
    Ok(done.rows_affected())
}

#[async_trait]
impl Executions for SqliteStore {
    async fn insert_execution(&self, e: &ExecutionRow) -> Result<bool> {
        let blobs = e.request.blobs();
        // One statement needs no transaction of its own: each of BEGIN and COMMIT would be
        // one more trip to the connection's worker thread.
        if blobs.is_empty() {
            return Ok(insert_row(&self.pool, e).await? == 1);
        }
        let mut tx = self.pool.begin().await?;
        if insert_row(&mut *tx, e).await? != 1 {
            return Ok(false);
        }
        for sha256 in blobs {
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

    async fn transition(&self, id: &str, t: &Transition) -> Result<Option<Transitioned>> {
        let guard = format!(
            "WHERE id = ? AND status IN ({}) RETURNING {EXEC_COLUMNS}, \
             EXISTS (SELECT 1 FROM callbacks WHERE subject_kind = '{}' \
             AND subject_id = executions.id AND state = '{}') AS callbacks_waiting",
            status_list(t.from()),
            Subject::EXECUTION,
            DeliveryState::Waiting.as_str(),
        );
        let at = t.at().0;
        let done = match t.change() {
            Change::Queued => {
                sqlx::query(&format!(
                    "UPDATE executions SET status = 'queued', queued_at = ? {guard}"
                ))
                .bind(at)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
            Change::Claimed { node } => {
                sqlx::query(&format!(
                    "UPDATE executions SET status = 'running', started_at = ?, node = ? {guard}"
                ))
                .bind(at)
                .bind(node)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
            Change::Ended {
                ending,
                stored_bytes,
            } => {
                let c = ending_columns(ending)?;
                sqlx::query(&format!(
                    "UPDATE executions SET {ENDING_SET}, \
                     stored_bytes = COALESCE(?, stored_bytes) {guard}"
                ))
                .bind(c.reason)
                .bind(c.message)
                .bind(c.result)
                .bind(at)
                .bind(bigint(*stored_bytes)?)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        done.as_ref()
            .map(|r| {
                Ok(Transitioned {
                    row: exec_row(r)?,
                    callbacks_waiting: r.try_get("callbacks_waiting")?,
                })
            })
            .transpose()
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
        // writers; PostgreSQL would add FOR UPDATE SKIP LOCKED to the subquery). The claim's
        // time is taken before it finds its row, so under load it can read earlier than the
        // row's queueing: it starts no earlier than it was queued.
        let row = sqlx::query(&format!(
            "UPDATE executions SET status = 'running', started_at = MAX(?, queued_at), node = ? \
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
        let Change::Ended { ending, .. } = t.change() else {
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
