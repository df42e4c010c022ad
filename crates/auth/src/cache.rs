//! The session cache: validated sessions by token digest, so that a request does not cost
//! two database reads.
//!
//! Everything that ends or changes a session or its user (logout, revocation, password
//! change, disable, role change, MFA changes, expiry) drops the affected entries at once on
//! the node that made the change, and writes an entry to the session-change feed in the
//! database in the same transaction. Every node follows that feed
//! ([`crate::Accounts::follow_session_changes`], every 250 ms), so a change made on another
//! node or by a CLI command takes effect within about a quarter of a second. An entry also
//! lives at most `ttl` (`[session] cache_ttl_ms`, default 30 s), a safety net should the
//! follower stall. Idle and absolute limits are checked against the clock on every request;
//! a cached session that looks expired is read again from the database first (another node
//! may have seen activity), so caching never ends a session early nor extends it.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;
use ward_storage::SessionRecord;

use crate::User;

/// Entries kept at most; beyond it, stale entries are dropped, then everything.
const CAPACITY: usize = 100_000;

struct Entry {
    session: SessionRecord,
    user: User,
    at: Instant,
}

pub(crate) struct SessionCache {
    ttl: Duration,
    map: RwLock<HashMap<String, Entry>>,
    /// Bumped by every invalidation. A reader notes it before reading the database and
    /// stores its result only if no invalidation happened meanwhile, so a logout racing
    /// a request can never leave a stale entry behind.
    epoch: AtomicU64,
}

impl SessionCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, map: RwLock::new(HashMap::new()), epoch: AtomicU64::new(0) }
    }

    /// The cached session and user for a token digest, if fresh.
    pub(crate) fn get(&self, token_hash: &str) -> Option<(SessionRecord, User)> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let e = map.get(token_hash)?;
        (e.at.elapsed() < self.ttl).then(|| (e.session.clone(), e.user.clone()))
    }

    /// The invalidation epoch, to pass to [`SessionCache::put`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Stores a validated session read at `epoch`, unless an invalidation came since.
    pub(crate) fn put(&self, epoch: u64, session: &SessionRecord, user: &User) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if map.len() >= CAPACITY {
            let ttl = self.ttl;
            map.retain(|_, e| e.at.elapsed() < ttl);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        let entry = Entry { session: session.clone(), user: user.clone(), at: Instant::now() };
        map.insert(session.token_hash.clone(), entry);
    }

    /// Drops one session's entry.
    pub(crate) fn forget(&self, token_hash: &str) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.remove(token_hash);
    }

    /// Drops one session's entry by session id.
    pub(crate) fn forget_session(&self, session_id: Uuid) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, e| e.session.id != session_id);
    }

    /// Drops every entry of one user (disable, password or role change, MFA reset).
    pub(crate) fn forget_user(&self, user_id: Uuid) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, e| e.user.id != user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn session(hash: &str, user_id: Uuid) -> (SessionRecord, User) {
        let t = OffsetDateTime::UNIX_EPOCH;
        let s = SessionRecord {
            id: Uuid::now_v7(),
            token_hash: hash.into(),
            user_id,
            created_at: t,
            last_seen_at: t,
            idle_expires_at: t,
            expires_at: t,
            revoked_at: None,
            ip: None,
            user_agent: None,
            assumed_role: None,
            parent_session_id: None,
            mfa_at: None,
            session_policy: None,
        };
        let u = User { id: user_id, username: "u".into(), roles: vec![], disabled: false, created_at: t };
        (s, u)
    }

    #[test]
    fn entries_expire_and_invalidations_win_over_racing_reads() {
        let cache = SessionCache::new(Duration::from_millis(50));
        let user = Uuid::now_v7();
        let (s, u) = session("a", user);
        cache.put(cache.epoch(), &s, &u);
        assert!(cache.get("a").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("a").is_none(), "an entry lives at most the ttl");

        // A read that started before a logout must not store what it read.
        let before = cache.epoch();
        cache.forget("a");
        cache.put(before, &s, &u);
        assert!(cache.get("a").is_none(), "a stale read is not cached");

        let (s2, u2) = session("b", user);
        cache.put(cache.epoch(), &s, &u);
        cache.put(cache.epoch(), &s2, &u2);
        cache.forget_user(user);
        assert!(cache.get("a").is_none() && cache.get("b").is_none(), "a user's entries all go");
        let off = SessionCache::new(Duration::ZERO);
        off.put(off.epoch(), &s, &u);
        assert!(off.get("a").is_none(), "ttl 0 turns the cache off");
    }
}
