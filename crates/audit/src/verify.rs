//! Offline verification of a whole trail.
//!
//! Feed every stored row in `seq` order to [`Verifier::push`], then call
//! [`Verifier::finish`]. Detected, each with the first bad `seq`:
//!
//! | tampering | how it shows |
//! |---|---|
//! | a field changed | the row's hash no longer matches its contents ([`Tamper::Modified`]) |
//! | a row deleted | `seq` jumps ([`Tamper::Gap`]) |
//! | a row inserted or rows reordered | `seq` repeats or goes back, or `prev_hash` no longer links ([`Tamper::BrokenLink`]) |
//! | rows rewritten with every hash recomputed | a signed checkpoint's hash differs ([`Tamper::Rewritten`]) |
//! | the newest rows cut, with their checkpoints in the database | a checkpoint (from the file) lies past the end ([`Tamper::Truncated`]) |
//! | a forged checkpoint | its signature fails under the trusted key ([`Tamper::BadCheckpoint`]) |
//!
//! Limit: rows appended after the newest checkpoint by someone with write access to the
//! database, hashed correctly, cannot be told from genuine ones until the next checkpoint
//! signs them in; the syslog stream to a SIEM keeps an independent copy for that window.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use ward_storage::AuditRow;

use crate::chain::{GENESIS, row_hash};
use crate::checkpoint::{Checkpoint, key_id};

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    Modified { seq: i64 },
    Gap { expected: i64, found: i64 },
    BrokenLink { seq: i64 },
    Rewritten { from_seq: i64, checkpoint_seq: i64 },
    Truncated { last_seq: i64, checkpoint_seq: i64 },
    BadCheckpoint { seq: i64, why: String },
}

impl Tamper {
    /// The first `seq` that cannot be trusted.
    pub fn first_bad_seq(&self) -> i64 {
        match self {
            Tamper::Modified { seq } | Tamper::BrokenLink { seq } | Tamper::BadCheckpoint { seq, .. } => *seq,
            Tamper::Gap { expected, .. } => *expected,
            Tamper::Rewritten { from_seq, .. } => *from_seq,
            Tamper::Truncated { last_seq, .. } => last_seq + 1,
        }
    }
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tamper::Modified { seq } => write!(
                f,
                "record {seq} does not match its hash: it was modified, or a record was moved or inserted here"
            ),
            Tamper::Gap { expected, found } if found > expected => {
                write!(f, "record {expected} is missing (deleted): the next record is {found}")
            }
            Tamper::Gap { expected, found } => {
                write!(f, "record {expected} expected but {found} found: records were inserted or reordered")
            }
            Tamper::BrokenLink { seq } => {
                write!(f, "record {seq} does not link to the record before it: records were inserted or reordered")
            }
            Tamper::Rewritten { from_seq, checkpoint_seq } => write!(
                f,
                "records {from_seq}..={checkpoint_seq} were rewritten: the signed checkpoint at {checkpoint_seq} \
                 names a different hash"
            ),
            Tamper::Truncated { last_seq, checkpoint_seq } => write!(
                f,
                "the trail was truncated: it ends at record {last_seq} but a signed checkpoint covers \
                 record {checkpoint_seq}"
            ),
            Tamper::BadCheckpoint { seq, why } => write!(f, "checkpoint at record {seq} is not genuine: {why}"),
        }
    }
}

/// What an intact trail looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub last_seq: i64,
    pub checkpoints: usize,
    /// The newest checkpoint's `seq` (0 when there is none).
    pub newest_checkpoint: i64,
}

/// Streaming verifier; see the module docs.
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    records: u64,
    /// Checkpointed `seq` → signed head hash.
    checkpoints: BTreeMap<i64, String>,
    last_checkpoint_passed: i64,
}

impl Verifier {
    /// Checks every checkpoint's signature against the trusted keys and prepares.
    pub fn new(trusted: &[VerifyingKey], checkpoints: &[Checkpoint]) -> Result<Self, Tamper> {
        let mut map: BTreeMap<i64, String> = BTreeMap::new();
        for c in checkpoints {
            let key = trusted.iter().find(|k| key_id(k) == c.key_id).ok_or_else(|| Tamper::BadCheckpoint {
                seq: c.seq,
                why: format!("signed by unknown key {}", c.key_id),
            })?;
            if !c.verify(key) {
                return Err(Tamper::BadCheckpoint { seq: c.seq, why: "invalid signature".into() });
            }
            if let Some(other) = map.get(&c.seq)
                && other != &c.head_hash
            {
                return Err(Tamper::BadCheckpoint { seq: c.seq, why: "two signed checkpoints disagree".into() });
            }
            map.insert(c.seq, c.head_hash.clone());
        }
        Ok(Self {
            expected_seq: 1,
            prev_hash: GENESIS.to_string(),
            records: 0,
            checkpoints: map,
            last_checkpoint_passed: 0,
        })
    }

    /// Checks the next row.
    pub fn push(&mut self, row: &AuditRow) -> Result<(), Tamper> {
        if row.seq != self.expected_seq {
            return Err(Tamper::Gap { expected: self.expected_seq, found: row.seq });
        }
        if row_hash(row) != row.hash {
            return Err(Tamper::Modified { seq: row.seq });
        }
        if row.prev_hash != self.prev_hash {
            return Err(Tamper::BrokenLink { seq: row.seq });
        }
        if let Some(signed) = self.checkpoints.get(&row.seq) {
            if signed != &row.hash {
                return Err(Tamper::Rewritten { from_seq: self.last_checkpoint_passed + 1, checkpoint_seq: row.seq });
            }
            self.last_checkpoint_passed = row.seq;
        }
        self.prev_hash.clone_from(&row.hash);
        self.expected_seq += 1;
        self.records += 1;
        Ok(())
    }

    /// Ends the stream: any checkpoint past the last row means the tail was cut.
    pub fn finish(self) -> Result<VerifyReport, Tamper> {
        let last_seq = self.expected_seq - 1;
        if let Some((&cp, _)) = self.checkpoints.range(last_seq + 1..).next() {
            return Err(Tamper::Truncated { last_seq, checkpoint_seq: cp });
        }
        Ok(VerifyReport {
            records: self.records,
            last_seq,
            checkpoints: self.checkpoints.len(),
            newest_checkpoint: self.checkpoints.keys().next_back().copied().unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::chain::seal;
    use crate::checkpoint::CheckpointSigner;
    use crate::event::{AuditEvent, Outcome, Via};

    fn trail(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::new("auth.login", Outcome::Success, Via::Api, OffsetDateTime::UNIX_EPOCH)
                    .user(format!("u{seq}"), "alice");
                let row = seal(&e, Uuid::now_v7(), seq, &prev);
                prev.clone_from(&row.hash);
                row
            })
            .collect()
    }

    fn verify(rows: &[AuditRow], cps: &[Checkpoint], key: &CheckpointSigner) -> Result<VerifyReport, Tamper> {
        let mut v = Verifier::new(&[key.verifying_key()], cps)?;
        for r in rows {
            v.push(r)?;
        }
        v.finish()
    }

    /// Recomputes every hash from `from` on, as a careful attacker would.
    fn rechain(rows: &mut [AuditRow]) {
        let mut prev = GENESIS.to_string();
        for (i, r) in rows.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
            r.prev_hash = prev.clone();
            r.hash = row_hash(r);
            prev = r.hash.clone();
        }
    }

    #[test]
    fn each_kind_of_tampering_is_caught_with_its_first_bad_seq() {
        let key = CheckpointSigner::from_secret([3; 32]);
        let rows = trail(10);
        let cps = vec![key.sign(5, &rows[4].hash, 0), key.sign(10, &rows[9].hash, 0)];
        assert_eq!(verify(&rows, &cps, &key).expect("intact").records, 10);

        let mut modified = rows.clone();
        modified[2].outcome = "failure".into();
        assert_eq!(verify(&modified, &cps, &key).expect_err("modified"), Tamper::Modified { seq: 3 });

        let mut deleted = rows.clone();
        deleted.remove(3);
        assert_eq!(verify(&deleted, &cps, &key).expect_err("deleted").first_bad_seq(), 4);

        let mut swapped = rows.clone();
        swapped.swap(5, 6);
        assert_eq!(verify(&swapped, &cps, &key).expect_err("swapped").first_bad_seq(), 6);

        let mut inserted = rows.clone();
        let mut extra = rows[2].clone();
        extra.id = Uuid::now_v7().to_string();
        inserted.insert(3, extra);
        for (i, r) in inserted.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
        }
        assert!(verify(&inserted, &cps, &key).is_err(), "insertion");

        let mut rewritten = rows.clone();
        rewritten[6].outcome = "failure".into();
        rechain(&mut rewritten);
        assert_eq!(
            verify(&rewritten, &cps, &key).expect_err("rewritten"),
            Tamper::Rewritten { from_seq: 6, checkpoint_seq: 10 }
        );

        let truncated = &rows[..8];
        assert_eq!(
            verify(truncated, &cps, &key).expect_err("truncated"),
            Tamper::Truncated { last_seq: 8, checkpoint_seq: 10 }
        );

        let forged = vec![CheckpointSigner::from_secret([4; 32]).sign(10, &rows[9].hash, 0)];
        assert!(matches!(verify(&rows, &forged, &key), Err(Tamper::BadCheckpoint { seq: 10, .. })));
    }
}
