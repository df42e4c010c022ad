//! Leases: one node at a time runs a cluster-wide job (the scheduled master-key rotation
//! and rewrap, the file sweep). A lease row names its holder and when it lapses; the
//! holder renews it while it works and gives it up when done, and a holder that died
//! loses it when it lapses. Both engines share the SQL (stamped by [`impl_lease_tx!`]).

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use crate::{Result, Store};

pub(crate) mod sql {
    /// Taken when free, lapsed, or held by the same holder already (a renewal); a row
    /// held by another holder is left alone and no row is affected.
    pub const TAKE: &str = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at <= $3";
    pub const RELEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";
}

macro_rules! impl_lease_tx {
    ($tx:ty) => {
        #[async_trait::async_trait]
        impl $crate::LeaseTx for $tx {
            async fn take_lease(
                &mut self,
                name: &str,
                holder: &str,
                now: time::OffsetDateTime,
                until: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::leases::sql::TAKE)
                    .bind(name)
                    .bind(holder)
                    .bind($crate::rows::millis(now))
                    .bind($crate::rows::millis(until))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn release_lease(&mut self, name: &str, holder: &str) -> $crate::Result<bool> {
                let n = sqlx::query($crate::leases::sql::RELEASE)
                    .bind(name)
                    .bind(holder)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    };
}

pub(crate) use impl_lease_tx;

async fn take(store: &dyn Store, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
    let now = OffsetDateTime::now_utc();
    let mut tx = store.begin().await?;
    let taken = tx.take_lease(name, holder, now, now + ttl).await?;
    tx.commit().await?;
    Ok(taken)
}

/// Runs `work` while holding lease `name` as `holder`, renewing it every third of `ttl`,
/// and gives it up afterwards; `None` (without running `work`) when another holder has it.
/// A holder that dies leaves the lease to lapse after at most `ttl`.
pub async fn hold<T>(
    store: &dyn Store,
    name: &str,
    holder: &str,
    ttl: Duration,
    work: impl Future<Output = T>,
) -> Result<Option<T>> {
    if !take(store, name, holder, ttl).await? {
        return Ok(None);
    }
    let renew = async {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match take(store, name, holder, ttl).await {
                Ok(true) => {}
                // Only after a pause longer than the lease: the job may now run twice.
                Ok(false) => tracing::error!(lease = name, "a lease lapsed and was taken by another node mid-job"),
                Err(e) => tracing::warn!(lease = name, error = %e, "cannot renew a lease; retrying"),
            }
        }
    };
    let out = tokio::select! {
        out = work => out,
        () = renew => unreachable!("the renewal loop never ends"),
    };
    let mut tx = store.begin().await?;
    tx.release_lease(name, holder).await?;
    tx.commit().await?;
    Ok(Some(out))
}
