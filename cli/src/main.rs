//! The `lade` command.
//!
//! Owns argument parsing (clap), progress display and error rendering. It is the only crate that
//! prints. Each subcommand lives in its own module under `commands/` and returns an exit code;
//! library crates never exit the process.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// Doc comments on clap arguments are the `--help` text, written for a terminal: `USER[:GROUP]`
// there is usage syntax, not an intra-doc link.
#![allow(rustdoc::broken_intra_doc_links)]

mod commands;
mod diagnostics;
mod output;
mod progress;

use std::io::Write;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
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
    // `lade __purge-trash DIR`: deletes containers `run --rm` left in the trash (detached).
    commands::maybe_purge_trash();
    output::quiet_broken_pipe_panics();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // `lade run` exits 125 on bad flags, as `docker run` does.
        Err(e) if e.use_stderr() && subcommand_is_run() => {
            let _ = e.print();
            return ExitCode::from(125);
        }
        Err(e) => e.exit(),
    };
    // A closed stdout ends the command quietly (see output.rs); the stack is unwound first so
    // temp files are cleaned up.
    match catch_unwind(AssertUnwindSafe(|| commands::run(cli.command, &cli.global))) {
        Ok(Ok(code)) => code,
        Ok(Err(err)) if output::is_stdout_closed(&err) => ExitCode::from(output::SIGPIPE_STATUS),
        Ok(Err(err)) => {
            let _ = writeln!(std::io::stderr(), "error: {}", output::render_error(&err));
            ExitCode::FAILURE
        }
        Err(panic) if output::is_broken_pipe_panic(&*panic) => {
            ExitCode::from(output::SIGPIPE_STATUS)
        }
        Err(panic) => resume_unwind(panic),
    }
}

/// Whether the command line's subcommand is `run` (skipping the global `--root DIR`).
fn subcommand_is_run() -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => {
                args.next();
            }
            a if a.starts_with("--root=") => {}
            a => return a == "run",
        }
    }
    false
}
