//! Group commit: the single writer task that turns rows arriving over a channel into batched
//! INSERTs, retries failures with backoff, and tells each waiting row its own outcome.
//!
//! Every `record()` row carries a slot, a small state machine shared with its waiter:
//!
//! ```text
//!   Pending ──writer claims──▶ Writing ──committed──▶ Committed
//!      │  ▲                       │ └───row refused──▶ Failed
//!      │  └──attempt failed, ─────┘
//!      │     nothing written
//!      └──waiter timed out──▶ Cancelled (the writer drops the row: it is never written)
//! ```
//!
//! A waiter whose deadline passes while its row is `Writing` keeps waiting for that attempt
//! (each attempt has its own statement timeout). If an attempt fails *ambiguously* (the
//! connection broke after the statement was sent), the row stays `Writing` and is re-sent until an
//! attempt reaches the database: the insert is idempotent, so the row ends up written once and
//! its waiter learns `Ok`. Background rows (`record_in_background`) have no waiter and no slot:
//! they are retried until written, or spooled at shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backend::{Backend, DbError, ErrorClass};
use super::record::{AftRecord, Method};
use super::spool::Spool;
use super::{AftLogError, DbCondition};
use crate::telemetry;

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a `record()` row stands; shared by the writer and the waiter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SlotState {
    Pending,
    Writing,
    Cancelled,
    Committed,
    Failed(AftLogError),
    /// The node shut down before the row could be written; it will not be.
    Abandoned,
}

/// The writer's end of a slot. The waiter holds a `Weak` to it (to cancel) and a receiver: if
/// the writer ever drops a row without resolving it, the waiter sees the channel close.
pub(crate) type Slot = Arc<watch::Sender<SlotState>>;

/// A row on its way to the database.
pub(crate) struct Job {
    pub(crate) rec: AftRecord,
    /// `None` for background rows.
    pub(crate) slot: Option<Slot>,
}

/// State shared by the handle and the writer.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    pub(crate) condition: watch::Sender<DbCondition>,
    pub(crate) spool: Spool,
    pub(crate) batches_written: AtomicU64,
    /// Serializes spool appends from the writer and from late background rows.
    pub(crate) spool_lock: Mutex<()>,
}

impl Shared {
    /// Records what a database call said about the database; logs changes.
    pub(crate) fn observe(&self, outcome: Result<(), &DbError>) {
        let new = match outcome {
            Ok(()) => DbCondition::Ok,
            Err(e) => match e.condition() {
                Some(c) => c,
                None => return,
            },
        };
        self.set_condition(new);
    }

    pub(crate) fn set_condition(&self, new: DbCondition) {
        let backend = self.backend.name();
        self.condition.send_if_modified(|cur| {
            if std::mem::discriminant(cur) == std::mem::discriminant(&new) {
                return false;
            }
            match &new {
                DbCondition::Ok => tracing::info!(backend, "AFT_LOG database reachable again"),
                DbCondition::Unreachable(why) => {
                    tracing::warn!(backend, error = %why, "AFT_LOG database unreachable")
                }
                DbCondition::Full(why) => {
                    tracing::warn!(backend, error = %why, "AFT_LOG database refuses writes: full")
                }
            }
            *cur = new.clone();
            true
        });
    }

    /// Appends rows to the spool; on failure logs every row, so an operator can recover them.
    pub(crate) fn spool(&self, rows: &[AftRecord]) {
        if rows.is_empty() {
            return;
        }
        let _guard = self.spool_lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.spool.append(rows) {
            Ok(()) => tracing::warn!(
                rows = rows.len(),
                path = %self.spool.path().display(),
                "AFT_LOG rows spooled for the next start"
            ),
            Err(e) => {
                for r in rows {
                    tracing::error!(row = ?r, "AFT_LOG row lost: could not spool it");
                }
                tracing::error!(error = %e, path = %self.spool.path().display(),
                    "Cannot write the AFT_LOG spool");
            }
        }
    }
}

/// Settings of the writer loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    pub(crate) max_rows: usize,
    pub(crate) max_delay: Duration,
}

/// The writer task.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: mpsc::UnboundedReceiver<Job>,
    /// `Some(deadline)` once shutdown began: flush without waiting for companions, stop when
    /// empty, and at the deadline spool what is left.
    pub(crate) shutdown: watch::Receiver<Option<Instant>>,
    /// Keeps the shutdown channel open after every handle is gone, so `changed()` only fires on a
    /// real shutdown request (a closed channel would fire at once, forever).
    pub(crate) _shutdown_tx: Arc<watch::Sender<Option<Instant>>>,
    pub(crate) settings: BatchSettings,
}

impl Writer {
    pub(crate) async fn run(mut self) {
        let mut batch: Vec<Job> = Vec::new();
        let mut backoff = BACKOFF_FIRST;
        let mut senders_gone = false;
        loop {
            let deadline = *self.shutdown.borrow();
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                break;
            }
            if batch.is_empty() {
                if senders_gone || (deadline.is_some() && self.rx.is_empty()) {
                    break;
                }
                if deadline.is_none() {
                    // Idle: wait for the first row of the next batch.
                    tokio::select! {
                        job = self.rx.recv() => match job {
                            Some(job) => batch.push(job),
                            None => { senders_gone = true; continue; }
                        },
                        _ = self.shutdown.changed() => continue,
                    }
                    senders_gone |= self.collect(&mut batch, true).await;
                } else {
                    senders_gone |= self.collect(&mut batch, false).await;
                }
            } else {
                // Retrying: let rows that arrived meanwhile join, up to the limit.
                senders_gone |= self.collect(&mut batch, false).await;
            }

            match self.attempt(&mut batch).await {
                Attempt::Done => backoff = BACKOFF_FIRST,
                Attempt::Retry => {
                    let wake = Instant::now() + backoff;
                    let wake = match *self.shutdown.borrow() {
                        Some(d) => wake.min(d),
                        None => wake,
                    };
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => {}
                        // Shutdown began: retry at once, then within the deadline.
                        _ = self.shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.finish(batch);
    }

    /// Moves rows from the channel into `batch` until it holds `max_rows`. With `wait`, waits up
    /// to `max_delay` after the first row for companions; otherwise takes only what is queued.
    /// Returns true if every sender is gone.
    async fn collect(&mut self, batch: &mut Vec<Job>, wait: bool) -> bool {
        let max = self.settings.max_rows.max(1);
        let until = Instant::now() + self.settings.max_delay;
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
                Err(mpsc::error::TryRecvError::Empty) if !wait => return false,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            tokio::select! {
                job = self.rx.recv() => match job {
                    Some(job) => batch.push(job),
                    None => return true,
                },
                _ = tokio::time::sleep_until(until) => return false,
                _ = self.shutdown.changed() => return false,
            }
        }
        false
    }

    /// One write of the claimable rows of `batch`. Resolved rows leave `batch`; rows to retry
    /// stay in it.
    async fn attempt(&self, batch: &mut Vec<Job>) -> Attempt {
        claim(batch);
        if batch.is_empty() {
            return Attempt::Done;
        }
        let started = std::time::Instant::now();
        let recs: Vec<&AftRecord> = batch.iter().map(|j| &j.rec).collect();
        let result = self.shared.backend.write(&recs).await;
        let elapsed = started.elapsed().as_secs_f64();
        match result {
            Ok(inserted) => {
                metrics::histogram!(telemetry::AFTLOG_FLUSH_DURATION).record(elapsed);
                metrics::histogram!(telemetry::AFTLOG_BATCH_ROWS).record(batch.len() as f64);
                self.shared.batches_written.fetch_add(1, Ordering::Relaxed);
                self.shared.observe(Ok(()));
                self.committed(std::mem::take(batch), &inserted);
                Attempt::Done
            }
            Err(e) => {
                metrics::counter!(telemetry::AFTLOG_FLUSH_ERRORS).increment(1);
                self.shared.observe(Err(&e));
                tracing::warn!(
                    backend = self.shared.backend.name(),
                    rows = batch.len(),
                    class = ?e.class,
                    error = %e.message,
                    "AFT_LOG batch write failed"
                );
                match e.class {
                    ErrorClass::Permanent if batch.len() == 1 => {
                        self.refused(std::mem::take(batch), &e);
                        Attempt::Done
                    }
                    ErrorClass::Permanent => {
                        // Some row is refused: write them one by one to find it.
                        release(batch);
                        self.isolate(batch).await
                    }
                    // Maybe committed: keep the rows `Writing` and re-send them (idempotent).
                    ErrorClass::Ambiguous => Attempt::Retry,
                    _ => {
                        release(batch);
                        Attempt::Retry
                    }
                }
            }
        }
    }

    /// Writes the rows of `batch` one at a time after a refused batch.
    async fn isolate(&self, batch: &mut Vec<Job>) -> Attempt {
        let mut keep = Vec::new();
        let mut outcome = Attempt::Done;
        for job in std::mem::take(batch) {
            let mut single = vec![job];
            claim(&mut single);
            let Some(job) = single.pop() else { continue };
            match self.shared.backend.write(&[&job.rec]).await {
                Ok(inserted) => {
                    self.shared.observe(Ok(()));
                    self.shared.batches_written.fetch_add(1, Ordering::Relaxed);
                    self.committed(vec![job], &inserted);
                }
                Err(e) if e.class == ErrorClass::Permanent => self.refused(vec![job], &e),
                Err(e) => {
                    self.shared.observe(Err(&e));
                    let mut v = vec![job];
                    if e.class != ErrorClass::Ambiguous {
                        release(&mut v);
                    }
                    keep.extend(v);
                    outcome = Attempt::Retry;
                }
            }
        }
        *batch = keep;
        outcome
    }

    fn committed(&self, jobs: Vec<Job>, inserted: &[i64]) {
        let inserted: HashSet<i64> = inserted.iter().copied().collect();
        let (mut post, mut get) = (0u64, 0u64);
        for job in &jobs {
            if inserted.contains(&job.rec.aft_index) {
                match job.rec.method {
                    Method::Post => post += 1,
                    Method::Get => get += 1,
                }
            } else {
                tracing::debug!(aft_index = job.rec.aft_index, "AFT_LOG row already present");
            }
        }
        if post > 0 {
            metrics::counter!(telemetry::AFTLOG_ROWS_WRITTEN, "method" => "Post").increment(post);
        }
        if get > 0 {
            metrics::counter!(telemetry::AFTLOG_ROWS_WRITTEN, "method" => "Get").increment(get);
        }
        resolve(jobs, |_| SlotState::Committed);
    }

    fn refused(&self, jobs: Vec<Job>, e: &DbError) {
        for job in &jobs {
            tracing::error!(row = ?job.rec, error = %e.message, "AFT_LOG row refused by the database");
        }
        resolve(jobs, |_| {
            SlotState::Failed(AftLogError::Database(e.message.clone()))
        });
    }

    /// Shutdown deadline reached (or nothing left): resolve what is left. Background rows go to
    /// the spool; waiting rows are abandoned (their waiters learn `Closed`), except rows whose
    /// last attempt was ambiguous, which are spooled too, so they end up written exactly once.
    fn finish(mut self, mut batch: Vec<Job>) {
        self.rx.close();
        while let Ok(job) = self.rx.try_recv() {
            batch.push(job);
        }
        let mut to_spool = Vec::new();
        let mut abandoned = Vec::new();
        for job in batch {
            match &job.slot {
                None => to_spool.push(job),
                Some(slot) => {
                    let mut ambiguous = false;
                    slot.send_if_modified(|s| match s {
                        SlotState::Pending => {
                            *s = SlotState::Abandoned;
                            true
                        }
                        SlotState::Writing => {
                            ambiguous = true;
                            false
                        }
                        _ => false,
                    });
                    if ambiguous {
                        to_spool.push(job);
                    } else {
                        abandoned.push(job);
                    }
                }
            }
        }
        let rows: Vec<AftRecord> = to_spool.iter().map(|j| j.rec.clone()).collect();
        self.shared.spool(&rows);
        // Spooled rows will be written by the next start: their waiters may count them as done.
        resolve(to_spool, |_| SlotState::Committed);
        let n = abandoned.len();
        if n > 0 {
            tracing::warn!(
                rows = n,
                "AFT_LOG rows not written before shutdown: refused"
            );
            metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).decrement(n as f64);
        }
    }
}

enum Attempt {
    Done,
    Retry,
}

/// Prepares `batch` for an attempt: `Pending` rows become `Writing`, rows already `Writing` (an
/// ambiguous attempt) stay so, cancelled rows leave the batch for good.
fn claim(batch: &mut Vec<Job>) {
    let before = batch.len();
    batch.retain(|job| match &job.slot {
        None => true,
        Some(slot) => {
            slot.send_if_modified(|s| {
                if *s == SlotState::Pending {
                    *s = SlotState::Writing;
                    true
                } else {
                    false
                }
            });
            *slot.borrow() == SlotState::Writing
        }
    });
    let dropped = before - batch.len();
    if dropped > 0 {
        metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).decrement(dropped as f64);
    }
}

/// After an attempt that wrote nothing: rows go back to `Pending`, so a timed-out waiter may
/// cancel its row before the next attempt.
fn release(batch: &mut [Job]) {
    for job in batch.iter() {
        if let Some(slot) = &job.slot {
            slot.send_if_modified(|s| {
                if *s == SlotState::Writing {
                    *s = SlotState::Pending;
                    true
                } else {
                    false
                }
            });
        }
    }
}

fn resolve(jobs: Vec<Job>, state: impl Fn(&Job) -> SlotState) {
    let n = jobs.len();
    for job in &jobs {
        if let Some(slot) = &job.slot {
            let new = state(job);
            slot.send_replace(new);
        }
    }
    if n > 0 {
        metrics::gauge!(telemetry::AFTLOG_PENDING_ROWS).decrement(n as f64);
    }
}
