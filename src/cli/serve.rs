//! `mft serve`: run the node until SIGINT or SIGTERM, then drain and stop.

use anyhow::Context;

use crate::config::Config;
use crate::node::{self, NodeOptions};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let node = node::start(config, NodeOptions::default())
        .await
        .context("starting the node")?;
    wait_for_signal().await;
    tracing::info!("Shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
