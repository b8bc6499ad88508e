//! PostgreSQL side of `AFT_LOG`: pool set-up, migration, the one-statement `UNNEST` batch insert
//! and the mapping of SQLSTATEs onto retry classes and alarm conditions.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::backend::{DbError, ErrorClass, PoolSettings};
use super::record::AftRecord;
use super::schema;

/// One statement per batch whatever its size: arrays bind as 13 parameters.
const INSERT: &str = "INSERT INTO AFT_LOG (aft_index, jid, to_jid, method, filename, \
     real_filename, file_type, chat_type, file_server, file_path, file_size, bytes_transferred, \
     timestampvalue) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], \
     $13::timestamp[]) \
     ON CONFLICT (aft_index) DO NOTHING RETURNING aft_index";

/// How long `open` waits for its first connection.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time the client allows beyond the server-side statement timeout before it gives up.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn connect(url: &str, settings: PoolSettings) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| DbError::new(ErrorClass::Permanent, format!("database.url: {e}")))?
        .application_name("mft")
        .options([(
            "statement_timeout",
            format!("{}", settings.statement_timeout.as_millis()),
        )]);
    // Fail `open` now, with the real reason (not a pool timeout), if the database cannot be
    // reached; a loaded machine gets longer than the pool's short acquire timeout.
    let wait = settings.acquire_timeout.max(OPEN_TIMEOUT);
    match tokio::time::timeout(wait, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            // Best effort: the server side ends either way.
            let _ = conn.close().await;
        }
        Ok(Err(e)) => return Err(classify(&e, true)),
        Err(_) => {
            return Err(DbError::new(
                ErrorClass::Unreachable,
                format!("no connection to PostgreSQL within {wait:?}"),
            ));
        }
    }
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

pub(crate) async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut tx = pool.begin().await.map_err(|e| classify(&e, true))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(schema::PG_MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&e, false))?;
    for ddl in schema::POSTGRES {
        sqlx::query(*ddl)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e, false))?;
    }
    tx.commit().await.map_err(|e| classify(&e, false))
}

pub(crate) async fn write(
    pool: &PgPool,
    settings: PoolSettings,
    rows: &[&AftRecord],
) -> Result<Vec<i64>, DbError> {
    let n = rows.len();
    let mut index = Vec::with_capacity(n);
    let mut jid = Vec::with_capacity(n);
    let mut to_jid = Vec::with_capacity(n);
    let mut method = Vec::with_capacity(n);
    let mut filename = Vec::with_capacity(n);
    let mut real_filename = Vec::with_capacity(n);
    let mut file_type = Vec::with_capacity(n);
    let mut chat_type = Vec::with_capacity(n);
    let mut file_server = Vec::with_capacity(n);
    let mut file_path = Vec::with_capacity(n);
    let mut file_size = Vec::with_capacity(n);
    let mut bytes = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    for r in rows {
        index.push(r.aft_index);
        jid.push(r.jid.as_str());
        to_jid.push(r.to_jid.as_str());
        method.push(r.method.as_str());
        filename.push(r.filename.as_str());
        real_filename.push(r.real_filename.as_str());
        file_type.push(r.file_type.as_str());
        chat_type.push(r.chat_type.as_str());
        file_server.push(r.file_server.as_str());
        file_path.push(r.file_path.as_str());
        file_size.push(r.file_size);
        bytes.push(r.bytes_transferred);
        ts.push(r.timestamp.naive_utc());
    }
    // Errors getting a connection are definite: the statement was never sent.
    let mut conn = pool.acquire().await.map_err(|e| classify(&e, true))?;
    let query = sqlx::query_scalar::<_, i64>(INSERT)
        .bind(index)
        .bind(jid)
        .bind(to_jid)
        .bind(method)
        .bind(filename)
        .bind(real_filename)
        .bind(file_type)
        .bind(chat_type)
        .bind(file_server)
        .bind(file_path)
        .bind(file_size)
        .bind(bytes)
        .bind(ts)
        .fetch_all(&mut *conn);
    match tokio::time::timeout(settings.statement_timeout + CLIENT_GRACE, query).await {
        Ok(result) => result.map_err(|e| classify(&e, false)),
        Err(_) => {
            // The statement may still commit; the connection's state is unknown: drop it.
            conn.close_on_drop();
            Err(DbError::new(
                ErrorClass::Ambiguous,
                "no answer from PostgreSQL within the statement timeout",
            ))
        }
    }
}

pub(crate) async fn ping(pool: &PgPool, settings: PoolSettings) -> Result<(), DbError> {
    let mut conn = pool.acquire().await.map_err(|e| classify(&e, true))?;
    let query = sqlx::query("SELECT 1").execute(&mut *conn);
    match tokio::time::timeout(settings.statement_timeout + CLIENT_GRACE, query).await {
        Ok(result) => result.map(drop).map_err(|e| classify(&e, true)),
        Err(_) => {
            conn.close_on_drop();
            Err(DbError::new(ErrorClass::Unreachable, "ping timed out"))
        }
    }
}

/// Classifies a sqlx error. `before_send`: the error came from getting a connection, so the
/// statement cannot have run.
pub(crate) fn classify(e: &sqlx::Error, before_send: bool) -> DbError {
    let message = e.to_string();
    let class = match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            class_of_sqlstate(&code)
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => ErrorClass::Unreachable,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => {
            if before_send {
                ErrorClass::Unreachable
            } else {
                ErrorClass::Ambiguous
            }
        }
        sqlx::Error::PoolClosed => ErrorClass::Unreachable,
        _ => {
            if before_send {
                ErrorClass::Unreachable
            } else {
                ErrorClass::Permanent
            }
        }
    };
    DbError::new(class, message)
}

/// SQLSTATE → class. An error response means the statement did not commit.
fn class_of_sqlstate(code: &str) -> ErrorClass {
    match code {
        "53100" => ErrorClass::Full,
        // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped
        "57P01" | "57P02" | "57P03" | "57P04" => ErrorClass::Unreachable,
        // serialization failure, deadlock, lock not available, query cancelled (statement timeout)
        "40001" | "40P01" | "55P03" | "57014" => ErrorClass::Transient,
        // insufficient resources (memory, connections), connection exceptions, system errors
        c if c.starts_with("53") || c.starts_with("58") => ErrorClass::Transient,
        c if c.starts_with("08") => ErrorClass::Unreachable,
        // Data exceptions and integrity violations belong to the rows: retrying cannot help.
        c if c.starts_with("22") || c.starts_with("23") => ErrorClass::Permanent,
        // Anything else (a missing table, permissions) is the database's state, not the rows':
        // keep the rows and retry, so an operator can fix it without losing any.
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(class_of_sqlstate("53100"), ErrorClass::Full);
        assert_eq!(class_of_sqlstate("57P01"), ErrorClass::Unreachable);
        assert_eq!(class_of_sqlstate("08006"), ErrorClass::Unreachable);
        assert_eq!(class_of_sqlstate("40001"), ErrorClass::Transient);
        assert_eq!(class_of_sqlstate("53200"), ErrorClass::Transient);
        assert_eq!(class_of_sqlstate("22001"), ErrorClass::Permanent);
        assert_eq!(class_of_sqlstate("23505"), ErrorClass::Permanent);
        assert_eq!(class_of_sqlstate("42P01"), ErrorClass::Transient);
    }
}
