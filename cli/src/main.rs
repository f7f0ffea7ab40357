//! The `lade` command.
//!
//! Owns argument parsing (clap), progress display and error rendering. It is the only crate that
//! prints. Each subcommand lives in its own module under `commands/` and returns an exit code;
//! library crates never exit the process.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod commands;
mod diagnostics;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// Lade: a daemonless Dockerfile build engine.
#[derive(Debug, Parser)]
#[command(name = "lade", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: commands::Global,
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    // `lade __lade-sandbox-init` is the sandbox init (lade_runtime re-executes this binary for
    // every sandbox): it must run before anything else, in a single-threaded process.
    lade_runtime::maybe_run_init();
    let cli = Cli::parse();
    match commands::run(cli.command, &cli.global) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
