//! The embedded store's projects and submissions (the same SQL a PostgreSQL store would
//! speak, but for its placeholders and its claims).

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sqlite::{corrupt, json, SqliteStore};
use super::{
    ProjectRow, Projects, Result, StoreError, SubmissionFilter, SubmissionRow, Submissions,
};
use crate::auth::MASTER_OWNER;
use crate::callbacks::Subject;
use crate::clock::Micros;
use crate::judge::config::Stage;
use crate::judge::state::{Change, Status, Transition};
use crate::judge::verdict::{StageRecord, TestResult};

const SUB_COLUMNS: &str = "id, owner, project_id, project_revision, scenario, status, stage, \
     attempts, grade, created_at, queued_at, started_at, ended_at, node";

/// `1, 3`: the statuses a transition starts from (our own codes, never input).
fn code_list(from: &[Status]) -> String {
    let codes: Vec<String> = from.iter().map(|s| s.code().to_string()).collect();
    codes.join(", ")
}

/// The codes of the statuses still being processed.
fn executing_codes() -> String {
    let executing: Vec<Status> = Status::ALL.into_iter().filter(|s| s.executing()).collect();
    code_list(&executing)
}

fn project_row(r: &SqliteRow) -> Result<ProjectRow> {
    let id: String = r.try_get("id")?;
    let definition: String = r.try_get("definition")?;
    Ok(ProjectRow {
        owner: r.try_get("owner")?,
        revision: r.try_get("revision")?,
        def: serde_json::from_str(&definition)
            .map_err(|e| corrupt(format!("project {id}: definition: {e}")))?,
        created_at: Micros(r.try_get("created_at")?),
        updated_at: Micros(r.try_get("updated_at")?),
        id,
    })
}

/// A submission's JSON column `col` of each row (its stage records, its test results).
fn json_rows<T: DeserializeOwned>(
    rows: &[SqliteRow],
    col: &str,
    id: &str,
    what: &str,
) -> Result<Vec<T>> {
    rows.iter()
        .map(|r| {
            let text: String = r.try_get(col)?;
            serde_json::from_str(&text)
                .map_err(|e| corrupt(format!("submission {id}: {what}: {e}")))
        })
        .collect()
}

fn submission_row(r: &SqliteRow) -> Result<SubmissionRow> {
    let id: String = r.try_get("id")?;
    let status: i64 = r.try_get("status")?;
    let stage: Option<String> = r.try_get("stage")?;
    let grade: Option<String> = r.try_get("grade")?;
    let micros =
        |col: &str| -> Result<Option<Micros>> { Ok(r.try_get::<Option<i64>, _>(col)?.map(Micros)) };
    Ok(SubmissionRow {
        owner: r.try_get("owner")?,
        project_id: r.try_get("project_id")?,
        project_revision: r.try_get("project_revision")?,
        scenario: r.try_get("scenario")?,
        status: Status::from_code(status)
            .ok_or_else(|| corrupt(format!("submission {id}: status {status}")))?,
        stage: stage
            .map(|s| {
                Stage::parse(&s).ok_or_else(|| corrupt(format!("submission {id}: stage '{s}'")))
            })
            .transpose()?,
        attempts: r.try_get("attempts")?,
        grade: grade
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt(format!("submission {id}: grade: {e}")))?,
        created_at: Micros(r.try_get("created_at")?),
        queued_at: micros("queued_at")?,
        started_at: micros("started_at")?,
        ended_at: micros("ended_at")?,
        node: r.try_get("node")?,
        id,
    })
}

impl SqliteStore {
    /// The project row a statement on one id returns (a `SELECT`, a `DELETE … RETURNING`).
    async fn project_by_id(&self, sql: &str, id: &str) -> Result<Option<ProjectRow>> {
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(project_row).transpose()
    }
}

#[async_trait]
impl Projects for SqliteStore {
    async fn insert_project(&self, p: &ProjectRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO projects (id, owner, revision, definition, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.owner)
        .bind(p.revision)
        .bind(json(&p.def)?)
        .bind(p.created_at.0)
        .bind(p.updated_at.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_project(&self, id: &str) -> Result<Option<ProjectRow>> {
        self.project_by_id("SELECT * FROM projects WHERE id = ?", id)
            .await
    }

    async fn list_projects(&self, limit: i64, offset: i64) -> Result<(Vec<ProjectRow>, i64)> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY id LIMIT ? OFFSET ?")
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects")
            .fetch_one(&self.pool)
            .await?;
        Ok((rows.iter().map(project_row).collect::<Result<_>>()?, total))
    }

    async fn replace_project(&self, p: &ProjectRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE projects SET revision = ?, definition = ?, updated_at = ? \
             WHERE id = ? AND revision = ?",
        )
        .bind(p.revision)
        .bind(json(&p.def)?)
        .bind(p.updated_at.0)
        .bind(&p.id)
        .bind(p.revision - 1)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_project(&self, id: &str) -> Result<Option<ProjectRow>> {
        self.project_by_id("DELETE FROM projects WHERE id = ? RETURNING *", id)
            .await
    }
}

#[async_trait]
impl Submissions for SqliteStore {
    async fn insert_submission(&self, s: &SubmissionRow) -> Result<bool> {
        // Only while the owning key exists: a create racing the key's deletion leaves nothing.
        let done = sqlx::query(&format!(
            "INSERT INTO submissions ({SUB_COLUMNS}) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE ? = '{MASTER_OWNER}' OR EXISTS \
                 (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = ?)"
        ))
        .bind(&s.id)
        .bind(&s.owner)
        .bind(&s.project_id)
        .bind(s.project_revision)
        .bind(&s.scenario)
        .bind(i64::from(s.status.code()))
        .bind(s.stage.map(Stage::as_str))
        .bind(s.attempts)
        .bind(s.grade.as_ref().map(json).transpose()?)
        .bind(s.created_at.0)
        .bind(s.queued_at.map(|t| t.0))
        .bind(s.started_at.map(|t| t.0))
        .bind(s.ended_at.map(|t| t.0))
        .bind(&s.node)
        .bind(&s.owner)
        .bind(&s.owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_submission(&self, id: &str) -> Result<Option<SubmissionRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM submissions WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(submission_row).transpose()
    }

    async fn list_submissions(
        &self,
        f: &SubmissionFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SubmissionRow>, i64)> {
        // A bound NULL means "any".
        let filter = "(? IS NULL OR owner = ?) AND (? IS NULL OR project_id = ?) \
                      AND (? IS NULL OR status = ?)";
        let status = f.status.map(|s| i64::from(s.code()));
        let rows = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM submissions WHERE {filter} \
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        ))
        .bind(f.owner)
        .bind(f.owner)
        .bind(f.project)
        .bind(f.project)
        .bind(status)
        .bind(status)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM submissions WHERE {filter}"))
                .bind(f.owner)
                .bind(f.owner)
                .bind(f.project)
                .bind(f.project)
                .bind(status)
                .bind(status)
                .fetch_one(&self.pool)
                .await?;
        Ok((
            rows.iter().map(submission_row).collect::<Result<_>>()?,
            total,
        ))
    }

    async fn submission_transition(&self, id: &str, t: &Transition) -> Result<bool> {
        let guard = format!("WHERE id = ? AND status IN ({})", code_list(t.from()));
        let to = i64::from(t.to().code());
        let at = t.at().0;
        let done = match t.change() {
            Change::Claimed { node } => {
                sqlx::query(&format!(
                    "UPDATE submissions SET status = ?, started_at = COALESCE(started_at, ?), \
                     node = ? {guard}"
                ))
                .bind(to)
                .bind(at)
                .bind(node)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
            Change::Executing => {
                sqlx::query(&format!("UPDATE submissions SET status = ? {guard}"))
                    .bind(to)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
            Change::Ended(grade) => {
                sqlx::query(&format!(
                    "UPDATE submissions SET status = ?, grade = ?, ended_at = ?, stage = NULL \
                     {guard}"
                ))
                .bind(to)
                .bind(json(grade.as_ref())?)
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
            Change::Requeued => {
                sqlx::query(&format!(
                    "UPDATE submissions SET status = ?, attempts = attempts + 1, node = NULL, \
                     stage = NULL {guard}"
                ))
                .bind(to)
                .bind(id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    async fn claim_next_submission(&self, t: &Transition) -> Result<Option<SubmissionRow>> {
        let Change::Claimed { node } = t.change() else {
            return Err(StoreError::Misuse("claim_next_submission takes a claim"));
        };
        let waiting = Status::Waiting.code();
        // One statement, so two claimers never take the same row.
        let row = sqlx::query(&format!(
            "UPDATE submissions SET status = ?, started_at = COALESCE(started_at, ?), node = ? \
             WHERE id = (SELECT id FROM submissions WHERE status = {waiting} \
                         ORDER BY queued_at, id LIMIT 1) AND status IN ({}) \
             RETURNING {SUB_COLUMNS}",
            code_list(t.from())
        ))
        .bind(i64::from(t.to().code()))
        .bind(t.at().0)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(submission_row).transpose()
    }

    async fn running_submissions(&self, node: &str) -> Result<Vec<SubmissionRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM submissions WHERE status IN ({}, {}) \
             AND (node = ? OR node IS NULL) ORDER BY queued_at, id",
            Status::Preparation.code(),
            Status::Execution.code()
        ))
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(submission_row).collect()
    }

    async fn set_submission_stage(&self, id: &str, stage: Option<Stage>) -> Result<()> {
        sqlx::query("UPDATE submissions SET stage = ? WHERE id = ?")
            .bind(stage.map(Stage::as_str))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_stage(&self, id: &str, record: &StageRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO submission_stages (submission_id, stage, record) VALUES (?, ?, ?) \
             ON CONFLICT (submission_id, stage) DO UPDATE SET record = excluded.record",
        )
        .bind(id)
        .bind(record.stage.as_str())
        .bind(json(record)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_test(&self, id: &str, result: &TestResult) -> Result<()> {
        sqlx::query(
            "INSERT INTO submission_tests (submission_id, position, result) VALUES (?, ?, ?) \
             ON CONFLICT (submission_id, position) DO UPDATE SET result = excluded.result",
        )
        .bind(id)
        .bind(result.index as i64)
        .bind(json(result)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn submission_progress(&self, id: &str) -> Result<(Vec<StageRecord>, Vec<TestResult>)> {
        let stage_rows =
            sqlx::query("SELECT record FROM submission_stages WHERE submission_id = ?")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        let mut stages: Vec<StageRecord> = json_rows(&stage_rows, "record", id, "stage record")?;
        stages.sort_by_key(|s| s.stage);
        let test_rows = sqlx::query(
            "SELECT result FROM submission_tests WHERE submission_id = ? ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let tests = json_rows(&test_rows, "result", id, "test result")?;
        Ok((stages, tests))
    }

    async fn delete_idle_submission(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(&format!(
            "DELETE FROM submissions WHERE id = ? AND status NOT IN ({}, {})",
            Status::Preparation.code(),
            Status::Execution.code()
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            for table in ["submission_stages", "submission_tests"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE submission_id = ?"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let subject = Subject::Submission(id.to_string());
            super::sqlite_callbacks::delete_callbacks_in(&mut tx, &subject).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_active_submissions(&self, owner: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM submissions WHERE owner = ? AND status IN ({})",
            executing_codes()
        ))
        .bind(owner)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn active_revisions(&self, project_id: &str) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT DISTINCT project_revision FROM submissions \
             WHERE project_id = ? AND status IN ({})",
            executing_codes()
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn submission_ids_of(&self, owner: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT id FROM submissions WHERE owner = ? ORDER BY created_at, id",
            )
            .bind(owner)
            .fetch_all(&self.pool)
            .await?,
        )
    }

    async fn orphaned_submission_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT id FROM submissions WHERE owner <> '{MASTER_OWNER}' AND NOT EXISTS \
             (SELECT 1 FROM api_keys WHERE 'key:' || api_keys.id = submissions.owner) \
             ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}
