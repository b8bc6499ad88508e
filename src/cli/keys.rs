//! `mft keygen` and `mft keyscan`: the node's SSH key pair and the file server's host key.

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::store::sftp::{self, KeyType};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyTypeArg {
    Ed25519,
    Rsa,
}

pub fn keygen(config: &Config, kind: KeyTypeArg) -> anyhow::Result<()> {
    let kind = match kind {
        KeyTypeArg::Ed25519 => KeyType::Ed25519,
        KeyTypeArg::Rsa => KeyType::Rsa,
    };
    let path = &config.node.key_file;
    let line = sftp::keygen(path, kind)
        .with_context(|| format!("creating the node key at {}", path.display()))?;
    eprintln!(
        "Wrote {} (private) and {}.pub. Add this line to the file server user's ~/.ssh/authorized_keys:",
        path.display(),
        path.display()
    );
    println!("{line}");
    Ok(())
}

pub async fn keyscan(config: &Config, target: &str) -> anyhow::Result<()> {
    let (host, port) = split_host_port(target)?;
    let line = sftp::keyscan(
        &host,
        port,
        Duration::from_secs(config.file_server.connect_timeout_s),
    )
    .await
    .with_context(|| format!("reading the host key of {target}"))?;
    println!("{line}");
    Ok(())
}

fn split_host_port(target: &str) -> anyhow::Result<(String, u16)> {
    if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unterminated `[` in HOST")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().context("PORT must be a number")?,
            None => 22,
        };
        return Ok((host.to_string(), port));
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((
            host.to_string(),
            port.parse().context("PORT must be a number")?,
        )),
        _ => Ok((target.to_string(), 22)),
    }
}
