//! [`AuditLog`]: the one entry point through which every module records, plus the
//! checkpointer and whole-trail verification against the database.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use ward_storage::{AuditFilter, AuditRow, Store, StoreTx};

use crate::chain::{micros, seal};
use crate::checkpoint::{self, Checkpoint, CheckpointSigner, KeyError};
use crate::event::{AuditEvent, AuditRecord};
use crate::verify::{Tamper, Verifier, VerifyReport};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record could not be written: the operation it describes must not happen.
    #[error("the audit trail cannot be written: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("checkpoint file {path}: {source}")]
    CheckpointFile { path: PathBuf, source: std::io::Error },
    /// A stored record cannot be read back (search, export).
    #[error("stored audit record {seq} is unreadable: {why}")]
    Unreadable { seq: i64, why: String },
}

/// `[audit]` settings the log needs.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Sign a checkpoint after this many new records...
    pub checkpoint_every: i64,
    /// ...or this long after the previous one, whichever comes first.
    pub checkpoint_interval: Duration,
    pub key_file: PathBuf,
    pub checkpoint_file: PathBuf,
}

struct Inner {
    store: Arc<dyn Store>,
    signer: CheckpointSigner,
    settings: AuditSettings,
    /// False after a failed append or probe, true after a successful one: `/readyz`.
    healthy: AtomicBool,
    /// `seq` of the newest checkpoint this process knows of, and when it was made.
    last_checkpoint: Mutex<(i64, Instant)>,
}

/// Cheap to clone; shared by every module.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// Loads (or creates) the signing key and learns the newest stored checkpoint.
    pub async fn open(store: Arc<dyn Store>, settings: AuditSettings) -> Result<Self, AuditError> {
        let signer = CheckpointSigner::load_or_create(&settings.key_file)?;
        Self::with_signer(store, settings, signer).await
    }

    /// Like [`AuditLog::open`], with the signing key file kept sealed by `sealer` (the
    /// server's way: see [`crate::checkpoint`]).
    pub async fn open_sealed(
        store: Arc<dyn Store>,
        settings: AuditSettings,
        sealer: &dyn crate::checkpoint::SecretSealer,
    ) -> Result<Self, AuditError> {
        let signer = CheckpointSigner::load_or_create_sealed(&settings.key_file, sealer)?;
        Self::with_signer(store, settings, signer).await
    }

    async fn with_signer(
        store: Arc<dyn Store>,
        settings: AuditSettings,
        signer: CheckpointSigner,
    ) -> Result<Self, AuditError> {
        let newest = store.checkpoints().await.map_err(unavailable)?.iter().map(|c| c.seq).max().unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                signer,
                settings,
                healthy: AtomicBool::new(true),
                last_checkpoint: Mutex::new((newest, Instant::now())),
            }),
        })
    }

    /// Appends `event` inside the caller's transaction: it commits with the change or
    /// not at all. An error here must abort the operation.
    pub async fn record(&self, tx: &mut dyn StoreTx, event: &AuditEvent) -> Result<AuditRow, AuditError> {
        let id = Uuid::now_v7();
        let result = tx.append_audit(&|seq, prev: &str| seal(event, id, seq, prev)).await;
        self.note(result.is_ok());
        result.map_err(unavailable)
    }

    /// Records an event that changes nothing else (a failed sign-in, a read, a denial),
    /// in its own transaction, before the caller answers.
    pub async fn record_alone(&self, event: &AuditEvent) -> Result<AuditRow, AuditError> {
        let mut tx = self.inner.store.begin().await.map_err(|e| self.fail(e))?;
        let row = self.record(&mut *tx, event).await?;
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(row)
    }

    /// Tries an append and rolls it back: proves the audit store is writable.
    pub async fn probe(&self) -> Result<(), AuditError> {
        let mut tx = self.inner.store.begin().await.map_err(|e| self.fail(e))?;
        let event =
            AuditEvent::new("audit.probe", crate::Outcome::Success, crate::Via::System, OffsetDateTime::now_utc());
        self.record(&mut *tx, &event).await?;
        tx.rollback().await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.inner.signer.verifying_key()
    }

    /// Signs the current head if it moved past the newest checkpoint; `force` ignores
    /// the record-count and interval thresholds.
    pub async fn checkpoint(&self, force: bool) -> Result<Option<Checkpoint>, AuditError> {
        let mut last = self.inner.last_checkpoint.lock().await;
        let (seq, hash) = self.inner.store.audit_head().await.map_err(unavailable)?;
        let due = seq - last.0 >= self.inner.settings.checkpoint_every
            || last.1.elapsed() >= self.inner.settings.checkpoint_interval;
        if seq <= last.0 || !(force || due) {
            return Ok(None);
        }
        let cp = self.inner.signer.sign(seq, &hash, micros(OffsetDateTime::now_utc()));
        self.inner.store.insert_checkpoint(&cp.to_row()).await.map_err(unavailable)?;
        let path = &self.inner.settings.checkpoint_file;
        checkpoint::append_to_file(path, &cp)
            .map_err(|source| AuditError::CheckpointFile { path: path.clone(), source })?;
        *last = (seq, Instant::now());
        Ok(Some(cp))
    }

    /// Checks once a second whether a checkpoint is due, until `stop` is cancelled.
    pub async fn run_checkpointer(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.checkpoint(false).await {
                        tracing::error!(error = %e, "audit checkpoint failed");
                    }
                }
            }
        }
    }

    /// Records each security-relevant setting whose value differs from the one in force at
    /// the last start (`settings.update`, resource `setting/<key>`, details `old` and
    /// `new`), and stores the new values, all in one transaction. On the very first start
    /// every value is recorded with reason `initial`, so each setting's history is complete.
    /// Returns how many changes were recorded.
    pub async fn record_settings(
        &self,
        ctx: &crate::Context,
        current: &std::collections::BTreeMap<String, String>,
    ) -> Result<usize, AuditError> {
        let before: std::collections::BTreeMap<String, String> =
            self.inner.store.settings_snapshot().await.map_err(unavailable)?.into_iter().collect();
        let initial = before.is_empty();
        let mut tx = self.inner.store.begin().await.map_err(|e| self.fail(e))?;
        let mut changes = 0;
        for (key, new) in current {
            let old = before.get(key);
            if old == Some(new) {
                continue;
            }
            let mut event = ctx
                .event("settings.update", crate::Outcome::Success)
                .resource(format!("setting/{key}"))
                .detail("old", old.cloned().map_or(serde_json::Value::Null, serde_json::Value::String))
                .detail("new", new.clone());
            if initial {
                event = event.reason("initial");
            }
            self.record(&mut *tx, &event).await?;
            tx.put_setting(key, new).await.map_err(|e| self.fail(e))?;
            changes += 1;
        }
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(changes)
    }

    /// Records matching `filter`, readable form.
    pub async fn search(&self, filter: &AuditFilter, limit: i64) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = self.inner.store.audit_search(filter, limit).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| AuditRecord::from_row(r).map_err(|why| AuditError::Unreadable { seq: r.seq, why }))
            .collect()
    }

    fn note(&self, ok: bool) {
        self.inner.healthy.store(ok, Ordering::Relaxed);
    }

    fn fail(&self, e: ward_storage::StoreError) -> AuditError {
        self.note(false);
        unavailable(e)
    }
}

fn unavailable(e: ward_storage::StoreError) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

/// Verifies the whole trail in `store` against the checkpoints stored there and in
/// `checkpoint_file`, trusting `keys`. `progress` is called with the count so far.
pub async fn verify_store(
    store: &dyn Store,
    keys: &[VerifyingKey],
    checkpoint_file: &std::path::Path,
    mut progress: impl FnMut(u64),
) -> Result<Result<VerifyReport, Tamper>, AuditError> {
    let mut checkpoints: Vec<Checkpoint> =
        store.checkpoints().await.map_err(unavailable)?.iter().map(Checkpoint::from_row).collect();
    let from_file = checkpoint::read_file(checkpoint_file)
        .map_err(|source| AuditError::CheckpointFile { path: checkpoint_file.to_path_buf(), source })?;
    for entry in from_file {
        match entry {
            Ok(c) => checkpoints.push(c),
            Err(line) => {
                return Ok(Err(Tamper::BadCheckpoint {
                    seq: 0,
                    why: format!("checkpoint file line {line} is garbled"),
                }));
            }
        }
    }
    let mut verifier = match Verifier::new(keys, &checkpoints) {
        Ok(v) => v,
        Err(t) => return Ok(Err(t)),
    };
    let mut after = 0;
    let mut seen = 0u64;
    loop {
        let rows = store.audit_after(after, 10_000).await.map_err(unavailable)?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            if let Err(t) = verifier.push(row) {
                return Ok(Err(t));
            }
        }
        seen += rows.len() as u64;
        progress(seen);
    }
    Ok(verifier.finish())
}
