//! Push notifications for offline members, without PHI (`[messaging] push_webhook_url`).
//!
//! When a message is sent, the members other than its sender who have no live connection
//! on any node ([`crate::events::Hub::online`]) are handed to the webhook as ids only:
//!
//! ```json
//! {"type": "message.created", "id": "<notification id>", "dialog_id": "…",
//!  "message_id": "…", "recipient_ids": ["…"], "created_at": "…"}
//! ```
//!
//! Never a body, a dialog name or a file name: the app's push service fetches the message
//! with the recipient's own credentials when the device wakes up. A large group is split
//! into calls of at most [`MAX_RECIPIENTS`] recipients.
//!
//! **Signature.** Each POST carries `Ward-Signature: t=<unix seconds>,v1=<hex>` where `v1`
//! is HMAC-SHA256 under `[messaging] push_webhook_secret` of `"<t>.<raw body>"`, and
//! `Ward-Webhook-Id` (the notification id, the same on every retry, for de-duplication).
//! A receiver checks the HMAC in constant time and refuses a `t` older than a few minutes.
//!
//! **Delivery.** Notices wait in a bounded queue ([`QUEUE`]); sending never waits for the
//! webhook, and a full queue drops the notice (counted and logged). A call that fails to
//! connect, times out (5 s) or answers 429 or 5xx is retried up to [`ATTEMPTS`] times with
//! a doubling back-off from 1 s; any other answer ends it. At most [`CONCURRENT`] calls are
//! in flight. Counters: `ward_push_webhook_calls_total{outcome}`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

/// Notices queued before new ones are dropped.
pub const QUEUE: usize = 10_000;
/// Recipients named in one call at most.
pub const MAX_RECIPIENTS: usize = 500;
/// Tries per call.
pub const ATTEMPTS: u32 = 5;
/// Calls in flight at once.
pub const CONCURRENT: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Where and how to call the webhook.
pub struct PushSettings {
    pub url: String,
    pub secret: zeroize::Zeroizing<Vec<u8>>,
}

/// One message's offline recipients.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub dialog_id: Uuid,
    pub message_id: Uuid,
    pub recipients: Vec<Uuid>,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The webhook's counters, for `/metrics`.
#[derive(Clone, Default)]
pub struct PushMetrics {
    calls: Family<OutcomeLabel, Counter>,
}

impl PushMetrics {
    fn count(&self, outcome: &'static str) {
        self.calls.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "push_webhook_calls",
            "Push webhook calls by outcome: delivered, failed (after retries), dropped (queue full)",
            self.calls.clone(),
        );
    }
}

/// The sending side: cheap to clone, never waits.
#[derive(Clone)]
pub struct Pusher {
    queue: mpsc::Sender<Notice>,
    metrics: PushMetrics,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

impl Pusher {
    /// Starts the delivery task; it ends when every `Pusher` clone is dropped and the queue
    /// is drained.
    pub fn start(settings: PushSettings) -> Result<(Pusher, tokio::task::JoinHandle<()>), String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the push webhook client: {e}"))?;
        let (queue, inbox) = mpsc::channel(QUEUE);
        let metrics = PushMetrics::default();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &settings.secret);
        let sender = Arc::new(Sender { client, url: settings.url, key, metrics: metrics.clone() });
        let task = tokio::spawn(sender.run(inbox));
        Ok((Pusher { queue, metrics }, task))
    }

    pub fn metrics(&self) -> &PushMetrics {
        &self.metrics
    }

    /// Queues a notice; drops it (counted, logged) when the queue is full.
    pub(crate) fn offer(&self, notice: Notice) {
        if self.queue.try_send(notice).is_err() {
            self.metrics.count("dropped");
            tracing::warn!("the push webhook queue is full: a notification was dropped");
        }
    }
}

struct Sender {
    client: reqwest::Client,
    url: String,
    key: hmac::Key,
    metrics: PushMetrics,
}

impl Sender {
    async fn run(self: Arc<Self>, mut inbox: mpsc::Receiver<Notice>) {
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        while let Some(notice) = inbox.recv().await {
            for chunk in notice.recipients.chunks(MAX_RECIPIENTS) {
                let body = serde_json::json!({
                    "type": "message.created",
                    "id": Uuid::now_v7(),
                    "dialog_id": notice.dialog_id,
                    "message_id": notice.message_id,
                    "recipient_ids": chunk,
                    "created_at": notice.created_at.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                });
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let sender = self.clone();
                tokio::spawn(async move {
                    sender.deliver(&body).await;
                    drop(slot);
                });
            }
        }
        // Let the calls in flight finish.
        let _ = slots.acquire_many(CONCURRENT as u32).await;
    }

    /// Calls the webhook with retries; counts the outcome.
    async fn deliver(&self, body: &serde_json::Value) {
        let raw = body.to_string();
        let id = body["id"].as_str().unwrap_or_default().to_string();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let t = OffsetDateTime::now_utc().unix_timestamp();
            let signature = signature(&self.key, t, raw.as_bytes());
            let answer = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("ward-webhook-id", &id)
                .header("ward-signature", format!("t={t},v1={signature}"))
                .body(raw.clone())
                .send()
                .await;
            let retry = match answer {
                Ok(r) if r.status().is_success() => {
                    self.metrics.count("delivered");
                    return;
                }
                Ok(r) => {
                    let status = r.status();
                    tracing::warn!(status = status.as_u16(), attempt, "the push webhook refused a notification");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    // Without the URL, which may carry a token.
                    tracing::warn!(error = %e.without_url(), attempt, "the push webhook could not be reached");
                    true
                }
            };
            if !retry || attempt == ATTEMPTS {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        self.metrics.count("failed");
    }
}

/// Hex HMAC-SHA256 of `"<t>.<body>"`.
pub fn signature(key: &hmac::Key, t: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex::encode(ctx.sign().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // The incremental HMAC equals a one-shot HMAC of the whole signed string.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let expected = hex::encode(hmac::sign(&key, b"1700000000.{\"a\":1}").as_ref());
        assert_eq!(signature(&key, 1_700_000_000, b"{\"a\":1}"), expected);
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another secret of thirty-two chars");
        assert_ne!(signature(&other, 1_700_000_000, b"{\"a\":1}"), expected, "the key matters");
        assert_ne!(signature(&key, 1_700_000_001, b"{\"a\":1}"), expected, "the time is signed");
    }
}
