//! SFTP store throughput by chunk size and pipeline depth, against a real loopback sshd:
//! upload (pipelined WRITEs, fsync, rename) and download (pipelined READs) of a 64 MiB file.
//! Needs `[[bench]] name = "sftp_chunking" harness = false` in Cargo.toml and openssh-server.
// Without that entry cargo builds this file as a libtest bench, where `main` is unused.
#![allow(dead_code)]

#[path = "../tests/support/sshd.rs"]
mod sshd;

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use mft::store::FileStore;
use mft::store::sftp::SftpStore;

const SIZE: usize = 64 * 1024 * 1024;
/// HTTP-like frames fed to the sink.
const FRAME: usize = 16 * 1024;

async fn upload(s: &SftpStore, frame: &Bytes) {
    let mut sink = s.create_upload("bench", "blob").await.expect("create");
    let mut left = SIZE;
    while left > 0 {
        let n = left.min(frame.len());
        sink.write(frame.slice(..n)).await.expect("write");
        left -= n;
    }
    sink.commit().await.expect("commit");
}

async fn download(s: &SftpStore) {
    let mut stream = s
        .read_range("bench/blob", 0, SIZE as u64)
        .await
        .expect("open");
    let mut got = 0;
    while let Some(piece) = stream.next().await {
        got += piece.expect("read").len();
    }
    assert_eq!(got, SIZE);
}

fn chunking(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = sshd::Sshd::start();
    let frame = Bytes::from(vec![0x5a; FRAME]);
    let mut group = c.benchmark_group("sftp_store");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (chunk, depth) in [
        (32 * 1024, 32),
        (64 * 1024, 32),
        (64 * 1024, 64),
        (261_120, 16),
    ] {
        let mut cfg = server.file_server_config();
        cfg.chunk_size = chunk;
        cfg.pipeline_depth = depth;
        let store = SftpStore::new(&cfg, &server.node_key_path()).expect("store");
        rt.block_on(store.check()).expect("check");
        let id = format!("chunk{chunk}_depth{depth}");
        group.bench_function(BenchmarkId::new("upload", &id), |b| {
            b.to_async(&rt).iter(|| upload(&store, &frame))
        });
        group.bench_function(BenchmarkId::new("download", &id), |b| {
            b.to_async(&rt).iter(|| download(&store))
        });
    }
    group.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
