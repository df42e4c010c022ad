//! Messages: send (gapless `seq`, idempotent by `client_msg_id`) and history pages.

use uuid::Uuid;
use ward_access::Principal;
use ward_audit::{Context, Outcome};
use ward_storage::{HistoryQuery, MessageRecord, StoreError};

use crate::MessagingError;
use crate::sealing::message_aad;
use crate::service::{History, Message, Messaging, NewMessage};

/// Longest `client_msg_id`, in bytes.
const MAX_CLIENT_ID: usize = 128;
/// Most attachments per message.
const MAX_ATTACHMENTS: usize = 20;
/// Largest history page.
pub const MAX_PAGE: i64 = 200;

impl Messaging {
    /// Sends a message. The same `client_msg_id` from the same sender gives back the first
    /// message (and `false`: nothing new was stored). The sender's read marker moves to it.
    pub async fn send(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        new: NewMessage,
    ) -> Result<(Message, bool), MessagingError> {
        let me = Self::caller(ctx)?;
        if new.body.len() > self.settings.max_body_bytes {
            return Err(MessagingError::TooLarge { size: new.body.len(), limit: self.settings.max_body_bytes });
        }
        if new.body.trim().is_empty() && new.attachments.is_empty() {
            return Err(MessagingError::Invalid("body: a message needs a body or an attachment".into()));
        }
        if new.attachments.len() > MAX_ATTACHMENTS {
            return Err(MessagingError::Invalid(format!("attachments: at most {MAX_ATTACHMENTS}")));
        }
        if let Some(id) = &new.client_msg_id
            && (id.is_empty() || id.len() > MAX_CLIENT_ID)
        {
            return Err(MessagingError::Invalid(format!("client_msg_id: 1 to {MAX_CLIENT_ID} bytes")));
        }
        let (dialog, _) = self.membership(ctx, who, dialog_id, crate::service::SEND).await?;
        self.check_attachments(dialog_id, &new.attachments).await?;
        if let Some(client_id) = &new.client_msg_id
            && let Some(first) = self.store.message_by_client_id(dialog_id, me, client_id).await?
        {
            let key = self.keys.by_id(first.data_key_id).await?;
            return self.replay(ctx, &key, &first).await;
        }
        let key = self.dialog_key(&dialog).await?;
        let id = Uuid::now_v7();
        let body_sealed =
            ward_keys::seal(&key, &message_aad(dialog_id, id, dialog.data_key_id, 0), new.body.as_bytes())?;

        let mut tx = self.store.begin().await?;
        let seq = tx.next_seq(dialog_id).await?.ok_or(MessagingError::NotFound)?;
        let record = MessageRecord {
            id,
            dialog_id,
            seq,
            sender_id: me,
            client_msg_id: new.client_msg_id.clone(),
            body_sealed: Some(body_sealed),
            data_key_id: dialog.data_key_id,
            attachments: new.attachments.clone(),
            created_at: ctx.now,
            edited_at: None,
            deleted_at: None,
        };
        match tx.insert_message(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) if new.client_msg_id.is_some() => {
                // The same client id raced in from another request: answer with that one,
                // once its commit is visible (it may sit in the same commit batch).
                drop(tx);
                let client_id = new.client_msg_id.as_deref().unwrap_or_default();
                let first = crate::service::eventually(|| self.store.message_by_client_id(dialog_id, me, client_id))
                    .await?
                    .ok_or(MessagingError::NotFound)?;
                return self.replay(ctx, &key, &first).await;
            }
            Err(e) => return Err(e.into()),
        }
        tx.mark_read(dialog_id, me, seq).await?;
        let event = ctx
            .event("message.create", Outcome::Success)
            .resource(format!("message/{id}"))
            .detail("dialog_id", dialog_id.to_string())
            .detail("seq", seq);
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        let message = Message {
            id,
            seq,
            dialog_id,
            sender_id: me,
            body: Some(new.body),
            client_msg_id: new.client_msg_id,
            attachments: new.attachments,
            created_at: ctx.now,
            edited_at: None,
            deleted_at: None,
        };
        self.publish_message(&message).await;
        Ok((message, true))
    }

    /// Answers a repeated `client_msg_id` with the first message, recorded as a read of it.
    async fn replay(
        &self,
        ctx: &Context,
        key: &ward_keys::DataKey,
        first: &MessageRecord,
    ) -> Result<(Message, bool), MessagingError> {
        let event = ctx
            .event("message.read", Outcome::Success)
            .resource(format!("message/{}", first.id))
            .detail("dialog_id", first.dialog_id.to_string())
            .detail("replay", true);
        self.audit.record_alone(&event).await?;
        Ok((Self::open_message(key, first)?, false))
    }

    /// A page of a dialog's history for a member (recorded as one `message.read` naming the
    /// dialog and the range of `seq` returned, before anything is returned).
    pub async fn history(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        query: HistoryQuery,
    ) -> Result<History, MessagingError> {
        if !(1..=MAX_PAGE).contains(&query.limit) {
            return Err(MessagingError::Invalid(format!("limit: 1 to {MAX_PAGE}")));
        }
        if query.after.is_some_and(|a| a < 0) || query.before.is_some_and(|b| b < 0) {
            return Err(MessagingError::Invalid("after and before: non-negative seq values".into()));
        }
        let (dialog, reading) = self.readable(ctx, who, dialog_id, crate::service::READ_MESSAGES).await?;
        let rows = self.store.messages(dialog_id, query).await?;
        let backwards = query.before.is_some() && query.after.is_none();
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= query.limit;
        let next_cursor = match (full, backwards) {
            (false, _) => None,
            (true, true) => rows.first().map(|m| m.seq),
            (true, false) => rows.last().map(|m| m.seq),
        };
        let mut event = ctx
            .event("message.read", Outcome::Success)
            .resource(format!("dialog/{dialog_id}"))
            .detail("messages", rows.len());
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            event = event.detail("first_seq", first.seq).detail("last_seq", last.seq);
        }
        let event = reading.mark(event);
        self.audit.record_alone(&event).await?;
        let key = self.dialog_key(&dialog).await?;
        let messages = rows.iter().map(|r| Self::open_message(&key, r)).collect::<Result<Vec<_>, _>>()?;
        Ok(History { messages, next_cursor })
    }

    /// Attachments name live files of the same dialog, each once: a file of another
    /// dialog (which the sender might not even see) or a deleted one is refused.
    async fn check_attachments(&self, dialog_id: Uuid, ids: &[Uuid]) -> Result<(), MessagingError> {
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(MessagingError::Invalid(format!("attachments: {id} is listed twice")));
            }
            let file = self.store.file_by_id(*id).await?;
            if !file.is_some_and(|f| f.dialog_id == dialog_id && f.deleted_at.is_none()) {
                return Err(MessagingError::Invalid(format!("attachments: {id} is not a file of this dialog")));
            }
        }
        Ok(())
    }
}
