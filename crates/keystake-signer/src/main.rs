//! `keystake-signer`: command-line entry point. Parses arguments, sets up logging, disables core
//! dumps, and hands the command to `keystake_signer::cli` (the subcommands live there, one file
//! each). No prompts: every secret comes from a file.
//!
//! Refuses to run any command when core dumps cannot be disabled. Exit codes: 0 on success, 1
//! when the command fails (the error is printed as `error: …`), 2 for usage errors (`clap`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use keystake_signer::cli::{self, Cli};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYSTAKE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Err(error) = keystake_signer::app::disable_core_dumps() {
        eprintln!("error: cannot protect this process's memory: {error:#}");
        return ExitCode::FAILURE;
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
