//! `mft-loadtest`: parse the command line, run the scenario, print and write the report.
//!
//! Exit status: 0 when every check passed, 1 when one failed, 2 when the run could not be made.

use std::process::ExitCode;

use clap::Parser;
use mft_loadtest::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match mft_loadtest::scenarios::run(&cli).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mft-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = mft_loadtest::report::emit(&report, &cli.global) {
        eprintln!("mft-loadtest: {e:#}");
        return ExitCode::from(2);
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
