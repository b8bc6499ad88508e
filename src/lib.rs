//! mft: a managed file transfer node.
//!
//! Chat clients upload files over HTTP; the node streams each body to an external OpenSSH SFTP
//! file server (or, by default, a local directory), records every transfer in `AFT_LOG`, and
//! serves downloads back. Crate map:
//!
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`layout`]: storage paths, hour-directory rollover, URL path validation (pure logic).
//! - [`store`]: the file server abstraction, with the SFTP and local-directory backends.
//! - [`aftlog`]: the `AFT_LOG` table, its schema and the group-commit batch writer.
//! - [`ticket`]: JWT upload and download tickets.
//! - [`http`]: the HTTP front: upload, download, health, status and metrics endpoints.
//! - [`alarms`]: alarm state with hysteresis, raised and cleared.
//! - [`telemetry`]: metric names, recorder installation and log set-up.
//! - [`janitor`]: start-up sweep of temporary files left by an interrupted run.
//! - [`node`]: wiring the pieces into a running node.
//! - [`cli`]: the `mft` command line.

pub mod aftlog;
pub mod alarms;
pub mod cli;
pub mod config;
pub mod http;
pub mod janitor;
pub mod layout;
pub mod node;
pub mod store;
pub mod telemetry;
pub mod ticket;
