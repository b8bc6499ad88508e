//! `mft transferspeed`: write then read a test file on the file server through the node's own
//! store path (pipelined SFTP), check every byte read back, remove it, and print write and
//! read MB/s against the 60 MB/s floor (exit status 1 below it).

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::node;

/// The reference system's floor between node and file server.
pub const FLOOR_MB_S: f64 = 60.0;
const BLOCK: usize = 1 << 20;

pub async fn run(config: &Config, size: u64) -> anyhow::Result<()> {
    let store = node::open_store(config)?;
    store.check().await.context("checking the file server")?;
    let dir = "transferspeed";
    let name = format!("test-{}", crate::layout::new_resource());
    let rel = format!("{dir}/{name}");

    let block: Vec<u8> = (0..BLOCK).map(|i| (i * 31 % 251) as u8).collect();
    let block = Bytes::from(block);
    let bar = progress(size, "write");
    let started = Instant::now();
    let mut sink = store.create_upload(dir, &name).await?;
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        if let Err(e) = sink.write(block.slice(..n)).await {
            sink.abort().await;
            return Err(e).context("writing the test file");
        }
        left -= n as u64;
        bar.inc(n as u64);
    }
    sink.commit().await.context("committing the test file")?;
    let write_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let bar = progress(size, "read");
    let started = Instant::now();
    let read_back = async {
        let mut stream = store.read_range(&rel, 0, size).await?;
        let mut read = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("reading the test file")?;
            // Every byte checked against what was written (a compare: cheap beside the wire).
            let mut at = (read % BLOCK as u64) as usize;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = rest.len().min(BLOCK - at);
                anyhow::ensure!(
                    rest[..n] == block[at..at + n],
                    "the test file read back differs from what was written near byte {read}"
                );
                rest = &rest[n..];
                at = 0;
            }
            read += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        Ok(read)
    }
    .await;
    let read_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let removed = store.remove(&rel).await.context("removing the test file");
    let read = read_back?;
    removed?;
    anyhow::ensure!(read == size, "read back {read} bytes of {size}");

    let mb = size as f64 / 1e6;
    let (w, r) = (mb / write_s, mb / read_s);
    println!(
        "file server: {} {}",
        store.server_name(),
        store.absolute_path(dir)
    );
    println!("size:        {size} bytes");
    println!("write:       {w:8.1} MB/s  {}", verdict(w));
    println!("read:        {r:8.1} MB/s  {}", verdict(r));
    if w < FLOOR_MB_S || r < FLOOR_MB_S {
        anyhow::bail!("below the {FLOOR_MB_S} MB/s floor");
    }
    Ok(())
}

fn verdict(mb_s: f64) -> String {
    if mb_s >= FLOOR_MB_S {
        format!("OK (floor {FLOOR_MB_S} MB/s, {:.1}x)", mb_s / FLOOR_MB_S)
    } else {
        format!("BELOW the {FLOOR_MB_S} MB/s floor")
    }
}

fn progress(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>5} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what);
    bar
}
