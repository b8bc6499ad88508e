//! SQLite side of `AFT_LOG` (the embedded default): file and WAL set-up, migration, the batch
//! insert (multi-row `VALUES` within the bind limit, in one transaction) and error mapping.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::backend::{DbError, ErrorClass, PoolSettings};
use super::record::{AftRecord, sqlite_timestamp};
use super::schema;

/// Rows per statement: 13 binds each, well inside SQLite's 32766-parameter limit.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// How long a writer waits for SQLite's lock before the attempt fails and is retried.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The file path in `sqlite://path` (also accepts `sqlite:path`).
pub(crate) fn path_of(url: &str) -> Result<&str, DbError> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    // Drop URL parameters such as `?mode=rwc`: the node decides the options.
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(DbError::new(
            ErrorClass::Permanent,
            "database.url: sqlite:// needs a file path",
        ));
    }
    Ok(path)
}

pub(crate) async fn connect(url: &str, settings: PoolSettings) -> Result<SqlitePool, DbError> {
    let path = Path::new(path_of(url)?);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await.map_err(|e| {
            DbError::new(
                ErrorClass::Unreachable,
                format!("cannot create {}: {e}", parent.display()),
            )
        })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a committed row survives power loss, as the upload contract promises.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| classify(&e))
}

pub(crate) async fn migrate(pool: &SqlitePool) -> Result<(), DbError> {
    let mut tx = pool.begin().await.map_err(|e| classify(&e))?;
    for ddl in schema::SQLITE {
        sqlx::query(*ddl)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e))?;
    }
    tx.commit().await.map_err(|e| classify(&e))
}

pub(crate) async fn write(pool: &SqlitePool, rows: &[&AftRecord]) -> Result<Vec<i64>, DbError> {
    let mut tx = pool.begin().await.map_err(|e| classify(&e))?;
    let mut inserted = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO AFT_LOG (aft_index, jid, to_jid, method, filename, real_filename, \
             file_type, chat_type, file_server, file_path, file_size, bytes_transferred, \
             timestampvalue) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(r.aft_index)
                .push_bind(r.jid.clone())
                .push_bind(r.to_jid.clone())
                .push_bind(r.method.as_str())
                .push_bind(r.filename.clone())
                .push_bind(r.real_filename.clone())
                .push_bind(r.file_type.clone())
                .push_bind(r.chat_type.clone())
                .push_bind(r.file_server.clone())
                .push_bind(r.file_path.clone())
                .push_bind(r.file_size)
                .push_bind(r.bytes_transferred)
                .push_bind(sqlite_timestamp(&r.timestamp));
        });
        qb.push(" ON CONFLICT (aft_index) DO NOTHING RETURNING aft_index");
        let ids: Vec<i64> = qb
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(&e))?;
        inserted.extend(ids);
    }
    tx.commit().await.map_err(|e| classify(&e))?;
    Ok(inserted)
}

pub(crate) async fn ping(pool: &SqlitePool) -> Result<(), DbError> {
    // An open connection keeps working on a database file deleted under it, writing rows that
    // vanish with the process: a ping must notice the file is gone.
    let path = pool.connect_options().get_filename().to_path_buf();
    if !path.as_os_str().is_empty() && !path.exists() {
        return Err(DbError::new(
            ErrorClass::Unreachable,
            format!("SQLite database file {} is gone", path.display()),
        ));
    }
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| classify(&e))
}

/// SQLite runs in-process: a failed statement or commit is rolled back, never ambiguous.
pub(crate) fn classify(e: &sqlx::Error) -> DbError {
    let message = e.to_string();
    let class = match e {
        sqlx::Error::Database(db) => {
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(1);
            // Primary result code: the low byte of the extended code.
            match code & 0xff {
                13 => ErrorClass::Full,        // SQLITE_FULL
                14 => ErrorClass::Unreachable, // SQLITE_CANTOPEN
                // BUSY, LOCKED, IOERR, NOMEM, PROTOCOL: the database's state, retry.
                5 | 6 | 7 | 10 | 15 => ErrorClass::Transient,
                // CONSTRAINT, MISMATCH, TOOBIG, RANGE: the rows'.
                18 | 19 | 20 | 25 => ErrorClass::Permanent,
                _ => ErrorClass::Transient,
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            ErrorClass::Unreachable
        }
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    };
    DbError::new(class, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            path_of("sqlite://mft-data/a.db").ok(),
            Some("mft-data/a.db")
        );
        assert_eq!(path_of("sqlite:///abs/a.db").ok(), Some("/abs/a.db"));
        assert_eq!(path_of("sqlite:a.db?mode=rwc").ok(), Some("a.db"));
        assert!(path_of("sqlite://").is_err());
    }
}
