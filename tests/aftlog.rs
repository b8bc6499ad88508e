//! AFT_LOG against real databases: a temp SQLite file and a throwaway PostgreSQL 15 — schema and
//! migration, exact round-trips, group commit, idempotent re-sends, commit timeouts that never
//! write late, background rows surviving an outage, the shutdown spool and the DB condition.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, SubsecRound, TimeZone, Utc};
use mft::aftlog::{self, AftLog, AftLogError, AftRecord, DbCondition, Method};
use mft::config::DatabaseConfig;
use sqlx::Row;
use support::postgres::Postgres;
use unicode_normalization::UnicodeNormalization;

const COLUMNS: &str = "aft_index, jid, to_jid, method, filename, real_filename, file_type, \
    chat_type, file_server, file_path, file_size, bytes_transferred, timestampvalue";

fn config(url: &str, commit_timeout_s: u64) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_string(),
        batch_max_rows: 256,
        batch_max_delay_ms: 5,
        max_connections: 4,
        commit_timeout_s,
        node_index: None,
    }
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("db/aft_log.db").display())
}

fn row(log: &AftLog, n: usize, method: Method) -> AftRecord {
    AftRecord {
        aft_index: log.new_index(),
        jid: format!("user{n}@example.com"),
        to_jid: "room@conference.example.com".into(),
        method,
        filename: format!("res{n:05}"),
        real_filename: format!("file {n}.pdf"),
        file_type: "pdf".into(),
        chat_type: "groupchat".into(),
        file_server: "fs1".into(),
        file_path: format!("/opt/mftFileStore/node_1/files/groupchat/20240203/04/res{n:05}"),
        file_size: 1000 + n as i64,
        bytes_transferred: 1000 + n as i64,
        // The log keeps microseconds; compare like with like.
        timestamp: Utc::now().trunc_subsecs(6),
    }
}

// ---- reading rows back, independently of the module under test ----

fn pg_row(r: &sqlx::postgres::PgRow) -> AftRecord {
    let method: String = r.get("method");
    let ts: NaiveDateTime = r.get("timestampvalue");
    AftRecord {
        aft_index: r.get("aft_index"),
        jid: r.get("jid"),
        to_jid: r.get("to_jid"),
        method: if method == "Post" {
            Method::Post
        } else {
            Method::Get
        },
        filename: r.get("filename"),
        real_filename: r.get("real_filename"),
        file_type: r.get("file_type"),
        chat_type: r.get("chat_type"),
        file_server: r.get("file_server"),
        file_path: r.get("file_path"),
        file_size: r.get("file_size"),
        bytes_transferred: r.get("bytes_transferred"),
        timestamp: Utc.from_utc_datetime(&ts),
    }
}

fn sqlite_row(r: &sqlx::sqlite::SqliteRow) -> AftRecord {
    let method: String = r.get("method");
    let ts: String = r.get("timestampvalue");
    let ts = NaiveDateTime::parse_from_str(&ts, "%Y-%m-%d %H:%M:%S%.6f")
        .unwrap_or_else(|e| panic!("timestampvalue {ts:?} not in the documented format: {e}"));
    AftRecord {
        aft_index: r.get("aft_index"),
        jid: r.get("jid"),
        to_jid: r.get("to_jid"),
        method: if method == "Post" {
            Method::Post
        } else {
            Method::Get
        },
        filename: r.get("filename"),
        real_filename: r.get("real_filename"),
        file_type: r.get("file_type"),
        chat_type: r.get("chat_type"),
        file_server: r.get("file_server"),
        file_path: r.get("file_path"),
        file_size: r.get("file_size"),
        bytes_transferred: r.get("bytes_transferred"),
        timestamp: Utc.from_utc_datetime(&ts),
    }
}

/// Every row of AFT_LOG, ordered by aft_index.
async fn all_rows(url: &str) -> Vec<AftRecord> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM AFT_LOG ORDER BY aft_index"));
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url)
            .await
            .expect("connect to PostgreSQL");
        let rows = sqlx::query(sql).fetch_all(&pool).await.expect("select");
        pool.close().await;
        rows.iter().map(pg_row).collect()
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("open SQLite");
        let rows = sqlx::query(sql).fetch_all(&pool).await.expect("select");
        pool.close().await;
        rows.iter().map(sqlite_row).collect()
    }
}

async fn count_index(url: &str, aft_index: i64) -> usize {
    all_rows(url)
        .await
        .iter()
        .filter(|r| r.aft_index == aft_index)
        .count()
}

fn micros(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("timestamp")
        .with_timezone(&Utc)
}

// ---- scenarios shared by both backends ----

async fn migrate_twice_and_round_trip(url: &str, spool: &Path) {
    aftlog::migrate(url).await.expect("first migrate");
    aftlog::migrate(url)
        .await
        .expect("second migrate is idempotent");
    let log = AftLog::open(&config(url, 5), "node1", spool)
        .await
        .expect("open");
    let nfd: String = "Fichier déjà vu.txt".nfd().collect();
    assert_ne!(nfd, "Fichier déjà vu.txt", "NFD form differs from NFC");
    let names = [
        "rapport 2024 😀🚀.pdf".to_string(),
        "中文文件名・日本語のファイル.docx".to_string(),
        nfd,
        "quote ' \" back\\slash, semi; -- percent %".to_string(),
    ];
    let mut sent = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut r = row(
            &log,
            i,
            if i % 2 == 0 {
                Method::Post
            } else {
                Method::Get
            },
        );
        r.real_filename = name.clone();
        r.file_size = 4_294_967_296;
        r.bytes_transferred = if i == 1 { 123_456_789 } else { 4_294_967_296 };
        r.timestamp = micros(&format!("2024-02-0{}T23:59:59.12345{}Z", i + 1, i));
        r.to_jid = "rôom@conférence.example.com".into();
        log.record(r.clone()).await.expect("record");
        sent.push(r);
    }
    // Sub-microsecond precision is dropped identically on both backends.
    let mut nanos = row(&log, 9, Method::Post);
    nanos.timestamp = micros("2030-12-31T01:02:03.987654321Z");
    log.record(nanos.clone()).await.expect("record");
    nanos.timestamp = micros("2030-12-31T01:02:03.987654Z");
    sent.push(nanos);

    let got = all_rows(url).await;
    assert_eq!(got, sent, "every column round-trips exactly");
    assert_eq!(
        log.backend_name(),
        if url.starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        }
    );
    log.shutdown(Duration::from_secs(5)).await;
    aftlog::migrate(url)
        .await
        .expect("migrate on a populated table");
    assert_eq!(
        all_rows(url).await.len(),
        sent.len(),
        "migrate keeps the rows"
    );
}

async fn group_commit(url: &str, spool: &Path) -> (u64, f64) {
    let log = AftLog::open(&config(url, 30), "node1", spool)
        .await
        .expect("open");
    let before = log.batches_written();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..500 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.record(row(&log, n, Method::Post)).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("each waiter learns Ok");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let batches = log.batches_written() - before;
    assert_eq!(all_rows(url).await.len(), 500);
    assert!(
        batches < 500,
        "500 rows took {batches} batches: no grouping"
    );
    assert!(
        batches >= 2,
        "batch_max_rows=256 must split 500 rows, got {batches} batch"
    );
    log.shutdown(Duration::from_secs(5)).await;
    eprintln!(
        "{}: 500 concurrent record() in {batches} batches, {elapsed:.3} s ({:.0} rows/s)",
        log.backend_name(),
        500.0 / elapsed
    );
    (batches, elapsed)
}

async fn resend_does_not_duplicate(url: &str, spool: &Path) {
    let log = AftLog::open(&config(url, 5), "node1", spool)
        .await
        .expect("open");
    let r = row(&log, 1, Method::Post);
    log.record(r.clone()).await.expect("first");
    log.record(r.clone()).await.expect("re-send is accepted");
    log.record_in_background(r.clone());
    let mut other = row(&log, 2, Method::Get);
    other.aft_index = log.new_index();
    log.record(other.clone()).await.expect("other");
    log.shutdown(Duration::from_secs(5)).await;
    let rows = all_rows(url).await;
    assert_eq!(rows, vec![r, other], "one row per aft_index");
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrate_and_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    migrate_twice_and_round_trip(&url, dir.path()).await;
    assert!(
        dir.path().join("db/aft_log.db").exists(),
        "parent dir and file created"
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'AFT_LOG' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes");
    assert_eq!(
        indexes,
        [
            "aft_log_filename_idx",
            "aft_log_jid_idx",
            "aft_log_timestampvalue_idx"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    group_commit(&sqlite_url(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resend_does_not_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    resend_does_not_duplicate(&sqlite_url(dir.path()), dir.path()).await;
}

/// Another connection holds SQLite's write lock: the attempt is `Writing` when the waiter's
/// deadline passes, so the waiter waits for it, sees it fail (busy), cancels, and gets `Timeout`.
/// The row must not be written once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_database_times_out_and_never_writes_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let log = AftLog::open(&config(&url, 1), "node1", dir.path())
        .await
        .expect("open");
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    let mut locker = pool.acquire().await.expect("conn");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .expect("lock");

    let r = row(&log, 1, Method::Post);
    let started = Instant::now();
    let err = log
        .record(r.clone())
        .await
        .expect_err("must not commit while locked");
    assert_eq!(err, AftLogError::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "bounded: {:?}",
        started.elapsed()
    );

    sqlx::query("ROLLBACK")
        .execute(&mut *locker)
        .await
        .expect("unlock");
    drop(locker);
    pool.close().await;
    let later = row(&log, 2, Method::Post);
    log.record(later.clone()).await.expect("writes work again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    log.shutdown(Duration::from_secs(5)).await;
    let rows = all_rows(&url).await;
    assert_eq!(rows, vec![later], "the timed-out row is never written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_shutdown_spool_is_replayed_once() {
    // Rows arriving after shutdown go to the spool; the next open writes them once.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let log = AftLog::open(&config(&url, 5), "node1", dir.path())
        .await
        .expect("open");
    let r = row(&log, 1, Method::Get);
    log.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        log.record(row(&log, 2, Method::Post)).await,
        Err(AftLogError::Closed)
    );
    log.record_in_background(r.clone());
    log.record_in_background(r.clone());
    let spool = dir.path().join("aftlog-spool.jsonl");
    let text = std::fs::read_to_string(&spool).expect("spool written");
    assert_eq!(text.lines().count(), 2);
    assert!(all_rows(&url).await.is_empty());

    let log = AftLog::open(&config(&url, 5), "node1", dir.path())
        .await
        .expect("reopen");
    assert!(!spool.exists(), "spool removed after replay");
    assert_eq!(all_rows(&url).await, vec![r.clone()]);
    log.shutdown(Duration::from_secs(1)).await;
    let log = AftLog::open(&config(&url, 5), "node1", dir.path())
        .await
        .expect("reopen");
    log.shutdown(Duration::from_secs(1)).await;
    assert_eq!(all_rows(&url).await, vec![r], "replayed exactly once");
}

// ---- PostgreSQL ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrate_and_round_trip() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    migrate_twice_and_round_trip(&pg.url(), dir.path()).await;

    let pool = sqlx::PgPool::connect(&pg.url()).await.expect("connect");
    let cols: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, character_maximum_length \
         FROM information_schema.columns WHERE table_name = 'aft_log' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .expect("columns");
    let expected: Vec<(String, String, Option<i32>)> = [
        ("aft_index", "bigint", None),
        ("jid", "character varying", Some(3071)),
        ("to_jid", "character varying", Some(3071)),
        ("method", "character varying", Some(63)),
        ("filename", "character varying", Some(511)),
        ("real_filename", "character varying", Some(511)),
        ("file_type", "character varying", Some(10)),
        ("chat_type", "character varying", Some(10)),
        ("file_server", "character varying", Some(511)),
        ("file_path", "character varying", Some(4095)),
        ("file_size", "bigint", None),
        ("bytes_transferred", "bigint", None),
        ("timestampvalue", "timestamp without time zone", None),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c))
    .collect();
    assert_eq!(cols, expected);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'aft_log' ORDER BY indexname",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes");
    let joined = indexes.join("\n");
    for col in ["(timestampvalue)", "(jid)", "(filename)", "(aft_index)"] {
        assert!(joined.contains(col), "no index on {col}: {joined}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_group_commit() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    group_commit(&pg.url(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resend_does_not_duplicate() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    resend_does_not_duplicate(&pg.url(), dir.path()).await;
}

async fn wait_for(
    cond: &mut tokio::sync::watch::Receiver<DbCondition>,
    want: fn(&DbCondition) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(30), cond.wait_for(want))
        .await
        .expect("condition reached in time")
        .expect("condition channel open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_record_times_out_never_written_and_condition_recovers() {
    let mut pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = pg.url();
    let log = AftLog::open(&config(&url, 3), "node1", dir.path())
        .await
        .expect("open");
    let mut cond = log.condition();
    assert_eq!(*cond.borrow(), DbCondition::Ok);
    log.record(row(&log, 0, Method::Post))
        .await
        .expect("warm-up row");

    pg.stop();
    let lost = row(&log, 1, Method::Post);
    let started = Instant::now();
    let err = log
        .record(lost.clone())
        .await
        .expect_err("database is down");
    let took = started.elapsed();
    assert_eq!(err, AftLogError::Timeout);
    assert!(
        took >= Duration::from_secs(2),
        "waited the commit timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "bounded by the commit timeout: {took:?}"
    );
    wait_for(&mut cond, |c| matches!(c, DbCondition::Unreachable(_))).await;
    assert!(log.ping().await.is_err());

    pg.start_again();
    // Recovery is seen by a ping and by writes.
    log.ping().await.expect("ping after restart");
    wait_for(&mut cond, |c| *c == DbCondition::Ok).await;
    let later = row(&log, 2, Method::Post);
    log.record(later.clone()).await.expect("writes work again");
    // Give a late writer every chance to misbehave.
    tokio::time::sleep(Duration::from_secs(1)).await;
    log.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        count_index(&url, lost.aft_index).await,
        0,
        "timed-out row never written"
    );
    assert_eq!(count_index(&url, later.aft_index).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_background_row_survives_outage_exactly_once() {
    let mut pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = pg.url();
    let log = AftLog::open(&config(&url, 3), "node1", dir.path())
        .await
        .expect("open");
    let mut cond = log.condition();
    pg.stop();
    let r = row(&log, 1, Method::Get);
    log.record_in_background(r.clone());
    wait_for(&mut cond, |c| matches!(c, DbCondition::Unreachable(_))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_index(&url, r.aft_index).await == 0 {
        assert!(
            Instant::now() < deadline,
            "background row not written after restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(&mut cond, |c| *c == DbCondition::Ok).await;
    log.shutdown(Duration::from_secs(5)).await;
    assert_eq!(all_rows(&url).await, vec![r], "written exactly once");
    assert!(
        !dir.path().join("aftlog-spool.jsonl").exists(),
        "nothing spooled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_shutdown_spools_and_next_open_replays_once() {
    let mut pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = pg.url();
    let log = AftLog::open(&config(&url, 3), "node1", dir.path())
        .await
        .expect("open");
    pg.stop();
    let rows: Vec<AftRecord> = (0..3).map(|n| row(&log, n, Method::Get)).collect();
    for r in &rows {
        log.record_in_background(r.clone());
    }
    let started = Instant::now();
    log.shutdown(Duration::from_secs(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown bounded by its grace"
    );
    let spool = dir.path().join("aftlog-spool.jsonl");
    let text = std::fs::read_to_string(&spool).expect("spool written");
    assert_eq!(text.lines().count(), 3);

    pg.start_again();
    assert!(
        all_rows(&url).await.is_empty(),
        "nothing written while down"
    );
    let log = AftLog::open(&config(&url, 3), "node1", dir.path())
        .await
        .expect("reopen");
    assert!(!spool.exists(), "spool removed after replay");
    log.shutdown(Duration::from_secs(1)).await;
    let log = AftLog::open(&config(&url, 3), "node1", dir.path())
        .await
        .expect("reopen again");
    log.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        all_rows(&url).await,
        rows,
        "each spooled row written exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_postgres_get_distinct_indexes() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = AftLog::open(&config(&pg.url(), 5), "node1", &dir.path().join("a"))
        .await
        .expect("a");
    let b = AftLog::open(&config(&pg.url(), 5), "node2", &dir.path().join("b"))
        .await
        .expect("b");
    let mut tasks = Vec::new();
    for n in 0..200 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            a.record(row(&a, n, Method::Post)).await?;
            b.record(row(&b, n, Method::Post)).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("record");
    }
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        all_rows(&pg.url()).await.len(),
        400,
        "no id collision between nodes"
    );
}
