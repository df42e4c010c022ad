//! The storage error type, shared by both engines.

/// What can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. a username taken in another case).
    #[error("a record with the same {0} already exists")]
    Conflict(&'static str),
    /// The database cannot be reached or no pooled connection came free in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value cannot be read back (bad JSON, bad UUID): data corruption.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// Applying migrations failed; start-up stops.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("key"),
            _ => StoreError::Database(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e.to_string())
    }
}
