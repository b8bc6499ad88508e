//! End-to-end tests of the embedded default: local directory store + SQLite, same rules as
//! the production pairing (layout, atomic rename, rows, limits, rollover recovery).

mod support;

use support::node::{TestNode, aft_rows, files_under, local_sqlite_config, sha256_hex, test_bytes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_round_trip_rows_and_layout() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = local_sqlite_config(data.path());
    let mut node = TestNode::start(config.clone()).await;
    let body = test_bytes(300_001, 21);
    let up = node.upload_ok("画像 📷.png", body.clone()).await;
    let stored = node
        .store_root()
        .join("files/im/20261203/17")
        .join(&up.resource);
    assert_eq!(
        sha256_hex(&std::fs::read(&stored).expect("stored file")),
        sha256_hex(&body)
    );

    let resp = node.download(&up.uri, "bob@example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let cd = resp.headers()["content-disposition"]
        .to_str()
        .expect("ascii");
    assert!(cd.starts_with("inline; "), "{cd}");
    let got = resp.bytes().await.expect("body");
    assert_eq!(sha256_hex(&got), up.sha256);

    // HEAD: headers only, no Get row.
    let resp = node
        .client
        .head(&up.uri)
        .bearer_auth(node.download_ticket("bob@example.com"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "300001");
    node.stop().await;

    let rows = aft_rows(&config.database.url, Some(&up.resource)).await;
    let methods: Vec<_> = rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["Post", "Get"]);
    assert_eq!(rows[0].real_filename, "画像 📷.png");
    assert_eq!(rows[0].file_type, "png");
    assert_eq!(rows[0].file_server, "fs1");
    assert_eq!(rows[0].file_path, stored.display().to_string());
    assert_eq!(rows[1].bytes_transferred, 300_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rollover_resumes_after_restart() {
    use futures_util::StreamExt;
    let data = tempfile::tempdir().expect("temp dir");
    let config = local_sqlite_config(data.path());
    let count_in = |root: &std::path::Path, d: &str| {
        std::fs::read_dir(root.join("files/groupchat/20261203").join(d))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    for (round, n) in [(0, 1200), (1, 900)] {
        let mut node = TestNode::start(config.clone()).await;
        let statuses: Vec<u16> = futures_util::stream::iter(0..n)
            .map(|i| {
                let node = &node;
                async move {
                    let ticket = node
                        .tickets
                        .mint_upload(
                            "a@x",
                            "room@conference.x",
                            mft::layout::ChatType::Groupchat,
                            "f.txt",
                            None,
                            600,
                        )
                        .expect("ticket");
                    node.client
                        .post(format!("{}/files", node.base_url()))
                        .bearer_auth(ticket)
                        .body(format!("{round}-{i}"))
                        .send()
                        .await
                        .expect("upload")
                        .status()
                        .as_u16()
                }
            })
            .buffer_unordered(24)
            .collect()
            .await;
        assert!(statuses.iter().all(|s| *s == 201), "round {round}");
        node.stop().await;
    }
    let root = std::path::PathBuf::from(&config.file_server.directory);
    assert_eq!(
        (
            count_in(&root, "17"),
            count_in(&root, "17.1"),
            count_in(&root, "17.2"),
            count_in(&root, "17.3")
        ),
        (1000, 1000, 100, 0)
    );
    assert_eq!(aft_rows(&config.database.url, None).await.len(), 2100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limit_and_disabled_mode() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = local_sqlite_config(data.path());
    config.transfer.max_file_size = 4096;
    let mut node = TestNode::start(config.clone()).await;
    node.upload_ok("exact", test_bytes(4096, 1)).await;
    assert_eq!(node.upload("over", test_bytes(4097, 2)).await.status(), 413);
    node.stop().await;
    assert_eq!(files_under(&node.store_root()).len(), 1);

    config.transfer.mode = mft::config::TransferMode::Disabled;
    let mut node = TestNode::start(config.clone()).await;
    let resp = node.upload("x", b"x".to_vec()).await;
    assert_eq!(resp.status(), 403);
    node.stop().await;
    assert_eq!(files_under(&node.store_root()).len(), 1);
    assert_eq!(aft_rows(&config.database.url, None).await.len(), 1);
}

/// The status line of the node's answer to raw request bytes.
fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> String {
    support::node::raw_request(addr, request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_answers_and_leaves_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = local_sqlite_config(data.path());
    config.transfer.idle_timeout_s = 1;
    config.node.public_url = "http://127.0.0.1:0/mft".into();
    let mut node = TestNode::start(config.clone()).await;
    let addr = node.addr();

    // Claims that AFT_LOG could not hold, or that would break the URI, are refused up front.
    let long_jid = "j".repeat(3072);
    for (from, name) in [
        (long_jid.as_str(), "f.txt"),
        ("a@x", "a\r\nX-Injected: 1.txt"),
        ("a@x", &"n".repeat(512)),
    ] {
        let ticket = node
            .tickets
            .mint_upload(from, "b@x", mft::layout::ChatType::Im, name, None, 600)
            .expect("ticket");
        let resp = node
            .client
            .post(format!("{}/files", node.base_url()))
            .bearer_auth(ticket)
            .body(b"data".to_vec())
            .send()
            .await
            .expect("upload");
        assert_eq!(resp.status(), 400, "{name:.20}");
    }

    // No length at all: 411, not an empty file.
    let ticket = node.upload_ticket("nolen.txt", None);
    let status = raw_status(
        addr,
        format!("POST /mft/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\nConnection: close\r\n\r\nhello")
            .as_bytes(),
    );
    assert!(status.contains(" 411 "), "{status}");

    // A body that stops arriving: 408 after the idle timeout.
    let ticket = node.upload_ticket("stall.txt", Some(1000));
    let status = raw_status(
        addr,
        format!("POST /mft/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\nContent-Length: 1000\r\n\r\nonly a little")
            .as_bytes(),
    );
    assert!(status.contains(" 408 "), "{status}");

    // Ops endpoints answer with and without the public URL's path prefix.
    for path in ["/metrics", "/mft/metrics", "/healthz", "/mft/status"] {
        let resp = node
            .client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("ops");
        assert_eq!(resp.status(), 200, "{path}");
    }
    // The URI handed out carries the prefix and works.
    let up = node.upload_ok("prefixed.txt", b"p".to_vec()).await;
    assert!(
        up.uri.starts_with(&format!("http://{addr}/mft/files/")),
        "{}",
        up.uri
    );
    assert_eq!(node.download(&up.uri, "b@x").await.status(), 200);
    node.stop().await;
    assert_eq!(files_under(&node.store_root()).len(), 1);
    assert_eq!(aft_rows(&config.database.url, None).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_sqlite_file_is_noticed() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = local_sqlite_config(data.path());
    config.alarms.check_interval_s = 1;
    let mut node = TestNode::start(config.clone()).await;
    node.upload_ok("before.txt", b"b".to_vec()).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.path().join(format!("aft_log.db{suffix}")));
    }
    let ready = node
        .client
        .get(format!("{}/readyz", node.base_url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    // Within a few check intervals the alarm is raised and uploads are refused, not lost.
    let mut raised = false;
    for _ in 0..50 {
        let status: serde_json::Value = node
            .client
            .get(format!("{}/status", node.base_url()))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("JSON");
        if status["alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["alarm"] == "XcpMFTDBConnectError"))
        {
            raised = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(raised, "XcpMFTDBConnectError not raised");
    assert_eq!(node.upload("after.txt", b"a".to_vec()).await.status(), 503);
    node.stop().await;
    assert_eq!(files_under(&node.store_root()).len(), 1);
}
