//! Changes to what exists: editing and deleting messages, read receipts, and adding and
//! removing members. Who may do what: a sender edits their own messages; a sender or a
//! dialog admin (owner or admin) deletes; a dialog admin adds and removes members of a
//! group, and anyone may leave a group (the owner excepted).

use uuid::Uuid;
use ward_access::Principal;
use ward_audit::{Context, Outcome};
use ward_storage::MemberRecord;

use crate::MessagingError;
use crate::sealing::{message_aad, stored_ms};
use crate::service::{DialogKind, Message, Messaging};

/// An owner or admin of the dialog: may add and remove members and delete others' messages
/// and files.
pub fn is_admin(member: &MemberRecord) -> bool {
    member.role == "owner" || member.role == "admin"
}

impl Messaging {
    /// Replaces the body of the caller's own message. The previous body stays in the edit
    /// history, sealed as it was; the new one is sealed with an AAD naming this edit.
    pub async fn edit(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        message_id: Uuid,
        body: String,
    ) -> Result<Message, MessagingError> {
        let me = Self::caller(ctx)?;
        if body.len() > self.settings.max_body_bytes {
            return Err(MessagingError::TooLarge { size: body.len(), limit: self.settings.max_body_bytes });
        }
        if body.trim().is_empty() {
            return Err(MessagingError::Invalid("body: an edit needs a body (delete the message instead)".into()));
        }
        self.membership(ctx, who, dialog_id, crate::service::UPDATE).await?;
        let found = self.store.message_by_id(dialog_id, message_id).await?.ok_or(MessagingError::NotFound)?;
        if found.sender_id != me {
            return Err(MessagingError::Forbidden("only the sender may edit a message".into()));
        }
        if found.deleted_at.is_some() {
            return Err(MessagingError::Conflict("the message was deleted".into()));
        }
        let key = self.keys.by_id(found.data_key_id).await?;
        // The stored edit time has millisecond precision; the AAD uses the same value.
        let edited_at = ctx.now;
        let aad = message_aad(dialog_id, message_id, found.data_key_id, stored_ms(edited_at));
        let sealed = ward_keys::seal(&key, &aad, body.as_bytes())?;
        let mut tx = self.store.begin().await?;
        if !tx.edit_message(dialog_id, message_id, &sealed, edited_at).await? {
            return Err(MessagingError::Conflict("the message was deleted".into()));
        }
        let event = ctx
            .event("message.update", Outcome::Success)
            .resource(format!("message/{message_id}"))
            .detail("dialog_id", dialog_id.to_string())
            .detail("seq", found.seq);
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.reread_and_publish(dialog_id, message_id, "message.updated").await
    }

    /// Deletes a message (its sender, or a dialog admin): the body and its edit history are
    /// erased; a tombstone keeps its `seq`.
    pub async fn delete(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        message_id: Uuid,
    ) -> Result<Message, MessagingError> {
        let me = Self::caller(ctx)?;
        let (_, member) = self.membership(ctx, who, dialog_id, crate::service::DELETE).await?;
        let found = self.store.message_by_id(dialog_id, message_id).await?.ok_or(MessagingError::NotFound)?;
        if found.sender_id != me && !is_admin(&member) {
            return Err(MessagingError::Forbidden("only the sender or a dialog admin may delete a message".into()));
        }
        let mut tx = self.store.begin().await?;
        if !tx.delete_message(dialog_id, message_id, ctx.now).await? {
            return Err(MessagingError::Conflict("the message was already deleted".into()));
        }
        let event = ctx
            .event("message.delete", Outcome::Success)
            .resource(format!("message/{message_id}"))
            .detail("dialog_id", dialog_id.to_string())
            .detail("seq", found.seq);
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        self.reread_and_publish(dialog_id, message_id, "message.deleted").await
    }

    /// Reads a message back after a committed change and publishes it as event `kind`.
    async fn reread_and_publish(
        &self,
        dialog_id: Uuid,
        message_id: Uuid,
        kind: &str,
    ) -> Result<Message, MessagingError> {
        let stored = self.store.message_by_id(dialog_id, message_id).await?.ok_or(MessagingError::NotFound)?;
        let key = self.keys.by_id(stored.data_key_id).await?;
        let message = Self::open_message(&key, &stored)?;
        let event = serde_json::json!({"type": kind, "dialog_id": dialog_id, "message": &message});
        self.publish(dialog_id, &[], event).await;
        Ok(message)
    }

    /// Moves the caller's read marker up to `up_to_seq` (never back). True when it moved.
    pub async fn mark_read(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        up_to_seq: i64,
    ) -> Result<bool, MessagingError> {
        let me = Self::caller(ctx)?;
        let (dialog, _) = self.membership(ctx, who, dialog_id, crate::service::RECEIPT).await?;
        if up_to_seq < 1 || up_to_seq > dialog.last_seq {
            return Err(MessagingError::Invalid(format!("up_to_seq: 1 to {} (the newest seq)", dialog.last_seq)));
        }
        let mut tx = self.store.begin().await?;
        let moved = tx.mark_read(dialog_id, me, up_to_seq).await?;
        if moved {
            let event = ctx
                .event("receipt.read", Outcome::Success)
                .resource(format!("dialog/{dialog_id}"))
                .detail("up_to_seq", up_to_seq);
            self.audit.record(&mut *tx, &event).await?;
        }
        tx.commit().await?;
        if moved {
            let event = serde_json::json!({"type": "receipt.read", "dialog_id": dialog_id, "user_id": me, "up_to_seq": up_to_seq});
            self.publish(dialog_id, &[], event).await;
        }
        Ok(moved)
    }

    /// Adds a member to a group (a dialog admin only). False if they already were one.
    pub async fn add_member(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        user_id: Uuid,
    ) -> Result<bool, MessagingError> {
        let (dialog, member) = self.membership(ctx, who, dialog_id, crate::service::ADD_MEMBER).await?;
        if DialogKind::parse(&dialog.kind)? != DialogKind::Group {
            return Err(MessagingError::Invalid("a private dialog has exactly two members".into()));
        }
        if !is_admin(&member) {
            return Err(MessagingError::Forbidden("only a dialog admin may add members".into()));
        }
        match self.store.user_by_id(user_id).await? {
            Some(u) if !u.disabled => {}
            _ => return Err(MessagingError::Invalid(format!("user_id: no active user {user_id}"))),
        }
        if self.store.members(dialog_id).await?.len() >= self.settings.max_group_members {
            return Err(MessagingError::Invalid(format!(
                "a group has at most {} members",
                self.settings.max_group_members
            )));
        }
        let mut tx = self.store.begin().await?;
        let record = MemberRecord { dialog_id, user_id, role: "member".into(), joined_at: ctx.now, last_read_seq: 0 };
        let added = tx.insert_member(&record).await?;
        if added {
            let event = ctx
                .event("dialog.member_add", Outcome::Success)
                .resource(format!("dialog/{dialog_id}"))
                .detail("user_id", user_id.to_string());
            self.audit.record(&mut *tx, &event).await?;
        }
        tx.commit().await?;
        if added {
            let event = serde_json::json!({"type": "dialog.member_added", "dialog_id": dialog_id, "user_id": user_id});
            self.publish(dialog_id, &[], event).await;
        }
        Ok(added)
    }

    /// Removes a member from a group: a dialog admin removes anyone but the owner; anyone
    /// may remove themselves. False if they were not a member.
    pub async fn remove_member(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        user_id: Uuid,
    ) -> Result<bool, MessagingError> {
        let me = Self::caller(ctx)?;
        let (dialog, member) = self.membership(ctx, who, dialog_id, crate::service::REMOVE_MEMBER).await?;
        if DialogKind::parse(&dialog.kind)? != DialogKind::Group {
            return Err(MessagingError::Invalid("a private dialog has exactly two members".into()));
        }
        if user_id != me && !is_admin(&member) {
            return Err(MessagingError::Forbidden("only a dialog admin may remove other members".into()));
        }
        if let Some(target) = self.store.member(dialog_id, user_id).await?
            && target.role == "owner"
        {
            return Err(MessagingError::Conflict("the owner cannot leave or be removed".into()));
        }
        let mut tx = self.store.begin().await?;
        let removed = tx.remove_member(dialog_id, user_id).await?;
        if removed {
            let event = ctx
                .event("dialog.member_remove", Outcome::Success)
                .resource(format!("dialog/{dialog_id}"))
                .detail("user_id", user_id.to_string());
            self.audit.record(&mut *tx, &event).await?;
        }
        tx.commit().await?;
        if removed {
            let event =
                serde_json::json!({"type": "dialog.member_removed", "dialog_id": dialog_id, "user_id": user_id});
            self.publish(dialog_id, &[user_id], event).await;
        }
        Ok(removed)
    }

    /// A typing indicator from a member: pushed to the dialog's other members, not stored
    /// and not audited (it carries no content).
    pub async fn typing(&self, ctx: &Context, who: &Principal, dialog_id: Uuid) -> Result<(), MessagingError> {
        let me = Self::caller(ctx)?;
        self.membership(ctx, who, dialog_id, crate::service::TYPING).await?;
        if !self.hub.has_audience() {
            return Ok(());
        }
        let others: Vec<Uuid> =
            self.store.members(dialog_id).await?.into_iter().map(|m| m.user_id).filter(|u| *u != me).collect();
        let event = serde_json::json!({"type": "typing", "dialog_id": dialog_id, "user_id": me});
        self.hub.publish(&others, std::sync::Arc::from(event.to_string()));
        Ok(())
    }
}
