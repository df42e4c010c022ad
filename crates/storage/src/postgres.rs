//! The shared engine: PostgreSQL, for several Ward nodes on one database.
//!
//! Migrations run under sqlx's session advisory lock, so nodes starting together apply
//! each migration exactly once and the others wait for it.

use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use std::sync::Arc;

use crate::common::impl_common_stores;
use crate::group_commit::{GroupWriter, PgTx};
use crate::{Backend, ConnectOptions, PoolStats, Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PgStore {
    pool: PgPool,
    max: u32,
    /// Write transactions, group-committed per node (see [`crate::group_commit`]).
    writer: Arc<GroupWriter<sqlx::Postgres>>,
}

impl PgStore {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Unavailable("the PostgreSQL URL cannot be parsed".into()))?
            .application_name("ward");
        // One connection may hold the open write batch; readers need at least one more.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        let writer = GroupWriter::new(pool.clone());
        Ok(Self { pool, max: options.max_connections.max(2), writer })
    }
}

impl_common_stores!(PgStore, PgTx, "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE");
crate::credentials::impl_credential_stores!(PgStore, PgTx);
crate::messaging::impl_messaging_stores!(PgStore, PgTx);
crate::access::impl_access_stores!(PgStore, PgTx);
crate::files::impl_file_stores!(PgStore, PgTx);
crate::leases::impl_lease_tx!(PgTx);

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
    use crate::testing::TempPostgres;

    #[tokio::test]
    async fn edit_history_is_kept_then_erased() {
        let db = TempPostgres::create().await.expect("create test database");
        let options = ConnectOptions {
            target: crate::Target::Postgres(db.url.clone()),
            max_connections: 3,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        let store = PgStore::open(&db.url, &options).await.expect("open");
        let pool = store.pool.clone();
        crate::conformance::edit_history_is_kept_then_erased(&store, |id| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar(EDITS).bind(id.to_string()).fetch_all(&pool).await.expect("read edit history")
            }
        })
        .await;
        store.close().await;
    }

    const EDITS: &str = "SELECT body_sealed FROM message_edits WHERE message_id = $1 ORDER BY edited_at";
}
