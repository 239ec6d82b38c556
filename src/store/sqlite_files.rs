//! The embedded store's files kept by reference.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sqlite::SqliteStore;
use super::{FileRow, Files, Result};
use crate::auth::MASTER_OWNER;
use crate::clock::Micros;

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
