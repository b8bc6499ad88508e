//! Start-up sweep of temporary files left by a previous run that stopped mid-upload.
//!
//! Each node owns its directory on the file server, so at start-up no upload of this node is in
//! flight and every `.<resource>.part` in it is a leftover. The sweep covers the hour
//! directories of today and yesterday (UTC), where a crash can have left them; it runs before the
//! node serves (a `.part` file is a live upload once it does), bounded in time by the caller.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::layout::{ChatType, HourDir};
use crate::store::FileStore;

/// Removes leftover temporary files; returns how many were removed.
pub async fn sweep_stale_parts(store: Arc<dyn FileStore>, today: DateTime<Utc>) -> usize {
    let mut removed = 0;
    for day in [today - Duration::days(1), today] {
        let date = day.format("%Y%m%d").to_string();
        for chat in ChatType::ALL {
            let day_dir = format!("files/{chat}/{date}");
            let Ok(hours) = store.list_dir(&day_dir).await else {
                continue;
            };
            for hour in hours.iter().filter(|e| e.is_dir) {
                if HourDir::parse(&hour.name).is_none() {
                    continue;
                }
                let dir = format!("{day_dir}/{}", hour.name);
                let Ok(entries) = store.list_dir(&dir).await else {
                    continue;
                };
                for entry in entries
                    .iter()
                    .filter(|e| !e.is_dir && e.name.starts_with('.') && e.name.ends_with(".part"))
                {
                    let rel = format!("{dir}/{}", entry.name);
                    match store.remove(&rel).await {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(path = %rel, error = %e, "Could not remove a leftover temporary file")
                        }
                    }
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "Removed temporary files left by an interrupted run"
        );
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn removes_only_leftover_parts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::new(dir.path(), "fs").expect("store"));
        let date = Utc::now().format("%Y%m%d").to_string();
        let hour = dir.path().join(format!("files/im/{date}/07.1"));
        std::fs::create_dir_all(&hour).expect("mkdir");
        std::fs::write(hour.join(".abc.part"), b"partial").expect("part");
        std::fs::write(hour.join("abc"), b"final").expect("final");
        let removed = sweep_stale_parts(store, Utc::now()).await;
        assert_eq!(removed, 1);
        assert!(hour.join("abc").exists());
        assert!(!hour.join(".abc.part").exists());
    }
}
