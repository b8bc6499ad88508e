//! `mft status`: check the database and the file server as configured; exit non-zero and say
//! precisely what is wrong. The database check changes nothing (no file, no table created).

use std::time::Duration;

use crate::config::Config;
use crate::node;

const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let mut problems = Vec::new();

    match tokio::time::timeout(CHECK_TIMEOUT, check_database(config)).await {
        Ok(Ok(backend)) => println!("database:    OK ({backend})"),
        Ok(Err(e)) => {
            println!("database:    FAILED: {e}");
            problems.push("database");
        }
        Err(_) => {
            println!("database:    FAILED: no answer within {CHECK_TIMEOUT:?}");
            problems.push("database");
        }
    }

    match tokio::time::timeout(CHECK_TIMEOUT, check_file_server(config)).await {
        Ok(Ok(summary)) => println!("file server: OK ({summary})"),
        Ok(Err(e)) => {
            println!("file server: FAILED: {e}");
            problems.push("file server");
        }
        Err(_) => {
            println!("file server: FAILED: no answer within {CHECK_TIMEOUT:?}");
            problems.push("file server");
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} not OK", problems.join(" and "))
    }
}

async fn check_database(config: &Config) -> anyhow::Result<String> {
    let backend = crate::aftlog::inspect(&config.database.url).await?;
    Ok(format!("{backend}, AFT_LOG present"))
}

async fn check_file_server(config: &Config) -> anyhow::Result<String> {
    let store = node::open_store(config)?;
    store.check().await?;
    let space = store.space().await?;
    Ok(format!(
        "{} {}, directory writable, {:.1} % free of {} GB",
        store.server_name(),
        store.absolute_path(""),
        space.free_percent(),
        space.total_bytes / 1_000_000_000
    ))
}
