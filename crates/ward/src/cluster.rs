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

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: Uuid,
    to: Vec<Uuid>,
    sealed: String,
}

fn aad(subject: &str) -> Vec<u8> {
    format!("ward:cluster-event|{subject}").into_bytes()
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
    let mut outbound = hub.attach_relay();
    let node = Uuid::now_v7();
    tracing::info!(%node, subject = %subject, "relaying real-time events over NATS");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
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
                        Ok(Some((to, frame))) => {
                            hub.deliver(&to, std::sync::Arc::from(frame));
                        }
                        Ok(None) => {} // our own event, delivered locally already
                        Err(e) => tracing::warn!(error = %e, "dropped a relayed event that does not open"),
                    }
                }
            }
        }
        let _ = client.flush().await;
    }))
}

fn seal(key: &DataKey, subject: &str, node: Uuid, to: Vec<Uuid>, frame: &str) -> Result<Vec<u8>, String> {
    let sealed = ward_keys::seal(key, &aad(subject), frame.as_bytes()).map_err(|e| e.to_string())?;
    serde_json::to_vec(&Envelope { node, to, sealed: B64.encode(sealed) }).map_err(|e| e.to_string())
}

/// The recipients and frame of another node's event; `None` for our own.
fn open(key: &DataKey, subject: &str, node: Uuid, payload: &[u8]) -> Result<Option<(Vec<Uuid>, String)>, String> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|_| "not an event envelope".to_string())?;
    if envelope.node == node {
        return Ok(None);
    }
    let sealed = B64.decode(envelope.sealed).map_err(|_| "not base64".to_string())?;
    let plain = ward_keys::open(key, &aad(subject), &sealed).map_err(|e| e.to_string())?;
    let frame = String::from_utf8(plain.to_vec()).map_err(|_| "not UTF-8".to_string())?;
    Ok(Some((envelope.to, frame)))
}
