//! Data keys, second factors, sign-in challenges and API keys: rows, SQL and the trait
//! bodies both engines share (stamped by [`impl_credential_stores!`], as in `common.rs`).

use uuid::Uuid;

use crate::StoreError;
use crate::model::{ApiKeyRecord, DataKeyRecord, MfaChallengeRecord, MfaFactorRecord};
use crate::rows::{from_millis, uuid};

#[derive(sqlx::FromRow)]
pub(crate) struct DataKeyRow {
    id: String,
    scope: String,
    key_version: i64,
    wrapped: Vec<u8>,
    created_at: i64,
    destroyed_at: Option<i64>,
}

impl TryFrom<DataKeyRow> for DataKeyRecord {
    type Error = StoreError;
    fn try_from(r: DataKeyRow) -> Result<Self, StoreError> {
        Ok(DataKeyRecord {
            id: uuid(&r.id)?,
            scope: r.scope,
            key_version: r.key_version,
            wrapped: r.wrapped,
            created_at: from_millis(r.created_at)?,
            destroyed_at: r.destroyed_at.map(from_millis).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct FactorRow {
    id: String,
    user_id: String,
    kind: String,
    state: String,
    secret: Vec<u8>,
    data_key_id: String,
    last_used_step: i64,
    created_at: i64,
    confirmed_at: Option<i64>,
}

impl TryFrom<FactorRow> for MfaFactorRecord {
    type Error = StoreError;
    fn try_from(r: FactorRow) -> Result<Self, StoreError> {
        Ok(MfaFactorRecord {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            kind: r.kind,
            state: r.state,
            secret: r.secret,
            data_key_id: uuid(&r.data_key_id)?,
            last_used_step: r.last_used_step,
            created_at: from_millis(r.created_at)?,
            confirmed_at: r.confirmed_at.map(from_millis).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ChallengeRow {
    id: String,
    token_hash: String,
    user_id: String,
    created_at: i64,
    expires_at: i64,
    attempts: i64,
    used_at: Option<i64>,
}

impl TryFrom<ChallengeRow> for MfaChallengeRecord {
    type Error = StoreError;
    fn try_from(r: ChallengeRow) -> Result<Self, StoreError> {
        Ok(MfaChallengeRecord {
            id: uuid(&r.id)?,
            token_hash: r.token_hash,
            user_id: uuid(&r.user_id)?,
            created_at: from_millis(r.created_at)?,
            expires_at: from_millis(r.expires_at)?,
            attempts: r.attempts,
            used_at: r.used_at.map(from_millis).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: String,
    user_id: String,
    name: String,
    key_hash: String,
    role: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKeyRecord {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            name: r.name,
            key_hash: r.key_hash,
            role: r.role,
            created_at: from_millis(r.created_at)?,
            expires_at: from_millis(r.expires_at)?,
            revoked_at: r.revoked_at.map(from_millis).transpose()?,
            last_used_at: r.last_used_at.map(from_millis).transpose()?,
        })
    }
}

pub(crate) fn id(u: Uuid) -> String {
    u.to_string()
}

/// SQL shared by both engines.
pub(crate) mod sql {
    pub const KEYRING_GET: &str = "SELECT revision, body FROM keyring WHERE id = 1";
    pub const KEYRING_INSERT: &str = "INSERT INTO keyring (id, revision, body, updated_at) VALUES (1, 1, $1, $2) \
         ON CONFLICT (id) DO NOTHING";
    pub const KEYRING_UPDATE: &str =
        "UPDATE keyring SET body = $2, revision = revision + 1, updated_at = $3 WHERE id = 1 AND revision = $1";
    pub const DATA_KEY_BY_SCOPE: &str =
        "SELECT id, scope, key_version, wrapped, created_at, destroyed_at FROM data_keys WHERE scope = $1";
    pub const DATA_KEY_BY_ID: &str =
        "SELECT id, scope, key_version, wrapped, created_at, destroyed_at FROM data_keys WHERE id = $1";
    pub const DATA_KEY_COUNTS: &str = "SELECT key_version, COUNT(*) FROM data_keys \
         WHERE destroyed_at IS NULL GROUP BY key_version ORDER BY key_version";
    pub const DATA_KEYS_TO_REWRAP: &str = "SELECT id, scope, key_version, wrapped, created_at, destroyed_at \
         FROM data_keys WHERE key_version < $1 AND destroyed_at IS NULL ORDER BY id LIMIT $2";
    pub const DESTROY_DATA_KEY: &str =
        "UPDATE data_keys SET wrapped = $2, destroyed_at = $3 WHERE id = $1 AND destroyed_at IS NULL";
    pub const REWRAP_DATA_KEY: &str = "UPDATE data_keys SET key_version = $3, wrapped = $4 WHERE id = $1 AND key_version = $2 AND destroyed_at IS NULL";
    pub const INSERT_DATA_KEY: &str = "INSERT INTO data_keys (id, scope, key_version, wrapped, created_at, \
         destroyed_at) VALUES ($1, $2, $3, $4, $5, $6)";

    pub const FACTORS_OF_USER: &str = "SELECT id, user_id, kind, state, secret, data_key_id, last_used_step, created_at, confirmed_at \
         FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id";
    pub const INSERT_FACTOR: &str = "INSERT INTO mfa_factors (id, user_id, kind, state, secret, data_key_id, last_used_step, created_at, confirmed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    pub const DELETE_PENDING_FACTORS: &str =
        "DELETE FROM mfa_factors WHERE user_id = $1 AND kind = $2 AND state = 'pending'";
    pub const DELETE_FACTORS: &str = "DELETE FROM mfa_factors WHERE user_id = $1";
    pub const ACTIVATE_FACTOR: &str = "UPDATE mfa_factors SET state = 'active', confirmed_at = $2 \
         WHERE id = $1 AND state = 'pending'";
    pub const USE_STEP: &str = "UPDATE mfa_factors SET last_used_step = $2 WHERE id = $1 AND last_used_step < $2";

    pub const DELETE_RECOVERY: &str = "DELETE FROM recovery_codes WHERE user_id = $1";
    pub const INSERT_RECOVERY: &str =
        "INSERT INTO recovery_codes (user_id, code_hash, created_at, used_at) VALUES ($1, $2, $3, NULL)";
    pub const USE_RECOVERY: &str = "UPDATE recovery_codes SET used_at = $3 \
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL";
    pub const RECOVERY_LEFT: &str = "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL";

    pub const INSERT_CHALLENGE: &str = "INSERT INTO mfa_challenges (id, token_hash, user_id, created_at, \
         expires_at, attempts, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub const CHALLENGE_BY_HASH: &str = "SELECT id, token_hash, user_id, created_at, expires_at, attempts, used_at \
         FROM mfa_challenges WHERE token_hash = $1";
    pub const CHALLENGE_ATTEMPT: &str =
        "UPDATE mfa_challenges SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts";
    pub const CONSUME_CHALLENGE: &str = "UPDATE mfa_challenges SET used_at = $2 WHERE id = $1 AND used_at IS NULL";
    pub const PURGE_CHALLENGES: &str = "DELETE FROM mfa_challenges WHERE expires_at < $1";
    pub const SET_SESSION_MFA: &str = "UPDATE sessions SET mfa_at = $2 WHERE id = $1 AND revoked_at IS NULL";

    pub const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, user_id, name, key_hash, role, created_at, expires_at, revoked_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    /// Never moves `last_used_at` backwards (nodes' requests may land out of order).
    pub const TOUCH_API_KEY: &str =
        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";
    pub const API_KEY_BY_HASH: &str = "SELECT id, user_id, name, key_hash, role, created_at, expires_at, revoked_at, last_used_at FROM api_keys WHERE key_hash = $1";
    pub const API_KEYS_OF_USER: &str = "SELECT id, user_id, name, key_hash, role, created_at, expires_at, revoked_at, last_used_at FROM api_keys \
         WHERE user_id = $1 ORDER BY created_at, id";
    pub const REVOKE_API_KEY: &str =
        "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL";
}

macro_rules! impl_credential_stores {
    ($store:ty, $tx:ty) => {
        #[async_trait::async_trait]
        impl $crate::CredentialStore for $store {
            async fn keyring_document(&self) -> $crate::Result<Option<(i64, Vec<u8>)>> {
                Ok(sqlx::query_as::<_, (i64, Vec<u8>)>($crate::credentials::sql::KEYRING_GET)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn data_key_by_scope(&self, scope: &str) -> $crate::Result<Option<$crate::DataKeyRecord>> {
                sqlx::query_as::<_, $crate::credentials::DataKeyRow>($crate::credentials::sql::DATA_KEY_BY_SCOPE)
                    .bind(scope)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn data_key_by_id(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::DataKeyRecord>> {
                sqlx::query_as::<_, $crate::credentials::DataKeyRow>($crate::credentials::sql::DATA_KEY_BY_ID)
                    .bind($crate::credentials::id(id))
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn data_key_counts(&self) -> $crate::Result<Vec<(i64, i64)>> {
                Ok(sqlx::query_as::<_, (i64, i64)>($crate::credentials::sql::DATA_KEY_COUNTS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn data_keys_to_rewrap(
                &self,
                below_version: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::DataKeyRecord>> {
                sqlx::query_as::<_, $crate::credentials::DataKeyRow>($crate::credentials::sql::DATA_KEYS_TO_REWRAP)
                    .bind(below_version)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn mfa_factors(&self, user_id: uuid::Uuid) -> $crate::Result<Vec<$crate::MfaFactorRecord>> {
                sqlx::query_as::<_, $crate::credentials::FactorRow>($crate::credentials::sql::FACTORS_OF_USER)
                    .bind($crate::credentials::id(user_id))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn recovery_codes_left(&self, user_id: uuid::Uuid) -> $crate::Result<i64> {
                Ok(sqlx::query_scalar($crate::credentials::sql::RECOVERY_LEFT)
                    .bind($crate::credentials::id(user_id))
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn mfa_challenge(&self, token_hash: &str) -> $crate::Result<Option<$crate::MfaChallengeRecord>> {
                sqlx::query_as::<_, $crate::credentials::ChallengeRow>($crate::credentials::sql::CHALLENGE_BY_HASH)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn api_key_by_hash(&self, key_hash: &str) -> $crate::Result<Option<$crate::ApiKeyRecord>> {
                sqlx::query_as::<_, $crate::credentials::ApiKeyRow>($crate::credentials::sql::API_KEY_BY_HASH)
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn touch_api_key(&self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<()> {
                // Joins the write batch, like session activity.
                let mut tx = self.writer.begin().await?;
                sqlx::query($crate::credentials::sql::TOUCH_API_KEY)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(tx.conn())
                    .await?;
                $crate::StoreTx::commit(Box::new(tx)).await
            }

            async fn api_keys(&self, user_id: uuid::Uuid) -> $crate::Result<Vec<$crate::ApiKeyRecord>> {
                sqlx::query_as::<_, $crate::credentials::ApiKeyRow>($crate::credentials::sql::API_KEYS_OF_USER)
                    .bind($crate::credentials::id(user_id))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::CredentialTx for $tx {
            async fn put_keyring_document(
                &mut self,
                expected_revision: Option<i64>,
                body: &[u8],
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let n = match expected_revision {
                    None => sqlx::query($crate::credentials::sql::KEYRING_INSERT)
                        .bind(body)
                        .bind($crate::rows::millis(now))
                        .execute(self.conn())
                        .await?
                        .rows_affected(),
                    Some(revision) => sqlx::query($crate::credentials::sql::KEYRING_UPDATE)
                        .bind(revision)
                        .bind(body)
                        .bind($crate::rows::millis(now))
                        .execute(self.conn())
                        .await?
                        .rows_affected(),
                };
                Ok(n == 1)
            }

            async fn insert_data_key(&mut self, k: &$crate::DataKeyRecord) -> $crate::Result<()> {
                sqlx::query($crate::credentials::sql::INSERT_DATA_KEY)
                    .bind($crate::credentials::id(k.id))
                    .bind(&k.scope)
                    .bind(k.key_version)
                    .bind(&k.wrapped)
                    .bind($crate::rows::millis(k.created_at))
                    .bind(k.destroyed_at.map($crate::rows::millis))
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn destroy_data_key(&mut self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::DESTROY_DATA_KEY)
                    .bind($crate::credentials::id(id))
                    .bind(Vec::<u8>::new())
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn rewrap_data_key(
                &mut self,
                id: uuid::Uuid,
                from_version: i64,
                to_version: i64,
                wrapped: &[u8],
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::REWRAP_DATA_KEY)
                    .bind($crate::credentials::id(id))
                    .bind(from_version)
                    .bind(to_version)
                    .bind(wrapped)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn insert_mfa_factor(&mut self, f: &$crate::MfaFactorRecord) -> $crate::Result<()> {
                sqlx::query($crate::credentials::sql::DELETE_PENDING_FACTORS)
                    .bind($crate::credentials::id(f.user_id))
                    .bind(&f.kind)
                    .execute(self.conn())
                    .await?;
                sqlx::query($crate::credentials::sql::INSERT_FACTOR)
                    .bind($crate::credentials::id(f.id))
                    .bind($crate::credentials::id(f.user_id))
                    .bind(&f.kind)
                    .bind(&f.state)
                    .bind(&f.secret)
                    .bind($crate::credentials::id(f.data_key_id))
                    .bind(f.last_used_step)
                    .bind($crate::rows::millis(f.created_at))
                    .bind(f.confirmed_at.map($crate::rows::millis))
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn activate_mfa_factor(&mut self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::ACTIVATE_FACTOR)
                    .bind($crate::credentials::id(id))
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn delete_mfa_factors(&mut self, user_id: uuid::Uuid) -> $crate::Result<()> {
                for q in [$crate::credentials::sql::DELETE_FACTORS, $crate::credentials::sql::DELETE_RECOVERY] {
                    sqlx::query(q).bind($crate::credentials::id(user_id)).execute(self.conn()).await?;
                }
                Ok(())
            }

            async fn use_totp_step(&mut self, id: uuid::Uuid, step: i64) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::USE_STEP)
                    .bind($crate::credentials::id(id))
                    .bind(step)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn replace_recovery_codes(
                &mut self,
                user_id: uuid::Uuid,
                hashes: &[String],
                now: time::OffsetDateTime,
            ) -> $crate::Result<()> {
                sqlx::query($crate::credentials::sql::DELETE_RECOVERY)
                    .bind($crate::credentials::id(user_id))
                    .execute(self.conn())
                    .await?;
                for h in hashes {
                    sqlx::query($crate::credentials::sql::INSERT_RECOVERY)
                        .bind($crate::credentials::id(user_id))
                        .bind(h)
                        .bind($crate::rows::millis(now))
                        .execute(self.conn())
                        .await?;
                }
                Ok(())
            }

            async fn use_recovery_code(
                &mut self,
                user_id: uuid::Uuid,
                hash: &str,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::USE_RECOVERY)
                    .bind($crate::credentials::id(user_id))
                    .bind(hash)
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn insert_mfa_challenge(&mut self, c: &$crate::MfaChallengeRecord) -> $crate::Result<()> {
                sqlx::query($crate::credentials::sql::PURGE_CHALLENGES)
                    .bind($crate::rows::millis(c.created_at))
                    .execute(self.conn())
                    .await?;
                sqlx::query($crate::credentials::sql::INSERT_CHALLENGE)
                    .bind($crate::credentials::id(c.id))
                    .bind(&c.token_hash)
                    .bind($crate::credentials::id(c.user_id))
                    .bind($crate::rows::millis(c.created_at))
                    .bind($crate::rows::millis(c.expires_at))
                    .bind(c.attempts)
                    .bind(c.used_at.map($crate::rows::millis))
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn count_challenge_attempt(&mut self, id: uuid::Uuid) -> $crate::Result<i64> {
                Ok(sqlx::query_scalar($crate::credentials::sql::CHALLENGE_ATTEMPT)
                    .bind($crate::credentials::id(id))
                    .fetch_one(self.conn())
                    .await?)
            }

            async fn consume_mfa_challenge(
                &mut self,
                id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::CONSUME_CHALLENGE)
                    .bind($crate::credentials::id(id))
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn revoke_user_sessions(
                &mut self,
                user_id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> $crate::Result<()> {
                sqlx::query($crate::rows::sql::REVOKE_USER_SESSIONS)
                    .bind($crate::credentials::id(user_id))
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?;
                self.note_session_change(Some(&user_id.to_string()), None, $crate::rows::millis(now)).await
            }

            async fn set_session_mfa(&mut self, id: uuid::Uuid, at: time::OffsetDateTime) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::SET_SESSION_MFA)
                    .bind($crate::credentials::id(id))
                    .bind($crate::rows::millis(at))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                self.note_session_change(None, Some(&id.to_string()), $crate::rows::millis(at)).await?;
                Ok(n == 1)
            }

            async fn insert_api_key(&mut self, k: &$crate::ApiKeyRecord) -> $crate::Result<()> {
                sqlx::query($crate::credentials::sql::INSERT_API_KEY)
                    .bind($crate::credentials::id(k.id))
                    .bind($crate::credentials::id(k.user_id))
                    .bind(&k.name)
                    .bind(&k.key_hash)
                    .bind(&k.role)
                    .bind($crate::rows::millis(k.created_at))
                    .bind($crate::rows::millis(k.expires_at))
                    .bind(k.revoked_at.map($crate::rows::millis))
                    .bind(k.last_used_at.map($crate::rows::millis))
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn revoke_api_key(
                &mut self,
                id: uuid::Uuid,
                user_id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::credentials::sql::REVOKE_API_KEY)
                    .bind($crate::credentials::id(id))
                    .bind($crate::credentials::id(user_id))
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if n == 1 {
                    // Live connections made with the key (WebSockets) follow the feed.
                    self.note_session_change(Some(&user_id.to_string()), None, $crate::rows::millis(now)).await?;
                }
                Ok(n == 1)
            }
        }
    };
}

pub(crate) use impl_credential_stores;
