//! The `mft` binary: parse the command line, set up logging, run the command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mft::telemetry::init_logging();
    let cli = mft::cli::Cli::parse();
    match mft::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mft: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
