//! The spool: rows that could not be written before shutdown, kept in
//! `<spool_dir>/aftlog-spool.jsonl` (one JSON [`AftRecord`] per line, fsynced) and replayed by
//! the next start. Replays are idempotent (`ON CONFLICT DO NOTHING` on the node-made id), so a
//! row spooled twice or replayed twice is still written once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::record::AftRecord;

pub(crate) const FILE_NAME: &str = "aftlog-spool.jsonl";

/// The spool file of one node.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    dir: PathBuf,
    path: PathBuf,
}

impl Spool {
    pub(crate) fn new(dir: &Path) -> Spool {
        Spool {
            dir: dir.to_path_buf(),
            path: dir.join(FILE_NAME),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rows` and makes them durable (file and directory entry). Blocking: used at
    /// shutdown and on the rare path of a row arriving after the writer stopped.
    pub(crate) fn append(&self, rows: &[AftRecord]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let existed = self.path.exists();
        let mut buf = Vec::new();
        for r in rows {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Every row in the spool. A torn last line (crash while appending) is skipped with a
    /// warning: the rows before it are intact.
    pub(crate) fn load(&self) -> io::Result<Vec<AftRecord>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut rows = Vec::new();
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<AftRecord>(&line) {
                Ok(r) => rows.push(r),
                Err(e) => tracing::warn!(
                    line = n + 1,
                    path = %self.path.display(),
                    error = %e,
                    "Skipping unreadable AFT_LOG spool line"
                ),
            }
        }
        Ok(rows)
    }

    /// Removes the spool once its rows are in the database.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aftlog::Method;
    use chrono::Utc;

    #[test]
    fn append_load_remove() {
        let dir = std::env::temp_dir().join(format!("mft-spool-test-{}", std::process::id()));
        let spool = Spool::new(&dir);
        let rec = AftRecord {
            aft_index: 7,
            jid: "a@x".into(),
            to_jid: "b@x".into(),
            method: Method::Get,
            filename: "r".into(),
            real_filename: "naïve 文件 😀".into(),
            file_type: "txt".into(),
            chat_type: "im".into(),
            file_server: "fs".into(),
            file_path: "/p".into(),
            file_size: 4_294_967_296,
            bytes_transferred: 3,
            timestamp: Utc::now(),
        };
        spool.append(std::slice::from_ref(&rec)).expect("append");
        spool.append(std::slice::from_ref(&rec)).expect("append");
        let rows = spool.load().expect("load");
        assert_eq!(rows, vec![rec.clone(), rec]);
        spool.remove().expect("remove");
        assert!(spool.load().expect("load").is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
