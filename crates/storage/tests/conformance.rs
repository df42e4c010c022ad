//! Runs the storage conformance suite on both engines.

use std::time::Duration;

use ward_storage::testing::TempPostgres;
use ward_storage::{ConnectOptions, Target, conformance, open};

fn options(target: Target) -> ConnectOptions {
    ConnectOptions { target, max_connections: 4, acquire_timeout: Duration::from_secs(5) }
}

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&options(Target::Sqlite(dir.path().join("ward.db")))).await.expect("open");
    conformance::run_all(store).await;
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let db = TempPostgres::create().await.expect("create test database");
    let store = open(&options(Target::Postgres(db.url.clone()))).await.expect("open");
    conformance::run_all(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn concurrent_openers_migrate_once_on_both_engines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ward.db");
    let o = options(Target::Sqlite(path));
    let (a, b) = tokio::join!(open(&o), open(&o));
    a.expect("first sqlite opener");
    b.expect("second sqlite opener");

    let db = TempPostgres::create().await.expect("create test database");
    let o = options(Target::Postgres(db.url.clone()));
    let (a, b) = tokio::join!(open(&o), open(&o));
    let (a, b) = (a.expect("first pg opener"), b.expect("second pg opener"));
    a.close().await;
    b.close().await;
}
