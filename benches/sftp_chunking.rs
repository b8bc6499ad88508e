//! The upload and download data path in process, without SSH or a network: how fast body
//! frames are cut into SFTP WRITEs ([`Chunker`], by frame and chunk size), and how fast the
//! pipelined WRITE and READ paths move bytes through russh-sftp's framing over an in-memory
//! pipe to an in-process SFTP server that acknowledges writes and serves reads. What is left
//! when these run far faster than the wire is the cost of SSH (crypto) and the file server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use mft::store::sftp::pipeline::{Chunker, WritePipeline, read_stream};
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{Data, FileAttributes, Handle, OpenFlags, Status, StatusCode, Version};

const SIZE: usize = 64 * 1024 * 1024;

/// An SFTP server that keeps nothing: WRITEs are acknowledged, READs return bytes of a
/// buffer (copied, as a server's pread would).
struct NullServer {
    source: Arc<Vec<u8>>,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

impl russh_sftp::server::Handler for NullServer {
    type Error = StatusCode;

    fn unimplemented(&self) -> StatusCode {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: std::collections::HashMap<String, String>,
    ) -> Result<Version, StatusCode> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        _filename: String,
        _pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, StatusCode> {
        Ok(Handle {
            id,
            handle: "h".into(),
        })
    }

    async fn close(&mut self, id: u32, _handle: String) -> Result<Status, StatusCode> {
        Ok(ok(id))
    }

    async fn write(
        &mut self,
        id: u32,
        _handle: String,
        _offset: u64,
        _data: Vec<u8>,
    ) -> Result<Status, StatusCode> {
        Ok(ok(id))
    }

    async fn read(
        &mut self,
        id: u32,
        _handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, StatusCode> {
        let start = (offset as usize) % self.source.len();
        let end = (start + len as usize).min(self.source.len());
        Ok(Data {
            id,
            data: self.source[start..end].to_vec(),
        })
    }
}

/// A client session to a fresh in-process server over a 1 MiB in-memory pipe.
async fn session() -> Arc<RawSftpSession> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let source = Arc::new(vec![0xa5u8; 1 << 20]);
    russh_sftp::server::run(server, NullServer { source }).await;
    let cfg = russh_sftp::client::Config {
        request_timeout_secs: 60,
        ..Default::default()
    };
    let sftp = RawSftpSession::new_with_config(client, cfg);
    sftp.init().await.expect("init");
    Arc::new(sftp)
}

/// Body frames as hyper hands them over: slices of one shared buffer.
fn frames(frame: usize) -> Vec<Bytes> {
    let body = Bytes::from(vec![0x5au8; SIZE]);
    (0..SIZE)
        .step_by(frame)
        .map(|at| body.slice(at..(at + frame).min(SIZE)))
        .collect()
}

fn chunker(c: &mut Criterion) {
    let mut group = c.benchmark_group("chunker");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(20);
    for frame in [1024, 16 * 1024, 64 * 1024, 400 * 1024] {
        let input = frames(frame);
        for chunk in [64 * 1024, 255 * 1024] {
            let id = format!("frame{}k_chunk{}k", frame / 1024, chunk / 1024);
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    let mut c = Chunker::new(chunk);
                    let mut total = 0;
                    for f in &input {
                        let mut data = f.clone();
                        while let Some(piece) = c.next_chunk(&mut data) {
                            // What the pipeline hands russh-sftp.
                            total += Vec::from(piece).len();
                        }
                    }
                    total += c.finish().map_or(0, |p| p.len());
                    assert_eq!(total, SIZE);
                })
            });
        }
    }
    group.finish();
}

fn in_process_session(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("sftp_in_process");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let input = frames(64 * 1024);
    for (chunk, depth) in [(64 * 1024, 32), (128 * 1024, 16), (255 * 1024, 16)] {
        let id = format!("chunk{}k_depth{depth}", chunk / 1024);
        group.bench_function(BenchmarkId::new("write", &id), |b| {
            b.to_async(&rt).iter(|| async {
                let sftp = session().await;
                let h = sftp
                    .open("f", OpenFlags::WRITE, FileAttributes::empty())
                    .await
                    .expect("open")
                    .handle;
                let mut w = WritePipeline::new(sftp, h, chunk, depth);
                for f in &input {
                    w.write(f.clone()).await.expect("write");
                }
                assert_eq!(w.finish().await.expect("finish"), SIZE as u64);
            })
        });
        group.bench_function(BenchmarkId::new("read", &id), |b| {
            b.to_async(&rt).iter(|| async {
                let sftp = session().await;
                let h = sftp
                    .open("f", OpenFlags::READ, FileAttributes::empty())
                    .await
                    .expect("open")
                    .handle;
                let mut stream = read_stream(sftp, h, 0, SIZE as u64, chunk as u32, depth);
                let mut got = 0;
                while let Some(piece) = stream.next().await {
                    got += piece.expect("read").len();
                }
                assert_eq!(got, SIZE);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, chunker, in_process_session);
criterion_main!(benches);
