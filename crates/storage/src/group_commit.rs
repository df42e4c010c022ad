//! Group commit: many logical transactions, one disk flush.
//!
//! Every audited write appends to the one audit chain, so writes are serialized anyway
//! (SQLite admits one writer; on PostgreSQL the `audit_head` row lock orders them), and a
//! durable commit flushes the log to disk (milliseconds on real disks). Instead of one
//! flush per request, Ward's write transactions are *logical*: each runs inside a `SAVEPOINT` of a shared
//! physical transaction and is released into it. The physical transaction commits — one
//! flush — as soon as no other writer is queued (so a lone request waits for nothing),
//! or when the batch reaches [`MAX_BATCH`] transactions or [`MAX_AGE`]. Every logical
//! commit waits for the physical commit before it returns: nothing is acknowledged before
//! it is durable, and if the flush fails every transaction of the batch gets the error.
//!
//! A logical transaction that rolls back (or is dropped) rolls back to its savepoint
//! only; the others in the batch are unaffected.
//!
//! **The audit head within a batch.** The physical transaction holds the write lock (the
//! SQLite writer; the `audit_head` row lock on PostgreSQL) from its first statement, so the
//! chain's head cannot move under it: the batch reads `audit_head` once, keeps the head of
//! each appended record in memory ([`GroupTx::audit_head`]), and writes the `audit_head`
//! row once, just before the physical commit. A logical rollback restores the head its
//! savepoint saw. That saves two statements per audited write on the serial writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Database, Executor, Pool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::{Result, StoreError};

/// Most logical transactions in one physical commit.
pub const MAX_BATCH: usize = 128;
/// Oldest a batch may get before it is committed even with writers queued.
pub const MAX_AGE: Duration = Duration::from_millis(20);

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

pub(crate) struct Batch<DB: Database> {
    tx: Option<Transaction<'static, DB>>,
    opened: Option<Instant>,
    /// Released logical transactions waiting for the physical commit.
    pending: Vec<Waiter>,
    savepoints: u64,
    /// The audit chain's head as this physical transaction has it (`None`: not read yet).
    head: Option<(i64, String)>,
    /// The head when the current logical transaction began (restored by its rollback).
    head_at_savepoint: Option<(i64, String)>,
    /// `head` is ahead of the stored `audit_head` row.
    head_dirty: bool,
}

/// What the group writer needs of an engine: its connection runs plain SQL.
pub trait Engine: Database {
    /// The statement that opens a physical write transaction.
    const BEGIN: &'static str;
    /// A statement run right after [`Engine::BEGIN`], if any.
    const AFTER_BEGIN: Option<&'static str>;
}

impl Engine for sqlx::Sqlite {
    /// Take the write lock at once, so no transaction fails half-way on lock upgrade.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const AFTER_BEGIN: Option<&'static str> = None;
}

impl Engine for sqlx::Postgres {
    const BEGIN: &'static str = "BEGIN";
    /// Every write appends to the audit chain and so locks `audit_head` anyway; taking that
    /// lock first gives every physical transaction the same lock order, so two nodes can
    /// never deadlock on (dialog row, audit head) taken in opposite orders.
    const AFTER_BEGIN: Option<&'static str> = Some("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE");
}

impl<DB: Database> Batch<DB> {
    /// Drops the cached audit head (a new or abandoned physical transaction).
    fn forget_head(&mut self) {
        self.head = None;
        self.head_at_savepoint = None;
        self.head_dirty = false;
    }

    /// Rolls the whole physical transaction back: every waiter of the batch gets an error.
    fn abandon(&mut self) {
        self.tx = None;
        self.opened = None;
        self.forget_head();
        for waiter in self.pending.drain(..) {
            let _ = waiter.send(Err("the batch was rolled back".into()));
        }
    }
}

/// Shared by every write transaction of one store.
pub(crate) struct GroupWriter<DB: Engine> {
    pool: Pool<DB>,
    batch: Arc<Mutex<Batch<DB>>>,
    /// Writers waiting for the batch lock: while there are some, a commit leaves the
    /// physical transaction open for them to join.
    queued: AtomicUsize,
}

impl<DB: Engine> GroupWriter<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub(crate) fn new(pool: Pool<DB>) -> Arc<Self> {
        let batch = Batch {
            tx: None,
            opened: None,
            pending: Vec::new(),
            savepoints: 0,
            head: None,
            head_at_savepoint: None,
            head_dirty: false,
        };
        Arc::new(Self { pool, batch: Arc::new(Mutex::new(batch)), queued: AtomicUsize::new(0) })
    }

    /// Starts a logical transaction (opening the physical one if needed).
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<GroupTx<DB>> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.batch.clone().lock_owned().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if guard.tx.is_none() {
            // A new physical transaction reads the head afresh.
            guard.forget_head();
            let mut tx = self.pool.begin_with(DB::BEGIN).await?;
            if let Some(sql) = DB::AFTER_BEGIN {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            guard.tx = Some(tx);
            guard.opened = Some(Instant::now());
        }
        guard.savepoints += 1;
        guard.head_at_savepoint = guard.head.clone();
        let savepoint = format!("ward_w{}", guard.savepoints);
        let mut tx = GroupTx { guard: Some(guard), writer: self.clone(), savepoint };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SAVEPOINT {}", tx.savepoint))).execute(tx.conn()).await?;
        Ok(tx)
    }

    /// Commits the physical transaction if nobody is queued to join it, or it is full or
    /// old; wakes every waiter of the batch with the outcome.
    async fn flush_if_due(&self, guard: &mut OwnedMutexGuard<Batch<DB>>) {
        let full = guard.pending.len() >= MAX_BATCH || guard.opened.is_some_and(|t| t.elapsed() >= MAX_AGE);
        if self.queued.load(Ordering::SeqCst) > 0 && !full {
            return;
        }
        let Some(mut tx) = guard.tx.take() else { return };
        guard.opened = None;
        let head = guard.head.take().filter(|_| guard.head_dirty);
        guard.forget_head();
        let outcome = match head {
            Some(head) => match store_head(&mut tx, &head).await {
                Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => tx.commit().await.map_err(|e| e.to_string()),
        };
        for waiter in guard.pending.drain(..) {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// A logical write transaction (see the module docs).
pub struct GroupTx<DB: Engine>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    guard: Option<OwnedMutexGuard<Batch<DB>>>,
    writer: Arc<GroupWriter<DB>>,
    savepoint: String,
}

/// A logical write transaction on SQLite.
pub type SqliteTx = GroupTx<sqlx::Sqlite>;
/// A logical write transaction on PostgreSQL.
pub type PgTx = GroupTx<sqlx::Postgres>;

impl<DB: Engine> GroupTx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        // Invariant: while a logical transaction holds the guard, the batch has an open
        // physical transaction (opened in `begin`, taken only in `flush_if_due` after
        // the logical transaction released or rolled back).
        let batch = self.guard.as_mut().expect("a live logical transaction holds the batch");
        batch.tx.as_mut().expect("the batch has an open transaction")
    }

    /// The audit chain's head in this physical transaction, if already read.
    pub(crate) fn audit_head(&self) -> Option<(i64, String)> {
        self.guard.as_ref().and_then(|b| b.head.clone())
    }

    /// Notes the head after reading it or appending a record; `appended` marks the stored
    /// `audit_head` row as behind (written before the physical commit).
    pub(crate) fn set_audit_head(&mut self, seq: i64, hash: String, appended: bool) {
        if let Some(batch) = self.guard.as_mut() {
            batch.head = Some((seq, hash));
            batch.head_dirty |= appended;
        }
    }

    pub(crate) async fn finish_commit(mut self: Box<Self>) -> Result<()> {
        let release = format!("RELEASE SAVEPOINT {}", self.savepoint);
        sqlx::raw_sql(sqlx::AssertSqlSafe(release)).execute(self.conn()).await?;
        let (tx, rx) = oneshot::channel();
        let mut guard = self.guard.take().expect("a live logical transaction holds the batch");
        guard.pending.push(tx);
        self.writer.flush_if_due(&mut guard).await;
        drop(guard);
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            Err(_) => Err(StoreError::Unavailable("the commit batch was abandoned".into())),
        }
    }

    pub(crate) async fn finish_rollback(mut self: Box<Self>) -> Result<()> {
        let mut guard = self.guard.take().expect("a live logical transaction holds the batch");
        if let Err(e) = rollback_to(&mut guard, &self.savepoint).await {
            // Never commit a batch holding half of this transaction: abandon it.
            guard.abandon();
            return Err(e);
        }
        self.writer.flush_if_due(&mut guard).await;
        Ok(())
    }
}

async fn rollback_to<DB: Engine>(guard: &mut OwnedMutexGuard<Batch<DB>>, savepoint: &str) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    guard.head = guard.head_at_savepoint.clone();
    let Some(tx) = guard.tx.as_mut() else { return Ok(()) };
    let sql = format!("ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut **tx).await?;
    Ok(())
}

/// Writes the batch's audit head to the `audit_head` row. The hash is Ward's own lower-case
/// hex digest; anything else is refused rather than spliced into SQL.
async fn store_head<DB: Engine>(tx: &mut Transaction<'static, DB>, (seq, hash): &(i64, String)) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Corrupt("the audit head is not a hex digest".into()));
    }
    let sql = format!("UPDATE audit_head SET seq = {seq}, hash = '{hash}' WHERE id = 1");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut **tx).await?;
    Ok(())
}

impl<DB: Engine> Drop for GroupTx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Dropped without commit or rollback (an error path): undo this transaction's work
    /// and let the batch go on, on a task since `Drop` cannot wait.
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let writer = self.writer.clone();
            let savepoint = std::mem::take(&mut self.savepoint);
            tokio::spawn(async move {
                if rollback_to(&mut guard, &savepoint).await.is_err() {
                    // The savepoint could not be undone: abandon the whole batch (its
                    // waiters get an error) rather than commit half of this transaction.
                    guard.abandon();
                    return;
                }
                writer.flush_if_due(&mut guard).await;
            });
        }
    }
}
