//! The callbacks outbox on SQLite (the schema: `migrations/0002_callbacks.sql`). Bytes (the
//! key, the sealed body) are kept as base64 text, which every back end stores alike.

use async_trait::async_trait;
use base64::Engine;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::sqlite::SqliteStore;
use super::{
    AfterAttempt, AttemptRow, CallbackRow, Callbacks, ClaimedCallback, Result, StoreError,
};
use crate::callbacks::{DeliveryState, Mode, Secret, Subject};
use crate::clock::Micros;

const CB_COLUMNS: &str = "id, subject_kind, subject_id, url, mode, secret_key, state, attempts, \
     created_at, sealed_at, next_attempt_at, delivered_at, last_error";

const ATTEMPT_COLUMNS: &str =
    "callback_id, attempt, started_at, duration_us, status_code, error, next_attempt_at";

/// What an interrupted attempt is recorded with.
const INTERRUPTED: &str = "interrupted: the server stopped during this attempt";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str, what: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn callback_row(r: &SqliteRow) -> Result<CallbackRow> {
    let id: String = r.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("callback {id}: {what}"));
    let kind: String = r.try_get("subject_kind")?;
    let mode: String = r.try_get("mode")?;
    let state: String = r.try_get("state")?;
    let key: Option<String> = r.try_get("secret_key")?;
    let micros =
        |col: &str| -> Result<Option<Micros>> { Ok(r.try_get::<Option<i64>, _>(col)?.map(Micros)) };
    Ok(CallbackRow {
        subject: Subject::from_parts(&kind, r.try_get("subject_id")?)
            .ok_or_else(|| corrupt(format!("subject kind '{kind}'")))?,
        url: r.try_get("url")?,
        mode: Mode::parse(&mode).ok_or_else(|| corrupt(format!("mode '{mode}'")))?,
        key: key
            .map(|k| unb64(&k, &format!("callback {id}: key")).map(Secret::new))
            .transpose()?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("state '{state}'")))?,
        attempts: r.try_get("attempts")?,
        created_at: Micros(r.try_get("created_at")?),
        sealed_at: micros("sealed_at")?,
        next_attempt_at: micros("next_attempt_at")?,
        delivered_at: micros("delivered_at")?,
        last_error: r.try_get("last_error")?,
        id,
    })
}

fn attempt_row(r: &SqliteRow) -> Result<AttemptRow> {
    Ok(AttemptRow {
        callback_id: r.try_get("callback_id")?,
        attempt: r.try_get("attempt")?,
        started_at: Micros(r.try_get("started_at")?),
        duration_us: r.try_get("duration_us")?,
        status_code: r.try_get("status_code")?,
        error: r.try_get("error")?,
        next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(Micros),
    })
}

/// Erases a subject's callbacks and their attempts, inside `tx` (also used when its subject
/// is deleted).
pub(super) async fn delete_callbacks_in(
    tx: &mut Transaction<'_, Sqlite>,
    subject: &Subject,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM callback_attempts WHERE callback_id IN \
         (SELECT id FROM callbacks WHERE subject_kind = ? AND subject_id = ?)",
    )
    .bind(subject.kind())
    .bind(subject.id())
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM callbacks WHERE subject_kind = ? AND subject_id = ?")
        .bind(subject.kind())
        .bind(subject.id())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Callbacks for SqliteStore {
    async fn insert_callback(&self, c: &CallbackRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO callbacks ({CB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&c.id)
        .bind(c.subject.kind())
        .bind(c.subject.id())
        .bind(&c.url)
        .bind(c.mode.as_str())
        .bind(c.key.as_ref().map(|k| b64(k.bytes())))
        .bind(c.state.as_str())
        .bind(c.attempts)
        .bind(c.created_at.0)
        .bind(c.sealed_at.map(|t| t.0))
        .bind(c.next_attempt_at.map(|t| t.0))
        .bind(c.delivered_at.map(|t| t.0))
        .bind(&c.last_error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn callbacks_of(&self, subject: &Subject) -> Result<Vec<CallbackRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CB_COLUMNS} FROM callbacks WHERE subject_kind = ? AND subject_id = ? \
             ORDER BY created_at, id"
        ))
        .bind(subject.kind())
        .bind(subject.id())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(callback_row).collect()
    }

    async fn attempts_of(&self, callback_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM callback_attempts WHERE callback_id = ? \
             ORDER BY attempt"
        ))
        .bind(callback_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(attempt_row).collect()
    }

    async fn waiting_callbacks(&self) -> Result<Vec<CallbackRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CB_COLUMNS} FROM callbacks WHERE state = 'waiting' ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(callback_row).collect()
    }

    async fn seal_callback(
        &self,
        id: &str,
        body: &[u8],
        signature: Option<&str>,
        due: Micros,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE callbacks SET state = 'pending', body = ?, signature = ?, \
             secret_key = NULL, sealed_at = ?, next_attempt_at = ? \
             WHERE id = ? AND state = 'waiting'",
        )
        .bind(b64(body))
        .bind(signature)
        .bind(due.0)
        .bind(due.0)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_callback(
        &self,
        node: &str,
        now: Micros,
        lease_until: Micros,
    ) -> Result<Option<ClaimedCallback>> {
        // One statement, so two workers never claim the same row (SQLite serialises writers;
        // PostgreSQL would add FOR UPDATE SKIP LOCKED to the subquery).
        let due = "state IN ('pending', 'delivering') AND next_attempt_at <= ?";
        let row = sqlx::query(&format!(
            "UPDATE callbacks SET state = 'delivering', node = ?, claimed_at = ?, \
             attempts = attempts + 1, next_attempt_at = ? \
             WHERE id = (SELECT id FROM callbacks WHERE {due} \
                         ORDER BY next_attempt_at, id LIMIT 1) AND {due} \
             RETURNING {CB_COLUMNS}, body, signature"
        ))
        .bind(node)
        .bind(now.0)
        .bind(lease_until.0)
        .bind(now.0)
        .bind(now.0)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let row = callback_row(&r)?;
        let body: Option<String> = r.try_get("body")?;
        let body = body.ok_or_else(|| {
            StoreError::Corrupt(format!("callback {}: due without a body", row.id))
        })?;
        Ok(Some(ClaimedCallback {
            body: unb64(&body, &format!("callback {}: body", row.id))?,
            signature: r.try_get("signature")?,
            row,
        }))
    }

    async fn record_attempt(&self, a: &AttemptRow, after: AfterAttempt) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        // Not for a callback erased meanwhile (its subject was deleted).
        sqlx::query(&format!(
            "INSERT INTO callback_attempts ({ATTEMPT_COLUMNS}) \
             SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM callbacks WHERE id = ?)"
        ))
        .bind(&a.callback_id)
        .bind(a.attempt)
        .bind(a.started_at.0)
        .bind(a.duration_us)
        .bind(a.status_code)
        .bind(&a.error)
        .bind(a.next_attempt_at.map(|t| t.0))
        .bind(&a.callback_id)
        .execute(&mut *tx)
        .await?;
        // Only while this attempt's claim holds (a lease taken over by another claim is
        // that claim's to settle). A final state erases the body.
        let (state, next, delivered, erase) = match after {
            AfterAttempt::Delivered => (
                DeliveryState::Delivered,
                None,
                Some(a.started_at.0 + a.duration_us),
                true,
            ),
            AfterAttempt::RetryAt(at) => (DeliveryState::Pending, Some(at.0), None, false),
            AfterAttempt::GiveUp => (DeliveryState::Failed, None, None, true),
        };
        sqlx::query(
            "UPDATE callbacks SET state = ?, next_attempt_at = ?, delivered_at = ?, \
             last_error = ?, body = CASE WHEN ? THEN NULL ELSE body END, \
             signature = CASE WHEN ? THEN NULL ELSE signature END, \
             node = NULL, claimed_at = NULL \
             WHERE id = ? AND state = 'delivering' AND attempts = ?",
        )
        .bind(state.as_str())
        .bind(next)
        .bind(delivered)
        .bind(&a.error)
        .bind(erase)
        .bind(erase)
        .bind(&a.callback_id)
        .bind(a.attempt)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn next_callback_due(&self) -> Result<Option<Micros>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM callbacks \
             WHERE state IN ('pending', 'delivering')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(at.map(Micros))
    }

    async fn release_callbacks(&self, node: &str, now: Micros) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(&format!(
            "INSERT INTO callback_attempts ({ATTEMPT_COLUMNS}) \
             SELECT id, attempts, COALESCE(claimed_at, ?), 0, NULL, ?, ? FROM callbacks \
             WHERE state = 'delivering' AND node = ?"
        ))
        .bind(now.0)
        .bind(INTERRUPTED)
        .bind(now.0)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE callbacks SET state = 'pending', next_attempt_at = ?, last_error = ?, \
             node = NULL, claimed_at = NULL WHERE state = 'delivering' AND node = ?",
        )
        .bind(now.0)
        .bind(INTERRUPTED)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn delete_callbacks_of(&self, subject: &Subject) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        delete_callbacks_in(&mut tx, subject).await?;
        tx.commit().await?;
        Ok(())
    }
}
