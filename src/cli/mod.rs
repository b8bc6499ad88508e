//! The `mft` command line (SPEC section 8): argument parsing and dispatch to one module per
//! command. Errors are reported here, at the edge, with context (`anyhow`).

mod keys;
mod migrate;
mod serve;
mod status;
mod ticket;
mod transferspeed;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "mft", version, about = "Managed file transfer node")]
pub struct Cli {
    /// Configuration file (default: ./mft.toml if present, else the embedded default).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node.
    Serve,
    /// Create the node's SSH key pair at `node.key_file`; print the public key line.
    Keygen {
        #[arg(long = "type", value_enum, default_value = "ed25519")]
        key_type: keys::KeyTypeArg,
    },
    /// Print the file server's host key line, ready for `file_server.public_key`.
    Keyscan {
        /// HOST or HOST:PORT (port 22 by default).
        target: String,
    },
    /// Check the database and the file server as configured.
    Status,
    /// Write then read a test file on the file server; print MB/s against the 60 MB/s floor.
    Transferspeed {
        /// Test file size in bytes (default 1 GiB).
        #[arg(long, default_value_t = 1 << 30)]
        size: u64,
    },
    /// Print a ticket for curl and tests.
    #[command(subcommand)]
    Ticket(ticket::TicketCommand),
    /// Create or update the AFT_LOG schema and indexes.
    Migrate,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve::run(config).await,
        Command::Keygen { key_type } => keys::keygen(&config, key_type),
        Command::Keyscan { target } => keys::keyscan(&config, &target).await,
        Command::Status => status::run(&config).await,
        Command::Transferspeed { size } => transferspeed::run(&config, size).await,
        Command::Ticket(cmd) => ticket::run(&config, cmd),
        Command::Migrate => migrate::run(&config).await,
    }
}
