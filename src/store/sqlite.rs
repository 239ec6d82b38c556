//! The embedded store: one SQLite file in the data directory (WAL, so readers never wait for
//! the writer). The SQL is what PostgreSQL also speaks; a PostgreSQL store differs in its
//! placeholders and in how it claims work.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::migrations::{self, MIGRATIONS};
use super::{Result, StoreError};
use crate::clock::Micros;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

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
        // Two: a writer and a reader at once is all WAL gives, and each connection is a
        // worker thread and a page cache more.
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            // sqlx pings a connection before lending it, a round trip to its worker thread
            // for each statement; a connection to a file in this process cannot go stale.
            .test_before_acquire(false)
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
pub(super) fn count(r: &SqliteRow, col: &str) -> Result<Option<u64>> {
    r.try_get::<Option<i64>, _>(col)?
        .map(|v| u64::try_from(v).map_err(|_| corrupt(format!("{col} = {v}"))))
        .transpose()
}

/// A count or size to store: refused (never wrapped) above what `BIGINT` holds.
pub(super) fn bigint(v: Option<u64>) -> Result<Option<i64>> {
    v.map(|v| i64::try_from(v).map_err(|_| StoreError::Misuse("a value above 2^63-1")))
        .transpose()
}
pub(super) fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("serialising: {e}")))
}
