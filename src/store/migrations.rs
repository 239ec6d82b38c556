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
        name: "key_ids_quotas_storage",
        sql: include_str!("migrations/0003_key_ids_quotas_storage.sql"),
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
