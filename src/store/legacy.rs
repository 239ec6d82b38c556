//! Databases written before the schema moved to numbered migrations: a `schema_version`
//! table at version 1 and RFC 3339 text times. Such a database is detected when it is opened
//! and upgraded in place, in the same transaction as the migrations: the old tables are moved
//! aside, the current schema is created, every row is copied with its times converted to
//! [`Micros`], and the old tables are dropped. The request and result JSON of that time reads
//! as the typed values of today (tests in `exec::request` and `exec::result`). SQLite only: no
//! other back end ever had that schema.

use sqlx::{Row, Sqlite, Transaction};

use super::{Result, StoreError};
use crate::clock::Micros;

pub(super) async fn is_legacy(tx: &mut Transaction<'_, Sqlite>) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(n > 0)
}

fn time(text: Option<String>, what: &str) -> Result<Option<i64>> {
    text.map(|t| {
        Micros::parse_rfc3339(&t)
            .map(|m| m.0)
            .ok_or_else(|| StoreError::Corrupt(format!("{what} '{t}' is not an RFC 3339 time")))
    })
    .transpose()
}

pub(super) async fn upgrade(tx: &mut Transaction<'_, Sqlite>) -> Result<()> {
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut **tx)
        .await?;
    if version != Some(1) {
        return Err(StoreError::Corrupt(format!(
            "schema_version {version:?} is not one this sandpit knows"
        )));
    }
    sqlx::raw_sql(
        "DROP INDEX executions_queue;
         DROP INDEX executions_owner;
         ALTER TABLE api_keys RENAME TO legacy_api_keys;
         ALTER TABLE executions RENAME TO legacy_executions;",
    )
    .execute(&mut **tx)
    .await?;
    // The schema of that time (version 1); later migrations convert its rows like any other.
    super::sqlite::apply_migrations(tx, 1).await?;

    let keys = sqlx::query("SELECT * FROM legacy_api_keys")
        .fetch_all(&mut **tx)
        .await?;
    for k in &keys {
        let name: String = k.try_get("name")?;
        sqlx::query(
            "INSERT INTO api_keys (name, token_hash, max_memory, max_time, max_executions, \
             created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&name)
        .bind(k.try_get::<String, _>("token_hash")?)
        .bind(k.try_get::<Option<i64>, _>("max_memory")?)
        .bind(k.try_get::<Option<f64>, _>("max_time")?)
        .bind(k.try_get::<Option<i64>, _>("max_executions")?)
        .bind(time(
            k.try_get("created_date")?,
            &format!("key {name} created_date"),
        )?)
        .execute(&mut **tx)
        .await?;
    }

    let execs = sqlx::query("SELECT * FROM legacy_executions")
        .fetch_all(&mut **tx)
        .await?;
    for e in &execs {
        let id: String = e.try_get("id")?;
        let when = |col: &str| -> Result<Option<i64>> {
            time(e.try_get(col)?, &format!("execution {id} {col}"))
        };
        sqlx::query(
            "INSERT INTO executions (id, owner, environment, status, request, result, \
             end_reason, message, created_at, started_at, ended_at, queued_at, node) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(e.try_get::<String, _>("owner")?)
        .bind(e.try_get::<String, _>("environment")?)
        .bind(e.try_get::<String, _>("status")?)
        .bind(e.try_get::<String, _>("request")?)
        .bind(e.try_get::<Option<String>, _>("result")?)
        .bind(e.try_get::<Option<String>, _>("end_reason")?)
        .bind(e.try_get::<Option<String>, _>("message")?)
        .bind(when("init_date")?)
        .bind(when("start_date")?)
        .bind(when("end_date")?)
        .bind(e.try_get::<Option<i64>, _>("queued_at")?)
        .bind(e.try_get::<Option<String>, _>("node")?)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::raw_sql(
        "DROP TABLE legacy_api_keys;
         DROP TABLE legacy_executions;
         DROP TABLE schema_version;",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::clock::Micros;
    use crate::exec::state::{EndReason, Status};
    use crate::store::{ApiKeys, Executions, Queue, SqliteStore};

    /// The schema and rows as the sandpit before numbered migrations wrote them.
    const LEGACY: &str = r#"
    CREATE TABLE schema_version (version BIGINT NOT NULL);
    INSERT INTO schema_version (version) VALUES (1);
    CREATE TABLE api_keys (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
        max_memory BIGINT, max_time DOUBLE PRECISION, max_executions BIGINT,
        created_date TEXT NOT NULL);
    CREATE TABLE executions (id TEXT PRIMARY KEY, owner TEXT NOT NULL,
        environment TEXT NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL, result TEXT,
        end_reason TEXT, message TEXT, init_date TEXT NOT NULL, start_date TEXT,
        end_date TEXT, queued_at BIGINT, node TEXT);
    CREATE INDEX executions_queue ON executions (status, queued_at);
    CREATE INDEX executions_owner ON executions (owner, init_date);
    INSERT INTO api_keys VALUES ('grader', 'abc', 67108864, 2.0, 1,
        '2026-08-20T10:00:00.000001Z');
    INSERT INTO executions VALUES ('exec_done', 'key:grader', 'busybox', 'ended',
        '{"command":["sh","-c","echo hi"],"limits":{"memory_bytes":67108864,"cpu_time_s":2.0,"wall_time_s":2.0,"pids":64,"output_bytes":16777216},"outputs":["out.txt"]}',
        '{"end_reason":"normal","exit_code":0,"signal":null,"signal_name":null,"timeout":null,"cpu_time_s":0.01,"user_time_s":0.0,"system_time_s":0.01,"wall_time_s":0.02,"peak_memory_bytes":1000,"stdout_bytes":3,"stderr_bytes":0,"stdout_truncated":false,"stderr_truncated":false,"oom_kills":0,"pids_limit_hit":false,"seccomp_violations":[],"cgroup_version":1,"message":null,"outputs":{}}',
        'normal', NULL, '2026-08-20T10:00:01.000000Z', '2026-08-20T10:00:02.500000Z',
        '2026-08-20T10:00:03.000000Z', 1787220001500000, 'local');
    INSERT INTO executions VALUES ('exec_queued', 'master', 'busybox', 'queued',
        '{"command":["true"],"limits":{"memory_bytes":1,"cpu_time_s":1.0,"wall_time_s":1.0,"pids":1,"output_bytes":1},"outputs":[]}',
        NULL, NULL, NULL, '2026-08-20T11:00:00.000000Z', NULL, NULL, 1787223600000000, NULL);
    "#;

    #[tokio::test]
    async fn a_database_of_the_previous_schema_opens_and_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sandpit.db");
        {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("create");
            sqlx::raw_sql(LEGACY)
                .execute(&pool)
                .await
                .expect("legacy schema");
            pool.close().await;
        }
        for _ in 0..2 {
            // Upgraded once; the second open finds nothing to do.
            let store = SqliteStore::open(&path).await.expect("open");
            let keys = store.list_api_keys().await.expect("keys");
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].quota.max_memory, Some(64 << 20));
            // Executions belong to the key's id now, not to its name.
            assert_eq!(
                keys[0].id,
                format!("legacy_grader_{}", keys[0].created_at.0)
            );
            assert_eq!(
                keys[0].created_at,
                Micros::parse_rfc3339("2026-08-20T10:00:00.000001Z").unwrap()
            );
            let done = store
                .get_execution("exec_done")
                .await
                .expect("get")
                .expect("row");
            assert_eq!(done.status, Status::Ended);
            assert_eq!(done.owner, format!("key:{}", keys[0].id));
            assert_eq!(done.end_reason, Some(EndReason::Normal));
            assert_eq!(done.request.programs()[0].outputs, ["out.txt"]);
            assert_eq!(
                done.result
                    .as_ref()
                    .and_then(|r| r.program(0))
                    .map(|r| r.stdout_bytes),
                Some(3)
            );
            assert_eq!(
                done.started_at.map(Micros::to_rfc3339).as_deref(),
                Some("2026-08-20T10:00:02.500000Z")
            );
            let (page, total) = store.list_executions(None, 10, 0).await.expect("list");
            assert_eq!(total, 2);
            assert_eq!(page[0].id, "exec_queued", "newest first");
            assert_eq!(store.count_active("master").await.expect("count"), 1);
            store.close().await;
        }
    }
}
