//! The hash chain: `hash = SHA-256(canonical_v1(record including seq and prev_hash))`.
//!
//! The canonical encoding is a fixed field order, each field length-prefixed (so no two
//! different records encode alike), behind a version tag so the format can evolve
//! without ambiguity:
//!
//! ```text
//! "ward-audit/v1\n"
//! i64 seq | str id | i64 time_us | opt actor_user_id | opt actor_username | opt actor_session_id
//! | str via | str action | opt resource | str outcome | opt ip | opt user_agent | u8 mfa
//! | opt reason | str details (the stored JSON text, byte for byte) | str prev_hash
//! ```
//!
//! `i64` is 8 bytes big-endian; `str` is a u64 big-endian length then UTF-8 bytes; `opt`
//! is one byte 0 (absent) or 1 followed by a `str`. The first record's `prev_hash` is 64
//! zeros ([`GENESIS`]).

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;
use ward_storage::AuditRow;

use crate::event::AuditEvent;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const TAG_V1: &[u8] = b"ward-audit/v1\n";

/// The SHA-256 (hex) of a row's canonical encoding; `row.hash` itself is not an input.
pub fn row_hash(row: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(TAG_V1);
    h.update(row.seq.to_be_bytes());
    put_str(&mut h, &row.id);
    h.update(row.time_us.to_be_bytes());
    put_opt(&mut h, row.actor_user_id.as_deref());
    put_opt(&mut h, row.actor_username.as_deref());
    put_opt(&mut h, row.actor_session_id.as_deref());
    put_str(&mut h, &row.via);
    put_str(&mut h, &row.action);
    put_opt(&mut h, row.resource.as_deref());
    put_str(&mut h, &row.outcome);
    put_opt(&mut h, row.ip.as_deref());
    put_opt(&mut h, row.user_agent.as_deref());
    h.update([u8::from(row.mfa)]);
    put_opt(&mut h, row.reason.as_deref());
    put_str(&mut h, &row.details);
    put_str(&mut h, &row.prev_hash);
    hex::encode(h.finalize())
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn put_opt(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            put_str(h, s);
        }
    }
}

pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Builds the stored row for `event` at chain position `seq` after `prev_hash`.
pub fn seal(event: &AuditEvent, id: Uuid, seq: i64, prev_hash: &str) -> AuditRow {
    let mut row = AuditRow {
        seq,
        id: id.to_string(),
        time_us: micros(event.time),
        actor_user_id: event.actor.user_id.clone(),
        actor_username: event.actor.username.clone(),
        actor_session_id: event.actor.session_id.clone(),
        via: event.via.as_str().to_string(),
        action: event.action.clone(),
        resource: event.resource.clone(),
        outcome: event.outcome.as_str().to_string(),
        ip: event.ip.clone(),
        user_agent: event.user_agent.clone(),
        mfa: event.mfa,
        reason: event.reason.clone(),
        details: serde_json::Value::Object(event.details.clone()).to_string(),
        prev_hash: prev_hash.to_string(),
        hash: String::new(),
    };
    row.hash = row_hash(&row);
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Outcome, Via};

    fn event() -> AuditEvent {
        AuditEvent::new("auth.login", Outcome::Success, Via::Api, OffsetDateTime::UNIX_EPOCH)
            .user("u1", "alice")
            .detail("k", 1)
    }

    type Change = Box<dyn Fn(&mut AuditRow)>;

    #[test]
    fn hash_covers_every_field_and_the_link() {
        let row = seal(&event(), Uuid::nil(), 1, GENESIS);
        assert_eq!(row.hash, row_hash(&row));
        let variants: Vec<Change> = vec![
            Box::new(|r| r.seq = 2),
            Box::new(|r| r.time_us += 1),
            Box::new(|r| r.actor_username = Some("mallory".into())),
            Box::new(|r| r.actor_user_id = None),
            Box::new(|r| r.outcome = "failure".into()),
            Box::new(|r| r.mfa = true),
            Box::new(|r| r.details = "{\"k\":2}".into()),
            Box::new(|r| r.prev_hash = "1".repeat(64)),
            Box::new(|r| r.ip = Some(String::new())),
        ];
        for change in variants {
            let mut changed = row.clone();
            change(&mut changed);
            assert_ne!(row_hash(&changed), row.hash);
        }
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        let mut a = seal(&event(), Uuid::nil(), 1, GENESIS);
        a.action = "ab".into();
        a.resource = Some("c".into());
        let mut b = a.clone();
        b.action = "a".into();
        b.resource = Some("bc".into());
        assert_ne!(row_hash(&a), row_hash(&b));
    }
}
