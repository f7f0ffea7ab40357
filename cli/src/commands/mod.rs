//! Subcommands. One module per command; `run` dispatches.

mod debug;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information
    Version,
    /// Developer tools: inspect what lade makes of its inputs
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            println!("lade {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Debug(cmd) => debug::run(cmd),
    }
}
