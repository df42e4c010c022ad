//! Access control: managed policies, their attachments, break-glass grants and the reads
//! an access review needs. Rows, SQL and the trait bodies both engines share (stamped by
//! [`impl_access_stores!`], as in `common.rs`).
//!
//! Policy documents are stored as the JSON text they arrive as; their meaning belongs to
//! `ward-access`. Every write is an upsert, a delete or an update guarded by its `WHERE`
//! clause, and a duplicate grant id is caught with `ON CONFLICT DO NOTHING`, so no
//! statement fails half-way through a transaction (which would abort it on PostgreSQL).
//! Attachments are only written for a policy that exists (checked first, under the
//! write lock every transaction holds), so their foreign key never fails either.

use crate::StoreError;
use crate::model::{BreakGlassGrant, GrantReason, PolicyAttachment, PolicyRecord};
use crate::rows::{from_millis, uuid};

/// Most grants [`crate::AccessStore::breakglass_grants_since`] returns.
pub(crate) const GRANTS_SINCE_LIMIT: i64 = 10_000;

#[derive(sqlx::FromRow)]
pub(crate) struct PolicyRow {
    name: String,
    document: String,
    created_at: i64,
    updated_at: i64,
    updated_by: Option<String>,
}

impl TryFrom<PolicyRow> for PolicyRecord {
    type Error = StoreError;
    fn try_from(r: PolicyRow) -> Result<Self, StoreError> {
        Ok(PolicyRecord {
            name: r.name,
            document: r.document,
            created_at: from_millis(r.created_at)?,
            updated_at: from_millis(r.updated_at)?,
            updated_by: r.updated_by.as_deref().map(uuid).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttachmentRow {
    policy_name: String,
    principal_kind: String,
    principal: String,
}

impl From<AttachmentRow> for PolicyAttachment {
    fn from(r: AttachmentRow) -> Self {
        PolicyAttachment { policy_name: r.policy_name, principal_kind: r.principal_kind, principal: r.principal }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct GrantRow {
    id: String,
    user_id: String,
    dialog_id: String,
    reason: String,
    reason_sealed: Option<Vec<u8>>,
    reason_key_id: Option<String>,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

impl TryFrom<GrantRow> for BreakGlassGrant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> Result<Self, StoreError> {
        Ok(BreakGlassGrant {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            dialog_id: uuid(&r.dialog_id)?,
            reason: match (r.reason_sealed, r.reason_key_id) {
                (Some(sealed), Some(key_id)) => GrantReason::Sealed { key_id: uuid(&key_id)?, sealed },
                _ => GrantReason::Legacy(r.reason),
            },
            created_at: from_millis(r.created_at)?,
            expires_at: from_millis(r.expires_at)?,
            revoked_at: r.revoked_at.map(from_millis).transpose()?,
            revoked_by: r.revoked_by.as_deref().map(uuid).transpose()?,
        })
    }
}

/// `(user id, time)` pairs as read: ids parsed, times from milliseconds.
pub(crate) fn sign_ins(rows: Vec<(String, i64)>) -> Result<Vec<(uuid::Uuid, time::OffsetDateTime)>, StoreError> {
    rows.into_iter().map(|(user, at)| Ok((uuid(&user)?, from_millis(at)?))).collect()
}

/// `(user id, dialog id)` pairs as read, ids parsed.
pub(crate) fn pairs(rows: Vec<(String, String)>) -> Result<Vec<(uuid::Uuid, uuid::Uuid)>, StoreError> {
    rows.into_iter().map(|(a, b)| Ok((uuid(&a)?, uuid(&b)?))).collect()
}

/// Refuses attachments naming another policy than the one being replaced, before any
/// statement runs.
pub(crate) fn check_attachments(policy_name: &str, attachments: &[PolicyAttachment]) -> Result<(), StoreError> {
    match attachments.iter().find(|a| a.policy_name != policy_name) {
        Some(a) => Err(StoreError::Database(sqlx::Error::InvalidArgument(format!(
            "an attachment of policy {:?} was given to replace the attachments of {policy_name:?}",
            a.policy_name
        )))),
        None => Ok(()),
    }
}

/// The refusal to attach a policy that does not exist.
pub(crate) fn no_such_policy(policy_name: &str) -> StoreError {
    StoreError::Database(sqlx::Error::InvalidArgument(format!("there is no policy named {policy_name:?}")))
}

/// SQL shared by both engines.
///
/// Policy names and principals are free text, and PostgreSQL orders text by the
/// database's collation while SQLite compares bytes, so those lists are sorted in Rust
/// (byte order, the same on both engines). Ids are lower-case UUID text, ordered alike by
/// either.
pub(crate) mod sql {
    pub const POLICIES: &str = "SELECT name, document, created_at, updated_at, updated_by FROM policies";
    pub const POLICY_ATTACHMENTS: &str = "SELECT policy_name, principal_kind, principal FROM policy_attachments";
    /// The columns of a [`super::GrantRow`].
    macro_rules! grant_columns {
        () => {
            "SELECT id, user_id, dialog_id, reason, reason_sealed, reason_key_id, created_at, expires_at, \
             revoked_at, revoked_by FROM breakglass_grants "
        };
    }
    /// The live grant expiring last (ties: the newest id).
    pub const ACTIVE_GRANT: &str = concat!(
        grant_columns!(),
        "WHERE user_id = $1 AND dialog_id = $2 AND revoked_at IS NULL AND expires_at > $3 \
         ORDER BY expires_at DESC, id DESC LIMIT 1"
    );
    pub const GRANT_BY_ID: &str = concat!(grant_columns!(), "WHERE id = $1");
    pub const GRANTS_SINCE: &str =
        concat!(grant_columns!(), "WHERE created_at >= $1 ORDER BY created_at DESC, id DESC LIMIT $2");
    pub const GRANTS_UNSEALED: &str =
        concat!(grant_columns!(), "WHERE reason_sealed IS NULL ORDER BY created_at, id LIMIT $1");
    /// Sign-ins only: a temporary credential (STS) has an `assumed_role`.
    pub const LAST_SIGN_INS: &str = "SELECT user_id, MAX(created_at) FROM sessions \
         WHERE assumed_role IS NULL GROUP BY user_id ORDER BY user_id";
    pub const MEMBERSHIPS: &str = "SELECT user_id, dialog_id FROM dialog_members ORDER BY user_id, dialog_id";

    /// Insert, or replace the document of an existing policy (its `created_at` stays).
    pub const PUT_POLICY: &str = "INSERT INTO policies (name, document, created_at, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET document = excluded.document, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by";
    pub const POLICY_EXISTS: &str = "SELECT COUNT(*) FROM policies WHERE name = $1";
    pub const DELETE_POLICY: &str = "DELETE FROM policies WHERE name = $1";
    pub const DELETE_ATTACHMENTS: &str = "DELETE FROM policy_attachments WHERE policy_name = $1";
    /// A duplicate in the new set affects no row.
    pub const INSERT_ATTACHMENT: &str = "INSERT INTO policy_attachments (policy_name, principal_kind, principal) \
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    /// `ON CONFLICT DO NOTHING`: a taken id affects no row, reported as a conflict.
    pub const INSERT_GRANT: &str = "INSERT INTO breakglass_grants (id, user_id, dialog_id, reason, reason_sealed, \
         reason_key_id, created_at, expires_at, revoked_at, revoked_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING";
    pub const SEAL_GRANT_REASON: &str = "UPDATE breakglass_grants SET reason_sealed = $2, reason_key_id = $3, \
         reason = '' WHERE id = $1 AND reason_sealed IS NULL";
    pub const REVOKE_GRANT: &str =
        "UPDATE breakglass_grants SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL";
}

macro_rules! impl_access_stores {
    ($store:ty, $tx:ty) => {
        #[async_trait::async_trait]
        impl $crate::AccessStore for $store {
            async fn policies(&self) -> $crate::Result<Vec<$crate::PolicyRecord>> {
                let mut policies = sqlx::query_as::<_, $crate::access::PolicyRow>($crate::access::sql::POLICIES)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<Vec<$crate::PolicyRecord>>>()?;
                policies.sort_unstable_by(|a, b| a.name.cmp(&b.name));
                Ok(policies)
            }

            async fn policy_attachments(&self) -> $crate::Result<Vec<$crate::PolicyAttachment>> {
                let mut attachments: Vec<$crate::PolicyAttachment> =
                    sqlx::query_as::<_, $crate::access::AttachmentRow>($crate::access::sql::POLICY_ATTACHMENTS)
                        .fetch_all(&self.pool)
                        .await?
                        .into_iter()
                        .map(Into::into)
                        .collect();
                attachments.sort_unstable();
                Ok(attachments)
            }

            async fn active_breakglass_grant(
                &self,
                user_id: uuid::Uuid,
                dialog_id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> $crate::Result<Option<$crate::BreakGlassGrant>> {
                sqlx::query_as::<_, $crate::access::GrantRow>($crate::access::sql::ACTIVE_GRANT)
                    .bind(user_id.to_string())
                    .bind(dialog_id.to_string())
                    .bind($crate::rows::millis(now))
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn breakglass_grant(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::BreakGlassGrant>> {
                sqlx::query_as::<_, $crate::access::GrantRow>($crate::access::sql::GRANT_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn breakglass_grants_since(
                &self,
                since: time::OffsetDateTime,
            ) -> $crate::Result<Vec<$crate::BreakGlassGrant>> {
                sqlx::query_as::<_, $crate::access::GrantRow>($crate::access::sql::GRANTS_SINCE)
                    .bind($crate::rows::millis(since))
                    .bind($crate::access::GRANTS_SINCE_LIMIT)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn breakglass_grants_unsealed(&self) -> $crate::Result<Vec<$crate::BreakGlassGrant>> {
                sqlx::query_as::<_, $crate::access::GrantRow>($crate::access::sql::GRANTS_UNSEALED)
                    .bind($crate::access::GRANTS_SINCE_LIMIT)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn last_sign_ins(&self) -> $crate::Result<Vec<(uuid::Uuid, time::OffsetDateTime)>> {
                $crate::access::sign_ins(
                    sqlx::query_as::<_, (String, i64)>($crate::access::sql::LAST_SIGN_INS)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn memberships(&self) -> $crate::Result<Vec<(uuid::Uuid, uuid::Uuid)>> {
                $crate::access::pairs(
                    sqlx::query_as::<_, (String, String)>($crate::access::sql::MEMBERSHIPS)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }
        }

        #[async_trait::async_trait]
        impl $crate::AccessTx for $tx {
            async fn put_policy(&mut self, p: &$crate::PolicyRecord) -> $crate::Result<()> {
                sqlx::query($crate::access::sql::PUT_POLICY)
                    .bind(&p.name)
                    .bind(&p.document)
                    .bind($crate::rows::millis(p.created_at))
                    .bind($crate::rows::millis(p.updated_at))
                    .bind(p.updated_by.map(|u| u.to_string()))
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn delete_policy(&mut self, name: &str) -> $crate::Result<bool> {
                sqlx::query($crate::access::sql::DELETE_ATTACHMENTS).bind(name).execute(self.conn()).await?;
                let n = sqlx::query($crate::access::sql::DELETE_POLICY)
                    .bind(name)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn replace_policy_attachments(
                &mut self,
                policy_name: &str,
                attachments: &[$crate::PolicyAttachment],
            ) -> $crate::Result<()> {
                $crate::access::check_attachments(policy_name, attachments)?;
                if !attachments.is_empty() {
                    let exists: i64 = sqlx::query_scalar($crate::access::sql::POLICY_EXISTS)
                        .bind(policy_name)
                        .fetch_one(self.conn())
                        .await?;
                    if exists == 0 {
                        return Err($crate::access::no_such_policy(policy_name));
                    }
                }
                sqlx::query($crate::access::sql::DELETE_ATTACHMENTS).bind(policy_name).execute(self.conn()).await?;
                for a in attachments {
                    sqlx::query($crate::access::sql::INSERT_ATTACHMENT)
                        .bind(policy_name)
                        .bind(&a.principal_kind)
                        .bind(&a.principal)
                        .execute(self.conn())
                        .await?;
                }
                Ok(())
            }

            async fn insert_breakglass_grant(&mut self, g: &$crate::BreakGlassGrant) -> $crate::Result<()> {
                let n = sqlx::query($crate::access::sql::INSERT_GRANT)
                    .bind(g.id.to_string())
                    .bind(g.user_id.to_string())
                    .bind(g.dialog_id.to_string())
                    .bind(match &g.reason {
                        $crate::GrantReason::Legacy(plain) => plain.as_str(),
                        $crate::GrantReason::Sealed { .. } => "",
                    })
                    .bind(match &g.reason {
                        $crate::GrantReason::Sealed { sealed, .. } => Some(sealed.as_slice()),
                        $crate::GrantReason::Legacy(_) => None,
                    })
                    .bind(match &g.reason {
                        $crate::GrantReason::Sealed { key_id, .. } => Some(key_id.to_string()),
                        $crate::GrantReason::Legacy(_) => None,
                    })
                    .bind($crate::rows::millis(g.created_at))
                    .bind($crate::rows::millis(g.expires_at))
                    .bind(g.revoked_at.map($crate::rows::millis))
                    .bind(g.revoked_by.map(|u| u.to_string()))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if n == 1 { Ok(()) } else { Err($crate::StoreError::Conflict("id")) }
            }

            async fn revoke_breakglass_grant(
                &mut self,
                id: uuid::Uuid,
                now: time::OffsetDateTime,
                by: Option<uuid::Uuid>,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::access::sql::REVOKE_GRANT)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .bind(by.map(|u| u.to_string()))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn seal_breakglass_reason(
                &mut self,
                id: uuid::Uuid,
                key_id: uuid::Uuid,
                sealed: &[u8],
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::access::sql::SEAL_GRANT_REASON)
                    .bind(id.to_string())
                    .bind(sealed)
                    .bind(key_id.to_string())
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    };
}

pub(crate) use impl_access_stores;
