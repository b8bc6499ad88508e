//! An in-process mft node for integration tests, wired to real backends: either OpenSSH `sshd`
//! and PostgreSQL (the production pairing) or the local directory + SQLite (the embedded
//! default). Offers ticket minting, an HTTP client, and `AFT_LOG` row queries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use mft::config::{Config, FileServerKind};
use mft::layout::{ChatType, FixedClock};
use mft::node::{NodeOptions, RunningNode};
use mft::ticket::TicketAuthority;
use sqlx::Row;

use super::postgres::Postgres;
use super::sshd::Sshd;

pub const SECRET: &str = "integration-test-secret-0123456789";

/// The hour tests pin the layout clock to.
pub fn pinned_hour() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 17, 30, 0)
        .single()
        .expect("valid pinned time")
}

/// Configuration for a node on sshd + PostgreSQL.
pub fn sftp_postgres_config(sshd: &Sshd, pg: &Postgres, data_dir: &Path) -> Config {
    let mut c = base_config(data_dir);
    c.file_server = sshd.file_server_config();
    c.node.key_file = sshd.node_key_path();
    c.database.url = pg.url();
    c
}

/// Configuration for a node on the local directory store + SQLite.
pub fn local_sqlite_config(data_dir: &Path) -> Config {
    let mut c = base_config(data_dir);
    c.file_server.kind = FileServerKind::Local;
    c.file_server.directory = data_dir.join("store").display().to_string();
    c.database.url = format!("sqlite://{}", data_dir.join("aft_log.db").display());
    c
}

fn base_config(data_dir: &Path) -> Config {
    let mut c = Config::default();
    c.node.listen = "127.0.0.1:0".into();
    c.node.public_url = "http://127.0.0.1:0".into();
    c.node.data_dir = data_dir.to_path_buf();
    c.node.shutdown_grace_s = 5;
    c.auth.ticket_secret = Some(SECRET.into());
    c.database.commit_timeout_s = 3;
    c
}

pub struct TestNode {
    pub node: Option<RunningNode>,
    pub config: Config,
    pub tickets: TicketAuthority,
    pub client: reqwest::Client,
    pub clock: Arc<FixedClock>,
}

impl TestNode {
    /// Starts a node with the layout clock pinned to [`pinned_hour`].
    pub async fn start(config: Config) -> TestNode {
        Self::start_at(config, pinned_hour()).await
    }

    pub async fn start_at(config: Config, at: DateTime<Utc>) -> TestNode {
        let clock = Arc::new(FixedClock::new(at));
        let opts = NodeOptions {
            clock: Some(clock.clone()),
        };
        let node = mft::node::start(config.clone(), opts)
            .await
            .expect("starting the node");
        TestNode {
            node: Some(node),
            config,
            tickets: TicketAuthority::new(SECRET.as_bytes(), &[]).expect("ticket authority"),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("HTTP client"),
            clock,
        }
    }

    pub fn base_url(&self) -> String {
        self.node
            .as_ref()
            .expect("node running")
            .base_url()
            .to_string()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.node.as_ref().expect("node running").local_addr()
    }

    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    pub fn upload_ticket(&self, name: &str, size: Option<u64>) -> String {
        self.tickets
            .mint_upload(
                "alice@example.com",
                "bob@example.com",
                ChatType::Im,
                name,
                size,
                600,
            )
            .expect("minting an upload ticket")
    }

    pub fn download_ticket(&self, who: &str) -> String {
        self.tickets
            .mint_download(who, None, 600)
            .expect("minting a download ticket")
    }

    /// Uploads `body` as `name` with a ticket carrying its size.
    pub async fn upload(&self, name: &str, body: Vec<u8>) -> reqwest::Response {
        let ticket = self.upload_ticket(name, Some(body.len() as u64));
        self.client
            .post(format!("{}/files", self.base_url()))
            .bearer_auth(ticket)
            .body(body)
            .send()
            .await
            .expect("sending the upload")
    }

    /// Uploads and returns the parsed 201 JSON body (panics otherwise).
    pub async fn upload_ok(&self, name: &str, body: Vec<u8>) -> Uploaded {
        let resp = self.upload(name, body).await;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.expect("upload response body");
        assert_eq!(status, 201, "upload failed: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).expect("upload JSON");
        let uploaded = Uploaded {
            uri: json["uri"].as_str().expect("uri").to_string(),
            resource: json["resource"].as_str().expect("resource").to_string(),
            size: json["size"].as_u64().expect("size"),
            sha256: json["sha256"].as_str().expect("sha256").to_string(),
        };
        assert_eq!(location.as_deref(), Some(uploaded.uri.as_str()));
        uploaded
    }

    pub async fn download(&self, uri: &str, who: &str) -> reqwest::Response {
        self.client
            .get(uri)
            .bearer_auth(self.download_ticket(who))
            .send()
            .await
            .expect("sending the download")
    }

    /// The node directory on the file server, as a local path (sshd runs on this machine).
    pub fn store_root(&self) -> PathBuf {
        PathBuf::from(&self.config.file_server.directory)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if self.node.is_some() {
            eprintln!("TestNode dropped without stop(); the runtime ends it");
        }
    }
}

#[derive(Debug, Clone)]
pub struct Uploaded {
    pub uri: String,
    pub resource: String,
    pub size: u64,
    pub sha256: String,
}

/// One `AFT_LOG` row, every column.
#[derive(Debug, Clone, PartialEq)]
pub struct AftRow {
    pub aft_index: i64,
    pub jid: String,
    pub to_jid: String,
    pub method: String,
    pub filename: String,
    pub real_filename: String,
    pub file_type: String,
    pub chat_type: String,
    pub file_server: String,
    pub file_path: String,
    pub file_size: i64,
    pub bytes_transferred: i64,
    pub timestamp: String,
}

/// Rows whose `filename` is `resource` (all rows when `None`), ordered by aft_index.
pub async fn aft_rows(db_url: &str, resource: Option<&str>) -> Vec<AftRow> {
    let where_clause = if resource.is_some() {
        " WHERE filename = $1"
    } else {
        ""
    };
    if db_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(db_url)
            .await
            .expect("connecting to SQLite");
        let sql = format!(
            "SELECT aft_index, jid, to_jid, method, filename, real_filename, file_type, chat_type, \
             file_server, file_path, file_size, bytes_transferred, CAST(timestampvalue AS TEXT) \
             FROM aft_log{where_clause} ORDER BY aft_index"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(r) = resource {
            q = q.bind(r.to_string());
        }
        let rows = q.fetch_all(&pool).await.expect("querying AFT_LOG");
        pool.close().await;
        rows.iter().map(row_from_sqlite).collect()
    } else {
        let pool = sqlx::PgPool::connect(db_url)
            .await
            .expect("connecting to PostgreSQL");
        let sql = format!(
            "SELECT aft_index, jid, to_jid, method, filename, real_filename, file_type, chat_type, \
             file_server, file_path, file_size, bytes_transferred, \
             to_char(timestampvalue, 'YYYY-MM-DD HH24:MI:SS.US') \
             FROM aft_log{where_clause} ORDER BY aft_index"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(r) = resource {
            q = q.bind(r.to_string());
        }
        let rows = q.fetch_all(&pool).await.expect("querying AFT_LOG");
        pool.close().await;
        rows.iter().map(row_from_pg).collect()
    }
}

macro_rules! row_reader {
    ($name:ident, $row:ty) => {
        fn $name(r: &$row) -> AftRow {
            AftRow {
                aft_index: r.get(0),
                jid: r.get(1),
                to_jid: r.get(2),
                method: r.get(3),
                filename: r.get(4),
                real_filename: r.get(5),
                file_type: r.get(6),
                chat_type: r.get(7),
                file_server: r.get(8),
                file_path: r.get(9),
                file_size: r.get(10),
                bytes_transferred: r.get(11),
                timestamp: r.get(12),
            }
        }
    };
}
row_reader!(row_from_sqlite, sqlx::sqlite::SqliteRow);
row_reader!(row_from_pg, sqlx::postgres::PgRow);

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every regular file under `dir`, recursively, relative paths.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// An sshd, a PostgreSQL and a data directory for one test: the production pairing.
pub struct Rig {
    pub sshd: Sshd,
    pub pg: Postgres,
    pub data: tempfile::TempDir,
}

pub fn rig() -> Rig {
    Rig {
        sshd: Sshd::start(),
        pg: Postgres::start(),
        data: tempfile::tempdir().expect("temp data dir"),
    }
}

/// Sends a raw HTTP request and returns everything the node answers (10 s at most).
pub fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}
