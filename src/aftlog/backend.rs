//! The database behind `AFT_LOG`: PostgreSQL or SQLite chosen by URL, with one interface for the
//! writer (connect, migrate, write a batch, ping) and one classification of failures.

use std::time::Duration;

use super::record::AftRecord;
use super::{AftLogError, DbCondition, postgres, sqlite};

/// How a failed database call may be retried, and what it says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Could not reach the database (refused, pool timeout, dropped before sending): nothing
    /// was written; retry later.
    Unreachable,
    /// The database refused the write for lack of space: nothing was written; retry later.
    Full,
    /// Nothing was written (serialization failure, lock or statement timeout): retry.
    Transient,
    /// The connection failed after the statement was sent: it may or may not have committed.
    Ambiguous,
    /// Retrying the same rows cannot succeed (bad data, schema problem).
    Permanent,
}

/// A classified database failure. `message` is for logs, never for clients.
#[derive(Debug, Clone)]
pub(crate) struct DbError {
    pub(crate) class: ErrorClass,
    pub(crate) message: String,
}

impl DbError {
    pub(crate) fn new(class: ErrorClass, message: impl Into<String>) -> DbError {
        DbError {
            class,
            message: message.into(),
        }
    }

    /// What this failure says about the database, if anything.
    pub(crate) fn condition(&self) -> Option<DbCondition> {
        match self.class {
            ErrorClass::Unreachable | ErrorClass::Ambiguous => {
                Some(DbCondition::Unreachable(self.message.clone()))
            }
            ErrorClass::Full => Some(DbCondition::Full(self.message.clone())),
            ErrorClass::Transient | ErrorClass::Permanent => None,
        }
    }

    /// The public error for this failure.
    pub(crate) fn to_public(&self) -> AftLogError {
        match self.class {
            ErrorClass::Unreachable | ErrorClass::Ambiguous => {
                AftLogError::Unavailable(self.message.clone())
            }
            ErrorClass::Full => AftLogError::Full(self.message.clone()),
            ErrorClass::Transient | ErrorClass::Permanent => {
                AftLogError::Database(self.message.clone())
            }
        }
    }
}

/// Pool settings derived from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) max_connections: u32,
    /// Longest wait for a connection (so an unreachable database fails an attempt quickly).
    pub(crate) acquire_timeout: Duration,
    /// Server-side limit on one statement; the client gives up a little later.
    pub(crate) statement_timeout: Duration,
}

/// A connected database.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Postgres(sqlx::PgPool, PoolSettings),
    Sqlite(sqlx::SqlitePool),
}

impl Backend {
    /// Connects to `url` (`postgres://…`/`postgresql://…` or `sqlite://path`).
    pub(crate) async fn connect(url: &str, settings: PoolSettings) -> Result<Backend, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres(
                postgres::connect(url, settings).await?,
                settings,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite(sqlite::connect(url, settings).await?))
        } else {
            Err(DbError::new(
                ErrorClass::Permanent,
                "database.url must start with postgres:// or sqlite://",
            ))
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(..) => "postgresql",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Creates the table and indexes if missing.
    pub(crate) async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Backend::Postgres(pool, _) => postgres::migrate(pool).await,
            Backend::Sqlite(pool) => sqlite::migrate(pool).await,
        }
    }

    /// Inserts `rows` in one statement (SQLite: one transaction), skipping ids already present.
    /// Returns the ids actually inserted.
    pub(crate) async fn write(&self, rows: &[&AftRecord]) -> Result<Vec<i64>, DbError> {
        match self {
            Backend::Postgres(pool, settings) => postgres::write(pool, *settings, rows).await,
            Backend::Sqlite(pool) => sqlite::write(pool, rows).await,
        }
    }

    /// `SELECT 1`.
    pub(crate) async fn ping(&self) -> Result<(), DbError> {
        match self {
            Backend::Postgres(pool, settings) => postgres::ping(pool, *settings).await,
            Backend::Sqlite(pool) => sqlite::ping(pool).await,
        }
    }

    /// Checks that the `AFT_LOG` table exists and can be read, changing nothing.
    pub(crate) async fn table_present(&self) -> Result<(), DbError> {
        let sql = "SELECT aft_index FROM aft_log LIMIT 1";
        let result = match self {
            Backend::Postgres(pool, _) => sqlx::query(sql).fetch_optional(pool).await.map(|_| ()),
            Backend::Sqlite(pool) => sqlx::query(sql).fetch_optional(pool).await.map(|_| ()),
        };
        result.map_err(|e| {
            DbError::new(
                ErrorClass::Permanent,
                format!("AFT_LOG is missing or unreadable (run `mft migrate`): {e}"),
            )
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Backend::Postgres(pool, _) => pool.close().await,
            Backend::Sqlite(pool) => pool.close().await,
        }
    }
}
