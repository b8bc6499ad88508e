//! `mft ticket upload|download`: mint a ticket with the node's secret, for curl and tests.

use clap::Subcommand;

use crate::config::Config;
use crate::layout::ChatType;
use crate::node;

#[derive(Debug, Subcommand)]
pub enum TicketCommand {
    /// An upload ticket.
    Upload {
        /// Sender JID.
        #[arg(long)]
        from: String,
        /// Recipient JID or room.
        #[arg(long)]
        to: String,
        /// Chat type: im, groupchat or persistent.
        #[arg(long, default_value = "im")]
        chat: ChatType,
        /// The real filename.
        #[arg(long)]
        name: String,
        /// Exact size in bytes, when known.
        #[arg(long)]
        size: Option<u64>,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// A download ticket.
    Download {
        /// Downloader JID.
        #[arg(long = "as")]
        who: String,
        /// Bind the ticket to one resource.
        #[arg(long)]
        resource: Option<String>,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

pub fn run(config: &Config, cmd: TicketCommand) -> anyhow::Result<()> {
    let tickets = node::ticket_authority(config)?;
    let token = match cmd {
        TicketCommand::Upload {
            from,
            to,
            chat,
            name,
            size,
            ttl,
        } => tickets.mint_upload(&from, &to, chat, &name, size, ttl)?,
        TicketCommand::Download { who, resource, ttl } => {
            tickets.mint_download(&who, resource.as_deref(), ttl)?
        }
    };
    println!("{token}");
    Ok(())
}
