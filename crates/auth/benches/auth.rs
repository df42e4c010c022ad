//! Sign-ins per second (bounded by argon2id) and token-validation latency.
//! Run: `cargo bench -p ward-auth`. Figures are recorded in docs/authentication.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use ward_audit::{AuditLog, AuditSettings, Context, Via};
use ward_auth::{Accounts, AuthSettings, PasswordPolicy, SessionLimits};
use ward_crypto::PasswordHasher;
use ward_storage::{ConnectOptions, Target};

fn setup(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) -> (Accounts, String) {
    rt.block_on(async {
        let store = ward_storage::open(&ConnectOptions {
            target: Target::Sqlite(dir.path().join("ward.db")),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        })
        .await
        .expect("open");
        let audit = AuditLog::open(
            store.clone(),
            AuditSettings {
                checkpoint_every: 1000,
                checkpoint_interval: Duration::from_secs(60),
                key_file: dir.path().join("audit/signing.key"),
                checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
            },
        )
        .await
        .expect("audit");
        let settings = AuthSettings {
            policy: PasswordPolicy::new(12),
            limits: SessionLimits { idle: Duration::from_secs(900), absolute: Duration::from_secs(43_200) },
            lockout_threshold: 5,
            hard_lock_threshold: 20,
            attempts_per_ip_per_minute: 1_000_000,
            max_concurrent_hashes: 4,
        };
        let accounts = Accounts::new(
            store.clone(),
            audit,
            PasswordHasher::default_params().expect("params"),
            settings,
            ward_keys::DataKeys::new(store, Arc::new(ward_keys::LocalKeyStore::ephemeral())),
        );
        let ctx = Context::cli(None, OffsetDateTime::now_utc());
        accounts.create_user(&ctx, "bench.user", "benchmark passphrase 9", &["staff".into()]).await.expect("user");
        let ok = accounts
            .login(&api(), "bench.user", "benchmark passphrase 9")
            .await
            .expect("login")
            .session()
            .expect("no MFA step");
        (accounts, ok.token.expose().to_string())
    })
}

fn api() -> Context {
    Context::anonymous(Via::Api, Some("127.0.0.1".into()), None, OffsetDateTime::now_utc())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let dir = tempfile::tempdir().expect("tmp");
    let (accounts, token) = setup(&rt, &dir);

    // Latency percentiles of token validation, one call at a time: from the session cache
    // (the steady state) and with the cache off (every call reads the database).
    let uncached = accounts.clone().with_session_cache_ttl(Duration::ZERO);
    for (name, a) in [("cached", &accounts), ("uncached", &uncached)] {
        let mut samples: Vec<Duration> = rt.block_on(async {
            let mut out = Vec::with_capacity(20_000);
            for _ in 0..20_000 {
                let start = Instant::now();
                black_box(a.authenticate(&api(), &token).await.expect("valid"));
                out.push(start.elapsed());
            }
            out
        });
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        eprintln!(
            "token validation ({name}) over 20000 calls: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
            pct(0.50),
            pct(0.99),
            pct(0.999),
            samples[samples.len() - 1]
        );
    }

    // Sign-in throughput with 8 sign-ins in flight (argon2 runs at most
    // `max_concurrent_hashes` at once; the rest queue).
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let a = accounts.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..8 {
                    black_box(a.login(&api(), "bench.user", "benchmark passphrase 9").await.expect("login"));
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
    });
    let took = started.elapsed();
    eprintln!("sign-in throughput: 64 sign-ins, 8 in flight, in {took:?} = {:.1}/s", 64.0 / took.as_secs_f64());

    c.bench_function("token_validation", |b| {
        b.iter(|| rt.block_on(async { black_box(accounts.authenticate(&api(), &token).await.expect("valid")) }))
    });
    let mut g = c.benchmark_group("sign_in");
    g.sample_size(10);
    g.bench_function("argon2id_m64_t3_one_at_a_time", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    accounts
                        .login(&api(), "bench.user", "benchmark passphrase 9")
                        .await
                        .expect("login")
                        .session()
                        .expect("no MFA step"),
                )
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
