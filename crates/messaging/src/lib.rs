//! Ward's messaging domain: dialogs (private and group), their members, and messages.
//!
//! * [`service`]: [`Messaging`], its settings and the views handed to the API.
//! * [`dialogs`]: creating, listing and reading dialogs. Every operation on a dialog asks
//!   the policy engine (`ward_access`) with the caller's real relation to it: member, or
//!   holder of a live break-glass grant (read-only). A refused non-member gets
//!   [`MessagingError::NotFound`], a refused member [`MessagingError::Forbidden`], both
//!   recorded as `denied`; a read under break-glass is recorded as such.
//! * [`messages`]: sending (gapless per-dialog `seq`, idempotent by `client_msg_id`) and
//!   reading history.
//! * [`changes`]: edits, deletes, read receipts, adding and removing members.
//! * [`events`]: the real-time hub that pushes each committed change to the live
//!   connections of the dialog's members.
//! * [`push`]: the HMAC-signed webhook that tells an app which offline members have a new
//!   message (ids only, never PHI).
//! * [`sealing`]: the AADs that bind every sealed body and name to its place.
//!
//! **Invariants:** a message body and a dialog name are sealed with AES-256-GCM under the
//! dialog's data key (scope `dialog/<id>`) before they reach the store, and opened only for
//! a caller the policies allow to read it. Every write commits with its audit record; every read is recorded before its
//! data is returned. Audit records carry ids and counts, never bodies or names.

pub mod changes;
pub mod dialogs;
pub mod error;
pub mod events;
pub mod messages;
pub mod push;
pub mod sealing;
pub mod service;

pub use changes::is_admin;
pub use error::MessagingError;
pub use service::{
    Dialog, DialogKind, History, Message, Messaging, MessagingSettings, NewDialog, NewMessage, Op, Reading,
};
