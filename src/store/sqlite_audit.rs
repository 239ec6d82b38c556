//! The embedded store's audit log.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sqlite::{corrupt, SqliteStore};
use super::{AuditLog, AuditRow, Result};
use crate::clock::Micros;

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
