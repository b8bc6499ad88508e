//! End to end through a real OpenSSH server started by the bench (loopback, aes128-gcm):
//! the SFTP store's upload (pipelined WRITEs, one fsync, rename) and download (pipelined
//! READs) of a 64 MiB file, by chunk size and pipeline depth; then 8 concurrent transfers
//! sharing the pool's connections. Needs openssh-server (`/usr/sbin/sshd`).

#[path = "../tests/support/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use mft::store::FileStore;
use mft::store::sftp::SftpStore;

const SIZE: usize = 64 * 1024 * 1024;
/// Body frames fed to the sink, about what hyper hands over.
const FRAME: usize = 64 * 1024;

async fn upload(s: &SftpStore, name: &str, frame: &Bytes) {
    let mut sink = s.create_upload("bench", name).await.expect("create");
    let mut left = SIZE;
    while left > 0 {
        let n = left.min(frame.len());
        sink.write(frame.slice(..n)).await.expect("write");
        left -= n;
    }
    sink.commit().await.expect("commit");
}

async fn download(s: &SftpStore, name: &str) {
    let mut stream = s
        .read_range(&format!("bench/{name}"), 0, SIZE as u64)
        .await
        .expect("open");
    let mut got = 0;
    while let Some(piece) = stream.next().await {
        got += piece.expect("read").len();
    }
    assert_eq!(got, SIZE);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn by_chunk_and_depth(c: &mut Criterion) {
    let rt = runtime();
    let server = sshd::Sshd::start();
    let frame = Bytes::from(vec![0x5a; FRAME]);
    let mut group = c.benchmark_group("sftp_store");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    for (chunk, depth) in [
        (32 * 1024, 64),
        (64 * 1024, 32),
        (64 * 1024, 64),
        (128 * 1024, 16),
        (255 * 1024, 16),
    ] {
        let mut cfg = server.file_server_config();
        cfg.chunk_size = chunk;
        cfg.pipeline_depth = depth;
        let store = SftpStore::new(&cfg, &server.node_key_path()).expect("store");
        rt.block_on(store.check()).expect("check");
        let id = format!("chunk{}k_depth{depth}", chunk / 1024);
        group.bench_function(BenchmarkId::new("upload", &id), |b| {
            b.to_async(&rt).iter(|| upload(&store, "blob", &frame))
        });
        group.bench_function(BenchmarkId::new("download", &id), |b| {
            b.to_async(&rt).iter(|| download(&store, "blob"))
        });
    }
    group.finish();
}

fn concurrent(c: &mut Criterion) {
    const N: usize = 8;
    let rt = runtime();
    let server = sshd::Sshd::start();
    let frame = Bytes::from(vec![0x5a; FRAME]);
    let mut group = c.benchmark_group("sftp_store_concurrent");
    group
        .throughput(Throughput::Bytes((N * SIZE) as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    // pool_size 8: a connection per transfer; pool_size 2: four transfers on each.
    for pool_size in [8, 2] {
        let mut cfg = server.file_server_config();
        cfg.pool_size = pool_size;
        let store = Arc::new(SftpStore::new(&cfg, &server.node_key_path()).expect("store"));
        rt.block_on(store.check()).expect("check");
        let id = format!("x{N}_pool{pool_size}");
        group.bench_function(BenchmarkId::new("upload", &id), |b| {
            b.to_async(&rt).iter(|| async {
                let tasks: Vec<_> = (0..N)
                    .map(|i| {
                        let (store, frame) = (store.clone(), frame.clone());
                        tokio::spawn(async move { upload(&store, &format!("c{i}"), &frame).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("join");
                }
            })
        });
        group.bench_function(BenchmarkId::new("download", &id), |b| {
            b.to_async(&rt).iter(|| async {
                let tasks: Vec<_> = (0..N)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(async move { download(&store, &format!("c{i}")).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("join");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, by_chunk_and_depth, concurrent);
criterion_main!(benches);
