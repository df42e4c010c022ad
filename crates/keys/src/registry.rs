//! Data keys by scope: made on first use, stored only wrapped by the key store's active
//! master version, unwrapped on demand.
//!
//! A scope names what a key encrypts (`user/<id>` for a user's MFA secrets and profile
//! fields, `system/password-pepper`, later `dialog/<id>` and `file/<id>`); each scope has
//! one key. The wrapping AAD binds the wrapped key to its scope and id, so a wrapped key
//! copied to another row does not unwrap.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;
use ward_storage::{DataKeyRecord, Store, StoreError, StoreTx};

use crate::{DataKey, KeyError, KeyStore, WrappedKey};

/// The data-key registry. Cheap to clone.
#[derive(Clone)]
pub struct DataKeys {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys").field("backend", &self.keys.backend()).finish_non_exhaustive()
    }
}

impl DataKeys {
    pub fn new(store: Arc<dyn Store>, keys: Arc<dyn KeyStore>) -> Self {
        Self { store, keys }
    }

    pub fn key_store(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    fn aad(scope: &str, id: Uuid) -> Vec<u8> {
        format!("ward:data-key|{scope}|{id}").into_bytes()
    }

    async fn unwrap_record(&self, r: &DataKeyRecord) -> Result<DataKey, KeyError> {
        if r.destroyed_at.is_some() {
            return Err(KeyError::Destroyed(r.id.to_string()));
        }
        let version = u32::try_from(r.key_version).map_err(|_| KeyError::UnknownVersion(u32::MAX))?;
        let wrapped = WrappedKey { version, ciphertext: r.wrapped.clone() };
        self.keys.unwrap(&wrapped, &Self::aad(&r.scope, r.id)).await
    }

    /// The key of `scope`, if it has one.
    pub async fn find(&self, scope: &str) -> Result<Option<(Uuid, DataKey)>, KeyError> {
        match self.store.data_key_by_scope(scope).await? {
            Some(r) => Ok(Some((r.id, self.unwrap_record(&r).await?))),
            None => Ok(None),
        }
    }

    /// The key with this id (as recorded beside the data it encrypts).
    pub async fn by_id(&self, id: Uuid) -> Result<DataKey, KeyError> {
        let r = self.store.data_key_by_id(id).await?.ok_or_else(|| KeyError::Destroyed(id.to_string()))?;
        self.unwrap_record(&r).await
    }

    /// The key of `scope`, made and stored inside `tx` if it has none yet (so it commits
    /// with the data it is made for).
    pub async fn get_or_create(
        &self,
        tx: &mut dyn StoreTx,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<(Uuid, DataKey), KeyError> {
        if let Some(found) = self.find(scope).await? {
            return Ok(found);
        }
        let id = Uuid::now_v7();
        let key = DataKey::generate();
        let wrapped = self.keys.wrap(&key, &Self::aad(scope, id)).await?;
        let record = DataKeyRecord {
            id,
            scope: scope.to_string(),
            key_version: i64::from(wrapped.version),
            wrapped: wrapped.ciphertext,
            created_at: now,
            destroyed_at: None,
        };
        tx.insert_data_key(&record).await?;
        Ok((id, key))
    }

    /// [`DataKeys::get_or_create`] in a transaction of its own. When another process made
    /// the key at the same moment, that key is returned.
    pub async fn get_or_create_alone(&self, scope: &str, now: OffsetDateTime) -> Result<(Uuid, DataKey), KeyError> {
        let mut tx = self.store.begin().await?;
        let made = self.get_or_create(&mut *tx, scope, now).await;
        let committed = match made {
            Ok(found) => tx.commit().await.map(|()| found),
            Err(e) => return Err(e),
        };
        match committed {
            Ok(found) => Ok(found),
            Err(StoreError::Conflict(_)) => self.find(scope).await?.ok_or_else(|| KeyError::Destroyed(scope.into())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalKeyStore;
    use ward_storage::{ConnectOptions, Target};

    async fn registry() -> (tempfile::TempDir, DataKeys, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = ConnectOptions {
            target: Target::Sqlite(dir.path().join("ward.db")),
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        let store = ward_storage::open(&options).await.expect("open");
        (dir, DataKeys::new(store.clone(), Arc::new(LocalKeyStore::ephemeral())), store)
    }

    #[tokio::test]
    async fn one_key_per_scope_stored_wrapped_and_bound_to_its_row() {
        let (_dir, keys, store) = registry().await;
        let now = OffsetDateTime::now_utc();
        let (id, key) = keys.get_or_create_alone("user/a", now).await.expect("create");
        let (again, same) = keys.get_or_create_alone("user/a", now).await.expect("again");
        assert_eq!((id, key.expose()), (again, same.expose()), "one key per scope");
        assert_eq!(keys.by_id(id).await.expect("by id").expose(), key.expose());
        let record = store.data_key_by_id(id).await.expect("read").expect("stored");
        assert!(!record.wrapped.windows(32).any(|w| w == key.expose()), "stored only wrapped");

        // The wrapped bytes of one scope copied under another scope's row do not unwrap.
        let (other_id, _) = keys.get_or_create_alone("user/b", now).await.expect("create b");
        let mut moved = store.data_key_by_id(other_id).await.expect("read").expect("stored");
        moved.wrapped = record.wrapped.clone();
        assert!(matches!(keys.unwrap_record(&moved).await, Err(KeyError::Integrity)), "moved wrapped key refused");
        moved.destroyed_at = Some(now);
        assert!(matches!(keys.unwrap_record(&moved).await, Err(KeyError::Destroyed(_))));
    }
}
