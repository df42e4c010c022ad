//! Outgoing webhooks: the push notifications of messaging and the break-glass alerts of
//! access control share one sender.
//!
//! **Signature.** Each POST carries `Ward-Signature: t=<unix seconds>,v1=<hex>` where `v1`
//! is HMAC-SHA256 under the webhook's secret of `"<t>.<raw body>"`, and `Ward-Webhook-Id`
//! (the body's `id`, the same on every retry, for de-duplication). A receiver checks the
//! HMAC in constant time and refuses a `t` older than a few minutes.
//!
//! **Delivery.** Bodies wait in a bounded queue ([`QUEUE`]); offering never waits, and a
//! full queue drops the body (counted and logged). A call that fails to connect, times out
//! (5 s) or answers 429 or 5xx is retried up to [`ATTEMPTS`] times with a doubling back-off
//! from 1 s; any other answer ends it. At most [`CONCURRENT`] calls are in flight. Each
//! webhook counts its calls by outcome under its own metric name. Logs never show the URL,
//! which may carry a token.
//!
//! **Shutdown.** [`Webhook::drain`] stops taking bodies and lets the queued and in-flight
//! calls finish, retries included, within a grace period; what is still pending then is
//! abandoned, counted and logged.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, watch};

/// Bodies queued before new ones are dropped.
pub const QUEUE: usize = 10_000;
/// Tries per call.
pub const ATTEMPTS: u32 = 5;
/// Calls in flight at once.
pub const CONCURRENT: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Where and how to call a webhook.
pub struct WebhookSettings {
    pub url: String,
    pub secret: zeroize::Zeroizing<Vec<u8>>,
    /// The metric's name (`<name>_total` on /metrics) and a word for logs, e.g. `push_webhook_calls`.
    pub metric: &'static str,
    pub help: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// A webhook's counters, for `/metrics`.
#[derive(Clone)]
pub struct WebhookMetrics {
    name: &'static str,
    help: &'static str,
    calls: Family<OutcomeLabel, Counter>,
}

impl WebhookMetrics {
    fn count(&self, outcome: &'static str) {
        self.calls.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(self.name, self.help, self.calls.clone());
    }
}

/// The sending side: cheap to clone, never waits.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<serde_json::Value>,
    metrics: WebhookMetrics,
    delivery: Arc<Delivery>,
}

/// The delivery task and the signal that ends it.
struct Delivery {
    closing: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("metric", &self.metrics.name).finish_non_exhaustive()
    }
}

impl Webhook {
    /// Starts the delivery task; it ends after [`Webhook::drain`], or when every `Webhook`
    /// clone is dropped and the queue is drained.
    pub fn start(settings: WebhookSettings) -> Result<Webhook, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        let (queue, inbox) = mpsc::channel(QUEUE);
        let metrics = WebhookMetrics { name: settings.metric, help: settings.help, calls: Family::default() };
        let key = hmac::Key::new(hmac::HMAC_SHA256, &settings.secret);
        let sender = Arc::new(Sender { client, url: settings.url, key, metrics: metrics.clone() });
        let (closing, closed) = watch::channel(false);
        let task = tokio::spawn(sender.run(inbox, closed));
        let delivery = Arc::new(Delivery { closing, task: std::sync::Mutex::new(Some(task)) });
        Ok(Webhook { queue, metrics, delivery })
    }

    /// Stops taking bodies (later offers are dropped and counted) and waits up to `grace`
    /// for the queued and in-flight calls, retries included; answers whether all of them
    /// ended in time. What is left is abandoned and logged.
    pub async fn drain(&self, grace: Duration) -> bool {
        let _ = self.delivery.closing.send(true);
        let task = self.delivery.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(task) = task else { return true };
        let abort = task.abort_handle();
        if tokio::time::timeout(grace, task).await.is_ok() {
            return true;
        }
        abort.abort();
        tracing::error!(
            webhook = self.metrics.name,
            grace_s = grace.as_secs(),
            "webhook calls were still pending at \
            shutdown and were abandoned"
        );
        false
    }

    pub fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }

    /// Queues a JSON body (its `id` field names the delivery); drops it (counted, logged)
    /// when the queue is full, and answers whether it was queued.
    pub fn offer(&self, body: serde_json::Value) -> bool {
        match self.queue.try_send(body) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.count("dropped");
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "a webhook queue is full: a call was dropped",
                    mpsc::error::TrySendError::Closed(_) => "a webhook is shut down: a call was dropped",
                };
                tracing::warn!(webhook = self.metrics.name, "{why}");
                false
            }
        }
    }
}

struct Sender {
    client: reqwest::Client,
    url: String,
    key: hmac::Key,
    metrics: WebhookMetrics,
}

impl Sender {
    async fn run(self: Arc<Self>, mut inbox: mpsc::Receiver<serde_json::Value>, mut closing: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        let mut closed = false;
        loop {
            let body = tokio::select! {
                body = inbox.recv() => body,
                _ = closing.changed(), if !closed => {
                    // What is queued is still delivered; nothing new is taken.
                    closed = true;
                    inbox.close();
                    continue;
                }
            };
            let Some(body) = body else { break };
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let sender = self.clone();
            tokio::spawn(async move {
                sender.deliver(&body).await;
                drop(slot);
            });
        }
        // Let the calls in flight finish.
        let _ = slots.acquire_many(CONCURRENT as u32).await;
    }

    /// Calls the webhook with retries; counts the outcome.
    async fn deliver(&self, body: &serde_json::Value) {
        let raw = body.to_string();
        let id = body["id"].as_str().unwrap_or_default().to_string();
        let name = self.metrics.name;
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
                    tracing::warn!(webhook = name, status = status.as_u16(), attempt, "a webhook refused a call");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    // Without the URL, which may carry a token.
                    tracing::warn!(webhook = name, error = %e.without_url(), attempt, "a webhook could not be reached");
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
