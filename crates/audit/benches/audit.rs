//! Audit benchmarks: chain verification speed (target ≥ 200,000 records/s on one core),
//! sealing, and durable audited writes per second on SQLite.
//!
//! Run: `cargo bench -p ward-audit`. Figures are recorded in docs/audit.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::chain::{GENESIS, seal};
use ward_audit::{AuditEvent, AuditLog, AuditSettings, CheckpointSigner, Outcome, Verifier, Via};
use ward_storage::AuditRow;

fn event(i: i64) -> AuditEvent {
    AuditEvent::new("message.create", Outcome::Success, Via::Api, OffsetDateTime::now_utc())
        .user(Uuid::now_v7(), format!("clinician{i}"))
        .session(Uuid::now_v7())
        .resource(format!("message/{}", Uuid::now_v7()))
        .client(Some("203.0.113.7".into()), Some("Mozilla/5.0 (X11; Linux x86_64) ward-bench".into()))
        .detail("dialog_id", Uuid::now_v7().to_string())
        .detail("seq", i)
}

fn trail(n: i64) -> Vec<AuditRow> {
    let mut prev = GENESIS.to_string();
    (1..=n)
        .map(|seq| {
            let row = seal(&event(seq), Uuid::now_v7(), seq, &prev);
            prev.clone_from(&row.hash);
            row
        })
        .collect()
}

fn verify(c: &mut Criterion) {
    let rows = trail(100_000);
    let key = CheckpointSigner::from_secret([9; 32]);
    let cps = vec![key.sign(100_000, &rows[99_999].hash, 0)];
    let mut g = c.benchmark_group("audit_verify");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.sample_size(10);
    g.bench_function("100k_records", |b| {
        b.iter(|| {
            let mut v = Verifier::new(&[key.verifying_key()], &cps).expect("checkpoints");
            for r in &rows {
                v.push(r).expect("intact");
            }
            black_box(v.finish().expect("intact"))
        })
    });
    g.finish();
}

fn seal_one(c: &mut Criterion) {
    let e = event(1);
    c.bench_function("audit_seal_one", |b| b.iter(|| black_box(seal(&e, Uuid::nil(), 42, GENESIS))));
}

fn durable_writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let sqlite = ward_storage::Target::Sqlite(dir.path().join("ward.db"));
    durable_writes_on(c, &rt, &dir, sqlite, "audit_durable_write_sqlite");
    // PostgreSQL from WARD_TEST_POSTGRES_URL (default: the local test server), if reachable.
    match rt.block_on(ward_storage::testing::TempPostgres::create()) {
        Ok(db) => {
            let target = ward_storage::Target::Postgres(db.url.clone());
            durable_writes_on(c, &rt, &dir, target, "audit_durable_write_postgres");
        }
        Err(e) => eprintln!("skipping the PostgreSQL benchmark: {e}"),
    }
}

fn durable_writes_on(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    dir: &tempfile::TempDir,
    target: ward_storage::Target,
    name: &str,
) {
    let store = rt
        .block_on(ward_storage::open(&ward_storage::ConnectOptions {
            target,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        }))
        .expect("open");
    let settings = AuditSettings {
        checkpoint_every: 1000,
        checkpoint_interval: Duration::from_secs(60),
        key_file: dir.path().join("audit/signing.key"),
        checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
    };
    let log = rt.block_on(AuditLog::open(store, settings)).expect("audit");
    let log = Arc::new(log);
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    // 16 concurrent writers, each one audited transaction, durable before it returns.
    g.throughput(Throughput::Elements(16));
    g.bench_function("16_concurrent", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..16)
                    .map(|i| {
                        let log = log.clone();
                        tokio::spawn(async move { log.record_alone(&event(i)).await.expect("recorded") })
                    })
                    .collect();
                for t in tasks {
                    black_box(t.await.expect("join"));
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, verify, seal_one, durable_writes);
criterion_main!(benches);
