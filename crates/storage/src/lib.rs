//! Ward's storage: one interface ([`Store`]), two engines.
//!
//! * [`sqlite`]: the embedded default, one file in the data dir, WAL journal with
//!   `synchronous = FULL` so that an acknowledged commit survives power loss.
//! * [`postgres`]: for several nodes sharing one database.
//!
//! Both run the same versioned migrations (one directory per engine, kept in step) at
//! start-up, guarded so that two processes starting at once apply each migration once:
//! PostgreSQL through sqlx's advisory lock, SQLite through an exclusive file lock.
//! Both pass the same [`conformance`] suite.
//!
//! **Invariant:** only this crate contains SQL. Records cross the boundary as the plain
//! types in [`model`]; times are UTC, stored as Unix milliseconds.

mod access;
mod common;
pub mod conformance;
mod credentials;
mod error;
mod files;
pub mod group_commit;
pub mod leases;
mod messaging;
pub mod model;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

pub use error::StoreError;
pub use model::{
    ApiKeyRecord, AuditFilter, AuditRow, BreakGlassGrant, CheckpointRow, DataKeyRecord, DialogRecord, FileRecord,
    GrantReason, HistoryQuery, MemberRecord, MessageRecord, MfaChallengeRecord, MfaFactorRecord, PolicyAttachment,
    PolicyRecord, SessionChange, SessionRecord, UserRecord,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where to connect and how large a pool to keep.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub target: Target,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// The database to open.
#[derive(Clone)]
pub enum Target {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (may hold a password: never logged).
    Postgres(String),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Target::Postgres(_) => f.write_str("Postgres(<url redacted>)"),
        }
    }
}

/// Connection-pool occupancy, exported as metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// Opens the database, applies pending migrations and returns the store.
pub async fn open(options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    match &options.target {
        Target::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path, options).await?)),
        Target::Postgres(url) => Ok(Arc::new(postgres::PgStore::open(url, options).await?)),
    }
}

/// Everything Ward keeps in its database, as one object-safe interface.
///
/// Reads run directly on the store. Every change runs in a [`StoreTx`] obtained from
/// [`Store::begin`], so that it commits together with its audit record or not at all.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + AuditStore
    + CredentialStore
    + MessagingStore
    + AccessStore
    + FileStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    /// A round trip to the database, for `/readyz`.
    async fn ping(&self) -> Result<()>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);
    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction never fails half-way on lock upgrade.
    async fn begin(&self) -> Result<Box<dyn StoreTx>>;
}

/// Seals an audit row once its place in the chain is known: `(seq, prev_hash) → row`.
pub type Sealer<'a> = &'a (dyn Fn(i64, &str) -> AuditRow + Send + Sync);

/// A write transaction. Dropping it without [`StoreTx::commit`] rolls everything back.
#[async_trait]
pub trait StoreTx: CredentialTx + MessagingTx + AccessTx + FileTx + LeaseTx + Send {
    /// Inserts a new user; [`StoreError::Conflict`] if the username (any case) is taken.
    async fn insert_user(&mut self, user: &UserRecord) -> Result<()>;
    /// Disables or re-enables a user; disabling revokes every live session too.
    /// False if there is no such user.
    async fn set_user_disabled(&mut self, id: Uuid, disabled: bool, now: OffsetDateTime) -> Result<bool>;
    /// Replaces the password hash and revokes every live session but `keep` (the session
    /// that changed its own password).
    async fn set_password_hash(
        &mut self,
        id: Uuid,
        hash: &str,
        keep: Option<Uuid>,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Stores a new hash of the same password (stronger parameters); no session ends.
    async fn rehash_password(&mut self, id: Uuid, hash: &str) -> Result<()>;
    /// Replaces a user's roles; false if there is no such user.
    async fn set_user_roles(&mut self, id: Uuid, roles: &[String], now: OffsetDateTime) -> Result<bool>;
    /// Clears failed-login counters and any lock.
    async fn unlock_user(&mut self, id: Uuid, now: OffsetDateTime) -> Result<bool>;
    /// Counts one more consecutive failed sign-in and sets the lock deadline computed from
    /// the new count by `lock_for`; returns the new count.
    async fn record_login_failure(
        &mut self,
        id: Uuid,
        lock_for: &(dyn Fn(i64) -> Option<OffsetDateTime> + Send + Sync),
    ) -> Result<i64>;
    async fn insert_session(&mut self, session: &SessionRecord) -> Result<()>;
    /// Revokes one session; false if it was unknown or already revoked.
    async fn revoke_session(&mut self, id: Uuid, now: OffsetDateTime) -> Result<bool>;
    /// Appends one record to the audit chain: locks the chain head (serializing appends
    /// across connections and nodes), lets `seal` build the row for the next `seq`,
    /// inserts it and advances the head.
    async fn append_audit(&mut self, seal: Sealer<'_>) -> Result<AuditRow>;
    /// Records the value now in force for one setting.
    async fn put_setting(&mut self, key: &str, value: &str) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// Accounts (reads).
#[async_trait]
pub trait UserStore {
    async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>>;
    /// Looks a user up by the case-folded username key.
    async fn user_by_username_key(&self, username_key: &str) -> Result<Option<UserRecord>>;
    /// All users, oldest first.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
}

/// Sign-in sessions. Only token digests are stored.
#[async_trait]
pub trait SessionStore {
    async fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<SessionRecord>>;
    async fn session_by_id(&self, id: Uuid) -> Result<Option<SessionRecord>>;
    /// A user's sessions that are neither revoked nor past their absolute limit at `now`.
    async fn live_sessions(&self, user_id: Uuid, now: OffsetDateTime) -> Result<Vec<SessionRecord>>;
    /// Entries of the session-change feed written at or after `since`, by `seq`.
    async fn session_changes_since(&self, since: OffsetDateTime) -> Result<Vec<SessionChange>>;
    /// Records activity: moves `last_seen_at` and the idle deadline forward. Not audited:
    /// activity is not an event, sign-in and sign-out are.
    async fn touch_session(&self, id: Uuid, now: OffsetDateTime, idle_expires_at: OffsetDateTime) -> Result<()>;
}

/// The audit trail (reads and checkpoints; appends go through [`StoreTx::append_audit`]).
#[async_trait]
pub trait AuditStore {
    /// Up to `limit` records with `seq > after_seq`, in `seq` order.
    async fn audit_after(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRow>>;
    /// Records matching `filter`, in `seq` order, at most `limit`.
    async fn audit_search(&self, filter: &AuditFilter, limit: i64) -> Result<Vec<AuditRow>>;
    /// The newest record's `(seq, hash)` as the head row says (0 and zeros when empty).
    async fn audit_head(&self) -> Result<(i64, String)>;
    /// Stores a checkpoint; a duplicate (same seq and key) is ignored.
    async fn insert_checkpoint(&self, checkpoint: &CheckpointRow) -> Result<()>;
    /// Every stored checkpoint, by `seq`.
    async fn checkpoints(&self) -> Result<Vec<CheckpointRow>>;
    /// The settings recorded at the last start, by key.
    async fn settings_snapshot(&self) -> Result<Vec<(String, String)>>;
}

/// Data keys, second factors, sign-in challenges and API keys (reads).
#[async_trait]
pub trait CredentialStore {
    /// The keyring document kept in the database and its revision, if there is one.
    async fn keyring_document(&self) -> Result<Option<(i64, Vec<u8>)>>;
    async fn data_key_by_scope(&self, scope: &str) -> Result<Option<DataKeyRecord>>;
    async fn data_key_by_id(&self, id: Uuid) -> Result<Option<DataKeyRecord>>;
    /// How many live (not destroyed) data keys each master-key version wraps.
    async fn data_key_counts(&self) -> Result<Vec<(i64, i64)>>;
    /// Up to `limit` live data keys wrapped by a version below `below_version`, by id.
    async fn data_keys_to_rewrap(&self, below_version: i64, limit: i64) -> Result<Vec<DataKeyRecord>>;
    /// A user's second factors (pending and active), oldest first.
    async fn mfa_factors(&self, user_id: Uuid) -> Result<Vec<MfaFactorRecord>>;
    /// How many of the user's recovery codes are still unused.
    async fn recovery_codes_left(&self, user_id: Uuid) -> Result<i64>;
    async fn mfa_challenge(&self, token_hash: &str) -> Result<Option<MfaChallengeRecord>>;
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>>;
    /// A user's API keys (live, expired and revoked), oldest first.
    async fn api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKeyRecord>>;
    /// Records a key's use at `now` (`last_used_at`). Not audited: use is not an event.
    async fn touch_api_key(&self, id: Uuid, now: OffsetDateTime) -> Result<()>;
}

/// Data keys, second factors, sign-in challenges and API keys (changes, inside a [`StoreTx`]).
#[async_trait]
pub trait CredentialTx {
    /// Stores the keyring document: the first one when `expected_revision` is `None`,
    /// otherwise a replacement of that revision (compare and swap). False when another
    /// writer got there first (re-read and retry).
    async fn put_keyring_document(
        &mut self,
        expected_revision: Option<i64>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Stores a wrapped data key; [`StoreError::Conflict`] if its scope already has one.
    async fn insert_data_key(&mut self, key: &DataKeyRecord) -> Result<()>;
    /// Cryptographic erase: blanks the wrapped key and marks it destroyed; false if unknown
    /// or destroyed already. (With SQLite's `secure_delete`, the old bytes are overwritten.)
    async fn destroy_data_key(&mut self, id: Uuid, now: OffsetDateTime) -> Result<bool>;
    /// Replaces a data key's wrapping (rotation); false if it changed meanwhile (another
    /// node rewrapped it, or it was destroyed).
    async fn rewrap_data_key(&mut self, id: Uuid, from_version: i64, to_version: i64, wrapped: &[u8]) -> Result<bool>;
    /// Stores a factor, replacing any pending factor of the same kind of that user.
    async fn insert_mfa_factor(&mut self, factor: &MfaFactorRecord) -> Result<()>;
    /// Turns a pending factor active; false if it was not pending.
    async fn activate_mfa_factor(&mut self, id: Uuid, now: OffsetDateTime) -> Result<bool>;
    /// Removes every factor and recovery code of a user (an administrator's MFA reset).
    async fn delete_mfa_factors(&mut self, user_id: Uuid) -> Result<()>;
    /// Marks a TOTP time step used; false when that step or a later one was used already
    /// (so each code is accepted once).
    async fn use_totp_step(&mut self, id: Uuid, step: i64) -> Result<bool>;
    /// Replaces a user's recovery codes with new digests.
    async fn replace_recovery_codes(&mut self, user_id: Uuid, hashes: &[String], now: OffsetDateTime) -> Result<()>;
    /// Spends one recovery code; false if it is unknown or was used.
    async fn use_recovery_code(&mut self, user_id: Uuid, hash: &str, now: OffsetDateTime) -> Result<bool>;
    /// Stores a sign-in challenge (and drops expired ones).
    async fn insert_mfa_challenge(&mut self, challenge: &MfaChallengeRecord) -> Result<()>;
    /// Counts one more attempt at a challenge; returns the new count.
    async fn count_challenge_attempt(&mut self, id: Uuid) -> Result<i64>;
    /// Marks a challenge used; false if it was used already.
    async fn consume_mfa_challenge(&mut self, id: Uuid, now: OffsetDateTime) -> Result<bool>;
    /// Ends every live session of a user.
    async fn revoke_user_sessions(&mut self, user_id: Uuid, now: OffsetDateTime) -> Result<()>;
    /// Records that the session's holder proved a second factor at `at`.
    async fn set_session_mfa(&mut self, id: Uuid, at: OffsetDateTime) -> Result<bool>;
    async fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()>;
    /// Revokes one of a user's API keys; false if unknown, another user's, or revoked already.
    async fn revoke_api_key(&mut self, id: Uuid, user_id: Uuid, now: OffsetDateTime) -> Result<bool>;
}

/// Dialogs, members and messages: reads.
#[async_trait]
pub trait MessagingStore {
    async fn dialog_by_id(&self, id: Uuid) -> Result<Option<DialogRecord>>;
    /// The private dialog of a pair (`DialogRecord::pair_key`), if there is one.
    async fn private_dialog(&self, pair_key: &str) -> Result<Option<DialogRecord>>;
    /// Every dialog `user_id` is a member of, with that membership, newest activity first
    /// (the time of its newest message, or of its creation).
    async fn dialogs_of_user(&self, user_id: Uuid) -> Result<Vec<(DialogRecord, MemberRecord)>>;
    /// The members of a dialog, by `joined_at`.
    async fn members(&self, dialog_id: Uuid) -> Result<Vec<MemberRecord>>;
    async fn member(&self, dialog_id: Uuid, user_id: Uuid) -> Result<Option<MemberRecord>>;
    async fn message_by_id(&self, dialog_id: Uuid, id: Uuid) -> Result<Option<MessageRecord>>;
    async fn message_by_client_id(
        &self,
        dialog_id: Uuid,
        sender_id: Uuid,
        client_msg_id: &str,
    ) -> Result<Option<MessageRecord>>;
    /// A page of history; see [`HistoryQuery`].
    async fn messages(&self, dialog_id: Uuid, query: HistoryQuery) -> Result<Vec<MessageRecord>>;
}

/// Shared files (reads).
#[async_trait]
pub trait FileStore {
    /// A file's record, deleted ones included (their metadata blanked).
    async fn file_by_id(&self, id: Uuid) -> Result<Option<FileRecord>>;
    /// The records of those of `ids` that exist (deleted ones included), in no order. At
    /// most [`FILES_BY_IDS_MAX`] ids per call.
    async fn files_by_ids(&self, ids: &[Uuid]) -> Result<Vec<FileRecord>>;
}

/// The most ids one [`FileStore::files_by_ids`] call takes (well under either engine's
/// limit on bound parameters).
pub const FILES_BY_IDS_MAX: usize = 1_000;

/// Shared files: writes, inside a [`StoreTx`].
#[async_trait]
pub trait FileTx {
    /// Stores a completed upload; [`StoreError::Conflict`] if the id is taken.
    async fn insert_file(&mut self, file: &FileRecord) -> Result<()>;
    /// Marks a file deleted and blanks its sealed metadata; false if unknown or deleted
    /// already. The caller destroys its data key in the same transaction.
    async fn delete_file(&mut self, id: Uuid, now: OffsetDateTime) -> Result<bool>;
}

/// Dialogs, members and messages: writes, inside a [`StoreTx`].
#[async_trait]
pub trait MessagingTx {
    /// [`StoreError::Conflict`] if a private dialog of that pair exists (the transaction
    /// stays usable).
    async fn insert_dialog(&mut self, dialog: &DialogRecord) -> Result<()>;
    /// False if the user already is a member.
    async fn insert_member(&mut self, member: &MemberRecord) -> Result<bool>;
    /// False if the user was not a member.
    async fn remove_member(&mut self, dialog_id: Uuid, user_id: Uuid) -> Result<bool>;
    /// Takes the dialog's next `seq` (1, 2, …); the dialog row stays locked until the
    /// transaction ends, so concurrent senders get consecutive numbers and a rollback
    /// leaves no gap. `None` if the dialog is unknown.
    async fn next_seq(&mut self, dialog_id: Uuid) -> Result<Option<i64>>;
    /// [`StoreError::Conflict`] on a duplicate (dialog, sender, client_msg_id) or seq (the
    /// transaction stays usable).
    async fn insert_message(&mut self, message: &MessageRecord) -> Result<()>;
    /// Replaces the sealed body (an edit) and keeps the previous sealed body in the edit
    /// history. False if the message is unknown or deleted.
    async fn edit_message(
        &mut self,
        dialog_id: Uuid,
        id: Uuid,
        body_sealed: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Erases the body and the edit history (a tombstone with `deleted_at` stays). False if
    /// unknown or already deleted.
    async fn delete_message(&mut self, dialog_id: Uuid, id: Uuid, now: OffsetDateTime) -> Result<bool>;
    /// Raises the member's `last_read_seq` to `up_to_seq` (never lowers it). False if not a
    /// member or nothing changed.
    async fn mark_read(&mut self, dialog_id: Uuid, user_id: Uuid, up_to_seq: i64) -> Result<bool>;
}

/// Access control: managed policies and their attachments, break-glass grants, and what an
/// access review reads (reads).
/// Leases for cluster-wide jobs (see [`leases::hold`]).
#[async_trait]
pub trait LeaseTx {
    /// Takes lease `name` for `holder` until `until` if it is free, lapsed at `now`, or held
    /// by `holder` already (a renewal); false while another holder has it.
    async fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool>;
    /// Gives the lease up if `holder` has it; false otherwise.
    async fn release_lease(&mut self, name: &str, holder: &str) -> Result<bool>;
}

#[async_trait]
pub trait AccessStore {
    /// Every policy, by name (byte order).
    async fn policies(&self) -> Result<Vec<PolicyRecord>>;
    /// Every attachment, by policy name, principal kind and principal (byte order).
    async fn policy_attachments(&self) -> Result<Vec<PolicyAttachment>>;
    /// The user's live grant for the dialog at `now` (not revoked, `expires_at > now`);
    /// of several, the one expiring last.
    async fn active_breakglass_grant(
        &self,
        user_id: Uuid,
        dialog_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<BreakGlassGrant>>;
    async fn breakglass_grant(&self, id: Uuid) -> Result<Option<BreakGlassGrant>>;
    /// Grants created at or after `since` (live, expired and revoked), newest first, at
    /// most 10,000.
    async fn breakglass_grants_since(&self, since: OffsetDateTime) -> Result<Vec<BreakGlassGrant>>;
    /// Grants whose reason is still in plaintext ([`GrantReason::Legacy`]), oldest first,
    /// at most 10,000.
    async fn breakglass_grants_unsealed(&self) -> Result<Vec<BreakGlassGrant>>;
    /// For each user who ever signed in, the newest sign-in: the latest `created_at` of
    /// their sessions that are not temporary credentials (`assumed_role` is `None`), by
    /// user id.
    async fn last_sign_ins(&self) -> Result<Vec<(Uuid, OffsetDateTime)>>;
    /// Every dialog membership as `(user_id, dialog_id)`, by user then dialog.
    async fn memberships(&self) -> Result<Vec<(Uuid, Uuid)>>;
}

/// Access control: policies, attachments and break-glass grants (changes, inside a
/// [`StoreTx`]).
#[async_trait]
pub trait AccessTx {
    /// Stores a new policy, or replaces an existing one's `document`, `updated_at` and
    /// `updated_by` (its `created_at` stays).
    async fn put_policy(&mut self, policy: &PolicyRecord) -> Result<()>;
    /// Removes a policy and its attachments; false if there was no such policy.
    async fn delete_policy(&mut self, name: &str) -> Result<bool>;
    /// Makes the policy's attachments exactly `attachments` (duplicates count once; an
    /// empty slice detaches it from everyone). Each must name `policy_name`, and the policy
    /// must exist: otherwise [`StoreError::Database`] (`sqlx::Error::InvalidArgument`),
    /// before anything is written, leaving the transaction usable.
    async fn replace_policy_attachments(&mut self, policy_name: &str, attachments: &[PolicyAttachment]) -> Result<()>;
    /// [`StoreError::Conflict`] if the id is taken (the transaction stays usable).
    async fn insert_breakglass_grant(&mut self, grant: &BreakGlassGrant) -> Result<()>;
    /// Revokes a grant at `now`, by `by` (`None`: the CLI); false if it is unknown or was
    /// revoked already.
    async fn revoke_breakglass_grant(&mut self, id: Uuid, now: OffsetDateTime, by: Option<Uuid>) -> Result<bool>;
    /// Replaces a legacy plaintext reason by its sealed form (the plaintext column is
    /// emptied); false if the grant is unknown or sealed already.
    async fn seal_breakglass_reason(&mut self, id: Uuid, key_id: Uuid, sealed: &[u8]) -> Result<bool>;
}
