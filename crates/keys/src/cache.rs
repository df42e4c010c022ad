//! The data-key cache: unwrapped data keys kept in memory for a bounded time and number of
//! uses, so a busy dialog does not call the key store (an HSM or KMS, a network hop away)
//! for every message. The idea is S3 Bucket Keys' and the AWS Encryption SDK's caching
//! materials manager: reuse a plaintext data key for at most `ttl` and `max_uses`, then ask
//! the key store again.
//!
//! Bounds: an entry is dropped when it is older than `ttl`, when it has served `max_uses`
//! lookups, or (oldest first) when the cache holds `capacity` entries. `ttl = 0` turns the
//! cache off. A key destroyed on this node leaves the cache at once; on another node it
//! stays usable from that node's cache for at most `ttl` (the cryptographic erase itself
//! is immediate in the database: nothing new can load the key).
//!
//! Counters ([`CacheMetrics`]) are Prometheus counters, registered by the API's `/metrics`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::DataKey;

/// How long and how often a cached data key may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Longest time a key stays cached; zero turns the cache off.
    pub ttl: Duration,
    /// Lookups a cached key may serve before it is loaded again.
    pub max_uses: u64,
    /// Most keys held at once.
    pub capacity: usize,
}

impl CacheSettings {
    /// 5 minutes, 100,000 uses, 10,000 keys.
    pub const DEFAULT: CacheSettings =
        CacheSettings { ttl: Duration::from_secs(300), max_uses: 100_000, capacity: 10_000 };
    /// No caching: every lookup reads the wrapped key and calls the key store.
    pub const OFF: CacheSettings = CacheSettings { ttl: Duration::ZERO, max_uses: 0, capacity: 0 };

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_uses > 0 && self.capacity > 0
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The key-store operation a call was for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStoreOp {
    /// `generate`, `wrap` or `unwrap`.
    pub op: &'static str,
}

/// Counters of the cache and of calls to the key store. Cheap to clone (shared counters).
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
    pub key_store_calls: Family<KeyStoreOp, Counter>,
}

impl CacheMetrics {
    /// Registers the counters (names get the registry's prefix, e.g. `ward_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("data_key_cache_hits", "Data-key lookups answered from the cache", self.hits.clone());
        registry.register(
            "data_key_cache_misses",
            "Data-key lookups that had to unwrap the key with the key store",
            self.misses.clone(),
        );
        registry.register(
            "data_key_cache_evictions",
            "Cached data keys dropped for age, uses or capacity",
            self.evictions.clone(),
        );
        registry.register(
            "key_store_calls",
            "Calls to the master-key store (local keyring, HSM or KMS), by operation",
            self.key_store_calls.clone(),
        );
    }

    pub(crate) fn key_store_call(&self, op: &'static str) {
        self.key_store_calls.get_or_create(&KeyStoreOp { op }).inc();
    }
}

struct Entry {
    key: DataKey,
    scope: String,
    loaded: Instant,
    uses: u64,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Uuid, Entry>,
    by_scope: HashMap<String, Uuid>,
    /// Keys destroyed on this node, kept for one `ttl` so that a lookup racing the erase
    /// (it read the wrapped key before the erase committed) cannot cache it again.
    destroyed: HashMap<Uuid, Instant>,
}

impl Inner {
    fn remove(&mut self, id: Uuid) -> bool {
        match self.by_id.remove(&id) {
            Some(entry) => {
                if self.by_scope.get(&entry.scope) == Some(&id) {
                    self.by_scope.remove(&entry.scope);
                }
                true
            }
            None => false,
        }
    }
}

/// The cache itself; see the module docs.
pub struct KeyCache {
    settings: CacheSettings,
    inner: Mutex<Inner>,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl KeyCache {
    pub fn new(settings: CacheSettings) -> Self {
        Self { settings, inner: Mutex::default(), metrics: CacheMetrics::default() }
    }

    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached key with this id, counting one use.
    pub fn get(&self, id: Uuid) -> Option<DataKey> {
        if !self.settings.enabled() {
            self.metrics.misses.inc();
            return None;
        }
        let mut inner = self.lock();
        let found = self.take_use(&mut inner, id);
        drop(inner);
        match &found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        };
        found
    }

    /// The cached key of this scope and its id, counting one use.
    pub fn get_scope(&self, scope: &str) -> Option<(Uuid, DataKey)> {
        if !self.settings.enabled() {
            self.metrics.misses.inc();
            return None;
        }
        let mut inner = self.lock();
        let found = inner.by_scope.get(scope).copied().and_then(|id| self.take_use(&mut inner, id).map(|k| (id, k)));
        drop(inner);
        match &found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        };
        found
    }

    fn take_use(&self, inner: &mut Inner, id: Uuid) -> Option<DataKey> {
        let entry = inner.by_id.get_mut(&id)?;
        if entry.loaded.elapsed() >= self.settings.ttl || entry.uses >= self.settings.max_uses {
            inner.remove(id);
            self.metrics.evictions.inc();
            return None;
        }
        entry.uses += 1;
        Some(entry.key.clone())
    }

    /// Caches a key just unwrapped (or made) for `scope`; the load counts as its first use.
    pub fn put(&self, id: Uuid, scope: &str, key: &DataKey) {
        if !self.settings.enabled() {
            return;
        }
        let mut inner = self.lock();
        let ttl = self.settings.ttl;
        inner.destroyed.retain(|_, at| at.elapsed() < ttl);
        if inner.destroyed.contains_key(&id) {
            return;
        }
        if !inner.by_id.contains_key(&id) && inner.by_id.len() >= self.settings.capacity {
            let stale: Vec<Uuid> =
                inner.by_id.iter().filter(|(_, e)| e.loaded.elapsed() >= ttl).map(|(id, _)| *id).collect();
            for old in stale {
                inner.remove(old);
                self.metrics.evictions.inc();
            }
            if inner.by_id.len() >= self.settings.capacity
                && let Some(oldest) = inner.by_id.iter().min_by_key(|(_, e)| e.loaded).map(|(id, _)| *id)
            {
                inner.remove(oldest);
                self.metrics.evictions.inc();
            }
        }
        inner.by_scope.insert(scope.to_string(), id);
        inner.by_id.insert(id, Entry { key: key.clone(), scope: scope.to_string(), loaded: Instant::now(), uses: 1 });
    }

    /// Drops a destroyed key and refuses to cache it again for one `ttl`.
    pub fn forget(&self, id: Uuid) {
        let mut inner = self.lock();
        inner.remove(id);
        if self.settings.enabled() {
            inner.destroyed.insert(id, Instant::now());
        }
    }

    /// How many keys are cached now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ttl_ms: u64, max_uses: u64, capacity: usize) -> CacheSettings {
        CacheSettings { ttl: Duration::from_millis(ttl_ms), max_uses, capacity }
    }

    #[test]
    fn hits_by_id_and_scope_until_the_use_limit() {
        let cache = KeyCache::new(settings(60_000, 3, 10));
        let (id, key) = (Uuid::now_v7(), DataKey::generate());
        assert!(cache.get(id).is_none());
        cache.put(id, "dialog/a", &key);
        assert_eq!(cache.get(id).expect("hit").expose(), key.expose());
        let (found, same) = cache.get_scope("dialog/a").expect("hit by scope");
        assert_eq!((found, same.expose()), (id, key.expose()));
        assert!(cache.get(id).is_none(), "the put and two hits are its three uses");
        assert!(cache.get_scope("dialog/a").is_none(), "gone by scope too");
        assert_eq!((cache.metrics.hits.get(), cache.metrics.misses.get(), cache.metrics.evictions.get()), (2, 3, 1));
    }

    #[test]
    fn entries_expire_with_age() {
        let cache = KeyCache::new(settings(30, 1_000, 10));
        let id = Uuid::now_v7();
        cache.put(id, "dialog/a", &DataKey::generate());
        assert!(cache.get(id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(id).is_none(), "older than the ttl");
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_drops_the_oldest() {
        let cache = KeyCache::new(settings(60_000, 1_000, 2));
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for (i, id) in ids.iter().enumerate() {
            cache.put(*id, &format!("dialog/{i}"), &DataKey::generate());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(ids[0]).is_none(), "the oldest went");
        assert!(cache.get(ids[1]).is_some() && cache.get(ids[2]).is_some());
    }

    #[test]
    fn off_caches_nothing_and_forget_drops_at_once() {
        let off = KeyCache::new(CacheSettings::OFF);
        let id = Uuid::now_v7();
        off.put(id, "dialog/a", &DataKey::generate());
        assert!(off.get(id).is_none() && off.is_empty());
        let on = KeyCache::new(CacheSettings::DEFAULT);
        on.put(id, "dialog/a", &DataKey::generate());
        on.forget(id);
        assert!(on.get(id).is_none() && on.get_scope("dialog/a").is_none());
        on.put(id, "dialog/a", &DataKey::generate());
        assert!(on.get(id).is_none(), "a lookup that raced the erase does not bring the key back");
    }
}
