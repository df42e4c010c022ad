//! Messages per second through `Messaging::send` (seal under the dialog's data key, gapless
//! `seq`, audit record, one SQLite commit with `synchronous = FULL`) with the data-key
//! cache on and off, and key lookups alone (`DataKeys::by_id`) on and off.
//!
//! With the local keyring an unwrap is one AES-GCM open, so the cache saves little; with an
//! HSM each miss is a PKCS#11 call. To include SoftHSM2, initialise a token and run:
//! `SOFTHSM2_CONF=/path/softhsm2.conf WARD_BENCH_PKCS11_LABEL=bench WARD_BENCH_PKCS11_PIN=1234
//! cargo bench -p ward-messaging --bench send` (docs/BENCHMARKS.md has the exact steps).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{AuditLog, AuditSettings, Context, Via};
use ward_keys::{CacheSettings, DataKeys, KeyStore, LocalKeyStore, Pkcs11KeyStore};
use ward_messaging::{DialogKind, Messaging, MessagingSettings, NewDialog, NewMessage};
use ward_storage::{ConnectOptions, Store, Target, UserRecord};

struct Setup {
    _dir: tempfile::TempDir,
    messaging: Messaging,
    keys: DataKeys,
    ctx: Context,
    principal: ward_access::Principal,
    dialog: Uuid,
    key_id: Uuid,
}

async fn setup(key_store: Arc<dyn KeyStore>, cache: CacheSettings) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ConnectOptions {
        target: Target::Sqlite(dir.path().join("ward.db")),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
    };
    let store: Arc<dyn Store> = ward_storage::open(&options).await.expect("open");
    let audit = AuditLog::open(
        store.clone(),
        AuditSettings {
            checkpoint_every: 100_000,
            checkpoint_interval: Duration::from_secs(3600),
            key_file: dir.path().join("audit/signing.key"),
            checkpoint_file: dir.path().join("audit/checkpoints.jsonl"),
        },
    )
    .await
    .expect("audit");
    let keys = DataKeys::with_cache(store.clone(), key_store, cache);
    let now = OffsetDateTime::now_utc();
    let mut ids = Vec::new();
    let mut tx = store.begin().await.expect("begin");
    for name in ["bench.a", "bench.b"] {
        let id = Uuid::now_v7();
        let user = UserRecord {
            id,
            username: name.into(),
            username_key: name.into(),
            password_hash: "$argon2id$unused".into(),
            roles: vec!["patient".into()],
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        };
        tx.insert_user(&user).await.expect("user");
        ids.push(id);
    }
    tx.commit().await.expect("commit");
    let access = ward_access::Access::new(store.clone(), audit.clone(), Default::default(), None, Some(keys.clone()));
    let messaging = Messaging::new(store.clone(), audit, keys.clone(), access.clone(), MessagingSettings::default());
    let mut ctx = Context::anonymous(Via::Api, Some("127.0.0.1".into()), None, now);
    ctx.user_id = Some(ids[0].to_string());
    let new = NewDialog { kind: DialogKind::Private, name: None, members: vec![ids[1]] };
    let principal = access
        .principal(ids[0], &["patient".to_string()], ward_access::CredentialKind::Session, None, None, None)
        .await
        .expect("principal");
    let (dialog, _) = messaging.create_dialog(&ctx, &principal, new).await.expect("dialog");
    let key_id = store.dialog_by_id(dialog.id).await.expect("read").expect("dialog").data_key_id;
    Setup { _dir: dir, messaging, keys, ctx, principal, dialog: dialog.id, key_id }
}

fn key_stores() -> Vec<(&'static str, Arc<dyn KeyStore>)> {
    let mut out: Vec<(&'static str, Arc<dyn KeyStore>)> = vec![("local", Arc::new(LocalKeyStore::ephemeral()))];
    if let (Ok(label), Ok(pin)) = (std::env::var("WARD_BENCH_PKCS11_LABEL"), std::env::var("WARD_BENCH_PKCS11_PIN")) {
        let module =
            std::env::var("WARD_BENCH_PKCS11_MODULE").unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
        let store = Pkcs11KeyStore::open(Path::new(&module), &label, zeroize::Zeroizing::new(pin))
            .expect("open the PKCS#11 token");
        out.push(("pkcs11", Arc::new(store)));
    } else {
        eprintln!("WARD_BENCH_PKCS11_LABEL / _PIN unset: benchmarking the local keyring only");
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let body = "x".repeat(1024);
    let mut sends = c.benchmark_group("send_1KiB");
    sends.throughput(Throughput::Elements(1));
    sends.sample_size(30);
    let mut lookups_setups = Vec::new();
    for (backend, store) in key_stores() {
        for (cache_name, cache) in [("cache_on", CacheSettings::DEFAULT), ("cache_off", CacheSettings::OFF)] {
            let s = rt.block_on(setup(store.clone(), cache));
            sends.bench_function(format!("{backend}_{cache_name}"), |b| {
                b.iter(|| {
                    let new = NewMessage { body: body.clone(), client_msg_id: None, attachments: vec![] };
                    rt.block_on(s.messaging.send(&s.ctx, &s.principal, s.dialog, new)).expect("send")
                })
            });
            lookups_setups.push((backend, cache_name, s));
        }
    }
    sends.finish();

    let mut lookups = c.benchmark_group("data_key_lookup");
    lookups.throughput(Throughput::Elements(1));
    for (backend, cache_name, s) in &lookups_setups {
        lookups.bench_function(format!("{backend}_{cache_name}"), |b| {
            b.iter(|| rt.block_on(s.keys.by_id(s.key_id)).expect("key"))
        });
    }
    lookups.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
