//! Real-time events: the in-process hub that hands each event of a dialog to the live
//! connections of its members.
//!
//! An event is serialized once (a JSON text frame, `{"type": "message.created", …}`) and
//! offered to every subscription of every member with `try_send` on a bounded queue
//! ([`QUEUE`] frames). A subscription whose queue is full is dropped from the hub and its
//! queue closed: that connection is a slow consumer, which the WebSocket layer closes with
//! code [`SLOW_CONSUMER_CLOSE`]; the client reconnects and catches up through history
//! (`after=<last seq seen>`). One slow client never delays the others: publishing never
//! waits.
//!
//! The recipients are the dialog's members when the event is published (read from the
//! store by the caller), so a removed member stops receiving at once. With several nodes,
//! [`Hub::attach_relay`] also hands every event to the cluster relay (NATS, in the `ward`
//! binary), and events from other nodes come back in through [`Hub::deliver`].
//!
//! **Presence.** [`Hub::online`] tells whether a user has a live connection on this node
//! or, as last reported by the cluster relay ([`Hub::set_remote_presence`]), on another
//! node; a report older than [`PRESENCE_TTL`] no longer counts. Push notifications go to
//! members who are not online. [`Hub::presence_changed`] wakes the relay when a user's
//! first connection opens or last one closes here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

/// Frames queued per connection before it counts as a slow consumer.
pub const QUEUE: usize = 256;
/// The WebSocket close code for a slow consumer (application range 4000-4999).
pub const SLOW_CONSUMER_CLOSE: u16 = 4008;

/// One serialized event frame, shared by every recipient.
pub type EventFrame = Arc<str>;

/// An event on its way to other nodes: its recipients and frame.
pub type Relayed = (Vec<Uuid>, EventFrame);

/// Each user's live connections: (subscription id, queue).
type Subscribers = HashMap<Uuid, Vec<(u64, mpsc::Sender<EventFrame>)>>;

/// The hub. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    subscribers: Mutex<Subscribers>,
    /// Where events also go to reach other nodes (the cluster relay), when there is one.
    relay: Mutex<Option<mpsc::Sender<Relayed>>>,
    /// The users connected to each other node, as that node last reported: the users,
    /// when the report arrived, and the time the node stamped on it.
    remote: Mutex<HashMap<Uuid, RemotePresence>>,
    /// Signalled when the set of users connected here changes.
    presence: Notify,
}

/// Another node's last presence report: its users, when it arrived, the node's stamp on it.
type RemotePresence = (HashSet<Uuid>, Instant, i64);

/// How long another node's presence report counts without a newer one (nodes report every
/// few seconds, and at once on a change).
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Events queued for the cluster relay before new ones are dropped (and logged).
pub const RELAY_QUEUE: usize = 10_000;

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("users", &self.connected_users()).finish()
    }
}

/// A live connection's share of the hub; unsubscribes when dropped.
pub struct Subscription {
    hub: Hub,
    user: Uuid,
    id: u64,
    /// Events for this connection. `None` from `recv` means the hub dropped it (its queue
    /// was full): close the connection as a slow consumer.
    pub events: mpsc::Receiver<EventFrame>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.user, self.id);
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.inner.subscribers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes one connection of `user`.
    pub fn subscribe(&self, user: Uuid) -> Subscription {
        self.subscribe_with_capacity(user, QUEUE)
    }

    /// [`Hub::subscribe`] with another queue size (tests).
    pub fn subscribe_with_capacity(&self, user: Uuid, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut subs = self.lock();
            let list = subs.entry(user).or_default();
            list.push((id, tx));
            list.len() == 1
        };
        if first {
            self.inner.presence.notify_one();
        }
        Subscription { hub: self.clone(), user, id, events: rx }
    }

    fn remove(&self, user: Uuid, id: u64) {
        let mut subs = self.lock();
        if let Some(list) = subs.get_mut(&user) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                subs.remove(&user);
                self.inner.presence.notify_one();
            }
        }
    }

    /// Whether `user` has a live connection here, or on another node as last reported.
    pub fn online(&self, user: Uuid) -> bool {
        if self.lock().contains_key(&user) {
            return true;
        }
        let remote = self.inner.remote.lock().unwrap_or_else(PoisonError::into_inner);
        remote.values().any(|(users, at, _)| at.elapsed() < PRESENCE_TTL && users.contains(&user))
    }

    /// The users with a live connection on this node.
    pub fn local_users(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Records which users another node reports connected (an empty set: none, or the
    /// node stopped) in a report stamped `stamp` (its Unix ms). A report no newer than the
    /// last one from that node (reordered or replayed) is ignored.
    pub fn set_remote_presence(&self, node: Uuid, stamp: i64, users: HashSet<Uuid>) {
        let mut remote = self.inner.remote.lock().unwrap_or_else(PoisonError::into_inner);
        remote.retain(|_, (_, at, _)| at.elapsed() < PRESENCE_TTL);
        if remote.get(&node).is_some_and(|(_, _, last)| *last >= stamp) {
            return;
        }
        remote.insert(node, (users, Instant::now(), stamp));
    }

    /// Resolves when the set of users connected here may have changed since the last call.
    pub async fn presence_changed(&self) {
        self.inner.presence.notified().await;
    }

    /// Sends every published event to other nodes too, through `relay` (see the `ward`
    /// binary's cluster module). Returns the receiving end.
    pub fn attach_relay(&self) -> mpsc::Receiver<Relayed> {
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        *self.inner.relay.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// True when an event may have a recipient: a local connection, or other nodes.
    pub fn has_audience(&self) -> bool {
        self.connected_users() > 0 || self.inner.relay.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Offers `frame` to every connection of `recipients` on this node and hands it to the
    /// cluster relay, never waiting. Returns how many local connections took it.
    pub fn publish(&self, recipients: &[Uuid], frame: EventFrame) -> usize {
        let delivered = self.deliver(recipients, frame.clone());
        let relay = self.inner.relay.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(relay) = relay
            && relay.try_send((recipients.to_vec(), frame)).is_err()
        {
            tracing::warn!("the cluster relay is behind: an event did not reach the other nodes");
        }
        delivered
    }

    /// Offers `frame` to this node's connections of `recipients` only (events arriving
    /// from other nodes). Returns how many connections took it.
    pub fn deliver(&self, recipients: &[Uuid], frame: EventFrame) -> usize {
        let mut delivered = 0;
        let mut subs = self.lock();
        for user in recipients {
            let Some(list) = subs.get_mut(user) else { continue };
            list.retain(|(_, tx)| match tx.try_send(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                // Full: a slow consumer, dropped (its receiver then sees the end). Closed:
                // the connection is gone.
                Err(_) => false,
            });
            if list.is_empty() {
                subs.remove(user);
                self.inner.presence.notify_one();
            }
        }
        delivered
    }

    /// How many users have a live connection on this node.
    pub fn connected_users(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn members_get_events_others_do_not_and_a_slow_consumer_is_cut_off() {
        let hub = Hub::default();
        let (a, b, stranger) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut a1 = hub.subscribe(a);
        let mut a2 = hub.subscribe(a);
        let mut s = hub.subscribe(stranger);
        assert_eq!(hub.publish(&[a, b], Arc::from("{\"type\":\"x\"}")), 2, "both of a's connections; b has none");
        assert_eq!(a1.events.recv().await.as_deref(), Some("{\"type\":\"x\"}"));
        assert_eq!(a2.events.recv().await.as_deref(), Some("{\"type\":\"x\"}"));
        assert!(s.events.try_recv().is_err(), "a non-recipient gets nothing");

        let mut slow = hub.subscribe_with_capacity(b, 2);
        let fast = hub.subscribe(b);
        for i in 0..3 {
            hub.publish(&[b], Arc::from(format!("{i}")));
        }
        assert_eq!(slow.events.recv().await.as_deref(), Some("0"));
        assert_eq!(slow.events.recv().await.as_deref(), Some("1"));
        assert_eq!(slow.events.recv().await, None, "the third did not fit: dropped, the queue ends");
        assert_eq!(fast.events.len(), 3, "the other connection got everything");
        drop((a1, a2, s, slow, fast));
        assert_eq!(hub.connected_users(), 0, "dropped subscriptions leave the hub");
    }

    #[tokio::test]
    async fn presence_is_local_connections_and_fresh_reports_of_other_nodes() {
        let hub = Hub::default();
        let (here, there, nowhere, node) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let sub = hub.subscribe(here);
        tokio::time::timeout(Duration::from_secs(1), hub.presence_changed()).await.expect("a first connection signals");
        hub.set_remote_presence(node, 10, HashSet::from([there]));
        hub.set_remote_presence(node, 9, HashSet::new());
        assert!(hub.online(there), "an older report (replayed) changes nothing");
        assert!(hub.online(here) && hub.online(there));
        assert!(!hub.online(nowhere));
        assert_eq!(hub.local_users(), vec![here]);
        drop(sub);
        tokio::time::timeout(Duration::from_secs(1), hub.presence_changed()).await.expect("a last close signals");
        assert!(!hub.online(here), "no connection left here");
        hub.set_remote_presence(node, 11, HashSet::new());
        assert!(!hub.online(there), "the node reported nobody");
    }
}
