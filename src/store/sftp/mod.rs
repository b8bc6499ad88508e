//! SFTP file store: the production [`FileStore`] backend, an external OpenSSH server reached
//! over a pool of SSH connections.
//!
//! Layout:
//! - [`keys`]: node key generation and loading, the pinned host key, `keyscan`.
//! - `pool`: connecting (host key pinning, authentication, tuned transport) and the pool.
//! - [`pipeline`]: cutting body frames into chunks and keeping WRITEs in flight, apart from
//!   the pool (public for the benches, which drive it over an in-process session).
//! - `upload`: the [`UploadSink`] on a pooled connection (temp file, one fsync, posix-rename).
//! - `download`: the pipelined READ stream.
//! - `error`: SFTP status codes to [`StoreError`].

mod download;
mod error;
pub mod keys;
pub mod pipeline;
mod pool;
mod upload;

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

pub use keys::{KeyType, keygen, keyscan};

use self::error::{is_retryable, map_sftp};
use self::pool::{ConnectSettings, Lease, Pool, build_pool};
use crate::config::FileServerConfig;
use crate::store::{
    ByteStream, DirEntry, FileStore, SpaceInfo, StoreError, UploadSink, check_relative, temp_name,
};

/// Directories remembered as existing; the cache is cleared beyond this many.
const KNOWN_DIRS_MAX: usize = 10_000;

/// The SFTP backend. Cheap to share behind an `Arc`. Every operation leases a share of a
/// pooled connection; uploads and downloads hold their share until they end, and many of
/// them multiplex one connection (see [`pool::Pool`]).
pub struct SftpStore {
    host: String,
    /// Node directory on the server, absolute, without trailing slash (`/` stays `/`).
    directory: String,
    pool: Pool,
    chunk_size: usize,
    pipeline_depth: usize,
    /// Directories known to exist, so uploads skip the mkdir round trips.
    known_dirs: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpStore")
            .field("host", &self.host)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl SftpStore {
    /// Loads the node key from `key_file`, parses the pinned host key, and sets up the pool
    /// (connections open on first use).
    pub fn new(cfg: &FileServerConfig, key_file: &Path) -> Result<SftpStore, StoreError> {
        let key = keys::load_node_key(key_file)?;
        let pinned = keys::parse_pinned_key(&cfg.public_key)?;
        if !cfg.directory.starts_with('/') {
            return Err(StoreError::InvalidPath(format!(
                "file_server.directory must be absolute: {}",
                cfg.directory
            )));
        }
        let directory = match cfg.directory.trim_end_matches('/') {
            "" => "/".to_string(),
            d => d.to_string(),
        };
        let settings = Arc::new(ConnectSettings {
            host: cfg.host.clone(),
            port: cfg.port,
            user: cfg.user.clone(),
            key: Arc::new(key),
            ssh: Arc::new(ConnectSettings::ssh_config(&pinned)),
            pinned,
            connect_timeout: Duration::from_secs(cfg.connect_timeout_s.max(1)),
            request_timeout: Duration::from_secs(cfg.request_timeout_s.max(1)),
            directory: directory.clone(),
        });
        let pool = build_pool(settings, cfg.pool_size.max(1))?;
        Ok(SftpStore {
            host: cfg.host.clone(),
            directory,
            pool,
            chunk_size: cfg.chunk_size.max(1024),
            pipeline_depth: cfg.pipeline_depth.max(1),
            known_dirs: Mutex::new(HashSet::new()),
        })
    }

    /// Open connections to the file server without and with transfers on them:
    /// `(idle, busy)`. A busy connection may carry any number of transfers.
    pub fn connections(&self) -> (usize, usize) {
        self.pool.counts()
    }

    fn abs(&self, rel: &str) -> String {
        if self.directory == "/" {
            format!("/{rel}")
        } else {
            format!("{}/{rel}", self.directory)
        }
    }

    /// Runs `op` on a pooled session; if it fails because the session was dead, runs it once
    /// more on a fresh connection. Only for operations that are safe to repeat.
    async fn with_session<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<RawSftpSession>) -> Fut,
        Fut: Future<Output = Result<T, SftpError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lease = Lease::get(&self.pool).await?;
            let conn = lease.conn();
            let result = op(conn.sftp.clone()).await;
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let (err, dead) = map_sftp(e, what);
                    if dead {
                        conn.mark_broken();
                    }
                    if attempt == 1 && is_retryable(&err, dead) {
                        tracing::debug!(error = %err, "Retrying on a fresh file server connection");
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    fn is_known_dir(&self, abs: &str) -> bool {
        self.known_dirs.lock().is_ok_and(|d| d.contains(abs))
    }

    fn remember_dir(&self, abs: &str) {
        if let Ok(mut dirs) = self.known_dirs.lock() {
            if dirs.len() >= KNOWN_DIRS_MAX {
                dirs.clear();
            }
            dirs.insert(abs.to_string());
        }
    }

    /// `mkdir -p` of the absolute path `abs` on `sftp`.
    async fn mkdir_p(&self, sftp: &RawSftpSession, abs: &str) -> Result<(), SftpError> {
        if abs == "/" || self.is_known_dir(abs) {
            return Ok(());
        }
        // Fast path: the parent usually exists already.
        let mut missing = Vec::new();
        let mut cur = abs.to_string();
        loop {
            match sftp.mkdir(cur.clone(), FileAttributes::empty()).await {
                Ok(_) => break,
                Err(e) => {
                    if is_dir(sftp, &cur).await? {
                        break;
                    }
                    match e {
                        SftpError::Status(ref s) if s.status_code == StatusCode::NoSuchFile => {}
                        // Some servers answer Failure for a missing parent too.
                        SftpError::Status(ref s) if s.status_code == StatusCode::Failure => {}
                        e => return Err(e),
                    }
                    match cur.rfind('/') {
                        Some(i) if i > 0 => {
                            missing.push(cur.clone());
                            cur.truncate(i);
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
        while let Some(dir) = missing.pop() {
            if let Err(e) = sftp.mkdir(dir.clone(), FileAttributes::empty()).await
                && !is_dir(sftp, &dir).await?
            {
                return Err(e);
            }
        }
        self.remember_dir(abs);
        Ok(())
    }

    async fn open_upload(
        &self,
        rel_dir: &str,
        name: &str,
    ) -> Result<(Lease, String, String, String), StoreError> {
        let dir = self.abs(rel_dir);
        let temp = format!("{dir}/{}", temp_name(name));
        let final_path = format!("{dir}/{name}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lease = Lease::get(&self.pool).await?;
            let conn = lease.conn();
            let sftp = conn.sftp.clone();
            let opened = async {
                self.mkdir_p(&sftp, &dir).await?;
                let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
                sftp.open(temp.clone(), flags, FileAttributes::empty())
                    .await
            }
            .await;
            match opened {
                Ok(h) => return Ok((lease, h.handle, temp, final_path)),
                Err(e) => {
                    let (err, dead) = map_sftp(e, &temp);
                    if dead {
                        conn.mark_broken();
                    }
                    if attempt == 1 && is_retryable(&err, dead) {
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }
}

async fn is_dir(sftp: &RawSftpSession, abs: &str) -> Result<bool, SftpError> {
    match sftp.stat(abs.to_string()).await {
        Ok(a) => Ok(a.attrs.is_dir()),
        Err(SftpError::Status(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn status_is(e: &SftpError, code: StatusCode) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == code)
}

#[async_trait]
impl FileStore for SftpStore {
    fn server_name(&self) -> &str {
        &self.host
    }

    fn absolute_path(&self, rel: &str) -> String {
        self.abs(rel)
    }

    async fn list_dir(&self, rel: &str) -> Result<Vec<DirEntry>, StoreError> {
        check_relative(rel)?;
        let path = self.abs(rel);
        self.with_session(&path, |sftp| {
            let path = path.clone();
            async move {
                let handle = match sftp.opendir(path).await {
                    Ok(h) => h.handle,
                    Err(e) if status_is(&e, StatusCode::NoSuchFile) => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut entries = Vec::new();
                let listed = loop {
                    match sftp.readdir(handle.clone()).await {
                        Ok(name) => {
                            for f in name.files {
                                if f.filename == "." || f.filename == ".." {
                                    continue;
                                }
                                entries.push(DirEntry {
                                    is_dir: f.attrs.is_dir(),
                                    name: f.filename,
                                });
                            }
                        }
                        Err(e) if status_is(&e, StatusCode::Eof) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                let _ = sftp.close(handle).await;
                listed.map(|()| entries)
            }
        })
        .await
    }

    async fn create_upload(
        &self,
        rel_dir: &str,
        name: &str,
    ) -> Result<Box<dyn UploadSink>, StoreError> {
        check_relative(rel_dir)?;
        check_relative(name)?;
        if name.contains('/') {
            return Err(StoreError::InvalidPath(name.to_string()));
        }
        let (lease, handle, temp, final_path) = self.open_upload(rel_dir, name).await?;
        let mut chunk = self.chunk_size;
        if let Some(max) = lease.conn().max_write {
            chunk = chunk.min(max);
        }
        Ok(Box::new(upload::SftpUpload::new(
            lease,
            handle,
            temp,
            final_path,
            chunk.max(1),
            self.pipeline_depth,
        )))
    }

    async fn size_of(&self, rel: &str) -> Result<u64, StoreError> {
        check_relative(rel)?;
        let path = self.abs(rel);
        let attrs = self
            .with_session(&path, |sftp| {
                let path = path.clone();
                async move { sftp.stat(path).await }
            })
            .await?;
        if attrs.attrs.is_dir() {
            return Err(StoreError::NotFound(format!("{path} is a directory")));
        }
        attrs
            .attrs
            .size
            .ok_or_else(|| StoreError::Io(format!("{path}: the server did not say its size")))
    }

    async fn read_range(&self, rel: &str, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        check_relative(rel)?;
        let path = self.abs(rel);
        let mut attempt = 0;
        let (lease, handle) = loop {
            attempt += 1;
            let lease = Lease::get(&self.pool).await?;
            let opened = lease
                .conn()
                .sftp
                .open(path.clone(), OpenFlags::READ, FileAttributes::empty())
                .await;
            match opened {
                Ok(h) => break (lease, h.handle),
                Err(e) => {
                    let (err, dead) = map_sftp(e, &path);
                    if dead {
                        lease.conn().mark_broken();
                    }
                    if attempt == 1 && is_retryable(&err, dead) {
                        continue;
                    }
                    return Err(err);
                }
            }
        };
        let mut chunk = self.chunk_size;
        if let Some(max) = lease.conn().max_read {
            chunk = chunk.min(max);
        }
        let chunk = u32::try_from(chunk).unwrap_or(u32::MAX);
        let sftp = lease.conn().sftp.clone();
        Ok(Box::pin(download::SftpRead::new(
            Some(lease),
            sftp,
            handle,
            path,
            (start, len),
            (chunk, self.pipeline_depth),
        )))
    }

    async fn remove(&self, rel: &str) -> Result<(), StoreError> {
        check_relative(rel)?;
        let path = self.abs(rel);
        self.with_session(&path, |sftp| {
            let path = path.clone();
            async move { sftp.remove(path).await.map(|_| ()) }
        })
        .await
    }

    async fn space(&self) -> Result<SpaceInfo, StoreError> {
        let dir = self.directory.clone();
        let vfs = self
            .with_session(&dir, |sftp| {
                let dir = dir.clone();
                async move { sftp.statvfs(dir).await }
            })
            .await?;
        let unit = if vfs.fragment_size > 0 {
            vfs.fragment_size
        } else {
            vfs.block_size
        };
        Ok(SpaceInfo {
            total_bytes: vfs.blocks.saturating_mul(unit),
            free_bytes: vfs.blocks_avail.saturating_mul(unit),
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        let dir = self.directory.clone();
        let probe = format!(
            "{}/.mft-probe-{:016x}",
            if dir == "/" { "" } else { dir.as_str() },
            rand::random::<u64>()
        );
        self.with_session(&dir, |sftp| {
            let (dir, probe) = (dir.clone(), probe.clone());
            async move {
                self.mkdir_p(&sftp, &dir).await?;
                let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
                let h = sftp
                    .open(probe.clone(), flags, FileAttributes::empty())
                    .await?
                    .handle;
                let written = sftp.write(h.clone(), 0, b"mft probe\n".to_vec()).await;
                let closed = sftp.close(h).await;
                let removed = sftp.remove(probe).await;
                written?;
                closed?;
                removed?;
                Ok(())
            }
        })
        .await
    }
}
