//! AFT_LOG group-commit throughput on SQLite: rows/s of concurrent `record()` calls (each waits
//! for its own commit) by `batch_max_rows`. Run with `cargo bench --bench aftlog_batch`.

use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mft::aftlog::{AftLog, AftRecord, Method};
use mft::config::DatabaseConfig;

/// Rows recorded concurrently per iteration.
const ROWS: usize = 1000;

fn row(log: &AftLog, n: usize) -> AftRecord {
    AftRecord {
        aft_index: log.new_index(),
        jid: format!("user{}@example.com", n % 100),
        to_jid: "room@conference.example.com".into(),
        method: Method::Post,
        filename: format!("r{:022}", n),
        real_filename: "report.pdf".into(),
        file_type: "pdf".into(),
        chat_type: "groupchat".into(),
        file_server: "fs1".into(),
        file_path: format!("/opt/mftFileStore/node_1/files/groupchat/20240203/04/r{n:022}"),
        file_size: 100_000,
        bytes_transferred: 100_000,
        timestamp: Utc::now(),
    }
}

fn batch_sizes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("aftlog_sqlite_record");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(ROWS as u64));
    for batch in [1usize, 8, 64, 256, 1024] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("aft_log.db").display()),
            batch_max_rows: batch,
            batch_max_delay_ms: 5,
            max_connections: 4,
            commit_timeout_s: 120,
            node_index: None,
        };
        let log = rt
            .block_on(AftLog::open(&cfg, "bench", dir.path()))
            .expect("open AFT_LOG");
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let log = log.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..ROWS)
                            .map(|n| {
                                let log = log.clone();
                                tokio::spawn(async move { log.record(row(&log, n)).await })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("join").expect("record");
                        }
                    }
                    start.elapsed()
                }
            });
        });
        rt.block_on(log.shutdown(Duration::from_secs(10)));
    }
    group.finish();
}

criterion_group!(benches, batch_sizes);
criterion_main!(benches);
