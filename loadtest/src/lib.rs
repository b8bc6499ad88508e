//! mft-loadtest: capacity planning against a running mft node.
//!
//! The tool drives a node over HTTP exactly as chat clients do (tickets minted with the node's
//! own secret, as the chat server would), measures what the node holds, and checks what ended
//! up on the file server. Crate map:
//!
//! - [`cli`]: the command line (clap derive): global options and one subcommand per scenario.
//! - [`target`]: what is being driven: base URL, ticket authority, the node's configuration.
//! - [`client`]: the HTTP client: one upload or download, timed and classified.
//! - [`payload`]: generated upload bodies (streams, never files on disk).
//! - [`dist`]: random generators: Poisson arrivals, file sizes, chat-type mix.
//! - [`stats`]: the recorder: HDR latency histograms, counters, errors by kind, a per-second
//!   timeline.
//! - [`progress`]: the live progress bar.
//! - [`verify`]: reading the file server back (hour directories, leftovers).
//! - [`projection`]: the capacity arithmetic (files/day, GB/day, headroom, retention space).
//! - [`scenarios`]: capacity, throughput, rollover, limits; each returns a [`report::Report`].
//! - [`report`]: the report and its renderings: terminal table, JSON, self-contained HTML.

pub mod cli;
pub mod client;
pub mod dist;
pub mod payload;
pub mod progress;
pub mod projection;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod target;
pub mod verify;

pub use cli::Cli;
pub use report::Report;
pub use target::Target;
