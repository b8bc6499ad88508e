//! The command line: `mft-loadtest [--config FILE] [options] SCENARIO [scenario options]`.
//!
//! Global options say which node and where reports go; each scenario has its own subcommand.
//! Sizes accept decimal (`100KB`, `5MB`, `1GB`) and binary (`64KiB`, `1MiB`, `4GiB`) suffixes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mft::layout::ChatType;

use crate::dist::ChatMix;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mft-loadtest",
    version,
    about = "Capacity planning for an mft node: drives it over HTTP as chat clients do",
    after_help = "Exit status: 0 when every check of the scenario passed, 1 when one failed, \
                  2 when the run could not be made."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The node's configuration file: public URL, ticket secret and file server are read from it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Send requests here instead of the configuration's `node.public_url`.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// HS256 ticket secret, instead of the configuration's.
    #[arg(long, global = true, env = "MFT_TICKET_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Accept a target that is not on this machine (loopback only otherwise).
    #[arg(long, global = true)]
    pub allow_remote: bool,
    /// Write the report as JSON to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No progress bar and no table.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Seconds a request may take, plus one second per 5 MB it carries.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Seed of the random generators (arrivals, sizes, chat types), for repeatable runs.
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// Check content end to end: the SHA-256 the node reports and the downloaded bytes' hash.
    #[arg(long, global = true)]
    pub verify: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Open-model load from a user profile; prints the capacity projection.
    Capacity(CapacityArgs),
    /// Large transfers at fixed concurrency; MB/s up and down against the 60 MB/s floor.
    Throughput(ThroughputArgs),
    /// Many uploads, then checks the hour directories on the file server.
    Rollover(RolloverArgs),
    /// Exactly max_file_size succeeds; one byte more gets 413 and leaves nothing behind.
    Limits(LimitsArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Capacity(_) => "capacity",
            Scenario::Throughput(_) => "throughput",
            Scenario::Rollover(_) => "rollover",
            Scenario::Limits(_) => "limits",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SizeDistArg {
    Fixed,
    Lognormal,
}

#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Users in the profile.
    #[arg(long, default_value_t = 12_000)]
    pub users: u64,
    /// Uploads per user per hour.
    #[arg(long, default_value_t = 2.0)]
    pub files_per_hour: f64,
    /// Mean upload size.
    #[arg(long, default_value = "100KB", value_parser = parse_size)]
    pub mean_size: u64,
    /// Size distribution: every file the mean, or log-normal around it.
    #[arg(long, value_enum, default_value_t = SizeDistArg::Lognormal)]
    pub size_dist: SizeDistArg,
    /// Shape of the log-normal distribution (sigma of the underlying normal).
    #[arg(long, default_value_t = 1.0)]
    pub size_sigma: f64,
    /// Seconds during which uploads arrive.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Multiplies the profile's rate (100 runs a day's peak hour in 36 s).
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Downloads of each upload by its recipients.
    #[arg(long, default_value_t = 1)]
    pub downloads_per_upload: u32,
    /// Downloads of each group chat upload (participants); the downloads per upload if unset.
    #[arg(long)]
    pub group_fanout: Option<u32>,
    /// Share of each chat type, e.g. `im=0.8,groupchat=0.15,persistent=0.05`.
    #[arg(long, default_value = "im=1")]
    pub chat_mix: ChatMix,
    /// Active hours per day, for the daily projection.
    #[arg(long, default_value_t = 8.0)]
    pub hours_per_day: f64,
    /// Days files stay on the file server, for the space projection.
    #[arg(long, default_value_t = 30.0)]
    pub retention_days: f64,
    /// Upload p99 latency the node must stay within to count as keeping up.
    #[arg(long, default_value_t = 100.0)]
    pub p99_target_ms: f64,
    /// Transfers in flight beyond which new arrivals are dropped (counted as
    /// `client_overload`) rather than queued, so the client never becomes the bottleneck
    /// silently.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Seconds to let transfers in flight finish after the last arrival.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Transfers in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Size of each file.
    #[arg(long, default_value = "256MB", value_parser = parse_size)]
    pub size: u64,
    /// Files to upload (each is then downloaded once).
    #[arg(long, default_value_t = 8)]
    pub count: u64,
    /// MB/s each direction must reach (SPEC target: 60).
    #[arg(long, default_value_t = 60.0)]
    pub floor_mb_s: f64,
}

#[derive(Debug, Clone, Args)]
pub struct RolloverArgs {
    /// Uploads to make (more than 1000 to see `HH.1`).
    #[arg(long, default_value_t = 2500)]
    pub files: u64,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Size of each file.
    #[arg(long, default_value = "1KiB", value_parser = parse_size)]
    pub size: u64,
    /// Chat type of the uploads.
    #[arg(long, default_value = "im")]
    pub chat: ChatType,
}

#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Chat type of the uploads.
    #[arg(long, default_value = "im")]
    pub chat: ChatType,
    /// Seconds to wait for the refused uploads' temporary files to disappear.
    #[arg(long, default_value_t = 10)]
    pub cleanup_wait: u64,
}

/// Parses `123`, `100KB`, `5MB`, `1GB` (powers of 1000) or `64KiB`, `1MiB`, `4GiB` (powers of
/// 1024); `K`, `M`, `G` alone are decimal too.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 100KB, 1MiB, 4GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown size unit `{unit}`")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert_eq!(parse_size("100kb"), Ok(100_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("4GiB"), Ok(4_294_967_296));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_size("99999999999999999999GB").is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "mft-loadtest",
            "capacity",
            "--users",
            "10",
            "--config",
            "x.toml",
            "--chat-mix",
            "im=1,groupchat=1",
        ])
        .expect("parses");
        assert_eq!(cli.global.config, Some(PathBuf::from("x.toml")));
        let Scenario::Capacity(c) = cli.scenario else {
            panic!("capacity expected");
        };
        assert_eq!(c.users, 10);
        assert_eq!(c.mean_size, 100_000);
    }
}
