//! The embedded store's API keys.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sqlite::{bigint, count, SqliteStore};
use super::{ApiKeyRow, ApiKeys, Result};
use crate::auth::Quota;
use crate::clock::Micros;

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
