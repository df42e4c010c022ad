//! Ward's audit trail (HIPAA 164.312(b)): what happened, who did it, from where, and proof
//! that the record was not altered afterwards.
//!
//! * [`event`]: the event schema callers fill in ([`AuditEvent`]) and the sealed record as
//!   stored and served ([`AuditRecord`]).
//! * [`chain`]: the canonical, versioned encoding and the SHA-256 hash chain.
//! * [`checkpoint`]: Ed25519-signed checkpoints of the chain head, the signing key file,
//!   and the append-only checkpoint file kept outside the database.
//! * [`verify`]: offline verification of a whole trail; reports the first bad `seq`.
//! * [`export`]: JSON Lines, CSV and FHIR R4 `AuditEvent` bundles (IHE BALP).
//! * [`log`]: [`AuditLog`], the one entry point every other module records through, and
//!   the background checkpointer.
//!
//! **Invariant:** a change and its audit record commit in one database transaction
//! ([`AuditLog::record`] appends inside the caller's [`ward_storage::StoreTx`]); a read is
//! recorded before its data is returned; when recording fails the operation fails
//! ([`AuditError`] maps to 503 `unavailable`). Records name resources by id, never by
//! content: no message bodies, file contents, passwords or tokens.

pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod export;
pub mod log;
pub mod syslog;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointSigner, SecretSealer};
pub use event::{Actor, AuditEvent, AuditRecord, Context, Outcome, Via};
pub use log::{AuditError, AuditLog, AuditSettings, verify_store};
pub use verify::{Tamper, Verifier, VerifyReport};
