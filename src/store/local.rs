//! The local directory store: the embedded default backend.
//!
//! Same layout and the same rules as the SFTP backend: uploads go to `.<name>.part` in the
//! target directory, are synced, then renamed into place; a dropped upload removes its
//! temporary file. Free space comes from `statvfs(3)` of the directory.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    ByteStream, DirEntry, FileStore, SpaceInfo, StoreError, UploadSink, check_relative, temp_name,
};

/// Bytes per read when streaming a download.
const READ_CHUNK: usize = 256 * 1024;

pub struct LocalStore {
    root: PathBuf,
    name: String,
}

impl LocalStore {
    /// A store rooted at `root` (created when missing); `name` goes into `AFT_LOG.file_server`.
    pub fn new(root: &Path, name: &str) -> Result<LocalStore, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let root = root.canonicalize().map_err(|e| io_error(root, e))?;
        Ok(LocalStore {
            root,
            name: name.to_string(),
        })
    }

    fn path(&self, rel: &str) -> Result<PathBuf, StoreError> {
        check_relative(rel)?;
        Ok(self.root.join(rel))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(path.display().to_string()),
        std::io::ErrorKind::StorageFull => StoreError::NoSpace(path.display().to_string()),
        _ => StoreError::Io(format!("{}: {e}", path.display())),
    }
}

#[async_trait]
impl FileStore for LocalStore {
    fn server_name(&self) -> &str {
        &self.name
    }

    fn absolute_path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    async fn list_dir(&self, rel: &str) -> Result<Vec<DirEntry>, StoreError> {
        let dir = self.path(rel)?;
        let mut read = match fs::read_dir(&dir).await {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = read.next_entry().await.map_err(|e| io_error(&dir, e))? {
            let is_dir = entry
                .file_type()
                .await
                .map(|t| t.is_dir())
                .map_err(|e| io_error(&dir, e))?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir,
            });
        }
        Ok(out)
    }

    async fn create_upload(
        &self,
        rel_dir: &str,
        name: &str,
    ) -> Result<Box<dyn UploadSink>, StoreError> {
        let dir = self.path(rel_dir)?;
        let final_path = self.path(&format!("{rel_dir}/{name}"))?;
        let temp_path = dir.join(temp_name(name));
        fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error(&dir, e))?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .await
            .map_err(|e| io_error(&temp_path, e))?;
        Ok(Box::new(LocalUpload {
            file: Some(file),
            temp_path,
            final_path,
            written: 0,
        }))
    }

    async fn size_of(&self, rel: &str) -> Result<u64, StoreError> {
        let path = self.path(rel)?;
        let meta = fs::metadata(&path).await.map_err(|e| io_error(&path, e))?;
        if !meta.is_file() {
            return Err(StoreError::NotFound(path.display().to_string()));
        }
        Ok(meta.len())
    }

    async fn read_range(&self, rel: &str, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        let path = self.path(rel)?;
        let mut file = fs::File::open(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| io_error(&path, e))?;
        let stream = futures_util::stream::try_unfold(
            (file, len, path),
            |(mut file, remaining, path)| async move {
                if remaining == 0 {
                    return Ok(None);
                }
                let want = remaining.min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                let n = file.read(&mut buf).await.map_err(|e| io_error(&path, e))?;
                if n == 0 {
                    return Err(StoreError::Io(format!(
                        "{}: file ended {remaining} bytes early",
                        path.display()
                    )));
                }
                buf.truncate(n);
                Ok(Some((Bytes::from(buf), (file, remaining - n as u64, path))))
            },
        );
        Ok(Box::pin(stream))
    }

    async fn remove(&self, rel: &str) -> Result<(), StoreError> {
        let path = self.path(rel)?;
        fs::remove_file(&path).await.map_err(|e| io_error(&path, e))
    }

    async fn space(&self) -> Result<SpaceInfo, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || statvfs(&root))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    async fn check(&self) -> Result<(), StoreError> {
        fs::create_dir_all(&self.root)
            .await
            .map_err(|e| io_error(&self.root, e))?;
        let probe = self.root.join(".mft-probe");
        fs::write(&probe, b"probe")
            .await
            .map_err(|e| io_error(&probe, e))?;
        fs::remove_file(&probe)
            .await
            .map_err(|e| io_error(&probe, e))
    }
}

fn statvfs(path: &Path) -> Result<SpaceInfo, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StoreError::InvalidPath(path.display().to_string()))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and st a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io_error(path, std::io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as u64;
    Ok(SpaceInfo {
        total_bytes: st.f_blocks as u64 * frsize,
        free_bytes: st.f_bavail as u64 * frsize,
    })
}

struct LocalUpload {
    file: Option<fs::File>,
    temp_path: PathBuf,
    final_path: PathBuf,
    written: u64,
}

#[async_trait]
impl UploadSink for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Io("upload already finished".into()))?;
        file.write_all(&data)
            .await
            .map_err(|e| io_error(&self.temp_path, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, StoreError> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| StoreError::Io("upload already finished".into()))?;
        let result = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            fs::rename(&self.temp_path, &self.final_path).await
        }
        .await;
        match result {
            Ok(()) => Ok(self.written),
            Err(e) => {
                let _ = fs::remove_file(&self.temp_path).await;
                Err(io_error(&self.temp_path, e))
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.temp_path).await;
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Neither committed nor aborted (the request was cancelled): remove the remains.
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}
