//! The `AFT_LOG` DDL for both backends, and the idempotent migration that applies it.
//!
//! The table is created unquoted as `AFT_LOG` (PostgreSQL folds it to `aft_log`), with the
//! reference system's columns, so existing reports keep working. Indexes cover the usual reports:
//! by time, by jid, by filename.

/// PostgreSQL: run inside one transaction holding [`PG_MIGRATE_LOCK`], so nodes starting together
/// do not race on `CREATE ... IF NOT EXISTS`.
pub(crate) const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS AFT_LOG (
        aft_index         BIGINT PRIMARY KEY,
        jid               VARCHAR(3071) NOT NULL,
        to_jid            VARCHAR(3071) NOT NULL,
        method            VARCHAR(63)   NOT NULL,
        filename          VARCHAR(511)  NOT NULL,
        real_filename     VARCHAR(511)  NOT NULL,
        file_type         VARCHAR(10)   NOT NULL,
        chat_type         VARCHAR(10)   NOT NULL,
        file_server       VARCHAR(511)  NOT NULL,
        file_path         VARCHAR(4095) NOT NULL,
        file_size         BIGINT        NOT NULL,
        bytes_transferred BIGINT        NOT NULL,
        timestampvalue    TIMESTAMP     NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS aft_log_timestampvalue_idx ON AFT_LOG (timestampvalue)",
    "CREATE INDEX IF NOT EXISTS aft_log_jid_idx ON AFT_LOG (jid)",
    "CREATE INDEX IF NOT EXISTS aft_log_filename_idx ON AFT_LOG (filename)",
];

/// Transaction-scoped advisory lock key taken while migrating PostgreSQL ("mftaftlg").
pub(crate) const PG_MIGRATE_LOCK: i64 = 0x6d66_7461_6674_6c67;

/// SQLite: `VARCHAR(n)` has TEXT affinity (lengths are not enforced; the writer checks them),
/// `INTEGER PRIMARY KEY` makes `aft_index` the rowid, and `timestampvalue` is TEXT holding
/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (which sorts as time).
pub(crate) const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS AFT_LOG (
        aft_index         INTEGER PRIMARY KEY,
        jid               VARCHAR(3071) NOT NULL,
        to_jid            VARCHAR(3071) NOT NULL,
        method            VARCHAR(63)   NOT NULL,
        filename          VARCHAR(511)  NOT NULL,
        real_filename     VARCHAR(511)  NOT NULL,
        file_type         VARCHAR(10)   NOT NULL,
        chat_type         VARCHAR(10)   NOT NULL,
        file_server       VARCHAR(511)  NOT NULL,
        file_path         VARCHAR(4095) NOT NULL,
        file_size         INTEGER       NOT NULL,
        bytes_transferred INTEGER       NOT NULL,
        timestampvalue    TEXT          NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS aft_log_timestampvalue_idx ON AFT_LOG (timestampvalue)",
    "CREATE INDEX IF NOT EXISTS aft_log_jid_idx ON AFT_LOG (jid)",
    "CREATE INDEX IF NOT EXISTS aft_log_filename_idx ON AFT_LOG (filename)",
];
