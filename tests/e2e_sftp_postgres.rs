//! End-to-end tests of the production pairing: a node streaming to a real OpenSSH `sshd` and
//! logging to a real PostgreSQL, both started by the tests on loopback.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::node::{
    TestNode, aft_rows, files_under, pinned_hour, raw_request, rig, sftp_postgres_config,
    sha256_hex, test_bytes,
};
use unicode_normalization::UnicodeNormalization;

fn hour_dir(root: &std::path::Path, seq: u32) -> std::path::PathBuf {
    let name = if seq == 0 {
        "17".to_string()
    } else {
        format!("17.{seq}")
    };
    root.join("files/im/20261203").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_round_trip_with_every_column() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let mut node = TestNode::start(config.clone()).await;

    let body = test_bytes(5_000_000, 1);
    let name = "Quartalsbericht Über.pdf";
    let up = node.upload_ok(name, body.clone()).await;
    assert_eq!(up.size, body.len() as u64);
    assert_eq!(up.sha256, sha256_hex(&body));

    // On the file server, at the SPEC layout, identical bytes, nothing else left behind.
    let stored = hour_dir(&node.store_root(), 0).join(&up.resource);
    let on_disk = std::fs::read(&stored).expect("file at the SPEC path");
    assert_eq!(sha256_hex(&on_disk), sha256_hex(&body));
    let all = files_under(&node.store_root());
    assert_eq!(all.len(), 1, "unexpected files: {all:?}");
    assert!(
        up.uri.starts_with(&format!(
            "{}/files/node1/im/20261203/17/{}/",
            node.base_url(),
            up.resource
        )),
        "{}",
        up.uri
    );

    let resp = node.download(&up.uri, "carol@example.com").await;
    assert_eq!(resp.status(), 200);
    let cd = resp.headers()["content-disposition"]
        .to_str()
        .expect("ascii header")
        .to_string();
    assert_eq!(
        cd,
        "attachment; filename=\"Quartalsbericht _ber.pdf\"; filename*=UTF-8''Quartalsbericht%20%C3%9Cber.pdf"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        resp.headers()["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    let got = resp.bytes().await.expect("download body");
    assert_eq!(sha256_hex(&got), up.sha256);
    node.stop().await; // flushes the Get row

    let rows = aft_rows(&rig.pg.url(), Some(&up.resource)).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (post, get) = (&rows[0], &rows[1]);
    let abs = format!(
        "{}/files/im/20261203/17/{}",
        config.file_server.directory.trim_end_matches('/'),
        up.resource
    );
    assert_eq!(post.method, "Post");
    assert_eq!(post.jid, "alice@example.com");
    assert_eq!(post.to_jid, "bob@example.com");
    assert_eq!(post.filename, up.resource);
    assert_eq!(post.real_filename, name);
    assert_eq!(post.file_type, "pdf");
    assert_eq!(post.chat_type, "im");
    assert_eq!(post.file_server, "127.0.0.1");
    assert_eq!(post.file_path, abs);
    assert_eq!(post.file_size, 5_000_000);
    assert_eq!(post.bytes_transferred, 5_000_000);
    assert!(post.timestamp.starts_with("20"), "{}", post.timestamp);
    assert_eq!(get.method, "Get");
    assert_eq!(get.jid, "carol@example.com");
    assert_eq!(get.filename, up.resource);
    assert_eq!(get.real_filename, name);
    assert_eq!(get.file_type, "pdf");
    assert_eq!(get.chat_type, "im");
    assert_eq!(get.file_path, abs);
    assert_eq!(get.file_size, 5_000_000);
    assert_eq!(get.bytes_transferred, 5_000_000);
    assert!(get.aft_index != post.aft_index);
    assert!(get.timestamp >= post.timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_around_sftp_boundaries_round_trip() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let chunk = config.file_server.chunk_size;
    let mut node = TestNode::start(config).await;
    let sizes = [
        0,
        1,
        32767,
        32768,
        32769,
        chunk - 1,
        chunk,
        chunk + 1,
        3 * chunk + 17,
        2_000_003,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let body = test_bytes(size, 100 + i as u64);
        let up = node.upload_ok(&format!("f{size}.bin"), body.clone()).await;
        assert_eq!(up.size, size as u64);
        let resp = node.download(&up.uri, "bob@example.com").await;
        assert_eq!(resp.status(), 200, "size {size}");
        let got = resp.bytes().await.expect("body");
        assert_eq!(got.len(), size, "size {size}");
        assert_eq!(sha256_hex(&got), sha256_hex(&body), "size {size}");
        // A range in the middle comes back exact.
        if size > 10 {
            let resp = node
                .client
                .get(&up.uri)
                .bearer_auth(node.download_ticket("bob@example.com"))
                .header("Range", format!("bytes=3-{}", size - 4))
                .send()
                .await
                .expect("range request");
            assert_eq!(resp.status(), 206);
            assert_eq!(
                resp.headers()["content-range"],
                format!("bytes 3-{}/{size}", size - 4).as_str()
            );
            let part = resp.bytes().await.expect("range body");
            assert_eq!(&part[..], &body[3..size - 3], "range of size {size}");
        }
    }
    // 416 beyond the end.
    let body = test_bytes(100, 7);
    let up = node.upload_ok("small.bin", body).await;
    let resp = node
        .client
        .get(&up.uri)
        .bearer_auth(node.download_ticket("bob@example.com"))
        .header("Range", "bytes=100-")
        .send()
        .await
        .expect("range request");
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */100");
    node.stop().await;
    assert!(
        !files_under(&node.store_root())
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".part")),
        "temporary files left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_under_concurrency_and_across_restart() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let mut node = TestNode::start(config.clone()).await;
    upload_many(&node, 2500, 32).await;
    let root = node.store_root();
    let counts = |seq| {
        std::fs::read_dir(hour_dir(&root, seq))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(
        (counts(0), counts(1), counts(2), counts(3)),
        (1000, 1000, 500, 0)
    );
    node.stop().await;

    // A new node resumes the count from the file server.
    let mut node = TestNode::start(config).await;
    upload_many(&node, 600, 16).await;
    assert_eq!(
        (counts(0), counts(1), counts(2), counts(3), counts(4)),
        (1000, 1000, 1000, 100, 0)
    );
    node.stop().await;
    let rows = aft_rows(&rig.pg.url(), None).await;
    assert_eq!(rows.len(), 3100, "one Post row per upload");
    // An hour with no transfers has no directory.
    assert!(!root.join("files/im/20261203/18").exists());
    assert!(!root.join("files/groupchat").exists());
    assert_eq!(pinned_hour().format("%H").to_string(), "17");
}

async fn upload_many(node: &TestNode, count: usize, concurrency: usize) {
    use futures_util::StreamExt;
    let results: Vec<u16> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let body = format!("file number {i}").into_bytes();
            node.upload(&format!("n{i}.txt"), body)
                .await
                .status()
                .as_u16()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed: Vec<_> = results.iter().filter(|s| **s != 201).collect();
    assert!(
        failed.is_empty(),
        "{} uploads failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_boundary_leaves_nothing() {
    let rig = rig();
    let mut config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    config.transfer.max_file_size = 100_000;
    let mut node = TestNode::start(config).await;

    let up = node.upload_ok("exact.bin", test_bytes(100_000, 3)).await;
    assert_eq!(up.size, 100_000);

    // One byte more, announced by Content-Length: refused before the body is read.
    let resp = node.upload("over.bin", test_bytes(100_001, 4)).await;
    assert_eq!(resp.status(), 413);

    // One byte more, chunked with no announced size: refused while streaming.
    let ticket = node.upload_ticket("over-chunked.bin", None);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(test_bytes(60_000, 5)), Ok(test_bytes(40_001, 6))];
    let resp = node
        .client
        .post(format!("{}/files", node.base_url()))
        .bearer_auth(ticket)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => panic!("chunked over-limit upload got no answer: {e}"),
    }
    // A ticket announcing more than the limit.
    let ticket = node.upload_ticket("big.bin", Some(100_001));
    let resp = node
        .client
        .post(format!("{}/files", node.base_url()))
        .bearer_auth(ticket)
        .body(vec![0u8; 10])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    // A ticket announcing bytes but a request with no length and no chunked framing.
    let ticket = node.upload_ticket("nolength.bin", Some(10));
    let reply = raw_request(
        node.addr(),
        format!(
            "POST /files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 411"), "{reply}");
    node.stop().await;

    let files = files_under(&node.store_root());
    assert_eq!(
        files.len(),
        1,
        "only the exact-limit file may remain: {files:?}"
    );
    assert_eq!(aft_rows(&rig.pg.url(), None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limit_is_four_gib() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    assert_eq!(config.transfer.max_file_size, 0);
    assert_eq!(config.transfer.effective_max_file_size(), 4_294_967_296);
    let mut node = TestNode::start(config).await;
    // Content-Length of 4 GiB + 1 is refused at once; the body is never sent.
    let ticket = node.upload_ticket("huge.bin", None);
    let reply = raw_request(
        node.addr(),
        format!(
            "POST /files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\n\
             Content-Length: 4294967297\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // Exactly 4 GiB announced is admitted: the node waits for the body instead of refusing.
    let ticket = node.upload_ticket("huge.bin", Some(4_294_967_296));
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    write!(
        s,
        "POST /files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\n\
         Content-Length: 4294967296\r\n\r\n"
    )
    .expect("write");
    s.write_all(&[0u8; 1000]).expect("write body start");
    let mut buf = [0u8; 64];
    let early = s.read(&mut buf);
    assert!(
        early.is_err(),
        "the node answered before the 4 GiB body arrived: {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n]).to_string())
    );
    drop(s); // client gone mid-upload
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop().await;
    assert_eq!(
        files_under(&node.store_root()),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(aft_rows(&rig.pg.url(), None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_names_round_trip() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let mut node = TestNode::start(config).await;
    let nfc: String = "Café résumé.txt".nfc().collect();
    let nfd: String = "Café résumé.txt".nfd().collect();
    assert_ne!(nfc, nfd);
    let names = [
        nfc.clone(),
        nfd.clone(),
        "会议记录 第三季度.docx".to_string(),
        "🎉 party 🥳.png".to_string(),
        "a/b\\c \"quoted\".txt".to_string(),
    ];
    let mut resources = Vec::new();
    for name in &names {
        let up = node.upload_ok(name, name.as_bytes().to_vec()).await;
        let resp = node.download(&up.uri, "bob@example.com").await;
        assert_eq!(resp.status(), 200, "{name}");
        let cd = resp.headers()["content-disposition"]
            .to_str()
            .expect("ASCII header")
            .to_string();
        let encoded = cd
            .split("filename*=UTF-8''")
            .nth(1)
            .expect("filename* present");
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .expect("UTF-8");
        assert_eq!(&decoded, name, "Content-Disposition of {name}");
        assert!(cd.is_ascii());
        let body = resp.bytes().await.expect("body");
        assert_eq!(&body[..], name.as_bytes());
        resources.push(up.resource);
    }
    node.stop().await;
    for (name, res) in names.iter().zip(&resources) {
        let rows = aft_rows(&rig.pg.url(), Some(res)).await;
        assert_eq!(rows.len(), 2);
        for row in rows {
            assert_eq!(&row.real_filename, name, "byte-exact name in AFT_LOG");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_and_bad_tickets_refused() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let mut node = TestNode::start(config).await;
    // A file outside the node directory that tricks would try to reach.
    let outside = rig
        .sshd
        .root_dir()
        .parent()
        .expect("parent")
        .join("secret.txt");
    std::fs::write(&outside, b"top secret").expect("sentinel");
    let up = node.upload_ok("ok.txt", b"fine".to_vec()).await;
    let base = format!("{}/files/node1/im/20261203/17", node.base_url());
    let good = &up.resource;
    let tricks = [
        format!("{base}/../../../../secret.txt/x"),
        format!("{base}/%2e%2e/%2e%2e/secret.txt/x"),
        format!("{base}/{good}%2f..%2f..%2fsecret.txt/x"),
        format!("{base}/..%2f..%2f..%2f..%2fsecret.txt/x"),
        format!("{base}/{good}%00/x"),
        format!("{base}/{good}/x%00.txt"),
        format!("{}/files/node1/im/20261203/17/{good}", node.base_url()),
        format!("{}/files/node1/im/20261203/17/{good}/a/b", node.base_url()),
        format!("{}/files/node2/im/20261203/17/{good}/x", node.base_url()),
        format!("{}/files/node1/im/../../../x/17/{good}/x", node.base_url()),
        format!("{}/files/node1/im/20261203/17.0/{good}/x", node.base_url()),
        format!("{}/files/node1/other/20261203/17/{good}/x", node.base_url()),
        format!("{base}/AAAAAAAAAAAAAAAAAAAAAAAA/x"),
    ];
    for uri in &tricks {
        let resp = node
            .client
            .get(uri)
            .bearer_auth(node.download_ticket("bob@example.com"))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 404, "{uri} gave {status}");
        let body = resp.bytes().await.expect("body");
        assert!(
            !body.windows(10).any(|w| w == b"top secret"),
            "{uri} leaked"
        );
    }
    // The good URI still works; the sentinel is untouched.
    assert_eq!(
        node.download(&up.uri, "bob@example.com").await.status(),
        200
    );
    assert_eq!(std::fs::read(&outside).expect("sentinel"), b"top secret");

    // Tickets.
    let forged = mft::ticket::TicketAuthority::new(b"some-other-secret-of-enough-length", &[])
        .expect("authority")
        .mint_download("bob@example.com", None, 600)
        .expect("mint");
    let expired = node
        .tickets
        .sign_raw(&serde_json::json!({
            "kind": "download", "sub": "bob@example.com",
            "exp": mft::ticket::unix_now() - 3600
        }))
        .expect("sign");
    let upload_kind = node.upload_ticket("x", None);
    let bound_elsewhere = node
        .tickets
        .mint_download("bob@example.com", Some("AAAAAAAAAAAAAAAAAAAAAAAA"), 600)
        .expect("mint");
    for (ticket, want) in [
        (forged.as_str(), 403),
        (expired.as_str(), 401),
        (upload_kind.as_str(), 403),
        (bound_elsewhere.as_str(), 403),
        ("garbage", 401),
    ] {
        let resp = node
            .client
            .get(&up.uri)
            .bearer_auth(ticket)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), want, "download with {ticket:.20}");
    }
    let resp = node.client.get(&up.uri).send().await.expect("request");
    assert_eq!(resp.status(), 401, "no ticket");
    // Uploads with a download ticket, a forged or an expired ticket.
    let forged_up = mft::ticket::TicketAuthority::new(b"some-other-secret-of-enough-length", &[])
        .expect("authority")
        .mint_upload("a@x", "b@x", mft::layout::ChatType::Im, "f", None, 600)
        .expect("mint");
    for (ticket, want) in [
        (node.download_ticket("bob@example.com"), 403),
        (forged_up, 403),
        (expired.clone(), 401),
    ] {
        let resp = node
            .client
            .post(format!("{}/files", node.base_url()))
            .bearer_auth(ticket)
            .body(b"data".to_vec())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), want);
    }
    node.stop().await;
    assert_eq!(files_under(&node.store_root()).len(), 1);
    assert_eq!(aft_rows(&rig.pg.url(), Some(good)).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_and_dead_database_leave_nothing() {
    let mut rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let mut node = TestNode::start(config).await;

    // A client killed mid-upload.
    let ticket = node.upload_ticket("partial.bin", Some(1_000_000));
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    write!(
        s,
        "POST /files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\nContent-Length: 1000000\r\n\r\n"
    )
    .expect("headers");
    s.write_all(&test_bytes(300_000, 9)).expect("partial body");
    s.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        files_under(&node.store_root()),
        Vec::<std::path::PathBuf>::new(),
        "nothing under a final or temporary name"
    );

    // The database goes away: the upload is refused with 503 and leaves no file.
    rig.pg.stop();
    let resp = node.upload("nodb.bin", test_bytes(50_000, 10)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.expect("body");
    assert!(
        !body.to_lowercase().contains("postgres"),
        "backend named: {body}"
    );
    assert_eq!(
        files_under(&node.store_root()),
        Vec::<std::path::PathBuf>::new()
    );
    rig.pg.start_again();
    // Back up: uploads work again, and the refused upload never shows up as a row.
    let up = node.upload_ok("after.bin", test_bytes(10, 11)).await;
    node.stop().await;
    let rows = aft_rows(&rig.pg.url(), None).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].filename, up.resource);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_logs_fewer_bytes() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let mut node = TestNode::start(config).await;
    let up = node.upload_ok("big.bin", test_bytes(8_000_000, 12)).await;
    let ticket = node.download_ticket("dave@example.com");
    let path = up
        .uri
        .strip_prefix(&node.base_url())
        .expect("uri under base")
        .to_string();
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\n\r\n"
    )
    .expect("request");
    let mut buf = vec![0u8; 100_000];
    let mut got = 0;
    while got < 100_000 {
        let n = s.read(&mut buf[got..]).expect("read");
        assert!(n > 0, "connection closed early");
        got += n;
    }
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop().await;
    let rows = aft_rows(&rig.pg.url(), Some(&up.resource)).await;
    let get = rows.iter().find(|r| r.method == "Get").expect("a Get row");
    assert_eq!(get.jid, "dave@example.com");
    assert_eq!(get.file_size, 8_000_000);
    assert!(
        get.bytes_transferred > 0 && get.bytes_transferred < 8_000_000,
        "bytes_transferred {}",
        get.bytes_transferred
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused() {
    let rig = rig();
    let mut config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    config.file_server.public_key = rig.sshd.wrong_host_key_line();
    let mut node = TestNode::start(config).await;
    let resp = node.upload("x.bin", b"data".to_vec()).await;
    assert_eq!(resp.status(), 503);
    let status: serde_json::Value = node
        .client
        .get(format!("{}/status", node.base_url()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    let err = status["file_server"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("host key"), "{status}");
    assert!(err.contains("SHA256:"), "fingerprints shown: {err}");
    node.stop().await;
    assert_eq!(
        files_under(&rig.sshd.root_dir()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_temporary_files_are_swept_at_start() {
    let rig = rig();
    let config = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    let hour = hour_dir(&rig.sshd.root_dir(), 1);
    std::fs::create_dir_all(&hour).expect("hour dir");
    std::fs::write(hour.join(".AAAAAAAAAAAAAAAAAAAAAAAA.part"), b"cut off").expect("part");
    std::fs::write(hour.join("BBBBBBBBBBBBBBBBBBBBBBBB"), b"complete").expect("final");
    let mut node = TestNode::start(config).await;
    assert!(!hour.join(".AAAAAAAAAAAAAAAAAAAAAAAA.part").exists());
    assert_eq!(
        std::fs::read(hour.join("BBBBBBBBBBBBBBBBBBBBBBBB")).expect("final kept"),
        b"complete"
    );
    // The count resumes past the existing file in `17.1`.
    let up = node.upload_ok("next.txt", b"n".to_vec()).await;
    assert!(up.uri.contains("/20261203/17.1/"), "{}", up.uri);
    node.stop().await;
}
