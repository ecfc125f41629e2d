//! The store's one error type: a failure of the store itself, not a refusal or a conflict.

/// A failure of the store itself (not a refusal, not a conflict).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start-up.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// The file system refused (creating the data directory).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
