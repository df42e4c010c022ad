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
//! (sealed the same way, stamped with the time it was made so a replayed or reordered
//! report is ignored): within a second of a change, every [`PRESENCE_EVERY`] anyway, and
//! an empty report when it stops. Other nodes keep the reports for
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
                let now_ms = unix_ms(time::OffsetDateTime::now_utc());
                match seal(&key, &subject, node, Vec::new(), &encode_presence(now_ms, &users)) {
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
                        Ok(Some((from, _, frame))) => match decode_presence(&frame) {
                            Some((at_ms, users)) if fresh(at_ms) => {
                                hub.set_remote_presence(from, at_ms, users.into_iter().collect::<HashSet<_>>());
                            }
                            Some(_) => tracing::warn!("dropped a stale presence report (replayed, or clocks apart)"),
                            None => tracing::warn!("dropped a presence report that is not a list of ids"),
                        },
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "dropped a presence report that does not open"),
                    }
                }
                out = outbound.recv() => {
                    let Some((to, frame)) = out else { break };
                    match seal(&key, &subject, node, to, frame.as_bytes()) {
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
                        Ok(Some((_, to, frame))) => match String::from_utf8(frame) {
                            Ok(frame) => {
                                hub.deliver(&to, std::sync::Arc::from(frame));
                            }
                            Err(_) => tracing::warn!("dropped a relayed event that is not UTF-8"),
                        },
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

fn seal(key: &DataKey, subject: &str, node: Uuid, to: Vec<Uuid>, frame: &[u8]) -> Result<Vec<u8>, String> {
    let sealed = ward_keys::seal(key, &aad(subject, node), frame).map_err(|e| e.to_string())?;
    serde_json::to_vec(&Envelope { node, to, sealed: B64.encode(sealed) }).map_err(|e| e.to_string())
}

/// The sending node, recipients and frame of another node's message; `None` for our own.
type Opened = (Uuid, Vec<Uuid>, Vec<u8>);

fn open(key: &DataKey, subject: &str, node: Uuid, payload: &[u8]) -> Result<Option<Opened>, String> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|_| "not an event envelope".to_string())?;
    if envelope.node == node {
        return Ok(None);
    }
    let sealed = B64.decode(envelope.sealed).map_err(|_| "not base64".to_string())?;
    let plain = ward_keys::open(key, &aad(subject, envelope.node), &sealed).map_err(|e| e.to_string())?;
    Ok(Some((envelope.node, envelope.to, plain.to_vec())))
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A presence report: when it was made (Unix ms, 8 bytes big-endian), then 16 bytes per
/// user id: about 22 bytes per user on the wire, so a node with 40,000 connected users
/// still fits NATS's default 1 MiB message.
fn encode_presence(at_ms: i64, users: &[Uuid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 16 * users.len());
    out.extend_from_slice(&at_ms.to_be_bytes());
    for user in users {
        out.extend_from_slice(user.as_bytes());
    }
    out
}

fn decode_presence(bytes: &[u8]) -> Option<(i64, Vec<Uuid>)> {
    let (at, ids) = bytes.split_first_chunk::<8>()?;
    if ids.len() % 16 != 0 {
        return None;
    }
    let users = ids.chunks_exact(16).map(|c| Uuid::from_slice(c).ok()).collect::<Option<Vec<_>>>()?;
    Some((i64::from_be_bytes(*at), users))
}

/// A report made within the presence lifetime of now (a replay of an old one is not).
fn fresh(at_ms: i64) -> bool {
    let ttl = i64::try_from(ward_messaging::events::PRESENCE_TTL.as_millis()).unwrap_or(i64::MAX);
    (unix_ms(time::OffsetDateTime::now_utc()) - at_ms).abs() < ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_reports_round_trip_and_refuse_garbage() {
        let users = vec![Uuid::now_v7(), Uuid::now_v7()];
        let bytes = encode_presence(1_764_388_800_000, &users);
        assert_eq!(bytes.len(), 8 + 32);
        assert_eq!(decode_presence(&bytes), Some((1_764_388_800_000, users)));
        assert_eq!(decode_presence(&encode_presence(7, &[])), Some((7, Vec::new())));
        assert_eq!(decode_presence(&bytes[..bytes.len() - 1]), None, "a cut id");
        assert_eq!(decode_presence(&[1, 2, 3]), None, "no time");
        assert!(fresh(unix_ms(time::OffsetDateTime::now_utc())));
        assert!(!fresh(unix_ms(time::OffsetDateTime::now_utc()) - 60_000), "a minute old: a replay");
    }
}
