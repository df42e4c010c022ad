//! What each sealed field is bound to. The AAD names the record kind, the record's id, its
//! dialog and the id of the data key that sealed it, so a ciphertext copied to another
//! row, another dialog or another field does not open ([`ward_keys::KeyError::Integrity`]).
//! Nonces are random 96-bit values drawn per seal (see `ward_keys::aead`).

use uuid::Uuid;

/// The data-key scope of a dialog.
pub fn dialog_scope(dialog_id: Uuid) -> String {
    format!("dialog/{dialog_id}")
}

/// AAD of a message body. `edited_ms` is the edit's time in Unix milliseconds (as stored
/// in `edited_at`), or 0 for the body as first sent: an earlier body of the same message
/// (kept in the edit history) copied back into the row does not open.
pub fn message_aad(dialog_id: Uuid, message_id: Uuid, key_id: Uuid, edited_ms: i64) -> Vec<u8> {
    format!("ward:message-body|{dialog_id}|{message_id}|{key_id}|{edited_ms}").into_bytes()
}

/// A time as the store keeps it: Unix milliseconds.
pub fn stored_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// AAD of a dialog's name.
pub fn dialog_name_aad(dialog_id: Uuid, key_id: Uuid) -> Vec<u8> {
    format!("ward:dialog-name|{dialog_id}|{key_id}").into_bytes()
}
