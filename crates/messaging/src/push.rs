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
//! into calls of at most [`MAX_RECIPIENTS`] recipients. Signing, queueing and retries are
//! [`ward_webhook`]'s (`Ward-Signature`, 5 attempts, counters
//! `ward_push_webhook_calls_total{outcome}`).

use time::OffsetDateTime;
use uuid::Uuid;
pub use ward_webhook::{Webhook, WebhookMetrics, signature};

/// Recipients named in one call at most.
pub const MAX_RECIPIENTS: usize = 500;

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

/// The sending side: cheap to clone, never waits.
#[derive(Clone, Debug)]
pub struct Pusher {
    webhook: Webhook,
}

impl Pusher {
    /// Starts the delivery task; it ends after [`Pusher::drain`], or when every `Pusher`
    /// clone is dropped and the queue is drained.
    pub fn start(settings: PushSettings) -> Result<Pusher, String> {
        let webhook = Webhook::start(ward_webhook::WebhookSettings {
            url: settings.url,
            secret: settings.secret,
            metric: "push_webhook_calls",
            help: "Push webhook calls by outcome: delivered, failed (after retries), dropped (queue full)",
        })?;
        Ok(Pusher { webhook })
    }

    /// Delivers what is queued (within `grace`) and takes nothing more: for shutdown.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        self.webhook.drain(grace).await
    }

    pub fn metrics(&self) -> &WebhookMetrics {
        self.webhook.metrics()
    }

    /// Queues a notice, one call per [`MAX_RECIPIENTS`] recipients.
    pub(crate) fn offer(&self, notice: Notice) {
        for chunk in notice.recipients.chunks(MAX_RECIPIENTS) {
            self.webhook.offer(serde_json::json!({
                "type": "message.created",
                "id": Uuid::now_v7(),
                "dialog_id": notice.dialog_id,
                "message_id": notice.message_id,
                "recipient_ids": chunk,
                "created_at": notice.created_at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            }));
        }
    }
}
