//! Storage layout: the rollover allocator under contention (many concurrent `allocate` calls
//! for one hour, each one taking a slot of at most 1000 per hour directory, over a local
//! store in a temporary directory), the first allocation of an hour (which lists the store
//! to recover the count), and building and validating download paths.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mft::layout::{ChatType, FixedClock, RolloverAllocator, StoredPath};
use mft::store::FileStore;
use mft::store::local::LocalStore;

/// Allocations per measured iteration in the contention bench.
const ALLOCATIONS: usize = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn allocator_setup() -> (tempfile::TempDir, Arc<RolloverAllocator>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn FileStore> = Arc::new(LocalStore::new(dir.path(), "fs1").expect("store"));
    let at = Utc
        .with_ymd_and_hms(2026, 12, 3, 17, 30, 0)
        .single()
        .expect("time");
    let alloc = Arc::new(RolloverAllocator::new(store, Arc::new(FixedClock::new(at))));
    (dir, alloc)
}

fn contention(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rollover_allocator");
    group.throughput(Throughput::Elements(ALLOCATIONS as u64));
    for tasks in [1usize, 16, 256] {
        let (_dir, alloc) = allocator_setup();
        // Recover the hour once, outside the measurement.
        rt.block_on(alloc.allocate(ChatType::Im)).expect("warm up");
        group.bench_function(BenchmarkId::new("concurrent_allocate", tasks), |b| {
            b.to_async(&rt).iter(|| {
                let alloc = alloc.clone();
                async move {
                    let per_task = ALLOCATIONS / tasks;
                    let handles: Vec<_> = (0..tasks)
                        .map(|_| {
                            let alloc = alloc.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    alloc.allocate(ChatType::Im).await.expect("allocate");
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.expect("join");
                    }
                }
            })
        });
    }
    group.finish();
}

fn first_allocation_of_an_hour(c: &mut Criterion) {
    let rt = runtime();
    let (dir, _) = allocator_setup();
    // An hour with 1.5 directories' worth of files already on the store.
    for (sub, n) in [("17", 1000), ("17.1", 500)] {
        let d = dir.path().join("files/im/20261203").join(sub);
        std::fs::create_dir_all(&d).expect("mkdir");
        for i in 0..n {
            std::fs::write(d.join(format!("f{i:04}")), b"").expect("file");
        }
    }
    let store: Arc<dyn FileStore> = Arc::new(LocalStore::new(dir.path(), "fs1").expect("store"));
    let at = Utc
        .with_ymd_and_hms(2026, 12, 3, 17, 30, 0)
        .single()
        .expect("time");
    c.bench_function("rollover_allocator/recover_hour_1500_files", |b| {
        b.to_async(&rt).iter(|| {
            let alloc = RolloverAllocator::new(store.clone(), Arc::new(FixedClock::new(at)));
            async move {
                let p = alloc.allocate(ChatType::Im).await.expect("allocate");
                assert_eq!(p.hour_dir.seq, 1);
            }
        })
    });
}

fn paths(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, alloc) = allocator_setup();
    let p = rt
        .block_on(alloc.allocate(ChatType::Groupchat))
        .expect("path");
    let segments = p.url_segments();
    let parts: Vec<String> = segments.split('/').map(str::to_string).collect();
    c.bench_function("stored_path/url_segments", |b| {
        b.iter(|| std::hint::black_box(&p).url_segments())
    });
    c.bench_function("stored_path/parse_segments", |b| {
        b.iter(|| {
            StoredPath::parse_segments(&parts[0], &parts[1], &parts[2], &parts[3]).expect("parse")
        })
    });
}

criterion_group!(benches, contention, first_allocation_of_an_hour, paths);
criterion_main!(benches);
