//! The SFTP store against a real OpenSSH server: uploads (sizes around the chunk edges),
//! abort and drop cleanup, ranged reads, listing, space, host key pinning, reconnection after
//! the server restarts, keygen and keyscan.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mft::store::sftp::{KeyType, SftpStore, keygen, keyscan};
use mft::store::{FileStore, StoreError};
use sha2::{Digest, Sha256};
use support::sshd::Sshd;

const CHUNK: usize = 64 * 1024;

fn store(sshd: &Sshd) -> SftpStore {
    SftpStore::new(&sshd.file_server_config(), &sshd.node_key_path()).expect("SftpStore::new")
}

/// Deterministic, non-repeating-looking test data.
fn data(len: usize, seed: u64) -> Vec<u8> {
    support::node::test_bytes(len, seed)
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// Uploads `body` in frames of `frame` bytes.
async fn upload(
    s: &SftpStore,
    dir: &str,
    name: &str,
    body: &[u8],
    frame: usize,
) -> Result<u64, StoreError> {
    let mut sink = s.create_upload(dir, name).await?;
    for piece in body.chunks(frame.max(1)) {
        sink.write(Bytes::copy_from_slice(piece)).await?;
    }
    sink.commit().await
}

async fn read_all(s: &SftpStore, rel: &str, start: u64, len: u64) -> Vec<u8> {
    let mut stream = s.read_range(rel, start, len).await.expect("read_range");
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.expect("read chunk"));
    }
    out
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_land_intact_at_every_size() {
    let sshd = Sshd::start();
    let s = store(&sshd);
    let dir = "files/im/20261203/17";
    let sizes = [
        0,
        1,
        32767,
        32768,
        32769,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        3 * 1024 * 1024 + 7,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let body = data(size, i as u64 + 1);
        // Alternate small frames (accumulated into chunks) and large ones (sliced).
        let frame = if i % 2 == 0 { 16 * 1024 + 3 } else { 1 << 20 };
        let name = format!("file{i}");
        let n = upload(&s, dir, &name, &body, frame)
            .await
            .unwrap_or_else(|e| panic!("upload of {size} bytes: {e}"));
        assert_eq!(n, size as u64);
        let on_disk = std::fs::read(sshd.root_dir().join(dir).join(&name)).expect("final file");
        assert_eq!(on_disk.len(), size, "size of {name}");
        assert_eq!(
            sha(&on_disk),
            sha(&body),
            "content of {name} ({size} bytes)"
        );
        assert_eq!(
            s.size_of(&format!("{dir}/{name}")).await.expect("size_of"),
            size as u64
        );
    }
    assert!(leftovers(&sshd.root_dir().join(dir)).is_empty());
    assert_eq!(
        s.absolute_path(&format!("{dir}/file1")),
        format!("{}/{dir}/file1", sshd.root_dir().display())
    );
    assert_eq!(s.server_name(), "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_replaces_an_existing_file() {
    let sshd = Sshd::start();
    let s = store(&sshd);
    upload(&s, "d", "f", b"first version", 4)
        .await
        .expect("first");
    upload(&s, "d", "f", b"second", 4).await.expect("second");
    let got = std::fs::read(sshd.root_dir().join("d/f")).expect("read");
    assert_eq!(got, b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_drop_leave_nothing() {
    let sshd = Sshd::start();
    let s = store(&sshd);
    let dir = sshd.root_dir().join("a/b");

    let mut sink = s.create_upload("a/b", "aborted").await.expect("create");
    sink.write(Bytes::from(data(200_000, 7)))
        .await
        .expect("write");
    assert!(
        dir.join(".aborted.part").exists(),
        "the temp file exists while uploading"
    );
    sink.abort().await;
    assert!(!dir.join(".aborted.part").exists());
    assert!(!dir.join("aborted").exists());

    let mut sink = s.create_upload("a/b", "dropped").await.expect("create");
    sink.write(Bytes::from(data(300_000, 8)))
        .await
        .expect("write");
    assert!(dir.join(".dropped.part").exists());
    drop(sink);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.join(".dropped.part").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir.join(".dropped.part").exists(),
        "dropped upload was removed"
    );
    assert!(!dir.join("dropped").exists());
    assert!(leftovers(&dir).is_empty());

    // The connection used by the dropped upload is usable again.
    upload(&s, "a/b", "after", b"ok", 1)
        .await
        .expect("upload after drop");
    assert_eq!(std::fs::read(dir.join("after")).expect("read"), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_range_whole_and_partial() {
    let sshd = Sshd::start();
    let s = store(&sshd);
    let body = data(1_000_003, 42);
    upload(&s, "r", "blob", &body, CHUNK).await.expect("upload");

    assert_eq!(
        sha(&read_all(&s, "r/blob", 0, body.len() as u64).await),
        sha(&body)
    );
    for (start, len) in [
        (0u64, 1u64),
        (1, 10),
        (65535, 2),
        (123_456, 500_000),
        (999_999, 4),
    ] {
        let got = read_all(&s, "r/blob", start, len).await;
        assert_eq!(
            got,
            &body[start as usize..(start + len) as usize],
            "range {start}+{len}"
        );
    }
    assert!(read_all(&s, "r/blob", 10, 0).await.is_empty());

    // Asking past the end is an error, not a silent short body.
    let mut stream = s.read_range("r/blob", 999_000, 10_000).await.expect("open");
    let mut failed = false;
    while let Some(piece) = stream.next().await {
        if piece.is_err() {
            failed = true;
        }
    }
    assert!(failed, "a range past the end must fail");

    // Dropping a stream midway leaves the store usable.
    let mut stream = s
        .read_range("r/blob", 0, body.len() as u64)
        .await
        .expect("open");
    let first = stream.next().await.expect("some").expect("chunk");
    assert!(!first.is_empty());
    drop(stream);
    assert_eq!(read_all(&s, "r/blob", 5, 5).await, &body[5..10]);

    let missing = s.read_range("r/none", 0, 1).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    assert!(
        s.size_of("r/none")
            .await
            .expect_err("missing")
            .is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_remove_space_check() {
    let sshd = Sshd::start();
    let s = store(&sshd);
    s.check().await.expect("check");
    assert!(
        s.list_dir("files/im")
            .await
            .expect("missing dir")
            .is_empty()
    );
    upload(&s, "files/im/20261203/17", "x1", b"1", 1)
        .await
        .expect("x1");
    upload(&s, "files/im/20261203/17", "x2", b"22", 1)
        .await
        .expect("x2");
    upload(&s, "files/im/20261203/17.1", "y", b"3", 1)
        .await
        .expect("y");
    let mut hours = s.list_dir("files/im/20261203").await.expect("list");
    hours.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<_> = hours.iter().map(|e| (e.name.as_str(), e.is_dir)).collect();
    assert_eq!(names, [("17", true), ("17.1", true)]);
    let mut files = s.list_dir("files/im/20261203/17").await.expect("list");
    files.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        files.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["x1", "x2"]
    );
    assert!(files.iter().all(|e| !e.is_dir));

    s.remove("files/im/20261203/17/x1").await.expect("remove");
    assert!(!sshd.root_dir().join("files/im/20261203/17/x1").exists());
    assert!(
        s.remove("files/im/20261203/17/x1")
            .await
            .expect_err("gone")
            .is_not_found()
    );

    let space = s.space().await.expect("space");
    assert!(
        space.total_bytes > 0 && space.free_bytes <= space.total_bytes,
        "{space:?}"
    );

    assert!(matches!(
        s.list_dir("../etc").await,
        Err(StoreError::InvalidPath(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_creates_the_node_directory() {
    let sshd = Sshd::start();
    let mut cfg = sshd.file_server_config();
    let dir = sshd.root_dir().join("deep/node_1");
    cfg.directory = format!("{}/", dir.display());
    let s = SftpStore::new(&cfg, &sshd.node_key_path()).expect("new");
    s.check().await.expect("check");
    assert!(dir.is_dir());
    assert_eq!(
        std::fs::read_dir(&dir).expect("read_dir").count(),
        0,
        "probe removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused() {
    let sshd = Sshd::start();
    let mut cfg = sshd.file_server_config();
    cfg.public_key = sshd.wrong_host_key_line();
    let s = SftpStore::new(&cfg, &sshd.node_key_path()).expect("new");
    match s.check().await {
        Err(StoreError::HostKeyMismatch { expected, offered }) => {
            assert!(expected.starts_with("SHA256:"), "{expected}");
            assert!(offered.starts_with("SHA256:"), "{offered}");
            assert_ne!(expected, offered);
            // The offered one is the server's real key.
            let real = russh::keys::PublicKey::from_openssh(
                sshd.host_key_line().split_once(' ').expect("line").1,
            )
            .expect("parse");
            assert_eq!(
                offered,
                real.fingerprint(russh::keys::HashAlg::Sha256).to_string()
            );
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    assert!(upload(&s, "d", "f", b"x", 1).await.is_err());
    assert!(!sshd.root_dir().join("d").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_node_key_is_an_auth_error() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().expect("tempdir");
    let key = other.path().join("k");
    keygen(&key, KeyType::Ed25519).expect("keygen");
    let s = SftpStore::new(&sshd.file_server_config(), &key).expect("new");
    let err = s.check().await.expect_err("must fail");
    assert!(matches!(err, StoreError::Auth(_)), "{err:?}");
    assert!(err.is_connectivity());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_node_key_authenticates() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().expect("tempdir");
    let key = other.path().join("rsa_key");
    let line = keygen(&key, KeyType::Rsa).expect("keygen rsa");
    assert!(line.starts_with("ssh-rsa AAAA"), "{line}");
    let ak = sshd.node_key_path().with_file_name("authorized_keys");
    let mut keys = std::fs::read_to_string(&ak).expect("read ak");
    keys.push_str(&format!("{line}\n"));
    std::fs::write(&ak, keys).expect("write ak");
    let s = SftpStore::new(&sshd.file_server_config(), &key).expect("new");
    s.check().await.expect("RSA key accepted (rsa-sha2)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_replaces_connections_after_server_restart() {
    let mut sshd = Sshd::start();
    let mut cfg = sshd.file_server_config();
    cfg.pool_size = 1;
    let s = SftpStore::new(&cfg, &sshd.node_key_path()).expect("new");
    upload(&s, "p", "before", b"before", 2)
        .await
        .expect("before");

    sshd.restart();
    // No sleep: the dead connection must be noticed by the pool or the retry.
    let listed = s.list_dir("p").await.expect("list after restart");
    assert_eq!(listed.len(), 1);
    upload(&s, "p", "after", b"after", 2)
        .await
        .expect("upload after restart");
    assert_eq!(
        std::fs::read(sshd.root_dir().join("p/after")).expect("read"),
        b"after"
    );

    // While the server is down operations fail as Unavailable, then recover.
    sshd.stop();
    let err = s.space().await.expect_err("server down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    sshd.restart();
    s.space().await.expect("space after second restart");
    assert_eq!(read_all(&s, "p/after", 0, 5).await, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_and_keyscan_produce_usable_lines() {
    let sshd = Sshd::start();
    let line = keyscan("127.0.0.1", sshd.port(), Duration::from_secs(5))
        .await
        .expect("keyscan");
    assert_eq!(line, sshd.host_key_line());
    let mut cfg = sshd.file_server_config();
    cfg.public_key = line;
    let s = SftpStore::new(&cfg, &sshd.node_key_path()).expect("new");
    s.check().await.expect("check with the scanned key");

    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("keys/node_key");
    let public = keygen(&path, KeyType::Ed25519).expect("keygen");
    let on_disk = std::fs::read_to_string(path.with_file_name("node_key.pub")).expect("pub");
    assert_eq!(on_disk.trim(), public);
    let err = keygen(&path, KeyType::Rsa).expect_err("no overwrite");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    assert!(
        keyscan("127.0.0.1", closed, Duration::from_secs(2))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_share_the_pool() {
    let sshd = Sshd::start();
    let s = std::sync::Arc::new(store(&sshd));
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let body = data(150_000 + i as usize, i);
            upload(&s, "c", &format!("f{i}"), &body, 10_000)
                .await
                .map(|_| sha(&body))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let want = t.await.expect("join").expect("upload");
        let got = std::fs::read(sshd.root_dir().join(format!("c/f{i}"))).expect("read");
        assert_eq!(sha(&got), want);
    }
}

/// A transfer leases a share of a connection, not the connection: with one pooled connection,
/// an upload left open (a slow client) does not stop other uploads, downloads and listings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_does_not_hold_the_only_connection() {
    let sshd = Sshd::start();
    let mut cfg = sshd.file_server_config();
    cfg.pool_size = 1;
    cfg.request_timeout_s = 5;
    let s = SftpStore::new(&cfg, &sshd.node_key_path()).expect("new");

    let seed = data(2 * CHUNK, 2);
    upload(&s, "m", "seed", &seed, CHUNK).await.expect("seed");
    let slow_body = data(3 * CHUNK + 17, 1);
    let mut slow = s.create_upload("m", "slow").await.expect("create slow");
    slow.write(Bytes::copy_from_slice(&slow_body[..CHUNK + 5]))
        .await
        .expect("first part");
    let stalled_read = {
        let mut stream = s
            .read_range("m/seed", 0, seed.len() as u64)
            .await
            .expect("open");
        // One piece read, then the stream is left idle while others work.
        let first = stream.next().await.expect("piece").expect("ok");
        assert_eq!(&first[..], &seed[..first.len()]);
        stream
    };

    // Were the connection held by the stalled transfers, these would wait for it and fail
    // ("all connections stayed busy") once the 5 s request timeout passed.
    for i in 0..3u64 {
        let body = data(2 * CHUNK + i as usize, 10 + i);
        upload(&s, "m", &format!("quick{i}"), &body, 7_000)
            .await
            .expect("upload beside a stalled one");
        let back = read_all(&s, &format!("m/quick{i}"), 0, body.len() as u64).await;
        assert_eq!(sha(&back), sha(&body));
    }
    assert!(s.list_dir("m").await.expect("list").len() >= 5);
    assert_eq!(
        s.connections(),
        (0, 1),
        "one connection, busy with the stalled transfers"
    );

    drop(stalled_read);
    slow.write(Bytes::copy_from_slice(&slow_body[CHUNK + 5..]))
        .await
        .expect("rest");
    assert_eq!(slow.commit().await.expect("commit"), slow_body.len() as u64);
    let got = std::fs::read(sshd.root_dir().join("m/slow")).expect("read slow");
    assert_eq!(sha(&got), sha(&slow_body));
}

/// Concurrent transfers open connections up to `pool_size` (one each while there are free
/// slots), then share them; every byte of every upload and download is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_spread_over_connections_then_share_them() {
    let sshd = Sshd::start();
    let mut cfg = sshd.file_server_config();
    cfg.pool_size = 3;
    cfg.pipeline_depth = 4;
    let s = std::sync::Arc::new(SftpStore::new(&cfg, &sshd.node_key_path()).expect("new"));

    // Open sinks one after another: the first three land on three connections.
    let mut sinks = Vec::new();
    for i in 0..5 {
        sinks.push(
            s.create_upload("spread", &format!("f{i}"))
                .await
                .expect("create"),
        );
        let busy = (i + 1).min(3);
        assert_eq!(s.connections(), (0, busy), "after {} open uploads", i + 1);
    }
    let bodies: Vec<Vec<u8>> = (0..5)
        .map(|i| data(5 * CHUNK + 3 * i, 100 + i as u64))
        .collect();
    // Interleave the writes of all five so their pipelines share sessions.
    let frame = 20_000;
    let mut offset = 0;
    while offset < bodies[4].len() {
        for (sink, body) in sinks.iter_mut().zip(&bodies) {
            if offset < body.len() {
                let end = (offset + frame).min(body.len());
                sink.write(Bytes::copy_from_slice(&body[offset..end]))
                    .await
                    .expect("write");
            }
        }
        offset += frame;
    }
    for (sink, body) in sinks.into_iter().zip(&bodies) {
        assert_eq!(sink.commit().await.expect("commit"), body.len() as u64);
    }
    assert_eq!(s.connections(), (3, 0), "all idle again, none closed");

    // Twelve concurrent downloads and uploads over the three connections.
    let mut tasks = Vec::new();
    for i in 0..12usize {
        let s = s.clone();
        let want = sha(&bodies[i % 5]);
        let len = bodies[i % 5].len() as u64;
        let up = data(3 * CHUNK + i * 1000, 200 + i as u64);
        tasks.push(tokio::spawn(async move {
            let got = read_all(&s, &format!("spread/f{}", i % 5), 0, len).await;
            assert_eq!(sha(&got), want, "download {i}");
            upload(&s, "spread", &format!("g{i}"), &up, 33_333)
                .await
                .expect("upload");
            sha(&up)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let want = t.await.expect("join");
        let got = std::fs::read(sshd.root_dir().join(format!("spread/g{i}"))).expect("read");
        assert_eq!(sha(&got), want, "upload {i}");
    }
    let (idle, busy) = s.connections();
    assert_eq!((idle + busy, busy), (3, 0));
    assert!(leftovers(&sshd.root_dir().join("spread")).is_empty());
}

/// Transfers sharing a connection that dies fail cleanly; the next ones get a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_on_a_dead_shared_connection_fail_then_recover() {
    let mut sshd = Sshd::start();
    let mut cfg = sshd.file_server_config();
    cfg.pool_size = 1;
    let s = SftpStore::new(&cfg, &sshd.node_key_path()).expect("new");
    let body = data(4 * CHUNK, 7);
    upload(&s, "d", "src", &body, CHUNK).await.expect("seed");

    let mut a = s.create_upload("d", "a").await.expect("a");
    let mut b = s.create_upload("d", "b").await.expect("b");
    a.write(Bytes::copy_from_slice(&body[..CHUNK]))
        .await
        .expect("a first");
    sshd.restart();
    let a_failed = match a.write(Bytes::copy_from_slice(&body[CHUNK..])).await {
        Err(_) => true,
        Ok(()) => a.commit().await.is_err(),
    };
    assert!(a_failed, "upload on the dead connection must not succeed");
    let b_failed = match b.write(Bytes::copy_from_slice(&body)).await {
        Err(_) => true,
        Ok(()) => b.commit().await.is_err(),
    };
    assert!(b_failed);

    // The next transfers reconnect (the broken connection was replaced).
    upload(&s, "d", "c", &body, 10_000)
        .await
        .expect("after restart");
    assert_eq!(
        sha(&read_all(&s, "d/c", 0, body.len() as u64).await),
        sha(&body)
    );
    assert!(!sshd.root_dir().join("d/a").exists() && !sshd.root_dir().join("d/b").exists());
}

/// `mft transferspeed` writes, reads back (checking every byte) and removes its test file
/// through the node's SFTP path, and prints both speeds against the 60 MB/s floor. Whether
/// this machine is above the floor is not asserted (no timing in tests): only the report.
#[test]
fn transferspeed_command_reports_and_cleans_up() {
    let sshd = Sshd::start();
    let cfg = sshd.file_server_config();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[node]\nkey_file = {key:?}\ndata_dir = {data:?}\n\n\
         [auth]\nticket_secret = \"transferspeed-test-secret\"\n\n\
         [file_server]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user:?}\n\
         directory = {root:?}\npublic_key = {pk:?}\n",
        key = sshd.node_key_path().display().to_string(),
        data = dir.path().join("data").display().to_string(),
        port = cfg.port,
        user = cfg.user,
        root = cfg.directory,
        pk = cfg.public_key,
    );
    let config = dir.path().join("mft.toml");
    std::fs::write(&config, toml).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mft"))
        .args(["transferspeed", "--size", "3000000", "--config"])
        .arg(&config)
        .output()
        .expect("running mft transferspeed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in ["size:        3000000 bytes", "write:", "read:"] {
        assert!(
            stdout.contains(line),
            "{line:?} missing:\n{stdout}\n{stderr}"
        );
    }
    let below = stdout.contains("BELOW the 60 MB/s floor");
    assert_eq!(out.status.success(), !below, "{stdout}\n{stderr}");
    let left: Vec<_> = std::fs::read_dir(sshd.root_dir().join("transferspeed"))
        .expect("transferspeed dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "test file left behind: {left:?}");
}
