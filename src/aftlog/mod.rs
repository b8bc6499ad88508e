//! `AFT_LOG`: the transfer log table, written with group commit.
//!
//! Layout:
//! - [`record`]: the row ([`AftRecord`], [`Method`]) and its column limits.
//! - `index`: node-generated, Snowflake-style `aft_index` values (idempotent re-sends).
//! - `schema`: the DDL for PostgreSQL and SQLite; [`migrate`] applies it.
//! - `backend`, `postgres`, `sqlite`: connecting, batch inserts, error classification.
//! - `batcher`: the single writer task (group commit, retries, per-row outcomes).
//! - `spool`: rows not written by shutdown, replayed by the next [`AftLog::open`].
//!
//! An upload calls [`AftLog::record`] and answers the client only once it returns `Ok` (the row
//! is committed). A download calls [`AftLog::record_in_background`]: its row is never lost, but
//! nobody waits for it.

mod backend;
mod batcher;
mod index;
mod postgres;
pub mod record;
mod schema;
mod spool;
mod sqlite;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use record::{AftRecord, Method};

use crate::config::DatabaseConfig;
use crate::telemetry;
use backend::{Backend, PoolSettings};
use batcher::{BatchSettings, Job, Shared, SlotState, Writer};
use index::IndexGen;
use spool::Spool;

/// Why a row could not be logged. Messages are for logs; clients get a generic 5xx.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum AftLogError {
    /// The database cannot be reached.
    #[error("AFT_LOG database unavailable: {0}")]
    Unavailable(String),
    /// The database refuses writes for lack of space.
    #[error("AFT_LOG database full: {0}")]
    Full(String),
    /// The row was not committed within `commit_timeout_s`; it will never be written.
    #[error("AFT_LOG row not committed in time")]
    Timeout,
    /// The log is shutting down (or shut down); the row was not written.
    #[error("AFT_LOG is closed")]
    Closed,
    /// The database refused the row or the statement.
    #[error("AFT_LOG database error: {0}")]
    Database(String),
}

impl AftLogError {
    /// A short, fixed label for metrics (`reason` label values).
    pub fn reason(&self) -> &'static str {
        match self {
            AftLogError::Unavailable(_) => "db_unavailable",
            AftLogError::Full(_) => "db_full",
            AftLogError::Timeout => "db_timeout",
            AftLogError::Closed => "db_closed",
            AftLogError::Database(_) => "db_error",
        }
    }
}

/// What the last database call said about the database (feeds the DB alarms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbCondition {
    Ok,
    /// `XcpMFTDBConnectError`: connection refused, pool timeout, connection lost.
    Unreachable(String),
    /// `XcpMFTDBFullError`: PostgreSQL SQLSTATE 53100, SQLite `SQLITE_FULL`.
    Full(String),
}

/// Handle to the transfer log. Cheap to clone; all clones share one writer task.
#[derive(Clone)]
pub struct AftLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Job>,
    ids: IndexGen,
    commit_timeout: Duration,
    closed: AtomicBool,
    shutdown_tx: Arc<watch::Sender<Option<Instant>>>,
    /// The writer task, taken by the first `shutdown`. A std mutex: never held across an await.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AftLog")
            .field("backend", &self.backend_name())
            .field("commit_timeout", &self.inner.commit_timeout)
            .finish_non_exhaustive()
    }
}

fn pool_settings(cfg: &DatabaseConfig) -> PoolSettings {
    let commit = Duration::from_secs(cfg.commit_timeout_s.max(1));
    PoolSettings {
        max_connections: cfg.max_connections.max(1),
        // Short, so an attempt against a dead database fails well within the commit timeout.
        acquire_timeout: (commit / 2).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        statement_timeout: commit,
    }
}

impl AftLog {
    /// Connects (SQLite: creating the file and its directory, WAL mode), creates the schema if
    /// missing, writes the rows spooled by the previous run, and starts the writer task.
    pub async fn open(
        cfg: &DatabaseConfig,
        node_id: &str,
        spool_dir: &Path,
    ) -> Result<AftLog, AftLogError> {
        let backend = Backend::connect(&cfg.url, pool_settings(cfg))
            .await
            .map_err(|e| e.to_public())?;
        backend.migrate().await.map_err(|e| e.to_public())?;
        let spool = Spool::new(spool_dir);
        replay(&backend, &spool).await?;

        let (condition, _) = watch::channel(DbCondition::Ok);
        let shared = Arc::new(Shared {
            backend,
            condition,
            spool,
            batches_written: Default::default(),
            spool_lock: Mutex::new(()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let shutdown_tx = Arc::new(shutdown_tx);
        let writer = Writer {
            shared: shared.clone(),
            rx,
            shutdown: shutdown_rx,
            _shutdown_tx: shutdown_tx.clone(),
            settings: BatchSettings {
                max_rows: cfg.batch_max_rows.max(1),
                max_delay: Duration::from_millis(cfg.batch_max_delay_ms),
            },
        };
        let handle = tokio::spawn(writer.run());
        tracing::info!(
            backend = shared.backend.name(),
            batch_max_rows = cfg.batch_max_rows,
            batch_max_delay_ms = cfg.batch_max_delay_ms,
            "AFT_LOG open"
        );
        Ok(AftLog {
            inner: Arc::new(Inner {
                shared,
                tx,
                ids: IndexGen::new(node_id, cfg.node_index),
                commit_timeout: Duration::from_secs(cfg.commit_timeout_s.max(1)),
                closed: AtomicBool::new(false),
                shutdown_tx,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// A new `aft_index`: unique across nodes sharing the database, increasing on this node.
    pub fn new_index(&self) -> i64 {
        self.inner.ids.next()
    }

    /// Logs `rec` and returns once it is committed. After `commit_timeout_s` without a commit it
    /// returns [`AftLogError::Timeout`], and the row is then guaranteed never to be written.
    pub async fn record(&self, rec: AftRecord) -> Result<(), AftLogError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(AftLogError::Closed);
        }
        let rec = rec.normalized()?;
        let (slot, mut rx) = watch::channel(SlotState::Pending);
        let slot = Arc::new(slot);
        let weak = Arc::downgrade(&slot);
        metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).increment(1.0);
        let job = Job {
            rec,
            slot: Some(slot),
        };
        if self.inner.tx.send(job).is_err() {
            metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).decrement(1.0);
            return Err(AftLogError::Closed);
        }

        let deadline = Instant::now() + self.inner.commit_timeout;
        loop {
            match &*rx.borrow_and_update() {
                SlotState::Committed => return Ok(()),
                SlotState::Failed(e) => return Err(e.clone()),
                SlotState::Abandoned => return Err(AftLogError::Closed),
                SlotState::Cancelled => return Err(AftLogError::Timeout),
                SlotState::Pending | SlotState::Writing => {}
            }
            if Instant::now() >= deadline {
                // Cancel unless an attempt is writing the row right now.
                let cancelled = weak.upgrade().is_some_and(|slot| {
                    slot.send_if_modified(|s| {
                        if *s == SlotState::Pending {
                            *s = SlotState::Cancelled;
                            true
                        } else {
                            false
                        }
                    })
                });
                if cancelled {
                    return Err(AftLogError::Timeout);
                }
                // Writing: wait for that attempt's outcome (bounded by its statement timeout).
                if rx.changed().await.is_err() {
                    return final_state(&rx);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => return final_state(&rx),
            }
        }
    }

    /// Logs `rec` without waiting. The row is retried until written; rows still unwritten at
    /// shutdown are spooled and written by the next start.
    pub fn record_in_background(&self, rec: AftRecord) {
        let (aft_index, method) = (rec.aft_index, rec.method);
        let rec = match rec.normalized() {
            Ok(rec) => rec,
            Err(e) => {
                tracing::error!(aft_index, method = method.as_str(), error = %e,
                    "AFT_LOG row refused");
                return;
            }
        };
        if self.inner.closed.load(Ordering::Acquire) {
            self.inner.shared.spool(std::slice::from_ref(&rec));
            return;
        }
        metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).increment(1.0);
        if let Err(mpsc::error::SendError(job)) = self.inner.tx.send(Job { rec, slot: None }) {
            // The writer has stopped: keep the row for the next start.
            metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).decrement(1.0);
            self.inner.shared.spool(std::slice::from_ref(&job.rec));
        }
    }

    /// `SELECT 1`. A success clears `Unreachable` (not `Full`: only a successful write proves
    /// there is space again).
    pub async fn ping(&self) -> Result<(), AftLogError> {
        let shared = &self.inner.shared;
        match shared.backend.ping().await {
            Ok(()) => {
                if matches!(*shared.condition.borrow(), DbCondition::Unreachable(_)) {
                    shared.set_condition(DbCondition::Ok);
                }
                Ok(())
            }
            Err(e) => {
                shared.observe(Err(&e));
                Err(e.to_public())
            }
        }
    }

    /// The database's condition as last observed, for the DB alarms.
    pub fn condition(&self) -> watch::Receiver<DbCondition> {
        self.inner.shared.condition.subscribe()
    }

    /// Stops accepting rows, writes what is queued (retrying within `grace`), spools the
    /// background rows that could not be written, and closes the pool. Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        self.inner.shutdown_tx.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "AFT_LOG writer task failed");
            }
            self.inner.shared.backend.close().await;
            tracing::info!("AFT_LOG closed");
        }
    }

    /// `"postgresql"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.shared.backend.name()
    }

    /// Batches committed so far (one INSERT statement each; SQLite batches above 1000 rows use
    /// several statements in one transaction). For tests and diagnostics.
    pub fn batches_written(&self) -> u64 {
        self.inner
            .shared
            .batches_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn final_state(rx: &watch::Receiver<SlotState>) -> Result<(), AftLogError> {
    match &*rx.borrow() {
        SlotState::Committed => Ok(()),
        SlotState::Failed(e) => Err(e.clone()),
        SlotState::Cancelled => Err(AftLogError::Timeout),
        _ => Err(AftLogError::Closed),
    }
}

/// Writes the spooled rows of the previous run, then removes the spool.
async fn replay(backend: &Backend, spool: &Spool) -> Result<(), AftLogError> {
    let rows = spool
        .load()
        .map_err(|e| AftLogError::Database(format!("cannot read the AFT_LOG spool: {e}")))?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut inserted = 0usize;
    for chunk in rows.chunks(sqlite::ROWS_PER_STATEMENT) {
        let refs: Vec<&AftRecord> = chunk.iter().collect();
        inserted += backend.write(&refs).await.map_err(|e| e.to_public())?.len();
    }
    spool
        .remove()
        .map_err(|e| AftLogError::Database(format!("cannot remove the AFT_LOG spool: {e}")))?;
    tracing::info!(rows = rows.len(), inserted, "AFT_LOG spool replayed");
    Ok(())
}

/// A one-connection backend for the command-line checks.
async fn connect_once(url: &str) -> Result<Backend, AftLogError> {
    let settings = pool_settings(&DatabaseConfig {
        url: url.to_string(),
        max_connections: 1,
        ..DatabaseConfig::default()
    });
    Backend::connect(url, settings)
        .await
        .map_err(|e| e.to_public())
}

/// Checks the database for `mft status` without changing anything: it must be reachable (an
/// SQLite file must already exist) and hold a readable `AFT_LOG`. Returns the backend name.
pub async fn inspect(url: &str) -> Result<&'static str, AftLogError> {
    if url.starts_with("sqlite:") {
        let path = sqlite::path_of(url).map_err(|e| e.to_public())?;
        if !std::path::Path::new(path).is_file() {
            return Err(AftLogError::Unavailable(format!(
                "SQLite database {path} does not exist (run `mft migrate`, or check database.url)"
            )));
        }
    }
    let backend = connect_once(url).await?;
    let result = async {
        backend.ping().await?;
        backend.table_present().await
    }
    .await
    .map_err(|e| e.to_public());
    let name = backend.name();
    backend.close().await;
    result.map(|()| name)
}

/// Creates the `AFT_LOG` table and its indexes if missing (idempotent), for `mft migrate`.
pub async fn migrate(url: &str) -> Result<(), AftLogError> {
    let backend = connect_once(url).await?;
    let result = backend.migrate().await.map_err(|e| e.to_public());
    backend.close().await;
    result
}
