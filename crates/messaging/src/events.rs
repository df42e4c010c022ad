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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
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
}

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
        self.lock().entry(user).or_default().push((id, tx));
        Subscription { hub: self.clone(), user, id, events: rx }
    }

    fn remove(&self, user: Uuid, id: u64) {
        let mut subs = self.lock();
        if let Some(list) = subs.get_mut(&user) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                subs.remove(&user);
            }
        }
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
}
