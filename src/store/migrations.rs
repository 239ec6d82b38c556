//! The schema, as numbered SQL files shared by every back end: portable SQL (`BIGINT`,
//! `DOUBLE PRECISION`, `TEXT`, plain indexes) that SQLite and PostgreSQL both accept. Each is
//! applied once, in order, and recorded in `schema_migrations`.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "api_keys_and_executions",
        sql: include_str!("migrations/0001_api_keys_and_executions.sql"),
    },
    Migration {
        version: 2,
        name: "callbacks",
        sql: include_str!("migrations/0002_callbacks.sql"),
    },
    Migration {
        version: 3,
        name: "projects_and_submissions",
        sql: include_str!("migrations/0003_projects_and_submissions.sql"),
    },
    Migration {
        version: 4,
        name: "files",
        sql: include_str!("migrations/0004_files.sql"),
    },
    Migration {
        version: 5,
        name: "audit_log",
        sql: include_str!("migrations/0005_audit_log.sql"),
    },
    Migration {
        version: 6,
        name: "key_ids_quotas_storage",
        sql: include_str!("migrations/0006_key_ids_quotas_storage.sql"),
    },
];

/// Creates the bookkeeping table (portable SQL too).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Migration 6 gives keys ids: whatever a key owned by its name (executions, submissions,
    /// projects, kept files) becomes its id's; what an earlier key of that name owned belongs to no key;
    /// the right to manage projects stays.
    #[tokio::test]
    async fn key_ids_take_over_what_keys_owned_by_name() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("open");
        let mut tx = pool.begin().await.expect("tx");
        super::super::sqlite::apply_migrations(&mut tx, 4)
            .await
            .expect("up to 4");
        sqlx::raw_sql(
            "INSERT INTO api_keys (name, token_hash, manage_projects, created_at)
                 VALUES ('alice', 'h1', 1, 100), ('bob', 'h2', 0, 500);
             INSERT INTO executions (id, owner, environment, status, request, created_at)
                 VALUES ('e1', 'key:alice', 'busybox', 'ended', '{}', 200),
                        ('e2', 'key:bob', 'busybox', 'ended', '{}', 200),
                        ('e3', 'master', 'busybox', 'ended', '{}', 200);
             INSERT INTO projects (id, owner, revision, definition, created_at, updated_at)
                 VALUES ('p1', 'key:alice', 1, '{}', 200, 200);
             INSERT INTO submissions (id, owner, project_id, project_revision, scenario,
                                      status, attempts, created_at)
                 VALUES ('s1', 'key:alice', 'p1', 1, 'default', 15, 0, 300),
                        ('s2', 'key:bob', 'p1', 1, 'default', 15, 0, 300),
                        ('s3', 'master', 'p1', 1, 'default', 15, 0, 300);
             INSERT INTO files (id, owner, sha256, size, name, created_at, expires_at)
                 VALUES ('f1', 'key:alice', 'aa', 1, 'a.out', 200, 9000),
                        ('f2', 'key:bob', 'aa', 1, 'a.out', 200, 9000),
                        ('f3', 'master', 'aa', 1, 'a.out', 200, 9000);",
        )
        .execute(&mut *tx)
        .await
        .expect("rows of schema 4");
        super::super::sqlite::apply_migrations(&mut tx, i64::MAX)
            .await
            .expect("the rest");
        let keys: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT name, id, manage_projects FROM api_keys ORDER BY name")
                .fetch_all(&mut *tx)
                .await
                .expect("keys");
        assert_eq!(keys[0].2, 1, "alice still manages projects");
        assert_eq!(keys[1].2, 0);
        let alice = format!("key:{}", keys[0].1);
        for (table, id, want) in [
            ("executions", "e1", alice.as_str()),
            // Made before this bob existed: an earlier bob's, deleted since.
            ("executions", "e2", "deleted-key"),
            ("executions", "e3", "master"),
            ("projects", "p1", alice.as_str()),
            ("submissions", "s1", alice.as_str()),
            ("submissions", "s2", "deleted-key"),
            ("submissions", "s3", "master"),
            ("files", "f1", alice.as_str()),
            ("files", "f2", "deleted-key"),
            ("files", "f3", "master"),
        ] {
            let sql = format!("SELECT owner FROM {table} WHERE id = ?");
            let got: String = sqlx::query_scalar(&sql)
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .expect(id);
            assert_eq!(got, want, "{table} {id}");
        }
    }

    #[test]
    fn numbered_in_order_once_each() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
            // Portable SQL only: none of SQLite's or PostgreSQL's own words.
            for word in [
                "AUTOINCREMENT",
                "SERIAL",
                "PRAGMA",
                "WITHOUT ROWID",
                "JSONB",
            ] {
                assert!(!m.sql.to_uppercase().contains(word), "{}: {word}", m.name);
            }
        }
    }
}
