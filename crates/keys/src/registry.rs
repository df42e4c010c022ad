//! Data keys by scope: made on first use, stored only wrapped by the key store's active
//! master version, unwrapped on demand.
//!
//! A scope names what a key encrypts (`user/<id>` for a user's MFA secrets and profile
//! fields, `system/password-pepper`, later `dialog/<id>` and `file/<id>`); each scope has
//! one key. The wrapping AAD binds the wrapped key to its scope and id, so a wrapped key
//! copied to another row does not unwrap.
//!
//! Unwrapped keys are kept in a [`KeyCache`] bounded in age and uses, so a busy scope does
//! not call the key store per record.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{AuditLog, Context, Outcome};
use ward_storage::{DataKeyRecord, Store, StoreError, StoreTx};

use crate::cache::{CacheMetrics, CacheSettings, KeyCache};
use crate::{DataKey, KeyError, KeyStore, WrappedKey};

/// The scope of the data key whose bytes are the password pepper.
pub const PEPPER_SCOPE: &str = "system/password-pepper";
/// The scope of the data key that seals the audit signing key file.
pub const AUDIT_SIGNING_SCOPE: &str = "system/audit-signing-key";

/// The data-key registry. Cheap to clone.
#[derive(Clone)]
pub struct DataKeys {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys").field("backend", &self.keys.backend()).finish_non_exhaustive()
    }
}

impl DataKeys {
    /// A registry with the default cache ([`CacheSettings::DEFAULT`]).
    pub fn new(store: Arc<dyn Store>, keys: Arc<dyn KeyStore>) -> Self {
        Self::with_cache(store, keys, CacheSettings::DEFAULT)
    }

    /// A registry whose cache has these bounds ([`CacheSettings::OFF`] for none).
    pub fn with_cache(store: Arc<dyn Store>, keys: Arc<dyn KeyStore>, cache: CacheSettings) -> Self {
        Self { store, keys, cache: Arc::new(KeyCache::new(cache)) }
    }

    /// The cache's and the key store's counters, for `/metrics`.
    pub fn metrics(&self) -> &CacheMetrics {
        self.cache.metrics()
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
        self.cache.metrics().key_store_call("unwrap");
        self.keys.unwrap(&wrapped, &Self::aad(&r.scope, r.id)).await
    }

    /// Unwraps a stored key and caches it.
    async fn load(&self, r: &DataKeyRecord) -> Result<DataKey, KeyError> {
        let key = self.unwrap_record(r).await?;
        self.cache.put(r.id, &r.scope, &key);
        Ok(key)
    }

    /// The key of `scope`, if it has one.
    pub async fn find(&self, scope: &str) -> Result<Option<(Uuid, DataKey)>, KeyError> {
        if let Some(found) = self.cache.get_scope(scope) {
            return Ok(Some(found));
        }
        match self.store.data_key_by_scope(scope).await? {
            Some(r) => Ok(Some((r.id, self.load(&r).await?))),
            None => Ok(None),
        }
    }

    /// The key another process made for `scope` at the same moment, once its commit is
    /// visible (a batch commit may take a few milliseconds).
    async fn made_elsewhere(&self, scope: &str) -> Result<(Uuid, DataKey), KeyError> {
        for _ in 0..50 {
            if let Some(found) = self.find(scope).await? {
                return Ok(found);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(KeyError::Keyring(format!("the data key of {scope} was made elsewhere but never became visible")))
    }

    /// Readiness: unwraps the pepper's data key through the key store itself, never from
    /// the cache, so an unreachable HSM or KMS shows in `/readyz`.
    pub async fn probe(&self) -> Result<(), KeyError> {
        let r = self
            .store
            .data_key_by_scope(PEPPER_SCOPE)
            .await?
            .ok_or_else(|| KeyError::Destroyed(PEPPER_SCOPE.into()))?;
        self.unwrap_record(&r).await.map(drop)
    }

    /// The key with this id (as recorded beside the data it encrypts).
    pub async fn by_id(&self, id: Uuid) -> Result<DataKey, KeyError> {
        if let Some(key) = self.cache.get(id) {
            return Ok(key);
        }
        let r = self.store.data_key_by_id(id).await?.ok_or_else(|| KeyError::Destroyed(id.to_string()))?;
        self.load(&r).await
    }

    /// The key of `scope`, made and stored inside `tx` if it has none yet (so it commits
    /// with the data it is made for). A key made here is not cached: the transaction may
    /// still roll back; the next lookup after the commit loads it.
    pub async fn get_or_create(
        &self,
        tx: &mut dyn StoreTx,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<(Uuid, DataKey), KeyError> {
        if let Some(found) = self.find(scope).await? {
            return Ok(found);
        }
        let (record, key) = self.prepare(scope, now).await?;
        tx.insert_data_key(&record).await?;
        Ok((record.id, key))
    }

    /// A new data key for a scope that has none yet (a new record's own scope, such as
    /// `dialog/<new id>`), generated and wrapped before any transaction opens, so that a
    /// slow HSM or KMS never holds the database's write lock. Store the record with
    /// `insert_data_key` in the transaction of the data it protects.
    pub async fn prepare(&self, scope: &str, now: OffsetDateTime) -> Result<(DataKeyRecord, DataKey), KeyError> {
        let id = Uuid::now_v7();
        self.cache.metrics().key_store_call("generate");
        let (key, wrapped) = self.keys.generate(&Self::aad(scope, id)).await?;
        let record = DataKeyRecord {
            id,
            scope: scope.to_string(),
            key_version: i64::from(wrapped.version),
            wrapped: wrapped.ciphertext,
            created_at: now,
            destroyed_at: None,
        };
        Ok((record, key))
    }

    /// [`DataKeys::get_or_create`] in a transaction of its own. When another process made
    /// the key at the same moment, that key is returned.
    pub async fn get_or_create_alone(&self, scope: &str, now: OffsetDateTime) -> Result<(Uuid, DataKey), KeyError> {
        let mut tx = self.store.begin().await?;
        let made = self.get_or_create(&mut *tx, scope, now).await;
        let committed = match made {
            Ok(found) => tx.commit().await.map(|()| found),
            // The insert itself met the other process's key (the conflict shows there, not
            // at commit).
            Err(KeyError::Store(StoreError::Conflict(_))) => {
                drop(tx);
                return self.made_elsewhere(scope).await;
            }
            Err(e) => return Err(e),
        };
        match committed {
            Ok(found) => Ok(found),
            Err(StoreError::Conflict(_)) => self.made_elsewhere(scope).await,
            Err(e) => Err(e.into()),
        }
    }
}

impl DataKeys {
    /// Cryptographic erase (NIST SP 800-88 Purge): destroys every stored copy of the data
    /// key inside `tx`, so everything sealed under it is unrecoverable. It counts as purge
    /// because that data was encrypted before its first write. The caller records the
    /// disposal in the same transaction. False if the key was unknown or already destroyed.
    /// The key leaves this node's cache at once (other nodes' caches within their ttl).
    pub async fn destroy(&self, tx: &mut dyn StoreTx, id: Uuid, now: OffsetDateTime) -> Result<bool, KeyError> {
        self.cache.forget(id);
        Ok(tx.destroy_data_key(id, now).await?)
    }
}

/// One master-key version and how many live data keys it still wraps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionStatus {
    #[serde(flatten)]
    pub info: crate::KeyVersionInfo,
    pub data_keys: i64,
}

/// What `ward keys status` and `GET /v1/admin/keys` show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    pub backend: &'static str,
    pub active_version: u32,
    pub versions: Vec<VersionStatus>,
    /// Live data keys still wrapped by an older version (the rewrap job's backlog).
    pub pending_rewrap: i64,
    pub warnings: Vec<String>,
}

/// The outcome of a rewrap run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// Keys another process rewrapped or destroyed meanwhile (nothing to do).
    pub skipped: u64,
}

/// Data keys rewrapped per transaction (each batch commits with its audit record).
const REWRAP_BATCH: i64 = 100;

impl DataKeys {
    /// Master-key versions, their states and how many data keys each still wraps.
    pub async fn status(&self) -> Result<KeyStatus, KeyError> {
        let versions = self.keys.versions().await?;
        let counts = self.store.data_key_counts().await?;
        let active = versions.iter().find(|v| v.state == crate::KeyState::Active).map(|v| v.version).unwrap_or(0);
        let count = |v: u32| counts.iter().find(|(k, _)| *k == i64::from(v)).map(|(_, n)| *n).unwrap_or(0);
        let pending_rewrap = counts.iter().filter(|(k, _)| *k < i64::from(active)).map(|(_, n)| n).sum();
        Ok(KeyStatus {
            backend: self.keys.backend(),
            active_version: active,
            versions: versions.into_iter().map(|info| VersionStatus { data_keys: count(info.version), info }).collect(),
            pending_rewrap,
            warnings: self.keys.warnings(),
        })
    }

    /// Makes a new master-key version (which wraps every new data key from now on) and
    /// records it. Existing data keys are rewrapped by [`DataKeys::rewrap`].
    pub async fn rotate(&self, audit: &AuditLog, ctx: &Context) -> Result<u32, KeyError> {
        // The record goes first: if the trail cannot be written, nothing happens.
        let version = {
            let before = self.keys.versions().await?.len();
            let event = ctx
                .event("keys.rotate", Outcome::Success)
                .resource("keys/master")
                .detail("backend", self.keys.backend())
                .detail("versions_before", before);
            let mut tx = self.store.begin().await?;
            audit.record(&mut *tx, &event).await.map_err(|e| KeyError::Audit(e.to_string()))?;
            let version = self.keys.rotate_in(&mut *tx).await?;
            tx.commit().await?;
            self.keys.refresh().await?;
            version
        };
        Ok(version)
    }

    /// Rewraps every live data key still wrapped by an older master version with the
    /// active one, in batches that each commit with an audit record. Resumable: it works
    /// from what the database says, so after a crash it picks up where it stopped. The
    /// data itself is never re-encrypted. `progress(done, total)` is called per batch.
    pub async fn rewrap(
        &self,
        audit: &AuditLog,
        ctx: &Context,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<RewrapReport, KeyError> {
        let status = self.status().await?;
        let active = status.active_version;
        let total = u64::try_from(status.pending_rewrap).unwrap_or(0);
        let mut report = RewrapReport::default();
        loop {
            let batch = self.store.data_keys_to_rewrap(i64::from(active), REWRAP_BATCH).await?;
            if batch.is_empty() {
                return Ok(report);
            }
            // Key-store calls first, so the write lock is held only for the updates.
            let mut rewrapped = Vec::with_capacity(batch.len());
            for record in &batch {
                let key = self.unwrap_record(record).await?;
                self.cache.metrics().key_store_call("wrap");
                let wrapped = self.keys.wrap(&key, &Self::aad(&record.scope, record.id)).await?;
                if wrapped.version <= u32::try_from(record.key_version).unwrap_or(u32::MAX) {
                    return Err(KeyError::Keyring("the active master version did not advance".into()));
                }
                rewrapped.push((record, wrapped));
            }
            let mut tx = self.store.begin().await?;
            let mut done = 0u64;
            for (record, wrapped) in rewrapped {
                let to = i64::from(wrapped.version);
                if tx.rewrap_data_key(record.id, record.key_version, to, &wrapped.ciphertext).await? {
                    done += 1;
                } else {
                    report.skipped += 1;
                }
            }
            let event = ctx
                .event("keys.rewrap", Outcome::Success)
                .resource("keys/data")
                .detail("to_version", active)
                .detail("data_keys", done);
            audit.record(&mut *tx, &event).await.map_err(|e| KeyError::Audit(e.to_string()))?;
            tx.commit().await?;
            report.rewrapped += done;
            progress(report.rewrapped + report.skipped, total.max(report.rewrapped + report.skipped));
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

    #[tokio::test]
    async fn rotation_then_rewrap_moves_every_key_to_the_new_version_and_keeps_its_bytes() {
        let (dir, keys, store) = registry().await;
        let audit = AuditLog::open(
            store.clone(),
            ward_audit::AuditSettings {
                checkpoint_every: 1000,
                checkpoint_interval: std::time::Duration::from_secs(60),
                key_file: dir.path().join("audit/signing.key"),
                checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
            },
        )
        .await
        .expect("audit");
        let now = OffsetDateTime::now_utc();
        let mut before = Vec::new();
        for i in 0..250 {
            let (id, key) = keys.get_or_create_alone(&format!("user/{i}"), now).await.expect("create");
            before.push((id, key.expose().to_vec()));
        }
        let ctx = Context::cli(None, now);
        assert_eq!(keys.rotate(&audit, &ctx).await.expect("rotate"), 2);
        let status = keys.status().await.expect("status");
        assert_eq!((status.active_version, status.pending_rewrap), (2, 250));
        let mut calls = 0;
        let report = keys.rewrap(&audit, &ctx, |_, _| calls += 1).await.expect("rewrap");
        assert_eq!((report.rewrapped, report.skipped, calls), (250, 0, 3), "three batches of at most 100");
        let status = keys.status().await.expect("status");
        assert_eq!(status.pending_rewrap, 0);
        assert_eq!(status.versions.iter().map(|v| v.data_keys).collect::<Vec<_>>(), vec![0, 250]);
        for (id, bytes) in before {
            assert_eq!(keys.by_id(id).await.expect("unwrap").expose().to_vec(), bytes, "same data key after rewrap");
        }
        let again = keys.rewrap(&audit, &ctx, |_, _| {}).await.expect("rewrap again");
        assert_eq!(again.rewrapped, 0, "nothing left: resumable and idempotent");
        let rows = store.audit_after(0, 100).await.expect("trail");
        assert_eq!(rows.iter().filter(|r| r.action == "keys.rotate").count(), 1);
        assert_eq!(rows.iter().filter(|r| r.action == "keys.rewrap").count(), 3);
    }

    #[tokio::test]
    async fn the_cache_spares_the_key_store_and_off_means_every_lookup_calls_it() {
        let (_dir, keys, store) = registry().await;
        let now = OffsetDateTime::now_utc();
        let (id, key) = keys.get_or_create_alone("dialog/busy", now).await.expect("create");
        let unwraps =
            |k: &DataKeys| k.metrics().key_store_calls.get_or_create(&crate::cache::KeyStoreOp { op: "unwrap" }).get();
        for _ in 0..50 {
            assert_eq!(keys.by_id(id).await.expect("by id").expose(), key.expose());
            assert_eq!(keys.find("dialog/busy").await.expect("find").expect("some").0, id);
        }
        assert_eq!(unwraps(&keys), 1, "one unwrap, then the cache");
        assert_eq!(keys.metrics().hits.get(), 99);
        keys.get_or_create_alone(PEPPER_SCOPE, now).await.expect("pepper");
        keys.find(PEPPER_SCOPE).await.expect("find").expect("cached now");
        let before = unwraps(&keys);
        keys.probe().await.expect("probe");
        assert_eq!(unwraps(&keys), before + 1, "the readiness probe always asks the key store");

        let off = DataKeys::with_cache(store.clone(), keys.key_store().clone(), CacheSettings::OFF);
        for _ in 0..10 {
            assert_eq!(off.by_id(id).await.expect("by id").expose(), key.expose());
        }
        assert_eq!(unwraps(&off), 10, "without the cache every lookup unwraps");

        // A destroyed key leaves the cache at once.
        let mut tx = store.begin().await.expect("begin");
        assert!(keys.destroy(&mut *tx, id, now).await.expect("destroy"));
        tx.commit().await.expect("commit");
        assert!(matches!(keys.by_id(id).await, Err(KeyError::Destroyed(_))));
    }

    #[tokio::test]
    async fn a_destroyed_key_is_gone_for_good() {
        let (_dir, keys, store) = registry().await;
        let now = OffsetDateTime::now_utc();
        let (id, key) = keys.get_or_create_alone("file/x", now).await.expect("create");
        let sealed = crate::seal(&key, b"aad", b"marker PHI").expect("seal");
        let mut tx = store.begin().await.expect("begin");
        assert!(keys.destroy(&mut *tx, id, now).await.expect("destroy"));
        assert!(!keys.destroy(&mut *tx, id, now).await.expect("again"), "once");
        tx.commit().await.expect("commit");
        drop(key);
        assert!(matches!(keys.by_id(id).await, Err(KeyError::Destroyed(_))));
        let record = store.data_key_by_id(id).await.expect("read").expect("row kept as a tombstone");
        assert!(record.wrapped.is_empty() && record.destroyed_at.is_some(), "no copy of the key remains");
        assert_eq!(keys.status().await.expect("status").versions[0].data_keys, 0, "not counted as live");
        assert!(!sealed.is_empty());
    }
}
