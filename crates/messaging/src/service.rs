//! The messaging service, its settings, and the views it hands to the API.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;
use ward_access::{Facts, Principal};
use ward_audit::{AuditEvent, AuditLog, Context, Outcome};
use ward_keys::{DataKey, DataKeys};
use ward_storage::{DialogRecord, MemberRecord, MessageRecord, Store};

use crate::MessagingError;
use crate::sealing::{dialog_name_aad, message_aad};

/// Limits from `[messaging]`.
#[derive(Debug, Clone, Copy)]
pub struct MessagingSettings {
    pub max_body_bytes: usize,
    pub max_group_members: usize,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        Self { max_body_bytes: 64 * 1024, max_group_members: 1_000 }
    }
}

/// `private` (two members, one dialog per pair) or `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogKind {
    Private,
    Group,
}

impl DialogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DialogKind::Private => "private",
            DialogKind::Group => "group",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, MessagingError> {
        match s {
            "private" => Ok(DialogKind::Private),
            "group" => Ok(DialogKind::Group),
            other => Err(MessagingError::Invalid(format!("stored dialog kind `{other}` is unknown"))),
        }
    }
}

/// What a caller asks for when creating a dialog. `Debug` leaves out the name (PHI).
#[derive(Clone)]
pub struct NewDialog {
    pub kind: DialogKind,
    pub name: Option<String>,
    /// The other members (the caller is added as owner).
    pub members: Vec<Uuid>,
}

/// What a caller sends. `Debug` leaves out the body (PHI).
#[derive(Clone)]
pub struct NewMessage {
    pub body: String,
    pub client_msg_id: Option<String>,
    pub attachments: Vec<Uuid>,
}

/// A dialog as its members see it. `Debug` leaves out the name and last message.
#[derive(Clone, Serialize)]
pub struct Dialog {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: DialogKind,
    pub name: Option<String>,
    pub members: Vec<Uuid>,
    /// Owner and admins (who may add and remove members and delete others' messages).
    pub admins: Vec<Uuid>,
    pub created_by: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The newest message's `seq`.
    pub last_seq: i64,
    /// Messages after the caller's read marker.
    pub unread_count: i64,
    pub last_message: Option<Message>,
}

/// A message as members see it. A deleted message keeps its place (`seq`) with no body.
/// `Debug` leaves out the body.
#[derive(Clone, Serialize)]
pub struct Message {
    pub id: Uuid,
    pub seq: i64,
    pub dialog_id: Uuid,
    pub sender_id: Uuid,
    pub body: Option<String>,
    pub client_msg_id: Option<String>,
    pub attachments: Vec<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub edited_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
}

/// A page of history and the cursors to go on.
#[derive(Clone, Serialize)]
pub struct History {
    pub messages: Vec<Message>,
    /// `seq` to pass as `after` for newer messages, or as `before` for older ones
    /// (whichever direction was asked); `None` when the page was not full.
    pub next_cursor: Option<i64>,
}

/// A dialog operation: its policy action and the name its records carry in the audit trail.
/// Other domains acting within a dialog (files) name their own.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub action: &'static str,
    pub audit: &'static str,
}

pub(crate) const SEND: Op = Op { action: "message:send", audit: "message.create" };
pub(crate) const READ_MESSAGES: Op = Op { action: "message:read", audit: "message.read" };
pub(crate) const UPDATE: Op = Op { action: "message:update", audit: "message.update" };
pub(crate) const DELETE: Op = Op { action: "message:delete", audit: "message.delete" };
pub(crate) const RECEIPT: Op = Op { action: "receipt:write", audit: "receipt.read" };
pub(crate) const ADD_MEMBER: Op = Op { action: "dialog:add_member", audit: "dialog.member_add" };
pub(crate) const REMOVE_MEMBER: Op = Op { action: "dialog:remove_member", audit: "dialog.member_remove" };
pub(crate) const TYPING: Op = Op { action: "dialog:typing", audit: "dialog.typing" };
pub(crate) const READ_DIALOG: Op = Op { action: "dialog:read", audit: "dialog.read" };

/// How a caller may read a dialog.
#[derive(Debug, Clone)]
pub enum Reading {
    Member(MemberRecord),
    /// Under a live break-glass grant: every read is recorded as such.
    BreakGlass(ward_storage::BreakGlassGrant),
    /// A custom policy allows it without membership.
    Policy,
}

impl Reading {
    /// Marks a read record with the way it was allowed.
    pub fn mark(&self, event: ward_audit::AuditEvent) -> ward_audit::AuditEvent {
        match self {
            Reading::Member(_) => event,
            Reading::BreakGlass(g) => event
                .reason("break-glass")
                .detail("access", "breakglass")
                .detail("severity", "high")
                .detail("grant_id", g.id.to_string()),
            Reading::Policy => event.detail("access", "policy"),
        }
    }
}

/// The messaging service. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) audit: AuditLog,
    pub(crate) keys: DataKeys,
    pub(crate) settings: MessagingSettings,
    pub(crate) hub: crate::events::Hub,
    /// The push webhook for offline members, when configured.
    pub(crate) pusher: Option<crate::push::Pusher>,
    /// Decisions on every dialog operation, and break-glass grants.
    pub(crate) access: ward_access::Access,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Messaging {
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditLog,
        keys: DataKeys,
        access: ward_access::Access,
        settings: MessagingSettings,
    ) -> Self {
        Self { store, audit, keys, settings, hub: crate::events::Hub::default(), pusher: None, access }
    }

    /// The push webhook's counters, when one is configured.
    pub fn push_metrics(&self) -> Option<&crate::push::WebhookMetrics> {
        self.pusher.as_ref().map(crate::push::Pusher::metrics)
    }

    /// At shutdown: delivers the queued push notices within `grace` (none configured: done).
    pub async fn drain_push(&self, grace: std::time::Duration) -> bool {
        match &self.pusher {
            Some(pusher) => pusher.drain(grace).await,
            None => true,
        }
    }

    /// Sends push notifications for offline members through `pusher`.
    pub fn with_push(mut self, pusher: crate::push::Pusher) -> Self {
        self.pusher = Some(pusher);
        self
    }

    /// The real-time hub: connections subscribe here for their user's events.
    pub fn hub(&self) -> &crate::events::Hub {
        &self.hub
    }

    /// Publishes an event to the dialog's current members (and `also`, e.g. a member just
    /// removed), after the change it describes has committed. Skipped when nobody is
    /// connected to this node; a failure to read the members is logged, never fatal: the
    /// change itself is durable and clients catch up through history.
    pub(crate) async fn publish(&self, dialog_id: Uuid, also: &[Uuid], event: serde_json::Value) {
        if !self.hub.has_audience() {
            return;
        }
        let Some(mut to) = self.recipients(dialog_id).await else { return };
        to.extend_from_slice(also);
        self.hub.publish(&to, std::sync::Arc::from(event.to_string()));
    }

    /// Publishes a new message's event, and hands its members who are online nowhere
    /// (except the sender) to the push webhook.
    pub(crate) async fn publish_message(&self, message: &Message) {
        if !self.hub.has_audience() && self.pusher.is_none() {
            return;
        }
        let Some(members) = self.recipients(message.dialog_id).await else { return };
        if self.hub.has_audience() {
            let event =
                serde_json::json!({"type": "message.created", "dialog_id": message.dialog_id, "message": message});
            self.hub.publish(&members, std::sync::Arc::from(event.to_string()));
        }
        if let Some(pusher) = &self.pusher {
            let offline: Vec<Uuid> =
                members.into_iter().filter(|m| *m != message.sender_id && !self.hub.online(*m)).collect();
            if !offline.is_empty() {
                pusher.offer(crate::push::Notice {
                    dialog_id: message.dialog_id,
                    message_id: message.id,
                    recipients: offline,
                    created_at: message.created_at,
                });
            }
        }
    }

    /// The dialog's current members, or `None` (logged) when they cannot be read.
    async fn recipients(&self, dialog_id: Uuid) -> Option<Vec<Uuid>> {
        match self.store.members(dialog_id).await {
            Ok(members) => Some(members.iter().map(|m| m.user_id).collect()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a dialog's members to publish an event");
                None
            }
        }
    }

    pub fn settings(&self) -> MessagingSettings {
        self.settings
    }

    /// The caller's user id; operations need a signed-in user.
    pub(crate) fn caller(ctx: &Context) -> Result<Uuid, MessagingError> {
        ctx.user_id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| MessagingError::Forbidden("messaging needs a signed-in user".into()))
    }

    /// The dialog and the caller's membership, for an operation that changes the dialog:
    /// the policy engine decides with the caller's real relation to it (`dialog_member`;
    /// break-glass never counts for a change). A denial is recorded as `denied` and answers
    /// `NotFound` to a non-member (existence is not leaked), `Forbidden` to a member.
    pub async fn membership(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
    ) -> Result<(DialogRecord, MemberRecord), MessagingError> {
        self.membership_of(ctx, who, dialog_id, op, None).await
    }

    /// [`Self::membership`] for an operation on an item within the dialog (`file/<id>`): a
    /// denial is recorded against the item, with the dialog as a detail.
    pub async fn membership_for(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
        item: &str,
    ) -> Result<(DialogRecord, MemberRecord), MessagingError> {
        self.membership_of(ctx, who, dialog_id, op, Some(item)).await
    }

    async fn membership_of(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
        item: Option<&str>,
    ) -> Result<(DialogRecord, MemberRecord), MessagingError> {
        let dialog = self.store.dialog_by_id(dialog_id).await?.ok_or(MessagingError::NotFound)?;
        let member = self.store.member(dialog_id, who.user_id).await?;
        let facts = Facts { dialog_member: Some(member.is_some()), breakglass: Some(false) };
        self.decide(ctx, who, dialog_id, op, facts, item).await?;
        // A custom policy may allow an action to non-members, but a change to a dialog
        // needs a membership to act through.
        let Some(member) = member else {
            let event = on(ctx.event(op.audit, Outcome::Denied), dialog_id, item)
                .reason("a change to a dialog needs its membership");
            self.audit.record_alone(&event).await?;
            return Err(MessagingError::NotFound);
        };
        Ok((dialog, member))
    }

    /// The dialog and how the caller may read it: as a member, under a live break-glass
    /// grant, or by a policy that allows reading without either. Decided like
    /// [`Self::membership`].
    pub async fn readable(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
    ) -> Result<(DialogRecord, Reading), MessagingError> {
        self.readable_of(ctx, who, dialog_id, op, None).await
    }

    /// [`Self::readable`] for a read of an item within the dialog (`file/<id>`): a denial
    /// is recorded against the item, with the dialog as a detail.
    pub async fn readable_for(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
        item: &str,
    ) -> Result<(DialogRecord, Reading), MessagingError> {
        self.readable_of(ctx, who, dialog_id, op, Some(item)).await
    }

    async fn readable_of(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
        item: Option<&str>,
    ) -> Result<(DialogRecord, Reading), MessagingError> {
        let dialog = self.store.dialog_by_id(dialog_id).await?.ok_or(MessagingError::NotFound)?;
        if let Some(member) = self.store.member(dialog_id, who.user_id).await? {
            let facts = Facts { dialog_member: Some(true), breakglass: Some(false) };
            self.decide(ctx, who, dialog_id, op, facts, item).await?;
            return Ok((dialog, Reading::Member(member)));
        }
        let grant = self.access.active_grant(who.user_id, dialog_id, ctx.now).await?;
        let facts = Facts { dialog_member: Some(false), breakglass: Some(grant.is_some()) };
        self.decide(ctx, who, dialog_id, op, facts, item).await?;
        let Some(grant) = grant else { return Ok((dialog, Reading::Policy)) };
        // Recorded as break-glass unless the policies allow the read without the grant.
        let without = Facts { dialog_member: Some(false), breakglass: Some(false) };
        let needs_grant = !who.decide(op.action, &format!("dialog/{dialog_id}"), ctx.now, without).allowed;
        Ok((dialog, if needs_grant { Reading::BreakGlass(grant) } else { Reading::Policy }))
    }

    /// Asks the engine; records and refuses a denial.
    async fn decide(
        &self,
        ctx: &Context,
        who: &Principal,
        dialog_id: Uuid,
        op: Op,
        facts: Facts,
        item: Option<&str>,
    ) -> Result<ward_access::Decision, MessagingError> {
        let resource = format!("dialog/{dialog_id}");
        let decision = who.decide(op.action, &resource, ctx.now, facts);
        if decision.allowed {
            return Ok(decision);
        }
        let event = ward_access::denial_event(ctx, op.audit, op.action, &resource, &decision);
        self.audit.record_alone(&on(event, dialog_id, item)).await?;
        if facts.dialog_member == Some(true) {
            Err(MessagingError::Forbidden(format!("the caller's policies do not allow {} here", op.action)))
        } else {
            Err(MessagingError::NotFound)
        }
    }

    /// The dialog's data key.
    pub(crate) async fn dialog_key(&self, dialog: &DialogRecord) -> Result<DataKey, MessagingError> {
        Ok(self.keys.by_id(dialog.data_key_id).await?)
    }

    /// Opens a stored message for a member.
    pub(crate) fn open_message(key: &DataKey, r: &MessageRecord) -> Result<Message, MessagingError> {
        let body = match &r.body_sealed {
            Some(sealed) => {
                let edited_ms = r.edited_at.map_or(0, crate::sealing::stored_ms);
                let plain = ward_keys::open(key, &message_aad(r.dialog_id, r.id, r.data_key_id, edited_ms), sealed)?;
                Some(
                    String::from_utf8(plain.to_vec())
                        .map_err(|_| MessagingError::Keys(ward_keys::KeyError::Integrity))?,
                )
            }
            None => None,
        };
        Ok(Message {
            id: r.id,
            seq: r.seq,
            dialog_id: r.dialog_id,
            sender_id: r.sender_id,
            body,
            client_msg_id: r.client_msg_id.clone(),
            attachments: r.attachments.clone(),
            created_at: r.created_at,
            edited_at: r.edited_at,
            deleted_at: r.deleted_at,
        })
    }

    /// Opens a dialog's name.
    pub(crate) fn open_name(key: &DataKey, d: &DialogRecord) -> Result<Option<String>, MessagingError> {
        match &d.name_sealed {
            Some(sealed) => {
                let plain = ward_keys::open(key, &dialog_name_aad(d.id, d.data_key_id), sealed)?;
                Ok(Some(
                    String::from_utf8(plain.to_vec())
                        .map_err(|_| MessagingError::Keys(ward_keys::KeyError::Integrity))?,
                ))
            }
            None => Ok(None),
        }
    }
}

/// Reads until the row is there: after a uniqueness conflict with another request, whose
/// commit may still be in flight (a commit batch takes milliseconds). Gives up after 1 s.
pub(crate) async fn eventually<T, F, Fut>(mut read: F) -> Result<Option<T>, ward_storage::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, ward_storage::StoreError>>,
{
    for _ in 0..50 {
        if let Some(found) = read().await? {
            return Ok(Some(found));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    read().await
}

impl std::fmt::Debug for NewDialog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDialog").field("kind", &self.kind).field("members", &self.members).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("body_bytes", &self.body.len())
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Dialog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialog")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("members", &self.members)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("dialog_id", &self.dialog_id)
            .field("seq", &self.seq)
            .field("sender_id", &self.sender_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("messages", &self.messages).field("next_cursor", &self.next_cursor).finish()
    }
}

/// Points a record at the item acted on, when there is one (the dialog becomes a detail),
/// else at the dialog.
fn on(event: AuditEvent, dialog_id: Uuid, item: Option<&str>) -> AuditEvent {
    match item {
        Some(item) => event.resource(item).detail("dialog_id", dialog_id.to_string()),
        None => event.resource(format!("dialog/{dialog_id}")),
    }
}
