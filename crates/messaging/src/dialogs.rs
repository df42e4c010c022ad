//! Dialogs: create (a private dialog is unique per pair: creating it again returns the
//! existing one), list the caller's dialogs, read one.

use std::collections::BTreeSet;

use uuid::Uuid;
use ward_access::{Facts, Principal};
use ward_audit::{Context, Outcome};
use ward_keys::DataKey;
use ward_storage::{DialogRecord, HistoryQuery, MemberRecord, StoreError};

use crate::MessagingError;
use crate::sealing::{dialog_name_aad, dialog_scope};
use crate::service::{Dialog, DialogKind, Messaging, NewDialog};

/// A member's relation to a dialog, for decisions.
const MEMBER: Facts = Facts { dialog_member: Some(true), breakglass: Some(false) };

/// Longest dialog name, in characters.
const MAX_NAME_CHARS: usize = 200;

impl Messaging {
    /// Creates a dialog with the caller as owner. For a private dialog that already exists
    /// between the two, returns it (and `false`: nothing was created).
    pub async fn create_dialog(
        &self,
        ctx: &Context,
        who: &Principal,
        new: NewDialog,
    ) -> Result<(Dialog, bool), MessagingError> {
        let me = Self::caller(ctx)?;
        let others: BTreeSet<Uuid> = new.members.iter().copied().filter(|m| *m != me).collect();
        let name = new.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
            return Err(MessagingError::Invalid(format!("name: at most {MAX_NAME_CHARS} characters")));
        }
        let pair_key = match new.kind {
            DialogKind::Private => {
                if others.len() != 1 {
                    return Err(MessagingError::Invalid(
                        "members: a private dialog has exactly one other member".into(),
                    ));
                }
                let other = others.iter().next().copied().unwrap_or(me);
                let (a, b) = if me < other { (me, other) } else { (other, me) };
                Some(format!("{a}:{b}"))
            }
            DialogKind::Group => {
                if others.len() + 1 > self.settings.max_group_members {
                    return Err(MessagingError::Invalid(format!(
                        "members: a group has at most {} members",
                        self.settings.max_group_members
                    )));
                }
                None
            }
        };
        for user in &others {
            match self.store.user_by_id(*user).await? {
                Some(u) if !u.disabled => {}
                _ => return Err(MessagingError::Invalid(format!("members: no active user {user}"))),
            }
        }
        if let Some(pair) = &pair_key
            && let Some(existing) = self.store.private_dialog(pair).await?
        {
            return Ok((self.dialog(ctx, who, existing.id).await?, false));
        }

        let id = Uuid::now_v7();
        // The key is made before the transaction: an HSM or KMS call never holds the lock.
        let (key_record, key) = self.keys.prepare(&dialog_scope(id), ctx.now).await?;
        let key_id = key_record.id;
        let name_sealed =
            name.as_ref().map(|n| ward_keys::seal(&key, &dialog_name_aad(id, key_id), n.as_bytes())).transpose()?;
        let record = DialogRecord {
            id,
            kind: new.kind.as_str().into(),
            name_sealed,
            data_key_id: key_id,
            pair_key,
            created_by: me,
            created_at: ctx.now,
            last_seq: 0,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_data_key(&key_record).await?;
        match tx.insert_dialog(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) if record.pair_key.is_some() => {
                drop(tx);
                let pair = record.pair_key.as_deref().unwrap_or_default();
                let existing = crate::service::eventually(|| self.store.private_dialog(pair))
                    .await?
                    .ok_or(MessagingError::NotFound)?;
                return Ok((self.dialog(ctx, who, existing.id).await?, false));
            }
            Err(e) => return Err(e.into()),
        }
        let member = |user_id: Uuid, role: &str| MemberRecord {
            dialog_id: id,
            user_id,
            role: role.into(),
            joined_at: ctx.now,
            last_read_seq: 0,
        };
        tx.insert_member(&member(me, "owner")).await?;
        for user in &others {
            tx.insert_member(&member(*user, "member")).await?;
        }
        let event = ctx
            .event("dialog.create", Outcome::Success)
            .resource(format!("dialog/{id}"))
            .detail("type", new.kind.as_str())
            .detail("members", others.len() + 1);
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        let mut members = vec![me];
        members.extend(others);
        let dialog = Dialog {
            id,
            kind: new.kind,
            name,
            members,
            admins: vec![me],
            created_by: me,
            created_at: ctx.now,
            last_seq: 0,
            unread_count: 0,
            last_message: None,
        };
        self.publish(id, &[], serde_json::json!({"type": "dialog.created", "dialog": &dialog})).await;
        Ok((dialog, true))
    }

    /// One dialog, for a member (recorded as a `dialog.read`).
    pub async fn dialog(&self, ctx: &Context, who: &Principal, id: Uuid) -> Result<Dialog, MessagingError> {
        let (record, reading) = self.readable(ctx, who, id, crate::service::READ_DIALOG).await?;
        let event = reading.mark(ctx.event("dialog.read", Outcome::Success).resource(format!("dialog/{id}")));
        self.audit.record_alone(&event).await?;
        let key = self.dialog_key(&record).await?;
        let (last_read, facts) = match &reading {
            crate::service::Reading::Member(m) => (m.last_read_seq, MEMBER),
            // Someone reading without a membership has no read marker: nothing is "unread".
            crate::service::Reading::BreakGlass(_) => {
                (record.last_seq, Facts { dialog_member: Some(false), breakglass: Some(true) })
            }
            crate::service::Reading::Policy => {
                (record.last_seq, Facts { dialog_member: Some(false), breakglass: Some(false) })
            }
        };
        // The last message is message content: shown only if `message:read` is allowed too.
        let with_last = who.decide("message:read", &format!("dialog/{id}"), ctx.now, facts).allowed;
        self.view(&key, record, last_read, with_last).await
    }

    /// The caller's dialogs, newest activity first, each with its unread count and last
    /// message (recorded as one `dialog.list` with the count). Only the dialogs the caller's
    /// policies let it read as a member are listed, and a last message only where it may
    /// read messages.
    pub async fn dialogs(&self, ctx: &Context, who: &Principal) -> Result<Vec<Dialog>, MessagingError> {
        let me = Self::caller(ctx)?;
        let mut rows = self.store.dialogs_of_user(me).await?;
        rows.retain(|(d, _)| who.decide("dialog:read", &format!("dialog/{}", d.id), ctx.now, MEMBER).allowed);
        let event = ctx
            .event("dialog.list", Outcome::Success)
            .resource(format!("user/{me}/dialogs"))
            .detail("dialogs", rows.len());
        self.audit.record_alone(&event).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (record, member) in rows {
            let key = self.dialog_key(&record).await?;
            let with_last = who.decide("message:read", &format!("dialog/{}", record.id), ctx.now, MEMBER).allowed;
            out.push(self.view(&key, record, member.last_read_seq, with_last).await?);
        }
        Ok(out)
    }

    async fn view(
        &self,
        key: &DataKey,
        record: DialogRecord,
        last_read_seq: i64,
        with_last: bool,
    ) -> Result<Dialog, MessagingError> {
        let members = self.store.members(record.id).await?;
        let last = if with_last && record.last_seq > 0 {
            let page = HistoryQuery { after: None, before: Some(record.last_seq + 1), limit: 1 };
            self.store.messages(record.id, page).await?.pop()
        } else {
            None
        };
        Ok(Dialog {
            id: record.id,
            kind: DialogKind::parse(&record.kind)?,
            name: Self::open_name(key, &record)?,
            members: members.iter().map(|m| m.user_id).collect(),
            admins: members.iter().filter(|m| m.role == "owner" || m.role == "admin").map(|m| m.user_id).collect(),
            created_by: record.created_by,
            created_at: record.created_at,
            last_seq: record.last_seq,
            unread_count: (record.last_seq - last_read_seq).max(0),
            last_message: last.map(|m| Self::open_message(key, &m)).transpose()?,
        })
    }
}
