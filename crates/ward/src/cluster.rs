//! The cluster relay: real-time events between nodes over NATS (`[cluster] nats_url`).
//!
//! Every event a node publishes goes, besides its own connections, to the subject
//! `[cluster] nats_subject` as `{"node", "to": [user ids], "sealed": base64}`; every node
//! delivers what other nodes sent to its own connections of `to`. Events carry message
//! bodies, so the frame is sealed with AES-256-GCM under the data key
//! `system/cluster-events` (shared by every node through the database), with the subject
//! in the AAD: the NATS server and anyone on its network see only ids and ciphertext.
//! Delivery is best effort, like the hub's: a node that misses an event (NATS down, a
//! restart) has clients that catch up through history.
//!
//! **Presence.** Each node also reports the users connected to it on `<subject>.presence`
//! (sealed the same way): within a second of a change, every [`PRESENCE_EVERY`] anyway,
//! and an empty report when it stops. Other nodes keep the reports for
//! [`ward_messaging::events::PRESENCE_TTL`], so a member online on any node gets no push
//! notification. A member who connects has up to about a second during which another
//! node may still count them as offline.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use ward_keys::{DataKey, DataKeys};
use ward_messaging::events::Hub;

/// The data-key scope of relayed events.
pub const CLUSTER_SCOPE: &str = "system/cluster-events";
/// How often a node reports its connected users when nothing changes.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(10);
/// The shortest time between two reports.
const PRESENCE_DEBOUNCE: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: Uuid,
    to: Vec<Uuid>,
    sealed: String,
}

/// Binds a sealed frame to its subject and its sending node.
fn aad(subject: &str, node: Uuid) -> Vec<u8> {
    format!("ward:cluster-event|{subject}|{node}").into_bytes()
}

/// Connects to NATS, attaches the relay to `hub` and runs it until `stop`. Returns once
/// connected and subscribed, with the task that relays.
pub async fn start(
    url: &str,
    subject: String,
    hub: Hub,
    keys: &DataKeys,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let (_, key) = keys
        .get_or_create_alone(CLUSTER_SCOPE, time::OffsetDateTime::now_utc())
        .await
        .map_err(|e| format!("the cluster events key: {e}"))?;
    let client = async_nats::connect(url).await.map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    let mut inbound =
        client.subscribe(subject.clone()).await.map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
    let presence_subject = format!("{subject}.presence");
    let mut presence_in = client
        .subscribe(presence_subject.clone())
        .await
        .map_err(|e| format!("cannot subscribe to {presence_subject}: {e}"))?;
    let mut outbound = hub.attach_relay();
    let node = Uuid::now_v7();
    tracing::info!(%node, subject = %subject, "relaying real-time events over NATS");
    Ok(tokio::spawn(async move {
        let report = |users: Vec<Uuid>| {
            let client = client.clone();
            let key = key.clone();
            let subject = presence_subject.clone();
            async move {
                let frame = serde_json::to_string(&users).unwrap_or_else(|_| "[]".into());
                match seal(&key, &subject, node, Vec::new(), &frame) {
                    Ok(payload) => {
                        if let Err(e) = client.publish(subject, payload.into()).await {
                            tracing::warn!(error = %e, "presence could not be reported to the other nodes");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "presence could not be sealed for the relay"),
                }
            }
        };
        report(hub.local_users()).await;
        let mut changed = false;
        let mut last_report = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(PRESENCE_DEBOUNCE);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = hub.presence_changed() => changed = true,
                _ = tick.tick() => {
                    if changed || last_report.elapsed() >= PRESENCE_EVERY {
                        changed = false;
                        last_report = tokio::time::Instant::now();
                        report(hub.local_users()).await;
                    }
                }
                message = presence_in.next() => {
                    let Some(message) = message else {
                        tracing::error!("the NATS presence subscription ended");
                        break;
                    };
                    match open(&key, &presence_subject, node, &message.payload) {
                        Ok(Some((from, _, frame))) => match serde_json::from_str::<Vec<Uuid>>(&frame) {
                            Ok(users) => hub.set_remote_presence(from, users.into_iter().collect::<HashSet<_>>()),
                            Err(_) => tracing::warn!("dropped a presence report that is not a list of ids"),
                        },
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "dropped a presence report that does not open"),
                    }
                }
                out = outbound.recv() => {
                    let Some((to, frame)) = out else { break };
                    match seal(&key, &subject, node, to, &frame) {
                        Ok(payload) => {
                            if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                                tracing::warn!(error = %e, "an event could not be relayed to the other nodes");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "an event could not be sealed for the relay"),
                    }
                }
                message = inbound.next() => {
                    let Some(message) = message else {
                        tracing::error!("the NATS subscription ended: events from other nodes stop");
                        break;
                    };
                    match open(&key, &subject, node, &message.payload) {
                        Ok(Some((_, to, frame))) => {
                            hub.deliver(&to, std::sync::Arc::from(frame));
                        }
                        Ok(None) => {} // our own event, delivered locally already
                        Err(e) => tracing::warn!(error = %e, "dropped a relayed event that does not open"),
                    }
                }
            }
        }
        // Nobody is connected here any more, as far as the other nodes should know.
        report(Vec::new()).await;
        let _ = client.flush().await;
    }))
}

fn seal(key: &DataKey, subject: &str, node: Uuid, to: Vec<Uuid>, frame: &str) -> Result<Vec<u8>, String> {
    let sealed = ward_keys::seal(key, &aad(subject, node), frame.as_bytes()).map_err(|e| e.to_string())?;
    serde_json::to_vec(&Envelope { node, to, sealed: B64.encode(sealed) }).map_err(|e| e.to_string())
}

/// The sending node, recipients and frame of another node's message; `None` for our own.
type Opened = (Uuid, Vec<Uuid>, String);

fn open(key: &DataKey, subject: &str, node: Uuid, payload: &[u8]) -> Result<Option<Opened>, String> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|_| "not an event envelope".to_string())?;
    if envelope.node == node {
        return Ok(None);
    }
    let sealed = B64.decode(envelope.sealed).map_err(|_| "not base64".to_string())?;
    let plain = ward_keys::open(key, &aad(subject, envelope.node), &sealed).map_err(|e| e.to_string())?;
    let frame = String::from_utf8(plain.to_vec()).map_err(|_| "not UTF-8".to_string())?;
    Ok(Some((envelope.node, envelope.to, frame)))
}
