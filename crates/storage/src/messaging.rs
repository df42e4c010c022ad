//! Dialogs, members and messages: rows, SQL and the trait bodies both engines share
//! (stamped by [`impl_messaging_stores!`], as in `common.rs`).
//!
//! Names and bodies arrive and leave sealed; this layer never sees plaintext. A dialog's
//! `last_seq` is its message counter: [`crate::MessagingTx::next_seq`] advances it with
//! one `UPDATE … RETURNING`, which holds the row lock (PostgreSQL) or the write lock
//! (SQLite) until the transaction ends, so numbers are consecutive and a rollback leaves
//! no gap. Unique rules (one private dialog per pair, one message per client id and
//! sender) are checked with `ON CONFLICT DO NOTHING`, so a [`StoreError::Conflict`]
//! leaves the transaction usable on both engines (a failed statement would abort a
//! PostgreSQL transaction).

use uuid::Uuid;

use crate::StoreError;
use crate::model::{DialogRecord, MemberRecord, MessageRecord};
use crate::rows::{from_millis, uuid};

#[derive(sqlx::FromRow)]
pub(crate) struct DialogRow {
    id: String,
    kind: String,
    name_sealed: Option<Vec<u8>>,
    data_key_id: String,
    pair_key: Option<String>,
    created_by: String,
    created_at: i64,
    last_seq: i64,
}

impl TryFrom<DialogRow> for DialogRecord {
    type Error = StoreError;
    fn try_from(r: DialogRow) -> Result<Self, StoreError> {
        Ok(DialogRecord {
            id: uuid(&r.id)?,
            kind: r.kind,
            name_sealed: r.name_sealed,
            data_key_id: uuid(&r.data_key_id)?,
            pair_key: r.pair_key,
            created_by: uuid(&r.created_by)?,
            created_at: from_millis(r.created_at)?,
            last_seq: r.last_seq,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MemberRow {
    dialog_id: String,
    user_id: String,
    role: String,
    joined_at: i64,
    last_read_seq: i64,
}

impl TryFrom<MemberRow> for MemberRecord {
    type Error = StoreError;
    fn try_from(r: MemberRow) -> Result<Self, StoreError> {
        Ok(MemberRecord {
            dialog_id: uuid(&r.dialog_id)?,
            user_id: uuid(&r.user_id)?,
            role: r.role,
            joined_at: from_millis(r.joined_at)?,
            last_read_seq: r.last_read_seq,
        })
    }
}

/// A dialog with one membership of it (the two column sets do not overlap).
#[derive(sqlx::FromRow)]
pub(crate) struct DialogMemberRow {
    #[sqlx(flatten)]
    dialog: DialogRow,
    #[sqlx(flatten)]
    member: MemberRow,
}

impl TryFrom<DialogMemberRow> for (DialogRecord, MemberRecord) {
    type Error = StoreError;
    fn try_from(r: DialogMemberRow) -> Result<Self, StoreError> {
        Ok((r.dialog.try_into()?, r.member.try_into()?))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: String,
    dialog_id: String,
    seq: i64,
    sender_id: String,
    client_msg_id: Option<String>,
    body_sealed: Option<Vec<u8>>,
    data_key_id: String,
    attachments: String,
    created_at: i64,
    edited_at: Option<i64>,
    deleted_at: Option<i64>,
}

impl TryFrom<MessageRow> for MessageRecord {
    type Error = StoreError;
    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        let attachments: Vec<String> = serde_json::from_str(&r.attachments)
            .map_err(|e| StoreError::Corrupt(format!("message {} attachments: {e}", r.id)))?;
        Ok(MessageRecord {
            id: uuid(&r.id)?,
            dialog_id: uuid(&r.dialog_id)?,
            seq: r.seq,
            sender_id: uuid(&r.sender_id)?,
            client_msg_id: r.client_msg_id,
            body_sealed: r.body_sealed,
            data_key_id: uuid(&r.data_key_id)?,
            attachments: attachments.iter().map(|a| uuid(a)).collect::<Result<_, _>>()?,
            created_at: from_millis(r.created_at)?,
            edited_at: r.edited_at.map(from_millis).transpose()?,
            deleted_at: r.deleted_at.map(from_millis).transpose()?,
        })
    }
}

/// The `attachments` column: a JSON array of UUID strings.
pub(crate) fn attachments_json(ids: &[Uuid]) -> String {
    serde_json::Value::from(ids.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string()
}

/// The `(after, before, limit, newest_first)` bounds of a history page: exclusive seq
/// bounds (open ends widened to the whole range) and a non-negative limit. With only
/// `before` given, the page is the newest `limit` below it, read newest first.
pub(crate) fn history_bounds(q: crate::HistoryQuery) -> (i64, i64, i64, bool) {
    let newest_first = q.before.is_some() && q.after.is_none();
    (q.after.unwrap_or(i64::MIN), q.before.unwrap_or(i64::MAX), q.limit.max(0), newest_first)
}

/// SQL shared by both engines.
pub(crate) mod sql {
    pub const DIALOG_BY_ID: &str = "SELECT id, kind, name_sealed, data_key_id, pair_key, created_by, created_at, last_seq \
         FROM dialogs WHERE id = $1";
    pub const DIALOG_BY_PAIR: &str = "SELECT id, kind, name_sealed, data_key_id, pair_key, created_by, created_at, last_seq \
         FROM dialogs WHERE pair_key = $1";
    pub const DIALOGS_OF_USER: &str = "SELECT d.id, d.kind, d.name_sealed, d.data_key_id, d.pair_key, d.created_by, \
         d.created_at, d.last_seq, m.dialog_id, m.user_id, m.role, m.joined_at, m.last_read_seq \
         FROM dialog_members m JOIN dialogs d ON d.id = m.dialog_id \
         LEFT JOIN messages last ON last.dialog_id = d.id AND last.seq = d.last_seq \
         WHERE m.user_id = $1 \
         ORDER BY COALESCE(last.created_at, d.created_at) DESC, d.id DESC";
    /// `ON CONFLICT DO NOTHING`: a taken pair (or id) affects no row, reported as a conflict.
    pub const INSERT_DIALOG: &str = "INSERT INTO dialogs (id, kind, name_sealed, data_key_id, pair_key, created_by, \
         created_at, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
    pub const NEXT_SEQ: &str = "UPDATE dialogs SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq";

    pub const MEMBERS: &str = "SELECT dialog_id, user_id, role, joined_at, last_read_seq FROM dialog_members \
         WHERE dialog_id = $1 ORDER BY joined_at, user_id";
    pub const MEMBER: &str = "SELECT dialog_id, user_id, role, joined_at, last_read_seq FROM dialog_members \
         WHERE dialog_id = $1 AND user_id = $2";
    pub const INSERT_MEMBER: &str = "INSERT INTO dialog_members (dialog_id, user_id, role, joined_at, last_read_seq) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    pub const REMOVE_MEMBER: &str = "DELETE FROM dialog_members WHERE dialog_id = $1 AND user_id = $2";
    pub const MARK_READ: &str = "UPDATE dialog_members SET last_read_seq = $3 \
         WHERE dialog_id = $1 AND user_id = $2 AND last_read_seq < $3";

    pub const MESSAGE_BY_ID: &str = "SELECT id, dialog_id, seq, sender_id, client_msg_id, body_sealed, data_key_id, \
         attachments, created_at, edited_at, deleted_at FROM messages WHERE dialog_id = $1 AND id = $2";
    pub const MESSAGE_BY_CLIENT_ID: &str = "SELECT id, dialog_id, seq, sender_id, client_msg_id, body_sealed, \
         data_key_id, attachments, created_at, edited_at, deleted_at FROM messages \
         WHERE dialog_id = $1 AND sender_id = $2 AND client_msg_id = $3";
    /// Oldest first above `$2`, below `$3`.
    pub const HISTORY_ASC: &str = "SELECT id, dialog_id, seq, sender_id, client_msg_id, body_sealed, data_key_id, \
         attachments, created_at, edited_at, deleted_at FROM messages \
         WHERE dialog_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4";
    /// Newest first above `$2`, below `$3` (the caller reverses the page).
    pub const HISTORY_DESC: &str = "SELECT id, dialog_id, seq, sender_id, client_msg_id, body_sealed, data_key_id, \
         attachments, created_at, edited_at, deleted_at FROM messages \
         WHERE dialog_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4";
    /// `ON CONFLICT DO NOTHING`: a taken (dialog, sender, client id), seq or id affects no
    /// row, reported as a conflict.
    pub const INSERT_MESSAGE: &str = "INSERT INTO messages (id, dialog_id, seq, sender_id, client_msg_id, body_sealed, \
         data_key_id, attachments, created_at, edited_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING";
    /// Keeps the body an edit replaces (run before [`EDIT_MESSAGE`]).
    pub const KEEP_EDITED_BODY: &str = "INSERT INTO message_edits (message_id, edited_at, body_sealed) \
         SELECT id, $3, body_sealed FROM messages \
         WHERE dialog_id = $1 AND id = $2 AND deleted_at IS NULL AND body_sealed IS NOT NULL";
    pub const EDIT_MESSAGE: &str = "UPDATE messages SET body_sealed = $3, edited_at = $4 \
         WHERE dialog_id = $1 AND id = $2 AND deleted_at IS NULL";
    pub const DELETE_MESSAGE: &str = "UPDATE messages SET body_sealed = NULL, deleted_at = $3 \
         WHERE dialog_id = $1 AND id = $2 AND deleted_at IS NULL";
    pub const DELETE_EDITS: &str = "DELETE FROM message_edits WHERE message_id = $1";
}

macro_rules! impl_messaging_stores {
    ($store:ty, $tx:ty) => {
        #[async_trait::async_trait]
        impl $crate::MessagingStore for $store {
            async fn dialog_by_id(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::DialogRecord>> {
                sqlx::query_as::<_, $crate::messaging::DialogRow>($crate::messaging::sql::DIALOG_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn private_dialog(&self, pair_key: &str) -> $crate::Result<Option<$crate::DialogRecord>> {
                sqlx::query_as::<_, $crate::messaging::DialogRow>($crate::messaging::sql::DIALOG_BY_PAIR)
                    .bind(pair_key)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn dialogs_of_user(
                &self,
                user_id: uuid::Uuid,
            ) -> $crate::Result<Vec<($crate::DialogRecord, $crate::MemberRecord)>> {
                sqlx::query_as::<_, $crate::messaging::DialogMemberRow>($crate::messaging::sql::DIALOGS_OF_USER)
                    .bind(user_id.to_string())
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn members(&self, dialog_id: uuid::Uuid) -> $crate::Result<Vec<$crate::MemberRecord>> {
                sqlx::query_as::<_, $crate::messaging::MemberRow>($crate::messaging::sql::MEMBERS)
                    .bind(dialog_id.to_string())
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn member(
                &self,
                dialog_id: uuid::Uuid,
                user_id: uuid::Uuid,
            ) -> $crate::Result<Option<$crate::MemberRecord>> {
                sqlx::query_as::<_, $crate::messaging::MemberRow>($crate::messaging::sql::MEMBER)
                    .bind(dialog_id.to_string())
                    .bind(user_id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn message_by_id(
                &self,
                dialog_id: uuid::Uuid,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<$crate::MessageRecord>> {
                sqlx::query_as::<_, $crate::messaging::MessageRow>($crate::messaging::sql::MESSAGE_BY_ID)
                    .bind(dialog_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn message_by_client_id(
                &self,
                dialog_id: uuid::Uuid,
                sender_id: uuid::Uuid,
                client_msg_id: &str,
            ) -> $crate::Result<Option<$crate::MessageRecord>> {
                sqlx::query_as::<_, $crate::messaging::MessageRow>($crate::messaging::sql::MESSAGE_BY_CLIENT_ID)
                    .bind(dialog_id.to_string())
                    .bind(sender_id.to_string())
                    .bind(client_msg_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn messages(
                &self,
                dialog_id: uuid::Uuid,
                query: $crate::HistoryQuery,
            ) -> $crate::Result<Vec<$crate::MessageRecord>> {
                let (after, before, limit, newest_first) = $crate::messaging::history_bounds(query);
                let sql = if newest_first {
                    $crate::messaging::sql::HISTORY_DESC
                } else {
                    $crate::messaging::sql::HISTORY_ASC
                };
                let mut page: Vec<$crate::MessageRecord> = sqlx::query_as::<_, $crate::messaging::MessageRow>(sql)
                    .bind(dialog_id.to_string())
                    .bind(after)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<_>>()?;
                if newest_first {
                    page.reverse();
                }
                Ok(page)
            }
        }

        #[async_trait::async_trait]
        impl $crate::MessagingTx for $tx {
            async fn insert_dialog(&mut self, d: &$crate::DialogRecord) -> $crate::Result<()> {
                let n = sqlx::query($crate::messaging::sql::INSERT_DIALOG)
                    .bind(d.id.to_string())
                    .bind(&d.kind)
                    .bind(d.name_sealed.as_deref())
                    .bind(d.data_key_id.to_string())
                    .bind(d.pair_key.as_deref())
                    .bind(d.created_by.to_string())
                    .bind($crate::rows::millis(d.created_at))
                    .bind(d.last_seq)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if n == 1 { Ok(()) } else { Err($crate::StoreError::Conflict("pair_key")) }
            }

            async fn insert_member(&mut self, m: &$crate::MemberRecord) -> $crate::Result<bool> {
                let n = sqlx::query($crate::messaging::sql::INSERT_MEMBER)
                    .bind(m.dialog_id.to_string())
                    .bind(m.user_id.to_string())
                    .bind(&m.role)
                    .bind($crate::rows::millis(m.joined_at))
                    .bind(m.last_read_seq)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn remove_member(&mut self, dialog_id: uuid::Uuid, user_id: uuid::Uuid) -> $crate::Result<bool> {
                let n = sqlx::query($crate::messaging::sql::REMOVE_MEMBER)
                    .bind(dialog_id.to_string())
                    .bind(user_id.to_string())
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn next_seq(&mut self, dialog_id: uuid::Uuid) -> $crate::Result<Option<i64>> {
                Ok(sqlx::query_scalar($crate::messaging::sql::NEXT_SEQ)
                    .bind(dialog_id.to_string())
                    .fetch_optional(self.conn())
                    .await?)
            }

            async fn insert_message(&mut self, m: &$crate::MessageRecord) -> $crate::Result<()> {
                let n = sqlx::query($crate::messaging::sql::INSERT_MESSAGE)
                    .bind(m.id.to_string())
                    .bind(m.dialog_id.to_string())
                    .bind(m.seq)
                    .bind(m.sender_id.to_string())
                    .bind(m.client_msg_id.as_deref())
                    .bind(m.body_sealed.as_deref())
                    .bind(m.data_key_id.to_string())
                    .bind($crate::messaging::attachments_json(&m.attachments))
                    .bind($crate::rows::millis(m.created_at))
                    .bind(m.edited_at.map($crate::rows::millis))
                    .bind(m.deleted_at.map($crate::rows::millis))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if n == 1 { Ok(()) } else { Err($crate::StoreError::Conflict("client_msg_id or seq")) }
            }

            async fn edit_message(
                &mut self,
                dialog_id: uuid::Uuid,
                id: uuid::Uuid,
                body_sealed: &[u8],
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let now = $crate::rows::millis(now);
                sqlx::query($crate::messaging::sql::KEEP_EDITED_BODY)
                    .bind(dialog_id.to_string())
                    .bind(id.to_string())
                    .bind(now)
                    .execute(self.conn())
                    .await?;
                let n = sqlx::query($crate::messaging::sql::EDIT_MESSAGE)
                    .bind(dialog_id.to_string())
                    .bind(id.to_string())
                    .bind(body_sealed)
                    .bind(now)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn delete_message(
                &mut self,
                dialog_id: uuid::Uuid,
                id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::messaging::sql::DELETE_MESSAGE)
                    .bind(dialog_id.to_string())
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if n == 1 {
                    sqlx::query($crate::messaging::sql::DELETE_EDITS).bind(id.to_string()).execute(self.conn()).await?;
                }
                Ok(n == 1)
            }

            async fn mark_read(
                &mut self,
                dialog_id: uuid::Uuid,
                user_id: uuid::Uuid,
                up_to_seq: i64,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::messaging::sql::MARK_READ)
                    .bind(dialog_id.to_string())
                    .bind(user_id.to_string())
                    .bind(up_to_seq)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    };
}

pub(crate) use impl_messaging_stores;
