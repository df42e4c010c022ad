//! The embedded engine: one SQLite file in the data dir.
//!
//! WAL journal (readers never block the writer, and the CLI can write while the server
//! runs), `synchronous = FULL` (a commit is on disk before it is acknowledged), a busy
//! timeout so that concurrent writers wait instead of failing, foreign keys on, and
//! `secure_delete` (deleted records are overwritten with zeros, not left in free pages).

use std::fs::File;
use std::path::Path;
use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use std::sync::Arc;

use crate::common::impl_common_stores;
use crate::group_commit::{GroupWriter, SqliteTx};
use crate::{Backend, ConnectOptions, PoolStats, Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    max: u32,
    /// Write transactions, group-committed (see [`crate::group_commit`]).
    writer: Arc<GroupWriter<sqlx::Sqlite>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies pending migrations.
    pub async fn open(path: &Path, options: &ConnectOptions) -> Result<Self> {
        // Creating the file, switching it to WAL (which needs an exclusive lock and does not
        // wait on the busy timeout) and migrating all happen under one file lock, so a
        // server and a CLI command (or two servers) opening the same file at once never
        // trip over each other.
        let lock = lock_file(path).await?;
        let connect = SqliteConnectOptions::from_str("sqlite://")
            .map_err(StoreError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.acquire_timeout)
            .foreign_keys(true)
            // Deleted content is overwritten with zeros, not left in free pages.
            .pragma("secure_delete", "ON");
        // One connection may hold the open write batch; readers need at least one more.
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        drop(lock); // releases the lock
        let writer = GroupWriter::new(pool.clone());
        Ok(Self { pool, max: options.max_connections.max(2), writer })
    }
}

/// Takes an exclusive lock on `<db>.migrate.lock`, waiting for another holder.
async fn lock_file(db: &Path) -> Result<File> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".migrate.lock");
    let lock = File::create(&lock_path).map_err(|e| StoreError::Migrate(format!("lock file: {e}")))?;
    tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))?
        .map_err(|e| StoreError::Migrate(format!("lock file: {e}")))
}

impl_common_stores!(SqliteStore, SqliteTx, crate::rows::sql::AUDIT_HEAD);
crate::credentials::impl_credential_stores!(SqliteStore, SqliteTx);
crate::messaging::impl_messaging_stores!(SqliteStore, SqliteTx);
crate::access::impl_access_stores!(SqliteStore, SqliteTx);
crate::files::impl_file_stores!(SqliteStore, SqliteTx);
crate::leases::impl_lease_tx!(SqliteTx);

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.max,
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Box<dyn crate::StoreTx>> {
        Ok(Box::new(self.writer.begin().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_connection_overwrites_deleted_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = ConnectOptions {
            target: crate::Target::Sqlite(dir.path().join("ward.db")),
            max_connections: 3,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        let store = SqliteStore::open(&dir.path().join("ward.db"), &options).await.expect("open");
        for _ in 0..3 {
            let on: i64 = sqlx::query_scalar("PRAGMA secure_delete").fetch_one(&store.pool).await.expect("pragma");
            assert_eq!(on, 1, "secure_delete is on");
        }
    }

    #[tokio::test]
    async fn edit_history_is_kept_then_erased() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ward.db");
        let options = ConnectOptions {
            target: crate::Target::Sqlite(path.clone()),
            max_connections: 3,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        let store = SqliteStore::open(&path, &options).await.expect("open");
        let pool = store.pool.clone();
        crate::conformance::edit_history_is_kept_then_erased(&store, |id| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar(EDITS).bind(id.to_string()).fetch_all(&pool).await.expect("read edit history")
            }
        })
        .await;
    }

    const EDITS: &str = "SELECT body_sealed FROM message_edits WHERE message_id = $1 ORDER BY edited_at";
}
