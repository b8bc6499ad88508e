//! `mft migrate`: create or update the AFT_LOG table and its indexes.

use anyhow::Context;

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    crate::aftlog::migrate(&config.database.url)
        .await
        .context("migrating AFT_LOG")?;
    println!("AFT_LOG schema is up to date");
    Ok(())
}
