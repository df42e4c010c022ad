//! Test support: a throw-away PostgreSQL database per test.
//!
//! Tests read the server from `WARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), create a uniquely named database on it,
//! and drop it (with `FORCE`) when the guard is dropped, even after a panic.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// The admin URL tests connect to.
pub fn postgres_admin_url() -> String {
    std::env::var("WARD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database that exists for as long as this guard lives.
pub struct TempPostgres {
    admin_url: String,
    name: String,
    /// Connection URL of the new database.
    pub url: String,
}

impl TempPostgres {
    /// Creates `ward_t_<uuid>` on the test server.
    pub async fn create() -> Result<Self, sqlx::Error> {
        let admin_url = postgres_admin_url();
        let name = format!("ward_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        conn.close().await?;
        let url = replace_database(&admin_url, &name);
        Ok(Self { admin_url, name, url })
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime; a fresh thread with its own runtime avoids nesting.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}
