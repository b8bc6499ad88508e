//! The `mft` binary: parse the command line, set up logging, run the command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mft::telemetry::init_logging();
    let cli = mft::cli::Cli::parse();
    match mft::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mft: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `context: cause: cause`, leaving out a cause whose text the previous message already holds
/// (typed errors often print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
